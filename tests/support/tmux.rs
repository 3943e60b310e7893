//! The plugin in a real tmux pane: what a terminal that people use keeps in its history.
//!
//! tmux has a server of its own per test (its own socket, no configuration but ours), runs the
//! plugin through a script that tells the test when it ended (`tmux wait-for`), and keeps the
//! pane after that (`remain-on-exit`) so that the history and the screen can be captured.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Context, plugin_command_line, shell_quote};

pub struct Tmux {
    tmux: PathBuf,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Tmux {
    /// Start `kubectl-kmm <args>` for `ctx` in a detached pane of `rows` × `columns`.
    pub fn run(ctx: &Context, args: &[&str], rows: u16, columns: u16) -> Tmux {
        let tmux = which::which("tmux").expect("tmux is not installed (scripts/peers installs it)");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("socket");
        let config = dir.path().join("tmux.conf");
        // Defaults as shipped (scroll-on-clear is on), a history long enough to keep every copy.
        std::fs::write(
            &config,
            "set -g remain-on-exit on\nset -g history-limit 100000\nset -g status off\n",
        )
        .unwrap();
        let command = plugin_command_line(args);
        let script = dir.path().join("run.sh");
        std::fs::write(
            &script,
            format!(
                "{command}\necho $? > {code}\nexec {tmux} -S {socket} wait-for -S ended\n",
                code = shell_quote(&dir.path().join("code").display().to_string()),
                tmux = shell_quote(&tmux.display().to_string()),
                socket = shell_quote(&socket.display().to_string()),
            ),
        )
        .unwrap();
        let mut start = Command::new(&tmux);
        start
            .args(["-S"])
            .arg(&socket)
            .arg("-f")
            .arg(&config)
            .args([
                "new-session",
                "-d",
                "-x",
                &columns.to_string(),
                "-y",
                &rows.to_string(),
                "/bin/sh",
            ]);
        start.arg(&script);
        ctx.prepare_std(&mut start);
        start.env("TERM", "xterm-256color");
        start.env_remove("TMUX");
        let status = start.status().unwrap();
        assert!(status.success(), "tmux new-session failed");
        Tmux { tmux, dir, socket }
    }

    fn tmux(&self) -> Command {
        let mut command = Command::new(&self.tmux);
        command.arg("-S").arg(&self.socket);
        command
    }

    /// Wait until the plugin has ended; its exit code.
    pub fn wait(&self) -> i32 {
        let status = self.tmux().args(["wait-for", "ended"]).status().unwrap();
        assert!(status.success());
        std::fs::read_to_string(self.path("code"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn capture(&self, range: &[&str]) -> Vec<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-J"])
            .args(range)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines tmux keeps above the screen, oldest first.
    pub fn history(&self) -> Vec<String> {
        self.capture(&["-S", "-", "-E", "-1"])
    }

    /// The visible screen.
    pub fn screen(&self) -> Vec<String> {
        self.capture(&[])
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}
