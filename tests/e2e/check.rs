//! `kubectl kmm check`: Modules in the test API server (under the real Module CRD) or in files,
//! kmod images built with gcc and the real depmod in the real registry, every verdict.

use crate::support;

use serde_json::{Value, json};
use support::apiserver::{ApiServer, Kmm};
use support::cluster::{TestCluster, VERSION};
use support::images::{self, Flavor, Image, Pushed, Pusher};
use support::kmod::{Compression, Ko, Tree, base_layer};
use support::registry::TestRegistry;
use support::{Context, Run, auth_file};

const K: &str = "5.14.0-570.19.1.el9_6.x86_64";
const OLD: &str = "5.14.0-427.50.1.el9_4.x86_64";

/// A registry, an API server with KMM 2.4's CRDs and one amd64 node, and a user pointed at it.
struct World {
    registry: TestRegistry,
    api: ApiServer,
    ctx: Context,
}

impl World {
    async fn start() -> World {
        let registry = TestRegistry::plain();
        let api = ApiServer::start(Kmm::Ocp24).await;
        api.add_node("worker-0", "amd64");
        let mut ctx = Context::new();
        let kubeconfig = ctx.write(".kube/config", api.kubeconfig());
        ctx.env("KUBECONFIG", kubeconfig.display().to_string());
        World { registry, api, ctx }
    }

    fn pusher(&self) -> Pusher {
        Pusher::new(&self.registry)
    }

    fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.registry.addr)
    }

    /// `check <args…> --insecure-registry <registry>`
    async fn check(&self, args: &[&str]) -> Run {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--insecure-registry", &self.registry.addr]);
        self.ctx.run(&all).await
    }
}

/// Push an amd64 image of a base layer and `tops` (bottom first).
async fn push(pusher: &Pusher, repo: &str, tag: &str, tops: Vec<Vec<u8>>) -> Pushed {
    let mut layers = vec![images::layer(
        base_layer(),
        images::Compression::Gzip,
        Flavor::Docker,
    )];
    for tar in tops {
        layers.push(images::layer(
            tar,
            images::Compression::Gzip,
            Flavor::Docker,
        ));
    }
    let image = Image {
        flavor: Flavor::Docker,
        goarch: "amd64",
        layers,
    };
    pusher.push_image(repo, Some(tag), &image).await
}

/// A TLS registry with basic auth (`vendor`/`password`) holding `vendor/gpu:<tag>`, the mlx5
/// layout for `K`.
async fn private_registry(password: &str, tag: &str) -> TestRegistry {
    let private = TestRegistry::secure("vendor", password);
    push(
        &Pusher::new(&private),
        "vendor/gpu",
        tag,
        vec![mlx5_tree(K).layer()],
    )
    .await;
    private
}

/// The usual vendor layout: the module in `extra/`, its dependency in `kernel/drivers/…`.
fn mlx5_tree(kernel: &str) -> Tree {
    let mut tree = Tree::new();
    tree.module(
        "/opt",
        kernel,
        &Ko::new("mlxfw")
            .at("kernel/drivers/net/ethernet/mellanox/mlxfw/mlxfw.ko")
            .exports(&["mlxfw_flash"]),
    )
    .module(
        "/opt",
        kernel,
        &Ko::new("mlx5_core").imports(&["mlxfw_flash"]),
    )
    .depmod("/opt", kernel);
    tree
}

/// A Module that maps every kernel to `image` (a template), loading `module`.
fn module_spec(image: &str, module: &str) -> Value {
    support::cluster::loading(image, module)
}

fn rows(run: &Run) -> Vec<Value> {
    run.json()["modules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The reason of `name`'s row for `kernel`.
fn reason_of<'a>(rows: &'a [Value], name: &str, kernel: &str) -> &'a str {
    row(rows, name, kernel)["reason"]
        .as_str()
        .unwrap_or_default()
}

