//! Try `kubectl kmm` without a cluster: `./scripts/try-it [check|status|dtk] [--modules N]
//! [--keep] [flags]` (`./scripts/try-it --help` says it all).
//!
//! Starts the test peers — Debian's docker-registry holding an OpenShift 4.19.0 payload, its
//! driver-toolkit (with the kernel's `Module.symvers` and an in-tree module, so that `--deep`
//! decides for real) and kmod images built with gcc and depmod, the test API server with KMM
//! 2.4's CRDs, two nodes and the Modules, and the simulated KMM operator — then runs
//! `kubectl kmm preflight --release 4.19.0` (or `check`, `status`, `dtk`) through kubectl on
//! your terminal, and stops the peers when it ends (with its exit code), or with `--keep` when
//! you press Ctrl-C. Its ClusterVersion offers 4.19.0 and, with a risk, 4.19.1
//! (`./scripts/try-it check --updates`). While it runs, `kubectl` pointed at the kubeconfig it
//! prints sees the same cluster (`kubectl get preflightvalidationsocp`).
//!
//! The registry keeps its port from run to run when it is free, and the plugin's cache lives in
//! `target/try-it/cache`: a second run reads what the first one cached (`-v` says how little
//! it fetched).
//!
//! The plugin is `KMM_SANDBOX_PLUGIN` when set (scripts/try-it sets it to an installed or
//! already built binary), else the one built beside this example.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use support::cluster::VERSION;
use support::registry::TestRegistry;

/// The sandbox's own options, taken out of the arguments; the rest go to the plugin.
struct Options {
    modules: usize,
    keep: bool,
    plugin: PathBuf,
    extra: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        modules: 5,
        keep: false,
        plugin: std::env::var_os("KMM_SANDBOX_PLUGIN")
            .map(PathBuf::from)
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
            eprintln!("sandbox: {e} (see ./scripts/try-it --help)");
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

/// Where the plugin's cache and the registry's last port are kept between runs.
fn state_dir() -> PathBuf {
    std::env::var_os("KMM_SANDBOX_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/try-it"))
}

async fn run(options: Options) -> ExitCode {
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
    let state = state_dir();
    let _ = std::fs::create_dir_all(&state);
    let port_file = state.join("registry-port");
    let registry = match std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        Some(port) => TestRegistry::plain_on(port),
        None => TestRegistry::plain(),
    };
    if let Some((_, port)) = registry.addr.rsplit_once(':') {
        let _ = std::fs::write(&port_file, port);
    }
    let c = support::sandbox::start(registry, options.modules).await;
    let plugin_dir = options
        .plugin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let kubectl = match which::which("kubectl") {
        Ok(k) => k,
        Err(_) => {
            eprintln!("sandbox: kubectl is not installed (scripts/peers installs it)");
            return ExitCode::from(4);
        }
    };
    // The plugin's directory first: kubectl runs this plugin, not another one on PATH.
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
    let kubectl_kmm = async |args: &[String]| {
        eprintln!("sandbox: kubectl {}\n", args.join(" "));
        tokio::process::Command::new(&kubectl)
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "KMM_RELEASE_REPO",
                format!("{}/ocp/release", c.registry.addr),
            )
            .env("XDG_CACHE_HOME", state.join("cache"))
            .status()
            .await
    };
    let extra = &options.extra;
    let (command, extra) = match extra.first().map(String::as_str) {
        Some(command @ ("check" | "status" | "dtk")) => (command, &extra[1..]),
        _ => ("preflight", &extra[..]),
    };
    let registry_flags = ["--insecure-registry".to_string(), c.registry.addr.clone()];
    if command == "status" {
        // Something to show: KMM's own preflight, created and left to run.
        let mut args: Vec<String> = [
            "kmm",
            "preflight",
            "--release",
            VERSION,
            "--no-client-check",
            "--no-wait",
            "-o",
            "name",
        ]
        .map(String::from)
        .into();
        args.extend(registry_flags.clone());
        let _ = kubectl_kmm(&args).await;
    }
    let mut args = vec!["kmm".to_string(), command.into()];
    if command != "status" && !extra.iter().any(|a| a == "--updates") {
        args.extend(["--release".to_string(), VERSION.to_string()]);
    }
    args.extend(registry_flags);
    args.extend(extra.iter().cloned());
    let status = kubectl_kmm(&args).await;
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
