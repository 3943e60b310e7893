//! The kernel the nodes will really boot: the one in the release's node OS image, which is not
//! always the driver-toolkit's (fleet-and-trust.md §2). Read as cheaply as the image allows:
//! the config's labels first (one manifest and one config), the tiny last layer's package list
//! only when the labels do not say.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Arch;
use super::payload::ImageReferences;
use crate::registry::Registry;
use crate::registry::files::{platform_manifest, read_files, small_blob};
use crate::registry::reference::ImageRef;

/// The node OS of the RHEL 9 stream, newest name first: `rhel-coreos` (4.13+), `rhel-coreos-8`
/// (4.12), `machine-os-content` (4.11 and before).
pub const OS_TAGS: [&str; 3] = ["rhel-coreos", "rhel-coreos-8", "machine-os-content"];
/// The node OS of the RHEL 10 stream (5.x payloads).
pub const OS_TAG_10: &str = "rhel-coreos-10";
/// The extensions image, which carries the RT kernel's packages.
pub const EXTENSIONS_TAG: &str = "rhel-coreos-extensions";

const KERNEL_LABEL: &str = "com.coreos.rpm.kernel";
const RT_LABEL: &str = "com.coreos.rpm.kernel-rt-core";
const OSTREE_LABEL: &str = "ostree.linux";
const METALAYER_LABEL: &str = "io.openshift.metalayer";
/// The package list of the node OS, in its last layer (4.19+).
const META_JSON: &str = "usr/share/openshift/base/meta.json";
/// The extensions' packages, name → version, in the extensions image's last layer.
const EXTENSIONS_JSON: &str = "usr/share/rpm-ostree/extensions.json";
/// An image config with its labels is a few tens of KiB.
const CONFIG_LIMIT: u64 = 1024 * 1024;
/// The metadata layer holds one small JSON file; a larger last layer is not one.
const META_LAYER_LIMIT: u64 = 8 * 1024 * 1024;
const META_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// A kernel release as `uname -r` prints it (the RT ones of RHEL 8 carry `.rt` in theirs).
static KERNEL_RELEASE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d+\.\d+\.\d+-[\w.]+\.(x86_64|aarch64|ppc64le|s390x)$").expect("static regex")
});

/// How the node OS kernel compares with the driver-toolkit's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKernelStatus {
    /// The node OS carries the driver-toolkit's kernel (and RT kernel, where both are known).
    Agrees,
    /// The nodes will boot another kernel than the driver-toolkit's.
    Differs,
    /// The node OS image could not be read, or does not say: the DTK's kernel is assumed.
    Unconfirmed,
}

/// The node OS image of one driver-toolkit stream and the kernels it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOs {
    pub status: NodeKernelStatus,
    /// The payload tag it was found under (`rhel-coreos`, …) and its pull spec.
    pub tag: Option<String>,
    pub image: Option<String>,
    pub kernel_version: Option<String>,
    pub rt_kernel_version: Option<String>,
    /// Where the kernel was read (`label com.coreos.rpm.kernel`, `usr/share/openshift/base/meta.json`).
    pub source: Option<String>,
    /// Why it is unconfirmed, or what is worth knowing about the RT kernel.
    pub reason: Option<String>,
    /// A read failed that may succeed next time: the answer is not cached.
    #[serde(skip)]
    pub transient: bool,
}

impl NodeOs {
    fn unconfirmed(tag: Option<&str>, image: Option<String>, reason: String) -> NodeOs {
        NodeOs {
            status: NodeKernelStatus::Unconfirmed,
            tag: tag.map(str::to_string),
            image,
            kernel_version: None,
            rt_kernel_version: None,
            source: None,
            reason: Some(reason),
            transient: false,
        }
    }

    /// The kernel the nodes boot where it differs from the DTK's `dtk_kernel`.
    pub fn differing(&self, dtk_kernel: &str) -> Option<&str> {
        self.kernel_version
            .as_deref()
            .filter(|k| self.status == NodeKernelStatus::Differs && *k != dtk_kernel)
    }

    /// The RT kernel the nodes boot where it differs from the DTK's `dtk_rt`.
    pub fn differing_rt(&self, dtk_rt: Option<&str>) -> Option<&str> {
        self.rt_kernel_version
            .as_deref()
            .filter(|k| self.status == NodeKernelStatus::Differs && Some(*k) != dtk_rt)
    }
}

