//! Disconnected and pinned clusters: the release from ClusterVersion, image mirrors (IDMS, ITMS,
//! ICSP; from the cluster or from files), the cluster's pull secret for the mirror, proxies.

use crate::support;

use base64::Engine;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, Kmm};
use support::cluster::{VERSION, module_spec};
use support::fixtures::{Mirrored, push_mirrored_release};
use support::httpproxy::HttpProxy;
use support::images::Pusher;
use support::operator::{Operator, OperatorConfig};
use support::registry::TestRegistry;
use support::{Context, auth_file, free_port};

const USER: &str = "mirror-user";
const PASS: &str = "mirror-pass-7f3q";

/// A cluster whose release registry is unreachable; a TLS mirror with basic auth holds it all.
struct World {
    mirror: TestRegistry,
    api: ApiServer,
    _operator: Operator,
    ctx: Context,
    source: String,
    m: Mirrored,
}

fn idms(name: &str, entries: &[(&str, &[&str], bool)]) -> Value {
    json!({"metadata": {"name": name}, "spec": {"imageDigestMirrors": entries.iter().map(|(source, mirrors, never)| {
        let mut e = json!({"source": source, "mirrors": mirrors});
        if *never {
            e["mirrorSourcePolicy"] = json!("NeverContactSource");
        }
        e
    }).collect::<Vec<_>>()}})
}

fn cluster_version(updates: Value, conditional: Value) -> Value {
    json!({"metadata": {"name": "version"}, "spec": {"channel": "stable-4.19"},
           "status": {"desired": {"version": "4.18.15", "image": "quay.io/openshift-release-dev/ocp-release@sha256:".to_string() + &"a".repeat(64)},
                      "availableUpdates": updates, "conditionalUpdates": conditional,
                      "history": [{"version": "4.18.15", "state": "Completed", "image": "quay.io/openshift-release-dev/ocp-release@sha256:".to_string() + &"a".repeat(64)}]}})
}

