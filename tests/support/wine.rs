//! Debian's Wine (wine64) for running the Windows build of the plugin: one prefix per test
//! process, its user profile (`C:\users\<user>`, the place Windows tools keep their files), and
//! commands run with a bound.
//!
//! Wine 8 (Debian 12) lacks `bcryptprimitives.dll`, whose `ProcessPrng` Rust's standard
//! library calls for randomness on Windows 10 and later (where Windows always has it). The
//! prefix gets that one DLL, built here with mingw-w64 from a few lines of C that answer from
//! `RtlGenRandom` (advapi32's `SystemFunction036`). Nothing of it ships: the archives hold only
//! the plugin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const PRNG_SHIM: &str = r#"
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  while (length > 0) {
    ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    length -= chunk;
  }
  return TRUE;
}
"#;

pub struct Wine {
    prefix: tempfile::TempDir,
    wine: PathBuf,
}

/// wine64 itself: Debian puts it in /usr/lib/wine (`wine` is a wrapper that wants 32-bit Wine).
fn wine64() -> PathBuf {
    ["/usr/lib/wine/wine64", "/usr/bin/wine64"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| which::which("wine64").ok())
        .expect("wine64 (Debian's wine64 package; scripts/test installs it)")
}

impl Wine {
    /// A new prefix, booted, with the ProcessPrng shim in its system32.
    pub fn new() -> Wine {
        let prefix = tempfile::tempdir().unwrap();
        let wine = Wine {
            prefix,
            wine: wine64(),
        };
        let boot = wine.command("wineboot").arg("--init").output().unwrap();
        assert!(boot.status.success(), "wineboot: {boot:?}");
        let server = which::which("wineserver")
            .unwrap_or_else(|_| PathBuf::from("/usr/lib/wine/wineserver"));
        let waited = Command::new(server)
            .arg("-w")
            .env("WINEPREFIX", wine.prefix.path())
            .status()
            .unwrap();
        assert!(waited.success());
        let source = wine.prefix.path().join("prng.c");
        std::fs::write(&source, PRNG_SHIM).unwrap();
        let dll = wine
            .prefix
            .path()
            .join("drive_c/windows/system32/bcryptprimitives.dll");
        let built = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-O2", "-shared", "-Wl,--kill-at", "-o"])
            .arg(&dll)
            .arg(&source)
            .arg("-ladvapi32")
            .output()
            .unwrap();
        assert!(built.status.success(), "shim: {built:?}");
        wine
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(&self.wine);
        command
            .arg(program)
            .env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer dialogs; no display either.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        command
    }

    /// `C:\users\<user>`: where Wine's USERPROFILE points.
    pub fn profile(&self) -> PathBuf {
        let users = self.prefix.path().join("drive_c/users");
        std::fs::read_dir(&users)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n != "Public"))
            .expect("a user profile in the Wine prefix")
    }

    /// Run a Windows program (a Unix path to the .exe or a Windows command such as `cmd`) with
    /// the extra environment given; killed if it outlives a generous bound.
    pub fn run(&self, program: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut command = self.command(&program.display().to_string());
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let id = child.id();
        let (done, waiting) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if waiting.recv_timeout(Duration::from_secs(120)).is_err() {
                // SAFETY: kill only signals the child we started.
                unsafe { libc::kill(id as i32, libc::SIGKILL) };
            }
        });
        let output = child.wait_with_output().unwrap();
        let _ = done.send(());
        output
    }
}

/// `Z:\…`, the Windows name Wine gives a Unix path.
pub fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display().to_string().replace('/', "\\"))
}

impl Drop for Wine {
    fn drop(&mut self) {
        let server = which::which("wineserver")
            .unwrap_or_else(|_| PathBuf::from("/usr/lib/wine/wineserver"));
        let _ = Command::new(server)
            .arg("-k")
            .env("WINEPREFIX", self.prefix.path())
            .status();
    }
}
