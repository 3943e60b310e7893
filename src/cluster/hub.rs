//! What an ACM hub running KMM-hub tells about its spokes, read from the hub alone: the
//! ManagedClusterModules and the clusters they select, each cluster's kernels (KMM's cluster
//! claim) and version, the updates ACM sees offered, and TALM's ClusterGroupUpgrades with the
//! target release of their policies. Nothing on a spoke is contacted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

use super::Cluster;

/// The claim KMM writes on each managed spoke: every node's `uname -r`, one per line.
pub const KERNEL_CLAIM: &str = "kernel-versions.kmm.node.kubernetes.io";
/// The claim ACM's agent writes with the spoke's OpenShift version.
pub const VERSION_CLAIM: &str = "version.openshift.io";
/// The namespace KMM-hub is installed in by Red Hat's documentation.
pub const DEFAULT_HUB_NAMESPACE: &str = "openshift-kmm-hub";
/// How many custom claims the registration agent keeps by default (`--max-custom-cluster-claims`).
pub const CUSTOM_CLAIMS_KEPT: usize = 20;

/// A resource the hub serves, by group, version, kind and plural.
#[derive(Debug, Clone, Copy)]
pub struct HubResource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

pub const MANAGED_CLUSTER_MODULES: HubResource = HubResource {
    group: "hub.kmm.sigs.x-k8s.io",
    version: "v1beta1",
    kind: "ManagedClusterModule",
    plural: "managedclustermodules",
    namespaced: false,
};
pub const MANAGED_CLUSTERS: HubResource = HubResource {
    group: "cluster.open-cluster-management.io",
    version: "v1",
    kind: "ManagedCluster",
    plural: "managedclusters",
    namespaced: false,
};
pub const MANAGED_CLUSTER_INFOS: HubResource = HubResource {
    group: "internal.open-cluster-management.io",
    version: "v1beta1",
    kind: "ManagedClusterInfo",
    plural: "managedclusterinfos",
    namespaced: true,
};
pub const CLUSTER_GROUP_UPGRADES: HubResource = HubResource {
    group: "ran.openshift.io",
    version: "v1alpha1",
    kind: "ClusterGroupUpgrade",
    plural: "clustergroupupgrades",
    namespaced: true,
};
pub const POLICIES: HubResource = HubResource {
    group: "policy.open-cluster-management.io",
    version: "v1",
    kind: "Policy",
    plural: "policies",
    namespaced: true,
};

/// A ManagedClusterModule: a Module defined once on the hub for every cluster it selects.
#[derive(Debug, Clone)]
pub struct ManagedClusterModule {
    pub name: String,
    /// matchLabels on the ManagedClusters' labels.
    pub selector: BTreeMap<String, String>,
    pub spoke_namespace: String,
    /// A full `ModuleSpec`, every kernel mapping included.
    pub module_spec: Value,
}

/// A spoke as the hub sees it.
#[derive(Debug, Clone)]
pub struct ManagedCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// KMM's claim: the kernels its nodes run now (None: no claim).
    pub kernels: Option<Vec<String>>,
    /// The `version.openshift.io` claim, else the `openshiftVersion` label.
    pub version: Option<String>,
    /// How many claims the hub holds for it (to explain a missing KMM claim).
    pub claims: usize,
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl ManagedClusterModule {
    pub fn from_value(object: &Value) -> Result<Self> {
        let name = name_of(object);
        let spec = &object["spec"];
        if !spec["moduleSpec"].is_object() {
            return Err(Error::invalid(
                format!("ManagedClusterModule {name} has no spec.moduleSpec"),
                "fix the ManagedClusterModule: it does not match its CRD (hub.kmm.sigs.x-k8s.io/v1beta1)",
            ));
        }
        Ok(ManagedClusterModule {
            name,
            selector: string_map(&spec["selector"]),
            spoke_namespace: spec["spokeNamespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            module_spec: spec["moduleSpec"].clone(),
        })
    }

    /// The Module KMM-hub resolves its images from: the moduleSpec under the MCM's name, in
    /// the hub's own namespace (where its ModuleImagesConfig, builds and secrets are).
    pub fn module_value(&self, hub_namespace: &str) -> Value {
        serde_json::json!({
            "apiVersion": "kmm.sigs.x-k8s.io/v1beta1",
            "kind": "Module",
            "metadata": {"name": self.name, "namespace": hub_namespace},
            "spec": self.module_spec,
        })
    }

    /// Whether it selects `cluster` (matchLabels: every key with exactly that value; an empty
    /// selector selects every cluster, as KMM-hub's label selector does).
    pub fn selects(&self, cluster: &ManagedCluster) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| cluster.labels.get(k) == Some(v))
    }
}

