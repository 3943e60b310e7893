//! Registry credentials from the auth files podman, skopeo, oc and docker use.
//!
//! Search order (containers/image `getAuthFilePaths`): `--registry-config`, else
//! `REGISTRY_AUTH_FILE`, else `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
//! Files are searched in that order; inside a file a `credHelpers` entry for the host comes first
//! (`docker-credential-<helper> get`), then the most specific `auths` key (`host/ns/repo`,
//! then `host/ns`, then `host`).

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::registry::reference::ImageRef;

/// A username and password. Neither is ever printed: `Debug` redacts both.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// A credential and a description of where it came from (file and key, never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

#[derive(Debug, Clone)]
struct AuthFile {
    /// Shown to the user: a path, or e.g. "the cluster pull secret openshift-config/pull-secret".
    label: String,
    /// Normalised key (`host[/path]`) → credential.
    auths: HashMap<String, Credential>,
    /// Host → credential helper name (`credHelpers`).
    helpers: HashMap<String, String>,
}

/// What a credential helper answered, per (helper, host): asked once per run.
type HelperAnswers = Arc<Mutex<HashMap<(String, String), std::result::Result<Credential, String>>>>;

/// Every credential source, in priority order.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    files: Vec<AuthFile>,
    /// Default files that exist but could not be used (reported with `-v`, never fatal).
    pub skipped: Vec<String>,
    helper_answers: HelperAnswers,
}

/// The environment the search depends on, passed in so it can be tested.
#[derive(Debug, Clone, Default)]
pub struct AuthEnv {
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl AuthEnv {
    pub fn from_process() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        AuthEnv {
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            docker_config: var("DOCKER_CONFIG"),
            home: crate::platform::user_home(),
        }
    }

    /// The default files, in search order (used when no explicit file is given).
    pub fn default_paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(runtime) = &self.xdg_runtime_dir {
            paths.push(runtime.join("containers/auth.json"));
        }
        let config_home = self
            .xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")));
        if let Some(config) = config_home {
            paths.push(config.join("containers/auth.json"));
        }
        match (&self.docker_config, &self.home) {
            (Some(dir), _) => paths.push(dir.join("config.json")),
            (None, Some(home)) => paths.push(home.join(".docker/config.json")),
            (None, None) => {}
        }
        paths
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: HashMap<String, RawEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

/// A parsed auth file: `auths` entries and `credHelpers`, keys normalised.
#[derive(Debug, Clone, Default)]
pub struct AuthEntries {
    pub auths: HashMap<String, Credential>,
    pub helpers: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://quay.io/v1/` → `quay.io`; `docker.io` spellings → `docker.io`; others unchanged.
fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    let key = match stripped {
        // Legacy URL keys name a host only.
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => key.trim_end_matches('/'),
    };
    match key {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => key.to_string(),
    }
}

fn decode_entry(entry: RawEntry) -> std::result::Result<Credential, String> {
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "an \"auth\" value is not valid base64".to_string())?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| "an \"auth\" value is not UTF-8".to_string())?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| "an \"auth\" value is not base64(\"user:password\")".to_string())?;
        return Ok(Credential {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    match (entry.username, entry.password) {
        (Some(username), Some(password)) => Ok(Credential { username, password }),
        _ => Err("an entry has neither \"auth\" nor \"username\"/\"password\"".to_string()),
    }
}

/// Parse a docker/containers auth file (also the `.dockerconfigjson` of a pull secret).
/// Error messages never quote the content.
pub fn parse_auth_file(bytes: &[u8]) -> std::result::Result<AuthEntries, String> {
    // serde_json's messages may quote a value (`invalid type: string "…"`): position only.
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a valid JSON auth file (problem at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut auths = HashMap::new();
    for (key, entry) in raw.auths {
        let credential = decode_entry(entry).map_err(|e| format!("{e} (key {key:?})"))?;
        auths.insert(normalize_key(&key), credential);
    }
    let helpers = raw
        .cred_helpers
        .into_iter()
        .map(|(host, helper)| (normalize_key(&host), helper))
        .collect();
    Ok(AuthEntries { auths, helpers })
}

/// The `.dockercfg` of a `kubernetes.io/dockercfg` Secret: the `auths` map of an auth file,
/// without the `auths` key around it.
pub fn parse_dockercfg(bytes: &[u8]) -> std::result::Result<AuthEntries, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "not a valid .dockercfg (problem at line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
    let wrapped = serde_json::json!({ "auths": map });
    parse_auth_file(wrapped.to_string().as_bytes())
}

fn read_file(path: &Path) -> std::result::Result<AuthEntries, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    parse_auth_file(&bytes)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// `docker-credential-<helper> get`, with the registry host on stdin (the docker protocol).
fn ask_helper(helper: &str, host: &str) -> std::result::Result<Credential, String> {
    let program = format!("docker-credential-{helper}");
    let path = which::which(&program).map_err(|_| format!("{program} is not on PATH"))?;
    let mut child = Command::new(path)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program} failed: {e}"))?;
    if !output.status.success() {
        return Err(format!("{program} has no credentials for {host}"));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("{program} answered something that is not credentials JSON"))?;
    if answer.username == "<token>" {
        return Err(format!(
            "{program} answered an identity token, which is not supported"
        ));
    }
    Ok(Credential {
        username: answer.username,
        password: answer.secret,
    })
}

