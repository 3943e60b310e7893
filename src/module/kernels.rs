//! Which kernels a Module's nodes will boot after the upgrade. A node keeps its flavour: a
//! real-time node boots the release's RT kernel, an aarch64 64k-page node the `+64k` kernel, a
//! RHEL CoreOS 10 node the kernel of the payload's `driver-toolkit-10` (kmm-api.md §5.4,
//! ocp-release.md §2.4). KMM itself ignores `spec.selector` in preflight; the nodes do not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::release::DtkStream;

/// What the plugin knows of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `status.nodeInfo.kernelVersion` (`uname -r`).
    pub kernel: String,
    /// `status.nodeInfo.osImage` (`Red Hat Enterprise Linux CoreOS 418.94…`).
    pub os_image: String,
    /// `kubernetes.io/arch` (`amd64`).
    pub goarch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    Standard,
    RealTime,
    /// aarch64 with 64k pages.
    Pages64k,
}

/// The kind of kernel a node boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Boot {
    /// The RHEL major release of its RHCOS (9, 10).
    pub rhel: u32,
    pub variant: Variant,
}

impl Boot {
    pub const STANDARD: Boot = Boot {
        rhel: 9,
        variant: Variant::Standard,
    };
}

impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = match self.variant {
            Variant::Standard => "standard",
            Variant::RealTime => "real-time",
            Variant::Pages64k => "64k-page",
        };
        if self.rhel == 9 {
            f.write_str(variant)
        } else {
            write!(f, "RHEL {} {variant}", self.rhel)
        }
    }
}

/// The kernel a node runs now says which kind it boots: `+rt` (RHEL 9) or `.rt` in the release
/// (RHEL 8) is real-time, `+64k` is 64k pages; an `el10` kernel or a CoreOS 10 `osImage` is RHEL 10.
pub fn boot_of(node: &NodeInfo) -> Boot {
    let kernel = node.kernel.trim_end_matches('+');
    let variant = if kernel.ends_with("+rt") || kernel.contains(".rt") {
        Variant::RealTime
    } else if kernel.ends_with("+64k") {
        Variant::Pages64k
    } else {
        Variant::Standard
    };
    let rhel10 = kernel.contains(".el10") || node.os_image.contains("CoreOS 10");
    Boot {
        rhel: if rhel10 { 10 } else { 9 },
        variant,
    }
}

/// A Module's `spec.selector` (a map: every key present with exactly that value).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The release's kernel for `boot`, or why there is none: the kernel the nodes will boot, which
/// is the node OS's where it differs from the driver-toolkit's.
pub fn kernel_of(boot: Boot, streams: &[DtkStream]) -> Result<String, String> {
    release_kernel(boot, streams, true)
}

/// The driver-toolkit's kernel for `boot`: what KMM checks and builds for.
pub fn dtk_kernel_of(boot: Boot, streams: &[DtkStream]) -> Result<String, String> {
    release_kernel(boot, streams, false)
}

fn release_kernel(boot: Boot, streams: &[DtkStream], nodes: bool) -> Result<String, String> {
    let stream = if boot.rhel >= 10 {
        streams
            .iter()
            .find(|s| s.rhel_major().is_some_and(|m| m >= 10))
            .ok_or_else(|| "the release has no driver-toolkit-10 (RHEL 10 stream)".to_string())?
    } else {
        streams
            .first()
            .ok_or_else(|| "the release has no driver-toolkit".to_string())?
    };
    let (standard, rt) = match nodes {
        true => (stream.boot_kernel(), stream.boot_rt_kernel()),
        false => (
            stream.kernel_version.as_str(),
            stream.rt_kernel_version.as_deref(),
        ),
    };
    match boot.variant {
        Variant::Standard => Ok(standard.to_string()),
        Variant::RealTime => rt
            .map(str::to_string)
            .ok_or_else(|| format!("the release's {} has no real-time kernel", stream.dtk_image)),
        Variant::Pages64k => Ok(format!("{standard}+64k")),
    }
}

