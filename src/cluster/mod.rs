//! The Kubernetes side: a client built from kubectl-style flags, KMM discovery, and the few
//! objects the plugin reads and writes.

pub mod clusterversion;
pub mod follow;
pub mod hub;
pub mod kmm;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::error::{Error, Result, chain};
use crate::module::kernels::NodeInfo;
use crate::registry::auth::{AuthEntries, parse_auth_file};
use crate::registry::looks_like_tls;
use crate::registry::mirrors::{self, MirrorSet};
use kmm::{GROUP, KmmApi, PV_CRD, PVO_CRD, Resource};

/// kubectl's connection flags (kubectl does not pass its own to plugins).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
    /// None: no timeout.
    pub request_timeout: Option<Duration>,
    pub insecure_skip_tls_verify: bool,
}

pub struct Cluster {
    client: kube::Client,
    pub server: String,
    pub request_timeout: Option<Duration>,
    /// Read once per run: it may be asked for early (concurrently) and used later.
    cluster_version: tokio::sync::OnceCell<std::result::Result<Value, String>>,
}

/// `KUBECONFIG` merged as kubectl merges it: paths in order, the first to set a value wins,
/// missing files are skipped; `~/.kube/config` when the variable is unset.
/// A kubeconfig error without the kubeconfig's content: parsers quote the offending line and
/// values, and a kubeconfig holds tokens. The first line says where; quoted text is left out.
fn redacted(e: &(dyn std::error::Error + 'static)) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"\s*("[^"]*"|'[^']*'|`[^`]*`)"#).expect("static regex")
    });
    let text = chain(e);
    let first = text.lines().next().unwrap_or_default();
    QUOTED.replace_all(first, "").into_owned()
}

fn load_kubeconfig(explicit: Option<&PathBuf>) -> Result<Kubeconfig> {
    let read = |path: &PathBuf| {
        Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
            detail: format!("{}: {}", path.display(), redacted(&e)),
        })
    };
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(Error::KubeconfigMissing { path: path.clone() });
        }
        return read(path);
    }
    let paths: Vec<PathBuf> = match std::env::var_os("KUBECONFIG") {
        Some(value) if !value.is_empty() => std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => crate::platform::kube_home()
            .map(|h| vec![h.join(".kube").join("config")])
            .unwrap_or_default(),
    };
    let existing: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        let looked: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Kubeconfig {
            detail: format!("none of {} exists", looked.join(", ")),
        });
    }
    let mut merged = Kubeconfig::default();
    for path in existing {
        merged = merged.merge(read(path)?).map_err(|e| Error::Kubeconfig {
            detail: format!("{}: {}", path.display(), redacted(&e)),
        })?;
    }
    Ok(merged)
}

/// The contexts of the kubeconfig (as kubectl merges it), in its order, and the current one.
pub fn kubeconfig_contexts(explicit: Option<&PathBuf>) -> Result<(Vec<String>, Option<String>)> {
    let kubeconfig = load_kubeconfig(explicit)?;
    Ok((
        kubeconfig.contexts.iter().map(|c| c.name.clone()).collect(),
        kubeconfig.current_context.clone(),
    ))
}

impl Cluster {
    pub async fn connect(options: &ClusterOptions) -> Result<Cluster> {
        let kubeconfig = load_kubeconfig(options.kubeconfig.as_ref())?;
        for (flag, wanted, known) in [
            (
                "--context",
                &options.context,
                kubeconfig
                    .contexts
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
            ),
            (
                "--cluster",
                &options.cluster,
                kubeconfig.clusters.iter().map(|c| c.name.clone()).collect(),
            ),
            (
                "--user",
                &options.user,
                kubeconfig
                    .auth_infos
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
            ),
        ] {
            if let Some(name) = wanted
                && !known.contains(name)
            {
                return Err(Error::invalid(
                    format!("{flag} {name:?} is not in the kubeconfig"),
                    format!(
                        "known: {}",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            cluster: options.cluster.clone(),
            user: options.user.clone(),
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options)
            .await
            .map_err(|e| Error::Kubeconfig {
                detail: redacted(&e),
            })?;
        if options.insecure_skip_tls_verify {
            config.accept_invalid_certs = true;
            config.root_cert = None;
        }
        if let Some(user) = &options.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !options.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(options.as_groups.clone());
        }
        if let Some(timeout) = options.request_timeout {
            config.connect_timeout = Some(timeout);
            config.read_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
        }
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client =
            kube::Client::try_from(config).map_err(|e| Error::Kubeconfig { detail: chain(&e) })?;
        Ok(Cluster {
            client,
            server,
            request_timeout: options.request_timeout,
            cluster_version: tokio::sync::OnceCell::new(),
        })
    }

    /// Turn a kube error into ours; `action` says what was being done ("create X").
    pub fn error(&self, action: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(status) => match status.code {
                401 => Error::ClusterUnauthorized {
                    server: self.server.clone(),
                    detail: status.message,
                },
                403 => Error::Forbidden {
                    detail: status.message,
                },
                code => Error::ClusterApi {
                    action: action.to_string(),
                    code,
                    detail: status.message,
                },
            },
            other => {
                let detail = chain(&other);
                let detail = if detail.to_ascii_lowercase().contains("timed out")
                    || detail.contains("elapsed")
                {
                    format!("no answer in time ({detail}); --request-timeout bounds each request")
                } else if looks_like_tls(&detail) {
                    format!(
                        "TLS failed ({detail}); fix the CA in the kubeconfig, or pass --insecure-skip-tls-verify"
                    )
                } else {
                    detail
                };
                Error::ClusterUnreachable {
                    server: self.server.clone(),
                    detail,
                }
            }
        }
    }

    pub fn api(&self, resource: &Resource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &resource.api_resource())
    }

    fn core<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// A CRD by name; None when it does not exist.
    async fn crd(&self, name: &str) -> Result<Option<Value>> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        match api.get_opt(name).await {
            Ok(crd) => Ok(crd.map(|c| serde_json::to_value(c).unwrap_or_default())),
            Err(e) => Err(self.error(&format!("read CRD {name}"), e)),
        }
    }

    /// Which KMM this is, from its CRDs; from discovery when CRDs may not be read.
    pub async fn detect_kmm(&self) -> Result<KmmApi> {
        let (pv, pvo) = tokio::join!(self.crd(PV_CRD), self.crd(PVO_CRD));
        let api = match (pv, pvo) {
            (Ok(pv), Ok(pvo)) => kmm::from_crds(pv.as_ref(), pvo.as_ref()),
            (Err(Error::Forbidden { .. }), _) | (_, Err(Error::Forbidden { .. })) => {
                self.detect_by_discovery().await?
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        if api.pv.is_none() && api.pvo.is_none() {
            return Err(Error::KmmNotInstalled {
                looked_for: format!(
                    "neither CustomResourceDefinition {PVO_CRD} nor {PV_CRD} (API group {GROUP})"
                ),
            });
        }
        Ok(api)
    }

    /// Discovery says which kinds and versions exist, not their spec: a server-side dry run of
    /// a KMM ≥ 2.4 PreflightValidationOCP tells that spec apart from the older `releaseImage`.
    async fn detect_by_discovery(&self) -> Result<KmmApi> {
        let groups = self
            .client
            .list_api_groups()
            .await
            .map_err(|e| self.error("list API groups", e))?;
        let Some(group) = groups.groups.iter().find(|g| g.name == GROUP) else {
            return Ok(KmmApi {
                pv: None,
                pvo: None,
                shared_module_objects: false,
                source: "discovery (reading CRDs is forbidden)",
            });
        };
        let versions: Vec<String> = group.versions.iter().map(|v| v.version.clone()).collect();
        let version = if versions.iter().any(|v| v == "v1beta2") {
            "v1beta2"
        } else {
            "v1beta1"
        };
        let resources = self
            .client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await
            .map_err(|e| self.error("list KMM resources", e))?;
        let has = |plural: &str| resources.resources.iter().any(|r| r.name == plural);
        let pv = has("preflightvalidations").then(|| Resource::pv(version));
        let pvo = if has("preflightvalidationsocp") {
            let resource = Resource::pvo(version);
            let probe = serde_json::json!({
                "apiVersion": resource.api_version(), "kind": resource.kind,
                "metadata": {"name": "kubectl-kmm-probe"},
                "spec": {"kernelVersion": "0.0.0-probe", "dtkImage": "", "pushBuiltImage": false},
            });
            let probe: DynamicObject =
                serde_json::from_value(probe).map_err(|e| Error::ClusterApi {
                    action: "probe".into(),
                    code: 0,
                    detail: e.to_string(),
                })?;
            let params = PostParams {
                dry_run: true,
                ..Default::default()
            };
            let spec = match self.api(&resource).create(&params, &probe).await {
                Ok(_) => kmm::OcpSpec::Kernel,
                Err(kube::Error::Api(status))
                    if status.code == 422 || status.message.contains("releaseImage") =>
                {
                    kmm::OcpSpec::Release {
                        use_rt_kernel: true,
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 409 => kmm::OcpSpec::Kernel,
                Err(e) => return Err(self.error("probe PreflightValidationOCP (dry run)", e)),
            };
            Some((resource, spec))
        } else {
            None
        };
        // Without the CRDs a PreflightValidation's era is unknown: assume the strict one.
        let shared_module_objects = !matches!(pvo, Some((_, kmm::OcpSpec::Release { .. })));
        Ok(KmmApi {
            pv,
            pvo,
            shared_module_objects,
            source: "discovery and a server-side dry run (reading CRDs is forbidden)",
        })
    }

    /// Every node's labels, kernel, OS image and architecture; None when nodes may not be listed.
    pub async fn nodes(&self) -> Result<Option<Vec<NodeInfo>>> {
        use k8s_openapi::api::core::v1::Node;
        let api: Api<Node> = Api::all(self.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(Some(
                list.items
                    .into_iter()
                    .map(|n| {
                        let labels: BTreeMap<String, String> =
                            n.metadata.labels.unwrap_or_default();
                        let info = n.status.and_then(|s| s.node_info);
                        let goarch = labels
                            .get("kubernetes.io/arch")
                            .cloned()
                            .or_else(|| info.as_ref().map(|i| i.architecture.clone()))
                            .unwrap_or_default();
                        NodeInfo {
                            name: n.metadata.name.unwrap_or_default(),
                            kernel: info
                                .as_ref()
                                .map(|i| i.kernel_version.clone())
                                .unwrap_or_default(),
                            os_image: info.map(|i| i.os_image).unwrap_or_default(),
                            labels,
                            goarch,
                        }
                    })
                    .collect(),
            )),
            Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
            Err(e) => Err(self.error("list nodes", e)),
        }
    }

    /// The global pull secret (`openshift-config/pull-secret`). Err(reason) when unreadable.
    pub async fn pull_secret(&self) -> std::result::Result<AuthEntries, String> {
        use k8s_openapi::api::core::v1::Secret;
        let api: Api<Secret> = self.core(Some("openshift-config"));
        let secret = match api.get_opt("pull-secret").await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("openshift-config/pull-secret does not exist".into()),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err("reading openshift-config/pull-secret is forbidden".into());
            }
            Err(e) => return Err(format!("openshift-config/pull-secret: {}", chain(&e))),
        };
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .ok_or("openshift-config/pull-secret has no .dockerconfigjson key")?;
        parse_auth_file(&data.0).map_err(|e| format!("openshift-config/pull-secret: {e}"))
    }

    fn openshift_resource(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
    ) -> kube::discovery::ApiResource {
        kube::discovery::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    /// ClusterVersion `version`; Err(reason) when there is none (not OpenShift) or it may not
    /// be read. Read once per run.
    pub async fn cluster_version(&self) -> std::result::Result<Value, String> {
        self.cluster_version
            .get_or_init(|| self.read_cluster_version())
            .await
            .clone()
    }

    async fn read_cluster_version(&self) -> std::result::Result<Value, String> {
        let resource = Self::openshift_resource(
            "config.openshift.io",
            "v1",
            "ClusterVersion",
            "clusterversions",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        match api.get_opt("version").await {
            Ok(Some(cv)) => Ok(serde_json::to_value(cv).unwrap_or_default()),
            Ok(None) => Err("the cluster has no ClusterVersion".into()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err("the cluster has no ClusterVersion (not OpenShift)".into())
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                Err("reading ClusterVersion is forbidden".into())
            }
            Err(e) => Err(format!("reading ClusterVersion failed: {}", chain(&e))),
        }
    }

    /// The cluster's ImageDigestMirrorSets, ImageTagMirrorSets and ImageContentSourcePolicies,
    /// and what could not be read.
    pub async fn mirror_sets(&self) -> (Vec<MirrorSet>, Vec<String>) {
        let kinds = [
            (
                "config.openshift.io",
                "v1",
                "ImageDigestMirrorSet",
                "imagedigestmirrorsets",
            ),
            (
                "config.openshift.io",
                "v1",
                "ImageTagMirrorSet",
                "imagetagmirrorsets",
            ),
            (
                "operator.openshift.io",
                "v1alpha1",
                "ImageContentSourcePolicy",
                "imagecontentsourcepolicies",
            ),
        ];
        // The three lists at once: one round trip.
        let lists =
            futures::future::join_all(kinds.iter().map(|&(group, version, kind, plural)| {
                let resource = Self::openshift_resource(group, version, kind, plural);
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                async move { (kind, plural, api.list(&ListParams::default()).await) }
            }))
            .await;
        let mut sets = Vec::new();
        let mut notes = Vec::new();
        for (kind, plural, listed) in lists {
            match listed {
                Ok(list) => {
                    for object in list.items {
                        let mut value = serde_json::to_value(object).unwrap_or_default();
                        value["kind"] = Value::String(kind.into());
                        match mirrors::sets_of(&value, None) {
                            Ok(found) => sets.extend(found),
                            Err(reason) => notes.push(format!("ignoring a {kind}: {reason}")),
                        }
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    notes.push(format!(
                        "listing {plural} is forbidden: their mirrors are not applied"
                    ));
                }
                Err(e) => notes.push(format!("listing {plural} failed: {}", chain(&e))),
            }
        }
        (sets, notes)
    }

    pub async fn get(&self, resource: &Resource, name: &str) -> Result<Option<Value>> {
        match self.api(resource).get_opt(name).await {
            Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or_default())),
            Err(e) => Err(self.error(&format!("read {} {name}", resource.kind), e)),
        }
    }

    pub async fn list(&self, resource: &Resource) -> Result<Vec<Value>> {
        let list = self
            .api(resource)
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error(&format!("list {}", resource.plural), e))?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect())
    }

    /// Create `object`; with `dry_run`, the server validates and defaults it and stores nothing
    /// (`dryRun=All`). The answer is the object as the server has (or would have) it.
    pub async fn create(
        &self,
        resource: &Resource,
        object: &Value,
        dry_run: bool,
    ) -> Result<Value> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let dynamic: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| Error::ClusterApi {
                action: format!("build {} {name}", resource.kind),
                code: 0,
                detail: e.to_string(),
            })?;
        match self
            .api(resource)
            .create(
                &PostParams {
                    dry_run,
                    ..Default::default()
                },
                &dynamic,
            )
            .await
        {
            Ok(created) => Ok(serde_json::to_value(created).unwrap_or_default()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::AlreadyExists {
                kind: resource.kind.into(),
                name,
            }),
            Err(e) => Err(self.error(&format!("create {} {name}", resource.kind), e)),
        }
    }

    /// Delete (gone already counts as deleted).
    pub async fn delete(&self, resource: &Resource, name: &str) -> Result<()> {
        match self
            .api(resource)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(self.error(&format!("delete {} {name}", resource.kind), e)),
        }
    }

    /// Wait, by watch, until `name` no longer exists.
    pub async fn wait_gone(&self, resource: &Resource, name: &str) -> Result<()> {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let api = self.api(resource);
        let config = self
            .watcher_config()
            .fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).default_backoff().boxed();
        let mut present = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => present = false,
                Ok(watcher::Event::InitApply(_) | watcher::Event::Apply(_)) => present = true,
                Ok(watcher::Event::InitDone) if !present => return Ok(()),
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => return Ok(()),
                Err(e) => {
                    if let Some(fatal) = fatal_watch_error(self, &e) {
                        return Err(fatal);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn watcher_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        // A read timeout shorter than the server's watch timeout would cut every watch.
        match self.request_timeout {
            Some(t) => config.timeout(t.as_secs().saturating_sub(1).clamp(1, 290) as u32),
            None => config,
        }
    }

    /// Every Module (in `namespace`, or all namespaces), as the API server has them.
    pub async fn modules(&self, namespace: Option<&str>) -> Result<Vec<Value>> {
        let resource = Resource::module().api_resource();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(Error::KmmNotInstalled {
                    looked_for: format!("no Module resource (modules.{GROUP})"),
                });
            }
            Err(e) => return Err(self.error("list modules", e)),
        };
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect())
    }

    /// The day-1 BootModuleConfigs, each with its `kind` set; none where the resource does not
    /// exist (upstream KMM, or KMM before 2.4).
    pub async fn boot_module_configs(&self, namespace: Option<&str>) -> Result<Vec<Value>> {
        let resource = Resource::boot_module_config().api_resource();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
            Err(e) => return Err(self.error("list bootmoduleconfigs", e)),
        };
        Ok(list
            .items
            .into_iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).unwrap_or_default();
                value["kind"] = Value::String("BootModuleConfig".into());
                value
            })
            .collect())
    }

    /// A Secret's type and data. Ok(None): it does not exist; Err: why it could not be read.
    pub async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> std::result::Result<Option<(String, BTreeMap<String, Vec<u8>>)>, String> {
        use k8s_openapi::api::core::v1::Secret;
        let api: Api<Secret> = self.core(Some(namespace));
        match api.get_opt(name).await {
            Ok(Some(secret)) => Ok(Some((
                secret.type_.unwrap_or_default(),
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            ))),
            Ok(None) => Ok(None),
            Err(e) => Err(self.read_refusal(&format!("Secret {namespace}/{name}"), e)),
        }
    }

    /// Whether a Secret or ConfigMap exists, reading its metadata only (never a Secret's data).
    pub async fn object_exists(
        &self,
        config_map: bool,
        namespace: &str,
        name: &str,
    ) -> std::result::Result<bool, String> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let (kind, found) = if config_map {
            let api: Api<ConfigMap> = self.core(Some(namespace));
            (
                "ConfigMap",
                api.get_metadata_opt(name).await.map(|o| o.is_some()),
            )
        } else {
            let api: Api<Secret> = self.core(Some(namespace));
            (
                "Secret",
                api.get_metadata_opt(name).await.map(|o| o.is_some()),
            )
        };
        found.map_err(|e| self.read_refusal(&format!("{kind} {namespace}/{name}"), e))
    }

    /// Why reading `what` failed, for a message (forbidden is the usual case).
    fn read_refusal(&self, what: &str, e: kube::Error) -> String {
        match e {
            kube::Error::Api(status) if status.code == 403 => {
                format!("reading {what} is forbidden")
            }
            other => format!("reading {what} failed: {}", self.error("read", other)),
        }
    }

    /// `state.waiting` reasons of the pull pods of `module` (label
    /// `kmm.node.kubernetes.io/image-owner=<module>-preflight`), when they can be read.
    pub async fn pull_pod_reasons(&self, namespace: &str, module: &str) -> Option<String> {
        use k8s_openapi::api::core::v1::Pod;
        let api: Api<Pod> = self.core(Some(namespace));
        let params = ListParams::default().labels(&format!(
            "kmm.node.kubernetes.io/image-owner={module}-preflight"
        ));
        let pods = api.list(&params).await.ok()?;
        let reasons: Vec<String> = pods
            .items
            .iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .map(|w| match (&w.reason, &w.message) {
                (Some(r), Some(m)) => format!("{r}: {m}"),
                (Some(r), None) => r.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => "waiting".into(),
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// Watch errors that retrying cannot fix: unauthorized, forbidden, not found.
pub fn fatal_watch_error(cluster: &Cluster, e: &kube::runtime::watcher::Error) -> Option<Error> {
    use kube::runtime::watcher::Error as W;
    let status = match e {
        W::InitialListFailed(kube::Error::Api(s)) | W::WatchStartFailed(kube::Error::Api(s)) => s,
        W::WatchError(s) => s,
        _ => return None,
    };
    matches!(status.code, 401 | 403 | 404)
        .then(|| cluster.error("watch", kube::Error::Api(status.clone())))
}
