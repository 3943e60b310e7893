//! Try `kubectl kmm` without a cluster: `./scripts/try-it [check] [--modules N] [--keep] [flags]`.
//!
//! Starts the test peers — Debian's docker-registry holding an OpenShift 4.19.0 payload, its
//! driver-toolkit and kmod images built with gcc and depmod, the test API server with KMM 2.4's
//! CRDs, two nodes and the Modules, and the simulated KMM operator — then runs
//! `kubectl kmm preflight --release 4.19.0` (or `check`) through kubectl on your terminal, and
//! stops the peers when it ends (with its exit code), or with `--keep` when you press Ctrl-C.
//! Its ClusterVersion offers 4.19.0 and, with a risk, 4.19.1 (`./scripts/try-it check --updates`).
//! While it runs, `kubectl` pointed at the kubeconfig it prints sees the same cluster
//! (`kubectl get preflightvalidationsocp`).
//!
//! The Modules: nvidia-gpu's image holds its module for the new kernel; mlx5's image is missing
//! and its build section has its ConfigMap; nvme-of's image exists but holds modules for the
//! old kernel only (KMM 2.4's preflight passes it, the client check does not); can-bus's image
//! is missing and it has no build (KMM 2.4 would wait for it forever). `--modules N` takes the
//! first N of those, and past four adds Modules whose images are fine (`vendor-05`, …).
//!
//! The plugin is `KMM_SANDBOX_PLUGIN` when set (scripts/try-it sets it to an installed or
//! already built binary), else the one built beside this example.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use support::apiserver::Kmm;
use support::cluster::{TestCluster, VERSION, module_spec, resolved};
use support::fixtures::push_release;
use support::images::Pusher;
use support::kmod::simple_image;

const OLD_KERNEL: &str = "5.14.0-427.50.1.el9_4.x86_64";

/// The sandbox's own options, taken out of the arguments; the rest go to the plugin.
struct Options {
    modules: usize,
    keep: bool,
    plugin: std::path::PathBuf,
    extra: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        modules: 4,
        keep: false,
        plugin: std::env::var_os("KMM_SANDBOX_PLUGIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(support::plugin_binary),
        extra: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let count = match arg.strip_prefix("--modules") {
            Some("") => args.next(),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        };
        if arg.starts_with("--modules") {
            options.modules = count
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=500).contains(n))
                .ok_or("--modules takes a number of Modules from 1 to 500")?;
        } else if arg == "--keep" {
            options.keep = true;
        } else {
            options.extra.push(arg);
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandbox: cannot start: {e}");
            return ExitCode::from(4);
        }
    };
    runtime.block_on(run(options))
}

