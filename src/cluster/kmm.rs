//! What this cluster's KMM understands, and the preflight object it gets (kmm-api.md §8).
//!
//! Three incompatible API "eras" share the same group and versions:
//! - KMM ≥ 2.4: PreflightValidationOCP takes `kernelVersion` and `dtkImage`; statuses are
//!   Success/Failure/InProgress.
//! - KMM 2.1–2.3: PreflightValidationOCP takes `releaseImage` (and `useRTKernel` from 1.1);
//!   v1beta2 with `status.modules`; statuses True/False.
//! - KMM ≤ 2.0: the same, v1beta1 only, with the `status.crStatuses` map keyed by Module name.
//!
//! Outside OpenShift only PreflightValidation exists, always with `kernelVersion`.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use crate::error::{Error, Result};

pub const GROUP: &str = "kmm.sigs.x-k8s.io";
pub const PV_CRD: &str = "preflightvalidations.kmm.sigs.x-k8s.io";
pub const PVO_CRD: &str = "preflightvalidationsocp.kmm.sigs.x-k8s.io";

/// A KMM resource at the version we talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: &'static str,
    pub plural: &'static str,
    pub version: String,
}

impl Resource {
    pub fn pv(version: &str) -> Self {
        Resource {
            kind: "PreflightValidation",
            plural: "preflightvalidations",
            version: version.into(),
        }
    }

    pub fn pvo(version: &str) -> Self {
        Resource {
            kind: "PreflightValidationOCP",
            plural: "preflightvalidationsocp",
            version: version.into(),
        }
    }

    pub fn module() -> Self {
        Resource {
            kind: "Module",
            plural: "modules",
            version: "v1beta1".into(),
        }
    }

    /// Downstream KMM's day-1 `BootModuleConfig`.
    pub fn boot_module_config() -> Self {
        Resource {
            kind: "BootModuleConfig",
            plural: "bootmoduleconfigs",
            version: "v1beta1".into(),
        }
    }

    pub fn api_version(&self) -> String {
        format!("{GROUP}/{}", self.version)
    }

    pub fn api_resource(&self) -> kube::discovery::ApiResource {
        kube::discovery::ApiResource {
            group: GROUP.into(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

/// What the PreflightValidationOCP spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcpSpec {
    /// KMM ≥ 2.4: `kernelVersion`, `dtkImage`, `pushBuiltImage`.
    Kernel,
    /// KMM ≤ 2.3: `releaseImage`, `pushBuiltImage`, and `useRTKernel` when it exists.
    Release { use_rt_kernel: bool },
}

/// The KMM API of this cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmmApi {
    /// PreflightValidation at the version we use (v1beta2 when served).
    pub pv: Option<Resource>,
    /// PreflightValidationOCP, on OpenShift.
    pub pvo: Option<(Resource, OcpSpec)>,
    /// KMM 2.4 or later, whose preflights share per-Module objects (kmm-api.md §4.4): any two
    /// preflights conflict, not only two of the same name.
    pub shared_module_objects: bool,
    /// How this was learned, for `-v`.
    pub source: &'static str,
}

impl KmmApi {
    /// The preflight resources this cluster serves, PreflightValidationOCP first: on OpenShift
    /// it owns a PreflightValidation of the same name.
    pub fn preflight_resources(&self) -> Vec<Resource> {
        self.pvo
            .iter()
            .map(|(r, _)| r.clone())
            .chain(self.pv.iter().cloned())
            .collect()
    }

    /// Human name of the KMM generation, for messages.
    pub fn generation(&self) -> &'static str {
        match (&self.pvo, &self.pv) {
            (Some((_, OcpSpec::Kernel)), _) => "KMM 2.4 or later (OpenShift)",
            (Some((r, OcpSpec::Release { .. })), _) if r.version == "v1beta2" => {
                "KMM 2.1 to 2.3 (OpenShift)"
            }
            (
                Some((
                    _,
                    OcpSpec::Release {
                        use_rt_kernel: true,
                    },
                )),
                _,
            ) => "KMM 1.1 to 2.0 (OpenShift)",
            (Some(_), _) => "KMM 1.0 (OpenShift)",
            (None, Some(_)) => "KMM (no OpenShift preflight)",
            (None, None) => "no KMM",
        }
    }
}

/// The version to talk to: v1beta2 when served (the storage and conversion hub), else v1beta1.
fn preferred_version(crd: &Value) -> Option<(String, Value)> {
    let versions = crd["spec"]["versions"].as_array()?;
    let served = |name: &str| {
        versions
            .iter()
            .find(|v| v["name"] == name && v["served"].as_bool() != Some(false))
    };
    let chosen = served("v1beta2")
        .or_else(|| served("v1beta1"))
        .or_else(|| {
            versions
                .iter()
                .find(|v| v["served"].as_bool() != Some(false))
        })?;
    Some((
        chosen["name"].as_str()?.to_string(),
        chosen["schema"]["openAPIV3Schema"].clone(),
    ))
}

fn spec_has(schema: &Value, field: &str) -> bool {
    schema["properties"]["spec"]["properties"][field].is_object()
}

/// KMM 2.4 renamed the statuses to Success/Failure/InProgress (kmm-api.md §3.1).
fn has_era_c_statuses(schema: &Value) -> bool {
    let entry = &schema["properties"]["status"]["properties"]["modules"]["items"]["properties"];
    entry["verificationStatus"]["enum"]
        .as_array()
        .is_some_and(|values| values.iter().any(|v| v == "Success"))
}

/// Detect the era from the CRDs (either may be absent).
pub fn from_crds(pv_crd: Option<&Value>, pvo_crd: Option<&Value>) -> KmmApi {
    let pv = pv_crd.and_then(preferred_version);
    let pvo = pvo_crd
        .and_then(preferred_version)
        .map(|(version, schema)| {
            let spec = if spec_has(&schema, "kernelVersion") {
                OcpSpec::Kernel
            } else {
                OcpSpec::Release {
                    use_rt_kernel: spec_has(&schema, "useRTKernel"),
                }
            };
            (Resource::pvo(&version), spec)
        });
    let shared_module_objects = matches!(pvo, Some((_, OcpSpec::Kernel)))
        || pv
            .as_ref()
            .is_some_and(|(_, schema)| has_era_c_statuses(schema));
    KmmApi {
        pv: pv.map(|(version, _)| Resource::pv(&version)),
        pvo,
        shared_module_objects,
        source: "CRDs",
    }
}

static KERNEL_PARTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.,-]").expect("static regex"));

