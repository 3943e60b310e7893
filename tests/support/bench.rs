//! The fixture the check and latency benchmarks share: kmod images over a common base layer,
//! and Modules that use them.

use serde_json::json;

use super::apiserver::ApiServer;
use super::images::{Compression, Flavor, Pusher, TarLayer, layer, sha256};
use super::kmod::{Ko, Tree, base_layer};

/// A size from the environment (`KMM_BENCH_…`), else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub const KERNEL: &str = "5.14.0-570.19.1.el9_6.x86_64";

/// A Module `bench/vendor<m>` (for `-f`) loading `module_name` from
/// `<registry>/bench/vendor<m>:<kernel>`.
pub fn module_document(registry: &str, m: usize, module_name: &str) -> String {
    format!(
        "apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\nmetadata:\n  name: vendor{m}\n  \
         namespace: bench\nspec:\n  selector:\n    node-role.kubernetes.io/worker: \"\"\n  \
         moduleLoader:\n    container:\n      modprobe:\n        moduleName: {module_name}\n      \
         kernelMappings:\n      - regexp: '^.+$'\n        containerImage: \
         {registry}/bench/vendor{m}:${{KERNEL_FULL_VERSION}}\n"
    )
}

pub struct KmodImages {
    /// `address/bench/vendorN:vI-KERNEL`, one per image.
    pub references: Vec<String>,
    /// Config and layers of all images, as stored.
    pub bytes: u64,
}

/// Push `images` kmod images, each a `base_mib` MiB base layer of incompressible data (one
/// blob shared by all, as a common UBI base is), a tools layer and a small top layer with two
/// gcc-built modules for `KERNEL` indexed by the real depmod, into 10 repositories.
/// References name `address` (the registry, or a proxy in front of it).
pub async fn kmod_images(
    pusher: &Pusher,
    address: &str,
    images: usize,
    base_mib: u64,
) -> KmodImages {
    kmod_images_for(pusher, address, images, base_mib, KERNEL).await
}

/// The same for another kernel (its tags `vI-<kernel>`).
pub async fn kmod_images_for(
    pusher: &Pusher,
    address: &str,
    images: usize,
    base_mib: u64,
    kernel: &str,
) -> KmodImages {
    let base = TarLayer::new()
        .noise("usr/lib64/libbase.so", base_mib * 1024 * 1024, 5)
        .finish();
    let base_blob = layer(base, Compression::Gzip, Flavor::Docker);
    let tools_blob = layer(base_layer(), Compression::Gzip, Flavor::Docker);
    let mut references = Vec::new();
    let mut bytes = 0u64;
    for i in 0..images {
        let mut tree = Tree::new();
        let helper = format!("vendor{i}_fw");
        tree.module(
            "/opt",
            kernel,
            &Ko::new(&helper)
                .at(&format!("kernel/drivers/misc/{helper}.ko"))
                .exports(&[&format!("{helper}_load")]),
        )
        .module(
            "/opt",
            kernel,
            &Ko::new(&format!("vendor{i}")).imports(&[&format!("{helper}_load")]),
        )
        .depmod("/opt", kernel);
        let top = layer(tree.layer(), Compression::Gzip, Flavor::Docker);
        let repo = format!("bench/vendor{}", i % 10);
        let layers = [&base_blob, &tools_blob, &top];
        for blob in layers {
            pusher
                .push_blob(&repo, blob.data.clone(), &blob.digest)
                .await;
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_digest = sha256(&config);
        pusher
            .push_blob(&repo, config.clone().into(), &config_digest)
            .await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.data.len()})).collect::<Vec<_>>(),
        });
        // A tag cannot hold `+`: KMM's KERNEL_FULL_VERSION writes `+rt` as `_rt`.
        let tag = format!("v{i}-{}", kernel.replace('+', "_"));
        pusher
            .push_manifest(
                &repo,
                Some(&tag),
                serde_json::to_vec(&manifest).unwrap(),
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .await;
        bytes += config.len() as u64 + layers.iter().map(|l| l.data.len() as u64).sum::<u64>();
        references.push(format!("{address}/{repo}:{tag}"));
    }
    KmodImages { references, bytes }
}

/// `modules` Modules in `namespaces` namespaces, Module m loading image m % images (as pushed
/// by `kmod_images` at `address`) on the worker nodes.
pub fn add_modules(
    api: &ApiServer,
    address: &str,
    modules: usize,
    namespaces: usize,
    images: usize,
) {
    for m in 0..modules {
        let i = m % images;
        let image = format!(
            "{address}/bench/vendor{}:v{i}-${{KERNEL_FULL_VERSION}}",
            i % 10
        );
        api.add_module(
            &format!("team{}", m % namespaces),
            &format!("module{m}"),
            json!({"selector": {"node-role.kubernetes.io/worker": ""},
                   "moduleLoader": {"container": {
                       "modprobe": {"moduleName": format!("vendor{i}")},
                       "kernelMappings": [{"regexp": "^.+$", "containerImage": image}]}}}),
        );
    }
}
