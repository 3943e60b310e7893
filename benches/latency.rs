//! Benchmark: round trips. The test registry and the test API server sit behind relays that
//! deliver every chunk half a round-trip time late in each direction, at a 100 Mbit/s pace;
//! at 0, 50 and 100 ms round-trip time it runs, cold:
//! - `kubectl kmm dtk` (release → driver-toolkit → kernel), and `skopeo copy` of that DTK;
//! - `kubectl kmm check` of 100 Modules in 10 namespaces over 50 images;
//! - `kubectl kmm preflight --no-wait` (client check, then the object created).
//!
//! Run with `cargo bench --bench latency`. It reports the requests each run made (registry
//! requests as the relay saw them, API requests as the test API server saw them), the
//! connections it opened, its wall time, the sequential round trips that wall time implies
//! ((wall at this RTT − wall at 0 ms) / RTT), and for `preflight` when the API server received
//! the object. KMM_BENCH_DTK_MIB sizes the DTK's top layer
//! (default 100), KMM_BENCH_BASE_MIB the kmod images' base (default 8).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use support::apiserver::{ApiServer, Kmm};
use support::bench::{self, KERNEL, env_or, kmod_images};
use support::fixtures::{self, dtk_json, payload_layer, push_payload};
use support::images::{Image, Pusher, TarLayer};
use support::measure::{self, Measured, measure};
use support::registry::TestRegistry;
use support::relay::Relay;

const PACE: u64 = 100_000_000 / 8;
const VERSION: &str = "4.19.0";

fn main() {
    measure::helper_if_asked();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(
        env_or("KMM_BENCH_DTK_MIB", 100),
        env_or("KMM_BENCH_BASE_MIB", 8),
    ));
}

/// The N of the last "… in N requests" in the plugin's -v output.
fn plugin_requests(stderr: &str) -> u64 {
    let words: Vec<&str> = stderr.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[1].starts_with("requests"))
        .filter_map(|pair| pair[0].parse().ok())
        .next_back()
        .unwrap_or(0)
}

struct Row {
    registry_requests: u64,
    api_requests: usize,
    connections: u64,
    wall: Duration,
    /// From the start to the API server receiving the preflight object.
    created: Option<Duration>,
}

