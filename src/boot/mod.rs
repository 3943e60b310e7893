//! `check --boot`: every Module's files loaded by the target kernel itself, in a throw-away
//! qemu VM booted from the driver-toolkit's own `vmlinuz` with an initramfs that holds only the
//! modules and `/init` (this binary, see `guest`). The kernel's answer is the verdict; the
//! `--deep` model is compared with it.

pub mod cpio;
#[cfg(target_os = "linux")]
pub mod guest;
pub mod payload;
pub mod plan;
pub mod vm;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use self::cpio::Cpio;
use self::payload::InitPayload;
use self::plan::{Load, Outcome, Plan, PlanFile, PlanModule};

/// What the VM proved of one Module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BootResult {
    /// Every file loaded and its init returned 0.
    Loads,
    /// The kernel refused to link a file: its own message says why.
    Failed,
    /// Every file linked, but an init returned an error (a driver without its device).
    Inconclusive,
    /// The VM could not say (no qemu, no kernel image, no `/init` for the architecture, …).
    Unknown,
}

/// One file's load in the VM, as `-o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootFile {
    pub path: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_tree: bool,
    /// `ENOENT`, …; absent when it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
}

/// A row's `boot` in `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Boot {
    pub result: BootResult,
    pub reason: String,
    /// `kvm` or `tcg` (emulation); absent when no VM ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<BootFile>,
}

impl Boot {
    pub fn unknown(reason: impl Into<String>) -> Boot {
        Boot {
            result: BootResult::Unknown,
            reason: reason.into(),
            accel: None,
            files: Vec::new(),
        }
    }
}

/// A file to load in the VM.
#[derive(Debug, Clone)]
pub struct VmFile {
    /// The module's name (for `delete_module`).
    pub name: String,
    /// Where it is, as the row shows it (in the kmod image, or in the driver-toolkit).
    pub shown: String,
    pub data: Arc<Vec<u8>>,
    pub params: String,
    pub in_tree: bool,
}

/// One Module's files, in load order.
#[derive(Debug, Clone)]
pub struct VmModule {
    pub files: Vec<VmFile>,
}

/// The initramfs: `/dev/console` and `/dev/kmsg`, `/init` and its libraries, the plan and every
/// Module's files (an in-tree module once, however many Modules need it).
pub fn initramfs(
    init: &InitPayload,
    modules: &[VmModule],
) -> (Vec<u8>, HashMap<String, (String, bool)>) {
    let mut cpio = Cpio::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut dir = |cpio: &mut Cpio, path: &str| {
        let mut at = String::new();
        for part in path
            .trim_start_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
        {
            at.push('/');
            at.push_str(part);
            if !dirs.contains(&at) {
                cpio.dir(&at);
                dirs.push(at.clone());
            }
        }
    };
    for d in ["/dev", "/proc", "/sys", "/kmm/tree"] {
        dir(&mut cpio, d);
    }
    cpio.char_device("/dev/console", 5, 1);
    cpio.char_device("/dev/kmsg", 1, 11);
    cpio.char_device("/dev/null", 1, 3);
    for file in &init.files {
        if let Some((parent, _)) = file.path.rsplit_once('/') {
            dir(&mut cpio, parent);
        }
        cpio.file(&file.path, true, &file.data);
    }
    let mut shown = HashMap::new();
    let mut plan = Plan {
        modules: Vec::new(),
    };
    for (id, module) in modules.iter().enumerate() {
        dir(&mut cpio, &format!("/kmm/{id}"));
        let mut files = Vec::new();
        for (n, file) in module.files.iter().enumerate() {
            let path = if file.in_tree {
                format!("/kmm/tree/{}.ko", file.name)
            } else {
                format!("/kmm/{id}/{n}-{}.ko", file.name)
            };
            if !shown.contains_key(&path) {
                cpio.file(&path, false, &file.data);
                shown.insert(path.clone(), (file.shown.clone(), file.in_tree));
            }
            files.push(PlanFile {
                path,
                name: file.name.clone(),
                params: file.params.clone(),
                in_tree: file.in_tree,
            });
        }
        plan.modules.push(PlanModule { id, files });
    }
    let plan = serde_json::to_vec(&plan).unwrap_or_default();
    cpio.file(plan::PLAN_PATH, false, &plan);
    (cpio.finish(), shown)
}

