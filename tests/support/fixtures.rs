//! OpenShift-shaped test images: release payloads and driver-toolkit images.

use serde_json::json;

use super::images::{Compression, Flavor, Image, Pushed, Pusher, TarLayer, layer};

pub const DTK_FILE: &str = "etc/driver-toolkit-release.json";

pub fn rpm_arch(goarch: &str) -> &'static str {
    match goarch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        other => panic!("no rpm arch for {other}"),
    }
}

/// The kernel our fixtures claim for a release version and arch (4.19.z → 570.19.<z>).
pub fn kernel_for(version: &str, goarch: &str) -> String {
    let patch: String = version
        .split('.')
        .nth(2)
        .unwrap_or("0")
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    format!("5.14.0-570.19.{patch}.el9_6.{}", rpm_arch(goarch))
}

/// One line, as the DTK Dockerfile's `echo` writes it.
pub fn dtk_json(kernel: &str, rt: Option<&str>, rhel: &str) -> Vec<u8> {
    let rt = rt.unwrap_or("package kernel-rt-core is not installed");
    format!(
        "{{ \"KERNEL_VERSION\": \"{kernel}\", \"RT_KERNEL_VERSION\": \"{rt}\", \"RHEL_VERSION\": \"{rhel}\" }}\n"
    )
    .into_bytes()
}

/// A DTK as ART builds it: a base with an *older* copy of the file, a bulky middle, and the
/// real file in a small top layer.
pub fn dtk_image(
    kernel: &str,
    goarch: &'static str,
    flavor: Flavor,
    compression: Compression,
) -> Image {
    dtk_image_of(kernel, "9.6", goarch, flavor, compression)
}

/// The same for a RHEL release (`9.6`, `10.0`).
pub fn dtk_image_of(
    kernel: &str,
    rhel: &str,
    goarch: &'static str,
    flavor: Flavor,
    compression: Compression,
) -> Image {
    let rt = (goarch == "amd64").then(|| format!("{kernel}+rt"));
    let base = TarLayer::new()
        .dir("etc")
        .file(
            "etc/os-release",
            b"NAME=\"Red Hat Enterprise Linux\"\nVERSION_ID=\"9.6\"\n",
        )
        .file(DTK_FILE, &dtk_json("5.14.0-1.old.el9.x86_64", None, "9.0"))
        .finish();
    let middle = TarLayer::new()
        .dir("usr")
        .dir("usr/src")
        .noise(
            &format!("usr/src/kernels/{kernel}/vmlinux.bin"),
            256 * 1024,
            7,
        )
        .finish();
    let top = TarLayer::new()
        .dir("etc")
        .file(DTK_FILE, &dtk_json(kernel, rt.as_deref(), rhel))
        .finish();
    Image {
        flavor,
        goarch,
        layers: vec![
            layer(base, compression, flavor),
            layer(middle, compression, flavor),
            layer(top, compression, flavor),
        ],
    }
}

/// `image-references` for `version` with `dtk` as the driver-toolkit (None: no such tag) and no
/// node OS image.
pub fn image_references(version: &str, dtk: Option<&str>, registry: &str) -> Vec<u8> {
    image_references_with(version, dtk, None, registry)
}

/// The same with a RHEL 10 `driver-toolkit-10` as well (5.x payloads).
pub fn image_references_with(
    version: &str,
    dtk: Option<&str>,
    dtk10: Option<&str>,
    registry: &str,
) -> Vec<u8> {
    let mut tags = Vec::new();
    if let Some(dtk) = dtk {
        tags.push(("driver-toolkit", dtk));
    }
    if let Some(dtk10) = dtk10 {
        tags.push(("driver-toolkit-10", dtk10));
    }
    image_references_tags(version, &tags, registry)
}

