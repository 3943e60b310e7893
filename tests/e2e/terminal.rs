//! The plugin at a terminal (a pseudo-terminal from util-linux `script`): the live table,
//! colours and NO_COLOR, the question about existing preflights, and Ctrl-C.

use crate::support;

use serde_json::json;
use support::apiserver::Kmm;
use support::cluster::TestCluster;

const GROUP: &str = "kmm.sigs.x-k8s.io";
const GREEN: &str = "\u{1b}[32m";

fn args(c: &TestCluster) -> Vec<&str> {
    c.preflight_args(&[])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_table_redrawn_in_place_with_colour() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", true, false).await;
    let run = c.ctx.run_in_terminal(&args(&c), "").await.expect_code(0);
    let screen = &run.stdout;
    assert!(
        screen.contains(
            "PreflightValidationOCP preflight-4-19-0: kernel 5.14.0-570.19.0.el9_6.x86_64"
        ),
        "{screen}"
    );
    assert!(
        screen.contains("NAMESPACE     MODULE      STATUS"),
        "{screen}"
    );
    assert!(screen.contains("ELAPSED"), "{screen}");
    assert!(
        screen.contains("2 of 2 Modules: 2 verified, 0 failed, 0 in progress"),
        "{screen}"
    );
    assert!(screen.contains("All 2 Modules verified"), "{screen}");
    // Redrawn in place (cursor up over the table, lines erased), statuses coloured.
    assert!(screen.matches("NAMESPACE").count() >= 2, "{screen:?}");
    assert!(
        screen.contains("\u{1b}[5A") && screen.contains("\u{1b}[J"),
        "{screen:?}"
    );
    assert!(screen.contains(GREEN), "{screen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_color_and_the_no_color_flag() {
    let mut c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let mut flagged = args(&c);
    flagged.push("--no-color");
    let run = c.ctx.run_in_terminal(&flagged, "").await.expect_code(0);
    assert!(!run.stdout.contains(GREEN), "{:?}", run.stdout);
    assert!(run.stdout.contains("All 1 Modules verified"));

    c.ctx.env("NO_COLOR", "1");
    let mut again = args(&c);
    again.push("--replace");
    let run = c.ctx.run_in_terminal(&again, "").await.expect_code(0);
    assert!(!run.stdout.contains(GREEN), "{:?}", run.stdout);
    assert!(run.stdout.contains("NAMESPACE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn at_a_terminal_existing_preflights_are_asked_about() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.api.put(GROUP, "PreflightValidationOCP", json!({"metadata": {"name": "last-week"}, "spec": {"kernelVersion": "5.14.0-1.el9.x86_64"}}));

    let run = c.ctx.run_in_terminal(&args(&c), "n\n").await.expect_code(2);
    assert!(
        run.stdout
            .contains("other preflight objects exist: PreflightValidationOCP/last-week"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Delete them before creating the new one?"),
        "{}",
        run.stdout
    );
    assert!(c.pvo("last-week").is_some());

    let run = c.ctx.run_in_terminal(&args(&c), "y\n").await.expect_code(0);
    assert!(
        run.stdout.contains("All 1 Modules verified"),
        "{}",
        run.stdout
    );
    assert!(c.pvo("last-week").is_none());
    assert!(c.pvo("preflight-4-19-0").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_following_and_leaves_the_preflight() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("nic", "mlx5", false, false).await;
    // KMM's side only, which never finishes mlx5's missing image: Ctrl-C ends it.
    let mut argv = args(&c);
    argv.push("--no-client-check");
    let child = c.ctx.spawn(&argv);
    let pid = child.id().unwrap() as libc::pid_t;
    c.api
        .wait_until(|| !c.api.live_watches("preflightvalidationsocp").is_empty())
        .await;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("Stopped following; PreflightValidationOCP preflight-4-19-0 is left in the cluster. Resume with: kubectl kmm status preflight-4-19-0 -w"),
        "{stdout}"
    );
    assert!(c.pvo("preflight-4-19-0").is_some());
}
