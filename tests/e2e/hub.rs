//! `check --hub`: ManagedClusterModules of a KMM-hub against the kernels each selected spoke
//! will boot, read from the hub alone; `--cgu` for TALM's ClusterGroupUpgrades.

use serde_json::json;

use crate::support::fixtures::kernel_for;
use crate::support::hub::{TARGET, TestHub};

fn rows<'a>(stdout: &'a str, cluster: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{cluster} ")))
        .collect()
}

#[tokio::test]
async fn every_managed_cluster_module_for_every_cluster_it_selects_from_the_hub_alone() {
    let hub = TestHub::start().await;
    let new = kernel_for(TARGET, "amd64");
    let run = hub
        .plugin(&["check", "--hub", "--release", TARGET])
        .await
        .expect_code(4);
    let out = &run.stdout;
    // sno-east runs the standard kernel: gpu is in place, nic is built by KMM-hub, late.
    let east = rows(out, "sno-east");
    assert_eq!(east.len(), 2, "{out}");
    assert!(
        east[0].contains("gpu") && east[0].contains(&new) && east[0].contains("Ready"),
        "{out}"
    );
    assert!(
        east[1].contains("nic") && east[1].contains("WillBuild"),
        "{out}"
    );
    assert!(
        east[1].contains("only once a node of sno-east runs this kernel"),
        "{out}"
    );
    // sno-west also runs the real-time kernel: the release's RT kernel is checked too.
    let west = rows(out, "sno-west");
    assert_eq!(west.len(), 4, "{out}");
    assert!(
        west.iter()
            .any(|r| r.contains(&format!("{new}+rt")) && r.contains("gpu")),
        "{out}"
    );
    // arm-edge is aarch64: the aarch64 driver-toolkit's kernel, and only nic selects it.
    let arm = rows(out, "arm-edge");
    assert_eq!(arm.len(), 1, "{out}");
    assert!(
        arm[0].contains(&kernel_for(TARGET, "arm64")) && arm[0].contains("nic"),
        "{out}"
    );
    // sno-lab has no KMM claim: Unknown, and why.
    let lab = rows(out, "sno-lab");
    assert!(
        lab[0].contains("Unknown") && lab[0].contains("managed mode"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("4 clusters: 3 Success, 1 Unknown"),
        "{out}"
    );
    // storage selects nothing: said, not silently skipped.
    run.expect_stderr("ManagedClusterModule storage selects no ManagedCluster");

    let json = hub
        .plugin(&["check", "--hub", "--release", TARGET, "-o", "json"])
        .await
        .json();
    assert_eq!(json["result"], "Unknown");
    assert!(json["notes"][0].as_str().unwrap().contains("storage"));
    let west = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["context"] == "sno-west")
        .unwrap();
    assert_eq!(west["report"]["kernels"], json!([new, format!("{new}+rt")]));
    assert_eq!(west["report"]["summary"]["willBuild"], 2);

    // Nothing but reads, and only on the hub (there is no spoke server at all).
    for request in hub.api.requests() {
        assert_eq!(request.method, "GET", "{request:?}");
    }
}

#[tokio::test]
async fn clusters_on_the_same_kernel_share_one_check_and_images_must_exist_fails_late_builds() {
    let hub = TestHub::start().await;
    let before = hub.registry.requests().len();
    hub.plugin(&["check", "--hub", "--release", TARGET, "gpu", "--no-cache"])
        .await
        .expect_code(4);
    // sno-east and sno-west boot the same standard kernel: its gpu image is read once.
    let tag = kernel_for(TARGET, "amd64");
    let reads = hub.registry.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("GET ") && r.ends_with(&format!("/vendor/gpu/manifests/{tag}")))
        .count();
    assert_eq!(reads, 1, "{:#?}", &hub.registry.requests()[before..]);

    let strict = hub
        .plugin(&["check", "--hub", "--release", TARGET, "--images-must-exist"])
        .await
        .expect_code(1);
    let east = rows(&strict.stdout, "sno-east");
    assert!(
        east[1].contains("Failed") && east[1].contains("--images-must-exist"),
        "{}",
        strict.stdout
    );
}