fn row<'a>(rows: &'a [Value], name: &str, kernel: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name && r["kernel"] == kernel)
        .unwrap_or_else(|| panic!("no row for {name} on {kernel} in {rows:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_depmod_layout_is_ready_and_only_list_and_get_are_used() {
    let w = World::start().await;
    push(&w.pusher(), "vendor/mlx5", K, vec![mlx5_tree(K).layer()]).await;
    let image = format!("{}/vendor/mlx5:${{KERNEL_FULL_VERSION}}", w.registry.addr);
    w.api
        .add_module("nic", "mlx5", module_spec(&image, "mlx5_core"));

    let run = w.check(&["--kernel", K, "-o", "json"]).await.expect_code(0);
    let rows = rows(&run);
    let mlx5 = row(&rows, "mlx5", K);
    assert_eq!(mlx5["verdict"], "Ready", "{run:?}");
    assert_eq!(
        mlx5["image"],
        format!("{}/vendor/mlx5:{K}", w.registry.addr)
    );
    assert_eq!(
        mlx5["reason"],
        "mlx5_core: extra/mlx5_core.ko (+1 dependency)"
    );
    assert_eq!(run.json()["kernels"], json!([K]));
    assert_eq!(run.json()["dtkImage"], Value::Null);
    assert_eq!(run.json()["summary"]["ready"], 1);

    // It creates and changes nothing: reads only.
    let writes: Vec<_> = w
        .api
        .requests()
        .into_iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch" | ""))
        .collect();
    assert!(writes.is_empty(), "check wrote to the cluster: {writes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_modules_and_dash_or_underscore() {
    let w = World::start().await;
    let mut tree = Tree::new();
    tree.module(
        "/opt",
        K,
        &Ko::new("dep_xz")
            .exports(&["dep_xz_fn"])
            .compressed(Compression::Xz),
    )
    .module(
        "/opt",
        K,
        &Ko::new("dep_zst")
            .exports(&["dep_zst_fn"])
            .compressed(Compression::Zst),
    )
    .module(
        "/opt",
        K,
        &Ko::new("ice-gz")
            .at("extra/ice-gz.ko")
            .imports(&["dep_xz_fn", "dep_zst_fn"])
            .compressed(Compression::Gz),
    )
    .depmod("/opt", K);
    push(&w.pusher(), "vendor/ice", "v1", vec![tree.layer()]).await;
    // moduleName with `_` where the file has `-`: modprobe treats them alike.
    w.api.add_module(
        "nic",
        "ice",
        module_spec(&w.image("vendor/ice", "v1"), "ice_gz"),
    );
    let run = w.check(&["--kernel", K, "-o", "json"]).await.expect_code(0);
    let rows = rows(&run);
    assert_eq!(
        row(&rows, "ice", K)["reason"],
        "ice_gz: extra/ice-gz.ko.gz (+2 dependencies)",
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_missing_inside_an_image_fails_and_says_why() {
    let w = World::start().await;
    let pusher = w.pusher();
    let addr = w.registry.addr.clone();

    // Modules for another kernel only (a stale tag).
    push(&pusher, "vendor/stale", "v1", vec![mlx5_tree(OLD).layer()]).await;
    // No index at all: depmod forgotten.
    let mut no_index = Tree::new();
    no_index.module("/opt", K, &Ko::new("mlx5_core"));
    push(&pusher, "vendor/noindex", "v1", vec![no_index.layer()]).await;
    // Only the text modules.dep.
    let mut text_only = mlx5_tree(K);
    text_only.remove(&format!("opt/lib/modules/{K}/modules.dep.bin"));
    push(&pusher, "vendor/textonly", "v1", vec![text_only.layer()]).await;
    // The module was added after depmod ran.
    let mut stale_index = mlx5_tree(K);
    stale_index.module("/opt", K, &Ko::new("nvidia"));
    push(
        &pusher,
        "vendor/staleindex",
        "v1",
        vec![stale_index.layer()],
    )
    .await;
    // A dependency deleted after depmod.
    let mut broken_dep = mlx5_tree(K);
    broken_dep.remove(&format!(
        "opt/lib/modules/{K}/kernel/drivers/net/ethernet/mellanox/mlxfw/mlxfw.ko"
    ));
    push(&pusher, "vendor/brokendep", "v1", vec![broken_dep.layer()]).await;
    // The module directory whited out in an upper layer.
    let whiteout = support::images::TarLayer::new()
        .whiteout(&format!("opt/lib/modules/{K}"))
        .finish();
    push(
        &pusher,
        "vendor/whiteout",
        "v1",
        vec![mlx5_tree(K).layer(), whiteout],
    )
    .await;
    // Modules installed at /lib/modules although dirName is /opt.
    let mut wrong_dir = Tree::new();
    wrong_dir
        .module("/", K, &Ko::new("mlx5_core"))
        .depmod("/", K);
    push(&pusher, "vendor/wrongdir", "v1", vec![wrong_dir.layer()]).await;

    for (name, repo, module) in [
        ("stale", "vendor/stale", "mlx5_core"),
        ("noindex", "vendor/noindex", "mlx5_core"),
        ("textonly", "vendor/textonly", "mlx5_core"),
        ("staleindex", "vendor/staleindex", "nvidia"),
        ("brokendep", "vendor/brokendep", "mlx5_core"),
        ("whiteout", "vendor/whiteout", "mlx5_core"),
        ("wrongdir", "vendor/wrongdir", "mlx5_core"),
    ] {
        w.api
            .add_module("drivers", name, module_spec(&w.image(repo, "v1"), module));
    }
    let run = w.check(&["--kernel", K, "-o", "json"]).await.expect_code(1);
    let rows = rows(&run);
    for r in &rows {
        assert_eq!(r["verdict"], "Failed", "{r:#}");
    }
    let reason = |name: &str| reason_of(&rows, name, K).to_string();
    let digest_of = |repo: &str| {
        let r = reason(repo);
        assert!(r.contains(&format!("{addr}/vendor/{repo}@sha256:")), "{r}");
        r
    };
    assert!(
        digest_of("stale").starts_with(&format!(
            "no /opt/lib/modules/{K}/ in {addr}/vendor/stale@sha256:"
        )) && reason("stale").ends_with(&format!("; the image has modules for {OLD}")),
        "{}",
        reason("stale")
    );
    assert_eq!(
        reason("noindex"),
        format!(
            "no modules.dep.bin in /opt/lib/modules/{K}/: modprobe cannot find any module there; run `depmod -b /opt {K}` in the image build"
        )
    );
    assert!(
        reason("textonly")
            .contains("modules.dep.bin is missing (only the text modules.dep is there)"),
        "{}",
        reason("textonly")
    );
    assert!(
        reason("staleindex").starts_with(
            "modules.dep.bin does not list nvidia although extra/nvidia.ko is in the image: the index is stale (it lists mlx5_core, mlxfw)"
        ),
        "{}",
        reason("staleindex")
    );
    assert!(
        reason("brokendep").starts_with(
            "modules.dep.bin names kernel/drivers/net/ethernet/mellanox/mlxfw/mlxfw.ko for mlx5_core, but"
        ),
        "{}",
        reason("brokendep")
    );
    assert!(reason("whiteout").starts_with(&format!("no /opt/lib/modules/{K}/ in ")));
    assert!(
        reason("wrongdir").ends_with(&format!(
            "it has /lib/modules/{K}/: set modprobe.dirName to /"
        )),
        "{}",
        reason("wrongdir")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_kernels_in_one_image_and_repeated_kernel_flags() {
    let w = World::start().await;
    let mut tree = mlx5_tree(K);
    tree.module("/opt", OLD, &Ko::new("mlx5_core"))
        .depmod("/opt", OLD);
    push(&w.pusher(), "vendor/both", "v1", vec![tree.layer()]).await;
    w.api.add_module(
        "nic",
        "mlx5",
        module_spec(&w.image("vendor/both", "v1"), "mlx5_core"),
    );
    let run = w
        .check(&["--kernel", K, "--kernel", OLD, "-o", "json"])
        .await
        .expect_code(0);
    let rows = rows(&run);
    assert_eq!(rows.len(), 2);
    assert_eq!(row(&rows, "mlx5", K)["verdict"], "Ready");
    assert_eq!(
        row(&rows, "mlx5", OLD)["reason"],
        "mlx5_core: extra/mlx5_core.ko"
    );
    assert_eq!(run.json()["kernels"], json!([K, OLD]));
}

#[tokio::test(flavor = "multi_thread")]
async fn loading_order_and_firmware() {
    let w = World::start().await;
    let mut tree = mlx5_tree(K);
    tree.file("opt/lib/firmware/mlx5/fw-4.22.bin", b"firmware");
    push(&w.pusher(), "vendor/mlx5", "v1", vec![tree.layer()]).await;
    let image = w.image("vendor/mlx5", "v1");
    let with = |order: &[&str], firmware: &str| {
        let mut spec = module_spec(&image, "mlx5_core");
        spec["moduleLoader"]["container"]["modprobe"]["modulesLoadingOrder"] = json!(order);
        if !firmware.is_empty() {
            spec["moduleLoader"]["container"]["modprobe"]["firmwarePath"] = json!(firmware);
        }
        spec
    };
    w.api.add_module(
        "a",
        "ordered",
        with(&["mlx5_core", "mlxfw"], "/opt/lib/firmware/mlx5"),
    );
    w.api
        .add_module("a", "missing-in-order", with(&["mlx5_core", "mlx5_ib"], ""));
    w.api
        .add_module("a", "no-firmware", with(&[], "/opt/lib/firmware/mlx9"));
    let run = w.check(&["--kernel", K, "-o", "json"]).await.expect_code(1);
    let rows = rows(&run);
    let ordered = row(&rows, "ordered", K);
    assert_eq!(ordered["verdict"], "Ready", "{ordered:#}");
    assert!(
        ordered["reason"]
            .as_str()
            .unwrap()
            .ends_with("; firmware: 1 file"),
        "{ordered:#}"
    );
    assert!(
        reason_of(&rows, "missing-in-order", K)
            .starts_with("modules.dep.bin does not list mlx5_ib"),
    );
    assert!(
        reason_of(&rows, "no-firmware", K)
            .starts_with("firmwarePath /opt/lib/firmware/mlx9 is not in")
    );
}

/// The "done when" run: `kubectl kmm check --release 4.19.0` through kubectl's plugin discovery,
/// against a cluster whose Modules cover every verdict.
#[tokio::test(flavor = "multi_thread")]
async fn check_release_through_kubectl_gives_every_module_its_verdict() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let kernel = c.kernel().to_string();
    let addr = c.registry.addr.clone();
    let pusher = Pusher::new(&c.registry);
    let image = |repo: &str| format!("{addr}/{repo}:${{KERNEL_FULL_VERSION}}");
    push(
        &pusher,
        "vendor/mlx5",
        &kernel,
        vec![mlx5_tree(&kernel).layer()],
    )
    .await;
    // The tag exists for the new kernel, but holds the old kernel's modules.
    push(&pusher, "vendor/ice", &kernel, vec![mlx5_tree(OLD).layer()]).await;
    push(
        &pusher,
        "vendor/unsigned",
        &kernel,
        vec![mlx5_tree(&kernel).layer()],
    )
    .await;

    c.api.add_module(
        "nic",
        "mlx5",
        module_spec(&image("vendor/mlx5"), "mlx5_core"),
    );
    c.api
        .add_module("nic", "ice", module_spec(&image("vendor/ice"), "mlx5_core"));
    c.api.add_module(
        "gpu",
        "nvidia",
        module_spec(&image("vendor/nvidia"), "nvidia"),
    );
    let mut build = module_spec(&image("vendor/lustre"), "lustre");
    build["moduleLoader"]["container"]["build"] =
        json!({"dockerfileConfigMap": {"name": "lustre-dockerfile"}});
    c.api.add_module("storage", "lustre", build);
    c.api.put(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "lustre-dockerfile", "namespace": "storage"},
               "data": {"dockerfile": "FROM ${DTK_AUTO}\n"}}),
    );
    let mut sign = module_spec(&image("vendor/signed"), "mlx5_core");
    sign["moduleLoader"]["container"]["sign"] = json!({
        "unsignedImage": image("vendor/unsigned"),
        "keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
        "filesToSign": [format!("/opt/lib/modules/{kernel}/extra/mlx5_core.ko")]});
    c.api.add_module("secure", "signed", sign);
    for name in ["signing-key", "signing-cert"] {
        c.api.put(
            "",
            "Secret",
            json!({"metadata": {"name": name, "namespace": "secure"}, "type": "Opaque",
                   "data": {"key": "c2VjcmV0LWtleS1tYXRlcmlhbA=="}}),
        );
    }
    let mut rt_only = module_spec(&image("vendor/rt"), "rtmod");
    rt_only["moduleLoader"]["container"]["kernelMappings"] = json!([
        {"regexp": "\\+rt$", "containerImage": image("vendor/rt")}]);
    c.api.add_module("edge", "rt-only", rt_only);
    // Skipped: being deleted, and device-plugin only.
    c.api.put(
        "kmm.sigs.x-k8s.io",
        "Module",
        json!({"metadata": {"name": "leaving", "namespace": "nic",
                            "deletionTimestamp": "2026-12-01T10:00:00Z", "finalizers": ["kmm.node.kubernetes.io/module-finalizer"]},
               "spec": module_spec(&image("vendor/gone"), "gone")}),
    );
    c.api.add_module(
        "gpu",
        "device-plugin",
        json!({"selector": {"feature.node.kubernetes.io/pci-10de.present": "true"},
               "devicePlugin": {"container": {"image": "quay.io/vendor/dp:1"}}}),
    );

    let run = c
        .ctx
        .kubectl(&[
            "kmm",
            "check",
            "--release",
            VERSION,
            "--insecure-registry",
            &addr,
        ])
        .await
        .expect_code(1);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", run.stdout))
            .to_string()
    };
    assert!(
        run.stdout.starts_with("NAMESPACE  MODULE"),
        "{}",
        run.stdout
    );
    assert!(line("mlx5").contains(" Ready "), "{}", line("mlx5"));
    assert!(
        line("ice").contains(&format!(
            " Failed     no /opt/lib/modules/{kernel}/ in {addr}/vendor/ice@sha256:"
        )) && line("ice").ends_with(&format!("the image has modules for {OLD}")),
        "{}",
        line("ice")
    );
    assert!(
        line("nvidia").ends_with(
            "does not exist and the Module has no build or sign for this kernel: KMM 2.4+ would wait for it forever"
        ),
        "{}",
        line("nvidia")
    );
    assert!(
        line("lustre").contains(" WillBuild ")
            && line("lustre").ends_with("(Dockerfile from ConfigMap storage/lustre-dockerfile)"),
        "{}",
        line("lustre")
    );
    assert!(
        line("signed").contains(" WillSign ")
            && line("signed").ends_with(&format!("KMM will sign {addr}/vendor/unsigned:{kernel}")),
        "{}",
        line("signed")
    );
    assert!(
        line("rt-only").ends_with(&format!("no kernel mapping matches {kernel}")),
        "{}",
        line("rt-only")
    );
    assert!(!run.stdout.contains("leaving") && !run.stdout.contains("device-plugin"));
    assert!(
        run.stdout
            .trim_end()
            .ends_with("6 Modules × 1 kernel: 1 Ready, 1 WillBuild, 1 WillSign, 3 Failed"),
        "{}",
        run.stdout
    );
    run.expect_stderr(&format!("note: release {VERSION} (x86_64): "));

    // The signing key Secrets were looked at, never read: metadata only.
    let key_reads: Vec<_> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.resource == "secrets" && r.name.starts_with("signing-"))
        .collect();
    assert_eq!(key_reads.len(), 2, "{key_reads:?}");
    assert!(
        key_reads
            .iter()
            .all(|r| r.accept.contains("as=PartialObjectMetadata"))
    );
    assert!(!run.all_output().contains("c2VjcmV0"));
}

