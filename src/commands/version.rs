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

pub fn current() -> Version {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Version {
        version: format!("v{}", env!("CARGO_PKG_VERSION")),
        git_commit: env!("KUBECTL_KMM_GIT_COMMIT"),
        platform: format!("{}/{arch}", std::env::consts::OS),
        target: env!("KUBECTL_KMM_TARGET"),
    }
}

pub fn run(args: VersionArgs) -> Result<ExitStatus> {
    let v = current();
    output::stdout(&match args.output {
        Format::Text => format!(
            "kubectl-kmm {}\ngit commit: {}\nplatform:   {} ({})",
            v.version, v.git_commit, v.platform, v.target
        ),
        Format::Json => output::to_json(&v),
        Format::Yaml => output::to_yaml(&v),
    });
    Ok(ExitStatus::Success)
}
