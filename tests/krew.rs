//! Install as krew does: package with `krew/package`, check the manifest against krew's rules,
//! unpack the archive into a krew-like root as its `files` say, and run the plugin from there
//! with the real kubectl (plugin discovery and the completion hook).
//!
//! The other platforms are cross-built here by `krew/package --profile cross` (once per test
//! process): the Windows archive is installed the same way and run under Wine, against the
//! test registry; the macOS binaries, which cannot run here, are read as Mach-O files.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::fixtures::push_release;
use support::images::Pusher;
use support::registry::TestRegistry;
use support::wine::{Wine, windows_path};
use support::{auth_file, isolated_path, plugin_binary};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The rules `krew install` and the krew-index validation apply to a manifest.
fn check_krew_rules(manifest: &Value, base: &Path) {
    let spec = &manifest["spec"];
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "kmm");
    let version = spec["version"].as_str().unwrap();
    assert!(
        Regex::new(r"^v\d+\.\d+\.\d+").unwrap().is_match(version),
        "{version}"
    );
    let short = spec["shortDescription"].as_str().unwrap();
    assert!(short.len() < 50 && !short.contains('\n'), "{short:?}");
    for key in ["description", "caveats", "homepage"] {
        assert!(
            spec[key].as_str().is_some_and(|s| !s.trim().is_empty()),
            "{key}"
        );
    }
    assert!(spec["homepage"].as_str().unwrap().starts_with("https://"));
    let platforms = spec["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    let hex64 = Regex::new("^[0-9a-f]{64}$").unwrap();
    for (i, p) in platforms.iter().enumerate() {
        let labels = p["selector"]["matchLabels"].as_object().unwrap();
        assert!(labels.contains_key("os") && labels.contains_key("arch"));
        let uri = p["uri"].as_str().unwrap();
        assert!(uri.ends_with(".tar.gz") || uri.ends_with(".zip"), "{uri}");
        let sha = p["sha256"].as_str().unwrap();
        assert!(hex64.is_match(sha), "{sha}");
        let files = p["files"].as_array().unwrap();
        let installed: Vec<String> = files
            .iter()
            .map(|f| {
                let from = f["from"].as_str().unwrap();
                let to = f["to"].as_str().unwrap();
                if to == "." {
                    from.to_string()
                } else {
                    to.to_string()
                }
            })
            .collect();
        assert!(
            installed.iter().any(|f| f == "LICENSE"),
            "LICENSE is installed"
        );
        let bin = p["bin"].as_str().unwrap();
        assert!(
            installed.iter().any(|f| f == bin),
            "bin {bin} is among the installed files"
        );
        // Selectors must not overlap: every other platform differs on some label.
        for other in &platforms[i + 1..] {
            let theirs = other["selector"]["matchLabels"].as_object().unwrap();
            assert!(
                labels
                    .iter()
                    .any(|(k, v)| theirs.get(k).is_some_and(|t| t != v)),
                "overlapping selectors {labels:?} {theirs:?}"
            );
        }
        // The archive the uri names has that sha256 (file:// archives only: nothing is downloaded).
        if let Some(path) = uri.strip_prefix("file://") {
            let bytes = std::fs::read(base.join(path)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&bytes)), sha, "sha256 of {uri}");
        }
    }
}

/// Unpack `archive` and copy its files into `<root>/store/kmm/<version>` as the `files` rules
/// say, then link `bin` into `<root>/bin` — krew's own layout.
fn krew_install(manifest: &Value, platform: &Value, archive: &Path, root: &Path) -> PathBuf {
    let unpacked = root.join("download");
    std::fs::create_dir_all(&unpacked).unwrap();
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(archive).unwrap())
        .read_to_end(&mut data)
        .unwrap();
    tar::Archive::new(&data[..]).unpack(&unpacked).unwrap();
    let version = manifest["spec"]["version"].as_str().unwrap();
    let store = root.join("store/kmm").join(version);
    std::fs::create_dir_all(&store).unwrap();
    for rule in platform["files"].as_array().unwrap() {
        let from = rule["from"].as_str().unwrap();
        let to = rule["to"].as_str().unwrap();
        let source = unpacked.join(from);
        assert!(source.exists(), "files.from {from} is in the archive");
        let dest = if to == "." {
            store.join(from)
        } else {
            store.join(to)
        };
        std::fs::copy(&source, &dest).unwrap();
    }
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = platform["bin"].as_str().unwrap();
    // krew names the link after the plugin, keeping the binary's extension (kubectl-kmm.exe).
    let link = match bin.strip_suffix(".exe") {
        Some(_) => "kubectl-kmm.exe",
        None => "kubectl-kmm",
    };
    std::os::unix::fs::symlink(store.join(bin), bin_dir.join(link)).unwrap();
    store
}

