//! Day-1 `BootModuleConfig`s checked as the day-1 loader pulls and loads them, and Modules
//! whose device plugin image is missing.

use crate::support;

use serde_json::{Value, json};
use support::apiserver::Kmm;
use support::cluster::{TestCluster, VERSION, loading};
use support::images::Pusher;
use support::kmod::{Ko, Tree, simple_image};

const OLD: &str = "5.14.0-427.50.1.el9_4.x86_64";

fn boot_config(name: &str, image: &str, module: &str, firmware: Option<&str>) -> Value {
    let mut spec = json!({
        "machineConfigName": format!("99-{name}"),
        "machineConfigPoolName": "worker",
        "kernelModuleImage": image,
        "kernelModuleName": module,
    });
    if let Some(firmware) = firmware {
        spec["firmwareFilesPath"] = json!(firmware);
    }
    json!({"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "BootModuleConfig",
           "metadata": {"name": name, "namespace": "openshift-machine-config-operator"},
           "spec": spec})
}

fn row<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {json}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn day1_configs_and_device_plugins_are_checked() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let k = c.kernel().to_string();
    let addr = c.registry.addr.to_string();
    let pusher = Pusher::new(&c.registry);

    // Tagged with the new kernel, the module where the loader looks, its firmware too.
    let mut ready = Tree::new();
    ready.module("/opt", &k, &Ko::new("ice_oot"));
    ready.depmod("/opt", &k);
    ready.file("firmware/ice/ice.pkg", b"firmware");
    pusher
        .push_image("vendor/day1-ice", Some(&k), &ready.image())
        .await;
    // Tagged only with today's kernel.
    pusher
        .push_image(
            "vendor/day1-stale",
            Some(OLD),
            &simple_image("sfc_oot", OLD),
        )
        .await;
    // Tagged with the new kernel, but its firmware directory is not there.
    pusher
        .push_image("vendor/day1-nofw", Some(&k), &simple_image("ice_oot", &k))
        .await;
    for (name, repo, module, firmware) in [
        ("ice", "day1-ice", "ice_oot", Some("/firmware")),
        ("stale", "day1-stale", "sfc_oot", None),
        ("nofw", "day1-nofw", "ice_oot", Some("/firmware")),
    ] {
        let bmc = boot_config(name, &format!("{addr}/vendor/{repo}"), module, firmware);
        c.api.put("kmm.sigs.x-k8s.io", "BootModuleConfig", bmc);
    }

    // Modules whose kmod image is there, with a device plugin whose images are or are not.
    let kmod_image = format!("{addr}/vendor/gpu:${{KERNEL_FULL_VERSION}}");
    pusher
        .push_image("vendor/gpu", Some(&k), &simple_image("gpu", &k))
        .await;
    pusher
        .push_image("vendor/gpu-plugin", Some("v1"), &simple_image("gpu", &k))
        .await;
    c.operator().configure(|o| {
        o.images
            .insert(kmod_image.replace("${KERNEL_FULL_VERSION}", &k));
    });
    let plugin = |container: &str, init: Option<&str>| {
        let mut spec = loading(&kmod_image, "gpu");
        spec["devicePlugin"] = json!({"container": {"image": format!("{addr}/{container}")}});
        if let Some(init) = init {
            spec["devicePlugin"]["initContainer"] = json!({"image": format!("{addr}/{init}")});
        }
        spec
    };
    c.api
        .add_module("gpu", "plugin-ok", plugin("vendor/gpu-plugin:v1", None));
    c.api
        .add_module("gpu", "plugin-gone", plugin("vendor/gpu-plugin:v2", None));
    c.api.add_module(
        "gpu",
        "init-gone",
        plugin("vendor/gpu-plugin:v1", Some("vendor/gpu-init:v1")),
    );

    let run = c
        .plugin(&["check", "--release", VERSION, "-A", "-o", "json"])
        .await
        .expect_code(1);
    let json = run.json();
    let verdict = |name: &str| row(&json, name)["verdict"].as_str().unwrap().to_string();
    let reason = |name: &str| row(&json, name)["reason"].as_str().unwrap().to_string();

    assert_eq!(verdict("ice"), "Ready", "{}", reason("ice"));
    assert_eq!(row(&json, "ice")["day1"], true);
    assert_eq!(
        row(&json, "ice")["image"],
        format!("{addr}/vendor/day1-ice:{k}").as_str()
    );
    assert_eq!(verdict("stale"), "Failed");
    assert_eq!(
        reason("stale"),
        format!(
            "image {addr}/vendor/day1-stale:{k} does not exist: the day-1 loader pulls it when a \
             node boots this kernel, and nothing builds it; push it before the upgrade"
        )
    );
    assert_eq!(verdict("nofw"), "Failed");
    assert!(reason("nofw").contains("/firmware"), "{}", reason("nofw"));

    assert_eq!(verdict("plugin-ok"), "Ready", "{}", reason("plugin-ok"));
    assert!(row(&json, "plugin-ok").get("day1").is_none());
    assert_eq!(verdict("plugin-gone"), "Failed");
    assert_eq!(
        reason("plugin-gone"),
        format!("the device plugin image {addr}/vendor/gpu-plugin:v2 does not exist")
    );
    assert_eq!(verdict("init-gone"), "Failed");
    assert_eq!(
        reason("init-gone"),
        format!("the device plugin init container image {addr}/vendor/gpu-init:v1 does not exist")
    );

    // The table marks day-1 rows.
    let table = c
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "-n",
            "openshift-machine-config-operator",
        ])
        .await
        .expect_code(1);
    let line = |name: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} (day-1) ")))
            .unwrap_or_else(|| panic!("{}", table.stdout))
            .to_string()
    };
    assert!(line("ice").contains(" Ready "), "{}", line("ice"));
    assert!(line("stale").contains(" Failed "), "{}", line("stale"));

    // From a file, as from the cluster.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bmc.yaml");
    let bmc = boot_config("ice", &format!("{addr}/vendor/day1-ice"), "ice_oot", None);
    std::fs::write(&file, serde_json::to_string(&bmc).unwrap()).unwrap();
    let from_file = c
        .plugin(&[
            "check",
            "--release",
            VERSION,
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await
        .expect_code(0)
        .json();
    assert_eq!(row(&from_file, "ice")["verdict"], "Ready");
    assert_eq!(row(&from_file, "ice")["day1"], true);
}
