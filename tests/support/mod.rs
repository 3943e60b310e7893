//! Test peers and helpers shared by the integration tests.
#![allow(dead_code)]

pub mod apiserver;
pub mod bench;
pub mod cluster;
pub mod docs;
pub mod fixtures;
pub mod fleet;
pub mod httpproxy;
pub mod hub;
pub mod images;
pub mod kmod;
pub mod measure;
pub mod operator;
pub mod proxy;
pub mod pty;
pub mod realkernel;
pub mod registry;
pub mod relay;
pub mod sandbox;
pub mod tmux;
pub mod tokens;
pub mod wine;

use std::path::{Path, PathBuf};
use std::process::Output;

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The plugin binary cargo built for these tests (for an example, the one beside it).
pub fn plugin_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_kubectl-kmm") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("kubectl-kmm")))
            .unwrap_or_else(|| PathBuf::from("kubectl-kmm")),
    }
}

/// The programs a test's commands may look up on PATH: kubectl (run by the tests through
/// plugin discovery) and what util-linux `script`'s shell runs before the plugin.
const TOOLS: &[&str] = &["kubectl", "stty"];

/// A directory of links to `TOOLS` and nothing else, made once per test process. kubectl lists
/// every `kubectl-*` file of every PATH directory as a plugin (and exits 1 when one hides
/// another), so a PATH of the user's own directories would let a `kubectl-kmm` installed there
/// (by `cargo install`, krew or an archive) into the tests.
pub fn tools_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join("tools");
        std::fs::create_dir_all(&dir).unwrap();
        for tool in TOOLS {
            let found = which::which(tool)
                .unwrap_or_else(|_| panic!("{tool} is not installed (scripts/peers installs it)"));
            // Made aside and renamed over the old link: test processes may do it at once.
            let fresh = dir.join(format!(".{tool}.{}", std::process::id()));
            let _ = std::fs::remove_file(&fresh);
            std::os::unix::fs::symlink(found, &fresh).unwrap();
            std::fs::rename(&fresh, dir.join(tool)).unwrap();
        }
        dir
    })
}

