//! The sandbox's world (`./scripts/try-it`, and the captures in README and docs/): release
//! 4.19.0 with a driver-toolkit that carries the kernel's `Module.symvers` and an in-tree
//! module, five Modules that show each verdict, KMM 2.4's simulated operator, and a
//! ClusterVersion on 4.18.15 offered 4.19.0 and, with a risk, 4.19.1.
//!
//! The Modules: gpu-operator/nvidia-gpu (a module built for the new kernel: Ready, Loads with
//! --deep), nic/mlx5 (no image; KMM builds it: WillBuild), storage/nvme-of (the old kernel's
//! modules only: KMM 2.4 passes it, the check does not), edge/can-bus (no image and no build:
//! KMM 2.4 waits forever), nic/ice (built against other headers: Ready, Failed with --deep);
//! past five, vendors/vendor-06… whose images are fine.

use std::time::Duration;

use serde_json::json;

use super::apiserver::Kmm;
use super::cluster::{OLD_KERNEL, TestCluster, VERSION, module_spec, resolved};
use super::fixtures::{DevelKernel, devel_dtk_image, kernel_for, push_release};
use super::images::{Compression, Image, Pusher};
use super::kmod::{Ko, Tree};
use super::registry::TestRegistry;

/// The target kernel's vermagic and exports, as its kernel-devel would list them.
const CRC_PCI_ENABLE_DEVICE: u32 = 0x5e6f7a8b;
const EXPORTS: [(&str, u32); 3] = [
    ("module_layout", 0x11111111),
    ("pci_enable_device", CRC_PCI_ENABLE_DEVICE),
    ("printk", 0x22222222),
];

fn devel_kernel(kernel: &str) -> DevelKernel {
    let preempt = if kernel.ends_with("+rt") {
        "preempt_rt"
    } else {
        "preempt"
    };
    DevelKernel::new(
        kernel,
        &format!("{kernel} SMP {preempt} mod_unload modversions "),
        EXPORTS.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
    )
}

/// A kmod image holding `kmod.ko` for `kernel` under /opt, built against exports whose CRC
/// of `pci_enable_device` is `pci_crc`.
fn kmod_image(kernel: &str, pci_crc: u32) -> Image {
    let versions: Vec<(&str, u32)> = EXPORTS
        .iter()
        .map(|(s, c)| {
            (
                *s,
                if *s == "pci_enable_device" {
                    pci_crc
                } else {
                    *c
                },
            )
        })
        .collect();
    let mut tree = Tree::new();
    tree.module(
        "/opt",
        kernel,
        &Ko::new("kmod")
            .license("GPL")
            .imports(&["pci_enable_device", "printk"])
            .versions(&versions),
    )
    .depmod("/opt", kernel);
    tree.image()
}

/// The sandbox on `registry` with its first `modules` Modules (1 to 500).
pub async fn start(registry: TestRegistry, modules: usize) -> TestCluster {
    let kernel = kernel_for(VERSION, "amd64");
    let rt = format!("{kernel}+rt");
    let dtk = devel_dtk_image(
        &[devel_kernel(&kernel), devel_kernel(&rt)],
        0,
        Compression::Gzip,
    );
    let c = TestCluster::start_full(Kmm::Ocp24, registry, Some(&dtk)).await;
    c.operator()
        .configure(|o| o.step = Duration::from_millis(1500));
    c.api.add_node("worker-1", "amd64");
    let pusher = Pusher::new(&c.registry);
    let image = |name: &str| format!("{}/vendor/{name}:${{KERNEL_FULL_VERSION}}", c.registry.addr);
    let push = async |name: &str, built: Image, old: bool| {
        let reference = resolved(&image(name), &kernel);
        let tag = reference
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or_default();
        pusher
            .push_image(&format!("vendor/{name}"), Some(tag), &built)
            .await;
        c.operator().configure(|o| {
            o.images.insert(reference.clone());
            if old {
                o.without_module.insert(reference.clone());
            }
        });
    };
    push(
        "nvidia-gpu",
        kmod_image(&kernel, CRC_PCI_ENABLE_DEVICE),
        false,
    )
    .await;
    push(
        "nvme-of",
        kmod_image(OLD_KERNEL, CRC_PCI_ENABLE_DEVICE),
        true,
    )
    .await;
    // Built against 9.4's headers, where the CRC of pci_enable_device differs.
    push("ice", kmod_image(&kernel, 0x1a2b3c4d), false).await;
    let scenario = [
        ("gpu-operator", "nvidia-gpu", false),
        ("nic", "mlx5", true),
        ("storage", "nvme-of", false),
        ("edge", "can-bus", false),
        ("nic", "ice", false),
    ];
    for (namespace, name, build) in scenario.iter().take(modules) {
        c.api
            .add_module(namespace, name, module_spec(&image(name), *build));
    }
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "kmod-dockerfile", "namespace": "nic"},
               "data": {"dockerfile": "ARG DTK_AUTO\nFROM ${DTK_AUTO}\n"}}),
    );
    // More Modules, all fine: one image for all of them (the tag is the kernel).
    if modules > scenario.len() {
        push("vendor", kmod_image(&kernel, CRC_PCI_ENABLE_DEVICE), false).await;
        for i in scenario.len() + 1..=modules {
            c.api.add_module(
                "vendors",
                &format!("vendor-{i:02}"),
                module_spec(&image("vendor"), false),
            );
        }
    }

    // The cluster is on 4.18.15 and offered 4.19.0, and 4.19.1 with a known risk.
    let next = push_release(&pusher, &c.registry.addr, "4.19.1", "amd64").await;
    c.api.put(
        "config.openshift.io",
        "ClusterVersion",
        json!({"metadata": {"name": "version"}, "spec": {"channel": "stable-4.19"},
               "status": {"desired": {"version": "4.18.15", "image": format!("{}/ocp/release@sha256:{}", c.registry.addr, "0".repeat(64))},
                          "availableUpdates": [{"version": VERSION, "image": c.release.release.reference}],
                          "conditionalUpdates": [{"release": {"version": "4.19.1", "image": next.release.reference},
                              "risks": [{"name": "SandboxRisk", "message": "an example risk", "url": "https://example.com/risk", "matchingRules": []}]}]}}),
    );

    c
}
