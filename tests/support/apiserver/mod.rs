//! A test Kubernetes API server that answers like a real kube-apiserver (see the recordings in
//! the KMM reference's `k8s-wire/`): discovery, CRDs through apiextensions, create/get/list/
//! delete, the status subresource, watch with bookmarks, Status bodies for 401/403/404/409/422,
//! 410 Expired on watch. It serves HTTPS with a generated CA and checks bearer tokens, records
//! every request, and can forbid requests, delay them, and drop watch connections.

pub mod schema;
pub mod store;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use store::{ApiError, ResourceType, Store};

use super::registry::{TlsFiles, generate_tls};

type Body = BoxBody<Bytes, Infallible>;

/// Which KMM the test cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kmm {
    /// OpenShift, KMM 2.4 and later (era C): PVO with kernelVersion/dtkImage.
    Ocp24,
    /// OpenShift, KMM 2.1–2.3 (era B): PVO with releaseImage, v1beta1 and v1beta2.
    Ocp23,
    /// OpenShift, KMM 1.1–2.0 (era A): v1beta1 only, `crStatuses` keyed by Module name.
    Ocp20,
    /// OpenShift, KMM 1.0: like 2.0, without `useRTKernel`.
    Ocp10,
    /// KMM outside OpenShift, 2.4 and later: PreflightValidation only.
    Upstream24,
    /// No KMM at all.
    None,
}

impl Kmm {
    pub fn is_era_c(self) -> bool {
        matches!(self, Kmm::Ocp24 | Kmm::Upstream24)
    }
}

fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crds")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_yaml_ng::from_str(&text).unwrap()
}

/// Era A: the 2.3 CRD with v1beta2 gone and v1beta1 the storage version.
fn v1beta1_only(mut crd: Value, with_rt: bool) -> Value {
    let versions: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"] == "v1beta1")
        .cloned()
        .map(|mut v| {
            v["storage"] = json!(true);
            if !with_rt
                && let Some(props) =
                    v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                        .as_object_mut()
            {
                props.remove("useRTKernel");
            }
            v
        })
        .collect();
    crd["spec"]["versions"] = json!(versions);
    crd
}

pub fn kmm_crds(kmm: Kmm) -> Vec<Value> {
    let module = if kmm.is_era_c() || kmm == Kmm::None {
        fixture("kmm-2.4-and-later/modules.yaml")
    } else {
        fixture("kmm-2.3-and-earlier/modules.yaml")
    };
    match kmm {
        Kmm::Ocp24 => vec![
            fixture("kmm-2.4-and-later/preflightvalidations.yaml"),
            fixture("kmm-2.4-and-later/preflightvalidationsocp.yaml"),
            fixture("kmm-2.4-and-later/bootmoduleconfigs.yaml"),
            module,
        ],
        Kmm::Ocp23 => vec![
            fixture("kmm-2.3-and-earlier/preflightvalidations.yaml"),
            fixture("kmm-2.3-and-earlier/preflightvalidationsocp.yaml"),
            module,
        ],
        Kmm::Ocp20 | Kmm::Ocp10 => vec![
            v1beta1_only(
                fixture("kmm-2.3-and-earlier/preflightvalidations.yaml"),
                true,
            ),
            v1beta1_only(
                fixture("kmm-2.3-and-earlier/preflightvalidationsocp.yaml"),
                kmm == Kmm::Ocp20,
            ),
            module,
        ],
        Kmm::Upstream24 => vec![
            fixture("kmm-2.4-and-later/preflightvalidations.yaml"),
            module,
        ],
        Kmm::None => vec![],
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub impersonate_user: Option<String>,
    pub impersonate_groups: Vec<String>,
    /// The `Accept` header (metadata-only reads ask for `as=PartialObjectMetadata`).
    pub accept: String,
    pub body: Option<Value>,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// A query parameter, decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        query_map(&self.query).remove(key)
    }
}

/// One RBAC policy rule, as in a Role or ClusterRole.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RbacRule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    pub verbs: Vec<String>,
}

