//! `check --deep` and `preflight --deep`: the kernel's own load decision, made from real ELF
//! relocatable modules (gcc-built, with `.modinfo`, `__versions`, `__ksymtab_strings` and
//! `__kcrctab`, some signed with openssl as sign-file signs) against a driver-toolkit whose
//! `Module.symvers` and in-tree module the test writes, all in the real registry.

use crate::support;

use serde_json::{Value, json};
use support::apiserver::Kmm;
use support::cluster::{TestCluster, VERSION, loading, resolved};
use support::fixtures::{DevelKernel, devel_dtk_image, kernel_for};
use support::images::{Compression as Layer, Pusher};
use support::kmod::{Compression, Ko, Tree};

const OLD: &str = "5.14.0-427.50.1.el9_4.x86_64";

/// `check --release 4.19.0 --deep -o json -A -v`
const DEEP_JSON: [&str; 8] = [
    "check",
    "--release",
    VERSION,
    "--deep",
    "-o",
    "json",
    "-A",
    "-v",
];

pub(crate) fn kernel() -> String {
    kernel_for(VERSION, "amd64")
}

fn rt() -> String {
    format!("{}+rt", kernel())
}

pub(crate) fn vermagic(release: &str) -> String {
    format!("{release} SMP preempt mod_unload modversions ")
}

/// The target kernel's exports: standard and RT differ in one CRC and in module_layout; one
/// export is GPL-only and one is in the CXL namespace.
pub(crate) fn devel_kernels() -> Vec<DevelKernel> {
    let devel = |kernel: &str, vermagic: &str, pci: u32, layout: u32| {
        let mut devel = DevelKernel::new(
            kernel,
            vermagic,
            vec![
                ("module_layout".to_string(), layout),
                ("pci_enable_device".to_string(), pci),
                ("printk".to_string(), 0x22222222),
                ("kmalloc".to_string(), 0x33333333),
                ("pci_irq_vector".to_string(), 0x55555555),
                ("cxl_bus_type".to_string(), 0x66666666),
            ],
        );
        devel.gpl_only = vec!["pci_irq_vector".into()];
        devel.namespaced = vec![("cxl_bus_type".into(), "CXL".into())];
        devel
    };
    vec![
        devel(&kernel(), &vermagic(&kernel()), 0x5e6f7a8b, 0x11111111),
        devel(
            &rt(),
            &format!("{} SMP preempt_rt mod_unload modversions ", rt()),
            0x7a7a7a7a,
            0x44444444,
        ),
    ]
}

/// The CRCs a module built against the standard target kernel carries.
pub(crate) const GOOD: [(&str, u32); 5] = [
    ("module_layout", 0x11111111),
    ("pci_enable_device", 0x5e6f7a8b),
    ("printk", 0x22222222),
    ("pci_irq_vector", 0x55555555),
    ("cxl_bus_type", 0x66666666),
];

/// Push `tree` as `vendor/<repo>` for `kernel` and add a Module loading `module` from it.
pub(crate) async fn add(
    c: &TestCluster,
    repo: &str,
    module: &str,
    kernel: &str,
    tree: Tree,
) -> Value {
    let template = format!("{}/vendor/{repo}:${{KERNEL_FULL_VERSION}}", c.registry.addr);
    let tag = resolved(&template, kernel);
    let tag = tag.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
    Pusher::new(&c.registry)
        .push_image(&format!("vendor/{repo}"), Some(tag), &tree.image())
        .await;
    if let Some(op) = &c.operator {
        let image = resolved(&template, kernel);
        op.configure(|o| {
            o.images.insert(image);
        });
    }
    loading(&template, module)
}

pub(crate) fn tree_of(kernel: &str, kos: &[Ko]) -> Tree {
    let mut tree = Tree::new();
    for ko in kos {
        tree.module("/opt", kernel, ko);
    }
    tree.depmod("/opt", kernel);
    tree
}

