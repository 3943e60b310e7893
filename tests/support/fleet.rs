//! A fleet for the tests: one registry, several test API servers (one per kubeconfig context),
//! and a kubeconfig that names them all, as an admin's merged kubeconfig does. Contexts may
//! also point at a port where nothing listens (unreachable) or at a server that refuses a read.

use std::collections::BTreeMap;

use serde_json::json;

use super::apiserver::{ApiServer, Kmm};
use super::cluster::{OLD_KERNEL, module_spec, resolved};
use super::fixtures::{ReleaseFixture, kernel_for, push_release, rpm_arch};
use super::images::Pusher;
use super::kmod::simple_image;
use super::operator::{Operator, OperatorConfig};
use super::registry::TestRegistry;
use super::{Context, Run};

pub struct TestFleet {
    pub registry: TestRegistry,
    /// By "version/goarch".
    pub releases: BTreeMap<String, ReleaseFixture>,
    pub clusters: BTreeMap<String, ApiServer>,
    /// Every kmod image pushed so far (their operators know them as existing).
    pushed: Vec<String>,
    /// KMM 2.4's simulated operator on each cluster.
    pub operators: BTreeMap<String, Operator>,
    /// Contexts in the kubeconfig, in order, with their server URL and token.
    contexts: Vec<(String, String, String, String)>,
    pub ctx: Context,
}

impl TestFleet {
    /// A registry holding `releases` (version, goarch), and no cluster yet.
    pub async fn start(releases: &[(&str, &'static str)]) -> TestFleet {
        let registry = TestRegistry::plain();
        let pusher = Pusher::new(&registry);
        let mut pushed = BTreeMap::new();
        for (version, goarch) in releases {
            let fixture = push_release(&pusher, &registry.addr, version, goarch).await;
            pushed.insert(format!("{version}/{goarch}"), fixture);
        }
        let mut ctx = Context::new();
        ctx.env("KMM_RELEASE_REPO", format!("{}/ocp/release", registry.addr));
        TestFleet {
            registry,
            releases: pushed,
            clusters: BTreeMap::new(),
            pushed: Vec::new(),
            operators: BTreeMap::new(),
            contexts: Vec::new(),
            ctx,
        }
    }

    /// A cluster with KMM 2.4 (its CRDs and simulated operator, which knows the images pushed
    /// with `push_image`) and one worker node of `goarch` on the old kernel.
    pub async fn cluster(&mut self, name: &str, goarch: &str) -> &ApiServer {
        let api = ApiServer::start(Kmm::Ocp24).await;
        let mut config = OperatorConfig::new(Kmm::Ocp24);
        config.step = std::time::Duration::from_millis(100);
        for fixture in self.releases.values() {
            config.releases.insert(
                fixture.release.reference.clone(),
                (
                    fixture.kernel.clone(),
                    Some(format!("{}+rt", fixture.kernel)),
                ),
            );
        }
        config.images.extend(self.pushed.iter().cloned());
        self.operators
            .insert(name.to_string(), Operator::start(&api, config));
        let kernel = OLD_KERNEL.replace("x86_64", rpm_arch(goarch));
        api.add_node_with("worker-0", goarch, &kernel, &[]);
        self.contexts.push((
            name.to_string(),
            api.url.clone(),
            api.ca_data(),
            api.token.clone(),
        ));
        self.clusters.insert(name.to_string(), api);
        self.write_kubeconfig();
        &self.clusters[name]
    }

    /// A context whose server does not answer (a port nothing listens on).
    pub fn unreachable(&mut self, name: &str) {
        let port = super::free_port();
        self.contexts.push((
            name.to_string(),
            format!("https://127.0.0.1:{port}"),
            String::new(),
            "lost-token".into(),
        ));
        self.write_kubeconfig();
    }

    fn write_kubeconfig(&mut self) {
        let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        for (name, url, ca, _) in &self.contexts {
            text.push_str(&format!("- name: {name}\n  cluster:\n    server: {url}\n"));
            if ca.is_empty() {
                text.push_str("    insecure-skip-tls-verify: true\n");
            } else {
                text.push_str(&format!("    certificate-authority-data: {ca}\n"));
            }
        }
        text.push_str("users:\n");
        for (name, _, _, token) in &self.contexts {
            text.push_str(&format!(
                "- name: {name}-admin\n  user:\n    token: {token}\n"
            ));
        }
        text.push_str("contexts:\n");
        for (name, ..) in &self.contexts {
            text.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n"
            ));
        }
        if let Some((first, ..)) = self.contexts.first() {
            text.push_str(&format!("current-context: {first}\n"));
        }
        let path = self.ctx.write(".kube/config", text);
        self.ctx.env("KUBECONFIG", path.display().to_string());
    }