/// `image-references` naming `tags` (tag → pull spec) among a few components of no interest.
pub fn image_references_tags(version: &str, named: &[(&str, &str)], registry: &str) -> Vec<u8> {
    let mut tags = Vec::new();
    for (i, name) in ["cli", "machine-config-operator", "installer"]
        .iter()
        .enumerate()
    {
        tags.push(json!({
            "name": name,
            "annotations": {"io.openshift.build.commit.id": format!("{i:040}")},
            "from": {"kind": "DockerImage", "name": format!("{registry}/ocp/art-dev@sha256:{i:064}")},
            "generation": null, "importPolicy": {}, "referencePolicy": {"type": ""}
        }));
    }
    for (position, (name, spec)) in named.iter().enumerate() {
        tags.insert(
            (1 + position).min(tags.len()),
            json!({
                "name": name,
                "annotations": {"io.openshift.build.source-location": "https://github.com/openshift/example"},
                "from": {"kind": "DockerImage", "name": spec},
                "generation": null, "importPolicy": {}, "referencePolicy": {"type": ""}
            }),
        );
    }
    serde_json::to_vec_pretty(&json!({
        "kind": "ImageStream",
        "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": version, "creationTimestamp": null,
                     "annotations": {"release.openshift.io/from-image-stream": "ocp/4.19-art-latest"}},
        "spec": {"lookupPolicy": {"local": false}, "tags": tags},
        "status": {"dockerImageRepository": ""}
    }))
    .unwrap()
}

/// How a node OS image states its kernel (fleet-and-trust.md §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOsForm {
    /// `com.coreos.rpm.kernel` (and `…kernel-rt-core`) labels, as `rhel-coreos` and
    /// `machine-os-content` carry them.
    KernelLabel,
    /// `ostree.linux=true` (OCP 4.22+) and `io.openshift.metalayer=true`: the kernel is only in
    /// the last layer's `meta.json`.
    MetaJson,
    /// The standard kernel's label only: the RT kernel is in `rhel-coreos-extensions`.
    NoRtLabel,
}

/// A node OS image for `kernel` (and its `+rt` twin for amd64) in the form given, with a bulky
/// layer below, as the real ones (gigabytes) have.
pub async fn push_node_os(
    pusher: &Pusher,
    kernel: &str,
    goarch: &'static str,
    form: NodeOsForm,
) -> Pushed {
    push_node_os_to(pusher, "ocp/art-dev", kernel, goarch, form).await
}

/// `push_node_os` into repository `repo`.
pub async fn push_node_os_to(
    pusher: &Pusher,
    repo: &str,
    kernel: &str,
    goarch: &'static str,
    form: NodeOsForm,
) -> Pushed {
    let version_release_arch = kernel.to_string();
    let mut layers = vec![node_os_bulk()];
    let mut labels: Vec<(&str, &str)> = vec![(
        "io.openshift.build.versions",
        "machine-os=419.96.202606021522-0",
    )];
    match form {
        NodeOsForm::KernelLabel => {
            labels.push(("com.coreos.rpm.kernel", &version_release_arch));
            if goarch == "amd64" {
                labels.push(("com.coreos.rpm.kernel-rt-core", &version_release_arch));
            }
        }
        NodeOsForm::NoRtLabel => labels.push(("com.coreos.rpm.kernel", &version_release_arch)),
        NodeOsForm::MetaJson => {
            labels.push(("ostree.linux", "true"));
            labels.push(("io.openshift.metalayer", "true"));
            let (version, rest) = kernel.split_once('-').unwrap();
            let (release, arch) = rest.rsplit_once('.').unwrap();
            let mut packages = vec![
                json!(["bash", "0", "5.1.8", "9.el9", arch]),
                json!(["kernel-core", "0", version, release, arch]),
            ];
            if goarch == "amd64" {
                packages.push(json!(["kernel-rt-core", "0", version, release, arch]));
            }
            let meta = serde_json::to_vec(&json!({ "rpmdb.pkglist": packages })).unwrap();
            let top = TarLayer::new()
                .dir("usr/share/openshift/base")
                .file("usr/share/openshift/base/meta.json", &meta)
                .finish();
            layers.push(layer(top, Compression::Gzip, Flavor::Oci));
        }
    }
    let image = Image {
        flavor: Flavor::Oci,
        goarch,
        layers,
    };
    pusher.push_labelled(repo, None, &image, &labels).await
}

/// The bulky layer under every node OS image: a reader of the kernel never needs it.
pub fn node_os_bulk() -> super::images::Blob {
    let bulk = TarLayer::new()
        .dir("usr")
        .noise("usr/lib/ostree-boot/vmlinuz", 512 * 1024, 23)
        .finish();
    layer(bulk, Compression::Gzip, Flavor::Oci)
}