fn pull_secret(api: &ApiServer, host: &str, password: &str) {
    let config = auth_file(&[(host, USER, password)]);
    api.put(
        "",
        "Secret",
        json!({"metadata": {"name": "pull-secret", "namespace": "openshift-config"},
               "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}}),
    );
}

impl World {
    async fn new() -> World {
        let source = format!("127.0.0.1:{}", free_port());
        let mirror = TestRegistry::secure(USER, PASS);
        let pusher = Pusher::new(&mirror);
        let m = push_mirrored_release(
            &pusher,
            &source,
            VERSION,
            "ocp4/ocp-release",
            "ocp4/art-dev",
        )
        .await;
        let api = ApiServer::start(Kmm::Ocp24).await;
        api.add_node("worker-0", "amd64");
        api.put(
            "config.openshift.io",
            "ClusterVersion",
            cluster_version(
                json!([{"version": VERSION, "image": m.release_logical}]),
                json!([]),
            ),
        );
        api.put(
            "config.openshift.io",
            "ImageDigestMirrorSet",
            idms(
                "release",
                &[
                    (
                        &format!("{source}/openshift-release-dev/ocp-release"),
                        &[&format!("{}/ocp4/ocp-release", mirror.addr)],
                        false,
                    ),
                    (
                        &format!("{source}/openshift-release-dev/ocp-v4.0-art-dev"),
                        &[&format!("{}/ocp4/art-dev", mirror.addr)],
                        false,
                    ),
                ],
            ),
        );
        pull_secret(&api, &mirror.addr, PASS);
        let mut config = OperatorConfig::new(Kmm::Ocp24);
        config
            .images
            .insert(format!("quay.io/vendor/nvidia-gpu:{}", m.kernel));
        let operator = Operator::start(&api, config);
        api.add_module(
            "gpu-operator",
            "nvidia-gpu",
            module_spec("quay.io/vendor/nvidia-gpu:${KERNEL_FULL_VERSION}", false),
        );
        let mut ctx = Context::new();
        let kubeconfig = ctx.write(".kube/config", api.kubeconfig());
        ctx.env("KUBECONFIG", kubeconfig.display().to_string());
        ctx.env(
            "KMM_RELEASE_REPO",
            format!("{source}/openshift-release-dev/ocp-release"),
        );
        World {
            mirror,
            api,
            _operator: operator,
            ctx,
            source,
            m,
        }
    }

    fn ca(&self) -> String {
        self.mirror.ca_pem().unwrap().display().to_string()
    }

    async fn preflight(&self, extra: &[&str]) -> support::Run {
        let ca = self.ca();
        let mut args = vec!["preflight", "--release", VERSION, "--registry-ca", &ca];
        args.extend_from_slice(extra);
        self.ctx.run(&args).await
    }

    fn replace_idms(&self, object: Value) {
        for old in self.api.list("config.openshift.io", "ImageDigestMirrorSet") {
            let name = old["metadata"]["name"].as_str().unwrap().to_string();
            self.api
                .store
                .delete(
                    &self
                        .api
                        .store
                        .find_kind("config.openshift.io", "ImageDigestMirrorSet")
                        .unwrap(),
                    "",
                    &name,
                )
                .unwrap();
        }
        self.api
            .put("config.openshift.io", "ImageDigestMirrorSet", object);
    }

    /// Manifest requests the mirror registry logged for a repository path.
    fn mirror_manifest_requests(&self, repository: &str) -> usize {
        let needle = format!("/v2/{repository}/manifests/");
        self.mirror
            .log
            .lines()
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_mirror_is_reachable_and_the_preflight_completes() {
    let w = World::new().await;
    let ca = w.ca();
    let run = w
        .ctx
        .kubectl(&[
            "kmm",
            "preflight",
            "--release",
            VERSION,
            "--registry-ca",
            &ca,
            "-o",
            "json",
            "-v",
        ])
        .await
        .expect_code(0);
    let json = run.json();
    assert_eq!(json["result"], "Success");
    // What the cluster pulls: the pinned digest from ClusterVersion, the DTK as the payload names it.
    assert_eq!(json["releaseImage"], w.m.release_logical.as_str());
    assert_eq!(json["dtkImage"], w.m.dtk_logical.as_str());
    assert_eq!(json["kernelVersion"], w.m.kernel.as_str());
    // The digest used is always printed, without -v too.
    run.expect_stderr(&format!(
        "note: release {VERSION} (x86_64): {}",
        w.m.release_logical
    ));
    run.expect_stderr(&format!(
        "{VERSION}: {} (ClusterVersion availableUpdates)",
        w.m.release_logical
    ));
    // -v: which mirror answered, which credentials served it; never the credentials.
    run.expect_stderr(&format!(
        "answered by mirror {}/ocp4/ocp-release@{} (ImageDigestMirrorSet/release)",
        w.mirror.addr, w.m.release_digest
    ));
    run.expect_stderr(&format!("{}/ocp4/art-dev@", w.mirror.addr));
    run.expect_stderr(&format!("{}/ocp4/ocp-release: credentials from the cluster pull secret openshift-config/pull-secret", w.mirror.addr));
    assert!(!run.all_output().contains(PASS));
    // The object names the DTK as the nodes will pull it: through the cluster's own mirrors.
    let pvo = w
        .api
        .get(
            "kmm.sigs.x-k8s.io",
            "PreflightValidationOCP",
            "",
            "preflight-4-19-0",
        )
        .unwrap();
    assert_eq!(pvo["spec"]["dtkImage"], w.m.dtk_logical.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_absent_from_the_cluster_falls_back_to_the_tag_which_idms_does_not_mirror() {
    let w = World::new().await;
    w.api.put(
        "config.openshift.io",
        "ClusterVersion",
        cluster_version(json!([]), json!([])),
    );
    let run = w
        .preflight(&["--dry-run=client", "-v"])
        .await
        .expect_code(4);
    run.expect_stderr(&format!("{VERSION} is not in the cluster's ClusterVersion"));
    run.expect_stderr(&format!(
        "{}/openshift-release-dev/ocp-release:4.19.0-x86_64: only its source was tried",
        w.source
    ));
    run.expect_stderr("add an ImageTagMirrorSet");

    // An ImageTagMirrorSet mirrors tags (and IDMS still the DTK's digest).
    w.api.put(
        "config.openshift.io",
        "ImageTagMirrorSet",
        json!({"metadata": {"name": "tags"}, "spec": {"imageTagMirrors": [
            {"source": format!("{}/openshift-release-dev", w.source), "mirrors": [format!("{}/ocp4", w.mirror.addr)]}]}}),
    );
    let run = w
        .preflight(&["--dry-run=client", "-o", "json", "-v"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["spec"]["kernelVersion"], w.m.kernel.as_str());
    run.expect_stderr("(ImageTagMirrorSet/tags)");
    // The digest the tag resolved to.
    run.expect_stderr(&format!("(x86_64): {}", w.m.release_logical));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_most_specific_source_wins_and_mirrors_go_in_order() {
    let w = World::new().await;
    let source = &w.source;
    let mirror = &w.mirror.addr;
    let down = format!("127.0.0.1:{}", free_port());
    w.replace_idms(idms(
        "layered",
        &[
            // Broad: would send everything to a path that does not exist.
            (
                &format!("{source}/openshift-release-dev"),
                &[&format!("{mirror}/wrong")],
                false,
            ),
            // Specific: a dead mirror first, then the real one.
            (
                &format!("{source}/openshift-release-dev/ocp-release"),
                &[
                    &format!("{down}/dead"),
                    &format!("{mirror}/ocp4/ocp-release"),
                ],
                false,
            ),
            (
                &format!("{source}/openshift-release-dev/ocp-v4.0-art-dev"),
                &[&format!("{mirror}/ocp4/art-dev")],
                false,
            ),
        ],
    ));
    let run = w
        .preflight(&["--dry-run=client", "-o", "json", "-v", "--no-cache"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["spec"]["kernelVersion"], w.m.kernel.as_str());
    let dead = run
        .stderr
        .find(&format!(
            "trying the next location after mirror {down}/dead@"
        ))
        .expect(&run.stderr);
    let answered = run
        .stderr
        .find(&format!("answered by mirror {mirror}/ocp4/ocp-release@"))
        .expect(&run.stderr);
    assert!(dead < answered, "in order: {}", run.stderr);
    assert_eq!(
        w.mirror_manifest_requests("wrong/ocp-release"),
        0,
        "the broader source was not used"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn never_contact_source_is_respected() {
    // Here the source is reachable and holds the release; the mirror path is empty.
    let source = TestRegistry::plain();
    let pusher = Pusher::new(&source);
    let m = push_mirrored_release(
        &pusher,
        &source.addr,
        VERSION,
        "openshift-release-dev/ocp-release",
        "openshift-release-dev/ocp-v4.0-art-dev",
    )
    .await;
    let ctx = Context::new();
    let rules = |never: bool| {
        let mut text = String::new();
        for (i, repo) in ["ocp-release", "ocp-v4.0-art-dev"].iter().enumerate() {
            text.push_str(&format!(
                "{}apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: m{i}\nspec:\n  imageDigestMirrors:\n  - source: {}/openshift-release-dev/{repo}\n    mirrors: [{}/empty/{repo}]\n{}",
                if i > 0 { "---\n" } else { "" },
                source.addr,
                source.addr,
                if never { "    mirrorSourcePolicy: NeverContactSource\n" } else { "" }
            ));
        }
        text
    };
    let strict = ctx.write("never.yaml", rules(true)).display().to_string();
    let lenient = ctx.write("allow.yaml", rules(false)).display().to_string();
    let count = || {
        source
            .log
            .lines()
            .iter()
            .filter(|l| l.contains("/v2/openshift-release-dev/ocp-release/manifests/"))
            .count()
    };
    let before = count();
    let run = ctx
        .run(&[
            "dtk",
            "--release",
            &m.release_logical,
            "--insecure-registry",
            &source.addr,
            "--idms-file",
            &strict,
            "--no-cache",
        ])
        .await
        .expect_code(2);
    run.expect_stderr("not contacted (NeverContactSource)");
    assert_eq!(count(), before, "the source was never contacted");
    let json = ctx
        .run(&[
            "dtk",
            "--release",
            &m.release_logical,
            "--insecure-registry",
            &source.addr,
            "--idms-file",
            &lenient,
            "--no-cache",
            "-o",
            "json",
        ])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["kernelVersion"], m.kernel.as_str());
    assert!(
        count() > before,
        "AllowContactingSource falls back to the source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conditional_update_is_used_and_its_risks_listed() {
    let w = World::new().await;
    w.api.put(
        "config.openshift.io",
        "ClusterVersion",
        cluster_version(
            json!([]),
            json!([{"release": {"version": VERSION, "image": w.m.release_logical},
                    "risks": [{"name": "AROBrokenDNSMasq", "message": "Clusters with a custom DNS may fail to resolve.",
                               "url": "https://issues.redhat.com/browse/OCPBUGS-1", "matchingRules": [{"type": "Always"}]}],
                    "conditions": [{"type": "Recommended", "status": "False", "reason": "AROBrokenDNSMasq"}]}]),
        ),
    );
    let run = w
        .preflight(&["--dry-run=client", "-o", "json"])
        .await
        .expect_code(0);
    run.expect_stderr(&format!("(x86_64): {}", w.m.release_logical));
    run.expect_stderr("warning: 4.19.0 is a conditional update with risk AROBrokenDNSMasq: Clusters with a custom DNS may fail to resolve. (https://issues.redhat.com/browse/OCPBUGS-1)");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_mirror_credentials_exit_4_and_stay_secret() {
    let w = World::new().await;
    pull_secret(&w.api, &w.mirror.addr, "not-the-password-9x");
    let run = w
        .preflight(&["--dry-run=client", "-v", "--no-cache"])
        .await
        .expect_code(4);
    run.expect_stderr(&format!(
        "not authorized to read {}/ocp4/ocp-release@",
        w.mirror.addr
    ));
    run.expect_stderr("credentials from the cluster pull secret openshift-config/pull-secret");
    run.expect_stderr("were refused");
    let everything = run.all_output();
    for secret in ["not-the-password-9x", PASS] {
        assert!(!everything.contains(secret));
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:not-the-password-9x"));
    assert!(!everything.contains(&encoded));
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_files_as_oc_takes_them() {
    let w = World::new().await;
    let ca = w.ca();
    let auth = w
        .ctx
        .write("auth.json", auth_file(&[(&w.mirror.addr, USER, PASS)]))
        .display()
        .to_string();
    let rules = [
        (
            format!("{}/openshift-release-dev/ocp-release", w.source),
            format!("{}/ocp4/ocp-release", w.mirror.addr),
        ),
        (
            format!("{}/openshift-release-dev/ocp-v4.0-art-dev", w.source),
            format!("{}/ocp4/art-dev", w.mirror.addr),
        ),
    ];
    let idms_file = rules
        .iter()
        .enumerate()
        .map(|(i, (s, m))| format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: f{i}\nspec:\n  imageDigestMirrors:\n  - source: {s}\n    mirrors:\n    - {m}\n"))
        .collect::<Vec<_>>()
        .join("---\n");
    let icsp_file = json!({"apiVersion": "operator.openshift.io/v1alpha1", "kind": "ImageContentSourcePolicy", "metadata": {"name": "icsp"},
        "spec": {"repositoryDigestMirrors": rules.iter().map(|(s, m)| json!({"source": s, "mirrors": [m]})).collect::<Vec<_>>()}})
    .to_string();
    let idms_path = w.ctx.write("idms.yaml", idms_file).display().to_string();
    let icsp_path = w.ctx.write("icsp.json", icsp_file).display().to_string();
    // dtk needs no cluster at all.
    for (flag, path) in [("--idms-file", &idms_path), ("--icsp-file", &icsp_path)] {
        let run = w
            .ctx
            .run(&[
                "dtk",
                "--release",
                &w.m.release_logical,
                flag,
                path,
                "--registry-config",
                &auth,
                "--registry-ca",
                &ca,
                "-o",
                "json",
                "-v",
                "--no-cache",
            ])
            .await
            .expect_code(0);
        assert_eq!(run.json()["kernelVersion"], w.m.kernel.as_str(), "{flag}");
        assert_eq!(run.json()["dtkImage"], w.m.dtk_logical.as_str());
        assert!(
            run.stderr.contains(&format!(
                "answered by mirror {}/ocp4/ocp-release@",
                w.mirror.addr
            )),
            "{flag}: {}",
            run.stderr
        );
    }
    let run = w
        .ctx
        .run(&[
            "dtk",
            "--release",
            VERSION,
            "--idms-file",
            &idms_path,
            "--icsp-file",
            &icsp_path,
        ])
        .await
        .expect_code(2);
    run.expect_stderr("cannot be used with");
    let bad = w
        .ctx
        .write("pod.yaml", "kind: Pod\nmetadata:\n  name: x\n")
        .display()
        .to_string();
    let run = w
        .ctx
        .run(&["dtk", "--release", VERSION, "--idms-file", &bad])
        .await
        .expect_code(2);
    run.expect_stderr(&format!(
        "--idms-file {bad}: document 1 is a Pod, not an ImageDigestMirrorSet"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_carry_registry_and_cluster_traffic() {
    let mut w = World::new().await;
    let proxy = HttpProxy::start().await;
    w.ctx.env("HTTPS_PROXY", &proxy.url);
    w.preflight(&["--dry-run=client", "--no-cache"])
        .await
        .expect_code(0);
    let targets = proxy.targets();
    assert!(
        targets.contains(&w.api.addr),
        "cluster traffic through the proxy: {targets:?}"
    );
    assert!(
        targets.contains(&w.mirror.addr),
        "registry traffic through the proxy: {targets:?}"
    );

    // NO_PROXY: straight there.
    let seen = proxy.targets().len();
    w.ctx.env("NO_PROXY", "127.0.0.1");
    w.preflight(&["--dry-run=client", "--no-cache"])
        .await
        .expect_code(0);
    assert_eq!(proxy.targets().len(), seen);

    // Plain HTTP registries go through HTTP_PROXY.
    let plain = TestRegistry::plain();
    let pusher = Pusher::new(&plain);
    let m = push_mirrored_release(
        &pusher,
        &plain.addr,
        VERSION,
        "openshift-release-dev/ocp-release",
        "openshift-release-dev/ocp-v4.0-art-dev",
    )
    .await;
    let mut ctx = Context::new();
    ctx.env("HTTP_PROXY", &proxy.url);
    ctx.run(&[
        "dtk",
        "--release",
        &m.release_logical,
        "--insecure-registry",
        &plain.addr,
        "--no-cache",
    ])
    .await
    .expect_code(0);
    assert!(
        proxy.targets().contains(&plain.addr),
        "{:?}",
        proxy.targets()
    );
}
