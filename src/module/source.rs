//! Modules (and the Secrets and ConfigMaps they name) from files, as `kubectl apply -f` takes
//! them: YAML or JSON, several documents per file, `List` kinds, directories, `-` for stdin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use futures::future::BoxFuture;
use serde_json::Value;

use super::check::{Lookup, ObjectKind, Objects};
use crate::registry::auth::{self, AuthEntries};

/// A Secret from a file or the cluster: its type and decoded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretData {
    pub kind: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Registry credentials in a Secret used as an image pull secret, as the kubelet reads them.
pub fn registry_entries(secret: &SecretData) -> Result<AuthEntries, String> {
    let json = secret.data.get(".dockerconfigjson");
    let legacy = secret.data.get(".dockercfg");
    match (secret.kind.as_str(), json, legacy) {
        ("kubernetes.io/dockerconfigjson" | "", Some(bytes), _) => auth::parse_auth_file(bytes),
        ("kubernetes.io/dockercfg" | "", _, Some(bytes)) => auth::parse_dockercfg(bytes),
        (kind, _, _) => Err(format!(
            "it is of type {kind:?}, without the .dockerconfigjson or .dockercfg the kubelet reads"
        )),
    }
}

/// What a set of files holds.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// Module objects, with their namespace filled in.
    pub modules: Vec<Value>,
    /// The file (or `stdin`) each of `modules` came from.
    pub module_files: Vec<String>,
    pub secrets: BTreeMap<(String, String), SecretData>,
    pub config_maps: BTreeMap<(String, String), ()>,
    /// `Kind/name` of objects that are neither, for `-v`.
    pub ignored: Vec<String>,
    /// What each source held, in the order read (`pod.yaml: 1 object`, `stdin: empty`), to say
    /// what was read when it held no Module.
    pub read: Vec<String>,
    /// Objects read so far (the items of a `List` each count).
    objects: usize,
}

fn decode_secret(object: &Value, label: &str) -> Result<SecretData, String> {
    let mut data = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("{label}: data key {key:?} is not valid base64"))?;
        data.insert(key.clone(), bytes);
    }
    for (key, value) in object["stringData"].as_object().into_iter().flatten() {
        data.insert(
            key.clone(),
            value.as_str().unwrap_or_default().as_bytes().to_vec(),
        );
    }
    Ok(SecretData {
        kind: object["type"].as_str().unwrap_or_default().to_string(),
        data,
    })
}

impl Loaded {
    fn add(
        &mut self,
        mut object: Value,
        default_namespace: &str,
        label: &str,
    ) -> Result<(), String> {
        if object.is_null() {
            return Ok(());
        }
        if !object.is_object() {
            return Err(format!("{label}: a document is not an object"));
        }
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if kind.ends_with("List") && object["items"].is_array() {
            if let Some(items) = object["items"].as_array().cloned() {
                for item in items {
                    self.add(item, default_namespace, label)?;
                }
            }
            return Ok(());
        }
        self.objects += 1;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
            && let Some(metadata) = object["metadata"].as_object_mut()
        {
            metadata.insert("namespace".into(), Value::String(default_namespace.into()));
        }
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let group = object["apiVersion"].as_str().unwrap_or_default();
        match kind.as_str() {
            "Module" | "BootModuleConfig" if group.starts_with("kmm.sigs.x-k8s.io/") => {
                if name.is_empty() {
                    return Err(format!("{label}: a {kind} has no metadata.name"));
                }
                self.modules.push(object);
                self.module_files.push(label.to_string());
            }
            "Secret" => {
                let secret = decode_secret(&object, label)?;
                self.secrets.insert((namespace, name), secret);
            }
            "ConfigMap" => {
                self.config_maps.insert((namespace, name), ());
            }
            other => self.ignored.push(format!("{label}: {other}/{name}")),
        }
        Ok(())
    }

    /// Parse one file's text (or stdin's).
    pub fn add_text(
        &mut self,
        text: &str,
        label: &str,
        default_namespace: &str,
    ) -> Result<(), String> {
        let before = self.objects;
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            // Positions only: a file of Secrets must not be quoted back.
            let value: Value = serde::Deserialize::deserialize(document)
                .map_err(|e| format!("{label}: not valid YAML or JSON ({})", position(&e)))?;
            self.add(value, default_namespace, label)?;
        }
        let held = self.objects - before;
        self.read.push(match held {
            0 => format!("{label}: empty"),
            1 => format!("{label}: 1 object"),
            n => format!("{label}: {n} objects"),
        });
        Ok(())
    }

    /// Why no Module came of the files: what each held, and what of it was not a Module.
    pub fn without_modules(&self) -> String {
        let mut parts = self.read.clone();
        if !self.ignored.is_empty() {
            parts.push(format!("not Modules: {}", self.ignored.join(", ")));
        }
        if parts.is_empty() {
            "nothing was read".into()
        } else {
            parts.join("; ")
        }
    }
}

/// A Secret or ConfigMap a Module names but the files do not hold: from files alone, whether
/// it exists in the cluster cannot be known.
pub const NOT_IN_FILES: &str = "not in the files given; add it with -f";

fn position(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(at) => format!("problem at line {}, column {}", at.line(), at.column()),
        None => "problem in the document".into(),
    }
}

