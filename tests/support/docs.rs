//! The captures in README.md and docs/*.md, and what it takes to check them against the binary.
//!
//! Every ```console block is a capture, preceded by `<!-- capture: WORLD -->`: `sandbox` (the
//! world of `./scripts/try-it`, replayed by tests/e2e/docs.rs), `deep` (the test cluster of
//! tests/e2e/deep.rs, replayed there), `fleet` (`support::fleet::docs_world`) or `hub`
//! (`support::hub::TestHub::start`), each replayed by the tests of the same name. Its `$ ` lines are run command by command through
//! kubectl, with the `--insecure-registry` of the world's registry where the subcommand takes it
//! (as `./scripts/try-it` passes it); what the plugin prints, stdout and stderr in the order a
//! terminal shows them, must be what the block shows. Ports, digests, temporary paths, elapsed
//! times and git commits are compared as placeholders; a line `…` (or `…text…`) stands for any
//! number of lines.
//!
//! `KMM_DOCS_BLESS=1` rewrites, from the run, the output of every capture that differs and has
//! no `…` line.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::Context;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The worlds captures are made in, and the test that replays each.
pub const WORLDS: &[(&str, &str)] = &[
    (
        "sandbox",
        "docs::every_sandbox_capture_is_what_the_binary_prints",
    ),
    ("deep", "deep::deep_makes_the_kernels_load_decision"),
    (
        "fleet",
        "fleet::every_fleet_capture_is_what_the_binary_prints",
    ),
    ("hub", "hub::every_hub_capture_is_what_the_binary_prints"),
    (
        "secureboot",
        "secureboot::signatures_are_verified_as_the_kernel_verifies_them",
    ),
    (
        "nodeos",
        "nodeos::check_checks_the_kernel_the_nodes_boot_when_the_dtk_disagrees",
    ),
    ("boot", "boot::boot_loads_each_module_in_the_target_kernel"),
];

/// The markdown files a reader is sent to: README.md and docs/*.md.
pub fn pages() -> Vec<PathBuf> {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// One ```console block: where it is, its world, and its commands with the output each shows.
#[derive(Debug, Clone)]
pub struct Capture {
    pub page: PathBuf,
    /// The line of the opening fence (1-based).
    pub line: usize,
    pub world: String,
    /// The block's lines, between the fences (0-based).
    span: Range<usize>,
    pub steps: Vec<(String, Vec<String>)>,
}

impl Capture {
    pub fn at(&self) -> String {
        format!("{}:{}", self.page.display(), self.line)
    }
}

/// Every capture of every page (panics on a ```console block without its marker).
pub fn all() -> Vec<Capture> {
    pages().iter().flat_map(|p| captures_of(p)).collect()
}

/// The captures made in `world`.
pub fn of_world(world: &str) -> Vec<Capture> {
    all().into_iter().filter(|c| c.world == world).collect()
}

fn captures_of(page: &Path) -> Vec<Capture> {
    let text = std::fs::read_to_string(page).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let marker = Regex::new(r"^<!-- capture: ([a-z-]+) -->$").unwrap();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].trim_start().starts_with("```console") {
            i += 1;
            continue;
        }
        let at = format!("{}:{}", page.display(), i + 1);
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim_start().starts_with("```"))
            .unwrap_or_else(|| panic!("{at}: unclosed block"));
        let world = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| marker.captures(l.trim()))
            .map(|c| c[1].to_string())
            .unwrap_or_else(|| {
                panic!(
                    "{at}: a ```console block is a capture and needs `<!-- capture: WORLD -->` \
                     before it (commands without output go in a ```sh block)"
                )
            });
        assert!(
            WORLDS.iter().any(|(w, _)| *w == world),
            "{at}: no test replays captures of world {world:?}"
        );
        let mut steps: Vec<(String, Vec<String>)> = Vec::new();
        for line in &lines[start..end] {
            match line.strip_prefix("$ ") {
                Some(command) => steps.push((command.to_string(), Vec::new())),
                None => match steps.last_mut() {
                    Some((_, output)) => output.push(line.to_string()),
                    None => panic!("{at}: a capture starts with a `$ ` command"),
                },
            }
        }
        found.push(Capture {
            page: page.to_path_buf(),
            line: i + 1,
            world,
            span: start..end,
            steps,
        });
        i = end + 1;
    }
    found
}

/// A command line split as the shell splits it (quotes, no expansion).
pub fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

static PLACEHOLDERS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (r"sha256:[0-9a-f]{64}", "sha256:DIGEST"),
        (r"sha256:[0-9a-f]{8}…[0-9a-f]{5,8}", "sha256:DIGEST"),
        (r"/tmp/\.tmp[A-Za-z0-9]+", "/tmp/TMP"),
        (r"\[\d+(m\d+)?s\]", "[Ns]"),
        (r"\(\d+(m\d+)?s\)", "(Ns)"),
        (r"git commit: [0-9a-f]+", "git commit: COMMIT"),
        // Debian's kernel, which `--boot`'s tests boot: whichever the machine installed.
        (r"\b\d+\.\d+\.\d+-\d+-amd64\b", "DEBIAN-KERNEL"),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).unwrap(), r))
    .collect()
});

pub fn normalised(line: &str) -> String {
    let mut line = line.trim_end().to_string();
    for (pattern, placeholder) in PLACEHOLDERS.iter() {
        line = pattern.replace_all(&line, *placeholder).into_owned();
    }
    line
}