/// What one VM of `kernel` proved of each of `modules` (in their order), and how it ran.
pub async fn boot_modules(
    goarch: &str,
    qemu: &Path,
    kernel: &str,
    vmlinuz: &[u8],
    init: &InitPayload,
    modules: &[VmModule],
    limit: Duration,
) -> Result<(Vec<Boot>, vm::VmRun), String> {
    let (initramfs, shown) = initramfs(init, modules);
    let run = vm::run(goarch, qemu, vmlinuz, &initramfs, limit).await?;
    if let Some(started) = &run.started
        && started.release != kernel
    {
        return Err(format!(
            "the driver-toolkit's kernel image booted as {}, not {kernel}",
            started.release
        ));
    }
    let boots = (0..modules.len())
        .map(|id| match run.outcomes.iter().find(|o| o.id == id) {
            Some(outcome) => {
                let mut boot = judge(outcome, |path| {
                    shown
                        .get(path)
                        .cloned()
                        .unwrap_or((path.to_string(), false))
                });
                boot.accel = Some(run.accel.to_string());
                boot
            }
            None => Boot::unknown("the VM did not report on this Module"),
        })
        .collect();
    Ok((boots, run))
}

/// Linux's errno names for what a load returns (the guest is always Linux, whatever the host).
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        6 => "ENXIO",
        8 => "ENOEXEC",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        61 => "ENODATA",
        74 => "EBADMSG",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        126 => "ENOKEY",
        127 => "EKEYEXPIRED",
        128 => "EKEYREVOKED",
        129 => "EKEYREJECTED",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// The loader's own refusals, as the kernel logs them (`kernel/module/main.c`, `version.c`).
const LINK_FAILURES: &[&str] = &[
    "Unknown symbol",
    "disagrees about version of symbol",
    "no symbol version for",
    "version magic",
    "Invalid ELF",
    "invalid module format",
    "Unknown rela relocation",
    "Unknown relocation",
    "module has bad taint",
    "gave up waiting for init of module",
    "Module len",
];

/// The kernel's verdict on one Module: the first refused file decides.
pub fn judge(outcome: &Outcome, path_of: impl Fn(&str) -> (String, bool)) -> Boot {
    let files: Vec<BootFile> = outcome
        .loads
        .iter()
        .map(|load| {
            let (path, in_tree) = path_of(&load.path);
            BootFile {
                path,
                in_tree,
                error: (load.errno != 0).then(|| errno_name(load.errno)),
                messages: load.messages.clone(),
            }
        })
        .collect();
    let failed = outcome.loads.iter().zip(&files).find(|(l, _)| l.errno != 0);
    let (result, reason) = match failed {
        None => (
            BootResult::Loads,
            match files.len() {
                1 => "the target kernel loaded it".to_string(),
                n => format!("the target kernel loaded all {n} files"),
            },
        ),
        Some((load, file)) => {
            let name = file.path.rsplit('/').next().unwrap_or(&file.path);
            let what = if file.in_tree { "in-tree " } else { "" };
            match link_failure(load) {
                Some(message) => (
                    BootResult::Failed,
                    format!("the target kernel refused {what}{name}: {message}"),
                ),
                // Nothing else is loaded in the VM: a module of that name is built into the
                // kernel, and modprobe on a node would not load this one at all.
                None if load.errno == 17 => (
                    BootResult::Inconclusive,
                    format!(
                        "the target kernel already has a module named like {what}{name} (EEXIST): \
                         built in, so a node would keep the kernel's own"
                    ),
                ),
                None => {
                    let said = load
                        .messages
                        .iter()
                        .filter(|m| !is_noise(m))
                        .cloned()
                        .collect::<Vec<_>>();
                    let said = if said.is_empty() {
                        String::new()
                    } else {
                        format!(" (the kernel said: {})", said.join("; "))
                    };
                    (
                        BootResult::Inconclusive,
                        format!(
                            "{what}{name} linked, but its init returned {}{said}: a driver \
                             without its device does this; only a node with the hardware can tell",
                            errno_name(load.errno)
                        ),
                    )
                }
            }
        }
    };
    Boot {
        result,
        reason,
        accel: None,
        files,
    }
}

