//! `kubectl kmm preflight` against the test API server, the simulated KMM operator and a real
//! registry: every era, every verdict, the flags that shape the object.

use crate::support;

use serde_json::{Value, json};
use support::apiserver::{Kmm, Recorded};
use support::cluster::{TestCluster, VERSION, module_spec};
use support::fixtures::push_release;
use support::images::{Flavor, Pusher};
use support::while_running;

const GROUP: &str = "kmm.sigs.x-k8s.io";

fn creates(c: &TestCluster) -> Vec<Recorded> {
    c.api
        .requests()
        .into_iter()
        .filter(|r| r.verb == "create" && r.group == GROUP)
        .collect()
}

/// A Module whose mapping never matches the release's kernel.
fn unmapped(c: &TestCluster, namespace: &str, name: &str) {
    let mut spec = module_spec("quay.io/vendor/old:${KERNEL_FULL_VERSION}", false);
    spec["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = json!("^4\\.18\\..*$");
    c.api.add_module(namespace, name, spec);
}

#[tokio::test(flavor = "multi_thread")]
async fn kmm_2_4_on_openshift_through_kubectl() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", true, false).await;
    let run = c
        .ctx
        .kubectl(&[
            "kmm",
            "preflight",
            "--release",
            VERSION,
            "--insecure-registry",
            &c.registry.addr,
            "-o",
            "json",
        ])
        .await
        .expect_code(0);
    let report = run.json();
    let keys = run.json_keys();
    assert_eq!(
        keys,
        [
            "apiVersion",
            "dtkImage",
            "kernelVersion",
            "kind",
            "modules",
            "name",
            "pushBuiltImage",
            "releaseImage",
            "result"
        ]
    );
    assert_eq!(report["apiVersion"], "kmm.sigs.x-k8s.io/v1beta2");
    assert_eq!(report["kind"], "PreflightValidationOCP");
    assert_eq!(report["name"], "preflight-4-19-0");
    assert_eq!(report["result"], "Success");
    assert_eq!(report["kernelVersion"], c.kernel());
    assert_eq!(report["releaseImage"], c.release.release.reference.as_str());
    // KMM's word as KMM said it, the client check's, and both together.
    let check = |name: &str| {
        json!({"verdict": "Ready", "reason": "kmod: extra/kmod.ko", "kernel": c.kernel(),
               "image": format!("{}/vendor/{name}:{}", c.registry.addr, c.kernel())})
    };
    assert_eq!(
        report["modules"],
        json!([
            {"namespace": "gpu-operator", "name": "nvidia-gpu", "verificationStatus": "Success", "verificationStage": "Done", "statusReason": "verified image exists",
             "result": "Verified", "reason": "verified image exists", "check": check("nvidia-gpu")},
            {"namespace": "nic", "name": "mlx5", "verificationStatus": "Success", "verificationStage": "Done", "statusReason": "verified image exists",
             "result": "Verified", "reason": "verified image exists", "check": check("mlx5")},
        ])
    );
    // What was created: exactly the era-C spec, through v1beta2.
    let created = creates(&c);
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].path,
        "/apis/kmm.sigs.x-k8s.io/v1beta2/preflightvalidationsocp"
    );
    let body = created[0].body.clone().unwrap();
    assert_eq!(
        body["spec"],
        json!({"kernelVersion": c.kernel(), "dtkImage": c.release.dtk.reference, "pushBuiltImage": false})
    );
    // The operator made its own PreflightValidation of the same name: the object is real.
    assert_eq!(
        c.pv("preflight-4-19-0").unwrap()["spec"]["kernelVersion"],
        c.kernel()
    );
    // Followed by watch, not by polling the object.
    let requests = c.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.verb == "watch" && r.resource == "preflightvalidationsocp")
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.verb == "get" && r.resource == "preflightvalidationsocp")
            .count()
            <= 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_module_exits_1_naming_it() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.operator().configure(|o| o.builds_succeed = false);
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("storage", "nvme-of", false, true).await;
    unmapped(&c, "nic", "mlx5");
    let run = c.preflight(&[]).await.expect_code(1);
    // Not a terminal: one line per change, no control characters.
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "nic/mlx5 Failure (Done), check Failed: mapping not found; the client check: no kernel mapping matches {}",
            c.kernel()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "gpu-operator/nvidia-gpu InProgress (Image), check Ready: verification is not finished yet"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("2 of 3 Modules failed verification for 5.14.0-570.19.0.el9_6.x86_64:"),
        "{}",
        run.stdout
    );
    // The client check proved nvme-of would not be built (its Dockerfile's ConfigMap is
    // missing): final at once, whatever KMM says later.
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("  storage/nvme-of: ")
                && l.contains("ConfigMap storage/kmod-dockerfile, does not exist")),
        "{}",
        run.stdout
    );
    let json = c
        .preflight(&["--replace", "-o", "json"])
        .await
        .expect_code(1)
        .json();
    assert_eq!(json["result"], "Failure");
}

