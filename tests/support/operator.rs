//! A simulated KMM operator: it reconciles PreflightValidation(OCP) objects in the test API
//! server and writes their status the way each KMM era's controller does.
//!
//! Era C (KMM ≥ 2.4): every non-deleting Module with a moduleLoader gets an entry; no mapping is
//! `Failure`/`Done` "mapping not found"; a mapped Module is `InProgress`/`Image` until its image
//! check ends: `Success` "verified image exists", or, when the image is missing, a build/sign
//! section decides (`Success`, or `Failure` "… and build/sign failed"). A missing image without
//! build or sign never finishes: it stays `InProgress` and its pull pod sits in ImagePullBackOff.
//! Every write replaces the whole list and resets every `lastTransitionTime`; entries of deleted
//! Modules are kept. A PreflightValidationOCP gets a PreflightValidation of the same name that it
//! owns, and a copy of its status.
//!
//! Eras A/B (KMM ≤ 2.3): entries start `False`/`Image`; verified is `True`/`Done`; anything else
//! is `False`/`Requeued` (retried later, never final); entries of deleted Modules are removed.
//! Era A keeps `status.crStatuses` keyed by Module name; the PVO's `releaseImage` gives the kernel.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::apiserver::store::{ResourceType, Store, timestamp};
use super::apiserver::{ApiServer, Kmm};

const GROUP: &str = "kmm.sigs.x-k8s.io";

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    pub kmm: Kmm,
    /// Container images that exist (the nodes can pull them).
    pub images: HashSet<String>,
    /// Of those, the ones without `<dirName>/lib/modules/<kernel>/<moduleName>.ko`: KMM ≤ 2.3's
    /// registry check finds that out (False, "does not contain kernel module"); KMM ≥ 2.4 never
    /// looks inside (Success).
    pub without_module: HashSet<String>,
    /// Digest-pinned release image → (kernel, RT kernel), for eras A/B.
    pub releases: HashMap<String, (String, Option<String>)>,
    /// How a build (or sign) of a missing image ends.
    pub builds_succeed: bool,
    /// How long one simulated image check or build takes.
    pub step: Duration,
    /// Checks started together in one reconcile are finished this many at a time, one batch
    /// per `step` (None: all at once), so that status changes come in bursts.
    pub burst: Option<usize>,
}

impl OperatorConfig {
    pub fn new(kmm: Kmm) -> Self {
        OperatorConfig {
            kmm,
            images: HashSet::new(),
            without_module: HashSet::new(),
            releases: HashMap::new(),
            builds_succeed: true,
            step: Duration::from_millis(300),
            burst: None,
        }
    }
}

enum Action {
    Nothing,
    Mirror,
    Reconcile,
}

pub struct Operator {
    task: tokio::task::JoinHandle<()>,
    pub config: Arc<Mutex<OperatorConfig>>,
    paused: tokio::sync::watch::Sender<bool>,
}

impl Operator {
    /// Change how the simulated operator behaves (images that exist, build outcome, pace).
    pub fn configure(&self, change: impl FnOnce(&mut OperatorConfig)) {
        change(&mut self.config.lock().unwrap());
    }

    /// Stop reconciling (as if the operator pod were down) until `resume`.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a Module resolves to for a kernel (kmm-api.md §5.2).
#[derive(Debug, Clone, PartialEq)]
struct Mapped {
    image: String,
    build: bool,
    sign: bool,
}

fn normalize_kernel(kernel: &str) -> String {
    kernel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn template(image: &str, kernel: &str, module: &str, namespace: &str) -> String {
    let k = normalize_kernel(kernel);
    let parts: Vec<&str> = k.split(['.', ',', '-']).collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_string();
    let vars = [
        ("KERNEL_FULL_VERSION", k.clone()),
        ("KERNEL_VERSION", k.clone()),
        ("KERNEL_XYZ", format!("{}.{}.{}", part(0), part(1), part(2))),
        ("KERNEL_X", part(0)),
        ("KERNEL_Y", part(1)),
        ("KERNEL_Z", part(2)),
        ("MOD_NAME", module.to_string()),
        ("MOD_NAMESPACE", namespace.to_string()),
    ];
    let mut out = image.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), &value);
        out = out.replace(&format!("${name}"), &value);
    }
    out
}