/// The Modules of the deep world, each showing one of the kernel's decisions.
async fn deep_world() -> TestCluster {
    let c = TestCluster::start_with_dtk(
        Kmm::Ocp24,
        &devel_dtk_image(&devel_kernels(), 512 * 1024, Layer::Gzip),
    )
    .await;
    let k = kernel();
    let mlx5 = || Ko::new("mlx5_core").imports(&["pci_enable_device", "printk"]);
    let modules = [
        (
            "good",
            "mlx5_core",
            tree_of(
                &k,
                &[Ko::new("mlx5_core")
                    .license("Dual BSD/GPL")
                    .imports(&[
                        "pci_enable_device",
                        "printk",
                        "pci_irq_vector",
                        "cxl_bus_type",
                    ])
                    .import_ns("CXL")
                    .versions(&GOOD)
                    .compressed(Compression::Xz)
                    .signed_by("Vendor Secure Boot key")],
            ),
        ),
        // A proprietary module and a GPL-only export, of the kernel or of a sibling.
        (
            "gpl",
            "nvidia",
            tree_of(
                &k,
                &[Ko::new("nvidia")
                    .license("NVIDIA")
                    .imports(&["pci_irq_vector", "printk"])
                    .versions(&GOOD)],
            ),
        ),
        (
            "sibling-gpl",
            "nvidia",
            tree_of(
                &k,
                &[
                    Ko::new("nv_helper")
                        .license("GPL")
                        .gpl_exports(&["nv_helper_map"])
                        .versions(&GOOD),
                    Ko::new("nvidia")
                        .license("NVIDIA")
                        .imports(&["nv_helper_map", "printk"])
                        .versions(&GOOD),
                ],
            ),
        ),
        (
            "namespace",
            "mlx5_core",
            tree_of(
                &k,
                &[
                    Ko::new("mlx5_helper")
                        .license("GPL")
                        .exports(&["helper_plain_fn"])
                        .ns_exports(&[("helper_ns_fn", "MLX_HELPER")])
                        .versions(&GOOD),
                    Ko::new("mlx5_core")
                        .license("GPL")
                        .imports(&["cxl_bus_type", "helper_ns_fn", "helper_plain_fn"])
                        .versions(&GOOD),
                ],
            ),
        ),
        (
            "crc",
            "mlx5_core",
            tree_of(
                &k,
                &[mlx5().versions(&[
                    ("module_layout", 0x11111111),
                    ("pci_enable_device", 0x1a2b3c4d),
                    ("printk", 0x22222222),
                ])],
            ),
        ),
        (
            "unknown",
            "mlx5_core",
            tree_of(
                &k,
                &[Ko::new("mlx5_core")
                    .imports(&["printk", "foo_bar"])
                    .versions(&GOOD)],
            ),
        ),
        (
            "sibling",
            "mlx5_core",
            tree_of(
                &k,
                &[
                    Ko::new("mlxfw")
                        .exports(&["mlxfw_flash"])
                        .export_crcs(&[("mlxfw_flash", 0xabcdef01)], false)
                        .versions(&GOOD),
                    Ko::new("mlx5_core")
                        .imports(&["mlxfw_flash", "printk"])
                        .versions(&[("mlxfw_flash", 0xabcdef01), ("printk", 0x22222222)])
                        .compressed(Compression::Zst),
                ],
            ),
        ),
        (
            "sibling-changed",
            "mlx5_core",
            tree_of(
                &k,
                &[
                    Ko::new("mlxfw")
                        .exports(&["mlxfw_flash"])
                        .export_crcs(&[("mlxfw_flash", 0x0000beef)], true)
                        .versions(&GOOD)
                        .compressed(Compression::Gz),
                    Ko::new("mlx5_core")
                        .imports(&["mlxfw_flash"])
                        .versions(&[("mlxfw_flash", 0x0000dead)]),
                ],
            ),
        ),
        (
            "kabi",
            "mlx5_core",
            tree_of(&k, &[mlx5().vermagic(&vermagic(OLD)).versions(&GOOD)]),
        ),
        (
            "stale",
            "mlx5_core",
            tree_of(
                &k,
                &[Ko::new("mlx5_core")
                    .imports(&["printk"])
                    .vermagic(&vermagic(OLD))],
            ),
        ),
        (
            "preempt",
            "mlx5_core",
            tree_of(
                &k,
                &[mlx5()
                    .vermagic(&format!("{k} SMP preempt_rt mod_unload modversions "))
                    .versions(&GOOD)],
            ),
        ),
        ("malformed", "mlx5_core", {
            let mut tree = tree_of(&k, &[mlx5().versions(&GOOD)]);
            tree.file(
                &format!("opt/lib/modules/{k}/extra/mlx5_core.ko"),
                b"\x7fELF garbage, not a module",
            );
            tree
        }),
    ];
    for (name, module, tree) in modules {
        let spec = add(&c, name, module, &k, tree).await;
        c.api.add_module("nic", name, spec);
    }
    // modulesLoadingOrder: every module it names is loaded, and checked (here the second one).
    let mut ordered = add(
        &c,
        "ordered",
        "mlx5_core",
        &k,
        tree_of(
            &k,
            &[
                mlx5().versions(&GOOD),
                Ko::new("mlx5_ib")
                    .imports(&["pci_enable_device"])
                    .versions(&[("pci_enable_device", 0x0bad0bad)]),
            ],
        ),
    )
    .await;
    ordered["moduleLoader"]["container"]["modprobe"]["modulesLoadingOrder"] =
        json!(["mlx5_core", "mlx5_ib"]);
    c.api.add_module("nic", "ordered", ordered);
    // A Module with a sign section whose image holds an unsigned module.
    let mut sign = add(
        &c,
        "unsigned",
        "mlx5_core",
        &k,
        tree_of(&k, &[mlx5().versions(&GOOD)]),
    )
    .await;
    sign["moduleLoader"]["container"]["sign"] = json!({
        "unsignedImage": format!("{}/vendor/unsigned-src:1", c.registry.addr),
        "keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
        "filesToSign": [format!("/opt/lib/modules/{k}/extra/mlx5_core.ko")]});
    c.api.add_module("secure", "unsigned", sign);
    // Built for the RT kernel: its CRCs, its preempt model.
    let rt_tree = tree_of(
        &rt(),
        &[mlx5()
            .vermagic(&format!("{} SMP preempt_rt mod_unload modversions ", rt()))
            .versions(&[
                ("module_layout", 0x44444444),
                ("pci_enable_device", 0x7a7a7a7a),
                ("printk", 0x22222222),
            ])],
    );
    let mut rt_only = add(&c, "rtmod", "mlx5_core", &rt(), rt_tree).await;
    rt_only["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = json!("\\+rt$");
    c.api.add_module("edge", "rt-only", rt_only);
    c
}

pub(crate) fn row<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {json}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_makes_the_kernels_load_decision() {
    let c = deep_world().await;
    let k = kernel();

    // A plain check: every file is where modprobe looks, so all Ready (bar the RT-only Module),
    // and nothing of the driver-toolkit beyond the release metadata is read.
    let plain = c
        .plugin(&["check", "--release", VERSION, "-o", "json", "-A", "-v"])
        .await;
    let plain_json = plain.json();
    for name in [
        "good",
        "crc",
        "unknown",
        "gpl",
        "sibling-gpl",
        "namespace",
        "stale",
        "preempt",
        "malformed",
    ] {
        assert_eq!(row(&plain_json, name)["verdict"], "Ready", "{name}");
        assert!(row(&plain_json, name).get("deep").is_none());
    }
    assert!(!plain.stderr.contains("--deep:"), "{}", plain.stderr);

    let run = c.plugin(&DEEP_JSON).await.expect_code(1);
    let json = run.json();
    let verdict = |name: &str| row(&json, name)["verdict"].as_str().unwrap().to_string();
    let reason = |name: &str| row(&json, name)["reason"].as_str().unwrap().to_string();
    let deep = |name: &str| row(&json, name)["deep"].clone();

    assert_eq!(verdict("good"), "Loads", "{}", reason("good"));
    assert_eq!(deep("good")["symbols"], 5);
    assert_eq!(deep("good")["vermagic"], vermagic(&k).as_str());
    assert_eq!(deep("good")["signed"], true);
    assert_eq!(deep("good")["signer"], "Vendor Secure Boot key");
    assert_eq!(deep("good")["mismatches"], json!([]));
    assert!(
        reason("good").contains("the kernel accepts it (vermagic, 5 symbol CRCs"),
        "{}",
        reason("good")
    );

    assert_eq!(verdict("crc"), "Failed");
    assert_eq!(
        reason("crc"),
        format!(
            "mlx5_core.ko: symbol `pci_enable_device` CRC 0x1a2b3c4d, kernel {k} exports 0x5e6f7a8b: rebuild against this kernel"
        )
    );
    let mismatch = &deep("crc")["mismatches"][0];
    assert_eq!(mismatch["symbol"], "pci_enable_device");
    assert_eq!(mismatch["crc"], "0x1a2b3c4d");
    assert_eq!(mismatch["kernelCrc"], "0x5e6f7a8b");
    assert_eq!(deep("crc")["signed"], false);
    assert_eq!(deep("crc")["signer"], Value::Null);

    // GPL-only exports are not for proprietary modules; namespaced ones need the import.
    assert_eq!(verdict("gpl"), "Failed");
    assert_eq!(
        reason("gpl"),
        "nvidia.ko: `pci_irq_vector` is exported GPL-only and its license \"NVIDIA\" is not \
         GPL-compatible: the kernel refuses it (unknown symbol)"
    );
    assert_eq!(deep("gpl")["mismatches"][0]["kind"], "gplOnly");
    assert_eq!(deep("gpl")["mismatches"][0]["symbol"], "pci_irq_vector");
    // The kernel's namespaced export and the sibling's (its names labelled as the kernel's
    // build labels them): both need the import; the sibling's plain export is found.
    let kinds: Vec<Value> = deep("namespace")["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m["kind"], m["symbol"]]))
        .collect();
    assert_eq!(
        kinds,
        [
            json!(["namespace", "cxl_bus_type"]),
            json!(["namespace", "helper_ns_fn"])
        ]
    );
    assert_eq!(verdict("sibling-gpl"), "Failed");
    assert!(
        reason("sibling-gpl").starts_with("nvidia.ko: `nv_helper_map` is exported GPL-only"),
        "{}",
        reason("sibling-gpl")
    );
    assert_eq!(verdict("namespace"), "Failed");
    assert!(
        reason("namespace")
            .contains("uses `cxl_bus_type` from symbol namespace CXL but does not import it"),
        "{}",
        reason("namespace")
    );

    assert_eq!(verdict("unknown"), "Failed");
    assert!(
        reason("unknown").contains("unknown symbol `foo_bar`"),
        "{}",
        reason("unknown")
    );

    // A symbol another module of the image exports: checked against that module's CRC.
    assert_eq!(verdict("sibling"), "Loads", "{}", reason("sibling"));
    assert_eq!(deep("sibling")["files"].as_array().unwrap().len(), 2);
    assert_eq!(verdict("sibling-changed"), "Failed");
    assert!(
        reason("sibling-changed").contains("symbol `mlxfw_flash` CRC 0x0000dead")
            && reason("sibling-changed").contains("mlxfw.ko.gz exports 0x0000beef"),
        "{}",
        reason("sibling-changed")
    );

    // RHEL's kABI: built for another minor release, every CRC it imports unchanged.
    assert_eq!(verdict("kabi"), "Loads", "{}", reason("kabi"));
    assert_eq!(deep("kabi")["vermagic"], vermagic(OLD).as_str());
    assert_eq!(verdict("stale"), "Failed");
    assert!(
        reason("stale").contains(&format!(
            "vermagic {}: built for another kernel and carries no symbol CRCs",
            vermagic(OLD).trim_end()
        )),
        "{}",
        reason("stale")
    );
    assert_eq!(verdict("preempt"), "Failed");
    assert!(
        reason("preempt").contains("preempt_rt") && reason("preempt").contains("should be"),
        "{}",
        reason("preempt")
    );
    assert_eq!(verdict("malformed"), "Failed");
    assert!(
        reason("malformed").contains("not a kernel module the loader can read"),
        "{}",
        reason("malformed")
    );
    // A Module with a sign section whose module carries no signature: KMM's own signing did
    // not happen, whatever the nodes' Secure Boot state.
    assert_eq!(verdict("unsigned"), "Failed", "{}", reason("unsigned"));
    assert_eq!(
        reason("unsigned"),
        "the Module signs its modules, but the image's do not verify against its certificate: \
         mlx5_core.ko: no signature appended"
    );
    assert_eq!(
        deep("unsigned")["files"][0]["signature"]["status"],
        "unsigned"
    );
    assert_eq!(verdict("ordered"), "Failed");
    assert!(
        reason("ordered").starts_with("mlx5_ib.ko: symbol `pci_enable_device` CRC 0x0bad0bad"),
        "{}",
        reason("ordered")
    );
    assert_eq!(json["summary"]["loads"], 3);

    // Bytes: the driver-toolkit layer holding Module.symvers is read once …
    let bytes_line = run
        .stderr
        .lines()
        .find(|l| l.contains("--deep:"))
        .unwrap_or_else(|| panic!("{}", run.stderr))
        .to_string();
    assert!(
        bytes_line.contains("bytes of driver-toolkit layers"),
        "{bytes_line}"
    );
    // … then the cache answers: same verdicts, nothing of the driver-toolkit read.
    let again = c.plugin(&DEEP_JSON).await.expect_code(1);
    let again_json = again.json();
    for name in ["good", "crc", "sibling", "malformed", "unsigned"] {
        assert_eq!(row(&again_json, name)["verdict"], verdict(name).as_str());
        assert_eq!(row(&again_json, name)["deep"], deep(name), "{name}");
    }
    assert!(!again.stderr.contains("--deep:"), "{}", again.stderr);

    // The RT kernel: RT's own Module.symvers and vermagic (kernel-rt-devel).
    let rt_run = c
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "--rt",
            "--deep",
            "-o",
            "json",
            "-A",
        ])
        .await;
    let rt_json = rt_run.json();
    assert_eq!(row(&rt_json, "rt-only")["kernel"], rt().as_str());
    assert_eq!(
        row(&rt_json, "rt-only")["verdict"],
        "Loads",
        "{}",
        row(&rt_json, "rt-only")["reason"]
    );

    // --kernel: the driver-toolkit given by --dtk-image, else no decision (Unknown, saying why).
    let dtk = c.release.dtk.reference.clone();
    let by_kernel = c
        .plugin(&[
            "check",
            "--kernel",
            &k,
            "--dtk-image",
            &dtk,
            "--deep",
            "-o",
            "json",
            "-A",
        ])
        .await
        .expect_code(1);
    let by_kernel = by_kernel.json();
    assert_eq!(row(&by_kernel, "good")["verdict"], "Loads");
    assert_eq!(row(&by_kernel, "crc")["verdict"], "Failed");
    let no_dtk = c
        .plugin(&["check", "--kernel", &k, "--deep", "-o", "json", "-A"])
        .await
        .expect_code(1);
    let no_dtk = no_dtk.json();
    assert_eq!(row(&no_dtk, "good")["verdict"], "Unknown");
    assert!(
        row(&no_dtk, "good")["reason"]
            .as_str()
            .unwrap()
            .contains("--dtk-image"),
        "{}",
        row(&no_dtk, "good")["reason"]
    );

    // What a person sees: docs/check.md shows this run (captures of world `deep`).
    support::docs::assert_world("deep", &c.ctx, &c.registry.addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_deep_fails_a_module_kmm_passes() {
    let c = TestCluster::start_with_dtk(
        Kmm::Ocp24,
        &devel_dtk_image(&devel_kernels(), 0, Layer::Gzip),
    )
    .await;
    let k = kernel();
    let tree = tree_of(
        &k,
        &[Ko::new("mlx5_core")
            .imports(&["pci_enable_device"])
            .versions(&[("pci_enable_device", 0x1a2b3c4d)])],
    );
    let spec = add(&c, "crc", "mlx5_core", &k, tree).await;
    c.api.add_module("nic", "crc", spec);

    // KMM 2.4 passes it (the image can be pulled), and so does the plain client check.
    let plain = c.preflight(&["-o", "json", "--yes"]).await.expect_code(0);
    assert_eq!(plain.json()["result"], "Success");
    let run = c
        .preflight(&["--deep", "--replace", "--yes", "-o", "json"])
        .await
        .expect_code(1);
    let json = run.json();
    assert_eq!(json["result"], "Failure");
    let module = &json["modules"][0];
    // The client check's failure is final at once: the run does not wait for KMM's word, which
    // (as the first run showed) would pass it; when it came first, the reason says so.
    let reason = module["reason"].as_str().unwrap();
    assert!(
        reason.contains("symbol `pci_enable_device` CRC 0x1a2b3c4d"),
        "{reason}"
    );
    if module["verificationStatus"] == "Success" {
        assert!(
            reason.contains("KMM's preflight passed it, but"),
            "{reason}"
        );
    }
    assert_eq!(
        module["check"]["deep"]["mismatches"][0]["kernelCrc"],
        "0x5e6f7a8b"
    );
}