    /// `<registry>/vendor/<name>:${KERNEL_FULL_VERSION}`.
    pub fn vendor_image(&self, name: &str) -> String {
        format!(
            "{}/vendor/{name}:${{KERNEL_FULL_VERSION}}",
            self.registry.addr
        )
    }

    /// Push `vendor/<name>` for `kernel`, holding module `kmod` built for it.
    pub async fn push_image(&mut self, name: &str, kernel: &str) {
        let reference = resolved(&self.vendor_image(name), kernel);
        let tag = reference
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        Pusher::new(&self.registry)
            .push_image(
                &format!("vendor/{name}"),
                Some(&tag),
                &simple_image("kmod", kernel),
            )
            .await;
        for operator in self.operators.values() {
            operator.configure(|o| {
                o.images.insert(reference.clone());
            });
        }
        self.pushed.push(reference);
    }

    /// A Module on `cluster` loading `kmod` from `vendor/<image>` (no build).
    pub fn module(&self, cluster: &str, namespace: &str, name: &str, image: &str) {
        self.clusters[cluster].add_module(
            namespace,
            name,
            module_spec(&self.vendor_image(image), false),
        );
    }

    /// The kernel of release `version` for `goarch`.
    pub fn kernel(&self, version: &str, goarch: &str) -> String {
        kernel_for(version, goarch)
    }

    /// ClusterVersion of `cluster`: on 4.18.15, offered `offers` (versions of pushed amd64
    /// releases).
    pub fn offer(&self, cluster: &str, offers: &[&str]) {
        let updates: Vec<serde_json::Value> = offers
            .iter()
            .map(|v| {
                json!({"version": v,
                       "image": self.releases[&format!("{v}/amd64")].release.reference})
            })
            .collect();
        self.clusters[cluster].put(
            "config.openshift.io",
            "ClusterVersion",
            json!({"metadata": {"name": "version"}, "spec": {"channel": "stable-4.19"},
                   "status": {"desired": {"version": "4.18.15",
                                          "image": format!("{}/ocp/release@sha256:{}", self.registry.addr, "0".repeat(64))},
                              "availableUpdates": updates}}),
        );
    }

    /// `kubectl kmm <args…> --insecure-registry <registry>`.
    pub async fn plugin(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--insecure-registry", &self.registry.addr]);
        self.ctx.run(&all).await
    }
}

/// The world of the fleet captures in README and docs/fleet.md: east and west (x86_64, KMM 2.4,
/// on 4.18.15) and edge, whose API server does not answer. Both reachable clusters run
/// gpu-operator/nvidia-gpu, whose image is in place for 4.19.0; west also runs nic/ice, whose
/// image for the new kernel was never pushed and has no build section.
pub async fn docs_world() -> TestFleet {
    let mut fleet = TestFleet::start(&[("4.19.0", "amd64")]).await;
    fleet.cluster("east", "amd64").await;
    fleet.cluster("west", "amd64").await;
    fleet.unreachable("edge");
    let kernel = fleet.kernel("4.19.0", "amd64");
    fleet.push_image("nvidia-gpu", &kernel).await;
    for cluster in ["east", "west"] {
        fleet.module(cluster, "gpu-operator", "nvidia-gpu", "nvidia-gpu");
    }
    fleet.module("west", "nic", "ice", "ice");
    fleet
}