/// The files `-f` names: a file, a directory's `*.yaml`, `*.yml` and `*.json` (sorted, not
/// recursive, as kubectl), or `-` for `stdin`.
pub fn load(
    paths: &[PathBuf],
    default_namespace: &str,
    stdin: &mut dyn std::io::Read,
) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    let mut read_stdin = false;
    for path in paths {
        if path == Path::new("-") {
            if read_stdin {
                return Err("-f - may be given once".into());
            }
            read_stdin = true;
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| format!("stdin: {e}"))?;
            loaded.add_text(&text, "stdin", default_namespace)?;
            continue;
        }
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                loaded.read.push(format!(
                    "{}: a directory without .yaml, .yml or .json files",
                    path.display()
                ));
            }
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let label = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{label}: {e}"))?;
            loaded.add_text(&text, &label, default_namespace)?;
        }
    }
    Ok(loaded)
}

impl Objects for Loaded {
    fn registry_secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Lookup<AuthEntries>> {
        let key = (namespace.to_string(), name.to_string());
        let found = match self.secrets.get(&key) {
            None => Lookup::Unreadable(NOT_IN_FILES.into()),
            Some(secret) => match registry_entries(secret) {
                Ok(entries) => Lookup::Found(entries),
                Err(reason) => Lookup::Unreadable(reason),
            },
        };
        Box::pin(async move { found })
    }

    fn secret_entry<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Lookup<Vec<u8>>> {
        let found = match self.secrets.get(&(namespace.to_string(), name.to_string())) {
            None => Lookup::Unreadable(NOT_IN_FILES.into()),
            Some(secret) => match secret.data.get(key) {
                Some(value) => Lookup::Found(value.clone()),
                None => Lookup::Unreadable(format!("it has no data key {key:?}")),
            },
        };
        Box::pin(async move { found })
    }

    fn exists<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Lookup<()>> {
        let key = (namespace.to_string(), name.to_string());
        let found = match kind {
            ObjectKind::Secret => self.secrets.contains_key(&key),
            ObjectKind::ConfigMap => self.config_maps.contains_key(&key),
        };
        Box::pin(async move {
            if found {
                Lookup::Found(())
            } else {
                Lookup::Unreadable(NOT_IN_FILES.into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_kinds() {
        let text = r#"
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: a}
spec: {selector: {}}
---
apiVersion: v1
kind: List
items:
- {apiVersion: kmm.sigs.x-k8s.io/v1beta1, kind: Module, metadata: {name: b, namespace: nic}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: df, namespace: nic}}
- {apiVersion: v1, kind: Secret, metadata: {name: s, namespace: nic}, type: kubernetes.io/dockerconfigjson,
   stringData: {.dockerconfigjson: '{"auths": {"q.io": {"auth": "dTpw"}}}'}}
- {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}
---
"#;
        let mut loaded = Loaded::default();
        loaded.add_text(text, "f.yaml", "default").unwrap();
        assert_eq!(loaded.modules.len(), 2);
        assert_eq!(loaded.modules[0]["metadata"]["namespace"], "default");
        assert_eq!(loaded.modules[1]["metadata"]["namespace"], "nic");
        assert!(
            loaded
                .config_maps
                .contains_key(&("nic".into(), "df".into()))
        );
        let secret = &loaded.secrets[&("nic".to_string(), "s".to_string())];
        let entries = registry_entries(secret).unwrap();
        assert_eq!(entries.auths["q.io"].username, "u");
        assert_eq!(loaded.ignored, ["f.yaml: Deployment/d"]);

        // JSON is YAML too.
        let mut json = Loaded::default();
        json.add_text(r#"{"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module", "metadata": {"name": "j"}}"#, "j.json", "x")
            .unwrap();
        assert_eq!(json.modules.len(), 1);
    }

    #[test]
    fn bad_files_say_where_without_quoting() {
        let mut loaded = Loaded::default();
        let err = loaded
            .add_text(
                "kind: Secret\nstringData: {password: hunter2\n",
                "s.yaml",
                "d",
            )
            .unwrap_err();
        assert!(
            err.starts_with("s.yaml: not valid YAML or JSON (problem at line"),
            "{err}"
        );
        assert!(!err.contains("hunter2"));
        let err = loaded
            .add_text(
                "kind: Secret\nmetadata: {name: s}\ndata: {k: 'not base64!'}\n",
                "b.yaml",
                "d",
            )
            .unwrap_err();
        assert_eq!(err, "b.yaml: data key \"k\" is not valid base64");
        let opaque = SecretData {
            kind: "Opaque".into(),
            data: BTreeMap::new(),
        };
        assert!(registry_entries(&opaque).unwrap_err().contains("Opaque"));
    }

    #[test]
    fn directories_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module", "metadata": {"name": "a"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let mut stdin =
            "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: s}\n".as_bytes();
        let loaded = load(
            &[dir.path().to_path_buf(), PathBuf::from("-")],
            "ns",
            &mut stdin,
        )
        .unwrap();
        let names: Vec<&str> = loaded
            .modules
            .iter()
            .map(|m| m["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "s"]);
        assert!(load(&[dir.path().join("missing.yaml")], "ns", &mut &b""[..]).is_err());
    }
}
