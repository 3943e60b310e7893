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
}