/// Roles and ClusterRoles applied to one user: anything they do not allow is 403.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    pub user: String,
    /// (namespace of a Role, or None for a ClusterRole, rule).
    pub rules: Vec<(Option<String>, RbacRule)>,
}

impl Rbac {
    /// Every Role and ClusterRole in a multi-document YAML file.
    pub fn from_yaml(user: &str, text: &str) -> Rbac {
        let mut rules = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            let namespace = match value["kind"].as_str() {
                Some("ClusterRole") => None,
                Some("Role") => Some(value["metadata"]["namespace"].as_str().unwrap().to_string()),
                _ => continue,
            };
            for rule in value["rules"].as_array().into_iter().flatten() {
                rules.push((
                    namespace.clone(),
                    serde_json::from_value(rule.clone()).unwrap(),
                ));
            }
        }
        Rbac {
            user: user.into(),
            rules,
        }
    }

    /// The index of a rule that allows this request, if any.
    pub fn allows(&self, r: &Recorded) -> Option<usize> {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        let resource = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        self.rules.iter().position(|(namespace, rule)| {
            namespace.as_ref().is_none_or(|ns| *ns == r.namespace)
                && has(&rule.api_groups, &r.group)
                && has(&rule.resources, &resource)
                && has(&rule.verbs, &r.verb)
                && (rule.resource_names.is_empty()
                    || (!r.name.is_empty() && rule.resource_names.contains(&r.name)))
        })
    }
}

/// A rule that makes matching requests 403 Forbidden.
#[derive(Debug, Clone)]
pub struct Forbid {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
}

struct Shared {
    store: Arc<Store>,
    tokens: HashMap<String, String>,
    requests: Mutex<Vec<Recorded>>,
    forbidden: Mutex<Vec<Forbid>>,
    rbac: Mutex<Option<Rbac>>,
    delays: Mutex<Vec<(String, Duration)>>,
    drop_watches: watch::Sender<u64>,
    /// Woken on every request and every watch start or end.
    request_seen: tokio::sync::Notify,
    /// Established watches: serial → resource plural.
    live_watches: Mutex<HashMap<u64, String>>,
    watch_serial: AtomicU64,
    bookmark_interval: Mutex<Duration>,
}

/// Removes a watch from the live set when its task ends, however it ends.
struct LiveWatch {
    shared: Arc<Shared>,
    serial: u64,
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.shared
            .live_watches
            .lock()
            .unwrap()
            .remove(&self.serial);
        self.shared.request_seen.notify_waiters();
    }
}

pub struct ApiServer {
    pub url: String,
    pub addr: String,
    pub store: Arc<Store>,
    pub tls: TlsFiles,
    /// The token of user "admin"; "alice" has "alice-token".
    pub token: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn builtins() -> Vec<ResourceType> {
    let mut types = vec![
        ResourceType::builtin("", "v1", "nodes", "Node", false),
        ResourceType::builtin("", "v1", "pods", "Pod", true),
        ResourceType::builtin("", "v1", "secrets", "Secret", true),
        ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true),
        ResourceType::builtin("", "v1", "namespaces", "Namespace", false),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        ),
        ResourceType::builtin(
            "config.openshift.io",
            "v1",
            "clusterversions",
            "ClusterVersion",
            false,
        ),
        ResourceType::builtin(
            "config.openshift.io",
            "v1",
            "imagedigestmirrorsets",
            "ImageDigestMirrorSet",
            false,
        ),
        ResourceType::builtin(
            "config.openshift.io",
            "v1",
            "imagetagmirrorsets",
            "ImageTagMirrorSet",
            false,
        ),
        ResourceType::builtin(
            "operator.openshift.io",
            "v1alpha1",
            "imagecontentsourcepolicies",
            "ImageContentSourcePolicy",
            false,
        ),
    ];
    types[4].short_names = vec!["crd".into(), "crds".into()];
    types
}

