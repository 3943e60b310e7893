//! Release payload → driver-toolkit image → kernel, read straight from the registry.

pub mod dtk;
pub mod nodeos;
pub mod payload;

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::registry::cache::Cache;
use crate::registry::files::{platform_manifest, read_files};
use crate::registry::reference::ImageRef;

pub const DEFAULT_RELEASE_REPO: &str = "quay.io/openshift-release-dev/ocp-release";
/// v3: answers carry every driver-toolkit stream and its node OS kernel.
const CACHE_NAMESPACE: &str = "dtk-v3";

static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d+\.\d+\.\d+(-[0-9A-Za-z][0-9A-Za-z.-]*)?$").expect("static regex")
});

/// CPU architectures of OpenShift payloads, by their RPM names (as in release tags).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    Serialize,
    Deserialize,
)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    #[serde(rename = "x86_64")]
    X86_64,
    #[value(name = "aarch64", alias = "arm64")]
    #[serde(rename = "aarch64")]
    Aarch64,
    #[value(name = "ppc64le")]
    #[serde(rename = "ppc64le")]
    Ppc64le,
    #[value(name = "s390x")]
    #[serde(rename = "s390x")]
    S390x,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::X86_64, Arch::Aarch64, Arch::Ppc64le, Arch::S390x];

    /// The RPM/uname name used in release tags and kernel NVRs.
    pub fn rpm(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }

    /// The Go/OCI name used in manifest lists and node labels.
    pub fn goarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }

    pub fn from_goarch(goarch: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.goarch() == goarch)
    }

    pub fn from_rpm(rpm: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.rpm() == rpm)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rpm())
    }
}

/// Which payload flavour to read: one architecture, or the multi-arch manifest list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Single(Arch),
    Multi,
}

impl Payload {
    fn tag_suffix(self) -> &'static str {
        match self {
            Payload::Single(arch) => arch.rpm(),
            Payload::Multi => "multi",
        }
    }
}

/// The payload for a cluster whose nodes have these `kubernetes.io/arch` values: one
/// architecture reads its own payload; a mix reads the multi payload, with the driver-toolkit
/// of the most common architecture. None when no node has a known architecture.
pub fn payload_for_nodes(goarches: &[String]) -> Option<(Payload, Arch)> {
    let mut counts: Vec<(Arch, usize)> = Arch::ALL.iter().map(|a| (*a, 0)).collect();
    for arch in goarches.iter().filter_map(|g| Arch::from_goarch(g)) {
        if let Some(entry) = counts.iter_mut().find(|(a, _)| *a == arch) {
            entry.1 += 1;
        }
    }
    let present: Vec<(Arch, usize)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    let most = present
        .iter()
        .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a as u8)))?
        .0;
    if present.len() == 1 {
        Some((Payload::Single(most), most))
    } else {
        Some((Payload::Multi, most))
    }
}

/// What `--release` said: a version to look up, or a pull spec to use as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseSpec {
    Version(String),
    PullSpec(ImageRef),
}

impl ReleaseSpec {
    pub fn parse(input: &str) -> Result<Self> {
        let input = input.trim();
        if input.contains('/') {
            return input
                .parse::<ImageRef>()
                .map(ReleaseSpec::PullSpec)
                .map_err(|e| {
                    Error::invalid(
                        format!("invalid release pull spec {e}"),
                        "pass a version such as 4.19.0 or a pull spec such as \
                     quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64 (or @sha256:…)",
                    )
                });
        }
        if VERSION.is_match(input) {
            Ok(ReleaseSpec::Version(input.to_string()))
        } else {
            Err(Error::invalid(
                format!("invalid release {input:?}: not a version and not a pull spec"),
                "pass a full version such as 4.19.0 or 4.20.0-rc.2, or a pull spec such as \
                 quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64",
            ))
        }
    }

    /// The image to read: a version becomes `<repo>:<version>-<arch|multi>`.
    pub fn image(&self, release_repo: &ImageRef, payload: Payload) -> ImageRef {
        match self {
            ReleaseSpec::PullSpec(image) => image.clone(),
            ReleaseSpec::Version(version) => {
                release_repo.with_tag(&format!("{version}-{}", payload.tag_suffix()))
            }
        }
    }

