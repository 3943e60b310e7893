//! Objects, resource versions and the event history of the test API server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::schema;

/// A resource the server serves: built in, or defined by a CRD.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    pub storage: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// openAPIV3Schema per version (None: anything goes).
    pub schemas: BTreeMap<String, Value>,
}

impl ResourceType {
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `preflightvalidationsocp.kmm.sigs.x-k8s.io`, as Status messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn from_crd(crd: &Value) -> ResourceType {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let mut versions = Vec::new();
        let mut schemas = BTreeMap::new();
        let mut storage = String::new();
        let mut status = false;
        for v in spec["versions"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            if v["served"].as_bool() != Some(true) {
                continue;
            }
            if v["storage"].as_bool() == Some(true) {
                storage = name.clone();
            }
            if v["subresources"]["status"].is_object() {
                status = true;
            }
            schemas.insert(name.clone(), v["schema"]["openAPIV3Schema"].clone());
            versions.push(name);
        }
        // Preferred version first, as discovery lists them (newest beta first here).
        versions.sort_by(|a, b| b.cmp(a));
        ResourceType {
            group: spec["group"].as_str().unwrap_or_default().to_string(),
            versions,
            storage,
            plural: names["plural"].as_str().unwrap_or_default().to_string(),
            singular: names["singular"].as_str().unwrap_or_default().to_string(),
            kind: names["kind"].as_str().unwrap_or_default().to_string(),
            short_names: names["shortNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            namespaced: spec["scope"] == "Namespaced",
            status_subresource: status,
            schemas,
        }
    }

    pub fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
    ) -> ResourceType {
        ResourceType {
            group: group.into(),
            versions: vec![version.into()],
            storage: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            short_names: vec![],
            namespaced,
            status_subresource: matches!(plural, "pods" | "nodes" | "clusterversions"),
            schemas: BTreeMap::new(),
        }
    }
}

/// A Kubernetes `Status` failure.
#[derive(Debug, Clone, Default)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// `Warning` headers (unknown fields), sent with errors too.
    pub warnings: Vec<String>,
}

impl ApiError {
    pub fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    pub fn not_found(ty: &ResourceType, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", ty.qualified()),
            details: Some(json!({"name": name, "group": ty.group, "kind": ty.plural})),
            warnings: vec![],
        }
    }

    fn already_exists(ty: &ResourceType, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", ty.qualified()),
            details: Some(json!({"name": name, "group": ty.group, "kind": ty.plural})),
            warnings: vec![],
        }
    }

    fn invalid(ty: &ResourceType, name: &str, causes: &[schema::Cause]) -> ApiError {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{}.{} \"{name}\" is invalid: [{}]",
                ty.kind,
                ty.group,
                parts.join(", ")
            ),
            details: Some(json!({
                "name": name, "group": ty.group, "kind": ty.kind,
                "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
            })),
            warnings: vec![],
        }
    }

    pub fn bad_request(message: String) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message,
            details: None,
            warnings: vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: &'static str,
    pub type_key: String,
    /// In storage version.
    pub object: Value,
}

#[derive(Default)]
struct State {
    types: Vec<ResourceType>,
    /// (type key, namespace, name) → object in storage version.
    objects: BTreeMap<(String, String, String), Value>,
    rv: u64,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Expired.
    floor: u64,
    uid: u64,
}

pub struct Store {
    state: Mutex<State>,
    pub events: broadcast::Sender<Event>,
}

/// What a successful write produced, plus unknown-field warnings.
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

fn now() -> String {
    // RFC 3339 without sub-seconds, as the apiserver writes timestamps.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

pub fn timestamp() -> String {
    now()
}

/// The instant of a `YYYY-MM-DDTHH:MM:SSZ` timestamp (what `now` writes).
pub fn parse_timestamp(text: &str) -> Option<std::time::SystemTime> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm), the inverse of `now`.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// JSON merge patch (RFC 7386).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn is_kmm_preflight(ty: &ResourceType) -> bool {
    ty.group == "kmm.sigs.x-k8s.io" && ty.plural.starts_with("preflightvalidations")
}

