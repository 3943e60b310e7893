//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
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

/// The registry's log lines as the reader thread takes them from its stderr. The registry writes
/// a request's line as it answers, but the thread may not have read it yet when the test looks:
/// `lines()` first waits until the thread has read everything the pipe holds.
pub struct RegistryLog {
    state: Mutex<LogState>,
    changed: Condvar,
    /// The read end of the registry's stderr pipe.
    fd: i32,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// The reader thread is in (or entering) a read of the pipe: every line before it is kept.
    reading: bool,
    closed: bool,
}

/// Bounds every wait on the registry's log: only a hung registry reaches it.
const LOG_WAIT: Duration = Duration::from_secs(30);

impl RegistryLog {
    fn new(fd: i32) -> Self {
        RegistryLog {
            state: Mutex::default(),
            changed: Condvar::new(),
            fd,
        }
    }

    fn update(&self, change: impl FnOnce(&mut LogState)) {
        change(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Bytes written to the pipe and not yet read.
    fn unread(&self) -> usize {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, for a descriptor the reader thread keeps open (a
        // closed one fails, and then the log is complete anyway).
        let failed = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut unread) } != 0;
        if failed { 0 } else { unread.max(0) as usize }
    }

    /// Every line the registry has written so far.
    pub fn lines(&self) -> Lines<'_> {
        let deadline = Instant::now() + LOG_WAIT;
        let mut state = self.state.lock().unwrap();
        // Settled: the reader waits for more and the pipe holds nothing it has not read.
        let settled = |s: &LogState| s.closed || (s.reading && self.unread() == 0);
        while !settled(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the registry's log reader is stuck");
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        Lines(state)
    }

    /// Blocks until a line from index `from` on satisfies `logged`.
    pub fn wait_for(&self, from: usize, logged: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + LOG_WAIT;
        let mut state = self.state.lock().unwrap();
        while !state.lines.iter().skip(from).any(|l| logged(l)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the registry never logged the awaited request"
            );
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

/// The log's lines, held still while looked at.
pub struct Lines<'a>(MutexGuard<'a, LogState>);

impl std::ops::Deref for Lines<'_> {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0.lines
    }
}

/// The registry's stderr, telling the log when its reader waits for more.
struct LogPipe {
    stderr: std::process::ChildStderr,
    log: Arc<RegistryLog>,
}

impl Read for LogPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.log.update(|s| s.reading = true);
        let read = self.stderr.read(buf);
        self.log.update(|s| s.reading = false);
        read
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

    /// Plain HTTP, no auth, on `port` when it is free (the sandbox keeps its port from run to
    /// run, so that what it pushes has the same digests and the plugin's cache answers).
    pub fn plain_on(port: u16) -> Self {
        Self::start_on(Some(port), false, None, None)
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
        Self::start_on(None, tls, credentials, tokens)
    }

    fn start_on(
        mut port: Option<u16>,
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
            let port = port
                .take()
                .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
                .unwrap_or_else(super::free_port);
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
            let log = Arc::new(RegistryLog::new(stderr.as_raw_fd()));
            let (ready_tx, ready_rx) = mpsc::channel();
            {
                let log = log.clone();
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let mut ready_tx = Some(ready_tx);
                    let pipe = LogPipe {
                        stderr,
                        log: log.clone(),
                    };
                    let mut lines = BufReader::new(pipe).lines();
                    while let Some(Ok(line)) = lines.next() {
                        if line.contains(&format!("listening on {addr}"))
                            && let Some(tx) = ready_tx.take()
                        {
                            let _ = tx.send(true);
                        }
                        log.update(|s| s.lines.push(line));
                    }
                    // Closed before the pipe is dropped: its descriptor is never asked again.
                    log.update(|s| s.closed = true);
                    drop(lines);
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
