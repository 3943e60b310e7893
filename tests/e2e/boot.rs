//! `check --boot`: every module loaded by the target kernel itself in a throw-away qemu VM
//! (emulated here), with Debian's own kernel as the target and real out-of-tree modules built
//! against its headers with kbuild; and `--deep`'s model held against that oracle.

use crate::support;

use serde_json::{Value, json};
use support::apiserver::Kmm;
use support::cluster::{TestCluster, loading};
use support::images::Pusher;
use support::kmod::Tree;
use support::realkernel;

use crate::deep::row;

/// Push a kmod image of `files` (name, bytes) for the real kernel as `vendor/<repo>:<kernel>`
/// and add a Module `name` loading `module` from it.
async fn add(c: &TestCluster, name: &str, module: &str, files: &[(&str, &[u8])], spec: Value) {
    let k = &realkernel::kernel().release;
    let mut tree = Tree::new();
    for (file, bytes) in files {
        tree.file(&format!("/opt/lib/modules/{k}/extra/{file}.ko"), bytes);
    }
    tree.depmod("/opt", k);
    let repo = format!("vendor/{name}");
    Pusher::new(&c.registry)
        .push_image(&repo, Some(k), &tree.image())
        .await;
    let mut spec = if spec.is_null() {
        loading(
            &format!("{}/{repo}:${{KERNEL_FULL_VERSION}}", c.registry.addr),
            module,
        )
    } else {
        spec
    };
    spec["selector"] = json!({"node-role.kubernetes.io/worker": ""});
    c.api.add_module("drivers", name, spec);
}

/// The world of README's `--boot` capture: a module that loads with its parameter, one that
/// needs an in-tree module, one with an altered CRC, one built for another vermagic, one whose
/// init fails for want of a device; and a driver-toolkit of the real kernel.
async fn boot_world() -> (TestCluster, String) {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let built = realkernel::built();
    let dtk = realkernel::dtk_image(&["kernel/lib/crc-itu-t.ko"], true);
    let pushed = Pusher::new(&c.registry)
        .push_image("ocp/driver-toolkit", Some("debian"), &dtk)
        .await;
    let _ = pushed;
    let ok_image = format!("{}/vendor/gpu-ok:${{KERNEL_FULL_VERSION}}", c.registry.addr);
    let with_parameter = json!({
        "moduleLoader": {"container": {
            "modprobe": {"moduleName": "kmm_ok", "parameters": ["level=7"]},
            "kernelMappings": [{"regexp": "^.+$", "containerImage": ok_image}]
        }}
    });
    add(
        &c,
        "gpu-ok",
        "kmm_ok",
        &[("kmm_ok", &built.ok)],
        with_parameter,
    )
    .await;
    for (name, module, bytes) in [
        ("crc-user", "kmm_dep", &built.dep),
        ("stale-crc", "kmm_crc", &built.crc),
        ("other-build", "kmm_magic", &built.magic),
        ("no-device", "kmm_nodev", &built.nodev),
    ] {
        add(&c, name, module, &[(module, bytes)], Value::Null).await;
    }
    let dtk = format!("{}/ocp/driver-toolkit:debian", c.registry.addr);
    (c, dtk)
}

/// `check --kernel <the real kernel> --dtk-image <dtk> <extra…> -o json -A`
fn check(dtk: &str, extra: &[&str]) -> Vec<String> {
    let k = &realkernel::kernel().release;
    ["check", "--kernel", k, "--dtk-image", dtk]
        .iter()
        .chain(extra)
        .chain(&["-o", "json", "-A"])
        .map(|a| a.to_string())
        .collect()
}

async fn plugin(c: &TestCluster, args: Vec<String>) -> support::Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.plugin(&args).await
}