/// The kernels one Module is checked against, and what is worth saying about the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleKernels {
    pub kernels: Vec<(Boot, String)>,
    pub note: Option<String>,
}

/// For a Module with `selector`: the kernels its nodes (those of `goarch`) will boot. A Module
/// that selects no node is checked against the standard kernel, and says so; `force_rt` checks
/// the real-time kernel for all.
pub fn for_module(
    selector: &BTreeMap<String, String>,
    nodes: &[NodeInfo],
    streams: &[DtkStream],
    goarch: &str,
    force_rt: bool,
) -> ModuleKernels {
    let boots: BTreeSet<Boot> = nodes
        .iter()
        .filter(|n| n.goarch == goarch && selects(selector, &n.labels))
        .map(boot_of)
        .map(|b| {
            if force_rt {
                Boot {
                    variant: Variant::RealTime,
                    ..b
                }
            } else {
                b
            }
        })
        .collect();
    let mut notes = Vec::new();
    let boots: Vec<Boot> = if boots.is_empty() {
        notes.push(format!(
            "no linux/{goarch} node matches its selector: checked against the {} kernel",
            if force_rt { "real-time" } else { "standard" }
        ));
        vec![Boot {
            rhel: 9,
            variant: if force_rt {
                Variant::RealTime
            } else {
                Variant::Standard
            },
        }]
    } else {
        boots.into_iter().collect()
    };
    let mut kernels: Vec<(Boot, String)> = Vec::new();
    for boot in boots {
        match kernel_of(boot, streams) {
            Ok(kernel) => {
                if !kernels.iter().any(|(_, k)| *k == kernel) {
                    kernels.push((boot, kernel));
                }
            }
            Err(reason) => {
                notes.push(format!(
                    "its {boot} nodes: {reason}; checked against the standard kernel"
                ));
                if let Ok(kernel) = kernel_of(Boot::STANDARD, streams)
                    && !kernels.iter().any(|(_, k)| *k == kernel)
                {
                    kernels.push((Boot::STANDARD, kernel));
                }
            }
        }
    }
    ModuleKernels {
        kernels,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// The kind most of the Modules' nodes boot (ties: the standard kernel): what the one kernel of
/// a KMM preflight object should be.
pub fn most_booted(
    selectors: &[&BTreeMap<String, String>],
    nodes: &[NodeInfo],
    goarch: &str,
) -> Boot {
    let mut counts: BTreeMap<Boot, usize> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.goarch == goarch) {
        if selectors.iter().any(|s| selects(s, &node.labels)) {
            *counts.entry(boot_of(node)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(boot, n)| (*n, *boot == Boot::STANDARD))
        .map(|(boot, _)| boot)
        .unwrap_or(Boot::STANDARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kernel: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kernel: kernel.into(),
            os_image: "Red Hat Enterprise Linux CoreOS 419.96.202506021522-0".into(),
            goarch: "amd64".into(),
        }
    }

    fn streams() -> Vec<DtkStream> {
        vec![
            DtkStream {
                dtk_image: "q.io/dtk@sha256:9".into(),
                kernel_version: "5.14.0-570.19.1.el9_6.x86_64".into(),
                rt_kernel_version: Some("5.14.0-570.19.1.el9_6.x86_64+rt".into()),
                rhel_version: Some("9.6".into()),
                node_os: None,
            },
            DtkStream {
                dtk_image: "q.io/dtk10@sha256:10".into(),
                kernel_version: "6.12.0-55.9.1.el10_0.x86_64".into(),
                rt_kernel_version: None,
                rhel_version: Some("10.0".into()),
                node_os: None,
            },
        ]
    }

    fn selector(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flavours_from_the_running_kernel_and_os() {
        assert_eq!(
            boot_of(&node("a", "5.14.0-427.el9_4.x86_64", &[])),
            Boot::STANDARD
        );
        assert_eq!(
            boot_of(&node("b", "5.14.0-427.el9_4.x86_64+rt", &[])).variant,
            Variant::RealTime
        );
        assert_eq!(
            boot_of(&node("c", "4.18.0-372.rt7.166.el8_6.x86_64", &[])).variant,
            Variant::RealTime
        );
        assert_eq!(
            boot_of(&node("d", "5.14.0-427.el9_4.aarch64+64k", &[])).variant,
            Variant::Pages64k
        );
        assert_eq!(boot_of(&node("e", "6.12.0-55.el10_0.x86_64", &[])).rhel, 10);
        let mut coreos10 = node("f", "5.14.0-427.el9_4.x86_64", &[]);
        coreos10.os_image = "Red Hat Enterprise Linux CoreOS 10.0".into();
        assert_eq!(boot_of(&coreos10).rhel, 10);
    }

    #[test]
    fn each_module_gets_the_kernels_its_nodes_boot() {
        let nodes = vec![
            node("w0", "5.14.0-427.el9_4.x86_64", &[("role", "worker")]),
            node(
                "rt0",
                "5.14.0-427.el9_4.x86_64+rt",
                &[("role", "worker"), ("rt", "true")],
            ),
            node(
                "new",
                "6.12.0-55.el10_0.x86_64",
                &[("role", "worker"), ("os", "10")],
            ),
        ];
        let all = for_module(
            &selector(&[("role", "worker")]),
            &nodes,
            &streams(),
            "amd64",
            false,
        );
        let kernels: Vec<&str> = all.kernels.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(
            kernels,
            [
                "5.14.0-570.19.1.el9_6.x86_64",
                "5.14.0-570.19.1.el9_6.x86_64+rt",
                "6.12.0-55.9.1.el10_0.x86_64"
            ]
        );
        assert_eq!(all.note, None);
        let rt = for_module(
            &selector(&[("rt", "true")]),
            &nodes,
            &streams(),
            "amd64",
            false,
        );
        assert_eq!(rt.kernels.len(), 1);
        assert_eq!(rt.kernels[0].0.variant, Variant::RealTime);

        let nobody = for_module(
            &selector(&[("gpu", "yes")]),
            &nodes,
            &streams(),
            "amd64",
            false,
        );
        assert_eq!(
            nobody.kernels,
            vec![(Boot::STANDARD, "5.14.0-570.19.1.el9_6.x86_64".to_string())]
        );
        assert!(
            nobody
                .note
                .unwrap()
                .starts_with("no linux/amd64 node matches its selector")
        );

        let forced = for_module(
            &selector(&[("role", "worker")]),
            &nodes[..1],
            &streams(),
            "amd64",
            true,
        );
        assert_eq!(forced.kernels[0].1, "5.14.0-570.19.1.el9_6.x86_64+rt");

        // A RHEL 10 node without a RHEL 10 stream in the payload: the standard kernel, said so.
        let only9 = &streams()[..1];
        let fallback = for_module(&selector(&[("os", "10")]), &nodes, only9, "amd64", false);
        assert_eq!(fallback.kernels[0].1, "5.14.0-570.19.1.el9_6.x86_64");
        assert!(fallback.note.unwrap().contains("no driver-toolkit-10"));
    }

    #[test]
    fn the_preflight_kernel_is_the_one_most_nodes_boot() {
        let nodes = vec![
            node("a", "5.14.0-427.el9_4.x86_64+rt", &[("rt", "")]),
            node("b", "5.14.0-427.el9_4.x86_64+rt", &[("rt", "")]),
            node("c", "5.14.0-427.el9_4.x86_64", &[("std", "")]),
        ];
        let rt = selector(&[("rt", "")]);
        let std = selector(&[("std", "")]);
        assert_eq!(
            most_booted(&[&rt, &std], &nodes, "amd64").variant,
            Variant::RealTime
        );
        assert_eq!(most_booted(&[&std], &nodes, "amd64"), Boot::STANDARD);
        assert_eq!(most_booted(&[], &nodes, "amd64"), Boot::STANDARD);
    }
}