impl ApiServer {
    /// Start on 127.0.0.1 with a free port, with `kmm`'s CRDs installed.
    pub async fn start(kmm: Kmm) -> ApiServer {
        super::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let tls = generate_tls(dir.path());
        let store = Arc::new(Store::new());
        for ty in builtins() {
            store.register(ty);
        }
        let server_config = {
            let certs = rustls_pemfile_certs(&std::fs::read(&tls.cert).unwrap());
            let key = rustls_pemfile_key(&std::fs::read(&tls.key).unwrap());
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        };
        let mut tokens = HashMap::new();
        tokens.insert("admin-token".to_string(), "admin".to_string());
        tokens.insert("alice-token".to_string(), "alice".to_string());
        let (drop_watches, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: store.clone(),
            tokens,
            requests: Mutex::default(),
            forbidden: Mutex::default(),
            rbac: Mutex::default(),
            delays: Mutex::default(),
            drop_watches,
            request_seen: tokio::sync::Notify::new(),
            live_watches: Mutex::default(),
            watch_serial: AtomicU64::new(0),
            bookmark_interval: Mutex::new(Duration::from_millis(500)),
        });
        let server = ApiServer::listen(shared.clone(), server_config).await;
        let (addr, task) = server;
        let api = ApiServer {
            url: format!("https://{addr}"),
            addr,
            store,
            tls,
            token: "admin-token".into(),
            shared,
            task,
            dir,
        };
        for crd in kmm_crds(kmm) {
            api.install_crd(crd);
        }
        api
    }

    async fn listen(
        shared: Arc<Shared>,
        config: Arc<rustls::ServerConfig>,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (addr, task)
    }

    pub fn install_crd(&self, crd: Value) {
        let crd_type = self
            .store
            .find_type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        self.store.register(ResourceType::from_crd(&crd));
        self.store.put(&crd_type, crd);
    }

    /// Path of the CA certificate clients should trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.tls.ca_pem.clone()
    }

    /// The CA as kubeconfig's `certificate-authority-data`.
    pub fn ca_data(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&self.tls.ca_pem).unwrap())
    }

    /// A kubeconfig for this server: context `test`, user `admin` (token auth).
    pub fn kubeconfig(&self) -> String {
        let ca = self.ca_data();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             users:\n- name: admin\n  user:\n    token: {}\n- name: alice\n  user:\n    token: alice-token\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n\
             current-context: test\n",
            self.url, self.token
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Wait until a recorded request satisfies `pred` (an event, not a sleep).
    pub async fn wait_for_request(&self, pred: impl Fn(&Recorded) -> bool) -> Recorded {
        loop {
            let notified = self.shared.request_seen.notified();
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return r;
            }
            notified.await;
        }
    }

    /// Wait until `condition` holds, re-checked on every request and watch start or end.
    /// Wait for the request (or watch start or end) after which `condition` holds. The bound
    /// only turns a test that would hang into one that fails.
    pub async fn wait_until(&self, condition: impl Fn() -> bool) {
        let wait = async {
            loop {
                let notified = self.shared.request_seen.notified();
                if condition() {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("the API server never saw what the test waited for");
        }
    }

    /// Serials of the established watches on `resource` (serials only grow).
    pub fn live_watches(&self, resource: &str) -> Vec<u64> {
        let live = self.shared.live_watches.lock().unwrap();
        live.iter()
            .filter(|(_, r)| *r == resource)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The serial the next watch will be greater than.
    pub fn watch_serial(&self) -> u64 {
        self.shared.watch_serial.load(Ordering::SeqCst)
    }

    /// How often watches get a BOOKMARK (they carry the newest resourceVersion).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self.shared.bookmark_interval.lock().unwrap() = interval;
    }

    /// Write something unrelated, so that history moves on.
    pub fn touch(&self) {
        let serial = self.watch_serial();
        let n = self.store.resource_version();
        self.put(
            "",
            "Namespace",
            json!({"metadata": {"name": format!("touch-{n}-{serial}")}}),
        );
    }

    pub fn forbid(&self, verb: &'static str, group: &'static str, resource: &'static str) {
        self.shared.forbidden.lock().unwrap().push(Forbid {
            verb,
            group,
            resource,
        });
    }

    /// Enforce `rbac` for its user (others are unrestricted).
    pub fn enforce(&self, rbac: Rbac) {
        *self.shared.rbac.lock().unwrap() = Some(rbac);
    }

    /// Hold every request whose path contains `path_part` for `delay` before answering.
    pub fn delay(&self, path_part: &str, delay: Duration) {
        self.shared
            .delays
            .lock()
            .unwrap()
            .push((path_part.to_string(), delay));
    }

    /// Close every open watch connection now (clients must reconnect).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|g| *g += 1);
    }

    /// Forget the event history: resuming watches get 410 Expired and must relist.
    pub fn compact(&self) {
        self.store.compact();
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn ty(&self, group: &str, kind: &str) -> ResourceType {
        self.store
            .find_kind(group, kind)
            .unwrap_or_else(|| panic!("no {kind} type"))
    }

    /// A worker node running the RHEL 9.4 kernel, as OpenShift labels and describes it.
    pub fn add_node(&self, name: &str, goarch: &str) {
        let kernel = format!(
            "5.14.0-427.50.1.el9_4.{}",
            if goarch == "arm64" {
                "aarch64"
            } else {
                "x86_64"
            }
        );
        self.add_node_with(name, goarch, &kernel, &[]);
    }

    /// A worker node running `kernel` (`…+rt`, `…+64k`, `….el10…`), with extra labels; a RHEL 10
    /// kernel comes with a CoreOS 10 `osImage`.
    pub fn add_node_with(&self, name: &str, goarch: &str, kernel: &str, labels: &[(&str, &str)]) {
        let mut all = serde_json::Map::new();
        all.insert("kubernetes.io/arch".into(), json!(goarch));
        all.insert("kubernetes.io/os".into(), json!("linux"));
        all.insert("node-role.kubernetes.io/worker".into(), json!(""));
        for (k, v) in labels {
            all.insert(k.to_string(), json!(v));
        }
        let os_image = if kernel.contains(".el10") {
            "Red Hat Enterprise Linux CoreOS 10.0.20260601-0 (Coughlan)"
        } else {
            "Red Hat Enterprise Linux CoreOS 418.94.202510091522-0 (Plow)"
        };
        self.store.put(
            &self.ty("", "Node"),
            json!({"metadata": {"name": name, "labels": all},
                   "status": {"nodeInfo": {"architecture": goarch, "operatingSystem": "linux",
                                           "kernelVersion": kernel, "osImage": os_image}}}),
        );
    }

    pub fn delete_node(&self, name: &str) {
        let _ = self.store.delete(&self.ty("", "Node"), "", name);
    }

    /// A Module, validated and defaulted against the real Module CRD as `kubectl apply` would
    /// have it; panics when the CRD refuses it (a broken test).
    pub fn add_module(&self, namespace: &str, name: &str, spec: Value) -> Value {
        let ty = self.ty("kmm.sigs.x-k8s.io", "Module");
        let object = json!({"apiVersion": ty.api_version(&ty.storage), "kind": "Module",
                            "metadata": {"name": name, "namespace": namespace}, "spec": spec});
        match self
            .store
            .create(&ty, &ty.storage.clone(), namespace, object, false, true)
        {
            Ok(written) => written.object,
            Err(e) => panic!("the Module CRD refuses {namespace}/{name}: {}", e.message),
        }
    }

    /// Change a Module's spec as `kubectl edit` would: its `generation` moves.
    pub fn update_module(&self, namespace: &str, name: &str, spec: Value) {
        let ty = self.ty("kmm.sigs.x-k8s.io", "Module");
        self.store
            .update(&ty, namespace, name, |o| o["spec"] = spec.clone())
            .unwrap_or_else(|e| panic!("cannot update Module {namespace}/{name}: {}", e.message));
    }

    /// A Secret of registry credentials (`kubernetes.io/dockerconfigjson`).
    pub fn add_registry_secret(&self, namespace: &str, name: &str, auth_file: &str) {
        use base64::Engine;
        self.put(
            "",
            "Secret",
            json!({"metadata": {"name": name, "namespace": namespace},
                   "type": "kubernetes.io/dockerconfigjson",
                   "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(auth_file)}}),
        );
    }

    /// An Opaque Secret with these data keys.
    pub fn add_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) {
        use base64::Engine;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(v);
                (k.to_string(), Value::String(encoded))
            })
            .collect();
        self.put(
            "",
            "Secret",
            json!({"metadata": {"name": name, "namespace": namespace},
                   "type": "Opaque", "data": data}),
        );
    }

    pub fn delete_module(&self, namespace: &str, name: &str) {
        let _ = self
            .store
            .delete(&self.ty("kmm.sigs.x-k8s.io", "Module"), namespace, name);
    }

    /// Delete an object as a client would (finalizers hold it).
    pub fn remove(&self, group: &str, kind: &str, namespace: &str, name: &str) {
        let _ = self.store.delete(&self.ty(group, kind), namespace, name);
    }

    pub fn put(&self, group: &str, kind: &str, object: Value) -> Value {
        self.store.put(&self.ty(group, kind), object)
    }

    pub fn get(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.store.get(&self.ty(group, kind), namespace, name).ok()
    }

    pub fn list(&self, group: &str, kind: &str) -> Vec<Value> {
        self.store.list(&self.ty(group, kind), None).0
    }

    /// Remove finalizers from an object (lets a pending delete finish).
    pub fn clear_finalizers(&self, group: &str, kind: &str, name: &str) {
        let _ = self.store.update(&self.ty(group, kind), "", name, |o| {
            o["metadata"]["finalizers"] = json!([]);
        });
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

fn rustls_pemfile_key(pem: &[u8]) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).unwrap()
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(serde_json::to_vec_pretty(body).unwrap())).boxed())
        .unwrap()
}