/// A PATH of `first` (in order), then `tools_dir()`: nothing the user installed.
pub fn isolated_path(first: &[&Path]) -> String {
    first
        .iter()
        .copied()
        .chain([tools_dir()])
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Variables that would let the developer's own setup leak into a test.
const SCRUBBED: &[&str] = &[
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "KUBECONFIG",
    "KMM_RELEASE_REPO",
    "NO_COLOR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
];

/// One isolated user: its own HOME, caches, config dirs and kubeconfig.
pub struct Context {
    pub home: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with the whole run when the exit code is not `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics, showing stderr, unless stderr contains `needle`.
    pub fn expect_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Panics, showing stdout, unless stdout contains `needle`.
    pub fn expect_stdout(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "expected {needle:?} in stdout:\n{}",
            self.stdout
        );
        self
    }

    /// The keys of the JSON object on stdout, sorted.
    pub fn json_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .json()
            .as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect();
        keys.sort_unstable();
        keys
    }

    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Context {
    pub fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let envs = vec![
            ("HOME".to_string(), home.path().display().to_string()),
            (
                "XDG_CACHE_HOME".to_string(),
                home.path().join(".cache").display().to_string(),
            ),
            (
                "KUBECONFIG".to_string(),
                home.path().join(".kube/config").display().to_string(),
            ),
        ];
        Context { home, envs }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.home.path().join(relative)
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<str>) -> &mut Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs
            .push((key.to_string(), value.as_ref().to_string()));
        self
    }

    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The environment of one of this user's commands: nothing of the developer's own setup,
    /// and a PATH of `path_prefix` (the plugin's directory, for kubectl's plugin discovery)
    /// and the test tools only (`isolated_path`). A test's own `env("PATH", …)` wins.
    pub fn prepare(&self, command: &mut tokio::process::Command, path_prefix: Option<&Path>) {
        self.prepare_std(command.as_std_mut());
        if let Some(prefix) = path_prefix
            && !self.envs.iter().any(|(k, _)| k == "PATH")
        {
            command.env("PATH", isolated_path(&[prefix]));
        }
        command.kill_on_drop(true);
    }

    /// The same for a `std` command, with the test tools alone on PATH.
    pub fn prepare_std(&self, command: &mut std::process::Command) {
        for var in SCRUBBED {
            command.env_remove(var);
        }
        command.env("PATH", isolated_path(&[]));
        for (k, v) in &self.envs {
            command.env(k, v);
        }
    }

    /// Run the plugin binary directly.
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new(plugin_binary());
        command.args(args);
        self.prepare(&mut command, None);
        Run::from(bounded(command.output()).await)
    }

    /// Run the plugin with `input` on its stdin.
    pub async fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use tokio::io::AsyncWriteExt;
        let mut command = tokio::process::Command::new(plugin_binary());
        command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        self.prepare(&mut command, None);
        let mut child = command.spawn().unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).await.unwrap();
        }
        Run::from(bounded(child.wait_with_output()).await)
    }

    /// Start the plugin and leave it running (stdout and stderr piped).
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut command = tokio::process::Command::new(plugin_binary());
        command
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        self.prepare(&mut command, None);
        command.spawn().unwrap()
    }

    /// Run the plugin on a pseudo-terminal (util-linux `script`), typing `input`. The output is
    /// what the terminal showed, stdout and stderr together.
    pub async fn run_in_terminal(&self, args: &[&str], input: &str) -> Run {
        let line = plugin_command_line(args);
        // Found on the tests' own PATH: the command's PATH is the isolated one.
        let script = which::which("script").expect("util-linux script is not installed");
        let mut command = tokio::process::Command::new(script);
        command
            .args([
                "-qefc",
                &format!("stty cols 160 rows 50; exec {line}"),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        self.prepare(&mut command, None);
        command.env("TERM", "xterm-256color");
        let mut child = command.spawn().unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(input.as_bytes()).await;
            // Keep stdin open until the program ends: an early EOF would reach it as Ctrl-D.
            let output = bounded(child.wait_with_output()).await;
            drop(stdin);
            return Run::from(output);
        }
        Run::from(bounded(child.wait_with_output()).await)
    }

    /// Run `kubectl <args>` with the plugin's directory first on PATH: plugin discovery.
    pub async fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with_stdin(args, None).await
    }

    /// `kubectl <args>`, with `input` on its stdin when given (`kubectl apply -f -`).
    pub async fn kubectl_with_stdin(&self, args: &[&str], input: Option<&str>) -> Run {
        use tokio::io::AsyncWriteExt;
        let kubectl = which::which("kubectl").expect("kubectl is not installed");
        let mut command = tokio::process::Command::new(kubectl);
        command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let binary = plugin_binary();
        self.prepare(&mut command, binary.parent());
        let mut child = command.spawn().unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.unwrap_or_default().as_bytes())
                .await
                .unwrap();
        }
        Run::from(bounded(child.wait_with_output()).await)
    }
}

/// Run the plugin (`run`) while `during` acts on its peers. When the plugin ends first, `during`
/// is dropped unfinished: a test never hangs on an action the plugin no longer waits for.
pub async fn while_running(
    run: impl std::future::Future<Output = Run>,
    during: impl std::future::Future<Output = ()>,
) -> Run {
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result,
        _ = during => run.await,
    }
}

/// Read an HTTP request head (up to the blank line) from a test peer's client.
pub async fn read_http_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// `{"auths": {key: {"auth": base64(user:password)}}}`
pub fn auth_file(entries: &[(&str, &str, &str)]) -> String {
    use base64::Engine;
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(key, user, password)| {
            (
                key.to_string(),
                serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))}),
            )
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// A plugin run that hangs fails its test instead of the whole suite (the child is killed on
/// drop). Generous: a bound on a bug, not a timing assertion.
async fn bounded(
    wait: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> std::process::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(180), wait).await {
        Ok(output) => output.unwrap(),
        Err(_) => panic!("the plugin did not finish within 180 s"),
    }
}

/// A peer that accepts connections and never answers (nor closes them): a hung registry or
/// API server. It stops when dropped.
pub struct Stalled {
    pub addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Stalled {
    pub async fn start() -> Stalled {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Stalled { addr, task }
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `arg` quoted for the shell, as one word.
pub fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// The plugin and `args` as one shell command line.
pub fn plugin_command_line(args: &[&str]) -> String {
    std::iter::once(plugin_binary().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` without its terminal control sequences (CSI: colours, cursor moves, erasing).
pub fn without_escapes(text: &str) -> String {
    static CSI: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new("\x1b\\[[0-9;?]*[A-Za-z]").unwrap());
    CSI.replace_all(text, "").into_owned()
}

/// A URL query component, decoded (`%41` and `+`).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