/// `--rt`: the release's RT kernel; the tag is templated from the normalised kernel
/// (`…x86_64_rt`) while the directory in the image keeps the raw one (`…x86_64+rt`).
#[tokio::test(flavor = "multi_thread")]
async fn the_rt_kernel_templates_normalised_and_looks_up_raw() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let rt = format!("{}+rt", c.kernel());
    let tag = format!("{}_rt", c.kernel());
    let addr = c.registry.addr.clone();
    push(
        &Pusher::new(&c.registry),
        "vendor/rtmod",
        &tag,
        vec![mlx5_tree(&rt).layer()],
    )
    .await;
    let mut spec = module_spec(&format!("{addr}/vendor/other:1"), "mlx5_core");
    spec["moduleLoader"]["container"]["kernelMappings"] = json!([
        {"regexp": "\\+rt$", "containerImage": format!("{addr}/vendor/rtmod:${{KERNEL_FULL_VERSION}}")},
        {"regexp": ".", "containerImage": format!("{addr}/vendor/other:1")}]);
    c.api.add_module("edge", "rtmod", spec);
    let run = c
        .plugin(&["check", "--release", VERSION, "--rt", "-o", "json"])
        .await
        .expect_code(0);
    let rows = rows(&run);
    let r = row(&rows, "rtmod", &rt);
    assert_eq!(r["image"], format!("{addr}/vendor/rtmod:{tag}"));
    assert_eq!(r["verdict"], "Ready", "{r:#}");
    assert_eq!(run.json()["dtkImage"], json!(c.release.dtk.reference));
}