impl ManagedCluster {
    pub fn from_value(object: &Value) -> Self {
        let claims: Vec<(&str, &str)> = object["status"]["clusterClaims"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["name"].as_str()?, c["value"].as_str().unwrap_or_default())))
            .collect();
        let claim = |name: &str| claims.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let labels = string_map(&object["metadata"]["labels"]);
        let kernels = claim(KERNEL_CLAIM).map(|value| {
            let mut kernels: Vec<String> = value
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            kernels.sort();
            kernels.dedup();
            kernels
        });
        let version = claim(VERSION_CLAIM)
            .map(str::to_string)
            .or_else(|| labels.get("openshiftVersion").cloned())
            .filter(|v| !v.is_empty());
        ManagedCluster {
            name: name_of(object),
            labels,
            kernels,
            version,
            claims: claims.len(),
        }
    }

    /// Why the hub does not know this cluster's kernels.
    pub fn without_claim(&self) -> String {
        let dropped = if self.claims >= CUSTOM_CLAIMS_KEPT {
            format!(
                "; it reports {} claims, and the hub keeps only {CUSTOM_CLAIMS_KEPT} custom claims by \
                 default (--max-custom-cluster-claims of the registration agent)",
                self.claims
            )
        } else {
            format!(
                "; or the claim was dropped: the hub keeps only {CUSTOM_CLAIMS_KEPT} custom claims \
                 by default"
            )
        };
        format!(
            "the hub does not know its kernels: ManagedCluster {} has no {KERNEL_CLAIM} claim \
             (KMM does not run there in managed mode, KMM_MANAGED=1{dropped})",
            self.name
        )
    }
}

/// An update ACM sees offered to a cluster (its ManagedClusterInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: String,
    pub image: Option<String>,
}

/// `status.distributionInfo.ocp.versionAvailableUpdates` of a ManagedClusterInfo.
pub fn offers(info: &Value) -> Vec<Offer> {
    info["status"]["distributionInfo"]["ocp"]["versionAvailableUpdates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| {
            Some(Offer {
                version: u["version"].as_str()?.to_string(),
                image: u["image"]
                    .as_str()
                    .filter(|i| !i.is_empty())
                    .map(str::to_string),
            })
        })
        .collect()
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
pub fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = string_map(&selector["matchLabels"])
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // An operator the API server would have refused: it selects nothing.
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// TALM's deprecated `clusterSelector` entry: `key=value`, or `key` (present, any value).
pub fn cluster_selector_matches(entry: &str, labels: &BTreeMap<String, String>) -> bool {
    match entry.split_once('=') {
        Some((k, v)) => labels.get(k.trim()).map(String::as_str) == Some(v.trim()),
        None => labels.contains_key(entry.trim()),
    }
}