async fn run(dtk_mib: u64, base_mib: u64) {
    let registry = TestRegistry::plain();
    let reg = Relay::start(&registry.addr).await;
    let api = ApiServer::start(Kmm::Ocp24).await;
    let api_addr = api.url.trim_start_matches("https://").to_string();
    let kube = Relay::start(&api_addr).await;
    let pusher = Pusher::via(&registry, &reg.addr);

    eprintln!("pushing a release whose driver-toolkit has a {dtk_mib} MiB top layer…");
    let dtk = Image::single(
        TarLayer::new()
            .dir("etc")
            .file(
                fixtures::DTK_FILE,
                &dtk_json(KERNEL, Some(&format!("{KERNEL}+rt")), "9.6"),
            )
            .noise("usr/src/kernels/devel.img", dtk_mib * 1024 * 1024, 7)
            .finish(),
    );
    let dtk = pusher.push_image("ocp/art-dev", None, &dtk).await;
    // The node OS image, whose labels give the kernel the nodes boot: read beside the DTK.
    let os =
        fixtures::push_node_os(&pusher, KERNEL, "amd64", fixtures::NodeOsForm::KernelLabel).await;
    let refs = fixtures::image_references_tags(
        VERSION,
        &[
            ("driver-toolkit", &dtk.reference),
            ("rhel-coreos", &os.reference),
        ],
        &reg.addr,
    );
    let metadata = fixtures::release_metadata(VERSION, false);
    let tag = format!("{VERSION}-x86_64");
    let release = push_payload(
        &pusher,
        Some(&tag),
        payload_layer(&refs, &metadata, 300),
        "amd64",
    )
    .await;
    eprintln!("pushing 50 kmod images over a {base_mib} MiB base (gcc, depmod)…");
    kmod_images(&pusher, &reg.addr, 50, base_mib).await;
    api.add_node("worker-0", "amd64");
    bench::add_modules(&api, &reg.addr, 100, 10, 50);

    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        api.kubeconfig()
            .replace(&api.url, &format!("https://{}", kube.addr)),
    )
    .unwrap();
    let plain = format!("http://{}", reg.addr);
    let plugin = |args: &[&str]| {
        let mut command = Command::new(support::plugin_binary());
        command
            .args(args)
            .args(["--insecure-registry", &plain, "--no-cache", "-v"])
            .env("HOME", home.path())
            .env("KUBECONFIG", &kubeconfig)
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let release_repo = format!("{}/ocp/release", reg.addr);

    let mut rows: BTreeMap<(&str, u64), Row> = BTreeMap::new();
    let rtts = [0u64, 50, 100];
    for (round, &rtt) in rtts.iter().enumerate() {
        eprintln!("round trip time {rtt} ms…");
        reg.set(Duration::from_millis(rtt), Some(PACE));
        kube.set(Duration::from_millis(rtt), Some(PACE));
        let mut go = |name: &'static str, command: Command| {
            let (connections, api_requests, registry_requests) = (
                reg.connections() + kube.connections(),
                api.requests().len(),
                reg.requests(),
            );
            let start = std::time::Instant::now();
            let m: Measured = measure(&command);
            assert_eq!(m.code, 0, "{name} failed: {}", m.stderr);
            let asked = api.requests()[api_requests..].to_vec();
            let created = asked
                .iter()
                .find(|r| r.verb == "create" && r.resource.starts_with("preflightvalidation"))
                .map(|r| r.at - start);
            // The plugin's own count agrees with the relay's where it prints one.
            let counted = plugin_requests(&m.stderr);
            let relayed = reg.requests() - registry_requests;
            assert!(
                counted <= relayed,
                "{name}: {counted} counted, {relayed} relayed"
            );
            rows.insert(
                (name, rtt),
                Row {
                    registry_requests: relayed,
                    api_requests: asked.len(),
                    connections: reg.connections() + kube.connections() - connections,
                    wall: m.wall,
                    created,
                },
            );
        };
        go(
            "kubectl kmm dtk",
            plugin(&["dtk", "--release", &release.reference, "-o", "json"]),
        );
        go(
            "kubectl kmm check (100 Modules, 50 images)",
            plugin(&["check", "--kernel", KERNEL, "-o", "json"]),
        );
        let name = format!("bench-{round}");
        go(
            "kubectl kmm preflight --no-wait",
            plugin(&[
                "preflight",
                "--release",
                VERSION,
                "--release-repo",
                &release_repo,
                "--name",
                &name,
                "--no-wait",
                "-o",
                "json",
            ]),
        );
        api.remove("kmm.sigs.x-k8s.io", "PreflightValidationOCP", "", &name);
        let target = tempfile::tempdir().unwrap();
        go("skopeo copy of the driver-toolkit", {
            let mut skopeo = Command::new("skopeo");
            skopeo.args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{}", dtk.reference),
                &format!("dir:{}", target.path().join("dtk").display()),
            ]);
            skopeo
        });
    }

    println!();
    println!(
        "Relays delay each direction by RTT/2 at a 100 Mbit/s pace; the driver-toolkit is {}; \
         cold runs (--no-cache).",
        measure::mib(dtk.image_size)
    );
    println!();
    println!(
        "| run | RTT | registry requests | API requests | connections | wall time | sequential round trips | object created after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let names: Vec<&str> = {
        let mut seen = Vec::new();
        for (name, _) in rows.keys() {
            if !seen.contains(name) {
                seen.push(*name);
            }
        }
        seen
    };
    for name in names {
        for &rtt in &rtts {
            let row = &rows[&(name, rtt)];
            let base = rows[&(name, 0)].wall;
            let trips = if rtt == 0 {
                "–".to_string()
            } else {
                format!(
                    "{:.1}",
                    (row.wall.as_secs_f64() - base.as_secs_f64()) * 1000.0 / rtt as f64
                )
            };
            let created = row.created.map_or("–".to_string(), |c| {
                format!("{:.0} ms", c.as_secs_f64() * 1000.0)
            });
            println!(
                "| {name} | {rtt} ms | {} | {} | {} | {:.0} ms | {trips} | {created} |",
                row.registry_requests,
                row.api_requests,
                row.connections,
                row.wall.as_secs_f64() * 1000.0
            );
        }
    }
}