/// KMM's webhook rule: not empty, and at least three parts split on `[.,-]`.
pub fn validate_kernel(kernel: &str) -> Result<()> {
    let kernel = kernel.trim();
    if kernel.is_empty() {
        return Err(Error::invalid(
            "invalid kernel version: it is empty",
            "pass the full kernel version, e.g. --kernel 5.14.0-570.19.1.el9_6.x86_64",
        ));
    }
    if KERNEL_PARTS.split(kernel).count() < 3 || kernel.contains(char::is_whitespace) {
        return Err(Error::invalid(
            format!(
                "invalid kernel version {kernel:?}: KMM needs at least three parts split on . , or -"
            ),
            "pass the full kernel version, e.g. --kernel 5.14.0-570.19.1.el9_6.x86_64",
        ));
    }
    Ok(())
}

static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("static regex")
});

/// A Kubernetes object name (DNS-1123 subdomain).
pub fn validate_name(name: &str) -> Result<()> {
    if name.len() > 253 || !DNS_SUBDOMAIN.is_match(name) {
        return Err(Error::invalid(
            format!("invalid --name {name:?}: not a valid Kubernetes object name"),
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// `preflight-4-19-0`, `preflight-4-19-0-rt`, `preflight-5-14-0-570-19-1-el9-6-x86-64`.
pub fn default_name(basis: &str, rt: bool) -> String {
    let mut name = String::from("preflight-");
    let mut dash = false;
    for c in basis.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
            dash = false;
        } else if !dash {
            name.push('-');
            dash = true;
        }
    }
    let mut name = name.trim_end_matches('-').to_string();
    let suffix = if rt { "-rt" } else { "" };
    name.truncate(63 - suffix.len());
    let mut name = name.trim_end_matches('-').to_string();
    name.push_str(suffix);
    name
}

/// What the preflight is about, resolved before anything is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub kernel_version: String,
    pub dtk_image: Option<String>,
    /// Digest-pinned release image, when known.
    pub release_image: Option<String>,
    pub push_built_image: bool,
    pub rt: bool,
}

/// The object to create, and a note when the choice needs explaining.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub resource: Resource,
    pub object: Value,
    pub note: Option<String>,
}

