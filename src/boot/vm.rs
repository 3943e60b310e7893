//! One throw-away VM: qemu boots the target kernel straight from its image with the initramfs
//! (no firmware disk, no network, serial console only, no reboot), `/init` reports on the
//! console, and the VM powers itself off. KVM when this machine can run the kernel's
//! architecture with it, emulation (TCG) otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::plan::{self, Outcome, Started};

/// What the VM reported.
#[derive(Debug, Clone)]
pub struct VmRun {
    pub accel: &'static str,
    pub started: Option<Started>,
    pub outcomes: Vec<Outcome>,
    /// From qemu's start to its exit.
    pub wall: Duration,
}

/// The qemu program, machine and console of an architecture.
pub struct Machine {
    pub program: &'static str,
    args: &'static [&'static str],
    console: &'static str,
    /// What to install it with, per platform.
    pub package: &'static str,
}

pub fn machine(goarch: &str) -> Option<Machine> {
    Some(match goarch {
        "amd64" => Machine {
            program: "qemu-system-x86_64",
            args: &[],
            console: "ttyS0",
            package: "qemu-system-x86",
        },
        "arm64" => Machine {
            program: "qemu-system-aarch64",
            args: &["-M", "virt"],
            console: "ttyAMA0",
            package: "qemu-system-arm",
        },
        "ppc64le" => Machine {
            program: "qemu-system-ppc64",
            args: &["-M", "pseries"],
            console: "hvc0",
            package: "qemu-system-ppc",
        },
        "s390x" => Machine {
            program: "qemu-system-s390x",
            args: &["-M", "s390-ccw-virtio"],
            console: "ttysclp0",
            package: "qemu-system-s390x",
        },
        _ => return None,
    })
}

/// How to get qemu, said plainly.
pub fn install_hint(machine: &Machine) -> String {
    format!(
        "{} was not found on PATH: install it (`apt-get install {}`, `dnf install qemu-system-{}`, \
         `brew install qemu`)",
        machine.program,
        machine.package,
        machine.program.trim_start_matches("qemu-system-")
    )
}

/// The goarch of this machine, as Go names it.
pub fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Whether KVM can run a VM here: `/dev/kvm` opens and creates a VM, and on x86 the processor
/// shows its virtualisation extensions. A sandbox can offer a `/dev/kvm` that creates VMs which
/// then never run: seen on a machine whose processor had neither `vmx` nor `svm`.
#[cfg(target_os = "linux")]
pub fn kvm_usable() -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if cfg!(target_arch = "x86_64") {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let extensions = flags
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if !extensions {
            return false;
        }
    }
    let Ok(kvm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    const KVM_CREATE_VM: libc::c_ulong = 0xae01;
    // SAFETY: KVM_CREATE_VM on an open /dev/kvm; it returns a new descriptor or -1.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return false;
    }
    // SAFETY: `vm` is a descriptor this process owns from here on (closed on drop).
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    true
}

#[cfg(not(target_os = "linux"))]
pub fn kvm_usable() -> bool {
    false
}

/// The VM's files on disk for qemu, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> std::io::Result<Scratch> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kubectl-kmm-boot-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(Scratch(dir))
}

/// Boot `kernel` with `initramfs` and collect what `/init` says, within `limit`.
pub async fn run(
    goarch: &str,
    qemu: &Path,
    kernel: &[u8],
    initramfs: &[u8],
    limit: Duration,
) -> Result<VmRun, String> {
    let machine = machine(goarch).ok_or_else(|| format!("no qemu machine for linux/{goarch}"))?;
    let dir = scratch().map_err(|e| format!("cannot write the VM's files: {e}"))?;
    let kernel_path = dir.0.join("vmlinuz");
    let initrd_path = dir.0.join("initramfs.cpio");
    std::fs::write(&kernel_path, kernel)
        .and_then(|_| std::fs::write(&initrd_path, initramfs))
        .map_err(|e| format!("cannot write the VM's files: {e}"))?;
    let kvm = goarch == host_goarch() && kvm_usable();
    let accel = if kvm { "kvm" } else { "tcg" };
    // The initramfs is unpacked into memory next to what it holds: twice its size and room.
    let memory = 256 + 2 * (initramfs.len() >> 20);
    let append = format!(
        "console={} rdinit=/init panic=-1 quiet loglevel=3 LD_LIBRARY_PATH={}",
        machine.console,
        super::payload::LIBRARY_DIR
    );
    let mut command = tokio::process::Command::new(qemu);
    command
        .args(machine.args)
        .args(["-accel", accel, "-cpu", if kvm { "host" } else { "max" }])
        .args(["-m", &format!("{memory}M"), "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-net", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel_path)
        .arg("-initrd")
        .arg(&initrd_path)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let began = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("qemu's output could not be read".into());
    };
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut run = VmRun {
        accel,
        started: None,
        outcomes: Vec::new(),
        wall: Duration::ZERO,
    };
    let mut tail: Vec<String> = Vec::new();
    let mut ended = false;
    let read = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim_end_matches('\r');
            if let Some(json) = line
                .find(plan::START)
                .map(|at| &line[at + plan::START.len()..])
            {
                run.started = serde_json::from_str(json).ok();
            } else if let Some(json) = line
                .find(plan::RESULT)
                .map(|at| &line[at + plan::RESULT.len()..])
            {
                match serde_json::from_str(json) {
                    Ok(outcome) => run.outcomes.push(outcome),
                    Err(e) => tail.push(format!("an unreadable result ({e})")),
                }
            } else if line.contains(plan::END) {
                ended = true;
            } else if !line.trim().is_empty() {
                tail.push(line.to_string());
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
        }
    };
    if tokio::time::timeout(limit, read).await.is_err() {
        let _ = child.kill().await;
        return Err(format!(
            "the VM did not finish within {} ({accel}); its console last said: {}",
            humantime::format_duration(Duration::from_secs(limit.as_secs())),
            last_words(&tail)
        ));
    }
    let status = child.wait().await;
    run.wall = began.elapsed();
    let errors = errors.await.unwrap_or_default();
    if !ended {
        let said = if run.started.is_none() && !errors.trim().is_empty() {
            format!("qemu said: {}", errors.trim())
        } else {
            format!("its console last said: {}", last_words(&tail))
        };
        return Err(format!(
            "the VM stopped before /init reported every Module ({}); {said}",
            match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            }
        ));
    }
    Ok(run)
}

fn last_words(tail: &[String]) -> String {
    if tail.is_empty() {
        "nothing".into()
    } else {
        tail[tail.len().saturating_sub(3)..].join(" | ")
    }
}