/// `Warning: 299 - "…"` headers, one per warning.
fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let value = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = value.parse() {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    with_warnings(json_response(error.code, &error.body()), &error.warnings)
}

fn query_map(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (super::percent_decode(k), super::percent_decode(v))
        })
        .collect()
}

/// `a=b,c!=d` against an object's labels.
fn labels_match(selector: &str, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim().trim_end_matches('=')].as_str() == Some(v.trim())
        } else {
            labels[term.trim()].is_string()
        }
    })
}

fn fields_match(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        let v = v.trim_start_matches('=');
        match k {
            "metadata.name" => object["metadata"]["name"].as_str() == Some(v),
            "metadata.namespace" => object["metadata"]["namespace"].as_str() == Some(v),
            _ => true,
        }
    })
}

/// What a request addresses, parsed from its path.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => (String::new(), version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (group.to_string(), version.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [] => (String::new(), None, None),
        [plural] => (plural.to_string(), None, None),
        [plural, name] => (plural.to_string(), Some(name.to_string()), None),
        [plural, name, sub] => (
            plural.to_string(),
            Some(name.to_string()),
            Some(sub.to_string()),
        ),
        _ => return None,
    };
    Some(Target {
        group,
        version,
        namespace,
        plural,
        name,
        subresource,
    })
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&body_bytes).ok();
    let params = query_map(&query);

    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let user = token.as_ref().and_then(|t| shared.tokens.get(t)).cloned();
    let impersonate_user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let impersonate_groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();

    let target = parse_target(&path);
    let verb = match (
        method.as_str(),
        target.as_ref().and_then(|t| t.name.as_ref()),
    ) {
        ("GET", _) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => "unknown",
    };
    let effective_user = impersonate_user
        .clone()
        .or(user.clone())
        .unwrap_or_default();
    let recorded = Recorded {
        at: std::time::Instant::now(),
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        verb: verb.into(),
        group: target.as_ref().map(|t| t.group.clone()).unwrap_or_default(),
        resource: target
            .as_ref()
            .map(|t| t.plural.clone())
            .unwrap_or_default(),
        subresource: target
            .as_ref()
            .and_then(|t| t.subresource.clone())
            .unwrap_or_default(),
        namespace: target
            .as_ref()
            .and_then(|t| t.namespace.clone())
            .unwrap_or_default(),
        name: target
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_default(),
        user: effective_user.clone(),
        impersonate_user,
        impersonate_groups,
        accept: headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: body.clone(),
    };
    shared.requests.lock().unwrap().push(recorded.clone());
    shared.request_seen.notify_waiters();

    let delay = shared
        .delays
        .lock()
        .unwrap()
        .iter()
        .find(|(part, _)| path.contains(part.as_str()))
        .map(|(_, d)| *d);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    if user.is_none() {
        return json_response(
            401,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        );
    }

    // Discovery is open to every authenticated user.
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match path.trim_end_matches('/') {
        "/api" => {
            return json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            );
        }
        "/apis" if accept.contains("as=APIGroupDiscoveryList") => {
            // kubectl tells the aggregated answer from the legacy one by its media type.
            let mut response = json_response(200, &discovery_groups(&shared.store, &accept));
            if let Ok(v) =
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList".parse()
            {
                response.headers_mut().insert("content-type", v);
            }
            return response;
        }
        "/apis" => return json_response(200, &discovery_groups(&shared.store, &accept)),
        _ => {}
    }
    if let Some(group) = path.strip_prefix("/apis/").filter(|p| !p.contains('/')) {
        return match discovery_group(&shared.store, group) {
            Some(g) => json_response(200, &g),
            None => error_response(&ApiError {
                code: 404,
                reason: "NotFound",
                message: "the server could not find the requested resource".into(),
                details: None,
                ..Default::default()
            }),
        };
    }
    let Some(target) = target else {
        return error_response(&ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
            ..Default::default()
        });
    };
    if target.plural.is_empty() {
        return json_response(
            200,
            &discovery_resources(&shared.store, &target.group, &target.version),
        );
    }
    // GET /api/v1 and /apis/<g>/<v> have no plural: handled above. Now resources.
    let Some(ty) = shared
        .store
        .find_type(&target.group, &target.version, &target.plural)
    else {
        return error_response(&ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
            ..Default::default()
        });
    };

    let denied_by_rbac = shared
        .rbac
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|rbac| rbac.user == effective_user && rbac.allows(&recorded).is_none());
    let forbidden = denied_by_rbac
        || shared.forbidden.lock().unwrap().iter().any(|f| {
            (f.verb == verb || f.verb == "*")
                && f.group == target.group
                && f.resource == target.plural
        });
    if forbidden {
        let scope = match &target.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let subject = match &target.name {
            Some(n) => format!("{} \"{n}\" is forbidden", ty.qualified()),
            None => format!("{} is forbidden", ty.qualified()),
        };
        return error_response(&ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{subject}: User \"{effective_user}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
                ty.plural, ty.group
            ),
            details: Some(match &target.name {
                Some(name) => json!({"name": name, "group": ty.group, "kind": ty.plural}),
                None => json!({"group": ty.group, "kind": ty.plural}),
            }),
            ..Default::default()
        });
    }

    let namespace = target.namespace.clone().unwrap_or_default();
    let version = target.version.clone();
    match (verb, target.subresource.as_deref()) {
        ("watch", None) => {
            watch_response(
                shared.clone(),
                ty,
                version,
                target.namespace.clone(),
                &params,
            )
            .await
        }
        ("list", None) => {
            let (items, rv) = shared.store.list(&ty, target.namespace.as_deref());
            let items: Vec<Value> = items
                .iter()
                .filter(|o| {
                    params
                        .get("labelSelector")
                        .is_none_or(|s| labels_match(s, o))
                })
                .filter(|o| {
                    params
                        .get("fieldSelector")
                        .is_none_or(|s| fields_match(s, o))
                })
                .map(|o| store::convert(&ty, o, &version))
                .collect();
            if accept.contains("as=Table") {
                return json_response(200, &table(&ty, &items, &rv.to_string()));
            }
            json_response(
                200,
                &json!({"apiVersion": ty.api_version(&version), "kind": format!("{}List", ty.kind),
                        "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            )
        }
        ("get", None) | ("get", Some("status")) => {
            match shared
                .store
                .get(&ty, &namespace, target.name.as_deref().unwrap_or_default())
            {
                // kubectl and kube-rs ask for metadata only with this media type parameter.
                Ok(o) if accept.contains("as=PartialObjectMetadata") => json_response(
                    200,
                    &json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": o["metadata"]}),
                ),
                Ok(o) if accept.contains("as=Table") => {
                    let rv = o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    json_response(200, &table(&ty, &[o], &rv))
                }
                Ok(o) => json_response(200, &store::convert(&ty, &o, &version)),
                Err(e) => error_response(&e),
            }
        }
        ("create", None) => {
            let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
            let strict = params.get("fieldValidation").is_some_and(|f| f == "Strict");
            match shared.store.create(
                &ty,
                &version,
                &namespace,
                body.unwrap_or(Value::Null),
                dry_run,
                strict,
            ) {
                Ok(written) => with_warnings(
                    json_response(201, &store::convert(&ty, &written.object, &version)),
                    &written.warnings,
                ),
                Err(e) => error_response(&e),
            }
        }
        ("patch", Some("status")) | ("update", Some("status")) => {
            let patch = body.unwrap_or(Value::Null);
            match shared.store.patch_status(
                &ty,
                &version,
                &namespace,
                target.name.as_deref().unwrap_or_default(),
                &patch,
            ) {
                Ok(o) => json_response(200, &store::convert(&ty, &o, &version)),
                Err(e) => error_response(&e),
            }
        }
        ("delete", None) => {
            match shared
                .store
                .delete(&ty, &namespace, target.name.as_deref().unwrap_or_default())
            {
                Ok((object, true)) => json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": object["metadata"]["name"], "group": ty.group, "kind": ty.plural, "uid": object["metadata"]["uid"]}}),
                ),
                Ok((object, false)) => json_response(200, &store::convert(&ty, &object, &version)),
                Err(e) => error_response(&e),
            }
        }
        _ => error_response(&ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "{verb} is not supported by this test server on {}",
                ty.plural
            ),
            details: None,
            ..Default::default()
        }),
    }
}