    pub fn version(&self) -> Option<&str> {
        match self {
            ReleaseSpec::Version(v) => Some(v),
            ReleaseSpec::PullSpec(_) => None,
        }
    }
}

/// Parse `--release-repo` / `KMM_RELEASE_REPO`.
pub fn parse_release_repo(input: Option<&str>) -> Result<ImageRef> {
    let repo = input
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_RELEASE_REPO);
    ImageRef::parse_repository(repo).map_err(|e| {
        Error::invalid(
            format!("invalid release repository {e}"),
            "pass --release-repo (or KMM_RELEASE_REPO) as host/path without tag, e.g. \
             quay.io/openshift-release-dev/ocp-release",
        )
    })
}

/// The answer of `kubectl kmm dtk`, in the key order of its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtkAnswer {
    pub release_image: String,
    pub release_digest: String,
    pub release_version: String,
    pub architecture: String,
    pub dtk_image: String,
    pub kernel_version: String,
    pub rt_kernel_version: Option<String>,
    pub rhel_version: Option<String>,
    /// The RHEL 9 stream's node OS and the kernel its nodes will boot.
    pub node_os: Option<nodeos::NodeOs>,
    /// Every driver-toolkit stream of the payload: the RHEL 9 one (the keys above), then
    /// `driver-toolkit-10` when the payload has it.
    pub streams: Vec<DtkStream>,
}

/// One driver-toolkit of a payload and the kernels it was built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtkStream {
    pub dtk_image: String,
    pub kernel_version: String,
    pub rt_kernel_version: Option<String>,
    pub rhel_version: Option<String>,
    /// The stream's node OS image and its kernels (None: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_os: Option<nodeos::NodeOs>,
}

impl DtkStream {
    fn of(image: &ImageRef, release: &dtk::DtkRelease, node_os: nodeos::NodeOs) -> Self {
        DtkStream {
            dtk_image: image.to_string(),
            kernel_version: release.kernel_version.clone(),
            rt_kernel_version: release.rt_kernel_version.clone(),
            rhel_version: release.rhel_version.clone(),
            node_os: Some(nodeos::settle(
                node_os,
                &release.kernel_version,
                release.rt_kernel_version.as_deref(),
            )),
        }
    }

    /// The kernel the stream's standard nodes will boot: the node OS's where it is known to
    /// differ from the driver-toolkit's, else the driver-toolkit's.
    pub fn boot_kernel(&self) -> &str {
        self.node_os
            .as_ref()
            .and_then(|os| os.differing(&self.kernel_version))
            .unwrap_or(&self.kernel_version)
    }

    /// The same for the real-time kernel.
    pub fn boot_rt_kernel(&self) -> Option<&str> {
        self.node_os
            .as_ref()
            .and_then(|os| os.differing_rt(self.rt_kernel_version.as_deref()))
            .or(self.rt_kernel_version.as_deref())
    }

    /// For a kernel the nodes boot: the driver-toolkit's kernel of that kind when it is another
    /// one (KMM checks and builds for it, not for the nodes' kernel).
    pub fn dtk_kernel_for(&self, boot_kernel: &str) -> Option<String> {
        let dtk = if Some(boot_kernel) == self.boot_rt_kernel() {
            self.rt_kernel_version.clone()?
        } else if boot_kernel == self.boot_kernel() {
            self.kernel_version.clone()
        } else if let Some(variant) = boot_kernel
            .strip_prefix(self.boot_kernel())
            .filter(|v| v.starts_with('+'))
        {
            format!("{}{variant}", self.kernel_version)
        } else {
            return None;
        };
        (dtk != boot_kernel).then_some(dtk)
    }

