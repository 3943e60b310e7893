//! An ACM hub running KMM-hub, for the tests and the README's captures: the real fleet CRDs
//! (ManagedClusterModule, ManagedCluster, ManagedClusterInfo, ClusterGroupUpgrade, Policy) on a
//! test API server, spokes as the hub sees them (KMM's kernel claim, ACM's view of the offered
//! updates), and one registry holding the releases and the kmod images.
//!
//! The spokes: sno-east and sno-west (x86_64, 4.18.15, with the KMM claim; sno-west also runs
//! the real-time kernel), sno-lab (no KMM claim: KMM not in managed mode there), arm-edge
//! (aarch64). The ManagedClusterModules: gpu (image in place for 4.19.0's kernels, x86_64
//! only), nic (image missing, built by KMM-hub), storage (selects no cluster).

use serde_json::{Value, json};

use super::apiserver::{ApiServer, Kmm};
use super::cluster::{OLD_KERNEL, module_spec, resolved};
use super::fixtures::{ReleaseFixture, kernel_for, push_release};
use super::images::Pusher;
use super::kmod::simple_image;
use super::registry::TestRegistry;
use super::{Context, Run};

pub const HUB_NAMESPACE: &str = "openshift-kmm-hub";
pub const TARGET: &str = "4.19.0";
pub const CLAIM: &str = "kernel-versions.kmm.node.kubernetes.io";

/// Install the fleet CRDs (KMM-hub, ACM, TALM) on `api`.
pub fn install_fleet_crds(api: &ApiServer) {
    for name in [
        "managedclustermodules",
        "managedclusters",
        "managedclusterinfos",
        "clustergroupupgrades",
        "policies",
    ] {
        api.install_crd(crd(name));
    }
}

fn crd(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crds/fleet")
        .join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap()
}

pub struct TestHub {
    pub registry: TestRegistry,
    pub releases: Vec<ReleaseFixture>,
    pub api: ApiServer,
    pub ctx: Context,
}