/// `kubectl get`'s view (`Accept: …;as=Table;g=meta.k8s.io;v=v1`): a CRD without printer columns
/// (KMM's have none) gets Name and Age, as the real server's default; built-in types Name and
/// Created At. Each row carries the object's metadata (`includeObject=Metadata`).
fn table(ty: &ResourceType, items: &[Value], resource_version: &str) -> Value {
    let custom = ty.group.contains('.') && !ty.group.ends_with(".k8s.io");
    let second = if custom { "Age" } else { "Created At" };
    let now = std::time::SystemTime::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let created = o["metadata"]["creationTimestamp"].as_str().unwrap_or_default();
            let when = if custom { age(created, now) } else { created.to_string() };
            json!({"cells": [o["metadata"]["name"], when],
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": second, "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ],
        "rows": rows,
    })
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 UTC timestamp, as the real server writes ages.
fn age(created: &str, now: std::time::SystemTime) -> String {
    let seconds = store::parse_timestamp(created)
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0, |d| d.as_secs());
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        7200..172800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

fn discovery_groups(store: &Store, accept: &str) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for ty in store.types().iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == ty.group) {
            Some((_, versions)) => {
                for v in &ty.versions {
                    if !versions.contains(v) {
                        versions.push(v.clone());
                    }
                }
            }
            None => groups.push((ty.group.clone(), ty.versions.clone())),
        }
    }
    if accept.contains("as=APIGroupDiscoveryList") {
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, versions)| {
                json!({"metadata": {"name": g}, "versions": versions.iter().map(|v| json!({
                    "version": v,
                    "resources": store.types().iter().filter(|t| &t.group == g && t.versions.contains(v)).map(|t| json!({
                        "resource": t.plural,
                        "responseKind": {"group": g, "version": v, "kind": t.kind},
                        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": t.singular,
                        "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
                        "shortNames": t.short_names,
                        "subresources": if t.status_subresource {
                            json!([{"subresource": "status", "responseKind": {"group": g, "version": v, "kind": t.kind},
                                    "verbs": ["get", "patch", "update"]}])
                        } else {
                            json!([])
                        },
                    })).collect::<Vec<_>>(),
                    "freshness": "Current"
                })).collect::<Vec<_>>()})
            })
            .collect();
        return json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|(g, versions)| group_json(g, versions)).collect::<Vec<_>>()})
}

