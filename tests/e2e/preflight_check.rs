//! `preflight` with the client check: KMM's word and the check's together, every kernel the
//! Modules' nodes boot, early failures, Modules edited while followed.

use crate::support;

use serde_json::json;
use support::apiserver::Kmm;
use support::cluster::{OLD_KERNEL as OLD, TestCluster, VERSION, module_spec, resolved};
use support::fixtures::{KERNEL_10, push_release, push_two_stream_release};
use support::images::{self, Flavor, Image, Pusher};
use support::kmod::{Ko, Tree, base_layer};

/// The Module whose image exists but holds the old kernel's modules: KMM ≥ 2.4 passes it (it
/// only pulls the image), the plugin fails it; KMM ≤ 2.3 finds it out too, and retries forever,
/// which the plugin does not wait for.
#[tokio::test(flavor = "multi_thread")]
async fn what_kmm_passes_but_a_node_would_not_load_fails_in_every_era() {
    for kmm in [Kmm::Ocp24, Kmm::Ocp23, Kmm::Ocp20] {
        let c = TestCluster::start(kmm).await;
        let kernel = c.kernel().to_string();
        c.module("gpu-operator", "nvidia-gpu", true, false).await;
        c.push_vendor_image("stale", &kernel, OLD).await;
        c.api
            .add_module("nic", "stale", module_spec(&c.vendor_image("stale"), false));
        let run = c.preflight(&["--timeout", "5m", "-o", "json"]).await;
        let run = run.expect_code(1);
        let json = run.json();
        assert_eq!(json["result"], "Failure", "{kmm:?}");
        let stale = json["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "stale")
            .unwrap()
            .clone();
        assert_eq!(stale["result"], "Failed", "{kmm:?}: {stale:#}");
        assert_eq!(stale["check"]["verdict"], "Failed");
        let reason = stale["reason"].as_str().unwrap();
        if kmm == Kmm::Ocp24 {
            assert_eq!(
                stale["verificationStatus"], "Success",
                "KMM's word stays KMM's"
            );
            assert!(
                reason.starts_with(&format!(
                    "KMM's preflight passed it, but no /opt/lib/modules/{kernel}/ in "
                )) && reason.ends_with(&format!(
                    "; the image has modules for {OLD}: the node would not load it"
                )),
                "{reason}"
            );
        } else {
            assert_eq!(stale["verificationStatus"], "False");
            assert!(
                reason.ends_with(
                    "does not contain kernel module for kernel \
                     5.14.0-570.19.0.el9_6.x86_64 on any layer)"
                ) || reason.contains("(KMM: image"),
                "{kmm:?}: {reason}"
            );
        }
        let gpu = &json["modules"][0];
        assert_eq!(gpu["name"], "nvidia-gpu");
        assert_eq!(gpu["result"], "Verified", "{kmm:?}");

        // KMM's side alone, on 2.4: it passes.
        if kmm == Kmm::Ocp24 {
            c.preflight(&["--replace", "--no-client-check", "-o", "json"])
                .await
                .expect_code(0);
        }
    }
}

/// A missing image with a build section: KMM builds it, the check says it will: verified.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_with_a_build_is_verified_when_kmm_built_it() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("nic", "mlx5", false, true).await;
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "kmod-dockerfile", "namespace": "nic"}, "data": {"dockerfile": "FROM x"}}),
    );
    let run = c.preflight(&[]).await.expect_code(0);
    assert!(
        run.stdout
            .contains("nic/mlx5 Success (Done), check WillBuild: verified image exists"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("All 1 Modules verified for 5.14.0-570.19.0.el9_6.x86_64: KMM's preflight passed them and their images hold what the nodes will load."),
        "{}",
        run.stdout
    );
}

