//! The documentation cannot drift from the binary: every capture of README.md and docs/*.md is
//! replayed (tests/support/docs.rs says how); here those of the sandbox's world, each in a world
//! of its own, and the runbook's commands and jq filters against real output.

use crate::support;

use std::path::Path;

use futures::StreamExt;
use regex::Regex;
use support::cluster::VERSION;
use support::docs::{self, Capture, matches, with_registry, words};
use support::registry::TestRegistry;

#[tokio::test(flavor = "multi_thread")]
async fn every_sandbox_capture_is_what_the_binary_prints() {
    let captures = docs::of_world("sandbox");
    assert!(
        captures.len() >= 8,
        "README and docs hold the captures: {}",
        captures.len()
    );
    // A few at a time: each has a world of its own.
    let replayed: Vec<(Capture, Vec<Vec<String>>)> = futures::stream::iter(captures)
        .map(|capture| async move {
            let world = support::sandbox::start(TestRegistry::plain(), 5).await;
            let outputs = docs::replay(&capture, &world.ctx, &world.registry.addr).await;
            (capture, outputs)
        })
        .buffered(4)
        .collect()
        .await;
    let failures = docs::differences(&replayed);
    assert!(
        failures.is_empty(),
        "{} captures differ from the binary (KMM_DOCS_BLESS=1 rewrites those without `…`):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every ```console block of the pages is a capture some test replays, and the README has one
/// per subcommand.
#[test]
fn every_console_block_is_a_capture_and_the_readme_shows_each_subcommand() {
    let all = docs::all();
    for (world, test) in docs::WORLDS {
        assert!(
            all.iter().any(|c| c.world == *world),
            "no capture of world {world} for {test} to replay"
        );
    }
    let readme: Vec<&Capture> = all
        .iter()
        .filter(|c| c.page.ends_with("README.md"))
        .collect();
    for subcommand in ["check", "preflight", "status", "dtk"] {
        assert!(
            readme.iter().any(|c| c
                .steps
                .iter()
                .any(|(command, _)| command.starts_with(&format!("kubectl kmm {subcommand}")))),
            "README has a capture of `kubectl kmm {subcommand}`"
        );
    }
}

#[test]
fn the_matcher_and_the_placeholders() {
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(matches(
        &lines("a 127.0.0.1:41234\n…\nz"),
        &lines("a 127.0.0.1:39999\nb\nc\nz")
    ));
    assert!(matches(&lines("a\n…two more…\nz"), &lines("a\nz")));
    assert!(!matches(&lines("a\nz"), &lines("a\nb\nz")));
    assert!(!matches(&lines("[0s] x"), &lines("[1s] y")));
    assert!(matches(&lines("[0s] x (3s)"), &lines("[12s] x (1m05s)")));
    assert_eq!(
        words(r#"kubectl kmm check -l 'a b' --x="c d""#),
        ["kubectl", "kmm", "check", "-l", "a b", "--x=c d"]
    );
}

/// The runbook of docs/runbooks.md (the ```bash block after `<!-- runbook -->`): its `kubectl
/// kmm` commands run in the sandbox, and its jq filters, run on what they printed, name exactly
/// the Modules that failed.
#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_commands_and_jq_filters_on_real_output() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let script = text
        .split("<!-- runbook -->")
        .nth(1)
        .and_then(|rest| rest.split("```bash\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/runbooks.md has a ```bash block after <!-- runbook -->");
    let world = support::sandbox::start(TestRegistry::plain(), 5).await;
    let dir = tempfile::tempdir().unwrap();
    // `kubectl kmm … > FILE.json`, with the script's $target.
    let command = Regex::new(r#"(kubectl kmm [^>\n]*)>\s*(\w+\.json)"#).unwrap();
    let mut written = Vec::new();
    for found in command.captures_iter(script) {
        let line = found[1].replace("\"$target\"", VERSION);
        let args = with_registry(&words(&line), &world.registry.addr);
        let run = world
            .ctx
            .kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        assert_eq!(
            run.code, 1,
            "the sandbox has failing Modules: `{line}`: {}",
            run.stderr
        );
        std::fs::write(dir.path().join(&found[2]), &run.stdout).unwrap();
        written.push(found[2].to_string());
    }
    assert_eq!(written, ["check.json", "preflight.json"], "{script}");
    // `jq -r '<filter>' FILE.json`, the filter over several lines.
    let jq = Regex::new(r"(?s)jq -r '([^']*)'\s*(\w+\.json)").unwrap();
    let mut filtered = 0;
    for found in jq.captures_iter(script) {
        let out = std::process::Command::new(which::which("jq").expect("jq is installed"))
            .args(["-r", &found[1]])
            .arg(dir.path().join(&found[2]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let named: Vec<&str> = lines
            .iter()
            .map(|l| l.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            named,
            ["edge/can-bus", "storage/nvme-of"],
            "{} on {}: {lines:#?}",
            &found[1],
            &found[2]
        );
        filtered += 1;
    }
    assert_eq!(filtered, 2, "a jq filter per report: {script}");
}

/// The sandbox a second time: on the port it had (as `./scripts/try-it` keeps it), its release
/// has the same digest, and the plugin's cache of the first run answers (the DTK and the kmod
/// images too: their digests do not depend on the port).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_sandbox_run_answers_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let check = async |world: &mut support::cluster::TestCluster| {
        world
            .ctx
            .env("XDG_CACHE_HOME", cache.path().display().to_string());
        let args = [
            "kmm",
            "check",
            "--release",
            VERSION,
            "--deep",
            "-v",
            "--insecure-registry",
            &world.registry.addr,
        ];
        world.ctx.kubectl(&args).await.expect_code(1)
    };
    let mut first = support::sandbox::start(TestRegistry::plain(), 5).await;
    let (addr, release) = (
        first.registry.addr.clone(),
        first.release.release.reference.clone(),
    );
    let cold = check(&mut first).await;
    assert!(
        !cold.stderr.contains("answer from cache"),
        "{}",
        cold.stderr
    );
    drop(first);
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut second = support::sandbox::start(TestRegistry::plain_on(port), 5).await;
    assert_eq!(
        second.registry.addr, addr,
        "the port is kept when it is free"
    );
    assert_eq!(second.release.release.reference, release);
    let warm = check(&mut second).await;
    warm.expect_stderr("answer from cache");
    assert!(
        !warm.stderr.contains("--deep: ") && warm.stderr.contains("0 kmod images read"),
        "the DTK's facts and the images' answers come from the cache: {}",
        warm.stderr
    );
    assert_eq!(warm.stdout, cold.stdout);
}
