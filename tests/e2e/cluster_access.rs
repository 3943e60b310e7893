//! Reaching the cluster as kubectl would: kubeconfig, contexts, users, impersonation, timeouts,
//! TLS; and what happens when the cluster says no: unreachable, unauthorized, forbidden, no KMM.
//! Also the cluster's pull secret as a source of registry credentials.

use crate::support;

use base64::Engine;
use serde_json::json;
use support::apiserver::Kmm;
use support::cluster::{TestCluster, VERSION};
use support::registry::TestRegistry;
use support::{Context, auth_file, free_port};

const GROUP: &str = "kmm.sigs.x-k8s.io";

/// A kubeconfig with a live cluster `test`, a dead one, and three users.
fn kubeconfig(c: &TestCluster, current: &str, with_ca: bool) -> String {
    let ca = if with_ca {
        format!("\n    certificate-authority-data: {}", c.api.ca_data())
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {current}\n\
         clusters:\n- name: test\n  cluster:\n    server: {}{ca}\n\
         - name: dead\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\n\
         users:\n- name: admin\n  user:\n    token: admin-token\n- name: alice\n  user:\n    token: alice-token\n\
         - name: nobody\n  user:\n    token: not-a-token\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n\
         - name: dead\n  context:\n    cluster: dead\n    user: admin\n",
        c.api.url,
        free_port(),
        c.api.ca_data()
    )
}

