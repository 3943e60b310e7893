//! Where the files of the tools kubectl-kmm sits next to live, per operating system.
//!
//! On Unix (Linux and macOS) everything starts from `HOME`. On Windows each tool has its own
//! rule, and kubectl-kmm follows the tool whose file it reads:
//! - kubectl (client-go `homedir.HomeDir`): the first of `HOME`, `USERPROFILE` and
//!   `HOMEDRIVE`+`HOMEPATH` that holds `.kube\config`, else the first of them that exists;
//! - podman/skopeo (containers/image) and docker: `USERPROFILE`
//!   (`%USERPROFILE%\.config\containers\auth.json`, `%USERPROFILE%\.docker\config.json`);
//! - our own cache: `%LOCALAPPDATA%\kubectl-kmm` (machine-local, not roaming).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The home directory kubectl reads `.kube/config` from.
pub fn kube_home() -> Option<PathBuf> {
    if cfg!(windows) {
        windows_kube_home(env, |p| p.exists()).or_else(dirs::home_dir)
    } else {
        dirs::home_dir()
    }
}

/// The home directory of the registry auth files (podman's and docker's).
pub fn user_home() -> Option<PathBuf> {
    if cfg!(windows) {
        windows_user_home(env).or_else(dirs::home_dir)
    } else {
        dirs::home_dir()
    }
}

/// The directory kubectl-kmm keeps its cache in.
pub fn cache_dir() -> Option<PathBuf> {
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
            .map(PathBuf::from)
            .or_else(dirs::cache_dir)
    } else {
        dirs::cache_dir()
    };
    base.map(|d| d.join("kubectl-kmm"))
}

fn windows_candidates(var: &impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = ["HOME", "USERPROFILE"]
        .iter()
        .filter_map(|name| var(name).map(PathBuf::from))
        .collect();
    if let (Some(drive), Some(path)) = (var("HOMEDRIVE"), var("HOMEPATH")) {
        let mut joined = drive;
        joined.push(path);
        candidates.push(PathBuf::from(joined));
    }
    candidates
}

/// client-go's rule on Windows, with the environment and the file system passed in.
fn windows_kube_home(
    var: impl Fn(&str) -> Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let candidates = windows_candidates(&var);
    candidates
        .iter()
        .find(|home| exists(&home.join(".kube").join("config")))
        .or_else(|| candidates.iter().find(|home| exists(home)))
        .or(candidates.first())
        .cloned()
}

/// containers/image and docker on Windows: `USERPROFILE`, then `HOMEDRIVE`+`HOMEPATH`.
fn windows_user_home(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    windows_candidates(&|name: &str| if name == "HOME" { None } else { var(name) })
        .into_iter()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn kubectl_home_is_the_one_with_a_kubeconfig() {
        let env = vars(&[
            ("HOME", r"C:\msys\home\a"),
            ("USERPROFILE", r"C:\Users\a"),
            ("HOMEDRIVE", "D:"),
            ("HOMEPATH", r"\a"),
        ]);
        let with_config = |p: &Path| p == Path::new(r"C:\Users\a").join(".kube").join("config");
        assert_eq!(
            windows_kube_home(&env, with_config),
            Some(PathBuf::from(r"C:\Users\a"))
        );
        let only_drive = |p: &Path| p == Path::new(r"D:\a");
        assert_eq!(
            windows_kube_home(&env, only_drive),
            Some(PathBuf::from(r"D:\a"))
        );
        assert_eq!(
            windows_kube_home(&env, |_| false),
            Some(PathBuf::from(r"C:\msys\home\a"))
        );
        assert_eq!(windows_kube_home(vars(&[]), |_| true), None);
    }

    #[test]
    fn auth_files_follow_userprofile_not_home() {
        let env = vars(&[("HOME", r"C:\msys\home\a"), ("USERPROFILE", r"C:\Users\a")]);
        assert_eq!(windows_user_home(env), Some(PathBuf::from(r"C:\Users\a")));
        let env = vars(&[("HOMEDRIVE", "C:"), ("HOMEPATH", r"\Users\b")]);
        assert_eq!(windows_user_home(env), Some(PathBuf::from(r"C:\Users\b")));
    }
}
