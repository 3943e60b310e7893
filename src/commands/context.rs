//! What `preflight` and `check` both set up from their flags: a registry client with the
//! cluster's credentials and mirrors, and the release resolved as the cluster would see it.

use std::collections::BTreeMap;

use crate::cli::RegistryArgs;
use crate::cluster::Cluster;
use crate::cluster::clusterversion::{self, Risk};
use crate::error::{Error, Result};
use crate::module::kernels::NodeInfo;
use crate::output::{self, Term};
use crate::registry::Registry;
use crate::registry::cache::Cache;
use crate::registry::reference::ImageRef;
use crate::release::{self, Arch, DtkAnswer, Payload, ReleaseSpec};

const PULL_SECRET_LABEL: &str = "the cluster pull secret openshift-config/pull-secret";

/// `--timeout`: one deadline for the whole command, from the first request to the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    limit: Option<std::time::Duration>,
    at: Option<tokio::time::Instant>,
}

impl Deadline {
    pub fn new(limit: Option<std::time::Duration>) -> Self {
        Deadline {
            limit,
            at: limit.map(|l| tokio::time::Instant::now() + l),
        }
    }

    /// Run `work`, giving up when the deadline passes (exit 4, naming the step under way).
    pub async fn bound<T>(
        &self,
        term: &Term,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let (Some(at), Some(after)) = (self.at, self.limit) else {
            return work.await;
        };
        match tokio::time::timeout_at(at, work).await {
            Ok(result) => result,
            Err(_) => {
                let step = term
                    .current_step()
                    .unwrap_or_else(|| "getting ready".into());
                term.step_done();
                Err(Error::DeadlineExceeded { after, step })
            }
        }
    }

    /// The whole `--timeout`.
    pub fn limit(&self) -> Option<std::time::Duration> {
        self.limit
    }

    /// What is left of it (None: no deadline).
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.at
            .map(|at| at.saturating_duration_since(tokio::time::Instant::now()))
    }
}

/// `--release` and `--release-repo`, checked before anything is read.
pub fn release_flags(
    release: Option<&str>,
    release_repo: &crate::cli::ReleaseRepoArgs,
) -> Result<(Option<ReleaseSpec>, ImageRef)> {
    let spec = release.map(ReleaseSpec::parse).transpose()?;
    let repo = release::parse_release_repo(Some(&release_repo.release_repo))?;
    Ok((spec, repo))
}

