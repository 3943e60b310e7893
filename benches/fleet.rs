//! Benchmark: a fleet in one run.
//!
//! - 100 kubeconfig contexts, each a test API server with the same 20 Modules over 10 kmod
//!   images; 5 of the Modules select the cluster's real-time node, so their target is the
//!   release's other kernel (`…+rt`, its images tagged for it). The registry and every API server sit behind relays that delay each direction by
//!   RTT/2 (100 Mbit/s pace). At 0 and 100 ms it runs, cold (`--no-cache`):
//!   `check --release 4.19.0` of one cluster, of all 100 with `--all-contexts`, and a shell-style
//!   loop of the single-cluster check over the 100 contexts, for comparison.
//! - A hub with 1,000 ManagedClusters × 10 ManagedClusterModules, the registry on loopback:
//!   `check --hub --release 4.19.0`.
//!
//! It reports registry bytes (as the relay saw them), wall time and peak RSS, and the ratios
//! the targets are about: fleet bytes / one cluster's (≤ 1.2), fleet wall / one cluster's at
//! 100 ms (≤ 3), hub wall (< 5 s) and RSS (< 100 MiB).
//!
//! Run with `scripts/bench --bench fleet`. KMM_BENCH_CONTEXTS (100), KMM_BENCH_HUB_CLUSTERS
//! (1000) and KMM_BENCH_BASE_MIB (8) change the sizes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::apiserver::{ApiServer, Kmm};
use support::bench::{KERNEL, env_or, kmod_images_for};
use support::fixtures::{self, dtk_json, image_references, payload_layer, push_payload};
use support::hub::install_fleet_crds;
use support::images::{Image, Pusher, TarLayer};
use support::measure::{self, Measured, measure};
use support::registry::TestRegistry;
use support::relay::Relay;

const PACE: u64 = 100_000_000 / 8;
const VERSION: &str = "4.19.0";
const OLD_KERNEL: &str = "5.14.0-427.50.1.el9_4.x86_64";

fn main() {
    measure::helper_if_asked();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(
        env_or("KMM_BENCH_CONTEXTS", 100) as usize,
        env_or("KMM_BENCH_HUB_CLUSTERS", 1000) as usize,
        env_or("KMM_BENCH_BASE_MIB", 8),
    ));
}

/// A small driver-toolkit for `kernel` and a payload naming it; the payload's reference.
async fn release_for(pusher: &Pusher, address: &str, kernel: &str, tag: Option<&str>) -> String {
    let dtk = Image::single(
        TarLayer::new()
            .dir("etc")
            .file(
                fixtures::DTK_FILE,
                &dtk_json(kernel, Some(&format!("{kernel}+rt")), "9.6"),
            )
            .finish(),
    );
    let dtk = pusher.push_image("ocp/art-dev", None, &dtk).await;
    let refs = image_references(VERSION, Some(&dtk.reference), address);
    let metadata = fixtures::release_metadata(VERSION, false);
    push_payload(pusher, tag, payload_layer(&refs, &metadata, 300), "amd64")
        .await
        .reference
}

/// The node label the bench's Modules select by: `standard` or `rt`.
const KIND: &str = "kmm-bench/kernel";

/// 20 Modules over the 10 images, in 5 namespaces: module15…19 on the real-time node.
fn add_modules(api: &ApiServer, address: &str) {
    for m in 0..20 {
        let i = m % 10;
        let image = format!("{address}/bench/vendor{i}:v{i}-${{KERNEL_FULL_VERSION}}");
        let kind = if m >= 15 { "rt" } else { "standard" };
        api.add_module(
            &format!("team{}", m % 5),
            &format!("module{m}"),
            json!({"selector": {KIND: kind},
                   "moduleLoader": {"container": {
                       "modprobe": {"moduleName": format!("vendor{i}")},
                       "kernelMappings": [{"regexp": "^.+$", "containerImage": image}]}}}),
        );
    }
}

struct Row {
    bytes: u64,
    wall: Duration,
    rss_kib: i64,
}