/// The kernels an image's labels state: `com.coreos.rpm.kernel` (and `…kernel-rt-core`), or an
/// `ostree.linux` that is a kernel release. OCP 4.22+ node images set `ostree.linux=true`,
/// which says nothing.
pub fn kernels_from_labels(
    labels: &BTreeMap<String, String>,
) -> (Option<String>, Option<String>, Option<&'static str>) {
    let standard = labels
        .get(KERNEL_LABEL)
        .and_then(|v| kernel_release(v))
        .map(|k| (k, "label com.coreos.rpm.kernel"))
        .or_else(|| {
            labels
                .get(OSTREE_LABEL)
                .and_then(|v| kernel_release(v))
                .map(|k| (k, "label ostree.linux"))
        });
    let rt = labels
        .get(RT_LABEL)
        .and_then(|v| kernel_release(v))
        .map(rt_uname);
    match standard {
        Some((kernel, source)) => (Some(kernel), rt, Some(source)),
        None => (None, rt, None),
    }
}

/// `5.14.0-570.19.1.el9_6.x86_64` from a label or package version: an epoch and a `kernel-`
/// prefix are dropped; anything that is not a kernel release is None.
fn kernel_release(value: &str) -> Option<String> {
    let value = value.trim();
    let value = value.strip_prefix("kernel-").unwrap_or(value);
    let value = match value.split_once(':') {
        Some((epoch, rest)) if epoch.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => value,
    };
    KERNEL_RELEASE.is_match(value).then(|| value.to_string())
}

/// The `uname -r` of an RT kernel package: RHEL 8's carry `.rt` in their release and are their
/// own name; RHEL 9.2+ RT kernels share the standard release and add `+rt` (4.16+).
fn rt_uname(release: String) -> String {
    if release.contains(".rt") {
        release
    } else {
        format!("{release}+rt")
    }
}

#[derive(Deserialize)]
struct MetaJson {
    #[serde(rename = "rpmdb.pkglist", default)]
    pkglist: Vec<Vec<serde_json::Value>>,
}

/// The kernels in `meta.json`'s package list: `[name, epoch, version, release, arch]` entries.
pub fn kernels_from_meta(bytes: &[u8]) -> Result<(Option<String>, Option<String>), String> {
    let meta: MetaJson =
        serde_json::from_slice(bytes).map_err(|e| format!("{META_JSON} is not valid JSON: {e}"))?;
    let find = |names: &[&str]| {
        meta.pkglist.iter().find_map(|entry| {
            let field = |i: usize| entry.get(i).and_then(|v| v.as_str());
            let name = field(0)?;
            if !names.contains(&name) {
                return None;
            }
            kernel_release(&format!("{}-{}.{}", field(2)?, field(3)?, field(4)?))
        })
    };
    Ok((
        find(&["kernel-core", "kernel"]),
        find(&["kernel-rt-core", "kernel-rt"]).map(rt_uname),
    ))
}

/// The RT kernel in `extensions.json`: a map of package name → version (`EVR.arch`).
pub fn rt_from_extensions(bytes: &[u8]) -> Result<Option<String>, String> {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| format!("{EXTENSIONS_JSON} is not valid JSON: {e}"))?;
    Ok(["kernel-rt-core", "kernel-rt"]
        .iter()
        .find_map(|name| map.get(*name).and_then(|v| v.as_str()))
        .and_then(kernel_release)
        .map(rt_uname))
}

/// What one image told: its labels' kernels, else its metadata layer's.
struct Read {
    kernel: Option<String>,
    rt: Option<String>,
    source: Option<String>,
}

