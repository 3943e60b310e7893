//! The kernel the nodes will really boot: the release's node OS image, read beside the
//! driver-toolkit, in each form real payloads carry it; and what `check` and `preflight` make
//! of a release whose node OS and driver-toolkit disagree.

use crate::support;

use serde_json::{Value, json};
use support::Context;
use support::apiserver::Kmm;
use support::cluster::{TestCluster, module_spec};
use support::fixtures::{
    self, KERNEL_10, NodeOsForm, dtk_image, kernel_for, node_os_bulk, push_extensions,
    push_node_os, push_release_tagged, push_two_stream_release,
};
use support::images::{Compression, Flavor, Pusher};
use support::registry::TestRegistry;

const VERSION: &str = "4.19.0";

/// A 4.19.0 amd64 payload with a DTK for `kernel_for(VERSION)` and `tags` beside it.
async fn payload(registry: &TestRegistry, tags: &[(&str, &str)]) -> fixtures::ReleaseFixture {
    let pusher = Pusher::new(registry);
    let kernel = kernel_for(VERSION, "amd64");
    let dtk = dtk_image(&kernel, "amd64", Flavor::Docker, Compression::Gzip);
    let mut fixture = push_release_tagged(
        &pusher,
        &registry.addr,
        VERSION,
        &dtk,
        Some(&format!("{VERSION}-x86_64")),
        tags,
    )
    .await;
    fixture.kernel = kernel;
    fixture
}

/// `kubectl kmm dtk --release 4.19.0` against `registry`, as JSON, and the text form.
async fn dtk(registry: &TestRegistry) -> (support::Run, Value, String) {
    let ctx = Context::new();
    let repo = format!("{}/ocp/release", registry.addr);
    let args = [
        "dtk",
        "--release",
        VERSION,
        "--release-repo",
        &repo,
        "--insecure-registry",
        &registry.addr,
        "--no-cache",
    ];
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let json = ctx.run(&json_args).await.expect_code(0);
    let value = json.json();
    let text = ctx.run(&args).await.expect_code(0);
    (json, value, text.stdout)
}