#[tokio::test]
async fn updates_are_what_acm_sees_offered_to_each_cluster() {
    let hub = TestHub::start().await;
    hub.offers("sno-east", &[TARGET, "4.19.1"]);
    let run = hub
        .plugin(&["check", "--hub", "--updates", "gpu", "-o", "json"])
        .await;
    let json = run.json();
    let clusters = json["clusters"].as_array().unwrap();
    let east = clusters
        .iter()
        .find(|c| c["context"] == "sno-east")
        .unwrap();
    let versions: Vec<&str> = east["report"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["4.19.1", TARGET]);
    let west = clusters
        .iter()
        .find(|c| c["context"] == "sno-west")
        .unwrap();
    assert_eq!(west["result"], "Unknown");
    assert!(
        west["error"]
            .as_str()
            .unwrap()
            .contains("no update offered"),
        "{west}"
    );
}

#[tokio::test]
async fn a_cgu_names_its_clusters_batches_and_release_and_lists_the_images_to_precache() {
    let hub = TestHub::start().await;
    hub.cgu(
        "upgrade-4-19",
        &["sno-east"],
        json!([{"matchLabels": {"group": "west"}}]),
        TARGET,
    );
    let run = hub
        .plugin(&["check", "--hub", "--cgu", "ztp/upgrade-4-19"])
        .await
        .expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("CLUSTER   BATCH  NAMESPACE"),
        "{}",
        run.stdout
    );
    // Exactly the CGU's clusters: spec.clusters first (batch 1), then what the selector adds.
    assert!(lines[1].starts_with("sno-east  1 "), "{}", run.stdout);
    assert!(
        rows(&run.stdout, "sno-west")
            .iter()
            .all(|r| r.starts_with("sno-west  2 ")),
        "{}",
        run.stdout
    );
    assert!(rows(&run.stdout, "arm-edge").is_empty() && rows(&run.stdout, "sno-lab").is_empty());
    run.expect_stderr(&format!("release {TARGET} (x86_64)"));

    // --release must agree with the policies.
    hub.plugin(&[
        "check",
        "--hub",
        "--cgu",
        "ztp/upgrade-4-19",
        "--release",
        "4.19.1",
    ])
    .await
    .expect_code(2)
    .expect_stderr("disagrees with ClusterGroupUpgrade ztp/upgrade-4-19");
    hub.plugin(&["check", "--hub", "--cgu", "ztp/nope"])
        .await
        .expect_code(2)
        .expect_stderr("no ClusterGroupUpgrade ztp/nope");

    // The images in place for the target kernels, one per line; the missing ones are said.
    let precache = hub
        .plugin(&[
            "check",
            "--hub",
            "--cgu",
            "ztp/upgrade-4-19",
            "--precache-images",
        ])
        .await
        .expect_code(0);
    let new = kernel_for(TARGET, "amd64");
    let images: Vec<&str> = precache.stdout.lines().collect();
    assert_eq!(
        images,
        [
            format!("{}/vendor/gpu:{new}", hub.registry.addr),
            format!("{}/vendor/gpu:{new}_rt", hub.registry.addr)
        ]
    );
    precache.expect_stderr("not listed for pre-caching");
}

#[tokio::test]
async fn a_context_that_is_no_kmm_hub_is_said_so() {
    // An ACM hub without KMM-hub.
    let hub = TestHub::with_crds(&[], &["managedclusters", "managedclusterinfos"]).await;
    hub.plugin(&["check", "--hub", "--release", TARGET])
        .await
        .expect_code(4)
        .expect_stderr("KMM-hub is not installed");
}

/// README and docs/fleet.md show runs against `TestHub::start`: each is what the binary prints.
#[tokio::test(flavor = "multi_thread")]
async fn every_hub_capture_is_what_the_binary_prints() {
    let captures = crate::support::docs::of_world("hub");
    assert!(!captures.is_empty(), "README shows a hub");
    let mut replayed = Vec::new();
    for capture in captures {
        let hub = TestHub::start().await;
        hub.cgu(
            "upgrade-4-19",
            &["sno-east"],
            json!([{"matchLabels": {"group": "west"}}]),
            TARGET,
        );
        let outputs = crate::support::docs::replay(&capture, &hub.ctx, &hub.registry.addr).await;
        replayed.push((capture, outputs));
    }
    let failures = crate::support::docs::differences(&replayed);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