/// Most specific first: `host/a/b`, `host/a`, `host`.
fn lookup_keys(image: &ImageRef) -> Vec<String> {
    let host = normalize_key(&image.registry);
    let mut keys = Vec::new();
    let mut path = format!("{host}/{}", image.repository);
    loop {
        keys.push(path.clone());
        match path.rfind('/') {
            Some(i) => path.truncate(i),
            None => break,
        }
    }
    keys
}

impl Credentials {
    /// Feed every source, in order, into `hasher`: equal hashes, equal credentials. The
    /// secrets go into the hash only, which stays in memory.
    pub fn hash_into(&self, hasher: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        for file in &self.files {
            let mut auths: Vec<(&String, &String, &String)> = file
                .auths
                .iter()
                .map(|(k, c)| (k, &c.username, &c.password))
                .collect();
            auths.sort();
            let mut helpers: Vec<(&String, &String)> = file.helpers.iter().collect();
            helpers.sort();
            (auths, helpers).hash(hasher);
        }
    }

    /// Load the files the environment points at. An explicit file (flag or `REGISTRY_AUTH_FILE`)
    /// must be readable; default files that are missing are skipped silently, broken ones with a note.
    pub fn discover(explicit: Option<&Path>, env: &AuthEnv) -> Result<Self> {
        let mut credentials = Credentials::default();
        if let Some(path) = explicit.or(env.registry_auth_file.as_deref()) {
            let entries = read_file(path).map_err(|reason| Error::AuthFile {
                path: path.to_path_buf(),
                reason,
            })?;
            credentials.push_entries(path.display().to_string(), entries);
            return Ok(credentials);
        }
        for path in env.default_paths() {
            if !path.exists() {
                continue;
            }
            match read_file(&path) {
                Ok(entries) => credentials.push_entries(path.display().to_string(), entries),
                Err(reason) => credentials
                    .skipped
                    .push(format!("{}: {reason}", path.display())),
            }
        }
        Ok(credentials)
    }

    /// The same sources with `entries` searched before all of them (a Module's
    /// `imageRepoSecret`).
    pub fn with_first(&self, label: impl Into<String>, entries: AuthEntries) -> Credentials {
        let mut credentials = self.clone();
        credentials.files.insert(
            0,
            AuthFile {
                label: label.into(),
                auths: entries.auths,
                helpers: entries.helpers,
            },
        );
        credentials
    }

    /// Add a lower-priority source (the cluster's pull secret), searched after the files.
    pub fn push_entries(&mut self, label: impl Into<String>, entries: AuthEntries) {
        self.files.push(AuthFile {
            label: label.into(),
            auths: entries.auths,
            helpers: entries.helpers,
        });
    }

    fn helper_credential(&self, file: &AuthFile, host: &str) -> Option<Found> {
        let helper = file.helpers.get(host)?;
        let key = (helper.clone(), host.to_string());
        let mut answers = self
            .helper_answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let answer = answers
            .entry(key)
            .or_insert_with(|| ask_helper(helper, host));
        answer.as_ref().ok().map(|credential| Found {
            credential: credential.clone(),
            source: format!("docker-credential-{helper} (credHelpers in {})", file.label),
        })
    }

    pub fn lookup(&self, image: &ImageRef) -> Option<Found> {
        let keys = lookup_keys(image);
        let host = normalize_key(&image.registry);
        self.files.iter().find_map(|file| {
            self.helper_credential(file, &host).or_else(|| {
                keys.iter().find_map(|key| {
                    file.auths.get(key).map(|credential| Found {
                        credential: credential.clone(),
                        source: format!("{} (entry {key:?})", file.label),
                    })
                })
            })
        })
    }

    /// Credential helpers that were asked and could not help (for `-v`).
    pub fn helper_failures(&self) -> Vec<String> {
        let answers = self
            .helper_answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        answers
            .values()
            .filter_map(|a| a.as_ref().err().cloned())
            .collect()
    }

