//! Several clusters in one run: `--context` repeated, `--contexts`, `--all-contexts`.

use serde_json::Value;

use crate::support::fleet::TestFleet;

const VERSION: &str = "4.19.0";

/// a: amd64, its Module fine; b: arm64, its Module's image missing (cannot load); c: nothing
/// listens; d: refuses to list Modules.
async fn mixed_fleet() -> TestFleet {
    let mut fleet = TestFleet::start(&[(VERSION, "amd64"), (VERSION, "arm64")]).await;
    fleet.cluster("a", "amd64").await;
    fleet.cluster("b", "arm64").await;
    fleet.unreachable("c");
    fleet
        .cluster("d", "amd64")
        .await
        .forbid("list", "kmm.sigs.x-k8s.io", "modules");
    let kernel = fleet.kernel(VERSION, "amd64");
    fleet.push_image("gpu", &kernel).await;
    fleet.module("a", "gpu-operator", "gpu", "gpu");
    fleet.module("b", "nic", "mlx5", "mlx5");
    fleet.module("d", "gpu-operator", "gpu", "gpu");
    fleet
}

#[tokio::test]
async fn one_table_one_exit_code_and_a_cluster_that_fails_never_stops_the_others() {
    let fleet = mixed_fleet().await;
    let run = fleet
        .plugin(&["check", "--release", VERSION, "--contexts", "a,b,c,d"])
        .await
        .expect_code(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("CLUSTER  NAMESPACE"), "{}", run.stdout);
    let row = |cluster: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{cluster} ")))
            .unwrap_or_else(|| panic!("no row for {cluster}:\n{}", run.stdout))
            .to_string()
    };
    assert!(
        row("a").contains(&fleet.kernel(VERSION, "amd64")),
        "{}",
        run.stdout
    );
    assert!(row("a").contains("Ready"), "{}", run.stdout);
    // b's nodes are arm64: its kernel is the arm64 driver-toolkit's.
    assert!(
        row("b").contains(&fleet.kernel(VERSION, "arm64")),
        "{}",
        run.stdout
    );
    assert!(row("b").contains("Failed"), "{}", run.stdout);
    assert!(row("c").contains("Unknown"), "{}", run.stdout);
    assert!(row("c").contains("not checked:"), "{}", run.stdout);
    assert!(row("d").contains("Unknown"), "{}", run.stdout);
    assert!(row("d").contains("forbidden"), "{}", run.stdout);
    assert!(
        run.stdout
            .trim_end()
            .ends_with("4 clusters: 1 Success, 1 Failure, 2 Unknown"),
        "{}",
        run.stdout
    );
    // Each cluster's trouble is said on stderr, with its name.
    run.expect_stderr("error: c: cannot reach the cluster")
        .expect_stderr("error: d: forbidden");

    let json = fleet
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "--contexts",
            "a,b,c,d",
            "-o",
            "json",
        ])
        .await
        .expect_code(1)
        .json();
    assert_eq!(json["result"], "Failure");
    assert_eq!(json["summary"]["clusters"], 4);
    assert_eq!(json["summary"]["unknown"], 2);
    let clusters = json["clusters"].as_array().unwrap();
    let contexts: Vec<&str> = clusters
        .iter()
        .map(|c| c["context"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["a", "b", "c", "d"]);
    assert_eq!(clusters[0]["server"], fleet.clusters["a"].url.as_str());
    assert_eq!(clusters[1]["result"], "Failure");
    assert!(clusters[2]["report"].is_null());
    assert!(
        clusters[2]["error"].as_str().unwrap().contains("127.0.0.1"),
        "{json}"
    );
    assert!(
        clusters[3]["error"].as_str().unwrap().contains("forbidden"),
        "{json}"
    );
    // Each entry's report is the single-cluster document of that cluster, unchanged.
    for (i, name) in ["a", "b"].iter().enumerate() {
        let alone = fleet
            .plugin(&[
                "check",
                "--release",
                VERSION,
                "--context",
                name,
                "-o",
                "json",
            ])
            .await
            .json();
        assert_eq!(clusters[i]["report"], alone, "{name}");
    }
}

#[tokio::test]
async fn every_image_is_read_once_for_the_whole_fleet() {
    let mut fleet = TestFleet::start(&[(VERSION, "amd64")]).await;
    let kernel = fleet.kernel(VERSION, "amd64");
    fleet.push_image("gpu", &kernel).await;
    fleet.push_image("nic", &kernel).await;
    let names: Vec<String> = (0..4).map(|i| format!("site-{i}")).collect();
    for name in &names {
        fleet.cluster(name, "amd64").await;
        fleet.module(name, "gpu-operator", "gpu", "gpu");
        fleet.module(name, "nic", "mlx5", "nic");
    }
    let before = fleet.registry.requests().len();
    fleet
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "--all-contexts",
            "--no-cache",
        ])
        .await
        .expect_code(0)
        .expect_stdout("4 clusters: 4 Success");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for request in &fleet.registry.requests()[before..] {
        if request.starts_with("GET /v2/") && request != "GET /v2/" {
            *seen.entry(request.clone()).or_default() += 1;
        }
    }
    for image in ["vendor/gpu", "vendor/nic", "ocp/release", "ocp/art-dev"] {
        assert!(
            seen.keys().any(|r| r.contains(image)),
            "{image} was not read: {seen:#?}"
        );
    }
    let repeated: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "read more than once for 4 clusters: {repeated:#?}"
    );
}

