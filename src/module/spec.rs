//! The parts of a KMM `Module` (kmm.sigs.x-k8s.io/v1beta1) that decide how a node loads it
//! (kmm-api.md §5.1). Unknown fields are ignored; the API server has validated the rest.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The CRD's default for `modprobe.dirName`; a Module from a file may not carry it.
pub const DEFAULT_DIR_NAME: &str = "/opt";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Module {
    #[serde(default)]
    pub metadata: Metadata,
    /// A day-1 `BootModuleConfig`, checked as the Module its loader amounts to.
    #[serde(skip)]
    pub day1: bool,
    #[serde(default)]
    pub spec: ModuleSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub module_loader: Option<ModuleLoader>,
    #[serde(default)]
    pub image_repo_secret: Option<LocalRef>,
    #[serde(default)]
    pub device_plugin: Option<DevicePlugin>,
}

/// `spec.devicePlugin`: only its images matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePlugin {
    #[serde(default)]
    pub container: Option<ImageOnly>,
    #[serde(default)]
    pub init_container: Option<ImageOnly>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageOnly {
    #[serde(default)]
    pub image: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ModuleLoader {
    #[serde(default)]
    pub container: Option<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub kernel_mappings: Vec<KernelMapping>,
    #[serde(default)]
    pub container_image: String,
    #[serde(default)]
    pub modprobe: Modprobe,
    #[serde(default)]
    pub build: Option<Build>,
    #[serde(default)]
    pub sign: Option<Sign>,
    #[serde(default, rename = "registryTLS")]
    pub registry_tls: Tls,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelMapping {
    #[serde(default)]
    pub literal: String,
    #[serde(default)]
    pub regexp: String,
    #[serde(default)]
    pub container_image: String,
    #[serde(default)]
    pub build: Option<Build>,
    #[serde(default)]
    pub sign: Option<Sign>,
    #[serde(default, rename = "registryTLS")]
    pub registry_tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Modprobe {
    #[serde(default)]
    pub module_name: String,
    #[serde(default)]
    pub dir_name: Option<String>,
    #[serde(default)]
    pub firmware_path: String,
    #[serde(default)]
    pub modules_loading_order: Vec<String>,
    #[serde(default)]
    pub raw_args: Option<ModprobeArgs>,
    /// Given to `moduleName` when it is loaded.
    #[serde(default)]
    pub parameters: Vec<String>,
}

impl Modprobe {
    pub fn dir_name(&self) -> &str {
        match self.dir_name.as_deref() {
            Some(dir) if !dir.is_empty() => dir,
            _ => DEFAULT_DIR_NAME,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ModprobeArgs {
    #[serde(default)]
    pub load: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    #[serde(default)]
    pub dockerfile_config_map: Option<LocalRef>,
    #[serde(default)]
    pub build_args: Vec<BuildArg>,
    #[serde(default)]
    pub secrets: Vec<LocalRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BuildArg {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sign {
    #[serde(default)]
    pub unsigned_image: String,
    #[serde(default, rename = "unsignedImageRegistryTLS")]
    pub unsigned_image_registry_tls: Tls,
    #[serde(default)]
    pub key_secret: Option<LocalRef>,
    #[serde(default)]
    pub cert_secret: Option<LocalRef>,
    #[serde(default)]
    pub files_to_sign: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// Plain HTTP is allowed.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default, rename = "insecureSkipTLSVerify")]
    pub insecure_skip_tls_verify: bool,
}

impl Tls {
    pub fn any(self) -> bool {
        self.insecure || self.insecure_skip_tls_verify
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LocalRef {
    #[serde(default)]
    pub name: String,
}

impl Module {
    /// Parse a Module object; the error names the field serde stumbled on.
    /// The Module in `value`, or what is wrong and where (`spec.selector: invalid type: …`).
    pub fn from_value(value: &Value) -> Result<Module, String> {
        serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
    }

    /// A `BootModuleConfig` as the Module the day-1 loader amounts to: the image
    /// `<kernelModuleImage>:<kernel>`, `kernelModuleName` under `/opt/lib/modules/<kernel>/`,
    /// its firmware under `firmwareFilesPath`, on the nodes of the pool (labelled
    /// `node-role.kubernetes.io/<pool>`, as MachineConfigPools select them).
    pub fn from_boot_config(value: &Value) -> Result<Module, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Spec {
            kernel_module_image: String,
            kernel_module_name: String,
            machine_config_pool_name: String,
            #[serde(default)]
            firmware_files_path: Option<String>,
        }
        #[derive(Deserialize)]
        struct Bmc {
            #[serde(default)]
            metadata: Metadata,
            spec: Spec,
        }
        let bmc: Bmc = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        let spec = &bmc.spec;
        let mut modprobe = serde_json::json!({
            "moduleName": spec.kernel_module_name,
            "dirName": DEFAULT_DIR_NAME,
        });
        if let Some(firmware) = spec.firmware_files_path.as_ref().filter(|f| !f.is_empty()) {
            modprobe["firmwarePath"] = Value::String(firmware.clone());
        }
        let as_module = serde_json::json!({
            "metadata": {"name": bmc.metadata.name, "namespace": bmc.metadata.namespace,
                         "deletionTimestamp": bmc.metadata.deletion_timestamp},
            "spec": {
                "selector": {format!("node-role.kubernetes.io/{}", spec.machine_config_pool_name): ""},
                "moduleLoader": {"container": {
                    "modprobe": modprobe,
                    "kernelMappings": [{
                        "regexp": "^.+$",
                        "containerImage": format!("{}:${{KERNEL_FULL_VERSION}}", spec.kernel_module_image),
                    }],
                }},
            },
        });
        let mut module = Module::from_value(&as_module)?;
        module.day1 = true;
        Ok(module)
    }

    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// The container that loads the module, when there is a module loader at all
    /// (device-plugin or DRA-only Modules have none, kmm-api.md §4.2).
    pub fn container(&self) -> Option<&Container> {
        self.spec.module_loader.as_ref()?.container.as_ref()
    }

    /// The device plugin's images: (what, image), the container's first.
    pub fn device_plugin_images(&self) -> Vec<(&'static str, &str)> {
        let Some(plugin) = &self.spec.device_plugin else {
            return Vec::new();
        };
        [
            ("device plugin image", plugin.container.as_ref()),
            (
                "device plugin init container image",
                plugin.init_container.as_ref(),
            ),
        ]
        .into_iter()
        .filter_map(|(what, c)| Some((what, c?.image.as_str())))
        .filter(|(_, image)| !image.is_empty())
        .collect()
    }

    /// `namespace/name`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_a_node_needs_and_defaults_dir_name() {
        let module = Module::from_value(&json!({
            "apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
            "metadata": {"name": "mlx5", "namespace": "nic", "generation": 3},
            "spec": {
                "selector": {"node-role.kubernetes.io/worker": ""},
                "imageRepoSecret": {"name": "pull"},
                "moduleLoader": {"container": {
                    "containerImage": "quay.io/v/mlx5:${KERNEL_FULL_VERSION}",
                    "registryTLS": {"insecureSkipTLSVerify": true},
                    "modprobe": {"moduleName": "mlx5_core", "modulesLoadingOrder": ["mlx5_core", "mlxfw"]},
                    "kernelMappings": [{"regexp": "^.+$", "sign": {"keySecret": {"name": "k"}, "certSecret": {"name": "c"}}}],
                    "unknownField": 1
                }}
            }
        }))
        .unwrap();
        let container = module.container().unwrap();
        assert_eq!(container.modprobe.dir_name(), "/opt");
        assert!(container.registry_tls.any());
        assert_eq!(container.modprobe.modules_loading_order.len(), 2);
        assert_eq!(module.key(), "nic/mlx5");
        assert_eq!(module.metadata.generation, Some(3));
        assert!(!module.is_deleting());
        assert_eq!(
            container.kernel_mappings[0]
                .sign
                .as_ref()
                .unwrap()
                .key_secret
                .as_ref()
                .unwrap()
                .name,
            "k"
        );

        let device_plugin_only =
            Module::from_value(&json!({"metadata": {"name": "dp"}, "spec": {"selector": {}}}))
                .unwrap();
        assert!(device_plugin_only.container().is_none());
        assert!(Module::from_value(&json!({"spec": {"moduleLoader": "nope"}})).is_err());
    }
}
