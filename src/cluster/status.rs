//! Reading a preflight's status and deciding whether it is complete (kmm-api.md §3, §4.6).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

/// One Module's entry in a preflight status, whatever the era's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// None for the era-A `crStatuses` map, keyed by Module name only.
    pub namespace: Option<String>,
    pub name: String,
    pub status: String,
    pub stage: String,
    pub reason: String,
}

fn entry(namespace: Option<String>, name: String, v: &Value) -> Entry {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Entry {
        namespace,
        name,
        status: text("verificationStatus"),
        stage: text("verificationStage"),
        reason: text("statusReason"),
    }
}

/// Entries from `status.modules` (v1beta2) or `status.crStatuses` (v1beta1: keys `ns/name` and,
/// for the same entries, `name`; in KMM ≤ 2.0 only `name`).
pub fn entries(status: &Value) -> Vec<Entry> {
    if let Some(list) = status["modules"].as_array() {
        return list
            .iter()
            .map(|m| {
                entry(
                    m["namespace"].as_str().map(str::to_string),
                    m["name"].as_str().unwrap_or_default().to_string(),
                    m,
                )
            })
            .collect();
    }
    let Some(map) = status["crStatuses"].as_object() else {
        return Vec::new();
    };
    let namespaced: Vec<Entry> = map
        .iter()
        .filter_map(|(key, v)| {
            key.split_once('/')
                .map(|(ns, name)| entry(Some(ns.into()), name.into(), v))
        })
        .collect();
    if !namespaced.is_empty() {
        return namespaced;
    }
    map.iter()
        .map(|(key, v)| entry(None, key.clone(), v))
        .collect()
}

/// A Module that preflight checks: not being deleted, with a moduleLoader.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModuleRef {
    pub namespace: String,
    pub name: String,
}

pub fn checked_modules(modules: &[Value]) -> Vec<ModuleRef> {
    let mut refs: Vec<ModuleRef> = modules
        .iter()
        .filter(|m| m["metadata"]["deletionTimestamp"].is_null())
        .filter(|m| m["spec"]["moduleLoader"].is_object())
        .map(|m| ModuleRef {
            namespace: m["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: m["metadata"]["name"].as_str().unwrap_or_default().into(),
        })
        .collect();
    refs.sort();
    refs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    /// No entry yet.
    Pending,
    InProgress,
    Verified,
    Failed,
    /// Final, undecided: KMM's entry is for another kernel and the client check could not run.
    Unknown,
}

impl State {
    pub fn is_done(self) -> bool {
        matches!(self, State::Verified | State::Failed | State::Unknown)
    }
}

/// The client check's word on a Module (`kubectl kmm check`'s row that decided).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientCheck {
    pub verdict: String,
    pub reason: String,
    pub image: Option<String>,
    pub kernel: String,
    /// `--deep`: the kernel's own load decision on the module files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep: Option<crate::module::deep::Deep>,
}

/// `Success` (KMM ≥ 2.4) and `True` (earlier) are verified; only `Failure` is a final failure:
/// `False` in KMM ≤ 2.3 means "will retry" (`Requeued`).
pub fn state_of(status: &str) -> State {
    match status {
        "Success" | "True" => State::Verified,
        "Failure" => State::Failed,
        "" => State::Pending,
        _ => State::InProgress,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// With several clusters followed at once: the cluster (kubeconfig context); else empty.
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// The verdict so far: KMM's, or KMM's and the client check's together.
    pub state: State,
    /// KMM's own word: `verificationStatus`, `verificationStage`, `statusReason`.
    pub status: String,
    pub stage: String,
    pub reason: String,
    /// Why `state` is what it is (KMM's reason when KMM alone decides).
    pub why: String,
    pub check: Option<ClientCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    pub rows: Vec<Row>,
}

impl Progress {
    pub fn count(&self, state: State) -> usize {
        self.rows.iter().filter(|r| r.state == state).count()
    }

    /// Every current Module is verified or failed (vacuously true without Modules).
    pub fn complete(&self) -> bool {
        self.rows.iter().all(|r| r.state.is_done())
    }

    pub fn unfinished(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.state.is_done())
    }
}