/// KMM ≥ 2.4 never finishes a missing image without build or sign: the client check fails it at
/// once, well before --timeout; KMM's side alone times out and names the pull pod's reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_without_build_fails_at_once_or_times_out_without_the_check() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", false, false).await;
    let run = c.preflight(&["--timeout", "10m"]).await.expect_code(1);
    assert!(
        run.stdout.contains(&format!(
            "  nic/mlx5: image {}/vendor/mlx5:{} does not exist and the Module has no build or sign for this kernel: KMM 2.4+ would wait for it forever",
            c.registry.addr,
            c.kernel()
        )),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("Timed out"));

    let run = c
        .preflight(&["--replace", "--no-client-check", "--timeout", "3s"])
        .await
        .expect_code(3);
    assert!(
        run.stdout
            .contains("Timed out after 3s: 1 of 2 Modules are still in progress:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("nic/mlx5: InProgress (Image) verification is not finished yet"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "pull pod: ImagePullBackOff: Back-off pulling image \"{}/vendor/mlx5:{}\"",
            c.registry.addr,
            c.kernel()
        )),
        "{}",
        run.stdout
    );
    // Left in the cluster for a later look.
    assert!(c.pvo("preflight-4-19-0").is_some());
    let json = c
        .preflight(&[
            "--replace",
            "--no-client-check",
            "--timeout",
            "2s",
            "-o",
            "json",
        ])
        .await
        .expect_code(3)
        .json();
    assert_eq!(json["result"], "TimedOut");
    assert_eq!(json["modules"][1]["verificationStatus"], "InProgress");
}

