//! Benchmark: scale. 1,000 Modules in 100 namespaces over 200 kmod images, against 100 Modules
//! in 10 namespaces, in the test API server with the simulated KMM 2.4 operator finishing them
//! in ten bursts. For each size it runs, off a terminal:
//! - `kubectl kmm check` (cold: every image read);
//! - `kubectl kmm preflight` followed to the verdict (client check, then KMM's status);
//! - `kubectl kmm status -w` of a preflight created with `--no-wait`;
//!
//! and reports wall time, peak RSS, CPU time, the preflight object's status changes the run
//! saw (watch events) and the CPU per change, and the lines printed. It also times rendering
//! the whole table of 1,000 Modules (a redraw renders at most a screenful of it).
//!
//! Run with `cargo bench --bench scale`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::{ApiServer, Kmm};
use support::bench::{self, KERNEL, kmod_images};
use support::images::Pusher;
use support::measure::{self, Measured, measure};
use support::operator::{Operator, OperatorConfig};
use support::registry::TestRegistry;

const IMAGES: usize = 200;

fn main() {
    measure::helper_if_asked();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

struct Line {
    size: usize,
    run: &'static str,
    m: Measured,
    changes: u64,
}

/// Status changes of preflight objects, counted from the store's event stream.
fn count_changes(api: &ApiServer) -> Arc<AtomicU64> {
    let counter = Arc::new(AtomicU64::new(0));
    let mut events = api.store.events.subscribe();
    let seen = counter.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) if e.type_key.ends_with("/preflightvalidationsocp") => {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    seen.fetch_add(n, Ordering::SeqCst);
                }
                Err(_) => return,
            }
        }
    });
    counter
}

async fn run() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    eprintln!("pushing {IMAGES} kmod images (gcc, depmod)…");
    let images = kmod_images(&pusher, &registry.addr, IMAGES, 1).await;
    let plain = format!("http://{}", registry.addr);

    let mut lines = Vec::new();
    for (modules, namespaces) in [(100usize, 10usize), (1000, 100)] {
        eprintln!("{modules} Modules in {namespaces} namespaces…");
        let api = ApiServer::start(Kmm::Ocp24).await;
        api.add_node("worker-0", "amd64");
        bench::add_modules(&api, &registry.addr, modules, namespaces, IMAGES);
        let mut config = OperatorConfig::new(Kmm::Ocp24);
        config.images = images.references.iter().cloned().collect();
        config.step = Duration::from_millis(200);
        config.burst = Some(modules / 10);
        let _operator = Operator::start(&api, config);
        let changes = count_changes(&api);

        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let plugin = |args: &[&str]| {
            let mut command = Command::new(support::plugin_binary());
            command.args(args);
            if args[0] != "status" {
                command.args(["--insecure-registry", &plain, "--no-cache"]);
            }
            command
                .env("HOME", home.path())
                .env("KUBECONFIG", &kubeconfig)
                .env("XDG_CACHE_HOME", home.path().join("cache"))
                .env_remove("REGISTRY_AUTH_FILE");
            command
        };
        let mut go = |run: &'static str, command: Command| {
            let before = changes.load(Ordering::SeqCst);
            let m = measure(&command);
            assert_eq!(m.code, 0, "{run} at {modules}: {}\n{}", m.stdout, m.stderr);
            lines.push(Line {
                size: modules,
                run,
                changes: changes.load(Ordering::SeqCst) - before,
                m,
            });
        };
        go(
            "check, cold",
            plugin(&["check", "--kernel", KERNEL, "-o", "json"]),
        );
        go(
            "preflight, to the verdict",
            plugin(&[
                "preflight",
                "--kernel",
                KERNEL,
                "--name",
                "scale",
                "--timeout",
                "5m",
            ]),
        );
        api.remove("kmm.sigs.x-k8s.io", "PreflightValidationOCP", "", "scale");
        api.remove("kmm.sigs.x-k8s.io", "PreflightValidation", "", "scale");
        let created = plugin(&[
            "preflight",
            "--kernel",
            KERNEL,
            "--name",
            "watched",
            "--no-wait",
            "--no-client-check",
        ]);
        assert_eq!(measure(&created).code, 0);
        go(
            "status -w",
            plugin(&["status", "watched", "-w", "--timeout", "5m"]),
        );
    }

    println!();
    println!(
        "Off a terminal; the simulated KMM 2.4 operator finishes the Modules in ten bursts, one \
         every 200 ms; {IMAGES} images."
    );
    println!();
    println!(
        "| Modules | run | wall time | peak RSS | CPU | status changes seen | CPU per change | lines printed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for line in &lines {
        let per_change = if line.changes > 0 && line.run != "check, cold" {
            format!(
                "{:.1} ms",
                line.m.cpu.as_secs_f64() * 1000.0 / line.changes as f64
            )
        } else {
            "–".into()
        };
        println!(
            "| {} | {} | {:.0} ms | {:.1} MiB | {:.0} ms | {} | {per_change} | {} |",
            line.size,
            line.run,
            line.m.wall.as_secs_f64() * 1000.0,
            line.m.peak_rss_kib as f64 / 1024.0,
            line.m.cpu.as_secs_f64() * 1000.0,
            line.changes,
            line.m.stdout.lines().count(),
        );
    }

    // Rendering: the whole table of 1,000 Modules, as a terminal taller than it would get it.
    let modules: Vec<Value> = (0..1000)
        .map(|m| json!({"metadata": {"namespace": format!("team{}", m % 100), "name": format!("module{m}")},
                        "spec": {"moduleLoader": {}}}))
        .collect();
    let entries: Vec<Value> = (0..1000)
        .map(|m| {
            json!({"namespace": format!("team{}", m % 100), "name": format!("module{m}"),
                   "verificationStatus": if m % 3 == 0 { "InProgress" } else { "Success" },
                   "verificationStage": "Image", "statusReason": "verification is not finished yet"})
        })
        .collect();
    let object = json!({"status": {"modules": entries}});
    let rounds = 20;
    let start = Instant::now();
    let mut drawn = 0;
    for _ in 0..rounds {
        let progress = kubectl_kmm::cluster::status::progress_of(&object, Some(&modules));
        drawn += kubectl_kmm::output::preflight::table(&progress, None, true, true).len();
    }
    let each = start.elapsed() / rounds;
    assert!(drawn >= 1000 * rounds as usize);
    println!();
    println!(
        "status of 1,000 Modules read and its whole wide table rendered: {:.1} ms",
        each.as_secs_f64() * 1000.0
    );
}
