//! `/etc/driver-toolkit-release.json`, written by the last RUN of every DTK Dockerfile.

use regex::Regex;
use serde::Deserialize;
use std::sync::LazyLock;

pub const DTK_RELEASE_FILE: &str = "etc/driver-toolkit-release.json";
/// The real file is one line of ~150 bytes.
pub const DTK_FILE_LIMIT: u64 = 64 * 1024;

/// A kernel NVR with its RPM arch, optionally `+rt` (4.16+ RT kernels share the normal NVR) or
/// `+64k` (aarch64 64k-page kernels).
static KERNEL_NVR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d+\.\d+\.\d+-[\w.]+\.(x86_64|aarch64|ppc64le|s390x)(\+rt|\+64k)?$")
        .expect("static regex")
});

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DtkRelease {
    pub kernel_version: String,
    pub rt_kernel_version: Option<String>,
    pub rhel_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct Raw {
    kernel_version: Option<String>,
    rt_kernel_version: Option<String>,
    rhel_version: Option<String>,
}

/// Parse the file. Unknown keys are fine; a missing or implausible `KERNEL_VERSION` is not.
pub fn parse(bytes: &[u8]) -> Result<DtkRelease, String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let kernel_version = raw
        .kernel_version
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or("KERNEL_VERSION is missing or empty")?;
    if !looks_like_kernel(&kernel_version) {
        return Err(format!(
            "KERNEL_VERSION {kernel_version:?} is not a kernel version"
        ));
    }
    // On non-x86 DTKs `rpm -q kernel-rt-core` prints "package kernel-rt-core is not installed"
    // into the field (ocp-release.md §3.2): only a real NVR counts.
    let rt_kernel_version = raw
        .rt_kernel_version
        .map(|k| k.trim().to_string())
        .filter(|k| KERNEL_NVR.is_match(k));
    let rhel_version = raw
        .rhel_version
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    Ok(DtkRelease {
        kernel_version,
        rt_kernel_version,
        rhel_version,
    })
}

/// Loose check, as KMM's webhook would accept it, plus no spaces and a leading digit.
fn looks_like_kernel(k: &str) -> bool {
    k.starts_with(|c: char| c.is_ascii_digit())
        && !k.contains(char::is_whitespace)
        && k.split(['.', ',', '-']).count() >= 3
}

/// The RPM arch a kernel NVR was built for (`…el9_6.x86_64+rt` → `x86_64`).
pub fn kernel_arch(kernel: &str) -> Option<&str> {
    KERNEL_NVR
        .captures(kernel)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_real_shape() {
        let d = parse(br#"{ "KERNEL_VERSION": "5.14.0-427.50.1.el9_4.x86_64", "RT_KERNEL_VERSION": "5.14.0-427.50.1.el9_4.x86_64+rt", "RHEL_VERSION": "9.4" }"#).unwrap();
        assert_eq!(d.kernel_version, "5.14.0-427.50.1.el9_4.x86_64");
        assert_eq!(
            d.rt_kernel_version.as_deref(),
            Some("5.14.0-427.50.1.el9_4.x86_64+rt")
        );
        assert_eq!(d.rhel_version.as_deref(), Some("9.4"));
        assert_eq!(kernel_arch(&d.kernel_version), Some("x86_64"));
    }

    #[test]
    fn rpm_noise_in_rt_counts_as_absent_and_unknown_keys_are_fine() {
        let d = parse(br#"{"KERNEL_VERSION":"5.14.0-570.19.1.el9_6.aarch64","RT_KERNEL_VERSION":"package kernel-rt-core is not installed","RHEL_VERSION":"9.6","OCP_VERSION":"4.19"}"#).unwrap();
        assert_eq!(d.rt_kernel_version, None);
        let d = parse(br#"{"KERNEL_VERSION":"4.18.0-305.el8.x86_64"}"#).unwrap();
        assert_eq!(d.rt_kernel_version, None);
        assert_eq!(d.rhel_version, None);
    }

    #[test]
    fn rejects_malformed_files() {
        assert!(parse(b"{").is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"RHEL_VERSION":"9.6"}"#).is_err());
        assert!(parse(br#"{"KERNEL_VERSION":""}"#).is_err());
        assert!(parse(br#"{"KERNEL_VERSION":"package kernel-devel is not installed"}"#).is_err());
        assert!(parse(br#"{"KERNEL_VERSION":5}"#).is_err());
    }
}