/// A ClusterGroupUpgrade: the clusters it will upgrade, in batches, and the policies that say
/// to which release.
#[derive(Debug, Clone)]
pub struct ClusterGroupUpgrade {
    pub namespace: String,
    pub name: String,
    pub clusters: Vec<String>,
    pub label_selectors: Vec<Value>,
    pub cluster_selector: Vec<String>,
    pub canaries: Vec<String>,
    pub max_concurrency: usize,
    pub managed_policies: Vec<String>,
    pub enabled: bool,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

impl ClusterGroupUpgrade {
    pub fn from_value(object: &Value) -> Self {
        let spec = &object["spec"];
        ClusterGroupUpgrade {
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name: name_of(object),
            clusters: strings(&spec["clusters"]),
            label_selectors: spec["clusterLabelSelectors"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            cluster_selector: strings(&spec["clusterSelector"]),
            canaries: strings(&spec["remediationStrategy"]["canaries"]),
            max_concurrency: spec["remediationStrategy"]["maxConcurrency"]
                .as_u64()
                .filter(|n| *n > 0)
                .unwrap_or(1) as usize,
            managed_policies: strings(&spec["managedPolicies"]),
            enabled: spec["enable"].as_bool().unwrap_or(true),
        }
    }

    /// The clusters it upgrades, as TALM picks them: `spec.clusters` in order, then the
    /// ManagedClusters any `clusterLabelSelectors` entry or any deprecated `clusterSelector`
    /// entry matches (by name), each once.
    pub fn selected(&self, clusters: &[ManagedCluster]) -> Vec<String> {
        let mut chosen = Vec::new();
        for name in &self.clusters {
            if !chosen.contains(name) {
                chosen.push(name.clone());
            }
        }
        let mut matched: Vec<&str> = clusters
            .iter()
            .filter(|c| {
                self.label_selectors
                    .iter()
                    .any(|s| label_selector_matches(s, &c.labels))
                    || self
                        .cluster_selector
                        .iter()
                        .any(|s| cluster_selector_matches(s, &c.labels))
            })
            .map(|c| c.name.as_str())
            .collect();
        matched.sort();
        for name in matched {
            if !chosen.iter().any(|c| c == name) {
                chosen.push(name.to_string());
            }
        }
        chosen
    }

    /// The batch each cluster goes in (1 first): the canaries first, one batch, then the
    /// others `maxConcurrency` at a time, in the order `selected` gives.
    pub fn batches(&self, selected: &[String]) -> BTreeMap<String, usize> {
        let mut batch = BTreeMap::new();
        let canaries: Vec<&String> = self
            .canaries
            .iter()
            .filter(|c| selected.contains(c))
            .collect();
        let first = if canaries.is_empty() { 1 } else { 2 };
        for canary in canaries {
            batch.insert(canary.clone(), 1);
        }
        let rest: Vec<&String> = selected
            .iter()
            .filter(|c| !batch.contains_key(*c))
            .collect();
        for (i, name) in rest.iter().enumerate() {
            batch.insert((*name).clone(), first + i / self.max_concurrency);
        }
        batch
    }
}

/// Where a policy names its target release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredUpdate {
    Image(String),
    Version(String),
}

/// The `ClusterVersion` `spec.desiredUpdate` in the object templates of a Policy (its
/// ConfigurationPolicies), as TALM reads it: `image`, else `version`. A templated value
/// (`{{ … }}`) is refused, as TALM refuses it.
pub fn desired_update(policy: &Value) -> std::result::Result<Option<DesiredUpdate>, String> {
    let templates = policy["spec"]["policy-templates"].as_array();
    for template in templates.into_iter().flatten() {
        let objects = template["objectDefinition"]["spec"]["object-templates"].as_array();
        for object in objects.into_iter().flatten() {
            let definition = &object["objectDefinition"];
            if definition["kind"] != "ClusterVersion" {
                continue;
            }
            let update = &definition["spec"]["desiredUpdate"];
            let found = match (update["image"].as_str(), update["version"].as_str()) {
                (Some(image), _) if !image.is_empty() => DesiredUpdate::Image(image.to_string()),
                (_, Some(version)) if !version.is_empty() => {
                    DesiredUpdate::Version(version.to_string())
                }
                _ => continue,
            };
            let text = match &found {
                DesiredUpdate::Image(s) | DesiredUpdate::Version(s) => s,
            };
            if text.contains("{{") {
                return Err(format!(
                    "its ClusterVersion desiredUpdate is templated ({text}), which TALM refuses too"
                ));
            }
            return Ok(Some(found));
        }
    }
    Ok(None)
}

impl Cluster {
    /// Every object of `resource` (in `namespace`, or everywhere). Ok(None): the hub does not
    /// serve the resource.
    pub async fn list_hub(
        &self,
        resource: &HubResource,
        namespace: Option<&str>,
    ) -> Result<Option<Vec<Value>>> {
        let api = self.hub_api(resource, namespace);
        match api.list(&kube::api::ListParams::default()).await {
            Ok(list) => Ok(Some(
                list.items
                    .into_iter()
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .collect(),
            )),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(e) => Err(self.error(&format!("list {}.{}", resource.plural, resource.group), e)),
        }
    }

