//! kubectl habits: help with examples everywhere, version, completion scripts.

use crate::support;

use support::Context;

#[tokio::test(flavor = "multi_thread")]
async fn every_command_has_help_with_an_example() {
    let ctx = Context::new();
    for args in [
        vec!["--help"],
        vec!["preflight", "--help"],
        vec!["check", "--help"],
        vec!["status", "--help"],
        vec!["dtk", "--help"],
        vec!["version", "--help"],
        vec!["completion", "--help"],
    ] {
        let run = ctx.run(&args).await.expect_code(0);
        assert!(
            run.stdout.contains("Examples:\n  "),
            "{args:?}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("Usage: kubectl kmm"),
            "{args:?}: {}",
            run.stdout
        );
    }
    // Through kubectl too.
    let run = ctx
        .kubectl(&["kmm", "preflight", "--help"])
        .await
        .expect_code(0);
    assert!(run.stdout.contains("--kubeconfig <FILE>"), "{}", run.stdout);
}

/// krew users never see the README: each command's help says what its verdicts and exit codes
/// mean, and flags say their real defaults.
#[tokio::test(flavor = "multi_thread")]
async fn help_explains_every_verdict_and_exit_code() {
    let ctx = Context::new();
    let help = async |command: &str| {
        ctx.kubectl(&["kmm", command, "--help"])
            .await
            .expect_code(0)
            .stdout
    };
    let check = help("check").await;
    for verdict in [
        "Loads ",
        "Ready ",
        "WillBuild ",
        "WillSign ",
        "Failed ",
        "Unknown ",
        "NoModules",
    ] {
        assert!(
            check.contains(&format!("  {verdict}")) || check.contains(verdict),
            "{verdict}: {check}"
        );
    }
    let preflight = help("preflight").await;
    for word in [
        "Verified ",
        "Failed ",
        "InProgress ",
        "Success",
        "Failure",
        "TimedOut",
    ] {
        assert!(preflight.contains(word), "{word}: {preflight}");
    }
    let status = help("status").await;
    assert!(status.contains("KMM's word only"), "{status}");
    let dtk = help("dtk").await;
    for (text, codes) in [
        (&check, &["0", "1", "2", "4"][..]),
        (&preflight, &["0", "1", "2", "3", "4", "130"][..]),
        (&status, &["0", "1", "2", "3", "4", "130"][..]),
        (&dtk, &["0", "2", "4"][..]),
    ] {
        let codes_section = text
            .split("Exit codes:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no exit codes in {text}"));
        for code in codes {
            assert!(
                codes_section
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "exit {code} in {codes_section}"
            );
        }
    }
    // Defaults as they are: no `[default: 0]` where 0 means "the default".
    for text in [&check, &preflight, &dtk] {
        assert!(!text.contains("[default: 0]"), "{text}");
    }
    assert!(check.contains("[default: no limit for the"), "{check}");
    assert!(dtk.contains("[default: 30s]"), "{dtk}");
    assert!(
        preflight.contains("The whole command's deadline"),
        "{preflight}"
    );
}

/// Flags the subcommand does not take, before it, and output forms it does not have.
#[tokio::test(flavor = "multi_thread")]
async fn flags_in_the_wrong_place_say_so() {
    let ctx = Context::new();
    let run = ctx.kubectl(&["kmm", "--rt", "status"]).await.expect_code(2);
    assert_eq!(
        run.stderr.trim(),
        "error: --rt does not apply to `kubectl kmm status`: it is a flag of preflight, check"
    );
    // `table` is what the other commands call their default: dtk takes it too.
    let run = ctx
        .run(&["dtk", "--release", "not a release", "-o", "table"])
        .await
        .expect_code(2);
    run.expect_stderr("invalid release");
    // check: --dtk-image is --deep's, and must be an image reference.
    let kernel = "5.14.0-570.19.1.el9_6.x86_64";
    ctx.run(&[
        "check",
        "--kernel",
        kernel,
        "--dtk-image",
        "quay.io/x/dtk:1",
    ])
    .await
    .expect_code(2)
    .expect_stderr("--deep");
    ctx.run(&[
        "check",
        "--kernel",
        kernel,
        "--deep",
        "--dtk-image",
        "quay.io/x/dtk@sha256:12",
    ])
    .await
    .expect_code(2)
    .expect_stderr("not an image reference");
}

/// A kubeconfig that is not YAML: where, without quoting it (it holds tokens), and without a
/// stand-in for what was left out.
#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_errors_say_where_without_quoting() {
    let ctx = Context::new();
    let path = ctx.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Config\nusers: [{name: a, user: {token: s3cret}\n",
    );
    let run = ctx
        .run(&["status", "--kubeconfig", &path.display().to_string()])
        .await
        .expect_code(4);
    run.expect_stderr("no usable kubeconfig: ")
        .expect_stderr("broken.yaml: ");
    assert!(!run.stderr.contains('…'), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn version_and_completion_scripts() {
    let ctx = Context::new();
    let run = ctx.run(&["version"]).await.expect_code(0);
    assert!(
        run.stdout.starts_with(&format!(
            "kubectl-kmm v{}\ngit commit: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        run.stdout
    );
    let json = ctx
        .run(&["version", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["platform"], "linux/amd64");
    assert_eq!(
        ctx.run(&["--version"]).await.expect_code(0).stdout,
        run.stdout,
        "--version and version print the same"
    );
    for (shell, marker) in [
        ("bash", "-o bashdefault -o default kubectl-kmm"),
        ("zsh", "#compdef kubectl-kmm"),
        ("fish", "complete -c kubectl-kmm"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let run = ctx.run(&["completion", shell]).await.expect_code(0);
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..run.stdout.len().min(300)]
        );
        assert!(run.stdout.contains("preflight") && run.stdout.contains("check"));
    }
    let run = ctx.run(&["completion", "tcsh"]).await.expect_code(2);
    assert!(
        run.stderr.contains("invalid value 'tcsh'"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cargo_builds_the_completion_hook_next_to_the_plugin() {
    // `cargo install` installs both binaries; kubectl finds the hook on PATH beside the plugin.
    let hook = std::path::PathBuf::from(env!("CARGO_BIN_EXE_kubectl_complete-kmm"));
    assert_eq!(hook.parent(), support::plugin_binary().parent());
    let ctx = Context::new();
    let run = ctx
        .kubectl(&["__complete", "kmm", "pre"])
        .await
        .expect_code(0);
    assert_eq!(
        run.stdout.lines().next().and_then(|l| l.split('\t').next()),
        Some("preflight"),
        "{}",
        run.stdout
    );
    let run = ctx
        .kubectl(&["__complete", "kmm", "check", "-o", ""])
        .await
        .expect_code(0);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        ["table", "wide", "json", "yaml", ":4"]
    );
    // Flags that take a file: the shell completes files (directive 0), also before the
    // subcommand, where kubectl users put connection flags.
    for words in [
        &["__complete", "kmm", "check", "-f", ""][..],
        &["__complete", "kmm", "--kubeconfig", ""][..],
        &["__complete", "kmm", "preflight", "--registry-ca", ""][..],
    ] {
        let run = ctx.kubectl(words).await.expect_code(0);
        assert_eq!(run.stdout.trim(), ":0", "{words:?}");
    }
}