/// Real-time nodes boot the RT kernel. An RT-only Module is checked against it; KMM's object
/// carries the kernel most nodes boot, so KMM's "mapping not found" for it does not fail it.
#[tokio::test(flavor = "multi_thread")]
async fn an_rt_only_module_on_rt_nodes_is_decided_by_the_check() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.api.add_node("worker-1", "amd64");
    c.api.add_node_with(
        "rt-0",
        "amd64",
        &format!("{OLD}+rt"),
        &[("feature.node.kubernetes.io/rt", "true")],
    );
    let kernel = c.kernel().to_string();
    let rt = format!("{kernel}+rt");
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.push_vendor_image("rtmod", &rt, &rt).await;
    let mut spec = module_spec(&c.vendor_image("rtmod"), false);
    spec["selector"] = json!({"feature.node.kubernetes.io/rt": "true"});
    spec["moduleLoader"]["container"]["kernelMappings"] =
        json!([{"regexp": "\\+rt$", "containerImage": c.vendor_image("rtmod")}]);
    c.api.add_module("edge", "rtmod", spec);

    let run = c.preflight(&["-o", "json"]).await.expect_code(0);
    let json = run.json();
    assert_eq!(
        json["kernelVersion"], kernel,
        "two standard nodes, one RT: the standard kernel"
    );
    let rtmod = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "rtmod")
        .unwrap()
        .clone();
    assert_eq!(rtmod["verificationStatus"], "Failure");
    assert_eq!(rtmod["statusReason"], "mapping not found");
    assert_eq!(rtmod["result"], "Verified", "{rtmod:#}");
    assert_eq!(rtmod["check"]["kernel"], rt.as_str());
    assert!(
        rtmod["reason"].as_str().unwrap().ends_with(&format!(
            "(on {rt}, which KMM's preflight object does not check)"
        )),
        "{rtmod:#}"
    );
    // Every node of the Modules real-time: the object carries the RT kernel.
    c.api.delete_node("worker-0");
    c.api.delete_node("worker-1");
    let run = c
        .preflight(&["--replace", "-o", "json"])
        .await
        .expect_code(0);
    let json = run.json();
    assert_eq!(json["kernelVersion"], rt.as_str(), "{}", run.stderr);
    assert_eq!(json["name"], "preflight-4-19-0-rt");
}

/// aarch64 64k-page nodes boot `<kernel>+64k`; a RHEL CoreOS 10 node boots the payload's
/// driver-toolkit-10 kernel. Both are checked; KMM's object carries the standard kernel.
#[tokio::test(flavor = "multi_thread")]
async fn a_64k_node_and_a_rhel_10_node() {
    // 64k: an arm64 cluster.
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.api.delete_node("worker-0");
    c.api.add_node("arm-0", "arm64");
    c.api.add_node("arm-1", "arm64");
    c.api
        .add_node_with("arm-64k", "arm64", "5.14.0-427.50.1.el9_4.aarch64+64k", &[]);
    let pusher = Pusher::new(&c.registry);
    let arm = push_release(&pusher, &c.registry.addr, VERSION, "arm64").await;
    let k64 = format!("{}+64k", arm.kernel);
    let arm_image = |kernel: &str| {
        let mut tree = Tree::new();
        tree.module("/opt", kernel, &Ko::new("kmod"))
            .depmod("/opt", kernel);
        Image {
            flavor: Flavor::Docker,
            goarch: "arm64",
            layers: [base_layer(), tree.layer()]
                .into_iter()
                .map(|t| images::layer(t, images::Compression::Gzip, Flavor::Docker))
                .collect(),
        }
    };
    for kernel in [arm.kernel.clone(), k64.clone()] {
        let image = resolved(&c.vendor_image("armmod"), &kernel);
        let tag = image.rsplit_once(':').map(|(_, t)| t.to_string()).unwrap();
        pusher
            .push_image("vendor/armmod", Some(&tag), &arm_image(&kernel))
            .await;
        c.operator().configure(|o| {
            o.images.insert(image.clone());
        });
    }
    c.api.add_module(
        "nic",
        "armmod",
        module_spec(&c.vendor_image("armmod"), false),
    );
    let run = c.preflight(&["-o", "json"]).await.expect_code(0);
    let json = run.json();
    assert_eq!(json["kernelVersion"], arm.kernel.as_str());
    assert_eq!(json["modules"][0]["result"], "Verified", "{json:#}");

    // RHEL 10: a two-stream payload, a node on CoreOS 10 for one Module.
    let c = TestCluster::start(Kmm::Ocp24).await;
    let two = push_two_stream_release(&Pusher::new(&c.registry), &c.registry.addr, "5.0.0").await;
    c.api.add_node_with(
        "rhel10-0",
        "amd64",
        "6.12.0-40.el10.x86_64",
        &[("os", "10")],
    );
    c.push_vendor_image("tenmod", KERNEL_10, KERNEL_10).await;
    let mut spec = module_spec(&c.vendor_image("tenmod"), false);
    spec["selector"] = json!({"os": "10"});
    c.api.add_module("nic", "tenmod", spec);
    c.push_vendor_image("ninemod", &two.kernel, &two.kernel)
        .await;
    let mut nine = module_spec(&c.vendor_image("ninemod"), false);
    nine["selector"] =
        json!({"node-role.kubernetes.io/worker": "", "kubernetes.io/hostname": "none"});
    c.api.add_module("nic", "ninemod", nine);
    let run = c
        .plugin(&["preflight", "--release", "5.0.0", "-o", "json"])
        .await
        .expect_code(0);
    let json = run.json();
    let tenmod = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tenmod")
        .unwrap()
        .clone();
    assert_eq!(
        json["kernelVersion"], KERNEL_10,
        "the only selected node is RHEL 10"
    );
    assert_eq!(tenmod["check"]["kernel"], KERNEL_10);
    assert_eq!(tenmod["result"], "Verified", "{tenmod:#}");
    // A Module that selects no node: the standard kernel, and it says so.
    let ninemod = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ninemod")
        .unwrap()
        .clone();
    assert!(
        ninemod["check"]["reason"].as_str().unwrap().ends_with(
            "(no linux/amd64 node matches its selector: checked against the standard kernel)"
        ),
        "{ninemod:#}"
    );
    assert_eq!(ninemod["result"], "Verified", "{ninemod:#}");
}

