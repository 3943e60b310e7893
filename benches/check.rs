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

use support::apiserver::{ApiServer, Kmm};
use support::bench::{self, KERNEL, KmodImages, env_or, kmod_images};
use support::images::Pusher;
use support::measure::{self, measure, mib};
use support::proxy::FaultProxy;
use support::registry::TestRegistry;

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
    let KmodImages {
        references,
        bytes: image_bytes,
    } = kmod_images(&pusher, &proxy.addr, images, base_mib).await;

    let api = ApiServer::start(Kmm::Ocp24).await;
    api.add_node("worker-0", "amd64");
    bench::add_modules(&api, &proxy.addr, modules, 10, images);
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