/// Serve a stored object in `version`: v1beta2 `status.modules` become the v1beta1
/// `status.crStatuses` map, keyed by `ns/name` and by `name` (KMM's conversion webhook).
pub fn convert(ty: &ResourceType, object: &Value, version: &str) -> Value {
    let mut out = object.clone();
    out["apiVersion"] = json!(ty.api_version(version));
    if is_kmm_preflight(ty)
        && version == "v1beta1"
        && ty.storage == "v1beta2"
        && let Some(modules) = object["status"]["modules"].as_array()
    {
        let mut map = serde_json::Map::new();
        for m in modules {
            let mut entry = m.clone();
            let (ns, name) = (
                m["namespace"].as_str().unwrap_or_default().to_string(),
                m["name"].as_str().unwrap_or_default().to_string(),
            );
            if let Some(e) = entry.as_object_mut() {
                e.remove("name");
                e.remove("namespace");
            }
            map.insert(format!("{ns}/{name}"), entry.clone());
            map.insert(name, entry);
        }
        out["status"] = json!({"crStatuses": map});
    }
    out
}

impl Store {
    pub fn new() -> Store {
        let (events, _) = broadcast::channel(4096);
        Store {
            state: Mutex::new(State::default()),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, ty: ResourceType) {
        let mut state = self.lock();
        state.types.retain(|t| t.key() != ty.key());
        state.types.push(ty);
    }

    pub fn types(&self) -> Vec<ResourceType> {
        self.lock().types.clone()
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock()
            .types
            .iter()
            .find(|t| {
                t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    pub fn find_kind(&self, group: &str, kind: &str) -> Option<ResourceType> {
        self.lock()
            .types
            .iter()
            .find(|t| t.group == group && t.kind == kind)
            .cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Forget history: watches resuming from before now get 410 Expired.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.floor = state.rv;
        state.history.clear();
    }

    /// Events after `since` for `type_key`, and a receiver for later ones (no gap, no
    /// duplicate: both are taken under the same lock). Err(current) if `since` is too old.
    pub fn subscribe(
        &self,
        type_key: &str,
        since: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), (u64, u64)> {
        let state = self.lock();
        if since < state.floor {
            return Err((since, state.rv));
        }
        let past = state
            .history
            .iter()
            .filter(|e| e.rv > since && e.type_key == type_key)
            .cloned()
            .collect();
        Ok((past, self.events.subscribe()))
    }

    fn record(
        state: &mut State,
        events: &broadcast::Sender<Event>,
        kind: &'static str,
        ty: &ResourceType,
        object: &Value,
    ) {
        let event = Event {
            rv: state.rv,
            kind,
            type_key: ty.key(),
            object: object.clone(),
        };
        state.history.push(event.clone());
        let _ = events.send(event);
    }

    fn existing(
        state: &State,
        ty: &ResourceType,
        key: &(String, String, String),
        name: &str,
    ) -> Result<Value, ApiError> {
        state
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(ty, name))
    }

    fn bump(state: &mut State, object: &mut Value) -> u64 {
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        state.rv
    }

    fn validate(
        ty: &ResourceType,
        version: &str,
        object: &mut Value,
        strict: bool,
        name: &str,
    ) -> Result<Vec<String>, ApiError> {
        let Some(schema) = ty.schemas.get(version).filter(|s| !s.is_null()) else {
            return Ok(vec![]);
        };
        let mut outcome = schema::Outcome::default();
        // metadata is not validated by the CRD schema.
        let metadata = object.as_object_mut().and_then(|o| o.remove("metadata"));
        schema::validate(schema, object, "", &mut outcome);
        if let Some(m) = metadata {
            object["metadata"] = m;
        }
        if strict && let Some(field) = outcome.unknown.first() {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: unknown field \"{field}\"",
                ty.kind, ty.kind
            )));
        }
        let warnings: Vec<String> = outcome
            .unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        if !outcome.causes.is_empty() {
            let mut error = ApiError::invalid(ty, name, &outcome.causes);
            error.warnings = warnings;
            return Err(error);
        }
        Ok(warnings)
    }