/// A Module registry this machine cannot reach: KMM's verdict stands, and the output says why
/// the client check could not run.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_module_registry_leaves_kmms_verdict() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let closed = support::free_port();
    let image = format!("127.0.0.1:{closed}/vendor/far:v1");
    c.operator().configure(|o| {
        o.images.insert(image.clone());
    });
    c.api.add_module("nic", "far", module_spec(&image, false));
    let run = c.preflight(&["-o", "json"]).await.expect_code(0);
    let far = &run.json()["modules"][0];
    assert_eq!(far["result"], "Verified");
    assert_eq!(far["check"]["verdict"], "Unknown");
    assert!(
        far["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("verified image exists (the client check could not run: registry 127.0.0.1:{closed} is unreachable")),
        "{far:#}"
    );
}

/// A Module edited while followed is checked again: here its image is fixed, and the run ends
/// verified once KMM agrees. (A failed check is final at once, so a second Module, waiting for
/// KMM, keeps the run going while the first is edited.)
#[tokio::test(flavor = "multi_thread")]
async fn a_module_edited_while_followed_is_checked_again() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let c = TestCluster::start(Kmm::Ocp24).await;
    let kernel = c.kernel().to_string();
    c.push_vendor_image("stale", &kernel, OLD).await;
    c.push_vendor_image("fixed", &kernel, &kernel).await;
    c.api
        .add_module("nic", "mlx5", module_spec(&c.vendor_image("stale"), false));
    c.api.add_module(
        "gpu",
        "keeper",
        module_spec(&c.vendor_image("fixed"), false),
    );
    // KMM holds back until the edit has been checked.
    c.operator().pause();
    let mut child = c.ctx.spawn(&c.preflight_args(&["--timeout", "5m"]));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Each step waits for the line the plugin prints when it gets there.
    let mut until = async |needle: &str, seen: &mut Vec<String>| {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.contains(needle) {
                return;
            }
        }
        panic!("the plugin ended before {needle:?}:\n{}", seen.join("\n"));
    };
    until("nic/mlx5 (waiting), check Failed", &mut seen).await;
    c.api
        .update_module("nic", "mlx5", module_spec(&c.vendor_image("fixed"), false));
    until("check Ready", &mut seen).await;
    c.operator().resume();
    until("nic/mlx5 Success (Done), check Ready", &mut seen).await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    assert!(
        seen.iter()
            .any(|l| l.contains("(the Module changed: checking it again)")),
        "{}",
        seen.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_table_has_a_check_column() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let run = c.ctx.run_in_terminal(&c.preflight_args(&[]), "").await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("NAMESPACE     MODULE      STATUS   CHECK  ELAPSED  REASON"),
        "{}",
        run.stdout
    );
    // -o wide: KMM's stage, and the kernel and image the client check read.
    let run = c
        .ctx
        .run_in_terminal(
            &c.preflight_args(&["-o", "wide", "--name", "wide", "--replace"]),
            "",
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let shown = support::without_escapes(&run.stdout);
    let header = shown
        .lines()
        .rev()
        .find(|l| l.contains("NAMESPACE"))
        .unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAMESPACE",
            "MODULE",
            "STATUS",
            "STAGE",
            "CHECK",
            "KERNEL",
            "IMAGE",
            "ELAPSED",
            "REASON"
        ],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&resolved(
            &format!(
                "{}/vendor/nvidia-gpu:${{KERNEL_FULL_VERSION}}",
                c.registry.addr
            ),
            c.kernel()
        )),
        "{}",
        run.stdout
    );
}