fn reason(json: &Value, name: &str) -> String {
    row(json, name)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_loads_each_module_in_the_target_kernel() {
    let (mut c, dtk) = boot_world().await;
    c.ctx.env("PATH", realkernel::path_with_qemu());
    let run = |extra: &'static str| plugin(&c, check(&dtk, &[extra]));

    // With an empty cache: the kernel image comes in the pass that reads Module.symvers.
    let boot = run("--boot").await.expect_code(1).json();
    // The model alone: --deep.
    let deep = run("--deep").await.expect_code(1).json();

    // The kernel's own verdicts.
    let verdict =
        |json: &Value, name: &str| row(json, name)["verdict"].as_str().unwrap().to_string();
    assert_eq!(
        verdict(&boot, "gpu-ok"),
        "Loads",
        "{}",
        reason(&boot, "gpu-ok")
    );
    let ok = &row(&boot, "gpu-ok")["boot"];
    assert_eq!(ok["result"], "loads");
    assert!(matches!(ok["accel"].as_str(), Some("tcg" | "kvm")), "{ok}");
    let messages = ok["files"][0]["messages"].to_string();
    assert!(
        messages.contains("kmm_ok: loaded with level=7"),
        "{messages}"
    );

    assert_eq!(
        verdict(&boot, "crc-user"),
        "Loads",
        "{}",
        reason(&boot, "crc-user")
    );
    let files = row(&boot, "crc-user")["boot"]["files"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0]["inTree"], true);
    assert!(
        files[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/kernel/lib/crc-itu-t.ko")
    );
    assert!(files[1]["messages"].to_string().contains("kmm_dep: crc "));

    assert_eq!(verdict(&boot, "stale-crc"), "Failed");
    assert_eq!(
        reason(&boot, "stale-crc"),
        "the target kernel refused kmm_crc.ko: kmm_crc: disagrees about version of symbol _printk"
    );
    assert_eq!(
        row(&boot, "stale-crc")["boot"]["files"][0]["error"],
        "EINVAL"
    );

    assert_eq!(verdict(&boot, "other-build"), "Failed");
    let magic = reason(&boot, "other-build");
    assert!(
        magic.starts_with("the target kernel refused kmm_magic.ko: kmm_magic: version magic"),
        "{magic}"
    );
    assert_eq!(
        row(&boot, "other-build")["boot"]["files"][0]["error"],
        "ENOEXEC"
    );

    assert_eq!(verdict(&boot, "no-device"), "Inconclusive");
    let nodev = reason(&boot, "no-device");
    assert!(
        nodev.starts_with(
            "kmm_nodev.ko linked, but its init returned ENODEV (the kernel said: kmm_nodev: no \
             device found)"
        ),
        "{nodev}"
    );
    assert_eq!(boot["summary"]["inconclusive"], 1);
    assert_eq!(boot["summary"]["loads"], 2);
    assert_eq!(boot["summary"]["failed"], 2);

    // The oracle and the model agree on every one: a load the kernel linked, --deep accepts; a
    // load the kernel refused, --deep refuses for the same reason.
    for (name, deep_verdict, kind) in [
        ("gpu-ok", "Loads", None),
        ("crc-user", "Loads", None),
        ("no-device", "Loads", None),
        ("stale-crc", "Failed", Some("crc")),
        ("other-build", "Failed", Some("vermagic")),
    ] {
        assert_eq!(
            verdict(&deep, name),
            deep_verdict,
            "{name}: {}",
            reason(&deep, name)
        );
        if let Some(kind) = kind {
            assert_eq!(
                row(&deep, name)["deep"]["mismatches"][0]["kind"],
                kind,
                "{name}"
            );
        }
        assert!(
            !reason(&boot, name).contains("--deep and --boot disagree"),
            "{name}: {}",
            reason(&boot, name)
        );
    }

    // Cached: the driver-toolkit's files and the modules are not read again, and the kernel
    // says the same.
    let again = plugin(&c, check(&dtk, &["--boot", "-v"])).await;
    assert!(
        !again.stderr.contains("bytes of driver-toolkit layers read"),
        "{}",
        again.stderr
    );
    let again = again.expect_code(1).json();
    for name in [
        "gpu-ok",
        "crc-user",
        "stale-crc",
        "other-build",
        "no-device",
    ] {
        assert_eq!(verdict(&again, name), verdict(&boot, name), "{name}");
    }

    // What a person sees: README shows this run (captures of world `boot`).
    support::docs::assert_world("boot", &c.ctx, &c.registry.addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_says_what_it_lacks() {
    let (mut c, dtk) = boot_world().await;
    let k = realkernel::kernel().release.clone();
    let boot_init = |file: &std::path::Path| {
        check(
            &dtk,
            &["--boot", "--boot-init", &file.display().to_string()],
        )
    };

    // No qemu on PATH: Unknown, with the remedy; never Loads.
    let run = plugin(&c, check(&dtk, &["--boot"])).await;
    let json = run.json();
    let ok = row(&json, "gpu-ok");
    assert_eq!(ok["verdict"], "Unknown", "{ok}");
    assert!(
        ok["reason"]
            .as_str()
            .unwrap()
            .contains("apt-get install qemu-system-x86"),
        "{ok}"
    );
    // The kernel's own refusals are known without the VM (--deep), and still fail the run.
    assert_eq!(row(&json, "stale-crc")["verdict"], "Failed");
    run.expect_code(1);

    // A driver-toolkit without the kernel's image: Unknown, naming what is missing.
    c.ctx.env("PATH", realkernel::path_with_qemu());
    let no_kernel = realkernel::dtk_image(&["kernel/lib/crc-itu-t.ko"], false);
    Pusher::new(&c.registry)
        .push_image("ocp/driver-toolkit", Some("devel-only"), &no_kernel)
        .await;
    let devel_only = format!("{}/ocp/driver-toolkit:devel-only", c.registry.addr);
    let json = plugin(&c, check(&devel_only, &["--boot"]))
        .await
        .expect_code(1)
        .json();
    let ok = row(&json, "gpu-ok");
    assert_eq!(ok["verdict"], "Unknown");
    assert!(
        ok["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("has no kernel image /usr/lib/modules/{k}/vmlinuz")),
        "{ok}"
    );
    assert_eq!(ok["boot"]["result"], "unknown");

    // --boot-init must be a Linux program of the kernel's architecture, with its libraries.
    let script = c.ctx.write("init.sh", "#!/bin/sh\n");
    plugin(&c, boot_init(&script))
        .await
        .expect_code(2)
        .expect_stderr("is not a 64-bit Linux program");
    // The plugin's own binary, made to say arm64: its x86_64 libraries do not fit.
    let mut foreign = std::fs::read(support::plugin_binary()).unwrap();
    foreign[0x12..0x14].copy_from_slice(&183u16.to_le_bytes());
    let foreign_path = c.ctx.write("kubectl-kmm-arm64", foreign);
    plugin(&c, boot_init(&foreign_path))
        .await
        .expect_code(2)
        .expect_stderr("which was not found for linux/arm64");
}