fn resolve(module: &Value, kernel: &str) -> Option<Mapped> {
    let container = &module["spec"]["moduleLoader"]["container"];
    let name = module["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = module["metadata"]["namespace"].as_str().unwrap_or_default();
    for mapping in container["kernelMappings"].as_array().into_iter().flatten() {
        let literal = mapping["literal"].as_str().unwrap_or_default();
        let matched = if !literal.is_empty() {
            literal == kernel
        } else {
            mapping["regexp"]
                .as_str()
                .and_then(|r| Regex::new(r).ok())
                .is_some_and(|r| r.is_match(kernel))
        };
        if matched {
            let image = mapping["containerImage"]
                .as_str()
                .filter(|i| !i.is_empty())
                .or(container["containerImage"].as_str())
                .unwrap_or_default();
            return Some(Mapped {
                image: template(image, kernel, name, namespace),
                build: mapping["build"].is_object() || container["build"].is_object(),
                sign: mapping["sign"].is_object() || container["sign"].is_object(),
            });
        }
    }
    None
}

#[derive(Debug, Clone)]
struct Check {
    image: String,
    started: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    namespace: String,
    name: String,
    status: &'static str,
    stage: &'static str,
    reason: String,
}

struct Reconciler {
    store: Arc<Store>,
    config: Arc<Mutex<OperatorConfig>>,
    pv: ResourceType,
    pvo: Option<ResourceType>,
    module: ResourceType,
    pod: ResourceType,
    checks: HashMap<(String, String, String), Check>,
    /// Final era-C results: never checked again (kmm-api.md §4.2 step 3).
    final_results: HashMap<(String, String, String), Entry>,
    next_due: Option<Instant>,
    /// Checks started in the current reconcile pass (for `burst`).
    started_in_pass: usize,
}

impl Reconciler {
    fn era_c(&self) -> bool {
        self.config.lock().unwrap().kmm.is_era_c()
    }

    fn modules(&self) -> Vec<Value> {
        self.store
            .list(&self.module, None)
            .0
            .into_iter()
            .filter(|m| m["metadata"]["deletionTimestamp"].is_null())
            .filter(|m| m["spec"]["moduleLoader"].is_object())
            .collect()
    }

    fn due(&mut self, at: Instant) {
        if self.next_due.is_none_or(|d| at < d) {
            self.next_due = Some(at);
        }
    }

    fn ensure_pull_pod(&self, namespace: &str, module: &str, image: &str) {
        let name = format!("{module}-preflight-pull-pod-x7k2p");
        if self.store.get(&self.pod, namespace, &name).is_ok() {
            return;
        }
        self.store.put(
            &self.pod,
            json!({
                "metadata": {"name": name, "namespace": namespace, "labels": {
                    "kmm.node.kubernetes.io/image-owner": format!("{module}-preflight"),
                    "kmm.node.kubernetes.io/pull-pod-type": "until-success"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "puller", "image": image, "command": ["/bin/sh", "-c", "exit 0"]}]},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "puller", "ready": false, "restartCount": 0, "image": image,
                    "state": {"waiting": {"reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\": ErrImagePull: initializing source docker://{image}: reading manifest: manifest unknown")}}}]}
            }),
        );
    }

    /// One module's entry for PV `pv` checking `kernel`.
    fn entry(&mut self, pv: &str, kernel: &str, module: &Value, now: Instant) -> Entry {
        let namespace = module["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = module["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (pv.to_string(), namespace.clone(), name.clone());
        let era_c = self.era_c();
        let (step, exists_set, without_module, builds_succeed, burst) = {
            let c = self.config.lock().unwrap();
            (
                c.step,
                c.images.clone(),
                c.without_module.clone(),
                c.builds_succeed,
                c.burst,
            )
        };
        let entry = |status: &'static str, stage: &'static str, reason: String| Entry {
            namespace: namespace.clone(),
            name: name.clone(),
            status,
            stage,
            reason,
        };
        if era_c && let Some(done) = self.final_results.get(&key) {
            return done.clone();
        }
        let Some(mapped) = resolve(module, kernel) else {
            let e = if era_c {
                entry("Failure", "Done", "mapping not found".into())
            } else {
                entry(
                    "False",
                    "Requeued",
                    format!(
                        "failed to process kernel mapping in the module {name} for kernel version {kernel}"
                    ),
                )
            };
            if era_c {
                self.final_results.insert(key, e.clone());
            }
            return e;
        };
        let check = match self.checks.get(&key) {
            Some(c) if c.image == mapped.image => c.clone(),
            _ => {
                // In bursts: the n-th check of this pass waits for the batches before it.
                let wait = burst.map_or(0, |b| self.started_in_pass / b.max(1)) as u32;
                self.started_in_pass += 1;
                let c = Check {
                    image: mapped.image.clone(),
                    started: now + step * wait,
                };
                self.checks.insert(key.clone(), c.clone());
                c
            }
        };
        let image_checked = check.started + step;
        let built = check.started + step * 2;
        let exists = exists_set.contains(&mapped.image);
        // KMM ≥ 2.4 while it waits; KMM ≤ 2.3 when the image lacks the module (or is missing).
        let in_progress = || {
            entry(
                "InProgress",
                "Image",
                "verification is not finished yet".into(),
            )
        };
        let no_module = || {
            entry(
                "False",
                "Requeued",
                format!(
                    "image {} does not contain kernel module for kernel {kernel} on any layer",
                    mapped.image
                ),
            )
        };
        let e = if now < image_checked {
            self.due(image_checked);
            if era_c {
                in_progress()
            } else {
                entry("False", "Image", String::new())
            }
        } else if exists && !era_c && without_module.contains(&mapped.image) {
            no_module()
        } else if exists {
            if era_c {
                entry("Success", "Done", "verified image exists".into())
            } else {
                entry("True", "Done", "Verification successful (image accessible and verified), this Module will not be verified again in this Preflight CR".into())
            }
        } else if mapped.build || mapped.sign {
            if now < built {
                self.due(built);
                if era_c {
                    in_progress()
                } else {
                    entry("False", "Build", "Waiting for build verification".into())
                }
            } else if builds_succeed {
                if era_c {
                    entry("Success", "Done", "verified image exists".into())
                } else {
                    entry("True", "Done", "Verification successful (build compiles), this Module will not be verified again in this Preflight CR".into())
                }
            } else if era_c {
                entry(
                    "Failure",
                    "Done",
                    "verified image does not exist and build/sign failed".into(),
                )
            } else {
                entry(
                    "False",
                    "Requeued",
                    format!("build of image {} failed", mapped.image),
                )
            }
        } else if era_c {
            // No build, no sign: the pull pod retries forever (kmm-api.md §4.2).
            self.ensure_pull_pod(&namespace, &name, &mapped.image);
            in_progress()
        } else {
            no_module()
        };
        if era_c && (e.status == "Success" || e.status == "Failure") {
            self.final_results.insert(key, e.clone());
        }
        e
    }

    fn status_of(&self, entries: &[Entry], v1beta1_only: bool) -> Value {
        let now = timestamp();
        if v1beta1_only {
            let map: serde_json::Map<String, Value> = entries
                .iter()
                .map(|e| {
                    let mut v = json!({"verificationStatus": e.status, "verificationStage": e.stage, "lastTransitionTime": now});
                    if !e.reason.is_empty() {
                        v["statusReason"] = json!(e.reason);
                    }
                    (e.name.clone(), v)
                })
                .collect();
            json!({"crStatuses": map})
        } else {
            let list: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let mut v = json!({"name": e.name, "namespace": e.namespace, "verificationStatus": e.status,
                                       "verificationStage": e.stage, "lastTransitionTime": now});
                    if !e.reason.is_empty() {
                        v["statusReason"] = json!(e.reason);
                    }
                    v
                })
                .collect();
            json!({"modules": list})
        }
    }

    fn reconcile_pv(&mut self, pv: &Value, now: Instant) {
        let name = pv["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if pv["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let kernel = pv["spec"]["kernelVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let v1beta1_only = self.pv.storage == "v1beta1";
        self.started_in_pass = 0;
        let modules = self.modules();
        let mut entries: Vec<Entry> = modules
            .iter()
            .map(|m| self.entry(&name, &kernel, m, now))
            .collect();
        if self.era_c() {
            // Entries of Modules deleted since are never removed in era C.
            for old in pv["status"]["modules"].as_array().into_iter().flatten() {
                let (ns, n) = (
                    old["namespace"].as_str().unwrap_or_default(),
                    old["name"].as_str().unwrap_or_default(),
                );
                if !entries.iter().any(|e| e.namespace == ns && e.name == n) {
                    let status = match old["verificationStatus"].as_str() {
                        Some("Success") => "Success",
                        Some("Failure") => "Failure",
                        _ => "InProgress",
                    };
                    entries.push(Entry {
                        namespace: ns.into(),
                        name: n.into(),
                        status,
                        stage: if status == "InProgress" {
                            "Image"
                        } else {
                            "Done"
                        },
                        reason: old["statusReason"].as_str().unwrap_or_default().into(),
                    });
                }
            }
        }
        let mut status = self.status_of(&entries, v1beta1_only);
        if v1beta1_only {
            // A merge patch would keep deleted keys: clear the map first.
            let _ = self.store.patch_status(
                &self.pv,
                &self.pv.storage,
                "",
                &name,
                &json!({"status": {"crStatuses": null}}),
            );
        }
        if !v1beta1_only && entries.is_empty() {
            status = json!({"modules": []});
        }
        let _ = self.store.patch_status(
            &self.pv,
            &self.pv.storage,
            "",
            &name,
            &json!({"status": status}),
        );
    }

    /// A PVO gets a PV of the same name that it owns; its status mirrors the PV's.
    fn reconcile_pvo(&mut self, pvo: &Value) {
        let Some(pvo_type) = self.pvo.clone() else {
            return;
        };
        let name = pvo["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if pvo["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let spec = &pvo["spec"];
        let kernel = if let Some(k) = spec["kernelVersion"].as_str() {
            Some(k.to_string())
        } else {
            let release = spec["releaseImage"].as_str().unwrap_or_default();
            let config = self.config.lock().unwrap();
            config.releases.get(release).and_then(|(kernel, rt)| {
                if spec["useRTKernel"].as_bool() == Some(true) {
                    rt.clone()
                } else {
                    Some(kernel.clone())
                }
            })
        };
        let Some(kernel) = kernel else { return };
        match self.store.get(&self.pv, "", &name) {
            Ok(pv) => {
                // Era C propagates spec edits; eras A/B created the PV once.
                if self.era_c() && pv["spec"]["kernelVersion"] != json!(kernel) {
                    let _ = self.store.update(&self.pv, "", &name, |o| {
                        o["spec"]["kernelVersion"] = json!(kernel);
                    });
                }
                let status = pv["status"].clone();
                if !status.is_null() && pvo["status"] != status {
                    let mut patch = json!({"status": status});
                    if pvo_type.storage == "v1beta1" {
                        let _ = self.store.patch_status(
                            &pvo_type,
                            &pvo_type.storage,
                            "",
                            &name,
                            &json!({"status": {"crStatuses": null}}),
                        );
                        patch = json!({"status": pv["status"]});
                    }
                    let _ =
                        self.store
                            .patch_status(&pvo_type, &pvo_type.storage, "", &name, &patch);
                }
            }
            Err(_) => {
                let owner = json!([{"apiVersion": pvo["apiVersion"], "kind": "PreflightValidationOCP", "name": name,
                                    "uid": pvo["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
                self.store.put(
                    &self.pv,
                    json!({"metadata": {"name": name, "ownerReferences": owner},
                           "spec": {"kernelVersion": kernel, "pushBuiltImage": spec["pushBuiltImage"].as_bool().unwrap_or(false)}}),
                );
            }
        }
    }

    fn mirror_all(&mut self) {
        if let Some(pvo_type) = self.pvo.clone() {
            for pvo in self.store.list(&pvo_type, None).0 {
                self.reconcile_pvo(&pvo);
            }
        }
    }

    fn reconcile_all(&mut self) {
        let now = Instant::now();
        self.next_due = None;
        if let Some(pvo_type) = self.pvo.clone() {
            for pvo in self.store.list(&pvo_type, None).0 {
                self.reconcile_pvo(&pvo);
            }
        }
        for pv in self.store.list(&self.pv, None).0 {
            self.reconcile_pv(&pv, now);
        }
        // The PV statuses just written flow into their PVOs.
        self.mirror_all();
    }
}

impl Operator {
    pub fn start(api: &ApiServer, config: OperatorConfig) -> Operator {
        let store = api.store.clone();
        let config = Arc::new(Mutex::new(config));
        let pv = store
            .find_kind(GROUP, "PreflightValidation")
            .expect("KMM CRDs installed");
        let mut reconciler = Reconciler {
            store: store.clone(),
            config: config.clone(),
            pvo: store.find_kind(GROUP, "PreflightValidationOCP"),
            module: store.find_kind(GROUP, "Module").expect("Module CRD"),
            pod: store.find_kind("", "Pod").expect("pods"),
            pv,
            checks: HashMap::new(),
            final_results: HashMap::new(),
            next_due: None,
            started_in_pass: 0,
        };
        let watched: HashSet<String> = [
            Some(reconciler.pv.key()),
            reconciler.pvo.as_ref().map(|t| t.key()),
            Some(reconciler.module.key()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let pv_key = reconciler.pv.key();
        let mut events = store.events.subscribe();
        let (paused, mut paused_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // Generation per object: status-only writes do not trigger a reconcile
            // (GenerationChangedPredicate), except that PVOs mirror their PV's status.
            let mut generations: HashMap<(String, String, String), Value> = HashMap::new();
            reconciler.reconcile_all();
            loop {
                let wake = reconciler.next_due;
                let action = tokio::select! {
                    event = events.recv() => match event {
                        Ok(e) if watched.contains(&e.type_key) => {
                            let meta = &e.object["metadata"];
                            let key = (
                                e.type_key.clone(),
                                meta["namespace"].as_str().unwrap_or_default().to_string(),
                                meta["name"].as_str().unwrap_or_default().to_string(),
                            );
                            let generation = meta["generation"].clone();
                            let changed = e.kind != "MODIFIED" || generations.get(&key) != Some(&generation);
                            generations.insert(key, generation);
                            if changed {
                                Action::Reconcile
                            } else if e.type_key == pv_key {
                                Action::Mirror
                            } else {
                                Action::Nothing
                            }
                        }
                        Ok(_) => Action::Nothing,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Action::Reconcile,
                        Err(_) => return,
                    },
                    _ = async { tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)).await }, if wake.is_some() => Action::Reconcile,
                    changed = paused_rx.changed() => match changed {
                        Ok(()) => Action::Reconcile,
                        Err(_) => return,
                    },
                };
                if *paused_rx.borrow() {
                    // Down: events pile up; everything is reconciled again on resume.
                    continue;
                }
                match action {
                    Action::Reconcile => reconciler.reconcile_all(),
                    Action::Mirror => reconciler.mirror_all(),
                    Action::Nothing => {}
                }
            }
        });
        Operator {
            task,
            config,
            paused,
        }
    }
}
