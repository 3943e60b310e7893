//! One module per subcommand: orchestration only.

pub mod dtk;

use crate::cli::{Cli, Command, RegistryArgs};
use crate::error::{ExitStatus, Result};
use crate::output::Term;
use crate::registry::auth::{AuthEnv, Credentials};
use crate::registry::{self, Proxy, Registry, RegistryOptions};

pub async fn run(cli: Cli, term: &Term) -> Result<ExitStatus> {
    match cli.command {
        Command::Dtk(args) => dtk::run(args, term).await,
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