/// One row per current Module; entries of Modules that no longer exist are ignored.
pub fn evaluate(modules: &[ModuleRef], entries: &[Entry]) -> Progress {
    // Indexed once (the first entry of a name wins): an event of a thousand Modules costs a
    // thousand lookups, not a million comparisons.
    let mut namespaced: HashMap<(&str, &str), &Entry> = HashMap::with_capacity(entries.len());
    let mut bare: HashMap<&str, &Entry> = HashMap::new();
    for e in entries {
        match e.namespace.as_deref() {
            Some(ns) => namespaced.entry((ns, e.name.as_str())).or_insert(e),
            None => bare.entry(e.name.as_str()).or_insert(e),
        };
    }
    let rows = modules
        .iter()
        .map(|m| {
            let found = namespaced
                .get(&(m.namespace.as_str(), m.name.as_str()))
                .or_else(|| bare.get(m.name.as_str()))
                .copied();
            match found {
                Some(e) => Row {
                    cluster: String::new(),
                    namespace: m.namespace.clone(),
                    name: m.name.clone(),
                    state: state_of(&e.status),
                    status: e.status.clone(),
                    stage: e.stage.clone(),
                    reason: e.reason.clone(),
                    why: e.reason.clone(),
                    check: None,
                },
                None => Row {
                    cluster: String::new(),
                    namespace: m.namespace.clone(),
                    name: m.name.clone(),
                    state: State::Pending,
                    status: String::new(),
                    stage: String::new(),
                    reason: String::new(),
                    why: String::new(),
                    check: None,
                },
            }
        })
        .collect();
    Progress { rows }
}

/// Progress of a preflight object against the Modules (or, when they cannot be read, against
/// its own entries).
pub fn progress_of(object: &Value, modules: Option<&[Value]>) -> Progress {
    let entries = entries(&object["status"]);
    let refs = match modules {
        Some(modules) => checked_modules(modules),
        None => modules_from_entries(&entries),
    };
    evaluate(&refs, &entries)
}

/// When Modules cannot be listed: judge from the entries alone.
pub fn modules_from_entries(entries: &[Entry]) -> Vec<ModuleRef> {
    let mut refs: Vec<ModuleRef> = entries
        .iter()
        .map(|e| ModuleRef {
            namespace: e.namespace.clone().unwrap_or_default(),
            name: e.name.clone(),
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn module(ns: &str, name: &str, loader: bool, deleting: bool) -> Value {
        let mut m = json!({"metadata": {"namespace": ns, "name": name}, "spec": {}});
        if loader {
            m["spec"]["moduleLoader"] = json!({"container": {}});
        }
        if deleting {
            m["metadata"]["deletionTimestamp"] = json!("2026-11-21T00:00:00Z");
        }
        m
    }

    #[test]
    fn era_c_completion_ignores_stale_entries_and_skipped_modules() {
        let status = json!({"modules": [
            {"namespace": "gpu", "name": "nvidia", "verificationStatus": "Success", "verificationStage": "Done", "statusReason": "verified image exists"},
            {"namespace": "nic", "name": "mlx5", "verificationStatus": "InProgress", "verificationStage": "Image"},
            {"namespace": "old", "name": "gone", "verificationStatus": "InProgress", "verificationStage": "Image"}]});
        let modules = checked_modules(&[
            module("gpu", "nvidia", true, false),
            module("nic", "mlx5", true, false),
            module("dp", "device-plugin-only", false, false),
            module("x", "leaving", true, true),
        ]);
        assert_eq!(modules.len(), 2);
        let p = evaluate(&modules, &entries(&status));
        assert!(!p.complete());
        assert_eq!(p.count(State::Verified), 1);
        let status = json!({"modules": [
            {"namespace": "gpu", "name": "nvidia", "verificationStatus": "Success", "verificationStage": "Done"},
            {"namespace": "nic", "name": "mlx5", "verificationStatus": "Failure", "verificationStage": "Done", "statusReason": "mapping not found"},
            {"namespace": "old", "name": "gone", "verificationStatus": "InProgress", "verificationStage": "Image"}]});
        let p = evaluate(&modules, &entries(&status));
        assert!(p.complete());
        assert_eq!(p.count(State::Failed), 1);
        assert!(
            evaluate(&[], &entries(&status)).complete(),
            "no Modules: nothing to wait for"
        );
    }

    #[test]
    fn old_eras_true_is_done_false_is_not() {
        let era_a = json!({"crStatuses": {
            "nvidia": {"verificationStatus": "True", "verificationStage": "Done"},
            "mlx5": {"verificationStatus": "False", "verificationStage": "Requeued", "statusReason": "image x inaccessible"}}});
        let modules = vec![
            ModuleRef {
                namespace: "gpu".into(),
                name: "nvidia".into(),
            },
            ModuleRef {
                namespace: "nic".into(),
                name: "mlx5".into(),
            },
        ];
        let p = evaluate(&modules, &entries(&era_a));
        assert_eq!(p.count(State::Verified), 1);
        assert_eq!(p.count(State::InProgress), 1);
        assert!(!p.complete());
        // Converted v1beta1 of later eras: both key forms, the namespaced ones win.
        let converted = json!({"crStatuses": {
            "gpu/nvidia": {"verificationStatus": "True", "verificationStage": "Done"},
            "nvidia": {"verificationStatus": "True", "verificationStage": "Done"}}});
        let e = entries(&converted);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].namespace.as_deref(), Some("gpu"));
        assert_eq!(modules_from_entries(&e).len(), 1);
        assert_eq!(state_of(""), State::Pending);
    }
}