#[tokio::test(flavor = "multi_thread")]
async fn mapping_order_literal_unanchored_regexp_and_templates() {
    let w = World::start().await;
    let pusher = w.pusher();
    let addr = w.registry.addr.clone();
    push(&pusher, "ns1/mymod", "5.14-0", vec![mlx5_tree(K).layer()]).await;
    push(&pusher, "legacy/mymod", "old", vec![mlx5_tree(OLD).layer()]).await;
    w.api.add_module(
        "ns1",
        "mymod",
        json!({"selector": {},
               "moduleLoader": {"container": {
                   "modprobe": {"moduleName": "mlx5_core"},
                   "containerImage": format!("{addr}/${{MOD_NAMESPACE}}/$MOD_NAME:${{KERNEL_X}}.${{KERNEL_Y}}-$KERNEL_Z"),
                   "kernelMappings": [
                       {"literal": OLD, "containerImage": format!("{addr}/legacy/mymod:old")},
                       // Unanchored: matches in the middle of the kernel. An empty
                       // containerImage takes the container's.
                       {"regexp": "el9_6", "containerImage": ""},
                       {"regexp": "^.+$", "containerImage": format!("{addr}/never/used:1")}]}}}),
    );
    let run = w
        .check(&["--kernel", K, "--kernel", OLD, "-o", "json"])
        .await
        .expect_code(0);
    let rows = rows(&run);
    assert_eq!(
        row(&rows, "mymod", K)["image"],
        format!("{addr}/ns1/mymod:5.14-0")
    );
    assert_eq!(
        row(&rows, "mymod", OLD)["image"],
        format!("{addr}/legacy/mymod:old")
    );
    let unmatched = w
        .check(&["--kernel", "6.12.0-55.el10.x86_64", "-o", "json"])
        .await
        .expect_code(1);
    assert_eq!(
        rows_of(&unmatched)[0]["image"],
        format!("{addr}/never/used:1"),
        "the catch-all mapping comes last"
    );
}

fn rows_of(run: &Run) -> Vec<Value> {
    rows(run)
}