/// The kernel's own words when a load was refused before the module's init ran.
fn link_failure(load: &Load) -> Option<String> {
    let said = load
        .messages
        .iter()
        .find(|m| LINK_FAILURES.iter().any(|p| m.contains(p)));
    match said {
        Some(message) => Some(message.clone()),
        // ENOEXEC is the loader's "invalid module format"; a module's init does not return it.
        None if load.errno == 8 => Some(format!(
            "{} (invalid module format)",
            errno_name(load.errno)
        )),
        // Bad signature blocks are refused whatever the keys (module-signing.rst).
        None if matches!(load.errno, 74 | 129) => Some(format!(
            "{}: its signature is malformed or does not verify",
            errno_name(load.errno)
        )),
        None => None,
    }
}

/// Taint warnings every unsigned out-of-tree module logs; not what a reader needs.
fn is_noise(message: &str) -> bool {
    message.contains("loading out-of-tree module taints kernel")
        || message.contains("module verification failed")
        || message.contains("tainting kernel")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(loads: &[(&str, i32, &[&str])]) -> Outcome {
        Outcome {
            id: 0,
            loads: loads
                .iter()
                .map(|(path, errno, messages)| Load {
                    path: path.to_string(),
                    errno: *errno,
                    messages: messages.iter().map(|m| m.to_string()).collect(),
                })
                .collect(),
            left_loaded: vec![],
        }
    }

    fn same(path: &str) -> (String, bool) {
        (path.to_string(), path.contains("kernel/"))
    }

    #[test]
    fn three_ways() {
        let ok = judge(&outcome(&[("/m/a.ko", 0, &[]), ("/m/b.ko", 0, &[])]), same);
        assert_eq!(ok.result, BootResult::Loads);
        assert_eq!(ok.reason, "the target kernel loaded all 2 files");

        let crc = judge(
            &outcome(&[(
                "/m/crc.ko",
                22,
                &["crc: disagrees about version of symbol _printk"],
            )]),
            same,
        );
        assert_eq!(crc.result, BootResult::Failed);
        assert_eq!(
            crc.reason,
            "the target kernel refused crc.ko: crc: disagrees about version of symbol _printk"
        );
        assert_eq!(crc.files[0].error.as_deref(), Some("EINVAL"));

        let silent = judge(&outcome(&[("/m/x.ko", 8, &[])]), same);
        assert_eq!(silent.result, BootResult::Failed);

        let nodev = judge(
            &outcome(&[(
                "/m/gpu.ko",
                19,
                &[
                    "gpu: loading out-of-tree module taints kernel.",
                    "gpu: no device found",
                ],
            )]),
            same,
        );
        assert_eq!(nodev.result, BootResult::Inconclusive);
        assert!(nodev.reason.starts_with("gpu.ko linked, but its init returned ENODEV (the kernel said: gpu: no device found)"), "{}", nodev.reason);

        let dep = judge(
            &outcome(&[(
                "/kernel/lib/dep.ko",
                2,
                &["dep: Unknown symbol foo (err -2)"],
            )]),
            same,
        );
        assert_eq!(
            dep.reason,
            "the target kernel refused in-tree dep.ko: dep: Unknown symbol foo (err -2)"
        );
        let builtin = judge(&outcome(&[("/m/ext4.ko", 17, &[])]), same);
        assert_eq!(builtin.result, BootResult::Inconclusive);
        assert!(builtin.reason.contains("built in"), "{}", builtin.reason);
        assert_eq!(errno_name(4242), "errno 4242");
    }
}
