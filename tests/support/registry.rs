//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct TlsFiles {
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 and localhost, written into `dir`.
pub fn generate_tls(dir: &Path) -> TlsFiles {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubectl-kmm test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "test registry");
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();

    let files = TlsFiles {
        ca_pem: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    std::fs::write(&files.ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, server_cert.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

/// The registry's log lines as the reader thread sees them on its stderr. A line reaches it a
/// moment after the client has its response, so whoever must see a request's line waits for it.
#[derive(Default)]
pub struct RegistryLog {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl RegistryLog {
    pub fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap()
    }

    fn push(&self, line: String) {
        self.lines().push(line);
        self.grew.notify_all();
    }

    /// Blocks until a line from index `from` on satisfies `logged`; panics after 30 s (a hung
    /// registry), the only time bound.
    pub fn wait_for(&self, from: usize, logged: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = self.lines();
        loop {
            if lines.iter().skip(from).any(|l| logged(l)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the registry never logged the awaited request"
            );
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }
}

/// `METHOD /path` of a request the log line says was answered, if it is such a line.
pub fn answered(line: &str) -> Option<String> {
    if !line.contains("msg=\"response completed\"") {
        return None;
    }
    let field = |name: &str| {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        let value = &line[start..];
        Some(match value.strip_prefix('"') {
            Some(quoted) => quoted[..quoted.find('"')?].to_string(),
            None => value.split(' ').next()?.to_string(),
        })
    };
    Some(format!(
        "{} {}",
        field("http.request.method")?,
        field("http.request.uri")?
    ))
}

pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub tls: Option<TlsFiles>,
    pub credentials: Option<(String, String)>,
    pub log: Arc<RegistryLog>,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::start(false, None, None)
    }

    /// HTTPS with a generated CA and htpasswd basic auth.
    pub fn secure(user: &str, password: &str) -> Self {
        Self::start(true, Some((user.to_string(), password.to_string())), None)
    }

    /// Plain HTTP with htpasswd basic auth (for Wine, whose crypt32 cannot verify a chain
    /// against extra roots: see tests/krew.rs).
    pub fn plain_with_password(user: &str, password: &str) -> Self {
        Self::start(false, Some((user.to_string(), password.to_string())), None)
    }

    /// Plain HTTP with bearer tokens from `tokens` (pushes use `user`'s password).
    pub fn with_tokens(tokens: &super::tokens::TokenService, user: &str, password: &str) -> Self {
        Self::start(
            false,
            Some((user.to_string(), password.to_string())),
            Some(tokens),
        )
    }

    fn start(
        tls: bool,
        credentials: Option<(String, String)>,
        tokens: Option<&super::tokens::TokenService>,
    ) -> Self {
        let binary = which::which("docker-registry").expect(
            "docker-registry is not installed; run the README's test command, which installs it",
        );
        // The port is free when we look; if another process grabs it first, try again.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = super::free_port();
            let addr = format!("127.0.0.1:{port}");
            let tls_files = tls.then(|| generate_tls(dir.path()));
            let mut config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: kubectl-kmm-tests\n",
                dir.path().join("data").display()
            );
            if let Some(files) = &tls_files {
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    files.cert.display(),
                    files.key.display()
                ));
            }
            if let Some(tokens) = tokens {
                let bundle = dir.path().join("token-signer.pem");
                std::fs::write(&bundle, &tokens.certificate_pem).unwrap();
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    tokens.realm,
                    super::tokens::SERVICE,
                    super::tokens::ISSUER,
                    bundle.display()
                ));
            } else if let Some((user, password)) = &credentials {
                let hash = bcrypt::hash(password, 4).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kubectl-kmm-tests\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();

            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = child.stderr.take().unwrap();
            let log = Arc::new(RegistryLog::default());
            let (ready_tx, ready_rx) = mpsc::channel();
            {
                let log = log.clone();
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let mut ready_tx = Some(ready_tx);
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        if line.contains(&format!("listening on {addr}"))
                            && let Some(tx) = ready_tx.take()
                        {
                            let _ = tx.send(true);
                        }
                        log.push(line);
                    }
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(false);
                    }
                });
            }
            // The log line is the event; the timeout only guards against a hung registry.
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(true) => {
                    return TestRegistry {
                        child,
                        addr,
                        tls: tls_files,
                        credentials,
                        log,
                        _dir: dir,
                    };
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("docker-registry did not start");
    }

    /// Where the registry keeps a blob's bytes on disk (to tamper with them).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn ca_pem(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_pem.as_path())
    }

    /// `METHOD /path` of every request the registry answered so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log
            .lines()
            .iter()
            .filter_map(|l| answered(l))
            .collect()
    }

    /// Requests for blobs seen in the access log so far.
    pub fn blob_requests(&self) -> usize {
        self.log
            .lines()
            .iter()
            .filter(|l| l.contains("http.request.method=GET") && l.contains("/blobs/sha256:"))
            .count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