#[tokio::test(flavor = "multi_thread")]
async fn platforms_of_manifest_lists_and_single_images() {
    let w = World::start().await;
    let pusher = w.pusher();
    let arm = Image {
        flavor: Flavor::Oci,
        goarch: "arm64",
        layers: vec![images::layer(
            mlx5_tree(K).layer(),
            images::Compression::Gzip,
            Flavor::Oci,
        )],
    };
    let arm_pushed = pusher.push_image("vendor/armonly", None, &arm).await;
    pusher
        .push_index(
            "vendor/armonly",
            Some("v1"),
            Flavor::Oci,
            &[(&arm_pushed, "arm64")],
        )
        .await;
    pusher
        .push_image("vendor/armsingle", Some("v1"), &arm)
        .await;
    let amd = push(&pusher, "vendor/multi", "amd", vec![mlx5_tree(K).layer()]).await;
    let arm_in_multi = pusher.push_image("vendor/multi", None, &arm).await;
    let multi = pusher
        .push_index(
            "vendor/multi",
            Some("v1"),
            Flavor::Docker,
            &[(&arm_in_multi, "arm64"), (&amd, "amd64")],
        )
        .await;
    // An index whose amd64 entry is itself an index: the node's runtime cannot use it.
    pusher
        .push_index(
            "vendor/multi",
            Some("nested"),
            Flavor::Oci,
            &[(&multi, "amd64")],
        )
        .await;
    w.api.add_module(
        "nic",
        "nested",
        module_spec(&w.image("vendor/multi", "nested"), "mlx5_core"),
    );
    for repo in ["vendor/armonly", "vendor/armsingle", "vendor/multi"] {
        let name = repo.trim_start_matches("vendor/");
        w.api
            .add_module("nic", name, module_spec(&w.image(repo, "v1"), "mlx5_core"));
    }
    let run = w.check(&["--kernel", K, "-o", "json"]).await.expect_code(1);
    let rows = rows(&run);
    assert_eq!(row(&rows, "multi", K)["verdict"], "Ready");
    assert!(
        reason_of(&rows, "armonly", K)
            .ends_with("has no image for platform linux/amd64 (it offers: linux/arm64)"),
        "{rows:#?}"
    );
    assert!(
        reason_of(&rows, "armsingle", K)
            .ends_with("is a linux/arm64 image; the nodes are linux/amd64"),
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "nested", K)["verdict"], "Failed");
    assert!(
        reason_of(&rows, "nested", K)
            .ends_with("has an unsupported manifest: an index nested in an index"),
        "{rows:#?}"
    );
    // --arch arm64: the other way round.
    let run = w
        .check(&["--kernel", K, "--arch", "arm64", "-o", "json", "armonly"])
        .await
        .expect_code(0);
    assert_eq!(rows_of(&run).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_registry_through_the_modules_image_repo_secret() {
    let w = World::start().await;
    let private = private_registry("s3cr3t-pw", "v1").await;
    let image = format!("{}/vendor/gpu:v1", private.addr);
    let mut spec = module_spec(&image, "mlx5_core");
    spec["imageRepoSecret"] = json!({"name": "vendor-pull"});
    w.api.add_module("gpu", "with-secret", spec);
    w.api.add_registry_secret(
        "gpu",
        "vendor-pull",
        &auth_file(&[(&private.addr, "vendor", "s3cr3t-pw")]),
    );
    let ca = private.ca_pem().unwrap().display().to_string();
    let run = w
        .ctx
        .run(&[
            "check",
            "--kernel",
            K,
            "--registry-ca",
            &ca,
            "-v",
            "-o",
            "json",
        ])
        .await
        .expect_code(0);
    assert_eq!(rows(&run)[0]["verdict"], "Ready", "{run:?}");
    run.expect_stderr(&format!(
        "{}/vendor/gpu: credentials from Secret gpu/vendor-pull (imageRepoSecret)",
        private.addr
    ));
    assert!(!run.all_output().contains("s3cr3t-pw"));

    // Without the secret the registry refuses: that is not a failure of the Module.
    w.api
        .add_module("gpu", "without-secret", module_spec(&image, "mlx5_core"));
    let run = w
        .ctx
        .run(&[
            "check",
            "--kernel",
            K,
            "--registry-ca",
            &ca,
            "-o",
            "json",
            "without-secret",
        ])
        .await
        .expect_code(4);
    let r = &rows(&run)[0];
    assert_eq!(r["verdict"], "Unknown");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("not authorized to read {image}")),
        "{r:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn module_files_need_no_cluster_and_bring_their_secrets() {
    let private = private_registry("filepw", K).await;
    let plain = TestRegistry::plain();
    let mut ctx = Context::new();
    // A kubeconfig that points nowhere: it must not be needed.
    ctx.env("KUBECONFIG", "/nonexistent/kubeconfig");
    let image = format!("{}/vendor/gpu:${{KERNEL_FULL_VERSION}}", private.addr);
    let mut spec = module_spec(&image, "mlx5_core");
    spec["imageRepoSecret"] = json!({"name": "pull"});
    let mut build = module_spec(&format!("{}/vendor/built:1", plain.addr), "built");
    build["moduleLoader"]["container"]["build"] = json!({"dockerfileConfigMap": {"name": "df"}});
    let secret = auth_file(&[(&private.addr, "vendor", "filepw")]);
    let files = format!(
        "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {{name: gpu, namespace: vendor}}\nspec: {}\n---\n\
         apiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Secret, metadata: {{name: pull, namespace: vendor}}, type: kubernetes.io/dockerconfigjson, stringData: {{.dockerconfigjson: '{}'}}}}\n\
         - {{apiVersion: kmm.sigs.x-k8s.io/v1beta1, kind: Module, metadata: {{name: built, namespace: vendor}}, spec: {}}}\n",
        spec, secret, build
    );
    let path = ctx.write("modules.yaml", &files);
    let ca = private.ca_pem().unwrap().display().to_string();
    let args = |f: &str| {
        vec![
            "check".to_string(),
            "--kernel".into(),
            K.into(),
            "-f".into(),
            f.to_string(),
            "--registry-ca".into(),
            ca.clone(),
            "--insecure-registry".into(),
            plain.addr.clone(),
            "-o".into(),
            "json".into(),
        ]
    };
    let owned = args(&path.display().to_string());
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let run = ctx.run(&argv).await.expect_code(4);
    let rows = rows(&run);
    assert_eq!(row(&rows, "gpu", K)["verdict"], "Ready", "{run:?}");
    // The build's ConfigMap is not in the files: whether the cluster has it is not known
    // from here, which is not a failure.
    assert_eq!(row(&rows, "built", K)["verdict"], "Unknown", "{rows:#?}");
    assert!(
        reason_of(&rows, "built", K).ends_with(
            "the build's Dockerfile, ConfigMap vendor/df, exists is not known \
             (not in the files given; add it with -f)"
        ),
        "{rows:#?}"
    );
    assert!(!run.all_output().contains("filepw"));

    // The same from stdin, with the ConfigMap this time.
    let with_cm = format!(
        "{files}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: df, namespace: vendor}}\ndata: {{Dockerfile: 'FROM x'}}\n"
    );
    let owned = args("-");
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let run = ctx.run_with_stdin(&argv, &with_cm).await.expect_code(0);
    assert_eq!(row(&rows_of(&run), "built", K)["verdict"], "WillBuild");
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_to_check_is_never_a_silent_success() {
    let w = World::start().await;
    // Files without a Module: a Pod only, an empty stream (the pipe of a kubectl that
    // failed), an empty directory. Each is bad input, and says what was read.
    let pod = w.ctx.write(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
    );
    let run = w
        .check(&["--kernel", K, "-f", &pod.display().to_string()])
        .await
        .expect_code(2);
    run.expect_stderr("no KMM Module in the files given (")
        .expect_stderr("pod.yaml: 1 object; not Modules: ")
        .expect_stderr("pod.yaml: Pod/web");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let mut argv = vec!["check", "--kernel", K, "-f", "-"];
    let run = w.ctx.run_with_stdin(&argv, "").await.expect_code(2);
    run.expect_stderr("no KMM Module in the files given (stdin: empty)")
        .expect_stderr("check that the command before the pipe succeeded");
    let empty = w.ctx.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty = empty.display().to_string();
    argv[4] = &empty;
    w.ctx
        .run(&argv)
        .await
        .expect_code(2)
        .expect_stderr("empty: a directory without .yaml, .yml or .json files");

    // A namespace without Modules: the scope asked for holds nothing (exit 2).
    w.api.add_module(
        "nic",
        "mlx5",
        module_spec(&w.image("vendor/mlx5", "v1"), "mlx5_core"),
    );
    w.check(&["--kernel", K, "-n", "gpu"])
        .await
        .expect_code(2)
        .expect_stderr("no KMM Module to check in namespace gpu");

    // A whole cluster without Modules: exit 0, but said, and `NoModules` in JSON.
    let bare = ApiServer::start(Kmm::Ocp24).await;
    let mut ctx = Context::new();
    let kubeconfig = ctx.write(".kube/config", bare.kubeconfig());
    ctx.env("KUBECONFIG", kubeconfig.display().to_string());
    let run = ctx
        .run(&["check", "--kernel", K, "-o", "json"])
        .await
        .expect_code(0);
    run.expect_stderr("warning: the cluster has no KMM Module to check: nothing was checked");
    let report = run.json();
    assert_eq!(report["result"], "NoModules", "{report:#}");
    assert_eq!(report["modules"], json!([]));
    assert_eq!(report["summary"]["total"], 0);
    let run = ctx.run(&["check", "--kernel", K]).await.expect_code(0);
    assert_eq!(
        run.stdout.trim(),
        "No KMM Module to check: nothing was checked."
    );
    // Where there is one, JSON says what came of it.
    let run = w.check(&["--kernel", K, "-o", "json"]).await;
    assert_ne!(run.json()["result"], "NoModules");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_exit_code_and_bad_input() {
    let w = World::start().await;
    push(&w.pusher(), "vendor/mlx5", "v1", vec![mlx5_tree(K).layer()]).await;
    w.api.add_module(
        "nic",
        "mlx5",
        module_spec(&w.image("vendor/mlx5", "v1"), "mlx5_core"),
    );

    // 0, and the table's summary.
    let run = w.check(&["--kernel", K]).await.expect_code(0);
    assert!(
        run.stdout
            .trim_end()
            .ends_with("1 Module × 1 kernel: 1 Ready"),
        "{}",
        run.stdout
    );

    // 4: a registry that does not answer.
    let closed = support::free_port();
    w.api.add_module(
        "nic",
        "unreachable",
        module_spec(&format!("127.0.0.1:{closed}/vendor/x:1"), "x"),
    );
    let run = w
        .check(&["--kernel", K, "-o", "json", "unreachable"])
        .await
        .expect_code(4);
    let r = &rows(&run)[0];
    assert_eq!(r["verdict"], "Unknown");
    assert!(
        r["reason"].as_str().unwrap().contains("unreachable"),
        "{r:#}"
    );

    // 2: a Module KMM would refuse (from a file: no webhook stood in the way).
    let bad = format!(
        "{{\"apiVersion\": \"kmm.sigs.x-k8s.io/v1beta1\", \"kind\": \"Module\", \"metadata\": {{\"name\": \"bad\"}},\
          \"spec\": {}}}",
        json!({"selector": {}, "moduleLoader": {"container": {"modprobe": {"moduleName": "m"},
               "kernelMappings": [{"regexp": "(5.14", "containerImage": "quay.io/v/m:1"}]}}})
    );
    let path = w.ctx.write("bad.json", &bad);
    let run = w
        .check(&["--kernel", K, "-f", &path.display().to_string()])
        .await
        .expect_code(2);
    assert!(
        run.stdout.contains(
            "KMM refuses this Module: kernelMappings[0].regexp \"(5.14\" does not compile"
        ),
        "{}",
        run.stdout
    );
    // Every exit 2 says why on stderr, not only in the table.
    run.expect_stderr(
        "error: default/bad: KMM refuses this Module: kernelMappings[0].regexp \"(5.14\" does not compile",
    );
    // A Module of the wrong shape: the file and the field.
    let shapeless = w.ctx.write(
        "shapeless.yaml",
        "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata: {name: s, namespace: nic}\n\
         spec: {selector: {}, moduleLoader: {container: {kernelMappings: [{literal: 5}]}}}\n",
    );
    let run = w
        .check(&["--kernel", K, "-f", &shapeless.display().to_string()])
        .await
        .expect_code(2);
    run.expect_stderr(&format!(
        "Module nic/s in {} cannot be read: spec.moduleLoader.container.kernelMappings[0].literal: \
         invalid type: integer `5`, expected a string",
        shapeless.display()
    ));

    // 2: files that are not YAML, kernels KMM refuses, Modules that do not exist, flags.
    let broken = w
        .ctx
        .write("broken.yaml", "kind: Module\nspec: {selector: [\n");
    let run = w
        .check(&["--kernel", K, "-f", &broken.display().to_string()])
        .await
        .expect_code(2);
    run.expect_stderr("broken.yaml: not valid YAML or JSON (problem at line");
    w.check(&["--kernel", "5.14"])
        .await
        .expect_code(2)
        .expect_stderr("invalid kernel version");
    w.check(&["--kernel", K, "nope"])
        .await
        .expect_code(2)
        .expect_stderr("no Module named nope in any namespace");
    w.check(&[]).await.expect_code(2);
    // A cluster without KMM: the environment, not the input.
    let bare = ApiServer::start(Kmm::None).await;
    let mut ctx = Context::new();
    let kubeconfig = ctx.write(".kube/config", bare.kubeconfig());
    ctx.env("KUBECONFIG", kubeconfig.display().to_string());
    ctx.run(&["check", "--kernel", K])
        .await
        .expect_code(4)
        .expect_stderr("KMM is not installed: the cluster has no Module resource");
    w.check(&["--kernel", K, "--release", "4.19.0"])
        .await
        .expect_code(2);
    w.check(&["--kernel", K, "-f", "/nonexistent/dir/m.yaml"])
        .await
        .expect_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_image_is_read_once_and_digests_are_cached() {
    let w = World::start().await;
    let pushed = push(
        &w.pusher(),
        "vendor/shared",
        "v1",
        vec![mlx5_tree(K).layer()],
    )
    .await;
    for i in 0..6 {
        w.api.add_module(
            &format!("ns{}", i % 3),
            &format!("m{i}"),
            module_spec(&w.image("vendor/shared", "v1"), "mlx5_core"),
        );
    }
    w.check(&["--kernel", K]).await.expect_code(0);
    let manifest_gets = w
        .registry
        .log
        .lines()
        .iter()
        .filter(|l| {
            l.contains("http.request.method=GET") && l.contains("/vendor/shared/manifests/v1")
        })
        .count();
    assert_eq!(manifest_gets, 1, "the tag is resolved once for six Modules");

    // By digest, a second run answers from the cache without a request.
    w.api
        .add_module("pinned", "p", module_spec(&pushed.reference, "mlx5_core"));
    w.check(&["--kernel", K, "p"]).await.expect_code(0);
    let again = w.check(&["--kernel", K, "-v", "p"]).await.expect_code(0);
    again.expect_stderr("fetched 0 bytes in 0 requests");
    let nocache = w
        .check(&["--kernel", K, "-v", "--no-cache", "p"])
        .await
        .expect_code(0);
    assert!(
        !nocache.stderr.contains("fetched 0 bytes in 0 requests"),
        "{}",
        nocache.stderr
    );
}

/// The cluster's mirror sets apply to Module images as the nodes' runtime applies them.
#[tokio::test(flavor = "multi_thread")]
async fn module_images_through_the_clusters_mirrors() {
    let w = World::start().await;
    let pushed = push(
        &w.pusher(),
        "mirror/vendor/mlx5",
        "v1",
        vec![mlx5_tree(K).layer()],
    )
    .await;
    let source = format!("127.0.0.1:{}", support::free_port());
    w.api.put(
        "config.openshift.io",
        "ImageDigestMirrorSet",
        json!({"metadata": {"name": "vendor"}, "spec": {"imageDigestMirrors": [
            {"source": format!("{source}/vendor"), "mirrors": [format!("{}/mirror/vendor", w.registry.addr)],
             "mirrorSourcePolicy": "NeverContactSource"}]}}),
    );
    let image = format!("{source}/vendor/mlx5@{}", pushed.digest);
    w.api
        .add_module("nic", "mlx5", module_spec(&image, "mlx5_core"));
    let run = w
        .check(&["--kernel", K, "-v", "-o", "json"])
        .await
        .expect_code(0);
    assert_eq!(rows(&run)[0]["verdict"], "Ready", "{run:?}");
    run.expect_stderr(&format!(
        "{image}: answered by mirror {}/mirror/vendor/mlx5@{} (ImageDigestMirrorSet/vendor)",
        w.registry.addr, pushed.digest
    ));
}

/// Reading Secrets and ConfigMaps is optional (RBAC): without it the check says so and only
/// what depended on them becomes Unknown.
#[tokio::test(flavor = "multi_thread")]
async fn forbidden_secrets_and_config_maps_make_only_what_needs_them_unknown() {
    let w = World::start().await;
    let private = private_registry("pw", "v1").await;
    push(&w.pusher(), "vendor/open", "v1", vec![mlx5_tree(K).layer()]).await;
    let mut secret_module = module_spec(&format!("{}/vendor/gpu:v1", private.addr), "mlx5_core");
    secret_module["imageRepoSecret"] = json!({"name": "pull"});
    w.api.add_module("gpu", "private", secret_module);
    let mut open = module_spec(&w.image("vendor/open", "v1"), "mlx5_core");
    open["imageRepoSecret"] = json!({"name": "pull"});
    w.api.add_module("gpu", "open", open);
    let mut build = module_spec(&w.image("vendor/missing", "v1"), "m");
    build["moduleLoader"]["container"]["build"] = json!({"dockerfileConfigMap": {"name": "df"}});
    w.api.add_module("gpu", "build", build);
    w.api.add_registry_secret(
        "gpu",
        "pull",
        &auth_file(&[(&private.addr, "vendor", "pw")]),
    );
    w.api.forbid("get", "", "secrets");
    w.api.forbid("get", "", "configmaps");

    let ca = private.ca_pem().unwrap().display().to_string();
    let run = w
        .check(&["--kernel", K, "--registry-ca", &ca, "-v", "-o", "json"])
        .await
        .expect_code(4);
    let rows = rows(&run);
    assert_eq!(
        row(&rows, "open", K)["verdict"],
        "Ready",
        "anonymous access still works"
    );
    let private_row = row(&rows, "private", K);
    assert_eq!(private_row["verdict"], "Unknown");
    assert!(
        private_row["reason"]
            .as_str()
            .unwrap()
            .ends_with("(its imageRepoSecret gpu/pull could not be read (reading Secret gpu/pull is forbidden))"),
        "{private_row:#}"
    );
    let build_row = row(&rows, "build", K);
    assert_eq!(build_row["verdict"], "Unknown");
    assert!(
        build_row["reason"]
            .as_str()
            .unwrap()
            .contains("whether the build's Dockerfile, ConfigMap gpu/df, exists is not known (reading ConfigMap gpu/df is forbidden)"),
        "{build_row:#}"
    );
    run.expect_stderr("gpu/private: its imageRepoSecret gpu/pull could not be read (reading Secret gpu/pull is forbidden)");
}

/// `registryTLS` lets a Module reach a plain-HTTP registry without --insecure-registry, and a
/// symlink above `dirName` (`/opt` → `usr/local/kmods`) is followed as the worker's `cp` does.
#[tokio::test(flavor = "multi_thread")]
async fn registry_tls_of_the_module_and_a_symlinked_dir_name() {
    let w = World::start().await;
    let mut tree = Tree::new();
    tree.module("/usr/local/kmods", K, &Ko::new("mlx5_core"))
        .depmod("/usr/local/kmods", K)
        .symlink("opt", "usr/local/kmods");
    push(&w.pusher(), "vendor/linked", "v1", vec![tree.layer()]).await;
    let mut spec = module_spec(&w.image("vendor/linked", "v1"), "mlx5_core");
    spec["moduleLoader"]["container"]["registryTLS"] = json!({"insecure": true});
    w.api.add_module("nic", "linked", spec);
    let run = w
        .ctx
        .run(&["check", "--kernel", K, "-o", "json"])
        .await
        .expect_code(0);
    assert_eq!(rows(&run)[0]["verdict"], "Ready", "{run:?}");

    // Without registryTLS (or the flag), plain HTTP is not tried.
    w.api.add_module(
        "nic",
        "strict",
        module_spec(&w.image("vendor/linked", "v1"), "mlx5_core"),
    );
    let run = w
        .ctx
        .run(&["check", "--kernel", K, "-o", "json", "strict"])
        .await
        .expect_code(4);
    assert!(
        rows(&run)[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("TLS connection to registry"),
        "{run:?}"
    );
}

/// `--release`: each Module is checked against the kernels its own nodes will boot: real-time
/// nodes the RT kernel, the others the standard one; a Module for no node gets the standard
/// kernel and says so; `--rt` forces the RT kernel for all.
#[tokio::test(flavor = "multi_thread")]
async fn each_module_is_checked_against_the_kernels_its_nodes_boot() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.api.add_node_with(
        "rt-0",
        "amd64",
        "5.14.0-427.50.1.el9_4.x86_64+rt",
        &[("feature.node.kubernetes.io/rt", "true")],
    );
    let kernel = c.kernel().to_string();
    let rt = format!("{kernel}+rt");
    let addr = c.registry.addr.clone();
    let pusher = Pusher::new(&c.registry);
    for (repo, tag, built_for) in [
        ("vendor/all", kernel.clone(), kernel.clone()),
        ("vendor/all", format!("{kernel}_rt"), rt.clone()),
        ("vendor/rtonly", format!("{kernel}_rt"), rt.clone()),
    ] {
        push(&pusher, repo, &tag, vec![mlx5_tree(&built_for).layer()]).await;
    }
    let image = |repo: &str| format!("{addr}/{repo}:${{KERNEL_FULL_VERSION}}");
    c.api
        .add_module("nic", "all", module_spec(&image("vendor/all"), "mlx5_core"));
    let mut rt_only = module_spec(&image("vendor/rtonly"), "mlx5_core");
    rt_only["selector"] = json!({"feature.node.kubernetes.io/rt": "true"});
    rt_only["moduleLoader"]["container"]["kernelMappings"] =
        json!([{"regexp": "\\+rt$", "containerImage": image("vendor/rtonly")}]);
    c.api.add_module("edge", "rt-only", rt_only);
    let mut nobody = module_spec(&image("vendor/all"), "mlx5_core");
    nobody["selector"] = json!({"feature.node.kubernetes.io/gpu": "true"});
    c.api.add_module("gpu", "nobody", nobody);

    let run = c
        .plugin(&["check", "--release", VERSION, "-o", "json"])
        .await
        .expect_code(0);
    let rows = rows(&run);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_eq!(row(&rows, "all", &kernel)["verdict"], "Ready");
    assert_eq!(row(&rows, "all", &rt)["verdict"], "Ready");
    // Only its RT nodes: no "mapping not found" for the standard kernel it never boots.
    assert_eq!(row(&rows, "rt-only", &rt)["verdict"], "Ready");
    assert!(
        rows.iter()
            .all(|r| !(r["name"] == "rt-only" && r["kernel"] == kernel.as_str()))
    );
    assert!(
        reason_of(&rows, "nobody", &kernel).ends_with(
            "(no linux/amd64 node matches its selector: checked against the standard kernel)"
        ),
        "{rows:#?}"
    );
    assert_eq!(run.json()["kernels"], json!([kernel, rt]));

    let forced = c
        .plugin(&["check", "--release", VERSION, "--rt", "-o", "json", "all"])
        .await
        .expect_code(0);
    let forced_rows = rows_of(&forced);
    assert_eq!(forced_rows.len(), 1);
    assert_eq!(forced_rows[0]["kernel"], rt.as_str());
}

/// aarch64 64k-page nodes boot `<kernel>+64k`; RHEL CoreOS 10 nodes boot the kernel of the
/// payload's driver-toolkit-10.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_k_pages_and_the_rhel_10_stream() {
    use support::fixtures::{KERNEL_10, push_release, push_two_stream_release};
    // arm64: a normal and a 64k node.
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let release = push_release(&pusher, &registry.addr, VERSION, "arm64").await;
    let api = ApiServer::start(Kmm::Ocp24).await;
    api.add_node("arm-0", "arm64");
    api.add_node_with("arm-64k", "arm64", "5.14.0-427.50.1.el9_4.aarch64+64k", &[]);
    let mut ctx = Context::new();
    let kubeconfig = ctx.write(".kube/config", api.kubeconfig());
    ctx.env("KUBECONFIG", kubeconfig.display().to_string());
    ctx.env("KMM_RELEASE_REPO", format!("{}/ocp/release", registry.addr));
    let k64 = format!("{}+64k", release.kernel);
    let arm_image = |kernel: &str| Image {
        flavor: Flavor::Docker,
        goarch: "arm64",
        layers: vec![images::layer(
            mlx5_tree(kernel).layer(),
            images::Compression::Gzip,
            Flavor::Docker,
        )],
    };
    pusher
        .push_image(
            "vendor/arm",
            Some(&release.kernel),
            &arm_image(&release.kernel),
        )
        .await;
    pusher
        .push_image(
            "vendor/arm",
            Some(&format!("{}_64k", release.kernel)),
            &arm_image(&k64),
        )
        .await;
    api.add_module(
        "nic",
        "arm",
        module_spec(
            &format!("{}/vendor/arm:${{KERNEL_FULL_VERSION}}", registry.addr),
            "mlx5_core",
        ),
    );
    let run = ctx
        .run(&[
            "check",
            "--release",
            VERSION,
            "--insecure-registry",
            &registry.addr,
            "-o",
            "json",
        ])
        .await
        .expect_code(0);
    let rows = rows(&run);
    assert_eq!(
        row(&rows, "arm", &release.kernel)["verdict"],
        "Ready",
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "arm", &k64)["verdict"], "Ready", "{rows:#?}");

    // RHEL 10: a payload with two driver-toolkits, a node on CoreOS 10.
    let w = World::start().await;
    let two = push_two_stream_release(&w.pusher(), &w.registry.addr, VERSION).await;
    w.api.add_node_with(
        "rhel10-0",
        "amd64",
        "6.12.0-40.el10.x86_64",
        &[("os", "10")],
    );
    push(
        &w.pusher(),
        "vendor/m",
        &two.kernel,
        vec![mlx5_tree(&two.kernel).layer()],
    )
    .await;
    push(
        &w.pusher(),
        "vendor/m",
        KERNEL_10,
        vec![mlx5_tree(KERNEL_10).layer()],
    )
    .await;
    w.api.add_module(
        "nic",
        "m",
        module_spec(
            &format!("{}/vendor/m:${{KERNEL_FULL_VERSION}}", w.registry.addr),
            "mlx5_core",
        ),
    );
    let mut ten_only = module_spec(
        &format!("{}/vendor/m:${{KERNEL_FULL_VERSION}}", w.registry.addr),
        "mlx5_core",
    );
    ten_only["selector"] = json!({"os": "10"});
    w.api.add_module("nic", "ten-only", ten_only);
    let mut ctx = Context::new();
    let kubeconfig = ctx.write(".kube/config", w.api.kubeconfig());
    ctx.env("KUBECONFIG", kubeconfig.display().to_string());
    ctx.env(
        "KMM_RELEASE_REPO",
        format!("{}/ocp/release", w.registry.addr),
    );
    let run = ctx
        .run(&[
            "check",
            "--release",
            VERSION,
            "--insecure-registry",
            &w.registry.addr,
            "-o",
            "json",
        ])
        .await
        .expect_code(0);
    let rows = rows_of(&run);
    assert_eq!(
        row(&rows, "m", &two.kernel)["verdict"],
        "Ready",
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "m", KERNEL_10)["verdict"], "Ready", "{rows:#?}");
    assert_eq!(rows.iter().filter(|r| r["name"] == "ten-only").count(), 1);
    assert_eq!(row(&rows, "ten-only", KERNEL_10)["verdict"], "Ready");
}

