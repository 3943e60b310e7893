//! Try `kubectl kmm preflight` without a cluster: `./scripts/try-it [extra flags]`.
//!
//! Starts the test peers — Debian's docker-registry holding an OpenShift 4.19.0 payload and its
//! driver-toolkit, the test API server with KMM 2.4's CRDs, a node and four Modules, and the
//! simulated KMM operator — then runs `kubectl kmm preflight --release 4.19.0` through kubectl
//! on your terminal, and stops the peers when it ends (with its exit code).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::Duration;

use support::apiserver::Kmm;
use support::cluster::{TestCluster, VERSION, module_spec};

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
    c.module("gpu-operator", "nvidia-gpu", true, false);
    c.module("nic", "mlx5", false, true);
    c.module("storage", "nvme-of", true, false);
    c.api.add_module(
        "edge",
        "can-bus",
        module_spec("quay.io/vendor/can-bus:${KERNEL_FULL_VERSION}", true),
    );

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
    let mut args = vec![
        "kmm".to_string(),
        "preflight".into(),
        "--release".into(),
        VERSION.into(),
        "--insecure-registry".into(),
        c.registry.addr.clone(),
    ];
    args.extend(extra);
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