#[tokio::test(flavor = "multi_thread")]
async fn kmm_2_3_gets_a_digest_pinned_release_image() {
    let c = TestCluster::start(Kmm::Ocp23).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let json = c.preflight(&["-o", "json"]).await.expect_code(0).json();
    assert_eq!(json["apiVersion"], "kmm.sigs.x-k8s.io/v1beta2");
    assert_eq!(json["modules"][0]["verificationStatus"], "True");
    let body = creates(&c)[0].body.clone().unwrap();
    assert_eq!(
        body["spec"],
        json!({"releaseImage": c.release.release.reference, "pushBuiltImage": false})
    );
    assert!(c.release.release.reference.contains("@sha256:"));

    // --rt: useRTKernel, and the operator checks the RT kernel's image.
    let rt_image = format!("quay.io/vendor/nvidia-gpu:{}_rt", c.kernel());
    c.operator().configure(|o| {
        o.images.insert(rt_image);
    });
    let json = c
        .preflight(&["--rt", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["name"], "preflight-4-19-0-rt");
    assert_eq!(json["kernelVersion"], format!("{}+rt", c.kernel()));
    let body = creates(&c)[1].body.clone().unwrap();
    assert_eq!(body["spec"]["useRTKernel"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn kmm_2_0_talks_v1beta1_and_never_calls_false_final() {
    let c = TestCluster::start(Kmm::Ocp20).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let json = c.preflight(&["-o", "json"]).await.expect_code(0).json();
    assert_eq!(json["apiVersion"], "kmm.sigs.x-k8s.io/v1beta1");
    assert_eq!(
        creates(&c)[0].path,
        "/apis/kmm.sigs.x-k8s.io/v1beta1/preflightvalidationsocp"
    );
    // The status is the v1beta1 map keyed by Module name.
    let pvo = c.pvo("preflight-4-19-0").unwrap();
    assert_eq!(
        pvo["status"]["crStatuses"]["nvidia-gpu"]["verificationStatus"],
        "True"
    );

    // False/Requeued is retried by KMM, so on KMM's side only the timeout ends it.
    c.module("nic", "mlx5", false, false).await;
    let run = c
        .preflight(&["--replace", "--no-client-check", "--timeout", "3s"])
        .await
        .expect_code(3);
    assert!(
        run.stdout.contains(&format!(
            "nic/mlx5: False (Requeued) image {}/vendor/mlx5:{} does not contain kernel module",
            c.registry.addr,
            c.kernel()
        )),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kmm_1_0_cannot_check_the_rt_kernel() {
    let c = TestCluster::start(Kmm::Ocp10).await;
    let run = c.preflight(&["--rt"]).await.expect_code(2);
    assert!(
        run.stderr.contains("cannot verify the real-time kernel"),
        "{}",
        run.stderr
    );
    assert!(creates(&c).is_empty());
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let body_spec = {
        c.preflight(&[]).await.expect_code(0);
        creates(&c)[0].body.clone().unwrap()["spec"].clone()
    };
    assert_eq!(
        body_spec,
        json!({"releaseImage": c.release.release.reference, "pushBuiltImage": false})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_openshift_a_preflightvalidation_gets_the_kernel() {
    let c = TestCluster::start(Kmm::Upstream24).await;
    c.module("drivers", "kmod-a", true, false).await;
    let json = c.preflight(&["-o", "json"]).await.expect_code(0).json();
    assert_eq!(json["kind"], "PreflightValidation");
    let body = creates(&c)[0].body.clone().unwrap();
    assert_eq!(
        body["spec"],
        json!({"kernelVersion": c.kernel(), "pushBuiltImage": false})
    );

    // --kernel needs no registry at all.
    let run = c
        .ctx
        .run(&[
            "preflight",
            "--kernel",
            c.kernel(),
            "--name",
            "by-kernel",
            "-o",
            "json",
        ])
        .await
        .expect_code(2);
    assert!(
        run.stderr
            .contains("other preflight objects exist: PreflightValidation/preflight-4-19-0"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kernel_and_dtk_image_without_a_release() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let kernel = "5.14.0-611.5.1.el9_7.x86_64";
    c.operator().configure(|o| {
        o.images
            .insert(format!("quay.io/vendor/nvidia-gpu:{kernel}"));
    });
    c.api.add_module(
        "gpu-operator",
        "nvidia-gpu",
        module_spec("quay.io/vendor/nvidia-gpu:${KERNEL_FULL_VERSION}", false),
    );
    let json = c
        .ctx
        .run(&[
            "preflight",
            "--kernel",
            kernel,
            "--dtk-image",
            "quay.io/example/dtk@sha256:1212121212121212121212121212121212121212121212121212121212121212",
            "--push-built-image",
            "-o",
            "json",
        ])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["name"], "preflight-5-14-0-611-5-1-el9-7-x86-64");
    assert_eq!(json["releaseImage"], Value::Null);
    let body = creates(&c)[0].body.clone().unwrap();
    assert_eq!(
        body["spec"],
        json!({"kernelVersion": kernel, "dtkImage": "quay.io/example/dtk@sha256:1212121212121212121212121212121212121212121212121212121212121212", "pushBuiltImage": true})
    );

    // On KMM 2.3 the OpenShift object needs a release: a PreflightValidation instead, said so.
    let old = TestCluster::start(Kmm::Ocp23).await;
    let run = old
        .ctx
        .run(&["preflight", "--kernel", kernel, "--no-wait"])
        .await
        .expect_code(0);
    assert!(
        run.stderr
            .contains("creating a PreflightValidation for the kernel instead"),
        "{}",
        run.stderr
    );
    assert_eq!(
        creates(&old)[0].path,
        "/apis/kmm.sigs.x-k8s.io/v1beta2/preflightvalidations"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_before_anything_is_created() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let r = c.registry.addr.clone();
    for (args, needle) in [
        (
            vec!["preflight", "--kernel", "tesdt"],
            "invalid kernel version \"tesdt\"",
        ),
        (
            vec!["preflight", "--kernel", "5.14"],
            "at least three parts",
        ),
        (vec!["preflight", "--kernel", ""], "it is empty"),
        (
            vec!["preflight", "--release", "4.19", "--insecure-registry", &r],
            "invalid release \"4.19\"",
        ),
        (
            vec!["preflight", "--release", VERSION, "--name", "Bad_Name"],
            "invalid --name \"Bad_Name\"",
        ),
        (
            vec!["preflight", "--release", VERSION, "--timeout", "soon"],
            "invalid value 'soon' for '--timeout <DURATION>'",
        ),
        (
            vec!["preflight", "--release", VERSION, "--request-timeout", "x"],
            "invalid value 'x' for '--request-timeout <DURATION>'",
        ),
        (
            vec!["preflight", "--release", VERSION, "--dry-run=later"],
            "invalid value 'later' for '--dry-run",
        ),
        (
            vec!["preflight", "--release", VERSION, "--output", "tabular"],
            "invalid value 'tabular'",
        ),
        (
            vec!["preflight", "--release", VERSION, "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        (
            vec![
                "preflight",
                "--release",
                VERSION,
                "--kernel",
                "5.14.0-1.el9.x86_64",
            ],
            "cannot be used with",
        ),
        (
            vec!["preflight", "--kernel", "5.14.0-1.el9.x86_64", "--rt"],
            "'--kernel <KVER>' cannot be used with '--rt'",
        ),
        (
            vec![
                "preflight",
                "--release",
                VERSION,
                "--dtk-image",
                "quay.io/x/dtk:1",
            ],
            "'--release <VERSION|PULLSPEC>' cannot be used with '--dtk-image <IMG>'",
        ),
        (
            vec![
                "preflight",
                "--kernel",
                "5.14.0-1.el9.x86_64",
                "--dtk-image",
                "x",
            ],
            "not an image reference",
        ),
        (
            vec![
                "preflight",
                "--release",
                VERSION,
                "--dry-run=client",
                "-o",
                "wide",
            ],
            "--dry-run prints the object, which has no wide form",
        ),
        (vec!["preflight"], "--release <VERSION|PULLSPEC>"),
        (
            vec![
                "preflight",
                "--release",
                "4.99.0",
                "--insecure-registry",
                &r,
            ],
            "was not found in registry",
        ),
    ] {
        let run = c.ctx.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(needle),
            "{args:?}: expected {needle:?} in {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"));
    }
    // --arch asks for one architecture; a single-architecture payload of another is not it
    // (as dtk says too), whether named by pull spec or found in ClusterVersion.
    let single = c.release.release.reference.clone();
    for command in ["preflight", "check", "dtk"] {
        let run = c
            .ctx
            .run(&[
                command,
                "--release",
                &single,
                "--arch",
                "s390x",
                "--insecure-registry",
                &r,
            ])
            .await
            .expect_code(2);
        run.expect_stderr("is a single-architecture x86_64 release, not s390x");
    }
    assert!(creates(&c).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_object_and_changes_nothing() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let run = c.preflight(&["--dry-run=client"]).await.expect_code(0);
    let object: Value = serde_yaml_ng::from_str(&run.stdout).unwrap();
    assert_eq!(object["apiVersion"], "kmm.sigs.x-k8s.io/v1beta2");
    assert_eq!(object["kind"], "PreflightValidationOCP");
    assert_eq!(object["metadata"]["name"], "preflight-4-19-0");
    assert_eq!(object["spec"]["kernelVersion"], c.kernel());
    assert_eq!(object["spec"]["dtkImage"], c.release.dtk.reference.as_str());
    let json = c
        .preflight(&["--dry-run=client", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json, object, "-o json is the same object");
    assert!(
        c.api
            .requests()
            .iter()
            .all(|r| matches!(r.verb.as_str(), "get" | "list")),
        "only reads"
    );
    assert!(c.pvo("preflight-4-19-0").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_wait_then_cleanup() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let json = c
        .preflight(&["--no-wait", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["result"], "Created");
    // KMM has said nothing yet; the client check has.
    assert_eq!(json["modules"][0]["verificationStatus"], Value::Null);
    assert_eq!(json["modules"][0]["result"], "Pending");
    assert_eq!(json["modules"][0]["check"]["verdict"], "Ready");
    assert!(c.pvo("preflight-4-19-0").is_some());
    assert!(!c.api.requests().iter().any(|r| r.verb == "watch"));
    // Again: the object of the same spec is there, and is not said to be created.
    let run = c.preflight(&["--no-wait"]).await.expect_code(0);
    run.expect_stdout(&format!(
        "PreflightValidationOCP preflight-4-19-0 was already there with the same spec for kernel {}.",
        c.kernel()
    ));
    assert!(!run.stdout.contains("created"), "{}", run.stdout);
    let json = c
        .preflight(&["--no-wait", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["result"], "Following");
    // A Module the client check already failed: exit 1, and which one and why.
    c.module("edge", "can-bus", false, false).await;
    let run = c.preflight(&["--no-wait"]).await.expect_code(1);
    run.expect_stdout("1 of 2 Modules failed verification for ")
        .expect_stdout("  edge/can-bus: image ");
    let run = c
        .preflight(&["--no-wait", "-o", "json"])
        .await
        .expect_code(1);
    run.expect_stderr("edge/can-bus: image ");
    c.api.delete_module("edge", "can-bus");

    let run = c
        .preflight(&["--replace", "--cleanup"])
        .await
        .expect_code(0);
    assert!(
        run.stdout.contains("All 1 Modules verified"),
        "{}",
        run.stdout
    );
    assert!(
        c.pvo("preflight-4-19-0").is_none(),
        "--cleanup deletes the object once complete"
    );
    assert!(
        c.pv("preflight-4-19-0").is_none(),
        "and KMM's own PreflightValidation goes with it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_preflights_are_never_replaced_silently() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.api.put(
        GROUP,
        "PreflightValidationOCP",
        json!({"metadata": {"name": "last-week", "finalizers": ["test.kmm/hold"]},
               "spec": {"kernelVersion": "5.14.0-1.el9.x86_64"}}),
    );
    let run = c.preflight(&[]).await.expect_code(2);
    assert!(
        run.stderr
            .contains("other preflight objects exist: PreflightValidationOCP/last-week"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--replace"), "{}", run.stderr);
    let run = c.preflight(&["--yes"]).await.expect_code(2);
    assert!(run.stderr.contains("PreflightValidationOCP/last-week"));
    assert!(creates(&c).is_empty());

    // --replace deletes, waits until the object is really gone (its finalizer holds it), creates.
    let run = while_running(c.preflight(&["--replace"]), async {
        c.api
            .wait_for_request(|r| r.verb == "delete" && r.name == "last-week")
            .await;
        c.api
            .wait_for_request(|r| {
                r.verb == "watch"
                    && r.param("fieldSelector").as_deref() == Some("metadata.name=last-week")
            })
            .await;
        assert!(
            creates(&c).is_empty(),
            "nothing is created while the old object is still there"
        );
        c.api
            .clear_finalizers(GROUP, "PreflightValidationOCP", "last-week");
    })
    .await;
    // What was deleted is said without -v.
    run.expect_code(0)
        .expect_stderr("note: deleted PreflightValidationOCP/last-week (--replace)");
    assert!(c.pvo("last-week").is_none());
    assert!(c.pvo("preflight-4-19-0").is_some());

    // Same name and another spec on KMM 2.3 (where other names do not conflict): exit 2
    // naming the difference and the way out.
    let old = TestCluster::start(Kmm::Ocp23).await;
    old.api.put(
        GROUP,
        "PreflightValidationOCP",
        json!({"metadata": {"name": "other"}, "spec": {"releaseImage": "x"}}),
    );
    old.module("gpu-operator", "nvidia-gpu", true, false).await;
    old.preflight(&[]).await.expect_code(0);
    let run = old.preflight(&["--push-built-image"]).await.expect_code(2);
    assert!(
        run.stderr.contains(
            "PreflightValidationOCP preflight-4-19-0 exists with another spec: \
             pushBuiltImage is false there, true here"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--replace"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("PreflightValidationOCP/other"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_architecture_comes_from_the_nodes() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let pusher = Pusher::new(&c.registry);
    let arm = push_release(&pusher, &c.registry.addr, VERSION, "arm64").await;
    // A mixed cluster reads the multi payload.
    pusher
        .push_index(
            "ocp/release",
            Some("4.19.0-multi"),
            Flavor::Oci,
            &[(&c.release.release, "amd64"), (&arm.release, "arm64")],
        )
        .await;
    c.api.add_node("worker-1", "arm64");
    c.api.add_node("worker-2", "arm64");
    let run = c
        .preflight(&["--dry-run=client", "-o", "json", "-v"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["spec"]["kernelVersion"], arm.kernel.as_str());
    assert!(
        run.stderr.contains(
            "nodes: 1 amd64, 2 arm64; using the multi payload (driver-toolkit for aarch64)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ocp/release:4.19.0-multi"),
        "{}",
        run.stderr
    );
    // --arch wins.
    let run = c
        .preflight(&["--dry-run=client", "-o", "json", "--arch", "x86_64"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["spec"]["kernelVersion"], c.kernel());
    run.expect_stderr(&format!(
        "release 4.19.0 (x86_64): {}",
        c.release.release.reference
    ));

    // An all-arm64 cluster reads the aarch64 payload.
    let arm_only = TestCluster::start(Kmm::Ocp24).await;
    let pusher = Pusher::new(&arm_only.registry);
    let arm = push_release(&pusher, &arm_only.registry.addr, VERSION, "arm64").await;
    arm_only.api.delete_node("worker-0");
    arm_only.api.add_node("arm-0", "arm64");
    let run = arm_only
        .preflight(&["--dry-run=client", "-o", "json"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["spec"]["kernelVersion"], arm.kernel.as_str());
    run.expect_stderr(&format!(
        "release 4.19.0 (aarch64): {}",
        arm.release.reference
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn following_survives_dropped_watches_and_expired_history() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", true, true).await;
    // Bookmarks carry the newest resourceVersion and would let the watch resume without a 410.
    c.api
        .set_bookmark_interval(std::time::Duration::from_secs(3600));
    let operator = c.operator();
    operator.pause();
    const PVO: &str = "preflightvalidationsocp";
    let watching_since = |serial: u64| c.api.live_watches(PVO).iter().any(|s| *s > serial);
    let run = while_running(c.preflight(&["-o", "json", "-v"]), async {
        c.api.wait_until(|| watching_since(0)).await;
        for _ in 0..2 {
            // History moves on and is forgotten, every watch is dropped: resuming gets 410
            // Expired, and the plugin must relist and watch again on its own.
            let serial = c.api.watch_serial();
            c.api.touch();
            c.api.compact();
            c.api.drop_watches();
            c.api.wait_until(|| watching_since(serial)).await;
        }
        operator.resume();
    })
    .await;
    let run = run.expect_code(0);
    assert_eq!(run.json()["result"], "Success");
    let count = |verb: &str| {
        c.api
            .requests()
            .iter()
            .filter(|r| r.verb == verb && r.resource == PVO)
            .count()
    };
    for r in c
        .api
        .requests()
        .iter()
        .filter(|r| r.resource == PVO && (r.verb == "watch" || r.verb == "list"))
    {
        eprintln!("REQ {} {}", r.verb, r.query);
    }
    eprintln!("STDERR {}", run.stderr);
    assert!(
        count("watch") >= 5,
        "watch, then a 410 resume and a new watch per drop: {}",
        count("watch")
    );
    assert!(
        count("list") >= 4,
        "one list for existing objects, the initial one, one per 410: {}",
        count("list")
    );
    assert!(run.stderr.contains("resuming"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_modules_is_said_plainly() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let run = c.preflight(&[]).await.expect_code(0);
    assert!(
        run.stdout.contains("no Modules in the cluster"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("No KMM Modules in the cluster: nothing to verify."),
        "{}",
        run.stdout
    );
    // A runbook tells it from "all verified" by the result.
    let run = c.preflight(&["-o", "json"]).await.expect_code(0);
    assert_eq!(run.json()["result"], "NoModules");
    assert_eq!(run.json()["modules"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_current_modules_count() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    // A device-plugin-only Module (no moduleLoader) and one being deleted are not checked.
    c.api.add_module(
        "dp",
        "device-plugin-only",
        json!({"selector": {}, "devicePlugin": {"container": {"image": "x"}}}),
    );
    let leaving = c.api.add_module(
        "old",
        "leaving",
        module_spec("quay.io/vendor/leaving:v1", false),
    );
    c.api.put(GROUP, "Module", {
        let mut m = leaving;
        m["metadata"]["deletionTimestamp"] = json!("2026-11-21T00:00:00Z");
        m["metadata"]["finalizers"] = json!(["kmm.node.kubernetes.io/module-finalizer"]);
        m
    });
    // A Module that would never finish is deleted while the preflight runs: its stale entry
    // (KMM 2.4 keeps it) must not hold the verdict back.
    c.module("nic", "mlx5", false, false).await;
    let run = while_running(c.preflight(&["-o", "json", "--timeout", "60s"]), async {
        c.api
            .wait_for_request(|r| r.verb == "watch" && r.resource == "modules")
            .await;
        c.api.delete_module("nic", "mlx5");
    })
    .await;
    let json = run.expect_code(0).json();
    let names: Vec<&str> = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nvidia-gpu"]);
    let status = &c.pvo("preflight-4-19-0").unwrap()["status"]["modules"];
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "mlx5"),
        "the stale entry is still there: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn name_and_push_built_image() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.preflight(&[
        "--name",
        "pre-upgrade.4-19",
        "--push-built-image",
        "--no-wait",
    ])
    .await
    .expect_code(0);
    let pvo = c.pvo("pre-upgrade.4-19").unwrap();
    assert_eq!(pvo["spec"]["pushBuiltImage"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn rt_kernel_yaml_and_no_timeout() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let rt_image = format!("quay.io/vendor/nvidia-gpu:{}_rt", c.kernel());
    c.operator().configure(|o| {
        o.images.insert(rt_image);
    });
    c.api.add_module(
        "gpu-operator",
        "nvidia-gpu",
        module_spec("quay.io/vendor/nvidia-gpu:${KERNEL_FULL_VERSION}", false),
    );
    let run = c
        .preflight(&["--rt", "--timeout", "0", "-o", "yaml"])
        .await
        .expect_code(0);
    let report: Value = serde_yaml_ng::from_str(&run.stdout).unwrap();
    assert_eq!(report["result"], "Success");
    assert_eq!(report["name"], "preflight-4-19-0-rt");
    assert_eq!(report["kernelVersion"], format!("{}+rt", c.kernel()));
    assert_eq!(
        creates(&c)[0].body.clone().unwrap()["spec"]["kernelVersion"],
        format!("{}+rt", c.kernel())
    );

    // An aarch64 DTK has no RT kernel.
    let pusher = Pusher::new(&c.registry);
    push_release(&pusher, &c.registry.addr, VERSION, "arm64").await;
    let run = c
        .preflight(&["--rt", "--arch", "aarch64", "--dry-run=client"])
        .await
        .expect_code(2);
    assert!(
        run.stderr
            .contains("release 4.19.0 has no real-time kernel for aarch64"),
        "{}",
        run.stderr
    );
}
