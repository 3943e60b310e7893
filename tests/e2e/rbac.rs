//! `deploy/rbac.yaml` grants exactly what the plugin uses: the test API server enforces it for a
//! user who then runs every kind of request the plugin makes, and every rule must have served.

use crate::support;

use base64::Engine;
use serde_json::json;
use support::apiserver::{Kmm, Rbac};
use support::auth_file;
use support::cluster::{TestCluster, VERSION};

const RBAC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml");

/// Everything a run can touch, as `alice` restricted to `rbac`: a pull secret, an old preflight
/// to replace, a Module that never finishes (pull pods), status of every kind.
async fn run_everything(kmm: Kmm, rbac: &Rbac) -> Vec<support::apiserver::Recorded> {
    let c = TestCluster::start(kmm).await;
    c.api.enforce(rbac.clone());
    let secret = auth_file(&[("quay.io", "kmm", "x")]);
    c.api.put(
        "",
        "Secret",
        json!({"metadata": {"name": "pull-secret", "namespace": "openshift-config"},
               "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(secret)}}),
    );
    let old_kind = if kmm == Kmm::Upstream24 {
        "PreflightValidation"
    } else {
        "PreflightValidationOCP"
    };
    c.api.put(
        "kmm.sigs.x-k8s.io",
        old_kind,
        json!({"metadata": {"name": "old"}, "spec": {"kernelVersion": "5.14.0-1.el9.x86_64"}}),
    );
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", false, false).await;
    // For check: a missing image with a build section, and an imageRepoSecret.
    let mut lustre = support::cluster::module_spec(
        &format!("{}/vendor/lustre:${{KERNEL_FULL_VERSION}}", c.registry.addr),
        true,
    );
    lustre["imageRepoSecret"] = json!({"name": "vendor-pull"});
    c.api.add_module("storage", "lustre", lustre);
    c.api.add_registry_secret(
        "storage",
        "vendor-pull",
        &auth_file(&[(&c.registry.addr, "kmm", "x")]),
    );
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "kmod-dockerfile", "namespace": "storage"}, "data": {"Dockerfile": "FROM x"}}),
    );

    let args = [
        "preflight",
        "--release",
        VERSION,
        "--insecure-registry",
        &c.registry.addr,
        "--replace",
        // KMM's side (pull pods on a timeout); check below reads the Modules' objects.
        "--no-client-check",
        "--timeout",
        "3s",
        "-v",
        "--user",
        "alice",
    ];
    let run = c.ctx.run(&args).await.expect_code(3);
    assert!(
        run.stderr
            .contains("registry credentials: local auth files, then the cluster pull secret"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("pull pod: ImagePullBackOff"),
        "{}",
        run.stdout
    );
    let check = c
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "--user",
            "alice",
            "-v",
            "lustre",
        ])
        .await
        .expect_code(0);
    assert!(check.stdout.contains(" WillBuild "), "{}", check.stdout);
    c.ctx
        .run(&["status", "--user", "alice"])
        .await
        .expect_code(0);
    c.ctx
        .run(&["status", "preflight-4-19-0", "--user", "alice"])
        .await
        .expect_code(0);
    // A name that is no PreflightValidationOCP is looked up as a PreflightValidation too.
    c.ctx
        .run(&["status", "nope", "--user", "alice"])
        .await
        .expect_code(2);
    c.api
        .requests()
        .into_iter()
        .filter(|r| r.user == "alice" && !r.resource.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_role_grants_exactly_what_the_plugin_uses() {
    let rbac = Rbac::from_yaml("alice", &std::fs::read_to_string(RBAC).unwrap());
    let mut requests = run_everything(Kmm::Ocp24, &rbac).await;
    requests.extend(run_everything(Kmm::Upstream24, &rbac).await);
    assert_exact(&rbac, &requests, "deploy/rbac.yaml");
}

/// Nothing alice did was refused, and every verb of every rule served.
fn assert_exact(rbac: &Rbac, requests: &[support::apiserver::Recorded], file: &str) {
    for r in requests {
        assert!(
            rbac.allows(r).is_some(),
            "not granted by {file}: {} {} {}/{} {}",
            r.verb,
            r.group,
            r.resource,
            r.subresource,
            r.name
        );
    }
    // ...and nothing granted went unused: each verb on each resource of each rule served.
    for (namespace, rule) in &rbac.rules {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let used = requests.iter().any(|r| {
                    &r.resource == resource
                        && &r.verb == verb
                        && rule.api_groups.contains(&r.group)
                        && namespace.as_ref().is_none_or(|ns| *ns == r.namespace)
                });
                assert!(
                    used,
                    "{file} grants {verb} on {resource}, which the plugin never used"
                );
            }
        }
    }
}

const HUB_RBAC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac-hub.yaml");

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_role_grants_exactly_what_check_hub_uses() {
    use support::hub::{HUB_NAMESPACE, TARGET, TestHub};
    let rbac = Rbac::from_yaml("alice", &std::fs::read_to_string(HUB_RBAC).unwrap());
    let hub = TestHub::start().await;
    hub.api.enforce(rbac.clone());
    let secret = auth_file(&[("quay.io", "kmm", "x")]);
    hub.api.put(
        "",
        "Secret",
        json!({"metadata": {"name": "pull-secret", "namespace": "openshift-config"},
               "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(&secret)}}),
    );
    // A ManagedClusterModule with an imageRepoSecret, read in KMM-hub's namespace.
    let mut spec = support::cluster::module_spec(&hub.image("gpu"), false);
    spec["imageRepoSecret"] = json!({"name": "vendor-pull"});
    hub.mcm("gpu", &[("gpu", "true")], spec);
    hub.api.add_registry_secret(
        HUB_NAMESPACE,
        "vendor-pull",
        &auth_file(&[(&hub.registry.addr, "kmm", "x")]),
    );
    hub.offers("sno-east", &[TARGET]);
    hub.cgu("upgrade", &["sno-east"], json!([]), TARGET);
    let as_alice = |extra: &[&'static str]| {
        let mut args = vec!["check", "--hub", "--user", "alice"];
        args.extend_from_slice(extra);
        args
    };
    hub.plugin(&as_alice(&["--release", TARGET]))
        .await
        .expect_code(4);
    hub.plugin(&as_alice(&["--updates"])).await.expect_code(4);
    hub.plugin(&as_alice(&["--cgu", "ztp/upgrade"]))
        .await
        .expect_code(0);
    let requests: Vec<_> = hub
        .api
        .requests()
        .into_iter()
        .filter(|r| r.user == "alice" && !r.resource.is_empty())
        .collect();
    assert_exact(&rbac, &requests, "deploy/rbac-hub.yaml");
}
