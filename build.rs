//! Embeds the git commit for `kubectl kmm version` (KUBECTL_KMM_GIT_COMMIT overrides, e.g. when
//! building from a source archive without .git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KUBECTL_KMM_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("KUBECTL_KMM_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KUBECTL_KMM_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=KUBECTL_KMM_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // `os/arch` as krew names platforms.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH")
        .unwrap_or_default()
        .as_str()
    {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    println!("cargo:rustc-env=KUBECTL_KMM_PLATFORM={os}/{arch}");
}
