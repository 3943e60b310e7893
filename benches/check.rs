//! Benchmark: `kubectl kmm check` of 100 Modules in 10 namespaces over 50 kmod images, against
//! pulling the same images (`skopeo copy`), in the same run.
//!
//! Run with `cargo bench --bench check`. Each image is a ~30 MiB base layer of incompressible
//! data (one blob shared by all, as a common UBI base is) and a small top layer holding two
//! gcc-built modules for the kernel, indexed by the real depmod. Bytes are counted by a proxy on
//! the wire, peak RSS by wait4(2). KMM_BENCH_BASE_MIB, KMM_BENCH_IMAGES and KMM_BENCH_MODULES
//! change the sizes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use serde_json::json;
use support::apiserver::{ApiServer, Kmm};
use support::images::{Compression, Flavor, Pusher, TarLayer, layer, sha256};
use support::kmod::{Ko, Tree, base_layer};
use support::measure::{self, measure, mib};
use support::proxy::FaultProxy;
use support::registry::TestRegistry;

const KERNEL: &str = "5.14.0-570.19.1.el9_6.x86_64";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    measure::helper_if_asked();
    let base_mib = env_or("KMM_BENCH_BASE_MIB", 30);
    let images = env_or("KMM_BENCH_IMAGES", 50) as usize;
    let modules = env_or("KMM_BENCH_MODULES", 100) as usize;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(base_mib, images, modules));
}

async fn run(base_mib: u64, images: usize, modules: usize) {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry.addr).await;
    let pusher = Pusher::via(&registry, &proxy.addr);

    eprintln!(
        "building and pushing {images} kmod images over a {base_mib} MiB base layer (gcc, depmod)…"
    );
    let base = TarLayer::new()
        .noise("usr/lib64/libbase.so", base_mib * 1024 * 1024, 5)
        .finish();
    let base_blob = layer(base, Compression::Gzip, Flavor::Docker);
    let tools_blob = layer(base_layer(), Compression::Gzip, Flavor::Docker);
    let mut references = Vec::new();
    let mut image_bytes = 0u64;
    for i in 0..images {
        let mut tree = Tree::new();
        let helper = format!("vendor{i}_fw");
        tree.module(
            "/opt",
            KERNEL,
            &Ko::new(&helper)
                .at(&format!("kernel/drivers/misc/{helper}.ko"))
                .exports(&[&format!("{helper}_load")]),
        )
        .module(
            "/opt",
            KERNEL,
            &Ko::new(&format!("vendor{i}")).imports(&[&format!("{helper}_load")]),
        )
        .depmod("/opt", KERNEL);
        let top = layer(tree.layer(), Compression::Gzip, Flavor::Docker);
        let repo = format!("bench/vendor{}", i % 10);
        let layers = [&base_blob, &tools_blob, &top];
        for blob in layers {
            pusher
                .push_blob(&repo, blob.data.clone(), &blob.digest)
                .await;
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_digest = sha256(&config);
        pusher
            .push_blob(&repo, config.clone().into(), &config_digest)
            .await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.data.len()})).collect::<Vec<_>>(),
        });
        let tag = format!("v{i}-{KERNEL}");
        pusher
            .push_manifest(
                &repo,
                Some(&tag),
                serde_json::to_vec(&manifest).unwrap(),
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .await;
        image_bytes +=
            config.len() as u64 + layers.iter().map(|l| l.data.len() as u64).sum::<u64>();
        references.push(format!("{}/{repo}:{tag}", proxy.addr));
    }

    let api = ApiServer::start(Kmm::Ocp24).await;
    api.add_node("worker-0", "amd64");
    for m in 0..modules {
        let i = m % images;
        let image = format!(
            "{}/bench/vendor{}:v{i}-${{KERNEL_FULL_VERSION}}",
            proxy.addr,
            i % 10
        );
        api.add_module(
            &format!("team{}", m % 10),
            &format!("module{m}"),
            json!({"selector": {"node-role.kubernetes.io/worker": ""},
                   "moduleLoader": {"container": {
                       "modprobe": {"moduleName": format!("vendor{i}")},
                       "kernelMappings": [{"regexp": "^.+$", "containerImage": image}]}}}),
        );
    }
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();

    let plugin = |extra: &[&str]| {
        let mut command = Command::new(support::plugin_binary());
        command
            .args([
                "check",
                "--kernel",
                KERNEL,
                "--insecure-registry",
                &proxy.addr,
                "-o",
                "json",
                "-v",
            ])
            .args(extra)
            .env("HOME", home.path())
            .env("KUBECONFIG", &kubeconfig)
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };

    println!();
    println!(
        "{modules} Modules in 10 namespaces over {images} images of {} each ({} in all)",
        mib(image_bytes / images as u64),
        mib(image_bytes)
    );
    println!();
    println!("| contender | fetched on the wire | of the images' size | wall time | peak RSS |");
    println!("|---|---|---|---|---|");
    let before = proxy.bytes_down();
    let cold = measure(&plugin(&["--no-cache"]));
    assert_eq!(cold.code, 0, "check failed: {}", cold.stderr);
    let wire = proxy.bytes_down() - before;
    println!(
        "| kubectl kmm check, cold | {} | {:.3}% | {:.0} ms | {:.1} MiB |",
        mib(wire),
        wire as f64 * 100.0 / image_bytes as f64,
        cold.wall.as_secs_f64() * 1000.0,
        cold.peak_rss_kib as f64 / 1024.0
    );
    let fill = measure(&plugin(&[]));
    assert_eq!(fill.code, 0, "{}", fill.stderr);
    let before = proxy.bytes_down();
    let warm = measure(&plugin(&[]));
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    println!(
        "| kubectl kmm check, cached (tags resolved, no blobs) | {} | {:.4}% | {:.0} ms | {:.1} MiB |",
        mib(proxy.bytes_down() - before),
        (proxy.bytes_down() - before) as f64 * 100.0 / image_bytes as f64,
        warm.wall.as_secs_f64() * 1000.0,
        warm.peak_rss_kib as f64 / 1024.0
    );

    // The pulls a person would do to look inside: every image, into its own directory.
    let target = tempfile::tempdir().unwrap();
    let before = proxy.bytes_down();
    let mut wall = std::time::Duration::ZERO;
    let mut peak = 0;
    for (i, reference) in references.iter().enumerate() {
        let pulled = measure(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("dir:{}", target.path().join(format!("image{i}")).display()),
        ]));
        assert_eq!(pulled.code, 0, "skopeo copy failed: {}", pulled.stderr);
        wall += pulled.wall;
        peak = peak.max(pulled.peak_rss_kib);
    }
    let wire = proxy.bytes_down() - before;
    println!(
        "| skopeo copy of the {images} images | {} | {:.1}% | {:.0} ms | {:.1} MiB (each) |",
        mib(wire),
        wire as f64 * 100.0 / image_bytes as f64,
        wall.as_secs_f64() * 1000.0,
        peak as f64 / 1024.0
    );
    println!();
    println!(
        "wall time: check is {:.0}× faster than the pulls",
        wall.as_secs_f64() / cold.wall.as_secs_f64()
    );
}
