//! What goes into the initramfs besides the modules: `/init`, which is this plugin's own Linux
//! binary (or the one `--boot-init` names), and, when it is dynamically linked, its interpreter
//! and the libraries its `DT_NEEDED` entries name, found where the dynamic loader would look.
//!
//! Only what the kernel maps is kept of each file: everything past the last segment (debug
//! information, the symbol and section tables) is cut off, as `strip` would, so a debug build
//! costs the VM some 40 MiB rather than 250.

use std::path::{Path, PathBuf};

use object::Endianness;
use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};

/// A file of the payload, at its path in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: String,
    pub data: Vec<u8>,
}

/// `/init` and what it needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPayload {
    /// The architecture the binary is for, as Go names it (`amd64`, `arm64`, …).
    pub goarch: &'static str,
    pub files: Vec<PayloadFile>,
}

/// Where the libraries go in the initramfs (the kernel command line sets `LD_LIBRARY_PATH`).
pub const LIBRARY_DIR: &str = "/lib";

struct Elf {
    goarch: &'static str,
    interpreter: Option<String>,
    needed: Vec<String>,
    runpath: Vec<String>,
    /// The file cut after its last segment, without section headers.
    loaded: Vec<u8>,
}

fn goarch_of(machine: u16) -> Option<&'static str> {
    match machine {
        elf::EM_X86_64 => Some("amd64"),
        elf::EM_AARCH64 => Some("arm64"),
        elf::EM_PPC64 => Some("ppc64le"),
        elf::EM_S390 => Some("s390x"),
        _ => None,
    }
}

fn triplet(goarch: &str) -> &'static str {
    match goarch {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "ppc64le" => "powerpc64le-linux-gnu",
        _ => "s390x-linux-gnu",
    }
}

fn read_elf(path: &Path) -> Result<Elf, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let not_linux =
        |why: String| format!("{} is not a 64-bit Linux program: {why}", path.display());
    let file = ElfFile64::<Endianness>::parse(&*data).map_err(|e| not_linux(e.to_string()))?;
    let endian = file.endian();
    let header = file.elf_header();
    let machine = header.e_machine(endian);
    let goarch = goarch_of(machine).ok_or_else(|| {
        not_linux(format!(
            "its machine type {machine} is not one OpenShift runs"
        ))
    })?;
    let mut interpreter = None;
    let mut end = 0u64;
    for segment in file.elf_program_headers() {
        end = end.max(segment.p_offset(endian) + segment.p_filesz(endian));
        if let Ok(Some(interp)) = segment.interpreter(endian, &*data) {
            interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let mut needed = Vec::new();
    let mut runpath = Vec::new();
    let sections = file.elf_section_table();
    if let Ok(Some((entries, link))) = sections.dynamic(endian, &*data)
        && let Ok(strings) = sections.strings(endian, &*data, link)
    {
        for entry in entries {
            let tag = entry.d_tag(endian) as u32;
            if tag != elf::DT_NEEDED && tag != elf::DT_RUNPATH && tag != elf::DT_RPATH {
                continue;
            }
            let Ok(value) = entry.string(endian, strings) else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            if tag == elf::DT_NEEDED {
                needed.push(value);
            } else {
                runpath.extend(value.split(':').map(str::to_string));
            }
        }
    } else if interpreter.is_some() {
        return Err(format!(
            "{} has no section headers to read its libraries from: give an unstripped or a static \
             binary",
            path.display()
        ));
    }
    let mut loaded = data;
    if end >= 0x40 && (end as usize) < loaded.len() {
        loaded.truncate(end as usize);
        // e_shoff, and e_shnum and e_shstrndx: no section headers any more.
        loaded[0x28..0x30].fill(0);
        loaded[0x3c..0x40].fill(0);
    }
    Ok(Elf {
        goarch,
        interpreter,
        needed,
        runpath,
        loaded,
    })
}

/// `/init` from the binary at `path`, with its interpreter and libraries when it has any.
pub fn init_payload(path: &Path) -> Result<InitPayload, String> {
    let init = read_elf(path)?;
    let goarch = init.goarch;
    let mut files = vec![PayloadFile {
        path: "/init".into(),
        data: init.loaded,
    }];
    let Some(interpreter) = init.interpreter else {
        return Ok(InitPayload { goarch, files });
    };
    let interp = read_elf(Path::new(&interpreter))
        .map_err(|e| format!("the dynamic loader of {}: {e}", path.display()))?;
    files.push(PayloadFile {
        path: interpreter.clone(),
        data: interp.loaded,
    });
    let interp_name = Path::new(&interpreter)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let mut dirs: Vec<PathBuf> = init.runpath.iter().map(PathBuf::from).collect();
    let triplet = triplet(goarch);
    for dir in [
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ] {
        dirs.push(dir.into());
    }
    let mut pending = init.needed;
    let mut done: Vec<String> = Vec::new();
    while let Some(name) = pending.pop() {
        if done.contains(&name) || Some(&name) == interp_name.as_ref() {
            continue;
        }
        let found = dirs
            .iter()
            .map(|dir| dir.join(&name))
            .filter(|p| p.is_file())
            .find_map(|p| read_elf(&p).ok().filter(|lib| lib.goarch == goarch));
        let Some(lib) = found else {
            return Err(format!(
                "{} needs {name}, which was not found for linux/{goarch} in {}: give a static \
                 binary with --boot-init",
                path.display(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        pending.extend(lib.needed);
        files.push(PayloadFile {
            path: format!("{LIBRARY_DIR}/{name}"),
            data: lib.loaded,
        });
        done.push(name);
    }
    Ok(InitPayload { goarch, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn this_test_binary_with_its_libraries() {
        let me = std::env::current_exe().unwrap();
        let payload = init_payload(&me).unwrap();
        let size = std::fs::metadata(&me).unwrap().len() as usize;
        let init = &payload.files[0];
        assert_eq!(init.path, "/init");
        assert!(init.data.len() <= size);
        assert!(init.data.starts_with(b"\x7fELF"));
        // What is left still parses, and has no section headers when something was cut.
        let parsed = ElfFile64::<Endianness>::parse(&*init.data).unwrap();
        if init.data.len() < size {
            assert_eq!(parsed.elf_section_table().len(), 0);
        }
        let paths: Vec<&str> = payload.files.iter().map(|f| f.path.as_str()).collect();
        if parsed
            .elf_program_headers()
            .iter()
            .any(|p| p.p_type(parsed.endian()) == elf::PT_INTERP)
        {
            assert!(
                paths.iter().any(|p| p.starts_with("/lib/libc.so")),
                "{paths:?}"
            );
        }
    }

    #[test]
    fn not_a_program() {
        let dir = std::env::temp_dir().join(format!("kmm-payload-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\n").unwrap();
        let e = init_payload(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(e.contains("is not a 64-bit Linux program"), "{e}");
        assert!(init_payload(Path::new("/nonexistent/kmm")).is_err());
    }
}
