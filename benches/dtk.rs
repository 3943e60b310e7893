//! Benchmark: `kubectl kmm dtk` against the full pull a person would do (`skopeo copy`).
//!
//! Run with `cargo bench --bench dtk`. It starts Debian's docker-registry on 127.0.0.1, pushes
//! a driver-toolkit image whose top layer is 120 MiB of incompressible data, and reports for
//! each contender: bytes fetched (as counted by a proxy on the wire, and by the plugin itself),
//! wall time and peak RSS. Sizes can be changed with KMM_BENCH_TOP_MIB.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::fixtures::{
    self, dtk_json, image_references, payload_layer, push_payload, release_metadata,
};
use support::images::{Compression, Flavor, Image, Pusher, TarLayer, layer};
use support::measure::{self, Measured, measure, mib};
use support::proxy::FaultProxy;
use support::registry::TestRegistry;

fn plugin_fetched(stderr: &str) -> u64 {
    stderr
        .split("fetched ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    measure::helper_if_asked();
    // `cargo bench` passes --bench; nothing to parse.
    let top_mib: u64 = std::env::var("KMM_BENCH_TOP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(top_mib));
}

async fn run(top_mib: u64) {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry.addr).await;
    let pusher = Pusher::via(&registry, &proxy.addr);
    let kernel = "5.14.0-570.19.1.el9_6.x86_64";

    eprintln!("building and pushing a driver-toolkit with a {top_mib} MiB top layer…");
    let base = TarLayer::new()
        .dir("etc")
        .file(
            fixtures::DTK_FILE,
            &dtk_json("5.14.0-1.old.el9.x86_64", None, "9.0"),
        )
        .noise("usr/lib64/libbase.so", 24 * 1024 * 1024, 1)
        .finish();
    let middle = TarLayer::new()
        .noise("usr/src/kernels/devel.tar", 16 * 1024 * 1024, 2)
        .finish();
    // The file near the start of the top layer, as in a squashed build.
    let top_near_start = TarLayer::new()
        .dir("etc")
        .file(
            fixtures::DTK_FILE,
            &dtk_json(kernel, Some(&format!("{kernel}+rt")), "9.6"),
        )
        .noise("usr/lib/modules/extra.img", top_mib * 1024 * 1024, 3)
        .finish();
    // The worst case for memory: the file at the very end of the top layer (full scan).
    let top_at_end = TarLayer::new()
        .noise("usr/lib/modules/extra.img", top_mib * 1024 * 1024, 4)
        .dir("etc")
        .file(fixtures::DTK_FILE, &dtk_json(kernel, None, "9.6"))
        .finish();

    let mut cases = Vec::new();
    for (index, (name, top)) in [
        ("file near the start of the top layer", top_near_start),
        ("file at the end of the top layer", top_at_end),
    ]
    .into_iter()
    .enumerate()
    {
        let image = Image {
            flavor: Flavor::Docker,
            goarch: "amd64",
            layers: vec![
                layer(base.clone(), Compression::Gzip, Flavor::Docker),
                layer(middle.clone(), Compression::Gzip, Flavor::Docker),
                layer(top, Compression::Gzip, Flavor::Docker),
            ],
        };
        let dtk = pusher.push_image("ocp/art-dev", None, &image).await;
        let refs = image_references("4.19.0", Some(&dtk.reference), &proxy.addr);
        let tag = format!("4.19.{index}-x86_64");
        let release = push_payload(
            &pusher,
            Some(&tag),
            payload_layer(&refs, &release_metadata("4.19.0", false), 400),
            "amd64",
        )
        .await;
        let by_tag = format!("{}/ocp/release:{tag}", proxy.addr);
        cases.push((name, dtk, release, by_tag));
    }

    let binary = support::plugin_binary();
    let home = tempfile::tempdir().unwrap();
    println!();
    println!("| case | contender | fetched on the wire | of image size | wall time | peak RSS |");
    println!("|---|---|---|---|---|---|");
    for (name, dtk, release, by_tag) in &cases {
        let image_size = dtk.image_size + release.image_size;
        let plugin_for = |spec: &str, extra: &[&str]| {
            let mut command = Command::new(&binary);
            command
                .args([
                    "dtk",
                    "--release",
                    spec,
                    "--insecure-registry",
                    &proxy.addr,
                    "-o",
                    "json",
                    "-v",
                ])
                .args(extra)
                .env("HOME", home.path())
                .env("XDG_CACHE_HOME", home.path().join("cache"))
                .env_remove("REGISTRY_AUTH_FILE");
            command
        };
        let plugin = |extra: &[&str]| plugin_for(&release.reference, extra);

        let before = proxy.bytes_down();
        let cold = measure(&plugin(&["--no-cache"]));
        assert_eq!(cold.code, 0, "plugin failed: {}", cold.stderr);
        let wire = proxy.bytes_down() - before;
        println!(
            "| {name} | kubectl kmm dtk | {} ({} read by the plugin) | {:.3}% | {:.0} ms | {:.1} MiB |",
            mib(wire),
            mib(plugin_fetched(&cold.stderr)),
            wire as f64 * 100.0 / image_size as f64,
            cold.wall.as_secs_f64() * 1000.0,
            cold.peak_rss_kib as f64 / 1024.0
        );

        // Warm: fill the cache, then the median of ten runs by digest (no request at all) and
        // by tag (one manifest request to learn the digest).
        let fill = measure(&plugin(&[]));
        assert_eq!(fill.code, 0, "{}", fill.stderr);
        for (how, spec, fetched) in [
            ("by digest", release.reference.as_str(), "nothing"),
            ("by tag", by_tag.as_str(), "1 manifest"),
        ] {
            let mut warm: Vec<Measured> =
                (0..10).map(|_| measure(&plugin_for(spec, &[]))).collect();
            warm.sort_by_key(|m| m.wall);
            let median = &warm[warm.len() / 2];
            assert!(
                median.stderr.contains("answer from cache"),
                "{}",
                median.stderr
            );
            println!(
                "| {name} | kubectl kmm dtk {how}, cached (median of 10) | {fetched} | 0% | {:.1} ms | {:.1} MiB |",
                median.wall.as_secs_f64() * 1000.0,
                median.peak_rss_kib as f64 / 1024.0
            );
        }

        let target = tempfile::tempdir().unwrap();
        let before = proxy.bytes_down();
        let skopeo = measure(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}", dtk.reference),
            &format!("dir:{}", target.path().join("dtk").display()),
        ]));
        let wire = proxy.bytes_down() - before;
        if skopeo.code == 0 {
            println!(
                "| {name} | skopeo copy (DTK only) | {} | {:.1}% | {:.0} ms | {:.1} MiB |",
                mib(wire),
                wire as f64 * 100.0 / image_size as f64,
                skopeo.wall.as_secs_f64() * 1000.0,
                skopeo.peak_rss_kib as f64 / 1024.0
            );
        } else {
            println!(
                "| {name} | skopeo copy | failed: {} | | | |",
                skopeo.stderr.trim()
            );
        }
        println!(
            "| {name} | (image sizes) | DTK {} + release {} = {} | | | |",
            mib(dtk.image_size),
            mib(release.image_size),
            mib(image_size)
        );
    }
}
