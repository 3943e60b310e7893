//! One module per subcommand: orchestration only.

pub mod check;
pub mod completion;
pub mod context;
pub mod dtk;
pub mod fleet;
pub mod hub;
pub mod judge;
pub mod preflight;
pub mod status;
pub mod version;

use crate::cli::{Cli, Command, KubeArgs, RegistryArgs};
use crate::cluster::ClusterOptions;
use crate::error::{Error, ExitStatus, Result};
use crate::output::Term;
use crate::registry::auth::{AuthEnv, Credentials};
use crate::registry::mirrors::{self, Mirrors};
use crate::registry::{self, Proxy, Registry, RegistryOptions};

pub async fn run(cli: Cli, term: &Term) -> Result<ExitStatus> {
    let work = async {
        match cli.command {
            Command::Preflight(args) => preflight::run(*args, term).await,
            Command::Check(args) => check::run(*args, term).await,
            Command::Status(args) => status::run(args, term).await,
            Command::Dtk(args) => dtk::run(args, term).await,
            Command::Version(args) => version::run(args),
            Command::Completion(args) => completion::run(args),
        }
    };
    tokio::pin!(work);
    // Ctrl-C ends the run here, with the spinner line taken off the screen, unless the live
    // view is following (it stops following and says how to resume).
    loop {
        tokio::select! {
            result = &mut work => return result,
            () = interrupt::signal() => {
                if !interrupt::is_taken() {
                    term.step_done();
                    term.error_line("interrupted (Ctrl-C)");
                    return Ok(ExitStatus::Interrupted);
                }
            }
        }
    }
}

/// Ctrl-C as one event that any part of the run can wait for.
pub mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::Notify;

    static SEEN: AtomicBool = AtomicBool::new(false);
    static TAKEN: AtomicBool = AtomicBool::new(false);
    static NOTIFY: Notify = Notify::const_new();

    /// The next Ctrl-C (never, if its handler cannot be installed), told to every waiter.
    pub(super) async fn signal() {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        SEEN.store(true, Ordering::SeqCst);
        NOTIFY.notify_waiters();
    }

    pub(super) fn is_taken() -> bool {
        TAKEN.load(Ordering::SeqCst)
    }

    /// While the guard lives, Ctrl-C is the holder's to handle (`wait` says when it came).
    pub struct Taken(());

    pub fn take() -> Taken {
        TAKEN.store(true, Ordering::SeqCst);
        Taken(())
    }

    impl Drop for Taken {
        fn drop(&mut self) {
            TAKEN.store(false, Ordering::SeqCst);
        }
    }

    /// Resolves once Ctrl-C has been pressed (at once if it already was).
    pub async fn wait() {
        loop {
            let notified = NOTIFY.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if SEEN.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

pub fn cluster_options(args: &KubeArgs) -> ClusterOptions {
    ClusterOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.first().cloned(),
        cluster: args.cluster.clone(),
        user: args.user.clone(),
        as_user: args.as_user.clone(),
        as_groups: args.as_group.clone(),
        request_timeout: args.request_timeout.0,
        insecure_skip_tls_verify: args.insecure_skip_tls_verify,
    }
}

/// Local credentials (auth files) as podman would find them.
pub fn local_credentials(args: &RegistryArgs) -> Result<Credentials> {
    Credentials::discover(args.registry_config.as_deref(), &AuthEnv::from_process())
}

/// Mirror rules from `--idms-file` / `--icsp-file`.
pub fn file_mirrors(args: &RegistryArgs) -> Result<Mirrors> {
    let mut mirrors = Mirrors::default();
    let files = [
        (&args.idms_file, "ImageDigestMirrorSet", "--idms-file"),
        (&args.icsp_file, "ImageContentSourcePolicy", "--icsp-file"),
    ];
    for (path, kind, flag) in files {
        let Some(path) = path else { continue };
        let label = path.display().to_string();
        let sets = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| mirrors::parse_file(&text, &label, kind))
            .map_err(|reason| {
                Error::invalid(
                    format!("{flag} {label}: {reason}"),
                    format!("{flag} takes a file of {kind} objects, as `oc adm release info` does"),
                )
            })?;
        mirrors.add(sets);
    }
    Ok(mirrors)
}

/// The registry client for the registry flags, with credentials and mirrors already gathered.
/// `request_timeout` is `--request-timeout` (None or zero: the registry default).
pub fn registry(
    args: &RegistryArgs,
    request_timeout: Option<std::time::Duration>,
    credentials: Credentials,
    mirrors: Mirrors,
    term: &Term,
) -> Result<Registry> {
    // `http://host` says the registry speaks plain HTTP: no TLS attempt first.
    let mut insecure = Vec::new();
    let mut plain_http = Vec::new();
    for entry in &args.insecure_registry {
        let host = entry.trim_end_matches('/');
        if let Some(host) = host.strip_prefix("http://") {
            plain_http.push(host.to_string());
            insecure.push(host.to_string());
        } else {
            insecure.push(host.strip_prefix("https://").unwrap_or(host).to_string());
        }
    }
    Ok(Registry::new(RegistryOptions {
        insecure,
        plain_http,
        request_timeout: request_timeout
            .filter(|t| !t.is_zero())
            .unwrap_or(registry::DEFAULT_REQUEST_TIMEOUT),
        ca_certificates: registry::load_ca_files(&args.registry_ca)?,
        credentials,
        mirrors,
        proxy: Proxy::from_env(),
        notify: term.notifier(),
    }))
}