    pub fn create(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        mut body: Value,
        dry_run: bool,
        strict: bool,
    ) -> Result<Written, ApiError> {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "{}.{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    ty.kind, ty.group
                ),
                details: None,
                warnings: vec![],
            });
        }
        if body["kind"] != json!(ty.kind) || body["apiVersion"] != json!(ty.api_version(version)) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                body["apiVersion"].as_str().unwrap_or_default(),
                ty.api_version(version)
            )));
        }
        if ty.status_subresource
            && !ty.schemas.is_empty()
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        let warnings = Self::validate(ty, version, &mut body, strict, &name)?;
        let mut state = self.lock();
        let key = (ty.key(), namespace.to_string(), name.clone());
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(ty, &name));
        }
        state.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", state.uid);
        let meta = &mut body["metadata"];
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now());
        meta["generation"] = json!(1);
        if ty.namespaced {
            meta["namespace"] = json!(namespace);
        }
        // A dry run answers as the create would (uid, timestamps; no resourceVersion), and
        // stores nothing.
        if dry_run {
            return Ok(Written {
                object: body,
                warnings,
            });
        }
        body["apiVersion"] = json!(ty.api_version(&ty.storage));
        Self::bump(&mut state, &mut body);
        state.objects.insert(key, body.clone());
        Self::record(&mut state, &self.events, "ADDED", ty, &body);
        Ok(Written {
            object: body,
            warnings,
        })
    }

    pub fn get(&self, ty: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&(ty.key(), namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(ty, name))
    }

    /// Objects of `ty` (in `namespace`, or all when None), and the list's resourceVersion.
    pub fn list(&self, ty: &ResourceType, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.lock();
        let key = ty.key();
        let items = state
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == key && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, state.rv)
    }

    /// Change an object with `f` (status and metadata included), as a controller would.
    pub fn update(
        &self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = (ty.key(), namespace.to_string(), name.to_string());
        let mut object = Self::existing(&state, ty, &key, name)?;
        let spec_before = object["spec"].clone();
        f(&mut object);
        if object["spec"] != spec_before {
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            object["metadata"]["generation"] = json!(generation);
        }
        Self::validate(ty, &ty.storage, &mut object, false, name)?;
        // Finalizers all gone on a deleting object: it goes away.
        let deleting = object["metadata"]["deletionTimestamp"].is_string();
        let finalizers_left = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        Self::bump(&mut state, &mut object);
        if deleting && !finalizers_left {
            state.objects.remove(&key);
            Self::record(&mut state, &self.events, "DELETED", ty, &object);
            drop(state);
            self.collect_garbage(&object);
            return Ok(object);
        }
        state.objects.insert(key, object.clone());
        Self::record(&mut state, &self.events, "MODIFIED", ty, &object);
        Ok(object)
    }

    /// Merge-patch the status subresource (validated against the status schema).
    pub fn patch_status(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = (ty.key(), namespace.to_string(), name.to_string());
        let mut object = Self::existing(&state, ty, &key, name)?;
        let mut status = object["status"].clone();
        merge_patch(&mut status, patch.get("status").unwrap_or(&Value::Null));
        object["status"] = status;
        Self::validate(ty, version, &mut object, false, name)?;
        Self::bump(&mut state, &mut object);
        state.objects.insert(key, object.clone());
        Self::record(&mut state, &self.events, "MODIFIED", ty, &object);
        Ok(object)
    }

    /// DELETE: gone at once, or marked for deletion while finalizers remain.
    /// Returns the object and whether it is gone.
    pub fn delete(
        &self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<(Value, bool), ApiError> {
        let mut state = self.lock();
        let key = (ty.key(), namespace.to_string(), name.to_string());
        let mut object = Self::existing(&state, ty, &key, name)?;
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!(now());
                Self::bump(&mut state, &mut object);
                state.objects.insert(key, object.clone());
                Self::record(&mut state, &self.events, "MODIFIED", ty, &object);
            }
            return Ok((object, false));
        }
        state.objects.remove(&key);
        Self::bump(&mut state, &mut object);
        Self::record(&mut state, &self.events, "DELETED", ty, &object);
        drop(state);
        self.collect_garbage(&object);
        Ok((object, true))
    }

    /// Background garbage collection: delete what `owner` owned.
    fn collect_garbage(&self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        let owned: Vec<(ResourceType, String, String)> = {
            let state = self.lock();
            state
                .objects
                .iter()
                .filter(|(_, v)| {
                    v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
                .filter_map(|((k, ns, name), _)| {
                    state
                        .types
                        .iter()
                        .find(|t| t.key() == *k)
                        .map(|t| (t.clone(), ns.clone(), name.clone()))
                })
                .collect()
        };
        for (ty, ns, name) in owned {
            let _ = self.delete(&ty, &ns, &name);
        }
    }

    /// Put an object in place without validation (fixtures: nodes, pods, secrets, Modules…).
    pub fn put(&self, ty: &ResourceType, mut object: Value) -> Value {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut state = self.lock();
        let key = (ty.key(), namespace, name);
        let existed = state.objects.contains_key(&key);
        if !existed {
            state.uid += 1;
            object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", state.uid));
            object["metadata"]["creationTimestamp"] = json!(now());
            object["metadata"]["generation"] = json!(1);
        }
        object["apiVersion"] = json!(ty.api_version(&ty.storage));
        object["kind"] = json!(ty.kind);
        Self::bump(&mut state, &mut object);
        state.objects.insert(key, object.clone());
        Self::record(
            &mut state,
            &self.events,
            if existed { "MODIFIED" } else { "ADDED" },
            ty,
            &object,
        );
        object
    }
}
