//! A pseudo-terminal the test owns. The plugin runs on its slave side as on a real terminal (its
//! controlling terminal, so Ctrl-C and resizes reach it as they would from a user); the test
//! types on the master side and replays what was written through a terminal emulator (vt100)
//! to read the screen and the scrollback a user would see.

use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Context, plugin_binary};

/// A resize, at the point of the output where it happened.
#[derive(Debug, Clone, Copy)]
struct Resize {
    at: usize,
    rows: u16,
    columns: u16,
}

pub struct Pty {
    master: std::fs::File,
    child: Option<tokio::process::Child>,
    output: Arc<Mutex<Vec<u8>>>,
    /// The number of bytes read so far; changes whenever output arrives.
    written: tokio::sync::watch::Receiver<usize>,
    sizes: Vec<Resize>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn winsize(rows: u16, columns: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Start the plugin with `args` on a terminal of `rows` × `columns`.
    pub fn spawn(ctx: &Context, args: &[&str], rows: u16, columns: u16) -> Pty {
        let (mut master, mut slave) = (-1, -1);
        let size = winsize(rows, columns);
        // SAFETY: openpty writes two new descriptors into the integers we pass.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };

        let mut command = tokio::process::Command::new(plugin_binary());
        command
            .args(args)
            .stdin(std::process::Stdio::from(slave.try_clone().unwrap()))
            .stdout(std::process::Stdio::from(slave.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(slave));
        ctx.prepare(&mut command, None);
        command.env("TERM", "xterm-256color");
        // SAFETY: between fork and exec only async-signal-safe calls: a new session whose
        // controlling terminal is the pty on stdin.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // The parent's copies of the slave go with the command: reading the master then ends
        // (EIO) once the plugin has exited.
        drop(command);

        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tell, written) = tokio::sync::watch::channel(0usize);
        let reader = {
            let mut from = master.try_clone().unwrap();
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n @ 1..) = from.read(&mut buffer) {
                    // The output's lock is released before the watch is told: a waiter looks at
                    // the output while it holds the watch, so holding both here could deadlock.
                    let len = {
                        let mut all = output.lock().unwrap();
                        all.extend_from_slice(&buffer[..n]);
                        all.len()
                    };
                    tell.send_replace(len);
                }
            })
        };
        Pty {
            master,
            child: Some(child),
            output,
            written,
            sizes: vec![Resize {
                at: 0,
                rows,
                columns,
            }],
            reader: Some(reader),
        }
    }

    /// Type `keys` as a user would.
    pub fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Resize the terminal (the plugin gets SIGWINCH).
    pub fn resize(&mut self, rows: u16, columns: u16) {
        let at = self.output.lock().unwrap().len();
        let size = winsize(rows, columns);
        // SAFETY: TIOCSWINSZ reads the winsize we pass, on our own master descriptor.
        let done = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(done, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        self.sizes.push(Resize { at, rows, columns });
    }

    /// Everything written so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// The terminal as a user sees it now.
    pub fn terminal(&self) -> Terminal {
        Terminal::replay(&self.output(), &self.sizes)
    }

    /// Wait until the terminal shows what `seen` looks for (bounded: a hang fails the test).
    pub async fn wait_for(&self, what: &str, seen: impl Fn(&Terminal) -> bool) -> Terminal {
        let mut written = self.written.clone();
        let waiting = written.wait_for(|_| seen(&self.terminal()));
        match tokio::time::timeout(Duration::from_secs(120), waiting).await {
            Ok(Ok(_)) => self.terminal(),
            _ => panic!(
                "the terminal never showed {what}:\n{}",
                self.terminal().screen()
            ),
        }
    }

    /// Wait for more output than there is now (the next redraw).
    pub async fn next_output(&self) {
        let now = self.output.lock().unwrap().len();
        self.wait_for("more output", |t| t.bytes > now).await;
    }

    /// Wait for the plugin to exit: its exit code and the terminal as it was left.
    pub async fn finish(mut self) -> (i32, Terminal) {
        let Some(child) = self.child.take() else {
            unreachable!("finish is called once")
        };
        let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .expect("the plugin did not finish within 180 s")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
        (output.status.code().unwrap_or(-1), self.terminal())
    }
}

/// A replay of the output through vt100: the screen and the scrollback.
pub struct Terminal {
    parser: vt100::Parser,
    bytes: usize,
    raw: Vec<u8>,
}

impl Terminal {
    fn replay(output: &[u8], sizes: &[Resize]) -> Terminal {
        let size = |n: u16| NonZeroU16::new(n.max(1)).unwrap();
        let first = sizes[0];
        let mut parser = vt100::Parser::new(size(first.rows), size(first.columns), 10_000);
        let mut from = 0;
        for resize in &sizes[1..] {
            let to = resize.at.min(output.len());
            parser.process(&output[from..to]);
            parser.set_size(size(resize.rows), size(resize.columns));
            from = to;
        }
        parser.process(&output[from..]);
        Terminal {
            parser,
            bytes: output.len(),
            raw: output.to_vec(),
        }
    }

    /// The visible screen's rows.
    pub fn rows(&self) -> Vec<String> {
        let (_, columns) = self.parser.screen().size();
        self.parser.screen().rows(0, columns.get()).collect()
    }

    pub fn screen(&self) -> String {
        self.rows().join("\n")
    }

    /// The rows that scrolled off the top, oldest first.
    pub fn scrollback(&mut self) -> Vec<String> {
        let total = self.parser.screen().scrollback_len();
        let (_, columns) = self.parser.screen().size();
        let mut rows = Vec::with_capacity(total);
        for offset in (1..=total).rev() {
            self.parser.screen_mut().set_scrollback(offset);
            rows.extend(self.parser.screen().rows(0, columns.get()).next());
        }
        self.parser.screen_mut().set_scrollback(0);
        rows
    }

    /// Everything that was ever on the terminal and still is: the scrollback, then the screen.
    pub fn history(&mut self) -> Vec<String> {
        let mut all = self.scrollback();
        all.extend(self.rows());
        all
    }

    /// What the plugin wrote, control sequences and all.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}