async fn run(contexts: usize, hub_clusters: usize, base_mib: u64) {
    let registry = TestRegistry::plain();
    let reg = Relay::start(&registry.addr).await;
    let pusher = Pusher::via(&registry, &reg.addr);
    eprintln!("pushing 4.19.0 and 2 × 10 kmod images over a {base_mib} MiB base…");
    let tag = format!("{VERSION}-x86_64");
    let release = release_for(&pusher, &reg.addr, KERNEL, Some(&tag)).await;
    let rt = format!("{KERNEL}+rt");
    for kernel in [KERNEL, rt.as_str()] {
        kmod_images_for(&pusher, &reg.addr, 10, base_mib, kernel).await;
    }

    eprintln!("starting {contexts} clusters of 20 Modules behind relays…");
    let mut servers = Vec::new();
    let mut kubeconfig = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    let mut users = String::from("users:\n");
    let mut named = String::from("contexts:\n");
    for c in 0..contexts {
        let api = ApiServer::start(Kmm::Ocp24).await;
        api.add_node_with("worker-0", "amd64", OLD_KERNEL, &[(KIND, "standard")]);
        api.add_node_with(
            "worker-rt",
            "amd64",
            &format!("{OLD_KERNEL}+rt"),
            &[(KIND, "rt")],
        );
        add_modules(&api, &reg.addr);
        api.put(
            "config.openshift.io",
            "ClusterVersion",
            json!({"metadata": {"name": "version"},
                   "status": {"desired": {"version": "4.18.15", "image": release},
                              "availableUpdates": [{"version": VERSION, "image": release}]}}),
        );
        let relay = Relay::start(api.url.trim_start_matches("https://")).await;
        let name = format!("c{c:03}");
        kubeconfig.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: https://{}\n    certificate-authority-data: {}\n",
            relay.addr,
            api.ca_data()
        ));
        users.push_str(&format!(
            "- name: {name}\n  user:\n    token: {}\n",
            api.token
        ));
        named.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"
        ));
        servers.push((api, relay));
    }
    kubeconfig.push_str(&users);
    kubeconfig.push_str(&named);
    kubeconfig.push_str("current-context: c000\n");

    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let plain = format!("http://{}", reg.addr);
    let release_repo = format!("{}/ocp/release", reg.addr);
    let plugin = |kubeconfig: &std::path::Path, args: &[&str]| {
        let mut command = Command::new(support::plugin_binary());
        command
            .args(args)
            .args([
                "--insecure-registry",
                &plain,
                "--no-cache",
                "--release-repo",
            ])
            .arg(&release_repo)
            .env("HOME", home.path())
            .env("KUBECONFIG", kubeconfig)
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let go = |command: Command, name: &str| -> Row {
        let before = reg.bytes_down();
        let m: Measured = measure(&command);
        assert!(m.code == 0, "{name} failed ({}): {}", m.code, m.stderr);
        Row {
            bytes: reg.bytes_down() - before,
            wall: m.wall,
            rss_kib: m.peak_rss_kib,
        }
    };

    let mut rows: BTreeMap<(u64, &str), Row> = BTreeMap::new();
    for rtt in [0u64, 100] {
        eprintln!("round trip time {rtt} ms…");
        reg.set(Duration::from_millis(rtt), Some(PACE));
        for (_, relay) in &servers {
            relay.set(Duration::from_millis(rtt), Some(PACE));
        }
        let one = go(
            plugin(
                &path,
                &[
                    "check",
                    "--release",
                    VERSION,
                    "--context",
                    "c001",
                    "-o",
                    "json",
                ],
            ),
            "one cluster",
        );
        let fleet = go(
            plugin(
                &path,
                &[
                    "check",
                    "--release",
                    VERSION,
                    "--all-contexts",
                    "-o",
                    "json",
                ],
            ),
            "the fleet",
        );
        let (mut bytes, mut wall, mut rss) = (0, Duration::ZERO, 0);
        for c in 0..contexts {
            let name = format!("c{c:03}");
            let row = go(
                plugin(
                    &path,
                    &[
                        "check",
                        "--release",
                        VERSION,
                        "--context",
                        &name,
                        "-o",
                        "json",
                    ],
                ),
                &name,
            );
            bytes += row.bytes;
            wall += row.wall;
            rss = rss.max(row.rss_kib);
        }
        rows.insert((rtt, "one cluster"), one);
        rows.insert((rtt, "all, --all-contexts"), fleet);
        rows.insert(
            (rtt, "all, a loop of single-cluster checks"),
            Row {
                bytes,
                wall,
                rss_kib: rss,
            },
        );
    }
    reg.set(Duration::ZERO, None);

    eprintln!("starting a hub with {hub_clusters} ManagedClusters × 10 ManagedClusterModules…");
    let hub = ApiServer::start(Kmm::None).await;
    install_fleet_crds(&hub);
    for c in 0..hub_clusters {
        let mut claims = vec![json!({"name": "version.openshift.io", "value": "4.18.15"})];
        let kernels = if c % 10 == 0 {
            format!("{OLD_KERNEL}\n{OLD_KERNEL}+rt")
        } else {
            OLD_KERNEL.to_string()
        };
        claims.push(json!({"name": "kernel-versions.kmm.node.kubernetes.io", "value": kernels}));
        hub.put(
            "cluster.open-cluster-management.io",
            "ManagedCluster",
            json!({"metadata": {"name": format!("sno-{c:04}"), "labels": {"vendor": "OpenShift"}},
                   "spec": {"hubAcceptsClient": true},
                   "status": {"clusterClaims": claims}}),
        );
    }
    for i in 0..10 {
        let image = format!("{}/bench/vendor{i}:v{i}-${{KERNEL_FULL_VERSION}}", reg.addr);
        hub.put(
            "hub.kmm.sigs.x-k8s.io",
            "ManagedClusterModule",
            json!({"metadata": {"name": format!("module{i}")},
                   "spec": {"selector": {"vendor": "OpenShift"}, "spokeNamespace": "kmm",
                            "moduleSpec": {"selector": {"node-role.kubernetes.io/worker": ""},
                                "moduleLoader": {"container": {
                                    "modprobe": {"moduleName": format!("vendor{i}")},
                                    "kernelMappings": [{"regexp": "^.+$", "containerImage": image}]}}}}}),
        );
    }
    let hub_config = home.path().join("hub-kubeconfig");
    std::fs::write(&hub_config, hub.kubeconfig()).unwrap();
    let m = measure(&plugin(
        &hub_config,
        &["check", "--hub", "--release", VERSION, "-o", "json"],
    ));
    assert_eq!(m.code, 0, "hub check failed: {}", m.stderr);
    let checked: serde_json::Value = serde_json::from_str(&m.stdout).unwrap_or_default();
    assert_eq!(
        checked["summary"]["clusters"].as_u64(),
        Some(hub_clusters as u64),
        "{}",
        m.stderr
    );

    println!();
    println!(
        "{contexts} contexts × 20 Modules over 10 images (5 Modules on the RT kernel); relays \
         delay each direction by RTT/2 at a 100 Mbit/s pace; cold runs (--no-cache)."
    );
    println!();
    println!("| RTT | run | registry bytes | wall time | peak RSS |");
    println!("|---|---|---|---|---|");
    for ((rtt, name), row) in &rows {
        println!(
            "| {rtt} ms | {name} | {} | {:.2} s | {} |",
            measure::mib(row.bytes),
            row.wall.as_secs_f64(),
            measure::mib(row.rss_kib.max(0) as u64 * 1024)
        );
    }
    let one = &rows[&(100, "one cluster")];
    let all = &rows[&(100, "all, --all-contexts")];
    println!();
    println!(
        "Fleet / one cluster at 100 ms: registry bytes {:.2}× (target ≤ 1.2×), wall time {:.2}× \
         (target ≤ 3×).",
        all.bytes as f64 / one.bytes.max(1) as f64,
        all.wall.as_secs_f64() / one.wall.as_secs_f64()
    );
    println!(
        "Hub: {hub_clusters} ManagedClusters × 10 ManagedClusterModules, registry on loopback: \
         {:.2} s (target < 5 s), peak RSS {} (target < 100 MiB).",
        m.wall.as_secs_f64(),
        measure::mib(m.peak_rss_kib.max(0) as u64 * 1024)
    );
}