/// The archives `krew/package` cross-builds for Windows and macOS, built once per test process
/// with the fast `cross` profile into a target directory of their own (the outer cargo holds the
/// lock of the main one while the tests run).
struct CrossBuild {
    dist: PathBuf,
    manifest: Value,
}

/// Windows runs here under Wine; of macOS, Apple silicon: its build takes the same zig link with
/// the same stubs as Intel's and adds the ad-hoc code signature, and every cross build is minutes
/// of the test command's 2-core budget (darwin/amd64 is built natively and smoke-tested by the
/// release workflow, on an Intel macOS runner).
const CROSS: [&str; 2] = ["windows/amd64", "darwin/arm64"];

fn cross_build() -> &'static CrossBuild {
    static BUILD: OnceLock<CrossBuild> = OnceLock::new();
    BUILD.get_or_init(|| {
        let dist = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cross-dist");
        let _ = std::fs::remove_dir_all(&dist);
        let mut command = Command::new(Path::new(ROOT).join("krew/package"));
        command.args(["--profile", "cross", "--out", dist.to_str().unwrap()]);
        for platform in CROSS {
            command.args(["--only", platform]);
        }
        let out = command
            .arg("--uri-base")
            .arg(format!("file://{}", dist.display()))
            .env(
                "CARGO_TARGET_DIR",
                Path::new(ROOT).join("target/cross-build"),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "krew/package: {stderr}");
        assert!(!stderr.contains("not built"), "{stderr}");
        let manifest = yaml(&dist.join("plugin.yaml"));
        CrossBuild { dist, manifest }
    })
}

fn platform<'a>(manifest: &'a Value, os: &str, arch: &str) -> &'a Value {
    manifest["spec"]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["selector"]["matchLabels"]["os"] == os && p["selector"]["matchLabels"]["arch"] == arch
        })
        .unwrap_or_else(|| panic!("{os}/{arch} in {manifest:?}"))
}

fn archive_of(build: &CrossBuild, os: &str, arch: &str) -> PathBuf {
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    build
        .dist
        .join(format!("kubectl-kmm_{version}_{os}_{arch}.tar.gz"))
}

/// One file of a tar.gz archive.
fn archive_file(archive: &Path, name: &str) -> Vec<u8> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(archive).unwrap(),
    ));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new(name) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            return data;
        }
    }
    panic!("{name} is not in {}", archive.display());
}