#[tokio::test]
async fn contexts_are_named_three_ways_and_a_wrong_name_is_bad_input() {
    let mut fleet = TestFleet::start(&[(VERSION, "amd64"), ("4.19.1", "amd64")]).await;
    fleet.cluster("east", "amd64").await;
    fleet.cluster("west", "amd64").await;
    for version in [VERSION, "4.19.1"] {
        fleet
            .push_image("gpu", &fleet.kernel(version, "amd64"))
            .await;
    }
    for name in ["east", "west"] {
        fleet.module(name, "gpu-operator", "gpu", "gpu");
    }
    // Each cluster is offered its own update: its own rows.
    fleet.offer("east", &[VERSION]);
    fleet.offer("west", &["4.19.1"]);
    let strip = |mut v: Value| {
        v["clusters"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .for_each(|c| c["report"]["releases"][0]["modules"][0]["reason"] = Value::Null);
        v
    };
    let repeated = fleet
        .plugin(&[
            "check",
            "--updates",
            "--context",
            "east",
            "--context",
            "west",
            "-o",
            "json",
        ])
        .await
        .expect_code(0)
        .json();
    let listed = fleet
        .plugin(&[
            "check",
            "--updates",
            "--contexts",
            "east,west",
            "-o",
            "json",
        ])
        .await
        .json();
    let all = fleet
        .plugin(&["check", "--updates", "--all-contexts", "-o", "json"])
        .await
        .json();
    assert_eq!(strip(repeated.clone()), strip(listed));
    assert_eq!(strip(repeated.clone()), strip(all));
    assert_eq!(
        repeated["clusters"][0]["report"]["releases"][0]["version"],
        VERSION
    );
    assert_eq!(
        repeated["clusters"][1]["report"]["releases"][0]["version"],
        "4.19.1"
    );
    let table = fleet
        .plugin(&["check", "--updates", "--contexts", "east,west"])
        .await
        .expect_code(0);
    table.expect_stdout("CLUSTER  VERSION");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("west") && l.contains("4.19.1")),
        "{}",
        table.stdout
    );

    let wrong = fleet
        .plugin(&["check", "--release", VERSION, "--contexts", "east,north"])
        .await
        .expect_code(2);
    wrong
        .expect_stderr("\"north\" is not in the kubeconfig")
        .expect_stderr("east, west");
    fleet
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "--all-contexts",
            "--context",
            "east",
        ])
        .await
        .expect_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_creates_every_clusters_object_and_follows_them_all_then_status_lists_them() {
    let mut fleet = TestFleet::start(&[(VERSION, "amd64")]).await;
    let kernel = fleet.kernel(VERSION, "amd64");
    fleet.cluster("a", "amd64").await;
    fleet.cluster("b", "amd64").await;
    fleet.unreachable("c");
    fleet.push_image("gpu", &kernel).await;
    fleet.module("a", "gpu-operator", "gpu", "gpu");
    fleet.module("b", "gpu-operator", "gpu", "gpu");
    // b also has a Module whose image is missing, without build: the client check fails it.
    fleet.module("b", "nic", "mlx5", "mlx5");
    let run = fleet
        .plugin(&[
            "preflight",
            "--release",
            VERSION,
            "--contexts",
            "a,b,c",
            "--timeout",
            "60s",
        ])
        .await
        .expect_code(1);
    // Each reachable cluster got KMM's own object.
    for name in ["a", "b"] {
        assert!(
            fleet.clusters[name]
                .get(
                    "kmm.sigs.x-k8s.io",
                    "PreflightValidationOCP",
                    "",
                    "preflight-4-19-0"
                )
                .is_some(),
            "no preflight on {name}"
        );
    }
    // The live view, without a terminal, says each row's cluster; then each cluster's verdict.
    run.expect_stdout("a: gpu-operator/gpu")
        .expect_stdout("b: nic/mlx5")
        .expect_stdout("a: All 1 Modules verified")
        .expect_stdout("c: not checked: cannot reach the cluster")
        .expect_stdout("3 clusters: 1 Success, 1 Failure, 1 Unknown");

    // status over the same contexts: KMM's word alone keeps b's missing image in progress
    // (KMM 2.4 waits forever), which a snapshot does not count as an error...
    let kmm_only = fleet
        .plugin(&["status", "--contexts", "a,b", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(kmm_only["result"], "InProgress");
    assert_eq!(kmm_only["summary"]["inProgress"], 1);
    // ...and with the client check, each cluster's preflights as they really stand.
    let status = fleet
        .plugin(&["status", "--contexts", "a,b", "--check", "-o", "json"])
        .await
        .expect_code(1)
        .json();
    assert_eq!(status["result"], "Failure");
    let items = &status["clusters"][0]["report"]["items"];
    assert_eq!(items[0]["name"], "preflight-4-19-0");
    assert_eq!(items[0]["result"], "Success");
    assert_eq!(
        status["clusters"][1]["report"]["items"][0]["result"],
        "Failure"
    );
    let table = fleet
        .plugin(&["status", "--contexts", "a,b", "--check"])
        .await
        .expect_code(1);
    assert!(
        table.stdout.starts_with("CLUSTER  KIND"),
        "{}",
        table.stdout
    );
    fleet
        .plugin(&["status", "--contexts", "a,b", "-w"])
        .await
        .expect_code(2);
}

/// README and docs/fleet.md show runs over `support::fleet::docs_world`: each is what the binary
/// prints.
#[tokio::test(flavor = "multi_thread")]
async fn every_fleet_capture_is_what_the_binary_prints() {
    let captures = crate::support::docs::of_world("fleet");
    assert!(!captures.is_empty(), "README shows a fleet");
    let mut replayed = Vec::new();
    for capture in captures {
        let world = crate::support::fleet::docs_world().await;
        let outputs =
            crate::support::docs::replay(&capture, &world.ctx, &world.registry.addr).await;
        replayed.push((capture, outputs));
    }
    let failures = crate::support::docs::differences(&replayed);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