    /// What to say about the node OS kernel of this stream, for stderr: why it is unconfirmed, or
    /// that it differs. None when it agrees.
    pub fn node_os_warning(&self) -> Option<String> {
        let os = self.node_os.as_ref()?;
        match os.status {
            nodeos::NodeKernelStatus::Agrees => os.reason.as_ref().map(|r| {
                format!(
                    "node OS of {}: {r}; the DTK's RT kernel is assumed",
                    self.dtk_image
                )
            }),
            nodeos::NodeKernelStatus::Unconfirmed => Some(format!(
                "the kernel the nodes will boot is unconfirmed, {}: the driver-toolkit's {} is assumed",
                os.reason
                    .as_deref()
                    .unwrap_or("the node OS image says nothing"),
                self.kernel_version
            )),
            nodeos::NodeKernelStatus::Differs => {
                let mut differ = Vec::new();
                if let Some(k) = os.differing(&self.kernel_version) {
                    differ.push(format!("{k} (the DTK has {})", self.kernel_version));
                }
                if let Some(k) = os.differing_rt(self.rt_kernel_version.as_deref()) {
                    differ.push(format!(
                        "{k} (the DTK has {})",
                        self.rt_kernel_version.as_deref().unwrap_or("none")
                    ));
                }
                Some(format!(
                    "the node OS {} boots {}: KMM checks and builds for the driver-toolkit's kernel, \
                     the nodes will boot the node OS's; Modules are checked against the latter",
                    os.image.as_deref().unwrap_or("image"),
                    differ.join(" and ")
                ))
            }
        }
    }

    /// The RHEL major release of the stream (`9`, `10`), from RHEL_VERSION or the kernel.
    pub fn rhel_major(&self) -> Option<u32> {
        self.rhel_version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
    }
}

/// What was read, besides the answer: sizes for `-v`, warnings for stderr.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    pub from_cache: bool,
    pub release_size: u64,
    pub dtk_size: u64,
    pub warnings: Vec<String>,
}

type MemoCell = std::sync::Arc<tokio::sync::OnceCell<Result<(DtkAnswer, Resolution)>>>;
type MemoMap = std::collections::HashMap<(String, Arch, u64), MemoCell>;

/// Releases resolved in this run: each (image, architecture) is read once, however many
/// clusters ask, unless they read it with other credentials or mirrors.
#[derive(Clone, Default)]
pub struct Memo(std::sync::Arc<std::sync::Mutex<MemoMap>>);

impl Memo {
    /// `resolve`, or what it answered before for the same image, architecture and access.
    pub async fn resolve(
        &self,
        registry: &Registry,
        cache: &Cache,
        image: &ImageRef,
        arch: Arch,
    ) -> Result<(DtkAnswer, Resolution)> {
        let key = (image.to_string(), arch, registry.access_key());
        let cell = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| resolve(registry, cache, image, arch))
            .await
            .clone()
    }
}

/// A driver-toolkit's `/etc/driver-toolkit-release.json`, its size, and whether it was a list.
async fn read_dtk(
    registry: &Registry,
    dtk_image: &ImageRef,
    arch: Arch,
) -> Result<(dtk::DtkRelease, u64, bool)> {
    const DTK_ROLE: &str = "driver-toolkit image";
    let (dtk_fetched, dtk_location) = registry
        .manifest_located(dtk_image)
        .await
        .map_err(|e| e.with_role(DTK_ROLE))?;
    let (dtk_manifest, dtk_is_list) = platform_manifest(
        registry,
        &dtk_location,
        &dtk_fetched.body,
        arch.goarch(),
        DTK_ROLE,
    )
    .await?;
    let dtk_files = read_files(
        registry,
        &dtk_location,
        &dtk_manifest,
        &[dtk::DTK_RELEASE_FILE],
        dtk::DTK_FILE_LIMIT,
    )
    .await?;
    let content = dtk_files
        .get(dtk::DTK_RELEASE_FILE)
        .cloned()
        .flatten()
        .ok_or_else(|| Error::DtkFileMissing {
            image: dtk_image.to_string(),
            path: dtk::DTK_RELEASE_FILE.into(),
        })?;
    let release = dtk::parse(&content).map_err(|reason| Error::DtkFileMalformed {
        image: dtk_image.to_string(),
        path: dtk::DTK_RELEASE_FILE.into(),
        reason,
    })?;
    Ok((release, dtk_manifest.total_size(), dtk_is_list))
}

/// `--arch` asked for one architecture, and a single-architecture payload of another is not
/// that release: it is bad input, not a warning (without `--arch`, the payload's own
/// architecture is taken and said).
pub fn require_arch(answer: &DtkAnswer, asked: Option<Arch>) -> Result<()> {
    match asked {
        Some(asked) if answer.architecture != asked.rpm() => Err(Error::invalid(
            format!(
                "{} is a single-architecture {} release, not {asked}",
                answer.release_image, answer.architecture
            ),
            format!(
                "give the {asked} (or multi) payload's pull spec, or leave --arch out to use {}",
                answer.architecture
            ),
        )),
        _ => Ok(()),
    }
}