fn bulk_was_read(registry: &TestRegistry) -> bool {
    let bulk = node_os_bulk().digest;
    registry
        .requests()
        .iter()
        .any(|r| r.starts_with("GET ") && r.ends_with(&format!("/blobs/{bulk}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kernel_label_agrees_in_one_line_from_one_manifest_and_one_config() {
    let registry = TestRegistry::plain();
    let kernel = kernel_for(VERSION, "amd64");
    let os = push_node_os(
        &Pusher::new(&registry),
        &kernel,
        "amd64",
        NodeOsForm::KernelLabel,
    )
    .await;
    payload(&registry, &[("rhel-coreos", &os.reference)]).await;
    let (run, json, text) = dtk(&registry).await;

    let node = &json["nodeOs"];
    assert_eq!(node["status"], "Agrees", "{node}");
    assert_eq!(node["tag"], "rhel-coreos");
    assert_eq!(node["image"], os.reference.as_str());
    assert_eq!(node["kernelVersion"], kernel.as_str());
    assert_eq!(node["rtKernelVersion"], format!("{kernel}+rt").as_str());
    assert_eq!(node["source"], "label com.coreos.rpm.kernel");
    assert_eq!(json["streams"][0]["nodeOs"], *node);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("Node kernel")).collect();
    assert_eq!(
        lines,
        [
            "Node kernel      the same: rhel-coreos carries the DTK's kernel and RT kernel (label com.coreos.rpm.kernel)"
        ],
        "{text}"
    );
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    assert!(!bulk_was_read(&registry), "the node OS's layers were read");
}

#[tokio::test(flavor = "multi_thread")]
async fn ostree_linux_true_says_nothing_and_meta_json_in_the_last_layer_does() {
    let registry = TestRegistry::plain();
    let kernel = kernel_for(VERSION, "amd64");
    let os = push_node_os(
        &Pusher::new(&registry),
        &kernel,
        "amd64",
        NodeOsForm::MetaJson,
    )
    .await;
    payload(&registry, &[("rhel-coreos", &os.reference)]).await;
    let (_, json, text) = dtk(&registry).await;
    let node = &json["nodeOs"];
    assert_eq!(node["status"], "Agrees", "{node}");
    assert_eq!(node["kernelVersion"], kernel.as_str());
    assert_eq!(node["rtKernelVersion"], format!("{kernel}+rt").as_str());
    assert_eq!(node["source"], "usr/share/openshift/base/meta.json");
    assert!(
        text.contains("(usr/share/openshift/base/meta.json)"),
        "{text}"
    );
    // Only the small metadata layer: never the gigabytes under it.
    assert!(
        !bulk_was_read(&registry),
        "the node OS's bulk layer was read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_os_content_of_old_releases_and_the_rt_kernel_from_extensions() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let kernel = kernel_for(VERSION, "amd64");
    // ≤ 4.11 payloads name the node OS machine-os-content, labelled like rhel-coreos.
    let mos = push_node_os(&pusher, &kernel, "amd64", NodeOsForm::KernelLabel).await;
    payload(&registry, &[("machine-os-content", &mos.reference)]).await;
    let (_, json, _) = dtk(&registry).await;
    assert_eq!(json["nodeOs"]["tag"], "machine-os-content");
    assert_eq!(json["nodeOs"]["status"], "Agrees");

    // The RT kernel in rhel-coreos-extensions' extensions.json, when the labels lack it.
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let os = push_node_os(&pusher, &kernel, "amd64", NodeOsForm::NoRtLabel).await;
    let newer = kernel.replace("570.19.0", "570.22.1");
    let ext = push_extensions(&pusher, &newer).await;
    payload(
        &registry,
        &[
            ("rhel-coreos", &os.reference),
            ("rhel-coreos-extensions", &ext.reference),
        ],
    )
    .await;
    let (run, json, text) = dtk(&registry).await;
    let node = &json["nodeOs"];
    assert_eq!(node["status"], "Differs", "{node}");
    assert_eq!(node["kernelVersion"], kernel.as_str());
    assert_eq!(node["rtKernelVersion"], format!("{newer}+rt").as_str());
    assert!(
        text.contains(&format!(
            "Node kernel      {newer}+rt DIFFERS from the DTK's"
        )),
        "{text}"
    );
    assert!(
        run.stderr
            .contains(&format!("boots {newer}+rt (the DTK has {kernel}+rt)")),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rhel_10_stream_has_its_own_node_os() {
    let registry = TestRegistry::plain();
    let two = push_two_stream_release(&Pusher::new(&registry), &registry.addr, "5.0.0").await;
    let ctx = Context::new();
    let run = ctx
        .run(&[
            "dtk",
            "--release",
            &two.release.reference,
            "--insecure-registry",
            &registry.addr,
            "-o",
            "json",
        ])
        .await
        .expect_code(0);
    let json = run.json();
    assert_eq!(json["streams"][0]["nodeOs"]["tag"], "rhel-coreos");
    assert_eq!(json["streams"][1]["nodeOs"]["tag"], "rhel-coreos-10");
    assert_eq!(json["streams"][1]["nodeOs"]["kernelVersion"], KERNEL_10);
    assert_eq!(json["streams"][1]["nodeOs"]["status"], "Agrees");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_os_that_cannot_be_read_is_a_warning_and_the_dtk_kernel_unconfirmed() {
    let registry = TestRegistry::plain();
    // Named by the payload, never mirrored.
    let missing = format!("{}/ocp/art-dev@sha256:{}", registry.addr, "7".repeat(64));
    let fixture = payload(&registry, &[("rhel-coreos", &missing)]).await;
    let (run, json, text) = dtk(&registry).await;
    assert_eq!(json["kernelVersion"], fixture.kernel.as_str());
    assert_eq!(json["nodeOs"]["status"], "Unconfirmed");
    assert!(
        json["nodeOs"]["reason"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{}",
        json["nodeOs"]
    );
    assert!(text.contains("Node kernel      unconfirmed"), "{text}");
    assert!(
        run.stderr.contains(&format!(
            "warning: the kernel the nodes will boot is unconfirmed, the node OS image {missing} could not be read"
        )),
        "{}",
        run.stderr
    );

    // A payload without a node OS tag at all says that.
    let registry = TestRegistry::plain();
    payload(&registry, &[]).await;
    let (run, json, _) = dtk(&registry).await;
    assert_eq!(json["nodeOs"]["status"], "Unconfirmed");
    assert!(
        run.stderr.contains(
            "the payload names no node OS image (rhel-coreos, rhel-coreos-8, machine-os-content)"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_checks_the_kernel_the_nodes_boot_when_the_dtk_disagrees() {
    let node_kernel = "5.14.0-570.21.0.el9_6.x86_64";
    let c = TestCluster::start_skewed(Kmm::Ocp24, node_kernel).await;
    let dtk_kernel = c.kernel().to_string();
    // Ready for the nodes' kernel, and one KMM would build: for the DTK's kernel.
    c.push_vendor_image("ready", node_kernel, node_kernel).await;
    c.api
        .add_module("gpu", "ready", module_spec(&c.vendor_image("ready"), false));
    c.api
        .add_module("gpu", "built", module_spec(&c.vendor_image("built"), true));
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "kmod-dockerfile", "namespace": "gpu"}, "data": {"dockerfile": "FROM x"}}),
    );

    let run = c
        .plugin(&["check", "--release", VERSION, "-o", "json"])
        .await
        .expect_code(1);
    let rows = run.json()["modules"].as_array().unwrap().clone();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    let ready = row("ready");
    assert_eq!(ready["kernel"], node_kernel);
    assert_eq!(ready["verdict"], "Ready");
    assert_eq!(ready["dtkKernel"], dtk_kernel.as_str());
    assert!(
        ready["reason"].as_str().unwrap().contains(&format!(
            "warning: the release's driver-toolkit has {dtk_kernel}"
        )),
        "{ready}"
    );
    let built = row("built");
    assert_eq!(built["verdict"], "Failed", "{built}");
    assert!(
        built["reason"].as_str().unwrap().starts_with(&format!(
            "KMM would build for {dtk_kernel} (the DTK's kernel) but the nodes will boot {node_kernel}"
        )),
        "{built}"
    );
    assert!(
        run.stderr
            .contains(&format!("boots {node_kernel} (the DTK has {dtk_kernel})")),
        "{}",
        run.stderr
    );

    // README shows this run (captures of world `nodeos`).
    support::docs::assert_world("nodeos", &c.ctx, &c.registry.addr).await;

    // preflight gives KMM the DTK's kernel, and says that is what KMM will check.
    let run = c.preflight(&["--no-wait"]).await;
    let pvo = c
        .api
        .list("kmm.sigs.x-k8s.io", "PreflightValidationOCP")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no preflight object: {}", run.stderr));
    assert_eq!(pvo["spec"]["kernelVersion"], dtk_kernel.as_str());
    assert!(
        run.stderr.contains(&format!(
            "the preflight object checks {dtk_kernel}, the driver-toolkit's kernel, as KMM expects: that is what KMM will check; the nodes will boot {node_kernel}"
        )),
        "{}",
        run.stderr
    );
}
