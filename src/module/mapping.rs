//! Which image a Module uses for a kernel, exactly as KMM's kernel mapper decides it
//! (kmm-api.md §5.2; kubernetes-sigs/kernel-module-management `internal/module/kernelmapper.go`
//! and `internal/buildsign/helper.go`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use super::spec::{Build, BuildArg, Container, Sign, Tls};
use super::template;

static KERNEL_PARTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.,-]").expect("static regex"));

/// KMM's `NormalizeVersion`: every character outside `[A-Za-z0-9._-]` becomes `_`
/// (`5.14.0-570.el9.x86_64+rt` → `5.14.0-570.el9.x86_64_rt`). Image tags are templated with
/// this; the directory inside the image keeps the raw kernel.
pub fn normalize_kernel(kernel: &str) -> String {
    kernel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The kernel variables KMM templates with (`KernelComponentsAsEnvVars`), from the normalised
/// kernel. None when it has fewer than three parts (KMM's webhook refuses such kernels).
pub fn kernel_vars(normalized: &str) -> Option<Vec<(&'static str, String)>> {
    let parts: Vec<&str> = KERNEL_PARTS.split(normalized).collect();
    if parts.len() < 3 {
        return None;
    }
    Some(vec![
        ("KERNEL_FULL_VERSION", normalized.to_string()),
        ("KERNEL_VERSION", normalized.to_string()),
        ("KERNEL_XYZ", parts[..3].join(".")),
        ("KERNEL_X", parts[0].to_string()),
        ("KERNEL_Y", parts[1].to_string()),
        ("KERNEL_Z", parts[2].to_string()),
    ])
}

/// What a Module resolves to for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Index into `kernelMappings` of the mapping that matched.
    pub mapping: usize,
    /// `containerImage`, templated.
    pub image: String,
    pub registry_tls: Tls,
    pub build: Option<Build>,
    /// With `unsignedImage` and `filesToSign` templated.
    pub sign: Option<Sign>,
}

/// Why KMM itself would refuse the Module for this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingError {
    Regexp {
        mapping: usize,
        pattern: String,
        reason: String,
    },
    Template {
        field: String,
        template: String,
        reason: String,
    },
    Kernel {
        kernel: String,
    },
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingError::Regexp {
                mapping,
                pattern,
                reason,
            } => write!(
                f,
                "kernelMappings[{mapping}].regexp {pattern:?} does not compile: {reason}"
            ),
            MappingError::Template {
                field,
                template,
                reason,
            } => write!(f, "{field} {template:?} cannot be templated: {reason}"),
            MappingError::Kernel { kernel } => write!(
                f,
                "kernel {kernel:?} has fewer than three parts split on . , or -"
            ),
        }
    }
}