/// `rhel-coreos-extensions` for the RT kernel of `kernel` (`extensions.json` in its last layer).
pub async fn push_extensions(pusher: &Pusher, rt_version: &str) -> Pushed {
    let map =
        serde_json::to_vec(&json!({ "kernel-rt-core": rt_version, "kernel-rt-kvm": rt_version }))
            .unwrap();
    let bulk = TarLayer::new()
        .dir("usr")
        .noise(
            "usr/share/rpm-ostree/extensions/kernel-rt-core.rpm",
            256 * 1024,
            29,
        )
        .finish();
    let top = TarLayer::new()
        .dir("usr/share/rpm-ostree")
        .file("usr/share/rpm-ostree/extensions.json", &map)
        .finish();
    let image = Image {
        flavor: Flavor::Oci,
        goarch: "amd64",
        layers: vec![
            layer(bulk, Compression::Gzip, Flavor::Oci),
            layer(top, Compression::Gzip, Flavor::Oci),
        ],
    };
    pusher.push_image("ocp/art-dev", None, &image).await
}

pub fn release_metadata(version: &str, multi: bool) -> Vec<u8> {
    let mut metadata = json!({"url": "https://access.redhat.com/errata/RHSA-2026:0001"});
    if multi {
        metadata["release.openshift.io/architecture"] = json!("multi");
    }
    serde_json::to_vec(&json!({
        "kind": "cincinnati-metadata-v0", "version": version,
        "previous": ["4.18.14", "4.18.15"], "metadata": metadata
    }))
    .unwrap()
}

/// The payload layer as `oc adm release new` writes it: the directory, image-references,
/// release-metadata, then hundreds of operator manifests.
pub fn payload_layer(refs: &[u8], metadata: &[u8], manifests: usize) -> Vec<u8> {
    let mut tar = TarLayer::new()
        .dir("release-manifests")
        .file("release-manifests/image-references", refs)
        .file("release-manifests/release-metadata", metadata);
    for i in 0..manifests {
        let body = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: operator-{i}\n  namespace: openshift-{i}\ndata:\n  padding: \"{}\"\n",
            "x".repeat(1500)
        );
        tar = tar.file(
            &format!("release-manifests/0000_{:02}_operator-{i}.yaml", i % 90),
            body.as_bytes(),
        );
    }
    tar.finish()
}

/// A release image: two CVO base layers, then the payload layer on top.
pub fn release_image(payload: Vec<u8>, goarch: &'static str, flavor: Flavor) -> Image {
    let base = TarLayer::new()
        .dir("usr/bin")
        .noise("usr/bin/cluster-version-operator", 64 * 1024, 11)
        .finish();
    let cvo = TarLayer::new()
        .dir("manifests")
        .file("manifests/0000_00_cvo.yaml", b"kind: Deployment\n")
        .finish();
    Image {
        flavor,
        goarch,
        layers: vec![
            layer(base, Compression::Gzip, flavor),
            layer(cvo, Compression::Gzip, flavor),
            layer(payload, Compression::Gzip, Flavor::Docker),
        ],
    }
}

/// A consistent pair in `pusher`'s registry: DTK in `ocp/art-dev`, release tagged
/// `ocp/release:<version>-<arch>`.
pub struct ReleaseFixture {
    pub release: Pushed,
    pub dtk: Pushed,
    pub kernel: String,
}

/// A release as ART ships it: its driver-toolkit and its node OS (`rhel-coreos`) on the same
/// kernel, the node OS saying so in its labels.
pub async fn push_release(
    pusher: &Pusher,
    registry: &str,
    version: &str,
    goarch: &'static str,
) -> ReleaseFixture {
    let kernel = kernel_for(version, goarch);
    let dtk = dtk_image(&kernel, goarch, Flavor::Docker, Compression::Gzip);
    let tag = format!("{version}-{}", rpm_arch(goarch));
    let os = push_node_os(pusher, &kernel, goarch, NodeOsForm::KernelLabel).await;
    let mut fixture = push_release_tagged(
        pusher,
        registry,
        version,
        &dtk,
        Some(&tag),
        &[("rhel-coreos", &os.reference)],
    )
    .await;
    fixture.kernel = kernel;
    fixture
}

/// Push `dtk` and a release payload pointing at it, without a node OS image.
pub async fn push_release_with_dtk(
    pusher: &Pusher,
    registry: &str,
    version: &str,
    dtk: &Image,
    tag: Option<&str>,
) -> ReleaseFixture {
    push_release_tagged(pusher, registry, version, dtk, tag, &[]).await
}