/// What every cluster of a run shares: the disk cache, the images and driver-toolkits read, and
/// the releases resolved. One cluster's run has its own; a fleet's clusters share one.
#[derive(Clone)]
pub struct Shared {
    pub cache: Cache,
    pub reads: std::sync::Arc<crate::module::check::Reads>,
    pub releases: release::Memo,
    /// The release images already said: a fleet says each once, not once per cluster.
    said: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Shared {
    pub fn new(cache: Cache) -> Self {
        Shared {
            cache,
            reads: Default::default(),
            releases: Default::default(),
            said: Default::default(),
        }
    }

    /// `say_release`, once per release image for the whole run, in the run's own voice.
    pub fn say_release(&self, term: &Term, answer: &DtkAnswer) {
        let first = self
            .said
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(answer.release_image.clone());
        if first {
            say_release(&term.fleet(), answer);
        }
    }
}

/// The registry clients of a run, sharing connections and what they learn: one for release
/// payloads (local auth files first: the user's own credentials win), one for Module images
/// (the cluster's pull secret first: what the nodes use comes first; a Module's
/// `imageRepoSecret` goes before both).
pub struct Registries {
    pub release: Registry,
    pub modules: Registry,
}

/// The registry clients for a run: local auth files and the cluster's pull secret, the mirror
/// files and the cluster's mirror sets. With `base` (a fleet), they share its connections,
/// what it learnt and its byte counts.
pub async fn registries(
    cluster: Option<&Cluster>,
    args: &RegistryArgs,
    request_timeout: Option<std::time::Duration>,
    base: Option<&Registry>,
    term: &Term,
) -> Result<Registries> {
    let local = super::local_credentials(args)?;
    let mut mirrors = super::file_mirrors(args)?;
    let mut release_credentials = local.clone();
    let mut module_credentials = local;
    if let Some(cluster) = cluster {
        let (pull_secret, (cluster_sets, notes)) =
            tokio::join!(cluster.pull_secret(), cluster.mirror_sets());
        match pull_secret {
            Ok(entries) => {
                release_credentials.push_entries(PULL_SECRET_LABEL, entries.clone());
                module_credentials = module_credentials.with_first(PULL_SECRET_LABEL, entries);
                term.info(
                    "registry credentials: local auth files, then the cluster pull secret \
                     (Module images: the Module's imageRepoSecret, the cluster pull secret, then \
                     local auth files)",
                );
            }
            Err(reason) => term.info(&format!("not using the cluster pull secret: {reason}")),
        }
        for note in notes {
            term.info(&note);
        }
        mirrors.add(cluster_sets);
    }
    if !mirrors.is_empty() {
        term.info(&format!("applying {} image mirror rules", mirrors.len()));
    }
    let release = match base {
        Some(base) => base
            .with_access(release_credentials, &[])
            .with_mirrors(mirrors),
        None => super::registry(args, request_timeout, release_credentials, mirrors, term)?,
    };
    let modules = release.with_access(module_credentials, &[]);
    Ok(Registries { release, modules })
}

fn describe_arches(arches: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in arches {
        *counts.entry(a).or_default() += 1;
    }
    counts
        .iter()
        .map(|(a, n)| format!("{n} {a}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cluster's nodes: None without a cluster, or when they may not be listed (said so).
pub async fn nodes(cluster: Option<&Cluster>, term: &Term) -> Result<Option<Vec<NodeInfo>>> {
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    let nodes = cluster.nodes().await?;
    if nodes.is_none() {
        term.warn(
            "listing nodes is forbidden; assuming x86_64 nodes of the standard kernel (pass --arch)",
        );
    }
    Ok(nodes)
}

/// The payload to read and the architecture of the driver-toolkit: `--arch`, else the nodes'.
pub fn payload(nodes: Option<&[NodeInfo]>, arch: Option<Arch>, term: &Term) -> (Payload, Arch) {
    if let Some(arch) = arch {
        return (Payload::Single(arch), arch);
    }
    let Some(nodes) = nodes else {
        return (Payload::Single(Arch::X86_64), Arch::X86_64);
    };
    let arches: Vec<String> = nodes.iter().map(|n| n.goarch.clone()).collect();
    match release::payload_for_nodes(&arches) {
        Some((payload, platform)) => {
            let payload_name = match payload {
                Payload::Multi => format!("multi payload (driver-toolkit for {platform})"),
                Payload::Single(a) => format!("{a} payload"),
            };
            term.info(&format!(
                "nodes: {}; using the {payload_name}",
                describe_arches(&arches)
            ));
            (payload, platform)
        }
        None => {
            term.warn("no node reports a known architecture; assuming x86_64 (pass --arch)");
            (Payload::Single(Arch::X86_64), Arch::X86_64)
        }
    }
}

/// The architecture a kernel's check reads images for, as Go names it: `--arch`, else the
/// kernel's own name (`….x86_64`), else the cluster's nodes, else x86_64.
pub fn kernel_goarch(
    kernel: &str,
    arch: Option<Arch>,
    nodes: Option<&[NodeInfo]>,
    term: &Term,
) -> String {
    arch.or_else(|| release::dtk::kernel_arch(kernel).and_then(Arch::from_rpm))
        .unwrap_or_else(|| payload(nodes, None, term).1)
        .goarch()
        .to_string()
}

/// The architecture of a resolved release, as Go names it.
pub fn release_goarch(answer: &DtkAnswer) -> String {
    Arch::from_rpm(&answer.architecture)
        .unwrap_or(Arch::X86_64)
        .goarch()
        .to_string()
}

/// The image the cluster itself would upgrade to, when its ClusterVersion lists the version
/// (digest-pinned), with the risks it knows of; otherwise the tag in the release repository.
async fn release_image(
    cluster: Option<&Cluster>,
    spec: &ReleaseSpec,
    release_repo: &ImageRef,
    payload: Payload,
    term: &Term,
) -> (ImageRef, Vec<Risk>) {
    let fallback = spec.image(release_repo, payload);
    let (Some(version), Some(cluster)) = (spec.version(), cluster) else {
        return (fallback, Vec::new());
    };
    let cluster_version = match cluster.cluster_version().await {
        Ok(cv) => cv,
        Err(reason) => {
            term.info(&format!("{reason}; using {fallback}"));
            return (fallback, Vec::new());
        }
    };
    let Some(found) = clusterversion::find_release(&cluster_version, version) else {
        term.info(&format!(
            "{version} is not in the cluster's ClusterVersion (desired, availableUpdates, \
             conditionalUpdates, history); using {fallback}"
        ));
        return (fallback, Vec::new());
    };
    for risk in &found.risks {
        term.warn(&format!(
            "{version} is a conditional update with risk {}: {} ({})",
            risk.name, risk.message, risk.url
        ));
    }
    match found.image.parse() {
        Ok(image) => {
            term.info(&format!(
                "{version}: {} (ClusterVersion {})",
                found.image, found.found_in
            ));
            (image, found.risks)
        }
        Err(e) => {
            term.warn(&format!(
                "ClusterVersion lists {version} with an unusable image {e}; using {fallback}"
            ));
            (fallback, found.risks)
        }
    }
}

/// Which release image was read: always said, the digest above all.
pub fn say_release(term: &Term, answer: &DtkAnswer) {
    term.say(&format!(
        "release {} ({}): {}",
        answer.release_version, answer.architecture, answer.release_image
    ));
}

/// Release → DTK → kernel, as the cluster would find the release (ClusterVersion digests,
/// mirrors, pull secret), with the risks ClusterVersion knows of; `say_release` says which
/// image that was. The step under way before it is the step again after it.
#[allow(clippy::too_many_arguments)]
pub async fn resolve_release(
    cluster: Option<&Cluster>,
    nodes: Option<&[NodeInfo]>,
    registry: &Registry,
    shared: &Shared,
    spec: &ReleaseSpec,
    release_repo: &ImageRef,
    arch: Option<Arch>,
    term: &Term,
) -> Result<(DtkAnswer, Vec<Risk>)> {
    let (payload, platform) = payload(nodes, arch, term);
    let (image, risks) = release_image(cluster, spec, release_repo, payload, term).await;
    let before = term.current_step();
    term.step(format!(
        "reading release {image} from registry {}",
        image.registry
    ));
    let resolved = shared
        .releases
        .resolve(registry, &shared.cache, &image, platform)
        .await;
    match before {
        Some(step) => term.resume_step(step),
        None => term.step_done(),
    }
    let (answer, resolution) = resolved?;
    release::require_arch(&answer, arch)?;
    for warning in &resolution.warnings {
        term.warn(warning);
    }
    output::dtk::report_transfer(term, &resolution, registry.transferred());
    Ok((answer, risks))
}

/// The release's real-time kernel, or why there is none.
pub fn rt_kernel(answer: &DtkAnswer) -> Result<String> {
    answer.rt_kernel_version.clone().ok_or_else(|| {
        Error::invalid(
            format!(
                "release {} has no real-time kernel for {} (its driver-toolkit {} has no RT_KERNEL_VERSION)",
                answer.release_version, answer.architecture, answer.dtk_image
            ),
            "drop --rt: OpenShift ships the RT kernel for x86_64 only",
        )
    })
}