fn dry_run<'a>(c: &'a TestCluster, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "preflight",
        "--release",
        VERSION,
        "--insecure-registry",
        &c.registry.addr,
        "--dry-run=client",
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn context_cluster_user_and_kubeconfig_flags() {
    let mut c = TestCluster::start(Kmm::Ocp24).await;
    let file = c
        .ctx
        .write("configs/many.yaml", kubeconfig(&c, "dead", true));
    let file = file.display().to_string();
    c.ctx.env("KUBECONFIG", &file);

    // The current context's cluster is down: exit 4, naming the server.
    let run = c.ctx.run(&dry_run(&c, &[])).await.expect_code(4);
    assert!(
        run.stderr
            .contains("cannot reach the cluster at https://127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--context"), "{}", run.stderr);

    c.ctx
        .run(&dry_run(&c, &["--context", "test"]))
        .await
        .expect_code(0);
    c.ctx
        .run(&dry_run(&c, &["--cluster", "test"]))
        .await
        .expect_code(0);

    let before = c.api.requests().len();
    c.ctx
        .run(&dry_run(&c, &["--context", "test", "--user", "alice"]))
        .await
        .expect_code(0);
    assert!(c.api.requests()[before..].iter().all(|r| r.user == "alice"));

    let run = c
        .ctx
        .run(&dry_run(&c, &["--context", "test", "--user", "nobody"]))
        .await
        .expect_code(4);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.all_output().contains("not-a-token"));

    let run = c
        .ctx
        .run(&dry_run(&c, &["--context", "nope"]))
        .await
        .expect_code(2);
    assert!(
        run.stderr
            .contains("--context \"nope\" is not in the kubeconfig"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("known: test, dead"), "{}", run.stderr);

    // --kubeconfig wins over KUBECONFIG.
    c.ctx.env("KUBECONFIG", "/nonexistent/config");
    let run = c.ctx.run(&dry_run(&c, &[])).await.expect_code(4);
    assert!(
        run.stderr
            .contains("no usable kubeconfig: none of /nonexistent/config exists"),
        "{}",
        run.stderr
    );
    c.ctx
        .run(&dry_run(&c, &["--kubeconfig", &file, "--context", "test"]))
        .await
        .expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_lists_are_merged_as_kubectl_merges_them() {
    let mut c = TestCluster::start(Kmm::Ocp24).await;
    let whole = kubeconfig(&c, "test", true);
    // Clusters and contexts in one file, users in another, a missing file in between; the
    // second file's current-context loses to the first's.
    let (head, users) = whole.split_once("users:\n").unwrap();
    let (users, contexts) = users.split_once("contexts:\n").unwrap();
    let first = c
        .ctx
        .write("a.yaml", format!("{head}contexts:\n{contexts}"));
    let second = c.ctx.write(
        "b.yaml",
        format!("apiVersion: v1\nkind: Config\ncurrent-context: dead\nusers:\n{users}"),
    );
    c.ctx.env(
        "KUBECONFIG",
        format!(
            "{}:/nonexistent/x.yaml:{}",
            first.display(),
            second.display()
        ),
    );
    c.ctx.run(&dry_run(&c, &[])).await.expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonation_reaches_the_server() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.ctx
        .run(&dry_run(
            &c,
            &[
                "--as",
                "bob",
                "--as-group",
                "ops",
                "--as-group",
                "kmm-admins",
            ],
        ))
        .await
        .expect_code(0);
    let requests = c.api.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.impersonate_user.as_deref(),
            Some("bob"),
            "{} {}",
            r.verb,
            r.path
        );
        assert_eq!(r.impersonate_groups, ["ops", "kmm-admins"]);
        assert_eq!(r.user, "bob");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_timeout_bounds_each_request() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.api.delay(
        "/apis/apiextensions.k8s.io",
        std::time::Duration::from_secs(3),
    );
    let run = c
        .ctx
        .run(&dry_run(&c, &["--request-timeout", "1s"]))
        .await
        .expect_code(4);
    assert!(run.stderr.contains("no answer in time"), "{}", run.stderr);
    assert!(run.stderr.contains("--request-timeout"), "{}", run.stderr);
    // The default (0) waits.
    c.ctx.run(&dry_run(&c, &[])).await.expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_skip_tls_verify() {
    let mut c = TestCluster::start(Kmm::Ocp24).await;
    let file = c.ctx.write("no-ca.yaml", kubeconfig(&c, "test", false));
    c.ctx.env("KUBECONFIG", file.display().to_string());
    let run = c.ctx.run(&dry_run(&c, &[])).await.expect_code(4);
    assert!(run.stderr.contains("TLS failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("--insecure-skip-tls-verify"),
        "{}",
        run.stderr
    );
    c.ctx
        .run(&dry_run(&c, &["--insecure-skip-tls-verify"]))
        .await
        .expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kmm_missing_exits_4_saying_what_was_looked_for() {
    let c = TestCluster::start(Kmm::None).await;
    let run = c.preflight(&[]).await.expect_code(4);
    assert!(
        run.stderr.contains(
            "KMM is not installed: the cluster has neither CustomResourceDefinition \
             preflightvalidationsocp.kmm.sigs.x-k8s.io nor preflightvalidations.kmm.sigs.x-k8s.io"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_exits_4_naming_the_request() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.api.forbid("create", GROUP, "preflightvalidationsocp");
    let run = c.preflight(&[]).await.expect_code(4);
    assert!(
        run.stderr.contains(
            "forbidden: preflightvalidationsocp.kmm.sigs.x-k8s.io is forbidden: User \"admin\" \
             cannot create resource \"preflightvalidationsocp\" in API group \"kmm.sigs.x-k8s.io\""
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("RBAC"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_crds_fall_back_to_discovery() {
    for (kmm, spec_field) in [(Kmm::Ocp24, "kernelVersion"), (Kmm::Ocp23, "releaseImage")] {
        let c = TestCluster::start(kmm).await;
        c.api
            .forbid("get", "apiextensions.k8s.io", "customresourcedefinitions");
        let run = c
            .preflight(&["--dry-run=client", "-o", "json", "-v"])
            .await
            .expect_code(0);
        assert!(
            run.stderr.contains("reading CRDs is forbidden"),
            "{}",
            run.stderr
        );
        assert!(
            run.json()["spec"][spec_field].is_string(),
            "{kmm:?}: {}",
            run.stdout
        );
        // The probe was a server-side dry run: nothing stayed.
        let probes: Vec<_> = c
            .api
            .requests()
            .into_iter()
            .filter(|r| r.verb == "create")
            .collect();
        assert!(
            probes
                .iter()
                .all(|r| r.param("dryRun").as_deref() == Some("All"))
        );
        assert!(c.pvo("kubectl-kmm-probe").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_modules_are_judged_from_the_status() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.api.forbid("list", GROUP, "modules");
    let run = c.preflight(&["-v", "-o", "json"]).await.expect_code(0);
    assert!(
        run.stderr.contains("cannot watch Modules"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["modules"][0]["name"], "nvidia-gpu");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_pull_secret_serves_registries_without_local_credentials() {
    let registry = TestRegistry::secure("kmm", "pull-s3cret");
    let c = TestCluster::start_with(Kmm::Ocp24, registry).await;
    let host = c.registry.addr.clone();

    // No local credentials, no pull secret: unauthorized.
    let run = c.preflight(&["--dry-run=client"]).await.expect_code(4);
    assert!(run.stderr.contains("not authorized"), "{}", run.stderr);

    let docker_config = auth_file(&[(&host, "kmm", "pull-s3cret")]);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&docker_config);
    c.api.put(
        "",
        "Secret",
        json!({"metadata": {"name": "pull-secret", "namespace": "openshift-config"},
               "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": encoded}}),
    );
    let run = c
        .preflight(&["--dry-run=client", "-o", "json", "-v"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["spec"]["kernelVersion"], c.kernel());
    assert!(
        run.stderr.contains(&format!(
            "{host}/ocp/release: credentials from the cluster pull secret openshift-config/pull-secret"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.all_output().contains("pull-s3cret"));
    assert!(!run.all_output().contains(&encoded));

    // Local auth files come first: a wrong local password is refused, naming the local file.
    let mut ctx_bad = Context::new();
    ctx_bad.env(
        "KUBECONFIG",
        c.ctx.path(".kube/config").display().to_string(),
    );
    ctx_bad.env("KMM_RELEASE_REPO", format!("{host}/ocp/release"));
    ctx_bad.write(
        ".config/containers/auth.json",
        auth_file(&[(&host, "kmm", "stale")]),
    );
    let run = ctx_bad
        .run(&[
            "preflight",
            "--release",
            VERSION,
            "--insecure-registry",
            &host,
            "--dry-run=client",
            "--no-cache",
        ])
        .await
        .expect_code(4);
    assert!(
        run.stderr.contains(".config/containers/auth.json"),
        "{}",
        run.stderr
    );

    // A pull secret that may not be read: said with -v, local credentials only.
    c.api.forbid("get", "", "secrets");
    let run = c
        .preflight(&["--dry-run=client", "-v", "--no-cache"])
        .await
        .expect_code(4);
    assert!(
        run.stderr
            .contains("reading openshift-config/pull-secret is forbidden"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_kubeconfig_is_reported_without_its_content() {
    let mut ctx = Context::new();
    // A token where a mapping belongs: parsers love to quote the offending line.
    let file = ctx.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Config\nusers:\n- name: a\n  user: \"sha256~SECRETTOKEN123\"\nclusters: []\ncontexts: []\n",
    );
    ctx.env("KUBECONFIG", file.display().to_string());
    let run = ctx.run(&["status"]).await.expect_code(4);
    run.expect_stderr("no usable kubeconfig");
    run.expect_stderr("line 5");
    assert!(
        !run.all_output().contains("SECRETTOKEN123"),
        "{}",
        run.stderr
    );
    let run = ctx
        .run(&[
            "preflight",
            "--kernel",
            "5.14.0-1.el9.x86_64",
            "--kubeconfig",
            "/etc/hostname",
        ])
        .await
        .expect_code(4);
    assert!(
        run.stderr.lines().count() <= 2,
        "one line and a hint: {}",
        run.stderr
    );
}
