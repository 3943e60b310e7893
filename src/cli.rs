//! Command-line definitions only: no behaviour here.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::output::Format;
use crate::release::Arch;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-kmm",
    bin_name = "kubectl kmm",
    version,
    about = "Kernel Module Management helpers: check that every KMM Module will work on an OpenShift release before upgrading",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More detail on stderr: credential sources, retries, bytes fetched
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No colour, even on a terminal (NO_COLOR is honoured too)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find a release's driver-toolkit image and kernel, straight from the registry
    #[command(after_help = DTK_EXAMPLES)]
    Dtk(DtkArgs),
}

const DTK_EXAMPLES: &str = "\
Examples:
  # The DTK and kernel of OpenShift 4.19.0 for x86_64
  kubectl kmm dtk --release 4.19.0

  # For arm64, as JSON
  kubectl kmm dtk --release 4.19.0 --arch aarch64 -o json

  # A release by pull spec, from a mirror with its own CA
  kubectl kmm dtk --release mirror.example.com:8443/ocp/release@sha256:<digest> \\
      --registry-ca mirror-ca.pem --registry-config ~/pull-secret.json";

#[derive(Debug, Args)]
pub struct DtkArgs {
    /// OpenShift version (4.19.0, 4.20.0-rc.2) or release pull spec (by tag or digest)
    #[arg(long, value_name = "VERSION|PULLSPEC")]
    pub release: String,

    /// Architecture of the payload and driver-toolkit
    #[arg(long, value_enum, value_name = "ARCH")]
    pub arch: Option<Arch>,

    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,

    #[command(flatten)]
    pub release_repo: ReleaseRepoArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ReleaseRepoArgs {
    /// Repository that versions are looked up in
    #[arg(
        long,
        env = "KMM_RELEASE_REPO",
        value_name = "REPO",
        default_value = crate::release::DEFAULT_RELEASE_REPO
    )]
    pub release_repo: String,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// Registry auth file (default: REGISTRY_AUTH_FILE, then podman's and docker's auth files)
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,

    /// Allow plain HTTP or unverified TLS for this registry (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Also trust the CA certificates in this PEM file (repeatable)
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,

    /// Neither read nor write the answer cache ($XDG_CACHE_HOME/kubectl-kmm)
    #[arg(long)]
    pub no_cache: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
