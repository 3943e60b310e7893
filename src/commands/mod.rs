//! One module per subcommand: orchestration only.

pub mod completion;
pub mod dtk;
pub mod preflight;
pub mod status;
pub mod version;

use crate::cli::{Cli, Command, KubeArgs, RegistryArgs};
use crate::cluster::ClusterOptions;
use crate::error::{ExitStatus, Result};
use crate::output::Term;
use crate::registry::auth::{AuthEnv, Credentials};
use crate::registry::{self, Proxy, Registry, RegistryOptions};

pub async fn run(cli: Cli, term: &Term) -> Result<ExitStatus> {
    match cli.command {
        Command::Preflight(args) => preflight::run(*args, term).await,
        Command::Status(args) => status::run(args, term).await,
        Command::Dtk(args) => dtk::run(args, term).await,
        Command::Version(args) => version::run(args),
        Command::Completion(args) => completion::run(args),
    }
}

pub fn cluster_options(args: &KubeArgs) -> ClusterOptions {
    ClusterOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
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

/// The registry client for the registry flags, with `credentials` already gathered.
pub fn registry(args: &RegistryArgs, credentials: Credentials, term: &Term) -> Result<Registry> {
    Ok(Registry::new(RegistryOptions {
        insecure: args.insecure_registry.clone(),
        ca_certificates: registry::load_ca_files(&args.registry_ca)?,
        credentials,
        proxy: Proxy::from_env(),
        notify: term.notifier(),
    }))
}
