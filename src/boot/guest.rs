//! `/init` in the throw-away VM of `check --boot`: this same binary, started by the kernel as
//! process 1. It mounts what it needs, loads each Module's files with `finit_module` as modprobe
//! would, collects what the kernel said about each load from `/dev/kmsg`, removes the Module's
//! modules again, reports on the console and powers the VM off. It never returns: process 1
//! exiting would panic the kernel.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use super::plan::{self, Load, Outcome, Plan, Started};

/// Whether this process is the VM's `/init` (the kernel runs it as pid 1 with that name).
pub fn is_init() -> bool {
    std::process::id() == 1 && std::env::args().next().as_deref() == Some("/init")
}

pub fn run() -> ! {
    let mut console = std::io::stdout();
    for (source, target, kind) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        // Failing to mount is not fatal: /dev/kmsg is also in the initramfs.
        let _ = std::fs::create_dir_all(target);
        mount(source, target, kind);
    }
    let started = Started {
        release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_string())
            .unwrap_or_default(),
        uptime: std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0),
    };
    say(&mut console, plan::START, &started);
    match std::fs::read(plan::PLAN_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Plan>(&b).map_err(|e| e.to_string()))
    {
        Ok(plan) => {
            let mut kmsg = Kmsg::open();
            for module in &plan.modules {
                let outcome = load_module(module, &mut kmsg);
                say(&mut console, plan::RESULT, &outcome);
            }
            let _ = writeln!(console, "{}", plan::END);
        }
        Err(e) => {
            let _ = writeln!(
                console,
                "KMM-BOOT-ERROR cannot read {}: {e}",
                plan::PLAN_PATH
            );
        }
    }
    let _ = console.flush();
    power_off()
}

fn say<T: serde::Serialize>(console: &mut std::io::Stdout, marker: &str, value: &T) {
    if let Ok(json) = serde_json::to_string(value) {
        let _ = writeln!(console, "{marker}{json}");
        let _ = console.flush();
    }
}

fn mount(source: &str, target: &str, kind: &str) {
    let (Ok(source), Ok(target), Ok(kind)) = (
        CString::new(source),
        CString::new(target),
        CString::new(kind),
    ) else {
        return;
    };
    // SAFETY: three valid NUL-terminated strings and no data.
    unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        );
    }
}

fn power_off() -> ! {
    // SAFETY: plain system calls; process 1 may power the machine off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Not reached; should the kernel refuse, the host's deadline ends the VM.
    loop {
        std::thread::park();
    }
}

/// The kernel's log, read from where it stood before each load.
struct Kmsg {
    file: Option<std::fs::File>,
}

impl Kmsg {
    fn open() -> Kmsg {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok();
        let mut kmsg = Kmsg { file };
        kmsg.skip();
        kmsg
    }

    /// Forget everything logged so far.
    fn skip(&mut self) {
        if let Some(file) = &self.file {
            // SAFETY: lseek on an open descriptor; /dev/kmsg supports SEEK_END.
            unsafe {
                libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END);
            }
        }
    }

    /// The messages logged since the last call: one record per read, `prio,seq,time,flags;text`.
    fn since(&mut self) -> Vec<String> {
        let mut messages = Vec::new();
        let Some(file) = self.file.as_mut() else {
            return messages;
        };
        let mut record = [0u8; 8192];
        loop {
            match file.read(&mut record) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&record[..n]);
                    let line = text.lines().next().unwrap_or_default();
                    let message = line.split_once(';').map_or(line, |(_, m)| m);
                    messages.push(message.to_string());
                }
                // EPIPE: records were overwritten; go on with the next ones.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        messages
    }
}

fn load_module(module: &plan::PlanModule, kmsg: &mut Kmsg) -> Outcome {
    let mut loads = Vec::new();
    let mut loaded: Vec<&str> = Vec::new();
    for file in &module.files {
        kmsg.skip();
        let errno = finit_module(&file.path, &file.params);
        let messages = kmsg.since();
        loads.push(Load {
            path: file.path.clone(),
            errno,
            messages,
        });
        if errno != 0 {
            break;
        }
        loaded.push(&file.name);
    }
    let mut left_loaded = Vec::new();
    for name in loaded.iter().rev() {
        if delete_module(name) != 0 {
            left_loaded.push(name.to_string());
        }
    }
    // The messages of the removals are not the next Module's.
    kmsg.skip();
    Outcome {
        id: module.id,
        loads,
        left_loaded,
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn finit_module(path: &str, params: &str) -> i32 {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
    };
    let Ok(params) = CString::new(params) else {
        return libc::EINVAL;
    };
    // SAFETY: finit_module(fd, params, flags) with an open descriptor and a valid string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 { 0 } else { errno() }
}

fn delete_module(name: &str) -> i32 {
    let Ok(name) = CString::new(name) else {
        return libc::EINVAL;
    };
    // SAFETY: delete_module(name, flags) with a valid string.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if rc == 0 { 0 } else { errno() }
}
