//! Measuring a command for the benchmarks: wall time, peak RSS (wait4) and exit code.

use std::process::Command;
use std::time::{Duration, Instant};

/// In the benchmark binary's helper mode (set by `measure`), do the measuring and exit.
pub fn helper_if_asked() {
    if std::env::var_os(HELPER_ENV).is_some() {
        helper();
    }
}

pub struct Measured {
    pub wall: Duration,
    pub peak_rss_kib: i64,
    pub code: i32,
    /// User and system CPU time of the command.
    pub cpu: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// The number after `label` in the `-v` lines of a run (zero when no line says it).
pub fn reported<T: std::str::FromStr + Default>(run: &Measured, label: &str) -> T {
    run.stderr
        .lines()
        .find_map(|l| {
            let rest = &l[l.find(label)? + label.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_default()
}

const HELPER_ENV: &str = "KMM_BENCH_MEASURE";

/// Helper mode: run argv[1..] as a child, wait4(2) for it, and report its peak RSS.
/// A fresh, small process does the fork: Linux carries the parent's pre-exec high-water mark
/// into the child's ru_maxrss, which from the big benchmark process would swamp the figure.
fn helper() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .env_remove(HELPER_ENV)
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child; rusage is a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let micros = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    let cpu = micros(usage.ru_utime) + micros(usage.ru_stime);
    // The command's own output went to our stdout before this line: the last line is ours.
    println!(
        "{} {} {code} {cpu}",
        start.elapsed().as_nanos(),
        usage.ru_maxrss
    );
    std::process::exit(0);
}

/// Run a command through the helper and collect wall time, peak RSS, exit code and stderr.
pub fn measure(command: &Command) -> Measured {
    let mut helper = Command::new(std::env::current_exe().expect("own path"));
    helper
        .env(HELPER_ENV, "1")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => helper.env(key, v),
            None => helper.env_remove(key),
        };
    }
    let output = helper.output().expect("run the measuring helper");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut fields = stdout.lines().last().unwrap_or_default().split(' ');
    let mut next = || {
        fields
            .next()
            .and_then(|f| f.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let wall = Duration::from_nanos(next() as u64);
    let peak_rss_kib = next();
    let code = next() as i32;
    let cpu = Duration::from_micros(next().max(0) as u64);
    let mut stdout: Vec<&str> = stdout.lines().collect();
    stdout.pop();
    Measured {
        wall,
        peak_rss_kib,
        code,
        cpu,
        stdout: stdout.join("\n"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn mib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}