/// The first mapping that matches `kernel`: `literal` exactly, else `regexp` unanchored.
/// A regexp is compiled only when KMM would reach it, so a broken one after a match is harmless,
/// as it is for KMM.
pub fn find_mapping(container: &Container, kernel: &str) -> Result<Option<usize>, MappingError> {
    for (index, mapping) in container.kernel_mappings.iter().enumerate() {
        if !mapping.literal.is_empty() && mapping.literal == kernel {
            return Ok(Some(index));
        }
        if mapping.regexp.is_empty() {
            continue;
        }
        // Rust's regex crate takes RE2 syntax, Go's; both match unanchored.
        let regex = Regex::new(&mapping.regexp).map_err(|e| MappingError::Regexp {
            mapping: index,
            pattern: mapping.regexp.clone(),
            reason: e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string(),
        })?;
        if regex.is_match(kernel) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Build args of `base` with `overrides` applied by name; names not in `base` are appended in
/// sorted order (`ApplyBuildArgOverrides`).
fn override_build_args(base: &[BuildArg], overrides: &[BuildArg]) -> Vec<BuildArg> {
    let mut by_name: BTreeMap<&str, &BuildArg> = BTreeMap::new();
    for o in overrides {
        by_name.insert(&o.name, o);
    }
    let mut args: Vec<BuildArg> = base
        .iter()
        .map(|a| by_name.remove(a.name.as_str()).unwrap_or(a).clone())
        .collect();
    args.extend(by_name.into_values().cloned());
    args
}

/// The container's build with the mapping's over it (`GetRelevantBuild`).
fn merge_build(container: Option<&Build>, mapping: Option<&Build>) -> Option<Build> {
    match (container, mapping) {
        (None, None) => None,
        (Some(b), None) | (None, Some(b)) => Some(b.clone()),
        (Some(base), Some(over)) => {
            let mut build = base.clone();
            if over.dockerfile_config_map.is_some() {
                build.dockerfile_config_map = over.dockerfile_config_map.clone();
            }
            build.build_args = override_build_args(&base.build_args, &over.build_args);
            build.secrets.extend(over.secrets.iter().cloned());
            Some(build)
        }
    }
}

/// The container's sign with the mapping's over it (`GetRelevantSign`), before templating.
fn merge_sign(container: Option<&Sign>, mapping: Option<&Sign>) -> Option<Sign> {
    match (container, mapping) {
        (None, None) => None,
        (Some(s), None) | (None, Some(s)) => Some(s.clone()),
        (Some(base), Some(over)) => {
            let mut sign = base.clone();
            if !over.unsigned_image.is_empty() {
                sign.unsigned_image = over.unsigned_image.clone();
            }
            if over.key_secret.is_some() {
                sign.key_secret = over.key_secret.clone();
            }
            if over.cert_secret.is_some() {
                sign.cert_secret = over.cert_secret.clone();
            }
            sign.files_to_sign
                .extend(over.files_to_sign.iter().cloned());
            Some(sign)
        }
    }
}

fn fill(field: &str, template: &str, vars: &[(&str, String)]) -> Result<String, MappingError> {
    template::substitute(template, vars).map_err(|reason| MappingError::Template {
        field: field.to_string(),
        template: template.to_string(),
        reason,
    })
}

/// Resolve a Module (its container, name and namespace) for the node kernel `kernel` (raw, as
/// `uname -r` gives it). None: no mapping matches ("mapping not found" for KMM).
pub fn resolve(
    container: &Container,
    name: &str,
    namespace: &str,
    kernel: &str,
) -> Result<Option<Resolved>, MappingError> {
    let Some(index) = find_mapping(container, kernel)? else {
        return Ok(None);
    };
    let mapping = &container.kernel_mappings[index];
    let kernel_vars =
        kernel_vars(&normalize_kernel(kernel)).ok_or_else(|| MappingError::Kernel {
            kernel: kernel.to_string(),
        })?;

    let mut sign = merge_sign(container.sign.as_ref(), mapping.sign.as_ref());
    if let Some(sign) = sign.as_mut() {
        // Sign fields see the kernel variables only, not MOD_NAME / MOD_NAMESPACE.
        sign.unsigned_image = fill("sign.unsignedImage", &sign.unsigned_image, &kernel_vars)?;
        sign.files_to_sign = sign
            .files_to_sign
            .iter()
            .map(|f| fill("sign.filesToSign", f, &kernel_vars))
            .collect::<Result<_, _>>()?;
    }
    let image_template = if mapping.container_image.is_empty() {
        &container.container_image
    } else {
        &mapping.container_image
    };
    let mut vars = kernel_vars;
    vars.push(("MOD_NAME", name.to_string()));
    vars.push(("MOD_NAMESPACE", namespace.to_string()));
    let field = if mapping.container_image.is_empty() {
        "containerImage".to_string()
    } else {
        format!("kernelMappings[{index}].containerImage")
    };
    Ok(Some(Resolved {
        mapping: index,
        image: fill(&field, image_template, &vars)?,
        registry_tls: mapping.registry_tls.unwrap_or(container.registry_tls),
        build: merge_build(container.build.as_ref(), mapping.build.as_ref()),
        sign,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::spec::Module;
    use serde_json::json;

    fn container(value: serde_json::Value) -> Container {
        Module::from_value(&json!({"metadata": {"name": "m", "namespace": "ns"},
            "spec": {"moduleLoader": {"container": value}}}))
        .unwrap()
        .container()
        .unwrap()
        .clone()
    }

    const K: &str = "5.14.0-570.19.1.el9_6.x86_64";

    #[test]
    fn normalises_and_splits_kernels() {
        assert_eq!(
            normalize_kernel("5.14.0-570.19.1.el9_6.x86_64+rt"),
            "5.14.0-570.19.1.el9_6.x86_64_rt"
        );
        let vars = kernel_vars(K).unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("KERNEL_XYZ"), "5.14.0");
        assert_eq!(
            (get("KERNEL_X"), get("KERNEL_Y"), get("KERNEL_Z")),
            ("5".into(), "14".into(), "0".into())
        );
        assert!(kernel_vars("5.14").is_none());
    }

    #[test]
    fn first_match_wins_literal_exact_regexp_unanchored() {
        let c = container(json!({
            "modprobe": {"moduleName": "m"},
            "containerImage": "q.io/default:${KERNEL_FULL_VERSION}",
            "kernelMappings": [
                {"literal": "5.14.0-570.19.1.el9_6", "containerImage": "q.io/literal:1"},
                {"regexp": "el9_6", "containerImage": "q.io/unanchored:${KERNEL_XYZ}"},
                {"regexp": "^.+$", "containerImage": "q.io/catchall:1"},
            ]
        }));
        let r = resolve(&c, "m", "ns", K).unwrap().unwrap();
        assert_eq!((r.mapping, r.image.as_str()), (1, "q.io/unanchored:5.14.0"));
        let r = resolve(&c, "m", "ns", "5.14.0-570.19.1.el9_6")
            .unwrap()
            .unwrap();
        assert_eq!(r.image, "q.io/literal:1");
        let r = resolve(&c, "m", "ns", "6.12.0-55.el10.x86_64")
            .unwrap()
            .unwrap();
        assert_eq!(r.mapping, 2);

        let only_anchored =
            container(json!({"modprobe": {}, "kernelMappings": [{"regexp": "^5\\.14$"}]}));
        assert_eq!(resolve(&only_anchored, "m", "ns", K).unwrap(), None);
    }

    #[test]
    fn the_container_image_is_the_default_and_templates_see_the_module() {
        let c = container(json!({
            "modprobe": {"moduleName": "m"},
            "containerImage": "q.io/${MOD_NAMESPACE}/${MOD_NAME}:${KERNEL_FULL_VERSION}",
            "kernelMappings": [{"regexp": "^.+$"}]
        }));
        let rt = format!("{K}+rt");
        let r = resolve(&c, "mlx5", "nic", &rt).unwrap().unwrap();
        assert_eq!(r.image, format!("q.io/nic/mlx5:{K}_rt"));
    }

    #[test]
    fn mapping_level_build_sign_and_tls_merge_over_the_container() {
        let c = container(json!({
            "modprobe": {"moduleName": "m"},
            "registryTLS": {"insecure": true},
            "build": {"dockerfileConfigMap": {"name": "base-df"},
                      "buildArgs": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                      "secrets": [{"name": "s1"}]},
            "sign": {"keySecret": {"name": "k"}, "certSecret": {"name": "c"},
                     "unsignedImage": "q.io/unsigned:${KERNEL_FULL_VERSION}",
                     "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/a.ko"]},
            "kernelMappings": [{
                "regexp": "^.+$", "containerImage": "q.io/m:1",
                "registryTLS": {"insecureSkipTLSVerify": true},
                "build": {"dockerfileConfigMap": {"name": "mapping-df"},
                          "buildArgs": [{"name": "Z", "value": "26"}, {"name": "B", "value": "b"}, {"name": "C", "value": "3"}],
                          "secrets": [{"name": "s2"}]},
                "sign": {"certSecret": {"name": "c2"}, "filesToSign": ["/opt/x.ko"]}
            }]
        }));
        let r = resolve(&c, "m", "ns", K).unwrap().unwrap();
        assert_eq!(
            r.registry_tls,
            Tls {
                insecure: false,
                insecure_skip_tls_verify: true
            }
        );
        let build = r.build.unwrap();
        assert_eq!(build.dockerfile_config_map.unwrap().name, "mapping-df");
        let args: Vec<(String, String)> = build
            .build_args
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect();
        assert_eq!(
            args,
            [("A", "1"), ("B", "b"), ("C", "3"), ("Z", "26")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(
            build
                .secrets
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["s1", "s2"]
        );
        let sign = r.sign.unwrap();
        assert_eq!(sign.key_secret.unwrap().name, "k");
        assert_eq!(sign.cert_secret.unwrap().name, "c2");
        assert_eq!(sign.unsigned_image, format!("q.io/unsigned:{K}"));
        assert_eq!(
            sign.files_to_sign,
            [
                format!("/opt/lib/modules/{K}/a.ko"),
                "/opt/x.ko".to_string()
            ]
        );

        // No mapping-level TLS: the container's.
        let c = container(json!({"modprobe": {}, "registryTLS": {"insecure": true},
            "kernelMappings": [{"regexp": ".", "containerImage": "q.io/m:1"}]}));
        assert!(
            resolve(&c, "m", "ns", K)
                .unwrap()
                .unwrap()
                .registry_tls
                .insecure
        );
    }

    #[test]
    fn what_kmm_would_refuse() {
        let bad_regexp = container(json!({"modprobe": {}, "kernelMappings": [
            {"regexp": "(unclosed", "containerImage": "q.io/m:1"}]}));
        let err = resolve(&bad_regexp, "m", "ns", K).unwrap_err();
        assert!(
            err.to_string()
                .contains("kernelMappings[0].regexp \"(unclosed\" does not compile"),
            "{err}"
        );

        // A broken regexp after the match is never compiled, as in KMM.
        let after = container(json!({"modprobe": {}, "kernelMappings": [
            {"literal": K, "containerImage": "q.io/m:1"}, {"regexp": "(unclosed"}]}));
        assert!(resolve(&after, "m", "ns", K).is_ok());

        let bad_template = container(json!({"modprobe": {}, "kernelMappings": [
            {"regexp": ".", "containerImage": "q.io/m:${KERNEL_FULL_VERSION"}]}));
        let err = resolve(&bad_template, "m", "ns", K).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernelMappings[0].containerImage \"q.io/m:${KERNEL_FULL_VERSION\" cannot be templated: closing brace expected"
        );
    }
}
