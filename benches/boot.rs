//! Benchmark: `kubectl kmm check --boot` of 10 Modules on one kernel, the first run and the
//! cached one: bytes read from the driver-toolkit, wall time, the kernel's boot time to `/init`
//! and peak RSS.
//!
//! Run with `scripts/bench --bench boot`. The kernel is Debian's own (`linux-image-amd64`, as in
//! the tests), packed as a driver-toolkit with its `modules.dep.bin`, `Module.symvers` and the
//! in-tree `crc-itu-t`; the 10 kmod images alternate a module that loads and one that needs
//! `crc-itu-t`, built with kbuild against the kernel's headers. Modules come from a file (`-f`).
//! The VM runs under KVM where the machine can, under emulation (TCG) otherwise: the `-v` line
//! says which.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::images::Pusher;
use support::kmod::Tree;
use support::measure::{self, Measured, measure, mib, reported};
use support::realkernel;
use support::registry::TestRegistry;

const MODULES: usize = 10;
const CACHED_RUNS: usize = 3;

fn main() {
    measure::helper_if_asked();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let k = realkernel::kernel().release.clone();
    eprintln!("building the modules against {k}'s headers (kbuild)…");
    let built = realkernel::built();
    let dtk = realkernel::dtk_image(&["kernel/lib/crc-itu-t.ko"], true);
    let dtk_size: u64 = dtk.layers.iter().map(|l| l.data.len() as u64).sum();
    pusher
        .push_image("ocp/driver-toolkit", Some("bench"), &dtk)
        .await;
    let mut documents = Vec::new();
    for m in 0..MODULES {
        let (name, bytes) = if m % 2 == 0 {
            ("kmm_ok", &built.ok)
        } else {
            ("kmm_dep", &built.dep)
        };
        let mut tree = Tree::new();
        tree.file(&format!("/opt/lib/modules/{k}/extra/{name}.ko"), bytes);
        tree.depmod("/opt", &k);
        pusher
            .push_image(&format!("bench/vendor{m}"), Some(&k), &tree.image())
            .await;
        documents.push(support::bench::module_document(&registry.addr, m, name));
    }
    let home = tempfile::tempdir().unwrap();
    let modules = home.path().join("modules.yaml");
    std::fs::write(&modules, documents.join("---\n")).unwrap();
    let dtk_ref = format!("{}/ocp/driver-toolkit:bench", registry.addr);

    let plugin = || {
        let mut command = Command::new(support::plugin_binary());
        command
            .args([
                "check",
                "--kernel",
                &k,
                "--dtk-image",
                &dtk_ref,
                "--boot",
                "-f",
            ])
            .arg(&modules)
            .args(["--insecure-registry", &registry.addr, "-o", "json", "-v"])
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env("PATH", realkernel::path_with_qemu())
            .env_remove("KUBECONFIG")
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let accel = |run: &Measured| {
        if run.stderr.contains("(kvm)") {
            "KVM"
        } else {
            "emulation (TCG)"
        }
    };
    let row = |label: &str, run: &Measured| {
        assert_eq!(run.code, 0, "{label}: {}\n{}", run.stderr, run.stdout);
        let loads = run.stdout.matches("\"verdict\": \"Loads\"").count();
        assert_eq!(loads, MODULES, "{label}: {}", run.stdout);
        println!(
            "| {label} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} MiB | {} |",
            mib(reported(run, "--deep: ")),
            run.wall.as_secs_f64(),
            reported::<f64>(run, "booted to /init in "),
            reported::<f64>(run, "the VM ran "),
            run.peak_rss_kib as f64 / 1024.0,
            accel(run)
        );
    };

    println!();
    println!(
        "{MODULES} Modules on kernel {k}; driver-toolkit of {} (kernel image, modules.dep.bin, Module.symvers, crc-itu-t)",
        mib(dtk_size)
    );
    println!();
    println!(
        "| run | read from the DTK | wall time | kernel boot to /init | VM | peak RSS (plugin and qemu) | accel |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cold = measure(&plugin());
    row("check --boot, first run (empty cache)", &cold);
    let mut runs: Vec<Measured> = (0..CACHED_RUNS).map(|_| measure(&plugin())).collect();
    runs.sort_by_key(|r| r.wall);
    let cached = runs.swap_remove(runs.len() / 2);
    row(
        &format!("check --boot, cached (median of {CACHED_RUNS})"),
        &cached,
    );
}