async fn run(options: Options) -> ExitCode {
    let extra = &options.extra;
    // Ctrl-C is the plugin's to handle (it stops following and says how to resume); the
    // sandbox outlives it to stop the peers.
    let mut interrupts =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sandbox: cannot handle Ctrl-C: {e}");
                return ExitCode::from(4);
            }
        };
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.operator()
        .configure(|o| o.step = Duration::from_millis(1500));
    c.api.add_node("worker-1", "amd64");
    let kernel = c.kernel().to_string();
    let pusher = Pusher::new(&c.registry);
    let image = |name: &str| format!("{}/vendor/{name}:${{KERNEL_FULL_VERSION}}", c.registry.addr);
    let tag = |name: &str| resolved(&image(name), &kernel);
    for (name, module, built_for) in [
        ("nvidia-gpu", "kmod", kernel.as_str()),
        ("nvme-of", "kmod", OLD_KERNEL),
    ] {
        let reference = tag(name);
        let repo_tag = reference
            .split_once('/')
            .map(|(_, r)| r)
            .unwrap_or_default();
        let (repo, t) = repo_tag.split_once(':').unwrap_or((repo_tag, "latest"));
        pusher
            .push_image(repo, Some(t), &simple_image(module, built_for))
            .await;
        c.operator().configure(|o| {
            o.images.insert(reference.clone());
        });
    }
    let scenario = [
        ("gpu-operator", "nvidia-gpu", false),
        ("nic", "mlx5", true),
        ("storage", "nvme-of", false),
        ("edge", "can-bus", false),
    ];
    for (namespace, name, build) in scenario.iter().take(options.modules) {
        c.api
            .add_module(namespace, name, module_spec(&image(name), *build));
    }
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "kmod-dockerfile", "namespace": "nic"},
               "data": {"dockerfile": "ARG DTK_AUTO\nFROM ${DTK_AUTO}\n"}}),
    );
    // More Modules, all fine: one image for all of them (the tag is the kernel).
    if options.modules > scenario.len() {
        let reference = tag("vendor");
        let (repo, t) = reference
            .split_once('/')
            .and_then(|(_, r)| r.split_once(':'))
            .unwrap_or_default();
        pusher
            .push_image(repo, Some(t), &simple_image("kmod", &kernel))
            .await;
        c.operator().configure(|o| {
            o.images.insert(reference.clone());
        });
        for i in scenario.len() + 1..=options.modules {
            c.api.add_module(
                "vendors",
                &format!("vendor-{i:02}"),
                module_spec(&image("vendor"), false),
            );
        }
    }

    let plugin_dir = options
        .plugin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = format!("{plugin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let kubeconfig = c.ctx.path(".kube/config");
    eprintln!(
        "sandbox: registry http://{} (release {VERSION}), API server {}, KMM 2.4, 2 nodes, {} Modules",
        c.registry.addr, c.api.url, options.modules
    );
    eprintln!(
        "sandbox: while it runs, in another terminal: export KUBECONFIG={}; kubectl get preflightvalidationsocp",
        kubeconfig.display()
    );
    eprintln!("sandbox: plugin {}", options.plugin.display());
    // The cluster is on 4.18.15 and offered 4.19.0, and 4.19.1 with a known risk.
    let next = push_release(&pusher, &c.registry.addr, "4.19.1", "amd64").await;
    c.api.put(
        "config.openshift.io",
        "ClusterVersion",
        json!({"metadata": {"name": "version"}, "spec": {"channel": "stable-4.19"},
               "status": {"desired": {"version": "4.18.15", "image": format!("{}/ocp/release@sha256:{}", c.registry.addr, "0".repeat(64))},
                          "availableUpdates": [{"version": VERSION, "image": c.release.release.reference}],
                          "conditionalUpdates": [{"release": {"version": "4.19.1", "image": next.release.reference},
                              "risks": [{"name": "SandboxRisk", "message": "an example risk", "url": "https://example.com/risk", "matchingRules": []}]}]}}),
    );
    let (command, extra) = match extra.first().map(String::as_str) {
        Some("check") => ("check", &extra[1..]),
        _ => ("preflight", &extra[..]),
    };
    let mut args = vec!["kmm".to_string(), command.into()];
    if !extra.iter().any(|a| a == "--updates") {
        args.extend(["--release".to_string(), VERSION.to_string()]);
    }
    args.extend(["--insecure-registry".to_string(), c.registry.addr.clone()]);
    args.extend(extra.iter().cloned());
    eprintln!("sandbox: kubectl {}\n", args.join(" "));
    let status = tokio::process::Command::new("kubectl")
        .args(&args)
        .env("PATH", path)
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "KMM_RELEASE_REPO",
            format!("{}/ocp/release", c.registry.addr),
        )
        .env("XDG_CACHE_HOME", c.ctx.path(".cache"))
        .status()
        .await;
    if options.keep {
        eprintln!(
            "sandbox: the peers keep running (KUBECONFIG={}); Ctrl-C stops them",
            kubeconfig.display()
        );
        interrupts.recv().await;
    }
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1) as u8),
        Err(e) => {
            eprintln!("sandbox: cannot run kubectl: {e}");
            ExitCode::from(4)
        }
    }
}