/// Resolve a release image to its DTK and kernel. `image` may be a tag or a digest reference.
pub async fn resolve(
    registry: &Registry,
    cache: &Cache,
    image: &ImageRef,
    arch: Arch,
) -> Result<(DtkAnswer, Resolution)> {
    const ROLE: &str = "release image";
    // A digest reference can be answered from the cache without touching the registry.
    let (top_digest, fetched) = match &image.digest {
        Some(digest) => (digest.clone(), None),
        None => {
            let fetched = registry
                .manifest_located(image)
                .await
                .map_err(|e| e.with_role(ROLE))?;
            (fetched.0.digest.clone(), Some(fetched))
        }
    };
    let pinned = image.pinned(&top_digest);
    let cache_key = format!("{top_digest} {}", arch.goarch());
    if let Some(mut cached) = cache.get::<DtkAnswer>(CACHE_NAMESPACE, &cache_key) {
        cached.release_image = pinned.to_string();
        let resolution = Resolution {
            from_cache: true,
            warnings: cached
                .streams
                .iter()
                .filter_map(DtkStream::node_os_warning)
                .collect(),
            ..Default::default()
        };
        return Ok((cached, resolution));
    }

    // `location` is where the mirror rules found it: its layers come from there too.
    let (fetched, location) = match fetched {
        Some(f) => f,
        None => registry
            .manifest_located(&pinned)
            .await
            .map_err(|e| e.with_role(ROLE))?,
    };
    let location = location.pinned(&top_digest);
    let (release_manifest, release_is_list) =
        platform_manifest(registry, &location, &fetched.body, arch.goarch(), ROLE).await?;

    let files = read_files(
        registry,
        &location,
        &release_manifest,
        &[payload::IMAGE_REFERENCES, payload::RELEASE_METADATA],
        payload::METADATA_LIMIT,
    )
    .await?;
    let not_payload = |reason: String| Error::NotAReleasePayload {
        image: pinned.to_string(),
        reason,
    };
    let references = files
        .get(payload::IMAGE_REFERENCES)
        .cloned()
        .flatten()
        .ok_or_else(|| not_payload(format!("it has no /{}", payload::IMAGE_REFERENCES)))?;
    let references = payload::parse_image_references(&references).map_err(not_payload)?;
    let metadata = match files.get(payload::RELEASE_METADATA).cloned().flatten() {
        Some(bytes) => Some(payload::parse_release_metadata(&bytes).map_err(not_payload)?),
        None => None,
    };
    let release_version = metadata
        .map(|m| m.version)
        .unwrap_or_else(|| references.name.clone());

    let dtk_spec =
        references
            .image_for(payload::DTK_TAG)
            .ok_or_else(|| Error::NoDriverToolkitTag {
                image: pinned.to_string(),
                tag: payload::DTK_TAG.into(),
            })?;
    let dtk_reference = |tag: &str, spec: &str| -> Result<ImageRef> {
        spec.parse().map_err(|e| {
            not_payload(format!(
                "its {tag} reference is not an image reference: {e}"
            ))
        })
    };
    let dtk_image = dtk_reference(payload::DTK_TAG, dtk_spec)?;
    // 5.x payloads carry a RHEL 10 stream beside the RHEL 9 one (ocp-release.md §2.4).
    let rhel10_image = references
        .image_for(payload::DTK_10_TAG)
        .map(|spec| dtk_reference(payload::DTK_10_TAG, spec))
        .transpose()?;
    // The node OS images in parallel with the driver-toolkits: no added round trips.
    let (first, rhel10, os9, os10) = futures::join!(
        read_dtk(registry, &dtk_image, arch),
        async {
            match &rhel10_image {
                Some(image) => Some(read_dtk(registry, image, arch).await),
                None => None,
            }
        },
        nodeos::read(registry, &references, false, arch),
        async {
            match &rhel10_image {
                Some(_) => Some(nodeos::read(registry, &references, true, arch).await),
                None => None,
            }
        }
    );
    let (release, mut dtk_size, dtk_is_list) = first?;
    let rhel10 = rhel10.transpose()?;

    // A list was filtered by `arch`; a single image is whatever it is, and its kernel says what.
    let mut warnings = Vec::new();
    let kernel_arch = dtk::kernel_arch(&release.kernel_version).and_then(Arch::from_rpm);
    let architecture = match kernel_arch {
        Some(found) if !release_is_list && !dtk_is_list && found != arch => {
            warnings.push(format!(
                "the driver-toolkit kernel is built for {found}, not {arch}: {pinned} is a \
                 single-architecture {found} release"
            ));
            found
        }
        _ => arch,
    };

    let mut streams = vec![DtkStream::of(&dtk_image, &release, os9)];
    if let (Some(image), Some((release10, size10, _)), Some(os10)) = (&rhel10_image, &rhel10, os10)
    {
        streams.push(DtkStream::of(image, release10, os10));
        dtk_size += size10;
    }
    // A node OS that could not be read this time is read again next time.
    let cacheable = !streams
        .iter()
        .any(|s| s.node_os.as_ref().is_some_and(|os| os.transient));
    let answer = DtkAnswer {
        release_image: pinned.to_string(),
        release_digest: top_digest,
        release_version,
        architecture: architecture.rpm().to_string(),
        dtk_image: dtk_image.to_string(),
        kernel_version: release.kernel_version,
        rt_kernel_version: release.rt_kernel_version,
        rhel_version: release.rhel_version,
        node_os: streams[0].node_os.clone(),
        streams,
    };
    if cacheable && let Err(e) = cache.put(CACHE_NAMESPACE, &cache_key, &answer) {
        warnings.push(format!("could not write the cache: {e}"));
    }
    warnings.extend(answer.streams.iter().filter_map(DtkStream::node_os_warning));
    let resolution = Resolution {
        from_cache: false,
        release_size: release_manifest.total_size(),
        dtk_size,
        warnings,
    };
    Ok((answer, resolution))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_pull_specs() {
        let repo = parse_release_repo(None).unwrap();
        let v = ReleaseSpec::parse("4.19.0").unwrap();
        assert_eq!(
            v.image(&repo, Payload::Single(Arch::Aarch64)).to_string(),
            "quay.io/openshift-release-dev/ocp-release:4.19.0-aarch64"
        );
        assert_eq!(
            ReleaseSpec::parse("4.20.0-rc.2")
                .unwrap()
                .image(&repo, Payload::Multi)
                .tag
                .as_deref(),
            Some("4.20.0-rc.2-multi")
        );
        let p = ReleaseSpec::parse("mirror.local:5000/ocp/release:4.19.0-x86_64").unwrap();
        assert_eq!(
            p.image(&repo, Payload::Single(Arch::X86_64)).registry,
            "mirror.local:5000"
        );
        for bad in [
            "4.19",
            "latest",
            "4.19.0.1",
            "v4.19.0",
            "",
            "4.19.0-",
            "ocp-release:4.19.0",
        ] {
            let err = ReleaseSpec::parse(bad).unwrap_err();
            assert_eq!(
                err.exit_status(),
                crate::error::ExitStatus::BadInput,
                "{bad}"
            );
        }
        assert!(parse_release_repo(Some("quay.io/a/b:tag")).is_err());
        assert!(parse_release_repo(Some("not a repo")).is_err());
    }

    #[test]
    fn payload_from_nodes() {
        let nodes = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            payload_for_nodes(&nodes(&["arm64", "arm64"])),
            Some((Payload::Single(Arch::Aarch64), Arch::Aarch64))
        );
        assert_eq!(
            payload_for_nodes(&nodes(&["amd64", "arm64", "arm64"])),
            Some((Payload::Multi, Arch::Aarch64))
        );
        assert_eq!(
            payload_for_nodes(&nodes(&["arm64", "amd64"])),
            Some((Payload::Multi, Arch::X86_64))
        );
        assert_eq!(payload_for_nodes(&nodes(&["riscv64"])), None);
        assert_eq!(payload_for_nodes(&[]), None);
    }

    #[test]
    fn arch_names() {
        assert_eq!(Arch::from_goarch("arm64"), Some(Arch::Aarch64));
        assert_eq!(Arch::from_rpm("x86_64"), Some(Arch::X86_64));
        assert_eq!(Arch::S390x.goarch(), "s390x");
        assert_eq!(Arch::from_goarch("riscv64"), None);
    }
}
