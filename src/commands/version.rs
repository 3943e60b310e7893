//! `kubectl kmm version`.

use serde::Serialize;

use crate::cli::VersionArgs;
use crate::error::{ExitStatus, Result};
use crate::output::{self, Format};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: String,
    pub git_commit: &'static str,
    /// `os/arch` as krew names platforms.
    pub platform: String,
    pub target: &'static str,
}

/// What `version` and `--version` print after the program's name.
pub const TEXT: &str = concat!(
    "v",
    env!("CARGO_PKG_VERSION"),
    "\ngit commit: ",
    env!("KUBECTL_KMM_GIT_COMMIT"),
    "\nplatform:   ",
    env!("KUBECTL_KMM_PLATFORM"),
    " (",
    env!("KUBECTL_KMM_TARGET"),
    ")"
);

pub fn current() -> Version {
    Version {
        version: format!("v{}", env!("CARGO_PKG_VERSION")),
        git_commit: env!("KUBECTL_KMM_GIT_COMMIT"),
        platform: env!("KUBECTL_KMM_PLATFORM").to_string(),
        target: env!("KUBECTL_KMM_TARGET"),
    }
}

pub fn run(args: VersionArgs) -> Result<ExitStatus> {
    let v = current();
    output::stdout(&match args.output {
        Format::Text => format!("kubectl-kmm {TEXT}"),
        Format::Json => output::to_json(&v),
        Format::Yaml => output::to_yaml(&v),
    });
    Ok(ExitStatus::Success)
}