/// Push `dtk` and a release payload naming it and the other images in `tags` (tag → pull spec).
pub async fn push_release_tagged(
    pusher: &Pusher,
    registry: &str,
    version: &str,
    dtk: &Image,
    tag: Option<&str>,
    tags: &[(&str, &str)],
) -> ReleaseFixture {
    let dtk = pusher.push_image("ocp/art-dev", None, dtk).await;
    let mut named = vec![("driver-toolkit", dtk.reference.as_str())];
    named.extend_from_slice(tags);
    let refs = image_references_tags(version, &named, registry);
    let release = push_payload(
        pusher,
        tag,
        payload_layer(&refs, &release_metadata(version, false), 300),
        "amd64",
    )
    .await;
    ReleaseFixture {
        release,
        dtk,
        kernel: String::new(),
    }
}

/// Push a release image whose top layer is `payload` (a tar).
pub async fn push_payload(
    pusher: &Pusher,
    tag: Option<&str>,
    payload: Vec<u8>,
    goarch: &'static str,
) -> Pushed {
    pusher
        .push_image(
            "ocp/release",
            tag,
            &release_image(payload, goarch, Flavor::Docker),
        )
        .await
}

/// A release whose references name `source` (a registry that may be unreachable), stored in
/// another registry (`pusher`'s, the mirror) under other repository paths.
pub struct Mirrored {
    pub kernel: String,
    pub release_digest: String,
    /// `<source>/openshift-release-dev/ocp-release@sha256:…`, as ClusterVersion lists it.
    pub release_logical: String,
    /// `<source>/openshift-release-dev/ocp-v4.0-art-dev@sha256:…`, as the payload names it.
    pub dtk_logical: String,
}

pub async fn push_mirrored_release(
    pusher: &Pusher,
    source: &str,
    version: &str,
    release_repo: &str,
    dtk_repo: &str,
) -> Mirrored {
    let kernel = kernel_for(version, "amd64");
    let dtk = pusher
        .push_image(
            dtk_repo,
            None,
            &dtk_image(&kernel, "amd64", Flavor::Docker, Compression::Gzip),
        )
        .await;
    let dtk_logical = format!(
        "{source}/openshift-release-dev/ocp-v4.0-art-dev@{}",
        dtk.digest
    );
    // The node OS is mirrored beside the driver-toolkit, as `oc adm release mirror` does.
    let os = push_node_os_to(pusher, dtk_repo, &kernel, "amd64", NodeOsForm::KernelLabel).await;
    let os_logical = format!(
        "{source}/openshift-release-dev/ocp-v4.0-art-dev@{}",
        os.digest
    );
    let payload = payload_layer(
        &image_references_tags(
            version,
            &[
                ("driver-toolkit", &dtk_logical),
                ("rhel-coreos", &os_logical),
            ],
            source,
        ),
        &release_metadata(version, false),
        50,
    );
    let release = pusher
        .push_image(
            release_repo,
            Some(&format!("{version}-x86_64")),
            &release_image(payload, "amd64", Flavor::Docker),
        )
        .await;
    Mirrored {
        kernel,
        release_logical: format!(
            "{source}/openshift-release-dev/ocp-release@{}",
            release.digest
        ),
        release_digest: release.digest,
        dtk_logical,
    }
}

/// The RHEL 10 kernel our two-stream fixtures claim.
pub const KERNEL_10: &str = "6.12.0-55.9.1.el10_0.x86_64";

/// A 5.x-style amd64 payload tagged `<version>-x86_64` with two driver-toolkits: RHEL 9
/// (`kernel_for(version)`) and RHEL 10 (`KERNEL_10`).
pub async fn push_two_stream_release(
    pusher: &Pusher,
    registry: &str,
    version: &str,
) -> ReleaseFixture {
    let kernel = kernel_for(version, "amd64");
    let dtk = pusher
        .push_image(
            "ocp/art-dev",
            None,
            &dtk_image(&kernel, "amd64", Flavor::Docker, Compression::Gzip),
        )
        .await;
    let dtk10 = pusher
        .push_image(
            "ocp/art-dev",
            None,
            &dtk_image_of(
                KERNEL_10,
                "10.0",
                "amd64",
                Flavor::Docker,
                Compression::Gzip,
            ),
        )
        .await;
    let os = push_node_os(pusher, &kernel, "amd64", NodeOsForm::KernelLabel).await;
    let os10 = push_node_os(pusher, KERNEL_10, "amd64", NodeOsForm::KernelLabel).await;
    let refs = image_references_tags(
        version,
        &[
            ("driver-toolkit", &dtk.reference),
            ("driver-toolkit-10", &dtk10.reference),
            ("rhel-coreos", &os.reference),
            ("rhel-coreos-10", &os10.reference),
        ],
        registry,
    );
    let release = push_payload(
        pusher,
        Some(&format!("{version}-x86_64")),
        payload_layer(&refs, &release_metadata(version, false), 50),
        "amd64",
    )
    .await;
    ReleaseFixture {
        release,
        dtk,
        kernel,
    }
}

