//! Debian's own kernel as a target: `vmlinuz`, its in-tree modules, `modules.dep.bin` and the
//! headers' `Module.symvers` (packages `linux-image-amd64` and `linux-headers-amd64`, which
//! scripts/peers installs), packed as a driver-toolkit; and real out-of-tree modules built
//! against those headers with kbuild, some altered after the build the way a stale or foreign
//! build differs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use object::{Object, ObjectSection};

use super::images::{Compression, Flavor, Image, TarLayer, layer};

/// The kernel the tests boot: its release and where its pieces are on this machine.
pub struct RealKernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub headers: PathBuf,
    pub modules: PathBuf,
}

/// The newest Debian kernel whose image and headers are both installed.
pub fn kernel() -> &'static RealKernel {
    static KERNEL: OnceLock<RealKernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let mut found: Vec<RealKernel> = std::fs::read_dir("/boot")
            .map(|d| d.filter_map(|e| e.ok()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let release = name.strip_prefix("vmlinuz-")?.to_string();
                let modules = PathBuf::from(format!("/lib/modules/{release}"));
                let headers = modules.join("build");
                (headers.join("Module.symvers").is_file()
                    && modules.join("modules.dep.bin").is_file())
                .then(|| RealKernel {
                    vmlinuz: entry.path(),
                    release,
                    headers,
                    modules,
                })
            })
            .collect();
        found.sort_by(|a, b| a.release.cmp(&b.release));
        found.pop().expect(
            "no kernel with its headers in /boot and /lib/modules: scripts/peers installs \
             linux-image-amd64 and linux-headers-amd64",
        )
    })
}

/// The out-of-tree modules of the tests, built once per test process.
pub struct Built {
    /// Loads, logging `kmm_ok: loaded with level=<its parameter>`.
    pub ok: Vec<u8>,
    /// Needs the in-tree `crc-itu-t`.
    pub dep: Vec<u8>,
    /// Built right, then one `__versions` CRC (of `_printk`) altered.
    pub crc: Vec<u8>,
    /// Built right, then its vermagic made that of a kernel without preemption.
    pub magic: Vec<u8>,
    /// Its init returns -ENODEV, as a driver without its device does.
    pub nodev: Vec<u8>,
}

const SOURCES: &[(&str, &str)] = &[
    (
        "kmm_ok",
        r#"#include <linux/module.h>
static int level;
module_param(level, int, 0444);
static int __init kmm_ok_init(void) { pr_info("kmm_ok: loaded with level=%d\n", level); return 0; }
static void __exit kmm_ok_exit(void) { }
module_init(kmm_ok_init);
module_exit(kmm_ok_exit);
MODULE_LICENSE("GPL");
"#,
    ),
    (
        "kmm_dep",
        r#"#include <linux/module.h>
#include <linux/crc-itu-t.h>
static int __init kmm_dep_init(void) { pr_info("kmm_dep: crc %04x\n", crc_itu_t(0, "kmm", 3)); return 0; }
static void __exit kmm_dep_exit(void) { }
module_init(kmm_dep_init);
module_exit(kmm_dep_exit);
MODULE_LICENSE("GPL");
"#,
    ),
    (
        "kmm_crc",
        r#"#include <linux/module.h>
static int __init kmm_crc_init(void) { pr_info("kmm_crc: loaded\n"); return 0; }
static void __exit kmm_crc_exit(void) { }
module_init(kmm_crc_init);
module_exit(kmm_crc_exit);
MODULE_LICENSE("GPL");
"#,
    ),
    (
        "kmm_magic",
        r#"#include <linux/module.h>
static int __init kmm_magic_init(void) { pr_info("kmm_magic: loaded\n"); return 0; }
static void __exit kmm_magic_exit(void) { }
module_init(kmm_magic_init);
module_exit(kmm_magic_exit);
MODULE_LICENSE("GPL");
"#,
    ),
    (
        "kmm_nodev",
        r#"#include <linux/module.h>
static int __init kmm_nodev_init(void) { pr_err("kmm_nodev: no device found\n"); return -ENODEV; }
static void __exit kmm_nodev_exit(void) { }
module_init(kmm_nodev_init);
module_exit(kmm_nodev_exit);
MODULE_LICENSE("GPL");
"#,
    ),
];

pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let k = kernel();
        let dir = tempfile::tempdir().unwrap();
        let mut makefile = String::from("obj-m :=");
        for (name, source) in SOURCES {
            std::fs::write(dir.path().join(format!("{name}.c")), source).unwrap();
            makefile.push_str(&format!(" {name}.o"));
        }
        std::fs::write(dir.path().join("Makefile"), format!("{makefile}\n")).unwrap();
        let out = Command::new("make")
            .arg("-C")
            .arg(&k.headers)
            .arg(format!("M={}", dir.path().display()))
            .arg("modules")
            .output()
            .expect("make (kbuild) is needed to build the test modules");
        assert!(
            out.status.success(),
            "kbuild failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |name: &str| std::fs::read(dir.path().join(format!("{name}.ko"))).unwrap();
        Built {
            ok: read("kmm_ok"),
            dep: read("kmm_dep"),
            crc: alter_crc(&read("kmm_crc"), "_printk"),
            magic: alter_vermagic(&read("kmm_magic"), &k.release),
            nodev: read("kmm_nodev"),
        }
    })
}

fn section_range(ko: &[u8], name: &str) -> (usize, usize) {
    let file = object::File::parse(ko).unwrap();
    let section = file.section_by_name(name).unwrap();
    let (offset, size) = section.file_range().unwrap();
    (offset as usize, size as usize)
}

/// The `__versions` CRC of `symbol` changed: a module built against other headers.
fn alter_crc(ko: &[u8], symbol: &str) -> Vec<u8> {
    let (offset, size) = section_range(ko, "__versions");
    let mut out = ko.to_vec();
    // struct modversion_info: an unsigned long CRC, then the name in the rest of 64 bytes.
    let entry = out[offset..offset + size]
        .chunks(64)
        .position(|e| e[8..].split(|b| *b == 0).next() == Some(symbol.as_bytes()))
        .unwrap_or_else(|| panic!("{symbol} is not in __versions"));
    let at = offset + entry * 64;
    for b in &mut out[at..at + 4] {
        *b ^= 0x5a;
    }
    out
}

/// The vermagic of a kernel without preemption (shorter: the freed bytes become NULs, which the
/// kernel's `.modinfo` reader skips).
fn alter_vermagic(ko: &[u8], release: &str) -> Vec<u8> {
    let (offset, size) = section_range(ko, ".modinfo");
    let mut out = ko.to_vec();
    let modinfo = &mut out[offset..offset + size];
    let from = format!("vermagic={release} SMP preempt mod_unload modversions ");
    let to = format!("vermagic={release} SMP mod_unload modversions ");
    let at = modinfo
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("no `{from}` in .modinfo"));
    modinfo[at..at + from.len()].fill(0);
    modinfo[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// A driver-toolkit of the real kernel: with `bootable`, its image and `modules.dep.bin`; the
/// in-tree modules named (paths under `kernel/`), and `Module.symvers` where kernel-devel puts it.
pub fn dtk_image(in_tree: &[&str], bootable: bool) -> Image {
    let k = kernel();
    let lib = format!("usr/lib/modules/{}", k.release);
    let mut tar = TarLayer::new()
        .dir("usr")
        .dir("usr/lib")
        .dir("usr/lib/modules")
        .dir(&lib);
    if bootable {
        tar = tar
            .file(
                &format!("{lib}/vmlinuz"),
                &std::fs::read(&k.vmlinuz).unwrap(),
            )
            .file(
                &format!("{lib}/modules.dep.bin"),
                &std::fs::read(k.modules.join("modules.dep.bin")).unwrap(),
            );
    }
    for path in in_tree {
        tar = tar.file(
            &format!("{lib}/{path}"),
            &std::fs::read(k.modules.join(path)).unwrap(),
        );
    }
    let tar = tar
        .dir("usr/src")
        .dir("usr/src/kernels")
        .file(
            &format!("usr/src/kernels/{}/Module.symvers", k.release),
            &std::fs::read(k.headers.join("Module.symvers")).unwrap(),
        )
        .finish();
    Image {
        flavor: Flavor::Docker,
        goarch: "amd64",
        layers: vec![layer(tar, Compression::Gzip, Flavor::Docker)],
    }
}

/// A directory with a link to qemu-system-x86_64 alone, for a test's PATH.
pub fn qemu_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let qemu = which::which("qemu-system-x86_64")
            .expect("qemu-system-x86_64 is not installed (scripts/peers installs it)");
        let dir = tempfile::tempdir().unwrap().keep();
        std::os::unix::fs::symlink(qemu, dir.join("qemu-system-x86_64")).unwrap();
        dir
    })
}

/// The tests' isolated PATH with the plugin's directory and qemu.
pub fn path_with_qemu() -> String {
    let plugin = super::plugin_binary();
    let plugin_dir = plugin.parent().unwrap_or(Path::new("/"));
    super::isolated_path(&[plugin_dir, qemu_dir()])
}
