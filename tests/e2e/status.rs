//! `kubectl kmm status`: list preflights, show one, follow one.

use crate::support;

use serde_json::Value;
use support::apiserver::Kmm;
use support::cluster::{OLD_KERNEL, TestCluster, module_spec};

const NAME: &str = "preflight-4-19-0";

#[tokio::test(flavor = "multi_thread")]
async fn show_follow_and_list() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let run = c.ctx.run(&["status"]).await.expect_code(0);
    assert_eq!(run.stdout.trim(), "No preflights in the cluster.");

    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", false, false).await;
    c.operator().pause();
    // KMM's side only: the client check would call mlx5's missing image a failure at once.
    c.preflight(&["--no-wait", "--no-client-check"])
        .await
        .expect_code(0);

    // A snapshot of something unfinished is not an error.
    let json = c
        .ctx
        .run(&["status", NAME, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["result"], "InProgress");
    assert_eq!(json["kernelVersion"], c.kernel());
    assert_eq!(json["dtkImage"], c.release.dtk.reference.as_str());
    assert_eq!(
        json["modules"][0]["verificationStatus"],
        Value::Null,
        "no status yet"
    );

    c.operator().resume();
    // -w follows like preflight does, and ends like it: mlx5's image is missing, no build.
    let run = c
        .ctx
        .run(&["status", NAME, "-w", "--timeout", "2s"])
        .await
        .expect_code(3);
    assert!(
        run.stdout.contains("pull pod: ImagePullBackOff"),
        "{}",
        run.stdout
    );

    c.operator().configure(|o| {
        o.images
            .insert(format!("quay.io/vendor/mlx5:{}", c.kernel()));
    });
    c.api.delete_module("nic", "mlx5");
    c.module("nic", "mlx5", true, false).await;
    let json = c
        .ctx
        .run(&["status", NAME, "-w", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["result"], "Success");
    assert_eq!(json["modules"][1]["statusReason"], "verified image exists");

    let run = c.ctx.run(&["status", NAME]).await.expect_code(0);
    assert!(
        run.stdout.starts_with(&format!(
            "PreflightValidationOCP {NAME}: kernel {}",
            c.kernel()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("nic           mlx5        Success  verified image exists"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("2 of 2 Modules: 2 verified, 0 failed, 0 in progress (Success)"),
        "{}",
        run.stdout
    );

    // The list: the PreflightValidationOCP, not the PreflightValidation KMM made for it.
    let run = c.ctx.run(&["status"]).await.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with("KIND"), "{}", run.stdout);
    assert!(lines[2].starts_with("KMM's word only"), "{}", run.stdout);
    assert!(lines[1].contains(&format!("PreflightValidationOCP  {NAME}  kernel {}  2 verified, 0 failed, 0 in progress  Success", c.kernel())), "{}", run.stdout);
    let list = c.ctx.run(&["status", "-o", "yaml"]).await.expect_code(0);
    let list: Value = serde_yaml_ng::from_str(&list.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["name"], NAME);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_missing_names_and_old_eras() {
    let c = TestCluster::start(Kmm::Ocp20).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.preflight(&[]).await.expect_code(0);
    // KMM 2.0: the crStatuses map, keyed by name, read back through v1beta1.
    let json = c
        .ctx
        .run(&["status", NAME, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["apiVersion"], "kmm.sigs.x-k8s.io/v1beta1");
    assert_eq!(json["releaseImage"], c.release.release.reference.as_str());
    assert_eq!(json["modules"][0]["namespace"], "gpu-operator");
    assert_eq!(json["modules"][0]["verificationStatus"], "True");

    let run = c.ctx.run(&["status", "nope"]).await.expect_code(2);
    assert!(
        run.stderr.contains("no preflight object named nope"),
        "{}",
        run.stderr
    );
    // -w without a name follows every preflight (the one here is complete).
    let run = c.ctx.run(&["status", "-w"]).await.expect_code(0);
    assert!(
        run.stdout.contains("All 1 Modules verified"),
        "{}",
        run.stdout
    );

    let failing = TestCluster::start(Kmm::Ocp24).await;
    failing.operator().configure(|o| o.builds_succeed = false);
    failing.module("storage", "nvme-of", false, true).await;
    // The client check fails nvme-of at once (its build's ConfigMap is missing); KMM's own
    // word comes later, and `status -w` waits for it.
    failing.preflight(&[]).await.expect_code(1);
    let json = failing
        .ctx
        .run(&["status", NAME, "-w", "-o", "json"])
        .await
        .expect_code(1)
        .json();
    assert_eq!(json["result"], "Failure");
    let json = failing
        .ctx
        .run(&["status", NAME, "-o", "json"])
        .await
        .expect_code(1)
        .json();
    assert_eq!(json["result"], "Failure");
}

/// `status` shows KMM's word, and says so; `--check` adds the client check, which fails the
/// Module whose image holds only the old kernel's modules, where KMM 2.4 verified it.
#[tokio::test(flavor = "multi_thread")]
async fn kmm_s_word_only_unless_check() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let kernel = c.kernel().to_string();
    c.push_vendor_image("stale", &kernel, OLD_KERNEL).await;
    c.api.add_module(
        "storage",
        "nvme-of",
        module_spec(&c.vendor_image("stale"), false),
    );
    c.preflight(&["--no-client-check"]).await.expect_code(0);

    let run = c.ctx.run(&["status", NAME]).await.expect_code(0);
    run.expect_stdout("storage    nvme-of  Success")
        .expect_stdout("KMM's word only: KMM 2.4+ passes an image that holds no module");
    let run = c
        .ctx
        .run(&[
            "status",
            NAME,
            "--check",
            "--insecure-registry",
            &c.registry.addr,
        ])
        .await
        .expect_code(1);
    run.expect_stdout("Failed").expect_stdout(&format!(
        "KMM's preflight passed it, but no /opt/lib/modules/{kernel}/"
    ));
    assert!(!run.stdout.contains("KMM's word only"), "{}", run.stdout);
    let json = c
        .ctx
        .run(&[
            "status",
            NAME,
            "--check",
            "--insecure-registry",
            &c.registry.addr,
            "-o",
            "json",
        ])
        .await
        .expect_code(1)
        .json();
    assert_eq!(json["result"], "Failure");
    assert_eq!(json["modules"][0]["check"]["verdict"], "Failed");
    // The list, and following, with the check too.
    let run = c
        .ctx
        .run(&["status", "--check", "--insecure-registry", &c.registry.addr])
        .await
        .expect_code(1);
    run.expect_stdout("0 verified, 1 failed");
    c.ctx
        .run(&[
            "status",
            NAME,
            "-w",
            "--check",
            "--insecure-registry",
            &c.registry.addr,
        ])
        .await
        .expect_code(1)
        .expect_stdout("1 of 1 Modules failed verification");
}