    /// One object of `resource`. Ok(None): it does not exist (or the resource is not served).
    pub async fn get_hub(
        &self,
        resource: &HubResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>> {
        let api = self.hub_api(resource, Some(namespace));
        match api.get_opt(name).await {
            Ok(found) => Ok(found.map(|o| serde_json::to_value(o).unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(e) => Err(self.error(&format!("read {} {namespace}/{name}", resource.kind), e)),
        }
    }

    fn hub_api(
        &self,
        resource: &HubResource,
        namespace: Option<&str>,
    ) -> kube::Api<kube::api::DynamicObject> {
        let gvk = kube::api::GroupVersionKind::gvk(resource.group, resource.version, resource.kind);
        let api_resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, resource.plural);
        match namespace.filter(|_| resource.namespaced) {
            Some(ns) => kube::Api::namespaced_with(self.client.clone(), ns, &api_resource),
            None => kube::Api::all_with(self.client.clone(), &api_resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster(name: &str, labels: Value, claims: Value) -> ManagedCluster {
        ManagedCluster::from_value(&json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"clusterClaims": claims}
        }))
    }

    #[test]
    fn the_kmm_claim_gives_the_kernels_and_the_version_comes_from_its_claim_or_label() {
        let c = cluster(
            "sno-1",
            json!({"openshiftVersion": "4.18.9"}),
            json!([{"name": KERNEL_CLAIM,
                    "value": "5.14.0-427.el9.x86_64\n5.14.0-427.el9.x86_64+rt\n5.14.0-427.el9.x86_64\n"},
                   {"name": VERSION_CLAIM, "value": "4.18.10"}]),
        );
        assert_eq!(
            c.kernels.as_deref(),
            Some(
                &[
                    "5.14.0-427.el9.x86_64".to_string(),
                    "5.14.0-427.el9.x86_64+rt".to_string()
                ][..]
            )
        );
        assert_eq!(c.version.as_deref(), Some("4.18.10"));
        let bare = cluster("sno-2", json!({"openshiftVersion": "4.18.9"}), json!([]));
        assert_eq!(bare.kernels, None);
        assert_eq!(bare.version.as_deref(), Some("4.18.9"));
        assert!(bare.without_claim().contains("managed mode"));
    }

    #[test]
    fn label_selectors_and_the_deprecated_cluster_selector_match_as_kubernetes_and_talm_do() {
        let labels: BTreeMap<String, String> = [("env", "prod"), ("upgrade", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sel = |v: Value| label_selector_matches(&v, &labels);
        assert!(sel(json!({"matchLabels": {"env": "prod"}})));
        assert!(!sel(json!({"matchLabels": {"env": "lab"}})));
        assert!(sel(
            json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["lab", "prod"]}]})
        ));
        assert!(sel(
            json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]})
        ));
        assert!(!sel(
            json!({"matchLabels": {"env": "prod"}, "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]})
        ));
        assert!(sel(json!({})));
        assert!(cluster_selector_matches("upgrade", &labels));
        assert!(cluster_selector_matches("env=prod", &labels));
        assert!(!cluster_selector_matches("env=lab", &labels));
    }

    #[test]
    fn a_cgu_selects_its_clusters_in_talm_order_and_batches_them() {
        let cgu = ClusterGroupUpgrade::from_value(&json!({
            "metadata": {"name": "u", "namespace": "ztp"},
            "spec": {"clusters": ["spoke5", "spoke1"],
                     "clusterLabelSelectors": [{"matchLabels": {"group": "b"}}],
                     "clusterSelector": ["upgrade2=true"],
                     "remediationStrategy": {"maxConcurrency": 2, "canaries": ["spoke1"]},
                     "managedPolicies": ["upgrade"], "enable": false}
        }));
        let all = [
            cluster("spoke1", json!({}), json!([])),
            cluster("spoke3", json!({"group": "b"}), json!([])),
            cluster("spoke2", json!({"upgrade2": "true"}), json!([])),
            cluster("spoke4", json!({"group": "a"}), json!([])),
        ];
        let selected = cgu.selected(&all);
        assert_eq!(selected, ["spoke5", "spoke1", "spoke2", "spoke3"]);
        let batches = cgu.batches(&selected);
        assert_eq!(batches["spoke1"], 1);
        assert_eq!(batches["spoke5"], 2);
        assert_eq!(batches["spoke2"], 2);
        assert_eq!(batches["spoke3"], 3);
        assert!(!cgu.enabled);
    }

    #[test]
    fn the_target_release_comes_from_the_cluster_version_template_of_a_policy() {
        let policy = |update: Value| {
            json!({"spec": {"policy-templates": [{"objectDefinition": {
                "kind": "ConfigurationPolicy",
                "spec": {"object-templates": [
                    {"objectDefinition": {"kind": "Namespace"}},
                    {"objectDefinition": {"apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion",
                                          "spec": {"desiredUpdate": update}}}]}}}]}})
        };
        assert_eq!(
            desired_update(&policy(json!({"version": "4.19.0"}))),
            Ok(Some(DesiredUpdate::Version("4.19.0".into())))
        );
        assert_eq!(
            desired_update(&policy(
                json!({"version": "4.19.0", "image": "q/r@sha256:1"})
            )),
            Ok(Some(DesiredUpdate::Image("q/r@sha256:1".into())))
        );
        assert!(desired_update(&policy(json!({"version": "{{hub .Version hub}}"}))).is_err());
        assert_eq!(desired_update(&json!({"spec": {}})), Ok(None));
    }
}
