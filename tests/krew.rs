//! Install as krew does: package with `krew/package`, check the manifest against krew's rules,
//! unpack the archive into a krew-like root as its `files` say, and run the plugin from there
//! with the real kubectl (plugin discovery and the completion hook).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::plugin_binary;

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
    std::os::unix::fs::symlink(store.join(bin), bin_dir.join("kubectl-kmm")).unwrap();
    store
}

fn kubectl(path: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(which::which("kubectl").unwrap())
        .args(args)
        .env("PATH", path)
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

    let root = tmp.path().join("krew");
    let store = krew_install(&manifest, platform, &archive, &root);
    let system_path = std::env::var("PATH").unwrap_or_default();
    let path = format!("{}:{system_path}", root.join("bin").display());

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
    assert_eq!(
        manifest["spec"]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION")).as_str()
    );
    // .krew.yaml is what krew/package --krew-template prints, for all four platforms.
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
        BTreeMap::from([("darwin".into(), 2), ("linux".into(), 2)])
    );
    for arch in ["linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"] {
        assert!(
            template.contains(&format!("kubectl-kmm_{{{{ .TagName }}}}_{arch}.tar.gz")),
            "{arch}"
        );
    }
}
