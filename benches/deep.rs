//! Benchmark: `kubectl kmm check --deep` of 10 Modules against a realistic driver-toolkit, the
//! first run and the cached one, next to a plain `check`.
//!
//! Run with `cargo bench --bench deep`. The DTK's middle layer holds 200 MiB of incompressible
//! files before kernel-devel's `Module.symvers` (20,000 symbols) and an in-tree module, so the
//! first `--deep` run streams the whole layer; each of the 10 kmod images holds one gcc-built
//! module importing 50 of those symbols with their CRCs. Modules come from a file (`-f`), so no
//! API server is involved. Bytes are what `-v` reports, peak RSS is from wait4(2).
//! KMM_BENCH_FILLER_MIB and KMM_BENCH_SYMBOLS change the sizes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::bench::env_or;
use support::fixtures::{DevelKernel, devel_dtk_image, kernel_for, push_release_with_dtk};
use support::images::{Compression, Pusher};
use support::kmod::{Ko, Tree};
use support::measure::{self, Measured, measure, mib, reported};
use support::registry::TestRegistry;

const MODULES: usize = 10;
const IMPORTS: usize = 50;

fn main() {
    measure::helper_if_asked();
    let filler = env_or("KMM_BENCH_FILLER_MIB", 200);
    let symbols = env_or("KMM_BENCH_SYMBOLS", 20_000) as usize;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(filler, symbols));
}

async fn run(filler_mib: u64, symbols: usize) {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let kernel = kernel_for("4.19.0", "amd64");
    let exports: Vec<(String, u32)> = (0..symbols)
        .map(|i| (format!("kernel_symbol_{i}"), 0x1000_0000 + i as u32 * 7919))
        .chain([("module_layout".to_string(), 0x11111111)])
        .collect();
    let devel = DevelKernel::new(
        &kernel,
        &format!("{kernel} SMP preempt mod_unload modversions "),
        exports.clone(),
    );
    eprintln!(
        "building a driver-toolkit with {filler_mib} MiB before Module.symvers ({symbols} symbols)…"
    );
    let dtk = devel_dtk_image(&[devel], filler_mib * 1024 * 1024, Compression::Gzip);
    let dtk_bytes: u64 = dtk.layers.iter().map(|l| l.data.len() as u64).sum();
    let release = push_release_with_dtk(
        &pusher,
        &registry.addr,
        "4.19.0",
        &dtk,
        Some("4.19.0-x86_64"),
    )
    .await;

    eprintln!("building and pushing {MODULES} kmod images (gcc, depmod)…");
    let mut documents = Vec::new();
    for m in 0..MODULES {
        let imported: Vec<&(String, u32)> = exports
            .iter()
            .skip(m * 97 % symbols.max(1))
            .take(IMPORTS)
            .collect();
        let names: Vec<&str> = imported.iter().map(|(s, _)| s.as_str()).collect();
        let mut versions: Vec<(&str, u32)> =
            imported.iter().map(|(s, c)| (s.as_str(), *c)).collect();
        versions.push(("module_layout", 0x11111111));
        let mut tree = Tree::new();
        tree.module(
            "/opt",
            &kernel,
            &Ko::new(&format!("vendor{m}"))
                .imports(&names)
                .versions(&versions),
        )
        .depmod("/opt", &kernel);
        pusher
            .push_image(&format!("bench/vendor{m}"), Some(&kernel), &tree.image())
            .await;
        documents.push(support::bench::module_document(
            &registry.addr,
            m,
            &format!("vendor{m}"),
        ));
    }
    let home = tempfile::tempdir().unwrap();
    let modules = home.path().join("modules.yaml");
    std::fs::write(&modules, documents.join("---\n")).unwrap();

    let plugin = |extra: &[&str]| {
        let mut command = Command::new(support::plugin_binary());
        command
            .args(["check", "--release", &release.release.reference, "-f"])
            .arg(&modules)
            .args(["--insecure-registry", &registry.addr, "-o", "json", "-v"])
            .args(extra)
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("KUBECONFIG")
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let row = |label: &str, run: &Measured| {
        assert_eq!(run.code, 0, "{label}: {}", run.stderr);
        let verdicts = run.stdout.matches("\"verdict\": \"Loads\"").count();
        println!(
            "| {label} | {} | {} | {:.0} ms | {:.1} MiB | {verdicts} Loads |",
            mib(reported(run, "fetched ")),
            mib(reported(run, "--deep: ")),
            run.wall.as_secs_f64() * 1000.0,
            run.peak_rss_kib as f64 / 1024.0
        );
    };

    println!();
    println!(
        "{MODULES} Modules, {IMPORTS} imported symbols each; driver-toolkit of {} ({} MiB before Module.symvers, {symbols} symbols)",
        mib(dtk_bytes),
        filler_mib
    );
    println!();
    println!(
        "| run | registry bytes | of which DTK layers (--deep) | wall time | peak RSS | verdicts |"
    );
    println!("|---|---|---|---|---|---|");
    let plain_cold = measure(&plugin(&["--no-cache"]));
    row("check, no cache", &plain_cold);
    let deep_cold = measure(&plugin(&["--deep"]));
    row("check --deep, first run (empty cache)", &deep_cold);
    // Cached runs take a few tens of milliseconds: the median of 15, the two kinds interleaved.
    let mut deep_runs = Vec::new();
    let mut plain_runs = Vec::new();
    for _ in 0..15 {
        deep_runs.push(measure(&plugin(&["--deep"])));
        plain_runs.push(measure(&plugin(&[])));
    }
    let median = |runs: &mut Vec<Measured>| {
        runs.sort_by_key(|r| r.wall);
        runs.swap_remove(runs.len() / 2)
    };
    let deep_cached = median(&mut deep_runs);
    let plain_cached = median(&mut plain_runs);
    row("check --deep, cached (median of 15)", &deep_cached);
    row("check, cached (median of 15)", &plain_cached);
    println!();
    println!(
        "cached --deep vs cached check: {:+.1}% wall time",
        (deep_cached.wall.as_secs_f64() / plain_cached.wall.as_secs_f64() - 1.0) * 100.0
    );
}
