//! Try `kubectl kmm` without a cluster: `./scripts/try-it [check] [extra flags]`.
//!
//! Starts the test peers — Debian's docker-registry holding an OpenShift 4.19.0 payload, its
//! driver-toolkit and kmod images built with gcc and depmod, the test API server with KMM 2.4's
//! CRDs, two nodes and four Modules, and the simulated KMM operator — then runs
//! `kubectl kmm preflight --release 4.19.0` (or `check`) through kubectl on your terminal, and
//! stops the peers when it ends (with its exit code). Its ClusterVersion offers 4.19.0 and,
//! with a risk, 4.19.1 (`./scripts/try-it check --updates`).
//!
//! The Modules: nvidia-gpu's image holds its module for the new kernel; mlx5's image is missing
//! and its build section has its ConfigMap; nvme-of's image exists but holds modules for the
//! old kernel only (KMM 2.4's preflight passes it, the client check does not); can-bus's image
//! is missing and it has no build (KMM 2.4 would wait for it forever).

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

fn main() -> ExitCode {
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandbox: cannot start: {e}");
            return ExitCode::from(4);
        }
    };
    runtime.block_on(run(extra))
}

async fn run(extra: Vec<String>) -> ExitCode {
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
    c.api.add_module(
        "gpu-operator",
        "nvidia-gpu",
        module_spec(&image("nvidia-gpu"), false),
    );
    c.api
        .add_module("nic", "mlx5", module_spec(&image("mlx5"), true));
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "kmod-dockerfile", "namespace": "nic"},
               "data": {"dockerfile": "ARG DTK_AUTO\nFROM ${DTK_AUTO}\n"}}),
    );
    c.api
        .add_module("storage", "nvme-of", module_spec(&image("nvme-of"), false));
    c.api
        .add_module("edge", "can-bus", module_spec(&image("can-bus"), false));

    let plugin = support::plugin_binary();
    let plugin_dir = plugin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = format!("{plugin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    eprintln!(
        "sandbox: registry http://{} (release {VERSION}), API server {}, KMM 2.4, 2 nodes, 4 Modules",
        c.registry.addr, c.api.url
    );
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
        .env("KUBECONFIG", c.ctx.path(".kube/config"))
        .env(
            "KMM_RELEASE_REPO",
            format!("{}/ocp/release", c.registry.addr),
        )
        .env("XDG_CACHE_HOME", c.ctx.path(".cache"))
        .status()
        .await;
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1) as u8),
        Err(e) => {
            eprintln!("sandbox: cannot run kubectl: {e}");
            ExitCode::from(4)
        }
    }
}