/// kubectl with `path` alone and a HOME of its own: nothing the user installed or configured.
fn kubectl(path: &str, args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(which::which("kubectl").unwrap())
        .args(args)
        .env("PATH", path)
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn installs_as_krew_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    // Pack this build's binary (no release build in the test suite: the packing is what is tested).
    let status = Command::new(Path::new(ROOT).join("krew/package"))
        .args(["--only", "linux/amd64", "--out", dist.to_str().unwrap()])
        .arg("--binary")
        .arg(format!("linux/amd64={}", plugin_binary().display()))
        .arg("--uri-base")
        .arg(format!("file://{}", dist.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = yaml(&dist.join("plugin.yaml"));
    check_krew_rules(&manifest, Path::new("/"));
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["spec"]["version"], version.as_str());
    let platform = &manifest["spec"]["platforms"][0];
    assert_eq!(platform["selector"]["matchLabels"]["os"], "linux");
    let archive = dist.join(format!("kubectl-kmm_{version}_linux_amd64.tar.gz"));
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(platform["sha256"].as_str().unwrap()));

    // The release workflow's smoke test passes on this archive.
    let smoke = Command::new(Path::new(ROOT).join("scripts/smoke"))
        .arg(&dist)
        .arg("linux/amd64")
        .output()
        .unwrap();
    assert!(
        smoke.status.success(),
        "{}",
        String::from_utf8_lossy(&smoke.stderr)
    );

    let root = tmp.path().join("krew");
    let store = krew_install(&manifest, platform, &archive, &root);
    // Only krew's bin directory and the test tools: a kubectl-kmm the user installed stays out.
    let path = isolated_path(&[&root.join("bin")]);

    let (code, stdout, stderr) = kubectl(&path, &["kmm", "version", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["version"], version.as_str());
    assert!(v["gitCommit"].as_str().is_some_and(|c| !c.is_empty()));
    let (code, stdout, stderr) = kubectl(&path, &["plugin", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&root.join("bin/kubectl-kmm").display().to_string()),
        "{stdout}"
    );

    // `kubectl kmm <TAB>`: kubectl finds the completion hook on PATH.
    let path = format!("{}:{path}", store.display());
    let (code, stdout, stderr) = kubectl(&path, &["__complete", "kmm", ""]);
    assert_eq!(code, 0, "{stderr}");
    let candidates: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default())
        .collect();
    for sub in ["preflight", "status", "dtk", "version", "completion"] {
        assert!(candidates.contains(&sub), "{stdout}");
    }
    let (_, stdout, _) = kubectl(&path, &["__complete", "kmm", "preflight", "--output", ""]);
    assert_eq!(
        stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["table", "wide", "json", "yaml", "name", ":4"]
    );
}

#[test]
fn the_committed_manifests_follow_krew_rules() {
    // plugin.yaml is rendered by krew/package from the archives it built (real sha256s).
    let manifest = yaml(&Path::new(ROOT).join("plugin.yaml"));
    check_krew_rules(&manifest, Path::new("/"));
    // Every platform was built here (see README's Releasing).
    let mut committed: Vec<String> = manifest["spec"]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let labels = &p["selector"]["matchLabels"];
            format!(
                "{}/{}",
                labels["os"].as_str().unwrap(),
                labels["arch"].as_str().unwrap()
            )
        })
        .collect();
    committed.sort();
    assert_eq!(
        committed,
        [
            "darwin/amd64",
            "darwin/arm64",
            "linux/amd64",
            "linux/arm64",
            "windows/amd64"
        ]
    );
    assert_eq!(
        manifest["spec"]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION")).as_str()
    );
    // .krew.yaml is what krew/package --krew-template prints, for all five platforms.
    let out = Command::new(Path::new(ROOT).join("krew/package"))
        .arg("--krew-template")
        .output()
        .unwrap();
    let template = std::fs::read_to_string(Path::new(ROOT).join("krew/.krew.yaml")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        template,
        "krew/.krew.yaml is stale"
    );
    let platforms: BTreeMap<String, usize> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("os: ").map(str::to_string))
        .fold(BTreeMap::new(), |mut m, os| {
            *m.entry(os).or_default() += 1;
            m
        });
    assert_eq!(
        platforms,
        BTreeMap::from([
            ("darwin".into(), 2),
            ("linux".into(), 2),
            ("windows".into(), 1)
        ])
    );
    for arch in [
        "linux_amd64",
        "linux_arm64",
        "darwin_amd64",
        "darwin_arm64",
        "windows_amd64",
    ] {
        assert!(
            template.contains(&format!("kubectl-kmm_{{{{ .TagName }}}}_{arch}.tar.gz")),
            "{arch}"
        );
    }
}