    /// Descriptions of the sources searched, for messages.
    pub fn searched(&self) -> Vec<String> {
        self.files.iter().map(|f| f.label.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn image(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn most_specific_key_wins_inside_a_file() {
        let file = format!(
            r#"{{"auths":{{"quay.io":{{"auth":"{}"}},"quay.io/openshift-release-dev":{{"auth":"{}"}},"https://registry.example.com/v1/":{{"username":"u","password":"p"}}}}}}"#,
            b64("host:h"),
            b64("ns:n")
        );
        let mut c = Credentials::default();
        c.push_entries("f", parse_auth_file(file.as_bytes()).unwrap());
        let found = c
            .lookup(&image(
                "quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64",
            ))
            .unwrap();
        assert_eq!(found.credential.username, "ns");
        assert!(found.source.contains("quay.io/openshift-release-dev"));
        assert_eq!(
            c.lookup(&image("quay.io/other/repo:1"))
                .unwrap()
                .credential
                .username,
            "host"
        );
        assert_eq!(
            c.lookup(&image("registry.example.com/a/b:1"))
                .unwrap()
                .credential
                .password,
            "p"
        );
        assert!(c.lookup(&image("mirror.local:5000/a/b:1")).is_none());
    }

    #[test]
    fn earlier_files_win_over_later_more_specific_ones() {
        let mut c = Credentials::default();
        c.push_entries(
            "first",
            parse_auth_file(
                format!(r#"{{"auths":{{"quay.io":{{"auth":"{}"}}}}}}"#, b64("a:1")).as_bytes(),
            )
            .unwrap(),
        );
        c.push_entries(
            "pull secret",
            parse_auth_file(
                format!(r#"{{"auths":{{"quay.io/x/y":{{"auth":"{}"}},"cloud.openshift.com":{{"auth":"{}"}}}}}}"#, b64("b:2"), b64("c:3")).as_bytes(),
            )
            .unwrap(),
        );
        assert_eq!(
            c.lookup(&image("quay.io/x/y:1")).unwrap().source,
            "first (entry \"quay.io\")"
        );
        assert_eq!(c.searched(), vec!["first", "pull secret"]);
    }

    #[test]
    fn broken_files_say_why_without_quoting_secrets() {
        let err = parse_auth_file(br#"{"auths":{"quay.io":{"auth":"c2VjcmV0"}}}"#).unwrap_err();
        assert!(err.contains("user:password"), "{err}");
        assert!(!err.contains("c2VjcmV0"));
        assert!(parse_auth_file(b"{not json").is_err());
        let err = parse_auth_file(br#"{"auths":{"quay.io":"hunter2"}}"#).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_auth_file(br#"{"auths":{"quay.io":{"password":"hunter2"}}}"#).unwrap_err();
        assert!(!err.contains("hunter2"));
        assert_eq!(
            format!(
                "{:?}",
                Credential {
                    username: "u".into(),
                    password: "hunter2".into()
                }
            ),
            "Credential(<redacted>)"
        );
    }

    #[test]
    fn legacy_dockercfg_and_sources_put_first() {
        let legacy = format!(r#"{{"quay.io":{{"auth":"{}"}}}}"#, b64("old:style"));
        let entries = parse_dockercfg(legacy.as_bytes()).unwrap();
        let mut base = Credentials::default();
        base.push_entries(
            "pull secret",
            parse_auth_file(
                format!(r#"{{"auths":{{"quay.io":{{"auth":"{}"}}}}}}"#, b64("p:s")).as_bytes(),
            )
            .unwrap(),
        );
        let module = base.with_first("Secret nic/pull", entries);
        let found = module.lookup(&image("quay.io/v/m:1")).unwrap();
        assert_eq!(found.credential.username, "old");
        assert_eq!(module.searched(), vec!["Secret nic/pull", "pull secret"]);
        assert_eq!(base.searched(), vec!["pull secret"]);
        assert!(parse_dockercfg(b"[1]").is_err());
    }

    #[test]
    fn default_search_order() {
        let env = AuthEnv {
            registry_auth_file: None,
            xdg_runtime_dir: Some("/run/user/1".into()),
            xdg_config_home: None,
            docker_config: None,
            home: Some("/home/a".into()),
        };
        assert_eq!(
            env.default_paths(),
            vec![
                PathBuf::from("/run/user/1/containers/auth.json"),
                PathBuf::from("/home/a/.config/containers/auth.json"),
                PathBuf::from("/home/a/.docker/config.json"),
            ]
        );
        let env = AuthEnv {
            docker_config: Some("/d".into()),
            ..env
        };
        assert_eq!(env.default_paths()[2], PathBuf::from("/d/config.json"));
    }

    #[test]
    fn docker_hub_spellings() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("quay.io/"), "quay.io");
        assert_eq!(
            lookup_keys(&image("mirror:5000/a/b/c:1")),
            vec![
                "mirror:5000/a/b/c",
                "mirror:5000/a/b",
                "mirror:5000/a",
                "mirror:5000"
            ]
        );
    }
}