fn group_json(group: &str, versions: &[String]) -> Value {
    json!({
        "name": group,
        "versions": versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect::<Vec<_>>(),
        "preferredVersion": {"groupVersion": format!("{group}/{}", versions[0]), "version": versions[0]},
    })
}

fn discovery_group(store: &Store, group: &str) -> Option<Value> {
    let mut versions: Vec<String> = Vec::new();
    for ty in store.types().iter().filter(|t| t.group == group) {
        for v in &ty.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    if versions.is_empty() {
        return None;
    }
    versions.sort_by(|a, b| b.cmp(a));
    let mut g = group_json(group, &versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn discovery_resources(store: &Store, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for ty in store
        .types()
        .iter()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
    {
        resources.push(json!({
            "name": ty.plural, "singularName": ty.singular, "namespaced": ty.namespaced, "kind": ty.kind,
            "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
            "shortNames": ty.short_names,
        }));
        if ty.status_subresource {
            resources.push(json!({"name": format!("{}/status", ty.plural), "singularName": "", "namespaced": ty.namespaced,
                                  "kind": ty.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch_response(
    shared: Arc<Shared>,
    ty: ResourceType,
    version: String,
    namespace: Option<String>,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let label_selector = params.get("labelSelector").cloned();
    let field_selector = params.get("fieldSelector").cloned();
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let since: Option<u64> = params
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0);
    let matches = {
        let namespace = namespace.clone();
        move |o: &Value| {
            namespace
                .as_ref()
                .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
                && label_selector.as_ref().is_none_or(|s| labels_match(s, o))
                && field_selector.as_ref().is_none_or(|s| fields_match(s, o))
        }
    };

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    let store = shared.store.clone();
    // Without a resourceVersion: the current objects as ADDED, then changes.
    let start = match since {
        Some(rv) => store
            .subscribe(&ty.key(), rv)
            .map(|(past, rx)| (Vec::new(), past, rx)),
        None => {
            let (items, rv) = store.list(&ty, namespace.as_deref());
            store
                .subscribe(&ty.key(), rv)
                .map(|(past, rx)| (items, past, rx))
        }
    };
    let mut drop_rx = shared.drop_watches.subscribe();
    let bookmark_every = *shared.bookmark_interval.lock().unwrap();
    // Established (live, droppable) only when the resourceVersion is not too old.
    let live = start.is_ok().then(|| {
        let serial = shared.watch_serial.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .live_watches
            .lock()
            .unwrap()
            .insert(serial, ty.plural.clone());
        shared.request_seen.notify_waiters();
        LiveWatch {
            shared: shared.clone(),
            serial,
        }
    });
    tokio::spawn(async move {
        let _live = live;
        let (initial, past, mut live) = match start {
            Ok(s) => s,
            Err((old, current)) => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {old} ({current})"), "reason": "Expired", "code": 410});
                let _ = tx.send(Ok(Frame::data(watch_line("ERROR", &status)))).await;
                return;
            }
        };
        let mut last_rv = 0;
        for object in initial.iter().filter(|o| matches(o)) {
            if tx
                .send(Ok(Frame::data(watch_line(
                    "ADDED",
                    &store::convert(&ty, object, &version),
                ))))
                .await
                .is_err()
            {
                return;
            }
        }
        for event in past {
            last_rv = event.rv;
            if matches(&event.object)
                && tx
                    .send(Ok(Frame::data(watch_line(
                        event.kind,
                        &store::convert(&ty, &event.object, &version),
                    ))))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
        loop {
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) if event.type_key == ty.key() && event.rv > last_rv => {
                        last_rv = event.rv;
                        if matches(&event.object)
                            && tx.send(Ok(Frame::data(watch_line(event.kind, &store::convert(&ty, &event.object, &version))))).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    let rv = store.resource_version();
                    let bookmark = json!({"apiVersion": ty.api_version(&version), "kind": ty.kind,
                                          "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(Ok(Frame::data(watch_line("BOOKMARK", &bookmark)))).await.is_err() {
                        return;
                    }
                }
                _ = drop_rx.changed() => return,
                _ = &mut deadline => return,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