fn is_elision(line: &str) -> bool {
    let line = line.trim();
    line.starts_with('…') && line.ends_with('…')
}

/// Whether `actual` is what `expected` shows, `…` lines standing for any lines.
pub fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if is_elision(first) => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| normalised(first) == normalised(a) && matches(rest, more)),
    }
}

/// `kubectl <args>` for `ctx`'s user (the plugin found by kubectl's plugin discovery): the exit
/// code, and stdout and stderr in the order they were written.
pub async fn run_merged(ctx: &Context, args: &[String]) -> (i32, Vec<String>) {
    let kubectl = which::which("kubectl").expect("kubectl is installed");
    let out = tempfile::NamedTempFile::new().unwrap();
    // Both appended to one file: each write lands after the last, as on a terminal.
    let append = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(out.path())
            .unwrap()
    };
    let mut command = tokio::process::Command::new(kubectl);
    // In the isolated HOME, where a test puts the files a capture names (`mok.der`).
    command
        .args(args)
        .current_dir(ctx.home.path())
        .stdin(std::process::Stdio::null())
        .stdout(append())
        .stderr(append());
    ctx.prepare(&mut command, super::plugin_binary().parent());
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), command.status())
        .await
        .expect("the command ends within 120 s")
        .unwrap();
    let text = std::fs::read_to_string(out.path()).unwrap();
    (
        status.code().unwrap_or(-1),
        text.lines().map(str::to_string).collect(),
    )
}

/// A capture's `kubectl kmm …` words as kubectl's arguments, with `--insecure-registry
/// <registry>` where the subcommand takes it.
pub fn with_registry(words: &[String], registry: &str) -> Vec<String> {
    // The Debian kernel a page shows is the one this machine installed (world `boot`), and an
    // image a page names is in the world's registry.
    let debian = Regex::new(r"^\d+\.\d+\.\d+-\d+-amd64$").unwrap();
    let local = Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    let mut args: Vec<String> = words[1..]
        .iter()
        .map(|w| {
            if debian.is_match(w) {
                super::realkernel::kernel().release.clone()
            } else {
                local.replace_all(w, registry).into_owned()
            }
        })
        .collect();
    let takes_registry = matches!(
        args.get(1).map(String::as_str),
        Some("preflight" | "check" | "status" | "dtk")
    );
    if takes_registry && !args.iter().any(|a| a == "--insecure-registry") {
        args.extend(["--insecure-registry".into(), registry.to_string()]);
    }
    args
}

/// Run a capture's commands for `ctx` against `registry`: the output of each.
pub async fn replay(capture: &Capture, ctx: &Context, registry: &str) -> Vec<Vec<String>> {
    let mut outputs = Vec::new();
    let mut last_code = 0;
    for (command, _) in &capture.steps {
        let words = words(command);
        let output = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["echo", "$?"] => vec![last_code.to_string()],
            ["kubectl", "kmm", ..] => {
                let (code, output) = run_merged(ctx, &with_registry(&words, registry)).await;
                last_code = code;
                output
            }
            _ => panic!(
                "{}: a capture runs `kubectl kmm …` and `echo $?` only: {command}",
                capture.at()
            ),
        };
        outputs.push(output);
    }
    outputs
}

/// Replay every capture of `world` against one test cluster and assert the pages show what the
/// binary prints (`KMM_DOCS_BLESS` rewrites them, as `differences` says).
pub async fn assert_world(world: &str, ctx: &Context, registry: &str) {
    let captures = of_world(world);
    assert!(!captures.is_empty(), "no page shows world {world}");
    let mut replayed = Vec::new();
    for capture in captures {
        let outputs = replay(&capture, ctx, registry).await;
        replayed.push((capture, outputs));
    }
    let failures = differences(&replayed);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// How each capture differs from its replay (empty when none does). With `KMM_DOCS_BLESS`,
/// the pages are rewritten from the replays where no `…` line stands.
pub fn differences(replayed: &[(Capture, Vec<Vec<String>>)]) -> Vec<String> {
    let bless = std::env::var_os("KMM_DOCS_BLESS").is_some();
    let mut failures = Vec::new();
    let mut blessed: std::collections::BTreeMap<PathBuf, Vec<(Range<usize>, String)>> =
        Default::default();
    for (capture, outputs) in replayed {
        let elided = capture
            .steps
            .iter()
            .any(|(_, expected)| expected.iter().any(|l| is_elision(l)));
        let mut block = String::new();
        let mut same = true;
        for ((command, expected), actual) in capture.steps.iter().zip(outputs) {
            block.push_str(&format!("$ {command}\n"));
            for line in actual {
                block.push_str(line.trim_end());
                block.push('\n');
            }
            if !matches(expected, actual) {
                same = false;
                failures.push(format!(
                    "{}: `{command}` printed:\n{}\n--- the page shows:\n{}",
                    capture.at(),
                    actual.join("\n"),
                    expected.join("\n")
                ));
            }
        }
        if bless && !same && !elided {
            blessed
                .entry(capture.page.clone())
                .or_default()
                .push((capture.span.clone(), block));
        }
    }
    for (page, blocks) in blessed {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for (span, block) in blocks.into_iter().rev() {
            lines.splice(span, block.lines().map(str::to_string));
        }
        std::fs::write(&page, lines.join("\n") + "\n").unwrap();
    }
    failures
}