/// One kernel of a driver-toolkit with its devel files: the exports `Module.symvers` lists
/// (`/usr/src/kernels/<kernel>/Module.symvers`, as kernel-devel installs it) and one in-tree
/// module (`/usr/lib/modules/<kernel>/kernel/…`, as kernel-modules does) stamped `vermagic`.
pub struct DevelKernel {
    pub kernel: String,
    pub vermagic: String,
    pub exports: Vec<(String, u32)>,
    /// Exports listed `EXPORT_SYMBOL_GPL`.
    pub gpl_only: Vec<String>,
    /// Exports in a symbol namespace: (symbol, namespace).
    pub namespaced: Vec<(String, String)>,
}

impl DevelKernel {
    pub fn new(kernel: &str, vermagic: &str, exports: Vec<(String, u32)>) -> DevelKernel {
        DevelKernel {
            kernel: kernel.to_string(),
            vermagic: vermagic.to_string(),
            exports,
            gpl_only: vec![],
            namespaced: vec![],
        }
    }

    /// As kernel-devel installs it: `0xCRC<TAB>symbol<TAB>module<TAB>type<TAB>namespace`.
    pub fn symvers(&self) -> Vec<u8> {
        let mut text = String::new();
        for (symbol, crc) in &self.exports {
            let gpl = if self.gpl_only.contains(symbol) {
                "_GPL"
            } else {
                ""
            };
            let namespace = super::kmod::namespace_of(&self.namespaced, symbol);
            text.push_str(&format!(
                "0x{crc:08x}\t{symbol}\tvmlinux\tEXPORT_SYMBOL{gpl}\t{namespace}\n"
            ));
        }
        text.into_bytes()
    }
}

/// A DTK as ART builds it, with kernel-devel and kernel-modules in a bulky middle layer (after
/// `filler` bytes of other files), for `kernels[0]` (standard) and `kernels[1]` (RT, if given).
pub fn devel_dtk_image(kernels: &[DevelKernel], filler: u64, compression: Compression) -> Image {
    let standard = &kernels[0];
    let rt = kernels.get(1).map(|k| k.kernel.clone());
    let base = TarLayer::new()
        .dir("etc")
        .file(DTK_FILE, &dtk_json("5.14.0-1.old.el9.x86_64", None, "9.0"))
        .finish();
    let mut middle =
        TarLayer::new()
            .dir("usr")
            .dir("usr/src")
            .noise("usr/share/doc/filler.bin", filler, 11);
    for k in kernels {
        let in_tree = super::kmod::Ko::new("dummy")
            .vermagic(&k.vermagic)
            .versions(&[("module_layout", 1)])
            .compressed(super::kmod::Compression::Xz);
        middle = middle
            .file(
                &format!(
                    "usr/lib/modules/{}/kernel/drivers/net/dummy.ko.xz",
                    k.kernel
                ),
                &in_tree.built(&k.kernel),
            )
            .noise(
                &format!("usr/src/kernels/{}/vmlinux.bin", k.kernel),
                64 * 1024,
                7,
            )
            .file(
                &format!("usr/src/kernels/{}/Module.symvers", k.kernel),
                &k.symvers(),
            );
    }
    let top = TarLayer::new()
        .dir("etc")
        .file(DTK_FILE, &dtk_json(&standard.kernel, rt.as_deref(), "9.6"))
        .finish();
    Image {
        flavor: Flavor::Docker,
        goarch: "amd64",
        layers: vec![
            layer(base, compression, Flavor::Docker),
            layer(middle.finish(), compression, Flavor::Docker),
            layer(top, compression, Flavor::Docker),
        ],
    }
}