#[test]
fn krew_package_cross_builds_windows_and_macos() {
    let build = cross_build();
    check_krew_rules(&build.manifest, Path::new("/"));
    let platforms = build.manifest["spec"]["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), CROSS.len());
    let sums = std::fs::read_to_string(build.dist.join("SHA256SUMS")).unwrap();
    for name in CROSS {
        let (os, arch) = name.split_once('/').unwrap();
        let entry = platform(&build.manifest, os, arch);
        let archive = archive_of(build, os, arch);
        let sha = hex::encode(Sha256::digest(std::fs::read(&archive).unwrap()));
        assert_eq!(entry["sha256"], sha.as_str(), "{name}");
        assert!(sums.contains(&sha), "{name} in SHA256SUMS");
        let files: Vec<&str> = entry["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["from"].as_str().unwrap())
            .collect();
        if os == "windows" {
            assert_eq!(entry["bin"], "kubectl-kmm.exe");
            assert_eq!(
                files,
                ["kubectl-kmm.exe", "kubectl_complete-kmm.cmd", "LICENSE"]
            );
            // A PE executable for x86-64 (machine 0x8664), a console program.
            let exe = archive_file(&archive, "kubectl-kmm.exe");
            assert_eq!(&exe[..2], b"MZ");
            let pe = u32::from_le_bytes(exe[0x3c..0x40].try_into().unwrap()) as usize;
            assert_eq!(&exe[pe..pe + 4], b"PE\0\0");
            assert_eq!(u16::from_le_bytes([exe[pe + 4], exe[pe + 5]]), 0x8664);
            let subsystem = pe + 24 + 68;
            assert_eq!(
                u16::from_le_bytes([exe[subsystem], exe[subsystem + 1]]),
                3,
                "IMAGE_SUBSYSTEM_WINDOWS_CUI"
            );
            let hook = archive_file(&archive, "kubectl_complete-kmm.cmd");
            let hook = String::from_utf8(hook).unwrap();
            assert!(hook.contains("\r\n") && hook.contains("kubectl-kmm.exe __complete %*"));
        } else {
            assert_eq!(entry["bin"], "kubectl-kmm");
            assert_eq!(files, ["kubectl-kmm", "kubectl_complete-kmm", "LICENSE"]);
        }
    }
}

/// An ad-hoc code signature as macOS checks it at exec: a SuperBlob whose CodeDirectory holds the
/// SHA-256 of every page of the file up to `codeLimit`. Any change to the file after the linker
/// signed it (a strip, say) breaks a page hash, and Apple silicon refuses to run it.
fn verify_code_signature(blob: &[u8], file: &[u8], arch: &str) {
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(
        be32(blob, 0),
        0xfade_0cc0,
        "darwin/{arch}: an embedded signature SuperBlob"
    );
    let count = be32(blob, 8);
    let directory = (0..count)
        .map(|i| be32(blob, 12 + i * 8 + 4))
        .find(|&offset| be32(blob, offset) == 0xfade_0c02)
        .unwrap_or_else(|| panic!("darwin/{arch}: no CodeDirectory"));
    let cd = &blob[directory..];
    let hash_offset = be32(cd, 16);
    let code_slots = be32(cd, 28);
    let code_limit = be32(cd, 32);
    let (hash_size, hash_type, page_shift) = (cd[36] as usize, cd[37], cd[39]);
    assert_eq!(
        (hash_size, hash_type),
        (32, 2),
        "darwin/{arch}: SHA-256 page hashes"
    );
    let page = 1usize << page_shift;
    assert!(
        code_slots > 0,
        "darwin/{arch}: the signature covers the file"
    );
    assert_eq!(
        code_slots,
        code_limit.div_ceil(page),
        "darwin/{arch}: one slot per page"
    );
    for slot in 0..code_slots {
        let start = slot * page;
        let end = (start + page).min(code_limit);
        let expected = &cd[hash_offset + slot * hash_size..hash_offset + (slot + 1) * hash_size];
        assert_eq!(
            &Sha256::digest(&file[start..end])[..],
            expected,
            "darwin/{arch}: page {slot} of the file does not match its signature"
        );
    }
}

/// The libraries a macOS binary may load: all of them part of every macOS installation.
const MACOS_BASE: [&str; 4] = [
    "/usr/lib/libSystem.B.dylib",
    "/usr/lib/libiconv.2.dylib",
    "/System/Library/Frameworks/CoreFoundation.framework/Versions/A/CoreFoundation",
    "/System/Library/Frameworks/Security.framework/Versions/A/Security",
];

#[test]
fn the_macos_binaries_load_only_the_base_system() {
    use object::macho;
    use object::read::macho::{LoadCommandVariant, MachHeader};
    let build = cross_build();
    for (arch, cpu) in [("arm64", macho::CPU_TYPE_ARM64)] {
        let data = archive_file(&archive_of(build, "darwin", arch), "kubectl-kmm");
        let header = macho::MachHeader64::<object::Endianness>::parse(&data[..], 0)
            .unwrap_or_else(|e| panic!("darwin/{arch} is no 64-bit Mach-O file: {e}"));
        let endian = header.endian().unwrap();
        assert_eq!(header.cputype(endian), cpu, "darwin/{arch}");
        assert_eq!(header.filetype(endian), macho::MH_EXECUTE);
        assert_ne!(
            header.flags(endian) & macho::MH_PIE,
            0,
            "position independent"
        );
        assert_ne!(
            header.flags(endian) & macho::MH_TWOLEVEL,
            0,
            "two-level namespace"
        );
        let mut dylibs = Vec::new();
        let mut minimum = None;
        let mut signed = false;
        let mut dyld = None;
        let mut commands = header.load_commands(endian, &data[..], 0).unwrap();
        while let Some(command) = commands.next().unwrap() {
            match command.variant().unwrap() {
                LoadCommandVariant::Dylib(dylib) => {
                    let name = command.string(endian, dylib.dylib.name).unwrap();
                    dylibs.push((command.cmd(), String::from_utf8_lossy(name).into_owned()));
                }
                LoadCommandVariant::BuildVersion(build) => {
                    assert_eq!(build.platform.get(endian), macho::PLATFORM_MACOS);
                    minimum = Some(build.minos.get(endian));
                }
                LoadCommandVariant::LoadDylinker(linker) => {
                    let name = command.string(endian, linker.name).unwrap();
                    dyld = Some(String::from_utf8_lossy(name).into_owned());
                }
                LoadCommandVariant::LinkeditData(signature)
                    if command.cmd() == macho::LC_CODE_SIGNATURE =>
                {
                    let offset = signature.dataoff.get(endian) as usize;
                    let size = signature.datasize.get(endian) as usize;
                    let blob = data
                        .get(offset..offset + size)
                        .expect("the code signature lies inside the file");
                    verify_code_signature(blob, &data, arch);
                    signed = true;
                }
                _ => assert_ne!(command.cmd(), macho::LC_RPATH, "no @rpath search"),
            }
        }
        // macOS 11, encoded xxxx.yy.zz: kubectl's own minimum.
        assert_eq!(
            minimum,
            Some(11 << 16),
            "darwin/{arch}: LC_BUILD_VERSION minos 11.0"
        );
        assert_eq!(dyld.as_deref(), Some("/usr/lib/dyld"));
        // Apple silicon runs no unsigned code: the linker's ad-hoc signature must be there, and
        // match every page of the file (verified above for each signed binary).
        if arch == "arm64" {
            assert!(signed, "darwin/arm64 carries a code signature");
        }
        assert!(!dylibs.is_empty());
        for (cmd, name) in &dylibs {
            assert_eq!(
                *cmd,
                macho::LC_LOAD_DYLIB,
                "{name}: a plain load, not weak or re-exported"
            );
            assert!(
                MACOS_BASE.contains(&name.as_str()),
                "darwin/{arch} loads {name}, which is not part of the base system"
            );
        }
        let names: Vec<&str> = dylibs.iter().map(|(_, n)| n.as_str()).collect();
        assert!(names.contains(&"/usr/lib/libSystem.B.dylib"), "{names:?}");
        // The system trust store (corporate CAs in the keychain) is asked through Security.
        assert!(
            names.contains(&"/System/Library/Frameworks/Security.framework/Versions/A/Security"),
            "{names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_windows_archive_runs_under_wine() {
    let build = tokio::task::block_in_place(cross_build);
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let entry = platform(&build.manifest, "windows", "amd64");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("krew");
    let store = krew_install(
        &build.manifest,
        entry,
        &archive_of(build, "windows", "amd64"),
        &root,
    );
    let exe = root.join("bin/kubectl-kmm.exe");
    let wine = tokio::task::block_in_place(Wine::new);
    let run = |args: &[&str], env: &[(&str, String)]| {
        let out = tokio::task::block_in_place(|| wine.run(&exe, args, env));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = run(&["version", "-o", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["version"], version.as_str());
    assert_eq!(v["platform"], "windows/amd64");
    let (code, stdout, stderr) = run(&["--help"], &[]);
    assert_eq!(code, 0, "{stderr}");
    for sub in ["preflight", "check", "dtk", "status"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
    // Piped output: no escape sequences.
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");

    // dtk through 127.0.0.1 against a registry that wants credentials, found in docker's file
    // at its Windows place, %USERPROFILE%\.docker\config.json. Plain HTTP: Wine 8's crypt32
    // refuses the chain engine rustls-platform-verifier builds for extra roots (--registry-ca)
    // with "Invalid parameter", which Windows 10 accepts.
    let registry = TestRegistry::plain_with_password("kmm", "s3cret-pass");
    let pusher = Pusher::new(&registry);
    let fixture = push_release(&pusher, &registry.addr, "4.19.0", "amd64").await;
    let plain = format!("http://{}", registry.addr);
    let profile = wine.profile();
    std::fs::create_dir_all(profile.join(".docker")).unwrap();
    let credentials = auth_file(&[(&registry.addr, "kmm", "s3cret-pass")]);
    std::fs::write(profile.join(".docker/config.json"), &credentials).unwrap();
    let dtk = [
        "dtk",
        "--release",
        fixture.release.reference.as_str(),
        "--insecure-registry",
        plain.as_str(),
        "-o",
        "json",
    ];
    let (code, stdout, stderr) = run(&dtk, &[]);
    assert_eq!(code, 0, "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["dtkImage"], fixture.dtk.reference.as_str());
    assert_eq!(json["kernelVersion"], "5.14.0-570.19.0.el9_6.x86_64");
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
    // The cache lives in %LOCALAPPDATA%\kubectl-kmm.
    let local = profile.join("AppData/Local/kubectl-kmm");
    assert!(local.is_dir(), "{} holds the cache", local.display());

    // Another USERPROFILE (Wine sets its own for the programs it starts, so cmd.exe sets it
    // for the plugin): podman's file there is the one read, and docker's above is not.
    let other = tmp.path().join("profile");
    std::fs::create_dir_all(other.join(".config/containers")).unwrap();
    let with_profile = || {
        let line = format!(
            // No quotes: Wine would escape them with backslashes, which cmd.exe keeps.
            "set USERPROFILE={}&& {} {} --no-cache",
            windows_path(&other),
            windows_path(&exe),
            dtk.join(" ")
        );
        let out = tokio::task::block_in_place(|| wine.run(Path::new("cmd"), &["/c", &line], &[]));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = with_profile();
    assert_eq!(
        code, 4,
        "no credentials under the new USERPROFILE: {stderr}"
    );
    assert!(stderr.contains("not authorized"), "{stderr}");
    std::fs::write(other.join(".config/containers/auth.json"), &credentials).unwrap();
    let (code, stderr) = with_profile();
    assert_eq!(code, 0, "{stderr}");

    // kubectl's completion hook as Windows runs it: the .cmd through cmd.exe, kubectl-kmm.exe
    // found on PATH (krew's bin directory).
    let hook = windows_path(&store.join("kubectl_complete-kmm.cmd"));
    let out = tokio::task::block_in_place(|| {
        wine.run(
            Path::new("cmd"),
            &["/c", &hook, ""],
            &[("WINEPATH", windows_path(&root.join("bin")))],
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let candidates: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default())
        .collect();
    for sub in ["preflight", "check", "dtk"] {
        assert!(candidates.contains(&sub), "{stdout}");
    }
}

#[test]
fn the_release_workflow_builds_every_platform_with_the_commands_here() {
    let workflow = yaml(&Path::new(ROOT).join(".github/workflows/release.yml"));
    assert_eq!(
        workflow["on"]["push"]["tags"],
        serde_json::json!(["v*.*.*"])
    );
    assert_eq!(workflow["permissions"]["contents"], "write");
    let script = std::fs::read_to_string(Path::new(ROOT).join("krew/package")).unwrap();
    let listed = script
        .lines()
        .find_map(|l| l.strip_prefix("all_platforms=("))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap();
    let mut platforms: Vec<&str> = listed.split_whitespace().collect();
    platforms.sort_unstable();
    assert_eq!(platforms.len(), 5, "{platforms:?}");

    // One build per platform, each on a runner of its own OS.
    let build = &workflow["jobs"]["build"];
    let mut matrix: Vec<(String, String)> = build["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["platform"].as_str().unwrap().to_string(),
                e["runner"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    matrix.sort();
    assert_eq!(
        matrix.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        platforms
    );
    for (platform, runner) in &matrix {
        let expected = match platform.split('/').next().unwrap() {
            "linux" => "ubuntu-",
            "darwin" => "macos-",
            "windows" => "windows-",
            other => panic!("{other}"),
        };
        assert!(runner.starts_with(expected), "{platform} on {runner}");
    }
    assert_eq!(build["runs-on"], "${{ matrix.runner }}");
    assert_eq!(
        build["defaults"]["run"]["shell"], "bash",
        "krew/package is bash"
    );

    // Every command of ours that a step runs exists, and every flag it passes to krew/package
    // is one krew/package documents.
    let help = Command::new(Path::new(ROOT).join("krew/package"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut commands = Vec::new();
    let pinned = Regex::new(r"^[\w.-]+/[\w.-]+@v\d").unwrap();
    for job in workflow["jobs"].as_object().unwrap().values() {
        for step in job["steps"].as_array().unwrap() {
            if let Some(uses) = step["uses"].as_str() {
                assert!(pinned.is_match(uses), "{uses} is pinned to a release");
            }
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            let words: Vec<&str> = run.split_whitespace().collect();
            for (i, word) in words.iter().enumerate() {
                if !(word.starts_with("krew/") || word.starts_with("scripts/")) {
                    continue;
                }
                let path = Path::new(ROOT).join(word);
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&path)
                        .unwrap_or_else(|e| panic!("{word}: {e}"))
                        .permissions(),
                );
                assert_ne!(mode & 0o111, 0, "{word} is executable");
                commands.push(word.to_string());
                if *word == "krew/package" {
                    for flag in words[i + 1..].iter().filter(|w| w.starts_with("--")) {
                        assert!(
                            help.contains(&format!("krew/package {flag} ")),
                            "{flag} is not a krew/package flag"
                        );
                    }
                    assert!(run.contains("--only ${{ matrix.platform }}"), "{run}");
                }
            }
        }
    }
    assert!(commands.contains(&"krew/package".to_string()));
    assert!(commands.contains(&"scripts/smoke".to_string()));

    // Publish after every build: the archives and SHA256SUMS, then the krew-index update from
    // the committed template.
    let publish = &workflow["jobs"]["publish"];
    assert_eq!(publish["needs"], "build");
    let steps = publish["steps"].as_array().unwrap();
    let runs: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(runs.contains("sha256sum *.tar.gz > SHA256SUMS"), "{runs}");
    assert!(
        runs.contains("gh release create") && runs.contains("dist/SHA256SUMS"),
        "{runs}"
    );
    let bot = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("rajatjindal/krew-release-bot@"))
        })
        .expect("a krew-release-bot step");
    let template = bot["with"]["krew_template_file"].as_str().unwrap();
    assert!(Path::new(ROOT).join(template).is_file(), "{template}");
}