/// `check --updates`: every release ClusterVersion offers, one row each, and the newest that
/// every Module can take.
#[tokio::test(flavor = "multi_thread")]
async fn the_update_matrix_names_the_newest_safe_release() {
    use support::fixtures::push_release;
    let w = World::start().await;
    let pusher = w.pusher();
    let mut entries = Vec::new();
    for version in ["4.19.1", "4.19.2", "4.19.3"] {
        let r = push_release(&pusher, &w.registry.addr, version, "amd64").await;
        entries.push((version, r));
    }
    // The Module's image exists for 4.19.1's and 4.19.2's kernels, not for 4.19.3's.
    for (_, r) in &entries[..2] {
        push(
            &pusher,
            "vendor/mlx5",
            &r.kernel,
            vec![mlx5_tree(&r.kernel).layer()],
        )
        .await;
    }
    w.api.add_module(
        "nic",
        "mlx5",
        module_spec(
            &format!("{}/vendor/mlx5:${{KERNEL_FULL_VERSION}}", w.registry.addr),
            "mlx5_core",
        ),
    );
    let release =
        |i: usize| json!({"version": entries[i].0, "image": entries[i].1.release.reference});
    w.api.put(
        "config.openshift.io",
        "ClusterVersion",
        json!({"metadata": {"name": "version"}, "spec": {"channel": "stable-4.19"},
               "status": {"desired": {"version": "4.19.0", "image": "quay.io/x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000"},
                          "availableUpdates": [release(0)],
                          "conditionalUpdates": [
                              {"release": release(1), "risks": [{"name": "DualStackNeedsController", "message": "m", "url": "https://example.com/risk", "matchingRules": []}]},
                              {"release": release(2), "risks": []}]}}),
    );
    let run = w.check(&["--updates"]).await.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("VERSION  KERNELS"), "{}", run.stdout);
    assert!(
        lines[1].starts_with("4.19.3")
            && lines[1].contains("0/1")
            && lines[1].ends_with("nic/mlx5 (Failed)"),
        "{}",
        run.stdout
    );
    assert!(
        lines[2].starts_with("4.19.2")
            && lines[2].contains("DualStackNeedsController")
            && lines[2].contains("1/1"),
        "{}",
        run.stdout
    );
    assert!(
        lines[3].starts_with("4.19.1") && lines[3].contains("1/1"),
        "{}",
        run.stdout
    );
    assert_eq!(lines[4], "Newest release safe for every Module: 4.19.2");

    let json = w
        .check(&["--updates", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(json["newestSafe"], "4.19.2");
    let releases = json["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 3);
    assert_eq!(releases[0]["safe"], false);
    assert_eq!(releases[0]["modules"][0]["verdict"], "Failed");
    assert_eq!(
        releases[1]["risks"],
        json!([{"name": "DualStackNeedsController", "message": "m", "url": "https://example.com/risk"}])
    );
    // -o wide: the risk's message and URL.
    let run = w.check(&["--updates", "-o", "wide"]).await.expect_code(0);
    run.expect_stdout("DualStackNeedsController: m (https://example.com/risk)");
    // One release the cluster offers with a risk: the risk is in its report too.
    let run = w
        .check(&["--release", "4.19.2", "-o", "json"])
        .await
        .expect_code(0);
    assert_eq!(run.json()["risks"][0]["name"], "DualStackNeedsController");
    run.expect_stderr("4.19.2 is a conditional update with risk DualStackNeedsController");
    // --updates is the list the cluster offers: a --release beside it is refused.
    w.check(&["--updates", "--release", "4.19.2"])
        .await
        .expect_code(2)
        .expect_stderr("'--updates' cannot be used with '--release");
    for key in ["kernels", "releaseImage", "dtkImage", "modules", "summary"] {
        assert!(releases[1].get(key).is_some(), "{key} in {:#}", releases[1]);
    }

    // An explicit list: only the unsafe one.
    w.check(&[
        "--release",
        "4.19.3",
        "--release",
        "4.19.3-x86_64-nope",
        "-o",
        "json",
    ])
    .await
    .expect_code(2);
    // A release that does not exist, beside one that is safe: bad input, said on stderr.
    let repo = format!("{}/ocp/release", w.registry.addr);
    let run = w
        .check(&[
            "--release",
            "4.19.2",
            "--release",
            "4.19.9",
            "--release-repo",
            &repo,
        ])
        .await
        .expect_code(2);
    run.expect_stderr("error: release 4.19.9: ");
    let run = w
        .ctx
        .run(&[
            "check",
            "--release",
            &entries[2].1.release.reference,
            "--release",
            &entries[2].1.release.reference,
            "--insecure-registry",
            &w.registry.addr,
        ])
        .await
        .expect_code(1);
    run.expect_stdout("No listed release is safe for every Module.");
}