/// Build the preflight object this KMM understands.
pub fn plan(api: &KmmApi, name: &str, inputs: &Inputs) -> Result<Plan> {
    let metadata = json!({"name": name, "labels": {"app.kubernetes.io/managed-by": "kubectl-kmm"}});
    let pv_object = |resource: &Resource| {
        json!({
            "apiVersion": resource.api_version(),
            "kind": resource.kind,
            "metadata": metadata,
            "spec": {"kernelVersion": inputs.kernel_version, "pushBuiltImage": inputs.push_built_image},
        })
    };
    match &api.pvo {
        Some((resource, OcpSpec::Kernel)) => {
            let mut spec = json!({"kernelVersion": inputs.kernel_version, "pushBuiltImage": inputs.push_built_image});
            if let Some(dtk) = &inputs.dtk_image {
                spec["dtkImage"] = json!(dtk);
            }
            Ok(Plan {
                resource: resource.clone(),
                object: json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": metadata, "spec": spec}),
                note: None,
            })
        }
        Some((resource, OcpSpec::Release { use_rt_kernel })) => match &inputs.release_image {
            Some(release) => {
                let mut spec =
                    json!({"releaseImage": release, "pushBuiltImage": inputs.push_built_image});
                if inputs.rt {
                    if !use_rt_kernel {
                        return Err(Error::invalid(
                            "this cluster's KMM (1.0) cannot verify the real-time kernel: its PreflightValidationOCP has no useRTKernel",
                            "drop --rt, or upgrade KMM to 1.1 or later",
                        ));
                    }
                    spec["useRTKernel"] = json!(true);
                }
                Ok(Plan {
                    resource: resource.clone(),
                    object: json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": metadata, "spec": spec}),
                    note: None,
                })
            }
            // No release to give it: a PreflightValidation takes the kernel directly.
            None => {
                let resource = api.pv.clone().ok_or_else(|| {
                    Error::invalid(
                        "this cluster's PreflightValidationOCP needs a release image",
                        "use --release instead of --kernel",
                    )
                })?;
                Ok(Plan {
                    object: pv_object(&resource),
                    resource,
                    note: Some(
                        "this KMM's PreflightValidationOCP takes a release image, not a kernel: \
                         creating a PreflightValidation for the kernel instead"
                            .into(),
                    ),
                })
            }
        },
        None => {
            let resource = api.pv.clone().ok_or_else(|| Error::KmmNotInstalled {
                looked_for: format!("neither {PV_CRD} nor {PVO_CRD}"),
            })?;
            Ok(Plan {
                object: pv_object(&resource),
                resource,
                note: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(versions: &[(&str, &[&str])]) -> Value {
        json!({"spec": {"versions": versions.iter().map(|(name, fields)| {
            let props: serde_json::Map<String, Value> = fields.iter().map(|f| (f.to_string(), json!({"type": "string"}))).collect();
            json!({"name": name, "served": true, "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": props}}}}})
        }).collect::<Vec<_>>()}})
    }

    fn inputs() -> Inputs {
        Inputs {
            kernel_version: "5.14.0-570.19.1.el9_6.x86_64".into(),
            dtk_image: Some("q.io/dtk@sha256:1".into()),
            release_image: Some("q.io/release@sha256:2".into()),
            push_built_image: true,
            rt: false,
        }
    }

    #[test]
    fn eras_from_crds() {
        let pv = crd(&[
            ("v1beta1", &["kernelVersion"]),
            ("v1beta2", &["kernelVersion"]),
        ]);
        let era_c = crd(&[
            ("v1beta1", &["kernelVersion", "dtkImage"]),
            ("v1beta2", &["kernelVersion", "dtkImage"]),
        ]);
        let era_b = crd(&[
            ("v1beta1", &["releaseImage", "useRTKernel"]),
            ("v1beta2", &["releaseImage", "useRTKernel"]),
        ]);
        let era_a = crd(&[("v1beta1", &["releaseImage", "useRTKernel"])]);
        let kmm10 = crd(&[("v1beta1", &["releaseImage"])]);

        let api = from_crds(Some(&pv), Some(&era_c));
        assert_eq!(api.pvo, Some((Resource::pvo("v1beta2"), OcpSpec::Kernel)));
        assert_eq!(api.generation(), "KMM 2.4 or later (OpenShift)");
        let api = from_crds(Some(&pv), Some(&era_b));
        assert_eq!(
            api.pvo,
            Some((
                Resource::pvo("v1beta2"),
                OcpSpec::Release {
                    use_rt_kernel: true
                }
            ))
        );
        let api = from_crds(Some(&crd(&[("v1beta1", &["kernelVersion"])])), Some(&era_a));
        assert_eq!(api.pv, Some(Resource::pv("v1beta1")));
        assert_eq!(api.pvo.as_ref().unwrap().0.version, "v1beta1");
        let api = from_crds(None, Some(&kmm10));
        assert_eq!(
            api.pvo.unwrap().1,
            OcpSpec::Release {
                use_rt_kernel: false
            }
        );
        let api = from_crds(Some(&pv), None);
        assert_eq!(api.pvo, None);
        assert_eq!(api.pv, Some(Resource::pv("v1beta2")));
        // A v1beta2 PreflightValidation alone does not say 2.4: its statuses do.
        assert!(!api.shared_module_objects);
        let mut era_c_pv = pv.clone();
        era_c_pv["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["status"] = json!({"properties": {"modules": {"items": {"properties": {"verificationStatus": {"enum": ["Success", "Failure", "InProgress"]}}}}}});
        assert!(from_crds(Some(&era_c_pv), None).shared_module_objects);
        assert!(from_crds(Some(&pv), Some(&era_c)).shared_module_objects);
        assert!(!from_crds(Some(&pv), Some(&era_b)).shared_module_objects);
    }

    #[test]
    fn objects_per_era() {
        let era_c = KmmApi {
            pv: Some(Resource::pv("v1beta2")),
            pvo: Some((Resource::pvo("v1beta2"), OcpSpec::Kernel)),
            shared_module_objects: true,
            source: "CRDs",
        };
        let plan_c = plan(&era_c, "p", &inputs()).unwrap();
        assert_eq!(plan_c.object["kind"], "PreflightValidationOCP");
        assert_eq!(
            plan_c.object["spec"],
            json!({"kernelVersion": "5.14.0-570.19.1.el9_6.x86_64", "dtkImage": "q.io/dtk@sha256:1", "pushBuiltImage": true})
        );

        let era_b = KmmApi {
            pv: Some(Resource::pv("v1beta2")),
            pvo: Some((
                Resource::pvo("v1beta2"),
                OcpSpec::Release {
                    use_rt_kernel: true,
                },
            )),
            shared_module_objects: true,
            source: "CRDs",
        };
        let mut rt = inputs();
        rt.rt = true;
        let plan_b = plan(&era_b, "p", &rt).unwrap();
        assert_eq!(
            plan_b.object["spec"],
            json!({"releaseImage": "q.io/release@sha256:2", "pushBuiltImage": true, "useRTKernel": true})
        );
        // --kernel on an old OpenShift KMM: a PreflightValidation.
        let mut kernel_only = inputs();
        kernel_only.release_image = None;
        let plan_pv = plan(&era_b, "p", &kernel_only).unwrap();
        assert_eq!(plan_pv.object["kind"], "PreflightValidation");
        assert!(plan_pv.note.is_some());

        let kmm10 = KmmApi {
            pv: Some(Resource::pv("v1beta1")),
            pvo: Some((
                Resource::pvo("v1beta1"),
                OcpSpec::Release {
                    use_rt_kernel: false,
                },
            )),
            shared_module_objects: true,
            source: "CRDs",
        };
        assert!(plan(&kmm10, "p", &rt).is_err());
        assert!(
            plan(&kmm10, "p", &inputs()).unwrap().object["spec"]
                .get("useRTKernel")
                .is_none()
        );

        let upstream = KmmApi {
            pv: Some(Resource::pv("v1beta2")),
            pvo: None,
            shared_module_objects: true,
            source: "CRDs",
        };
        assert_eq!(
            plan(&upstream, "p", &inputs()).unwrap().object["spec"],
            json!({"kernelVersion": "5.14.0-570.19.1.el9_6.x86_64", "pushBuiltImage": true})
        );
    }

    #[test]
    fn kernels_and_names() {
        assert!(validate_kernel("5.14.0-570.19.1.el9_6.x86_64").is_ok());
        assert!(
            validate_kernel("a.b.c").is_ok(),
            "the webhook does no numeric check"
        );
        for bad in ["", "  ", "5.14", "tesdt", "5.14 0"] {
            assert!(validate_kernel(bad).is_err(), "{bad:?}");
        }
        assert_eq!(default_name("4.19.0", false), "preflight-4-19-0");
        assert_eq!(
            default_name("4.20.0-rc.2", true),
            "preflight-4-20-0-rc-2-rt"
        );
        assert_eq!(
            default_name("5.14.0-570.19.1.el9_6.x86_64", false),
            "preflight-5-14-0-570-19-1-el9-6-x86-64"
        );
        assert!(default_name(&"9".repeat(200), true).len() <= 63);
        assert!(validate_name("preflight-4-19-0").is_ok());
        assert!(validate_name("Preflight").is_err());
        assert!(validate_name("-x").is_err());
    }
}