impl TestHub {
    /// A hub with the fleet CRDs and nothing else; `releases` (version, goarch) in the registry.
    pub async fn empty(releases: &[(&str, &'static str)]) -> TestHub {
        Self::with_crds(
            releases,
            &[
                "managedclustermodules",
                "managedclusters",
                "managedclusterinfos",
                "clustergroupupgrades",
                "policies",
            ],
        )
        .await
    }

    /// The same with only the `crds` named (by plural).
    pub async fn with_crds(releases: &[(&str, &'static str)], crds: &[&str]) -> TestHub {
        let registry = TestRegistry::plain();
        let pusher = Pusher::new(&registry);
        let mut pushed = Vec::new();
        for (version, goarch) in releases {
            pushed.push(push_release(&pusher, &registry.addr, version, goarch).await);
        }
        let api = ApiServer::start(Kmm::None).await;
        for name in crds {
            api.install_crd(crd(name));
        }
        let mut ctx = Context::new();
        let kubeconfig = ctx.write(".kube/config", api.kubeconfig());
        ctx.env("KUBECONFIG", kubeconfig.display().to_string());
        ctx.env("KMM_RELEASE_REPO", format!("{}/ocp/release", registry.addr));
        TestHub {
            registry,
            releases: pushed,
            api,
            ctx,
        }
    }

    /// The hub described at the top of this file.
    pub async fn start() -> TestHub {
        let hub =
            TestHub::empty(&[(TARGET, "amd64"), (TARGET, "arm64"), ("4.19.1", "amd64")]).await;
        let new = kernel_for(TARGET, "amd64");
        for kernel in [new.clone(), format!("{new}+rt")] {
            hub.push_image("gpu", &kernel).await;
        }
        hub.cluster(
            "sno-east",
            &[("gpu", "true"), ("group", "east")],
            Some(&[OLD_KERNEL]),
        );
        let rt = format!("{OLD_KERNEL}+rt");
        hub.cluster(
            "sno-west",
            &[("gpu", "true"), ("group", "west")],
            Some(&[OLD_KERNEL, &rt]),
        );
        hub.cluster("sno-lab", &[("gpu", "true")], None);
        hub.cluster(
            "arm-edge",
            &[("group", "east")],
            Some(&["5.14.0-427.50.1.el9_4.aarch64"]),
        );
        hub.mcm(
            "gpu",
            &[("gpu", "true")],
            module_spec(&hub.image("gpu"), false),
        );
        hub.mcm("nic", &[], module_spec(&hub.image("nic"), true));
        hub.mcm(
            "storage",
            &[("storage", "true")],
            module_spec(&hub.image("storage"), false),
        );
        hub.api.put(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "kmod-dockerfile", "namespace": HUB_NAMESPACE},
                   "data": {"dockerfile": "ARG DTK_AUTO\nFROM ${DTK_AUTO}\n"}}),
        );
        hub
    }

    /// `<registry>/vendor/<name>:${KERNEL_FULL_VERSION}`.
    pub fn image(&self, name: &str) -> String {
        format!(
            "{}/vendor/{name}:${{KERNEL_FULL_VERSION}}",
            self.registry.addr
        )
    }

    /// Push `vendor/<name>` for `kernel`, holding `kmod` built for it.
    pub async fn push_image(&self, name: &str, kernel: &str) {
        let reference = resolved(&self.image(name), kernel);
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
    }

    /// A ManagedCluster as ACM shows it: its labels, the version claim, and KMM's kernel claim
    /// (`None`: no claim).
    pub fn cluster(&self, name: &str, labels: &[(&str, &str)], kernels: Option<&[&str]>) {
        let mut all = serde_json::Map::new();
        all.insert("openshiftVersion".into(), json!("4.18.15"));
        all.insert("vendor".into(), json!("OpenShift"));
        all.insert("name".into(), json!(name));
        for (k, v) in labels {
            all.insert(k.to_string(), json!(v));
        }
        let mut claims = vec![
            json!({"name": "id.k8s.io", "value": format!("{name}-id")}),
            json!({"name": "version.openshift.io", "value": "4.18.15"}),
        ];
        if let Some(kernels) = kernels {
            claims.push(json!({"name": CLAIM, "value": kernels.join("\n")}));
        }
        self.api.put(
            "cluster.open-cluster-management.io",
            "ManagedCluster",
            json!({"metadata": {"name": name, "labels": all},
                   "spec": {"hubAcceptsClient": true},
                   "status": {"clusterClaims": claims}}),
        );
    }

    /// A ManagedClusterModule selecting clusters by `selector`, for the spoke namespace `kmm`.
    pub fn mcm(&self, name: &str, selector: &[(&str, &str)], module: Value) {
        let selector: serde_json::Map<String, Value> = selector
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.api.put(
            "hub.kmm.sigs.x-k8s.io",
            "ManagedClusterModule",
            json!({"metadata": {"name": name},
                   "spec": {"selector": selector, "spokeNamespace": "kmm", "moduleSpec": module}}),
        );
    }

    /// ACM's view of what `cluster` is offered (ManagedClusterInfo in the cluster's namespace).
    pub fn offers(&self, cluster: &str, versions: &[&str]) {
        let updates: Vec<Value> = versions
            .iter()
            .map(|v| json!({"version": v, "image": "", "url": ""}))
            .collect();
        self.api.put(
            "internal.open-cluster-management.io",
            "ManagedClusterInfo",
            json!({"metadata": {"name": cluster, "namespace": cluster},
                   "status": {"distributionInfo": {"type": "OCP", "ocp": {
                       "version": "4.18.15", "versionAvailableUpdates": updates}}}}),
        );
    }

    /// TALM's sample pair: a disabled ClusterGroupUpgrade and the Policy whose ClusterVersion
    /// template names `version`.
    pub fn cgu(&self, name: &str, clusters: &[&str], label_selectors: Value, version: &str) {
        self.api.put(
            "policy.open-cluster-management.io",
            "Policy",
            json!({"metadata": {"name": format!("{name}-upgrade"), "namespace": "ztp"},
                   "spec": {"disabled": false, "remediationAction": "inform", "policy-templates": [
                       {"objectDefinition": {"apiVersion": "policy.open-cluster-management.io/v1",
                            "kind": "ConfigurationPolicy", "metadata": {"name": "upgrade"},
                            "spec": {"remediationAction": "inform", "severity": "low",
                                     "object-templates": [{"complianceType": "musthave",
                                "objectDefinition": {"apiVersion": "config.openshift.io/v1",
                                    "kind": "ClusterVersion", "metadata": {"name": "version"},
                                    "spec": {"channel": "stable-4.19",
                                             "desiredUpdate": {"version": version}}}}]}}}]}}),
        );
        self.api.put(
            "ran.openshift.io",
            "ClusterGroupUpgrade",
            json!({"metadata": {"name": name, "namespace": "ztp"},
                   "spec": {"clusters": clusters, "clusterLabelSelectors": label_selectors,
                            "managedPolicies": [format!("{name}-upgrade")],
                            "remediationStrategy": {"maxConcurrency": 1},
                            "enable": false}}),
        );
    }

    /// `kubectl kmm <args…> --insecure-registry <registry>`.
    pub async fn plugin(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--insecure-registry", &self.registry.addr]);
        self.ctx.run(&all).await
    }
}