/// Read `path` from the image's last layer only, when that layer is small enough to be a
/// metadata layer (a real node OS image is gigabytes below it).
async fn last_layer_file(
    registry: &Registry,
    image: &ImageRef,
    manifest: &crate::registry::manifest::ImageManifest,
    path: &str,
) -> Result<Option<Vec<u8>>, String> {
    let Some(last) = manifest.layers.last() else {
        return Ok(None);
    };
    if last.size > META_LAYER_LIMIT {
        return Ok(None);
    }
    let mut top = manifest.clone();
    top.layers = vec![last.clone()];
    let files = read_files(registry, image, &top, &[path], META_FILE_LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    Ok(files.get(path).cloned().flatten())
}

async fn read_image(
    registry: &Registry,
    image: &ImageRef,
    arch: Arch,
    file: &str,
) -> Result<Read, String> {
    const ROLE: &str = "node OS image";
    let (fetched, location) = registry
        .manifest_located(image)
        .await
        .map_err(|e| e.with_role(ROLE).to_string())?;
    let (manifest, _) = platform_manifest(registry, &location, &fetched.body, arch.goarch(), ROLE)
        .await
        .map_err(|e| e.to_string())?;
    let config = small_blob(registry, &location, &manifest.config, CONFIG_LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| format!("its config is not valid JSON: {e}"))?;
    let labels: BTreeMap<String, String> = config["config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let (kernel, rt, source) = kernels_from_labels(&labels);
    let labelled = Read {
        kernel,
        rt,
        source: source.map(str::to_string),
    };
    // The package list only where the labels do not say: the node OS's metadata layer
    // (labelled so, 4.19+), the extensions image's last layer.
    let from_layer = if file == META_JSON {
        labelled.kernel.is_none() && labels.get(METALAYER_LABEL).is_some_and(|v| v == "true")
    } else {
        labelled.rt.is_none()
    };
    if !from_layer {
        return Ok(labelled);
    }
    let Some(bytes) = last_layer_file(registry, &location, &manifest, file).await? else {
        return Ok(labelled);
    };
    if file == META_JSON {
        let (kernel, rt) = kernels_from_meta(&bytes)?;
        Ok(Read {
            kernel,
            rt,
            source: Some(META_JSON.to_string()),
        })
    } else {
        Ok(Read {
            kernel: None,
            rt: rt_from_extensions(&bytes)?,
            source: Some(EXTENSIONS_JSON.to_string()),
        })
    }
}

fn reference(refs: &ImageReferences, tag: &str) -> Option<Result<ImageRef, String>> {
    refs.image_for(tag).map(|spec| {
        spec.parse::<ImageRef>()
            .map_err(|e| format!("its {tag} reference is not an image reference: {e}"))
    })
}

/// The node OS of one stream (`rhel10`: the RHEL 10 one) and the kernels it states, read in
/// parallel with the driver-toolkit; `settle` compares them with the DTK's. Never an error:
/// what cannot be read is Unconfirmed, with the reason.
pub async fn read(registry: &Registry, refs: &ImageReferences, rhel10: bool, arch: Arch) -> NodeOs {
    let tags: &[&str] = if rhel10 { &[OS_TAG_10] } else { &OS_TAGS };
    let Some((tag, image)) = tags
        .iter()
        .find_map(|tag| reference(refs, tag).map(|r| (*tag, r)))
    else {
        return NodeOs::unconfirmed(
            None,
            None,
            format!("the payload names no node OS image ({})", tags.join(", ")),
        );
    };
    let image = match image {
        Ok(image) => image,
        Err(reason) => return NodeOs::unconfirmed(Some(tag), None, reason),
    };
    // OpenShift ships the RT kernel for x86_64, in the extensions image.
    let extensions = match (rhel10, arch) {
        (false, Arch::X86_64) => reference(refs, EXTENSIONS_TAG).and_then(Result::ok),
        _ => None,
    };
    let (os, ext) = futures::join!(read_image(registry, &image, arch, META_JSON), async {
        match &extensions {
            Some(ext) => Some(read_image(registry, ext, arch, EXTENSIONS_JSON).await),
            None => None,
        }
    });
    let os = match os {
        Ok(read) => read,
        Err(reason) => {
            let mut unconfirmed = NodeOs::unconfirmed(
                Some(tag),
                Some(image.to_string()),
                format!("the node OS image {image} could not be read: {reason}"),
            );
            unconfirmed.transient = true;
            return unconfirmed;
        }
    };
    let Some(kernel) = os.kernel else {
        return NodeOs::unconfirmed(
            Some(tag),
            Some(image.to_string()),
            format!(
                "the node OS image {image} states no kernel (no {KERNEL_LABEL} label, no \
                 kernel-release {OSTREE_LABEL} label, no {META_JSON} in a metadata layer)"
            ),
        );
    };
    let mut found = NodeOs {
        status: NodeKernelStatus::Agrees,
        tag: Some(tag.to_string()),
        image: Some(image.to_string()),
        kernel_version: Some(kernel),
        rt_kernel_version: None,
        source: os.source,
        reason: None,
        transient: false,
    };
    match (os.rt, ext) {
        (Some(rt), _) => found.rt_kernel_version = Some(rt),
        (None, Some(Ok(read))) => found.rt_kernel_version = read.rt,
        (None, Some(Err(e))) => {
            found.reason = Some(format!("{EXTENSIONS_TAG} could not be read: {e}"));
            found.transient = true;
        }
        (None, None) => {}
    }
    found
}

/// `found` compared with the stream's driver-toolkit kernels.
pub fn settle(mut found: NodeOs, dtk_kernel: &str, dtk_rt: Option<&str>) -> NodeOs {
    let Some(kernel) = found.kernel_version.as_deref() else {
        return found;
    };
    if let (None, Some(_)) = (&found.rt_kernel_version, dtk_rt) {
        let why = found
            .reason
            .take()
            .unwrap_or_else(|| "the node OS does not state it".to_string());
        found.reason = Some(format!("the RT kernel is unconfirmed: {why}"));
    }
    let rt_differs = matches!(
        (found.rt_kernel_version.as_deref(), dtk_rt),
        (Some(rt), Some(d)) if rt != d
    );
    found.status = if kernel != dtk_kernel || rt_differs {
        NodeKernelStatus::Differs
    } else {
        NodeKernelStatus::Agrees
    };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_state_the_kernel_unless_ostree_says_true() {
        let (k, rt, source) = kernels_from_labels(&labels(&[
            (KERNEL_LABEL, "4.18.0-305.17.1.el8_4.x86_64"),
            (RT_LABEL, "4.18.0-305.17.1.rt7.89.el8_4.x86_64"),
        ]));
        assert_eq!(k.as_deref(), Some("4.18.0-305.17.1.el8_4.x86_64"));
        assert_eq!(rt.as_deref(), Some("4.18.0-305.17.1.rt7.89.el8_4.x86_64"));
        assert_eq!(source, Some("label com.coreos.rpm.kernel"));

        let (k, _, source) =
            kernels_from_labels(&labels(&[(OSTREE_LABEL, "5.14.0-570.19.1.el9_6.aarch64")]));
        assert_eq!(k.as_deref(), Some("5.14.0-570.19.1.el9_6.aarch64"));
        assert_eq!(source, Some("label ostree.linux"));

        let (k, rt, _) = kernels_from_labels(&labels(&[
            (OSTREE_LABEL, "true"),
            (METALAYER_LABEL, "true"),
        ]));
        assert_eq!((k, rt), (None, None));
        let (k, _, _) =
            kernels_from_labels(&labels(&[(KERNEL_LABEL, "kernel-0:6.12.0-55.el10.x86_64")]));
        assert_eq!(k.as_deref(), Some("6.12.0-55.el10.x86_64"));
    }

    #[test]
    fn meta_json_and_extensions() {
        let meta = br#"{"rpmdb.pkglist": [["bash","0","5.1.8","9.el9","x86_64"],
            ["kernel-core","0","5.14.0","570.21.1.el9_6","x86_64"],
            ["kernel-rt-core","0","5.14.0","570.21.1.el9_6","x86_64"]]}"#;
        assert_eq!(
            kernels_from_meta(meta).unwrap(),
            (
                Some("5.14.0-570.21.1.el9_6.x86_64".into()),
                Some("5.14.0-570.21.1.el9_6.x86_64+rt".into())
            )
        );
        assert_eq!(
            kernels_from_meta(br#"{"rpmdb.pkglist": [["kernel", 0, 1]]}"#).unwrap(),
            (None, None)
        );
        assert!(kernels_from_meta(b"[").is_err());
        assert_eq!(
            rt_from_extensions(br#"{"kernel-rt-core":"5.14.0-570.21.1.el9_6.x86_64","x":"1"}"#)
                .unwrap()
                .as_deref(),
            Some("5.14.0-570.21.1.el9_6.x86_64+rt")
        );
        assert_eq!(
            rt_from_extensions(br#"{"kernel-rt-core": 5}"#).unwrap(),
            None
        );
        assert!(rt_from_extensions(b"[]").is_err());
    }
}
