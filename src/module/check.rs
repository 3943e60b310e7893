//! The check itself: every Module for every kernel, resolved as KMM resolves it and looked up in
//! its image as the worker will load it. Read-only; core code (no printing): what it wants to say
//! goes through `notify`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::deep::{self, CachedKo, Deep, KernelFacts, Loaded};
use super::kernels::{self, Boot, NodeInfo, Variant};
use super::ko;
use super::layout::{self, Finding, Indexes, Wanted};
use super::mapping::{self, Resolved};
use super::signature::{self, Status, Trust, TrustedCert};
use super::spec::{Module, Sign, Tls};
use crate::error::Error;
use crate::registry::Registry;
use crate::registry::auth::AuthEntries;
use crate::registry::cache::Cache;
use crate::registry::files;
use crate::registry::manifest;
use crate::registry::reference::ImageRef;
use crate::release::DtkStream;

mod in_vm;
pub use in_vm::BootConfig;

const CACHE_NAMESPACE: &str = "kmod-v1";
/// `--deep`: the parsed modules of an image, and a driver-toolkit kernel's exports and vermagic.
const DEEP_NAMESPACE: &str = "kmod-deep-v3";
/// `--boot`: each module file of an image, decompressed, per image digest and path.
const FILES_NAMESPACE: &str = "kmod-files-v1";
const KERNEL_NAMESPACE: &str = "dtk-kernel-v2";
/// Module.symvers is a few MiB at most (RHEL 9: ~1.5 MiB).
const SYMVERS_LIMIT: u64 = 64 * 1024 * 1024;
/// How a missing image without build or sign ends in KMM ≥ 2.4 (kmm-api.md §4.2).
const WAITS_FOREVER: &str = "KMM 2.4+ would wait for it forever";
const ROLE: &str = "kmod image";
/// Image checks under way at once. Each costs a few round trips and little bandwidth, so on a
/// distant registry the wait is latency: enough at once that 50 images take two rounds.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// An image config is a few KiB.
const CONFIG_LIMIT: u64 = 1024 * 1024;
/// Symlinks above `dirName` followed at most.
const MAX_REDIRECTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// `--deep`: the image has everything, and the kernel's own checks accept every module
    /// (`--boot`: the target kernel loaded them).
    Loads,
    /// `--boot`: the target kernel linked every module, but an init returned an error (a
    /// driver without its device): not a failure, and not a load proven either.
    Inconclusive,
    /// The image has everything modprobe needs for the kernel.
    Ready,
    /// The image does not exist, and KMM has what it needs to build it.
    WillBuild,
    /// The image does not exist, and KMM has what it needs to sign its unsigned image.
    WillSign,
    /// A node would not load it.
    Failed,
    /// Could not be checked from here.
    Unknown,
}

impl Verdict {
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            Verdict::Loads
                | Verdict::Inconclusive
                | Verdict::Ready
                | Verdict::WillBuild
                | Verdict::WillSign
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Loads => "Loads",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Ready => "Ready",
            Verdict::WillBuild => "WillBuild",
            Verdict::WillSign => "WillSign",
            Verdict::Failed => "Failed",
            Verdict::Unknown => "Unknown",
        })
    }
}

/// One Module for one kernel, as `-o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub kernel: String,
    /// The image the mapping resolved to (None without a matching mapping).
    pub image: Option<String>,
    pub verdict: Verdict,
    pub reason: String,
    /// KMM itself would refuse the Module (a regexp that does not compile, a bad template).
    #[serde(skip)]
    pub invalid: bool,
    /// The image does not exist and nothing would build or sign it: KMM ≥ 2.4 never finishes.
    #[serde(skip)]
    pub waits_forever: bool,
    /// `--deep`: what the kernel's own checks say about each module file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep: Option<Deep>,
    /// The driver-toolkit's kernel, where the nodes will boot another one (`kernel`): what KMM
    /// checks and builds for.
    #[serde(rename = "dtkKernel", skip_serializing_if = "Option::is_none")]
    pub dtk_kernel: Option<String>,
    /// A day-1 BootModuleConfig rather than a Module.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub day1: bool,
    /// `--boot`: what the target kernel itself said, loading the files in a VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<crate::boot::Boot>,
}

/// A kernel to check, and the architecture of the nodes that boot it (`amd64`, `arm64`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kernel: String,
    pub goarch: String,
    /// The driver-toolkit image of the kernel (from the release), for `--deep`.
    pub dtk: Option<String>,
    /// The driver-toolkit's kernel where the nodes boot `kernel` instead (the release's node OS
    /// and driver-toolkit disagree).
    pub dtk_kernel: Option<String>,
}

impl Target {
    /// The release's target for nodes of `goarch` that boot `kernel`.
    pub fn in_release(streams: &[DtkStream], kernel: String, goarch: &str) -> Target {
        Target {
            dtk: dtk_of(streams, &kernel),
            dtk_kernel: streams.iter().find_map(|s| s.dtk_kernel_for(&kernel)),
            kernel,
            goarch: goarch.to_string(),
        }
    }
}

/// How each Module's kernels are chosen.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The same kernels for every Module (`--kernel`).
    Kernels(Vec<Target>),
    /// The release's kernels each Module's nodes will boot (`--release`).
    Release {
        nodes: Option<Vec<NodeInfo>>,
        streams: Vec<DtkStream>,
        goarch: String,
        force_rt: bool,
    },
}

impl Plan {
    pub fn jobs<'a>(&self, modules: &'a [Module]) -> Vec<Job<'a>> {
        match self {
            Plan::Kernels(targets) => Job::all(modules, targets),
            Plan::Release {
                nodes,
                streams,
                goarch,
                force_rt,
            } => Job::for_release(modules, nodes.as_deref(), streams, goarch, *force_rt),
        }
    }
}

/// One Module against one kernel, and what is worth saying about why that kernel.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub module: &'a Module,
    pub target: Target,
    pub note: Option<String>,
}

impl<'a> Job<'a> {
    /// Every Module against every target (`--kernel`).
    pub fn all(modules: &'a [Module], targets: &[Target]) -> Vec<Job<'a>> {
        modules
            .iter()
            .flat_map(|module| {
                targets.iter().map(move |target| Job {
                    module,
                    target: target.clone(),
                    note: None,
                })
            })
            .collect()
    }

    /// Every Module against the kernels of a release its nodes will boot (`--release`): the
    /// flavour of each selected node decides, `force_rt` makes it real-time for all. Without
    /// nodes (files, or nodes not readable) every Module gets the standard (or RT) kernel.
    pub fn for_release(
        modules: &'a [Module],
        nodes: Option<&[NodeInfo]>,
        streams: &[DtkStream],
        goarch: &str,
        force_rt: bool,
    ) -> Vec<Job<'a>> {
        let mut jobs = Vec::new();
        for module in modules {
            let planned = match nodes {
                Some(nodes) => {
                    kernels::for_module(&module.spec.selector, nodes, streams, goarch, force_rt)
                }
                None => {
                    let boot = Boot {
                        variant: if force_rt {
                            Variant::RealTime
                        } else {
                            Variant::Standard
                        },
                        ..Boot::STANDARD
                    };
                    match kernels::kernel_of(boot, streams) {
                        Ok(kernel) => kernels::ModuleKernels {
                            kernels: vec![(boot, kernel)],
                            note: None,
                        },
                        Err(reason) => kernels::ModuleKernels {
                            kernels: Vec::new(),
                            note: Some(reason),
                        },
                    }
                }
            };
            for (_, kernel) in planned.kernels {
                jobs.push(Job {
                    module,
                    target: Target::in_release(streams, kernel, goarch),
                    note: planned.note.clone(),
                });
            }
        }
        jobs
    }
}

/// The driver-toolkit that carries `kernel`'s devel files: the stream of that kernel, its RT
/// kernel, or a variant of it (`+64k`); for a node OS kernel that differs, its stream's
/// driver-toolkit all the same (the nearest devel files there are).
pub fn dtk_of(streams: &[DtkStream], kernel: &str) -> Option<String> {
    let is = |standard: &str, rt: Option<&str>| standard == kernel || rt == Some(kernel);
    streams
        .iter()
        .find(|s| is(&s.kernel_version, s.rt_kernel_version.as_deref()))
        .or_else(|| {
            streams
                .iter()
                .find(|s| kernel.starts_with(&format!("{}+", s.kernel_version)))
        })
        .or_else(|| {
            streams.iter().find(|s| {
                is(s.boot_kernel(), s.boot_rt_kernel())
                    || kernel.starts_with(&format!("{}+", s.boot_kernel()))
            })
        })
        .map(|s| s.dtk_image.clone())
}

/// A row for a kernel the nodes boot where the release's driver-toolkit has `dtk_kernel`: KMM
/// builds and signs for the driver-toolkit's kernel, so an image it would make is for a kernel
/// no node runs; any other verdict carries the warning.
fn skewed(row: &mut Row, dtk_kernel: &str) {
    row.dtk_kernel = Some(dtk_kernel.to_string());
    let kernel = &row.kernel;
    match row.verdict {
        Verdict::WillBuild | Verdict::WillSign => {
            let make = if row.verdict == Verdict::WillBuild {
                "build"
            } else {
                "sign"
            };
            row.verdict = Verdict::Failed;
            row.reason = format!(
                "KMM would {make} for {dtk_kernel} (the DTK's kernel) but the nodes will boot \
                 {kernel}: {}",
                row.reason
            );
        }
        _ => {
            row.reason = format!(
                "{} (warning: the release's driver-toolkit has {dtk_kernel}, not the nodes' \
                 kernel: KMM checks and builds for {dtk_kernel})",
                row.reason
            );
        }
    }
}

/// A driver-toolkit as `Checker::dtk_through_cache` found it.
enum DtkRead<T> {
    /// The cache answered.
    Cached(T),
    /// To be read: its digest, the digest its reference named, and its platform image.
    Image {
        digest: String,
        named: Option<String>,
        pinned: ImageRef,
        platform: Box<manifest::ImageManifest>,
    },
}

/// What a lookup of a Secret or ConfigMap found.
#[derive(Debug, Clone)]
pub enum Lookup<T> {
    Found(T),
    Missing,
    /// Forbidden, or the cluster did not answer: the reason.
    Unreadable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Secret,
    ConfigMap,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Secret => "Secret",
            ObjectKind::ConfigMap => "ConfigMap",
        })
    }
}

/// Where the Secrets and ConfigMaps that Modules name come from: the cluster, or files.
pub trait Objects: Send + Sync {
    /// The registry credentials of a `kubernetes.io/dockerconfigjson` or `dockercfg` Secret.
    fn registry_secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Lookup<AuthEntries>>;

    /// One data key of a Secret (the signing certificate's `cert`; never a private key).
    fn secret_entry<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Lookup<Vec<u8>>>;

    /// Whether an object exists (its content is not needed, and not read).
    fn exists<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Lookup<()>>;
}

/// Whether an image whose content does not matter exists for an architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    Exists,
    Missing,
    /// It exists but not for the nodes' architecture (or is no image).
    Unusable(String),
    Unknown(String),
}

/// What is known about one image.
#[derive(Debug, Clone)]
enum ImageState {
    /// It exists: what is inside, and with `--deep` the module files modprobe inserts.
    Found {
        finding: Finding,
        kos: Option<Result<Vec<CachedKo>, String>>,
    },
    /// Every location said it does not exist.
    Missing,
    /// It exists but no node of this architecture could use it.
    Unusable(String),
    /// Could not tell from here.
    Unknown(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    finding: Finding,
}

/// A driver-toolkit kernel in the cache: its vermagic and `Module.symvers` in compact form.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedKernel {
    vermagic: String,
    symvers: String,
}

type KernelCell = Arc<OnceCell<Result<Arc<KernelFacts>, String>>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ImageKey {
    image: String,
    goarch: String,
    wanted: Wanted,
    insecure: bool,
    /// Whose credentials and mirrors read it (`Registry::access_key`).
    access: u64,
}

/// The registry client a Module's images are read with, and why it may fail.
#[derive(Clone)]
struct Access {
    registry: Registry,
    /// Something that went wrong with the Module's own credentials, to explain a refusal.
    note: Option<String>,
}

/// One `imageRepoSecret`, read once however many Modules name it.
type SecretCell = Arc<OnceCell<Lookup<AuthEntries>>>;
type PresenceCell = Arc<OnceCell<Presence>>;
type CertCell = Arc<OnceCell<Result<Vec<TrustedCert>, String>>>;

/// What was read from registries, kept for the whole run: each image (and each
/// driver-toolkit kernel) is read once however many Modules, or clusters, use it. Reads made
/// with other credentials or mirrors are kept apart: what one cluster may read says nothing of
/// another's access.
#[derive(Default)]
pub struct Reads {
    images: Mutex<HashMap<ImageKey, Arc<OnceCell<ImageState>>>>,
    /// Images only needed to exist (device plugins): (image, goarch, access).
    present: Mutex<HashMap<(String, String, u64), PresenceCell>>,
    kernels: Mutex<HashMap<(String, String, String, u64), KernelCell>>,
    image_bytes: AtomicU64,
    images_read: AtomicU64,
    deep_bytes: Arc<AtomicU64>,
}

impl Reads {
    /// Totals over every checker sharing these reads.
    pub fn inspected(&self) -> Inspected {
        Inspected {
            images: self.images_read.load(Ordering::Relaxed),
            bytes: self.image_bytes.load(Ordering::Relaxed),
            dtk_bytes: self.deep_bytes.load(Ordering::Relaxed),
        }
    }
}

pub struct Checker {
    registry: Registry,
    cache: Cache,
    objects: Arc<dyn Objects>,
    notify: Arc<dyn Fn(String) + Send + Sync>,
    concurrency: usize,
    reads: Arc<Reads>,
    secrets: Mutex<HashMap<(String, String), SecretCell>>,
    /// `--deep`: judge every Ready Module's files against the driver-toolkit, and their
    /// signatures against these keys.
    deep: Option<Trust>,
    /// Each sign section's certificate, per certSecret.
    cert_secrets: Mutex<HashMap<(String, String), CertCell>>,
    /// `--boot`: load every Module the deep check read in the target kernel, in a VM.
    boot: Option<Arc<BootConfig>>,
    /// `--boot`: the Modules waiting for their kernel's VM.
    boot_queue: Mutex<Vec<in_vm::Candidate>>,
    /// `check_jobs` calls so far: a boot queue entry names its call and job.
    calls: AtomicU64,
    /// Every row decided so far, in the order decided: what a deadline leaves proven.
    decided: Mutex<Vec<Row>>,
    /// Reads under way per registry host. A read the deadline cut off stays counted: the
    /// registry it was waiting for is then named.
    waiting: Mutex<BTreeMap<String, usize>>,
}

/// Totals for `-v` and the benchmark: distinct images inspected and their compressed size, and
/// the driver-toolkit bytes `--deep` read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inspected {
    pub images: u64,
    pub bytes: u64,
    pub dtk_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The architecture a single-platform image's config names, when it is not `goarch`.
fn foreign_architecture(config: &[u8], goarch: &str) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c["architecture"].as_str().map(str::to_string))
        .filter(|a| !a.is_empty() && a != goarch)
}

/// The cache key of one module file of the image whose answer is cached under `image_key`.
fn file_key(image_key: &str, path: &str) -> String {
    format!("{image_key} {path}")
}

/// A reference without a registry host: the node resolves it through its registries.conf.
fn is_short_name(image: &str) -> bool {
    let first = image.split('/').next().unwrap_or_default();
    !image.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost")
}

impl Checker {
    pub fn new(
        registry: Registry,
        cache: Cache,
        objects: Arc<dyn Objects>,
        notify: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Self {
        Checker {
            registry,
            cache,
            objects,
            notify,
            concurrency: DEFAULT_CONCURRENCY,
            reads: Arc::default(),
            secrets: Mutex::default(),
            deep: None,
            cert_secrets: Mutex::default(),
            boot: None,
            boot_queue: Mutex::default(),
            calls: AtomicU64::new(0),
            decided: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    /// The rows decided so far (the last one of each Module and kernel), as `check_jobs`
    /// would order them: by Module, then kernel.
    pub fn decided(&self) -> Vec<Row> {
        let mut latest: BTreeMap<(String, String, String), Row> = BTreeMap::new();
        for row in lock(&self.decided).iter() {
            let key = (row.namespace.clone(), row.name.clone(), row.kernel.clone());
            latest.insert(key, row.clone());
        }
        latest.into_values().collect()
    }

    /// The registries with reads under way (or cut off by a deadline), sorted.
    pub fn waiting_on(&self) -> Vec<String> {
        lock(&self.waiting)
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// `read`, counted as waiting on `registry` until it ends (and for good if it never does).
    async fn waiting_for<T>(&self, registry: &str, read: impl Future<Output = T>) -> T {
        *lock(&self.waiting).entry(registry.to_string()).or_default() += 1;
        let answer = read.await;
        if let Some(n) = lock(&self.waiting).get_mut(registry) {
            *n = n.saturating_sub(1);
        }
        answer
    }

    /// `--deep`, with the keys signatures are verified against.
    pub fn with_deep(mut self, deep: Option<Trust>) -> Self {
        self.deep = deep;
        self
    }

    /// `--boot`, with what it needs to run the VM.
    pub fn with_boot(mut self, boot: Option<Arc<BootConfig>>) -> Self {
        self.boot = boot;
        self
    }

    /// Share what is read with other checkers (other clusters of a fleet).
    pub fn with_reads(mut self, reads: Arc<Reads>) -> Self {
        self.reads = reads;
        self
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn inspected(&self) -> Inspected {
        self.reads.inspected()
    }

    /// Check every Module for every target, concurrently; rows in Module, then target order.
    pub async fn check(&self, modules: &[Module], targets: &[Target]) -> Vec<Row> {
        self.check_jobs(&Job::all(modules, targets)).await
    }

    /// Check the jobs concurrently (bounded); rows in the jobs' order, each job's note after its
    /// reason.
    pub async fn check_jobs(&self, jobs: &[Job<'_>]) -> Vec<Row> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rows: Vec<(usize, Row)> = futures::stream::iter(jobs.iter().enumerate())
            .map(|(i, job)| async move {
                let mut row = self.check_one(job.module, &job.target, (call, i)).await;
                if let Some(note) = &job.note {
                    row.reason = format!("{} ({note})", row.reason);
                }
                lock(&self.decided).push(in_vm::until_booted(&row, self.boot.is_some()));
                (i, row)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        rows.sort_by_key(|(i, _)| *i);
        let mut rows: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
        if self.boot.is_some() {
            self.boot_all(call, &mut rows).await;
            lock(&self.decided).extend(rows.iter().cloned());
        }
        rows
    }

    async fn check_one(&self, module: &Module, target: &Target, job: (u64, usize)) -> Row {
        let row = Row {
            namespace: module.metadata.namespace.clone(),
            name: module.metadata.name.clone(),
            kernel: target.kernel.clone(),
            image: None,
            verdict: Verdict::Unknown,
            reason: String::new(),
            invalid: false,
            waits_forever: false,
            deep: None,
            dtk_kernel: None,
            boot: None,
            day1: module.day1,
        };
        let mut row = self.check_resolved(module, target, row, job).await;
        if let Some(dtk_kernel) = &target.dtk_kernel {
            skewed(&mut row, dtk_kernel);
        }
        row
    }

    async fn check_resolved(
        &self,
        module: &Module,
        target: &Target,
        mut row: Row,
        job: (u64, usize),
    ) -> Row {
        let Some(container) = module.container() else {
            row.reason = "the Module has no moduleLoader: nothing is loaded".into();
            return row;
        };
        let resolved = match mapping::resolve(
            container,
            &module.metadata.name,
            &module.metadata.namespace,
            &target.kernel,
        ) {
            Ok(Some(resolved)) => resolved,
            Ok(None) => {
                row.verdict = Verdict::Failed;
                row.reason = format!("no kernel mapping matches {}", target.kernel);
                return row;
            }
            Err(e) => {
                row.verdict = Verdict::Failed;
                row.invalid = true;
                row.reason = format!("KMM refuses this Module: {e}");
                return row;
            }
        };
        row.image = Some(resolved.image.clone());
        let modprobe = &container.modprobe;
        if modprobe.module_name.is_empty() {
            if modprobe
                .raw_args
                .as_ref()
                .is_some_and(|a| !a.load.is_empty())
            {
                row.reason = "modprobe.rawArgs is used: which module `modprobe` loads is not \
                              known to the check"
                    .into();
            } else {
                row.verdict = Verdict::Failed;
                row.invalid = true;
                row.reason = "KMM refuses this Module: modprobe has neither moduleName nor \
                              rawArgs.load"
                    .into();
            }
            return row;
        }
        let mut names = vec![modprobe.module_name.clone()];
        names.extend(modprobe.modules_loading_order.iter().cloned());
        let wanted = Wanted::new(
            modprobe.dir_name(),
            &target.kernel,
            names,
            &modprobe.firmware_path,
        );
        let access = self.access(module).await;
        let (verdict, reason, kos) = self
            .decide(module, &resolved, &wanted, &target.goarch, &access)
            .await;
        row.waits_forever = verdict == Verdict::Failed && reason.ends_with(WAITS_FOREVER);
        row.verdict = verdict;
        row.reason = reason;
        if row.verdict.is_ok() {
            self.device_plugin(&mut row, module, &target.goarch, &access)
                .await;
        }
        if let Some(trust) = &self.deep {
            if row.verdict == Verdict::Ready {
                if self.boot.is_some()
                    && let Some(Ok(files)) = &kos
                {
                    lock(&self.boot_queue).push(in_vm::Candidate::new(
                        job,
                        module,
                        target,
                        files.clone(),
                    ));
                }
                self.go_deep(&mut row, kos, target).await;
            }
            if row.deep.is_some() || row.verdict == Verdict::WillSign {
                self.judge_signatures(&mut row, module, resolved.sign.as_ref(), trust)
                    .await;
            }
        }
        row
    }

    /// The device plugin's images must exist for the nodes' architecture: without them the
    /// Module's pods never start, whatever its kernel module does.
    async fn device_plugin(&self, row: &mut Row, module: &Module, goarch: &str, access: &Access) {
        for (what, image) in module.device_plugin_images() {
            match self.present(image, goarch, access).await {
                Presence::Exists => {}
                Presence::Missing => {
                    row.verdict = Verdict::Failed;
                    row.reason = format!("the {what} {image} does not exist");
                    return;
                }
                Presence::Unusable(reason) => {
                    row.verdict = Verdict::Failed;
                    row.reason = format!("the {what} {image} cannot run here: {reason}");
                    return;
                }
                Presence::Unknown(reason) => {
                    row.verdict = Verdict::Unknown;
                    row.reason = format!(
                        "{}; but whether the {what} {image} exists is not known: {reason}",
                        row.reason
                    );
                    return;
                }
            }
        }
    }

    /// Whether `image` exists for `goarch` (its manifest, and for a single-platform image its
    /// config's architecture), read once per run.
    async fn present(&self, image: &str, goarch: &str, access: &Access) -> Presence {
        let key = (
            image.to_string(),
            goarch.to_string(),
            access.registry.access_key(),
        );
        let cell = lock(&self.reads.present).entry(key).or_default().clone();
        cell.get_or_init(|| async {
            let host = image.split('/').next().unwrap_or(image);
            self.waiting_for(host, self.look_for(image, goarch, access))
                .await
        })
        .await
        .clone()
    }

    async fn look_for(&self, image: &str, goarch: &str, access: &Access) -> Presence {
        if is_short_name(image) {
            return Presence::Unknown(format!(
                "{image} names no registry: the node resolves it through its registries.conf"
            ));
        }
        let reference: ImageRef = match image.parse() {
            Ok(r) => r,
            Err(e) => return Presence::Unusable(format!("not a valid image reference: {e}")),
        };
        let registry = &access.registry;
        let (raw, location) = match registry.manifest_located(&reference).await {
            Ok(found) => found,
            Err(Error::ImageNotFound { .. })
            | Err(Error::MirrorsFailed {
                all_not_found: true,
                ..
            }) => return Presence::Missing,
            Err(e) => return Presence::Unknown(e.to_string()),
        };
        let pinned = location.pinned(&raw.digest);
        let (platform, was_list) = match files::platform_manifest(
            registry,
            &pinned,
            &raw.body,
            goarch,
            "device plugin image",
        )
        .await
        {
            Ok(found) => found,
            Err(e @ (Error::NoPlatform { .. } | Error::UnsupportedManifest { .. })) => {
                return Presence::Unusable(e.to_string());
            }
            Err(e) => return Presence::Unknown(e.to_string()),
        };
        if was_list {
            return Presence::Exists;
        }
        match files::small_blob(registry, &pinned, &platform.config, CONFIG_LIMIT).await {
            Ok(config) => match foreign_architecture(&config, goarch) {
                Some(arch) => Presence::Unusable(format!(
                    "it is a linux/{arch} image; the nodes are linux/{goarch}"
                )),
                None => Presence::Exists,
            },
            Err(e) => Presence::Unknown(e.to_string()),
        }
    }

    /// The certificate of a Module's sign section (its certSecret's `cert`), read once per
    /// Secret.
    async fn sign_certs(&self, module: &Module, sign: &Sign) -> Result<Vec<TrustedCert>, String> {
        let namespace = &module.metadata.namespace;
        let Some(name) = sign
            .cert_secret
            .as_ref()
            .map(|s| s.name.clone())
            .filter(|n| !n.is_empty())
        else {
            return Err("the sign section names no certSecret".into());
        };
        let cell = lock(&self.cert_secrets)
            .entry((namespace.clone(), name.clone()))
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let origin = format!("Secret {namespace}/{name} (certSecret)");
            match self.objects.secret_entry(namespace, &name, "cert").await {
                Lookup::Found(bytes) => TrustedCert::parse(&bytes, &origin),
                Lookup::Missing => Err(format!("{origin} does not exist")),
                Lookup::Unreadable(reason) => Err(format!("{origin}: {reason}")),
            }
        })
        .await
        .clone()
    }

    /// `--deep`: what each module file's signature proves, and the verdict where it matters: a
    /// Module that signs must be signed by its own certificate, and with `--secure-boot` every
    /// file must verify against a key the nodes trust. A WillSign Module's certificate must be
    /// one the kernel can verify with.
    async fn judge_signatures(
        &self,
        row: &mut Row,
        module: &Module,
        sign: Option<&Sign>,
        trust: &Trust,
    ) {
        let own = match sign {
            Some(sign) => Some(self.sign_certs(module, sign).await),
            None => None,
        };
        if row.verdict == Verdict::WillSign {
            match &own {
                Some(Ok(certs)) => match certs.iter().find_map(TrustedCert::key_problem) {
                    Some(problem) => {
                        row.verdict = Verdict::Failed;
                        row.reason = format!(
                            "KMM would sign with a certificate the kernel cannot verify with: {problem}"
                        );
                    }
                    None => {
                        let names: Vec<&str> = certs.iter().map(|c| c.subject.as_str()).collect();
                        row.reason = format!(
                            "{}; its certificate ({}) is one the kernel verifies with",
                            row.reason,
                            names.join(", ")
                        );
                    }
                },
                Some(Err(reason)) => {
                    row.reason = format!(
                        "{}; its signing certificate was not checked: {reason}",
                        row.reason
                    );
                }
                None => {}
            }
            return;
        }
        let Some(deep) = row.deep.as_mut() else {
            return;
        };
        let own_certs: &[TrustedCert] = match &own {
            Some(Ok(certs)) => certs,
            _ => &[],
        };
        let all: Vec<TrustedCert> = own_certs
            .iter()
            .chain(trust.certs.iter())
            .cloned()
            .collect();
        let own_error = match &own {
            Some(Err(reason)) => Some(reason.clone()),
            _ => None,
        };
        // "file: why" for every file that fails a requirement; proven unless the only doubt is
        // a signer that may be the unreadable certSecret's.
        let mut wanting: Vec<String> = Vec::new();
        let mut proven = false;
        for file in &mut deep.files {
            let verified = signature::verify(file.appended.as_ref(), &all);
            let name = file.path.rsplit('/').next().unwrap_or(&file.path);
            let by_own = own
                .is_some()
                .then(|| signature::verify(file.appended.as_ref(), own_certs));
            let failing = match by_own {
                Some(by_own) if by_own.status != Status::Valid => Some(by_own),
                _ if trust.secure_boot && verified.status != Status::Valid => {
                    Some(verified.clone())
                }
                _ => None,
            };
            if let Some(failing) = failing {
                proven |= own_error.is_none() || failing.status != Status::UnknownSigner;
                wanting.push(format!("{name}: {}", failing.reason));
            }
            file.signature = Some(verified);
        }
        if wanting.is_empty() {
            if row.verdict == Verdict::Loads && (sign.is_some() || trust.secure_boot) {
                let by: Vec<String> = deep
                    .files
                    .iter()
                    .filter_map(|f| f.signature.as_ref()?.verified_by.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                row.reason = format!("{}; signed by {}", row.reason, by.join(", "));
            }
            return;
        }
        let what = if trust.secure_boot {
            "the nodes boot with Secure Boot and would refuse it (\"Required key not available\")"
        } else {
            "the Module signs its modules, but the image's do not verify against its certificate"
        };
        let problems = wanting.join("; ");
        if row.verdict == Verdict::Failed {
            row.reason = format!("{}; also {what}: {problems}", row.reason);
        } else if !proven && let Some(error) = own_error {
            row.verdict = Verdict::Unknown;
            row.reason = format!(
                "whether the signatures are the Module's own is not known: {error} ({problems})"
            );
        } else {
            row.verdict = Verdict::Failed;
            row.reason = format!("{what}: {problems}");
        }
    }

    /// `--deep` for a Ready row: the kernel's own load checks on every file modprobe inserts.
    async fn go_deep(
        &self,
        row: &mut Row,
        kos: Option<Result<Vec<CachedKo>, String>>,
        target: &Target,
    ) {
        let not_proven = |reason: String| {
            format!(
                "the files are there, but whether the kernel accepts them is not known: {reason}"
            )
        };
        let kos = match kos {
            Some(Ok(kos)) => kos,
            Some(Err(reason)) => {
                row.verdict = Verdict::Unknown;
                row.reason = not_proven(reason);
                return;
            }
            None => {
                row.verdict = Verdict::Unknown;
                row.reason = not_proven("the module files were not read".into());
                return;
            }
        };
        let facts = match self.kernel_facts(target).await {
            Ok(facts) => facts,
            Err(reason) => {
                row.verdict = Verdict::Unknown;
                row.reason = not_proven(reason);
                return;
            }
        };
        let loaded: Vec<Loaded<'_>> = kos
            .iter()
            .map(|k| Loaded {
                path: &k.path,
                ko: k.ko.as_ref().map_err(String::as_str),
            })
            .collect();
        let judged = deep::judge(&loaded, &facts);
        if judged.mismatches.is_empty() {
            row.verdict = Verdict::Loads;
            let files = judged.files.len();
            row.reason = format!(
                "{}; the kernel accepts {} (vermagic, {} symbol CRCs against {}'s Module.symvers)",
                row.reason,
                if files == 1 {
                    "it".to_string()
                } else {
                    format!("all {files} files")
                },
                judged.symbols,
                target.kernel
            );
        } else {
            row.verdict = Verdict::Failed;
            let shown: Vec<&str> = judged
                .mismatches
                .iter()
                .take(3)
                .map(|m| m.reason.as_str())
                .collect();
            let more = judged.mismatches.len().saturating_sub(shown.len());
            row.reason = if more > 0 {
                format!("{} (and {more} more)", shown.join("; "))
            } else {
                shown.join("; ")
            };
        }
        row.deep = Some(judged);
    }

    /// The target kernel's exports and vermagic, read once per driver-toolkit and kernel (and
    /// kept in the cache per driver-toolkit digest).
    async fn kernel_facts(&self, target: &Target) -> Result<Arc<KernelFacts>, String> {
        let Some(dtk) = target.dtk.clone() else {
            return Err(format!(
                "no driver-toolkit for kernel {}: --deep reads the release's (--release), or the \
                 one --dtk-image names with --kernel",
                target.kernel
            ));
        };
        let key = (
            dtk.clone(),
            target.kernel.clone(),
            target.goarch.clone(),
            self.registry.access_key(),
        );
        let cell = lock(&self.reads.kernels).entry(key).or_default().clone();
        let host = dtk.split('/').next().unwrap_or_default().to_string();
        cell.get_or_init(|| self.waiting_for(&host, self.read_kernel(dtk.clone(), target)))
            .await
            .clone()
    }

    /// A driver-toolkit read through the cache: `cached` is asked with the digest the reference
    /// names (no round trip when it answers), then with the one the registry answers for it;
    /// only then is the image's platform manifest fetched, for reading its layers.
    async fn dtk_through_cache<T>(
        &self,
        dtk: &str,
        goarch: &str,
        cached: impl Fn(&str) -> Option<T>,
    ) -> Result<DtkRead<T>, String> {
        let reference: ImageRef = dtk
            .parse()
            .map_err(|e| format!("driver-toolkit {dtk}: {e}"))?;
        if let Some(found) = reference.digest.as_deref().and_then(&cached) {
            return Ok(DtkRead::Cached(found));
        }
        let (raw, location) = self
            .registry
            .manifest_located(&reference)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(found) = cached(&raw.digest) {
            return Ok(DtkRead::Cached(found));
        }
        let pinned = location.pinned(&raw.digest);
        let (platform, _) = files::platform_manifest(
            &self.registry,
            &pinned,
            &raw.body,
            goarch,
            "driver-toolkit image",
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(DtkRead::Image {
            digest: raw.digest,
            named: reference.digest,
            pinned,
            platform: Box::new(platform),
        })
    }

    async fn read_kernel(&self, dtk: String, target: &Target) -> Result<Arc<KernelFacts>, String> {
        let kernel = &target.kernel;
        let cache_key = |digest: &str| format!("{digest} {kernel} {}", target.goarch);
        let from_cache = |digest: &str| {
            let cached = self
                .cache
                .get::<CachedKernel>(KERNEL_NAMESPACE, &cache_key(digest))?;
            let exports = deep::Symbols::from_compact(cached.symvers)?;
            Some(Arc::new(KernelFacts {
                release: kernel.clone(),
                vermagic: cached.vermagic,
                exports,
            }))
        };
        // A release names its driver-toolkit by digest: no round trip when it is cached.
        let (digest, named, pinned, platform) = match self
            .dtk_through_cache(&dtk, &target.goarch, from_cache)
            .await?
        {
            DtkRead::Cached(facts) => return Ok(facts),
            DtkRead::Image {
                digest,
                named,
                pinned,
                platform,
            } => (digest, named, pinned, platform),
        };
        let symvers_path = format!("usr/src/kernels/{kernel}/Module.symvers");
        let mut wants = vec![
            crate::registry::layers::Want::Path(symvers_path.clone()),
            crate::registry::layers::Want::FirstUnder {
                dir: format!("usr/lib/modules/{kernel}/kernel"),
                contains: ".ko".into(),
            },
            crate::registry::layers::Want::FirstUnder {
                dir: format!("lib/modules/{kernel}/kernel"),
                contains: ".ko".into(),
            },
        ];
        // `--boot` boots this kernel: its image and module index come in the same pass.
        let boot_files = if self.boot.is_some() {
            in_vm::boot_paths(kernel).to_vec()
        } else {
            Vec::new()
        };
        wants.extend(
            boot_files
                .iter()
                .map(|p| crate::registry::layers::Want::Path(p.clone())),
        );
        let found = files::find_first(
            &self.registry,
            &pinned,
            &platform,
            wants,
            SYMVERS_LIMIT,
            self.reads.deep_bytes.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut found = found.into_iter();
        let symvers = found.next().flatten();
        let (usr_lib, lib) = (found.next().flatten(), found.next().flatten());
        let in_tree = usr_lib.or(lib);
        for (path, file) in boot_files.iter().zip(found) {
            if let Some((_, bytes)) = file {
                in_vm::keep_dtk_file(&self.cache, &digest, path, &bytes, &*self.notify);
            }
        }
        let Some((_, symvers)) = symvers else {
            return Err(format!(
                "driver-toolkit {dtk} has no /{symvers_path} (the kernel's devel files)"
            ));
        };
        let exports = KernelFacts::parse_symvers(&String::from_utf8_lossy(&symvers))
            .map_err(|e| format!("/{symvers_path} in {dtk}: {e}"))?;
        let Some((module_path, module)) = in_tree else {
            return Err(format!(
                "driver-toolkit {dtk} has no module of kernel {kernel} to read its vermagic from"
            ));
        };
        let vermagic = ko::decompress(&module)
            .and_then(|bytes| ko::parse(&bytes))
            .map_err(|e| format!("/{module_path} in {dtk}: {e}"))?
            .vermagic
            .ok_or_else(|| format!("/{module_path} in {dtk} has no vermagic"))?;
        let facts = KernelFacts {
            release: kernel.clone(),
            vermagic: vermagic.clone(),
            exports,
        };
        let cached = CachedKernel {
            vermagic,
            symvers: facts.exports.compact().to_string(),
        };
        let mut keys = vec![cache_key(&digest)];
        if let Some(named) = &named
            && *named != digest
        {
            keys.push(cache_key(named));
        }
        for key in keys {
            if let Err(e) = self.cache.put(KERNEL_NAMESPACE, &key, &cached) {
                (self.notify)(format!("could not write the cache: {e}"));
            }
        }
        Ok(Arc::new(facts))
    }

    /// The Module's registry access: its `imageRepoSecret` first, then the run's credentials.
    async fn access(&self, module: &Module) -> Access {
        let Some(secret) = module
            .spec
            .image_repo_secret
            .as_ref()
            .filter(|s| !s.name.is_empty())
        else {
            return Access {
                registry: self.registry.clone(),
                note: None,
            };
        };
        let namespace = &module.metadata.namespace;
        let cell = lock(&self.secrets)
            .entry((namespace.clone(), secret.name.clone()))
            .or_default()
            .clone();
        let found = cell
            .get_or_init(|| self.objects.registry_secret(namespace, &secret.name))
            .await;
        let label = format!("Secret {namespace}/{} (imageRepoSecret)", secret.name);
        match found {
            Lookup::Found(entries) => Access {
                registry: self.registry.with_access(
                    self.registry
                        .credentials()
                        .with_first(label, entries.clone()),
                    &[],
                ),
                note: None,
            },
            Lookup::Missing => {
                let note = format!(
                    "its imageRepoSecret {namespace}/{} does not exist",
                    secret.name
                );
                (self.notify)(format!("{}: {note}", module.key()));
                Access {
                    registry: self.registry.clone(),
                    note: Some(note),
                }
            }
            Lookup::Unreadable(reason) => {
                let note = format!(
                    "its imageRepoSecret {namespace}/{} could not be read ({reason})",
                    secret.name
                );
                (self.notify)(format!("{}: {note}", module.key()));
                Access {
                    registry: self.registry.clone(),
                    note: Some(note),
                }
            }
        }
    }

    /// The verdict for a resolved Module: its image, or what KMM would do without it.
    async fn decide(
        &self,
        module: &Module,
        resolved: &Resolved,
        wanted: &Wanted,
        goarch: &str,
        access: &Access,
    ) -> (Verdict, String, Option<Result<Vec<CachedKo>, String>>) {
        let state = self
            .image(
                &resolved.image,
                resolved.registry_tls,
                wanted,
                goarch,
                access,
            )
            .await;
        match state {
            ImageState::Found { finding, kos } => match finding {
                Finding::Ready(detail) => (Verdict::Ready, detail, kos),
                Finding::Failed(reason) if resolved.build.is_some() || resolved.sign.is_some() => (
                    Verdict::Failed,
                    format!("{reason} (KMM builds or signs only images that do not exist)"),
                    None,
                ),
                Finding::Failed(reason) => (Verdict::Failed, reason, None),
                Finding::Unknown(reason) => (Verdict::Unknown, reason, None),
            },
            ImageState::Unusable(reason) => (Verdict::Failed, reason, None),
            ImageState::Unknown(reason) => (Verdict::Unknown, reason, None),
            ImageState::Missing => {
                let (verdict, reason) = self
                    .without_image(module, resolved, wanted, goarch, access)
                    .await;
                (verdict, reason, None)
            }
        }
    }

    /// The image does not exist: KMM builds it, signs its unsigned image, or waits forever.
    async fn without_image(
        &self,
        module: &Module,
        resolved: &Resolved,
        wanted: &Wanted,
        goarch: &str,
        access: &Access,
    ) -> (Verdict, String) {
        let namespace = &module.metadata.namespace;
        let image = &resolved.image;
        if module.day1 {
            return (
                Verdict::Failed,
                format!(
                    "image {image} does not exist: the day-1 loader pulls it when a node boots \
                     this kernel, and nothing builds it; push it before the upgrade"
                ),
            );
        }
        if let Some(build) = &resolved.build {
            let mut needed: Vec<(ObjectKind, String, &str)> = Vec::new();
            match build
                .dockerfile_config_map
                .as_ref()
                .filter(|c| !c.name.is_empty())
            {
                Some(cm) => needed.push((
                    ObjectKind::ConfigMap,
                    cm.name.clone(),
                    "the build's Dockerfile",
                )),
                None => {
                    return (
                        Verdict::Failed,
                        format!(
                            "image {image} does not exist and its build names no dockerfileConfigMap"
                        ),
                    );
                }
            }
            for s in &build.secrets {
                needed.push((ObjectKind::Secret, s.name.clone(), "a build secret"));
            }
            if let Some(sign) = &resolved.sign {
                needed.extend(self.sign_secrets(sign));
            }
            if let Some(problem) = self.missing(namespace, &needed).await {
                return problem.with_image(image);
            }
            let config_map = &needed[0].1;
            let and_sign = if resolved.sign.is_some() {
                " and sign"
            } else {
                ""
            };
            return (
                Verdict::WillBuild,
                format!(
                    "image {image} does not exist: KMM will build{and_sign} it (Dockerfile from ConfigMap {namespace}/{config_map})"
                ),
            );
        }
        if let Some(sign) = &resolved.sign {
            let unsigned = &sign.unsigned_image;
            if unsigned.is_empty() {
                return (
                    Verdict::Failed,
                    format!(
                        "image {image} does not exist and its sign section names no unsignedImage"
                    ),
                );
            }
            let state = self
                .image(
                    unsigned,
                    sign.unsigned_image_registry_tls,
                    wanted,
                    goarch,
                    access,
                )
                .await;
            match state {
                ImageState::Found {
                    finding: Finding::Ready(_),
                    ..
                } => {}
                ImageState::Found {
                    finding: Finding::Failed(reason),
                    ..
                }
                | ImageState::Unusable(reason) => {
                    return (
                        Verdict::Failed,
                        format!(
                            "image {image} does not exist; KMM would sign its unsignedImage {unsigned}, but: {reason}"
                        ),
                    );
                }
                ImageState::Found {
                    finding: Finding::Unknown(reason),
                    ..
                }
                | ImageState::Unknown(reason) => {
                    return (
                        Verdict::Unknown,
                        format!(
                            "image {image} does not exist, and its unsignedImage {unsigned}: {reason}"
                        ),
                    );
                }
                ImageState::Missing => {
                    return (
                        Verdict::Failed,
                        format!(
                            "image {image} does not exist, nor does its unsignedImage {unsigned}"
                        ),
                    );
                }
            }
            if let Some(problem) = self.missing(namespace, &self.sign_secrets(sign)).await {
                return problem.with_image(image);
            }
            return (
                Verdict::WillSign,
                format!("image {image} does not exist: KMM will sign {unsigned}"),
            );
        }
        (
            Verdict::Failed,
            format!(
                "image {image} does not exist and the Module has no build or sign for this \
                 kernel: {WAITS_FOREVER}"
            ),
        )
    }

    fn sign_secrets<'s>(&self, sign: &'s super::spec::Sign) -> Vec<(ObjectKind, String, &'s str)> {
        let mut needed = Vec::new();
        for (secret, what) in [
            (&sign.key_secret, "the signing key"),
            (&sign.cert_secret, "the signing certificate"),
        ] {
            if let Some(s) = secret.as_ref().filter(|s| !s.name.is_empty()) {
                needed.push((ObjectKind::Secret, s.name.clone(), what));
            }
        }
        needed
    }

    /// The first object of `needed` that is not there (or cannot be read).
    async fn missing(
        &self,
        namespace: &str,
        needed: &[(ObjectKind, String, &str)],
    ) -> Option<Problem> {
        for (kind, name, what) in needed {
            match self.objects.exists(*kind, namespace, name).await {
                Lookup::Found(()) => {}
                Lookup::Missing => {
                    return Some(Problem {
                        verdict: Verdict::Failed,
                        text: format!("{what}, {kind} {namespace}/{name}, does not exist"),
                    });
                }
                Lookup::Unreadable(reason) => {
                    return Some(Problem {
                        verdict: Verdict::Unknown,
                        text: format!(
                            "whether {what}, {kind} {namespace}/{name}, exists is not known ({reason})"
                        ),
                    });
                }
            }
        }
        None
    }

    /// One image, checked once per run whatever the number of Modules (or clusters) that
    /// read it with the same credentials and mirrors.
    async fn image(
        &self,
        image: &str,
        tls: Tls,
        wanted: &Wanted,
        goarch: &str,
        access: &Access,
    ) -> ImageState {
        let key = ImageKey {
            image: image.to_string(),
            goarch: goarch.to_string(),
            wanted: wanted.clone(),
            insecure: tls.any(),
            access: access.registry.access_key(),
        };
        let cell = lock(&self.reads.images).entry(key).or_default().clone();
        let state = cell
            .get_or_init(|| async {
                let host = image.split('/').next().unwrap_or(image);
                self.waiting_for(host, self.inspect(image, tls, wanted, goarch, access))
                    .await
            })
            .await
            .clone();
        match (state, &access.note) {
            (ImageState::Unknown(reason), Some(note)) => {
                ImageState::Unknown(format!("{reason} ({note})"))
            }
            (state, _) => state,
        }
    }

    async fn inspect(
        &self,
        image: &str,
        tls: Tls,
        wanted: &Wanted,
        goarch: &str,
        access: &Access,
    ) -> ImageState {
        if is_short_name(image) {
            return ImageState::Unknown(format!(
                "{image} names no registry: the node resolves it through its registries.conf; \
                 write it fully qualified (quay.io/…)"
            ));
        }
        let reference: ImageRef = match image.parse() {
            Ok(r) => r,
            Err(e) => return ImageState::Unusable(format!("not a valid image reference: {e}")),
        };
        let registry = if tls.any() {
            access.registry.with_access(
                access.registry.credentials().clone(),
                std::slice::from_ref(&reference.registry),
            )
        } else {
            access.registry.clone()
        };
        // The repository is part of the key: the reasons name the image.
        let cache_key = |digest: &str| {
            format!(
                "{} {digest} {goarch} {} {} {} {}",
                reference.repository_path(),
                wanted.root,
                wanted.kernel,
                wanted.modules.join(","),
                wanted.firmware.as_deref().unwrap_or("")
            )
        };
        // A cached answer, and with --deep the cached module files (or no need for them).
        let from_cache = |key: &str| -> Option<ImageState> {
            let cached = self.cache.get::<Cached>(CACHE_NAMESPACE, key)?;
            let needs_files = self.deep.is_some() && matches!(cached.finding, Finding::Ready(_));
            let kos = if needs_files {
                let mut kos = self.cache.get::<Vec<CachedKo>>(DEEP_NAMESPACE, key)?;
                if self.boot.is_some() {
                    // `--boot` needs the files themselves: without them, read the image again.
                    for ko in kos.iter_mut().filter(|k| k.ko.is_ok()) {
                        let bytes = self
                            .cache
                            .get_bytes(FILES_NAMESPACE, &file_key(key, &ko.path))?;
                        ko.bytes = Some(Arc::new(bytes));
                    }
                }
                Some(Ok(kos))
            } else {
                None
            };
            Some(ImageState::Found {
                finding: cached.finding,
                kos,
            })
        };
        if let Some(digest) = &reference.digest
            && let Some(state) = from_cache(&cache_key(digest))
        {
            return state;
        }
        let (raw, location) = match registry.manifest_located(&reference).await {
            Ok(found) => found,
            Err(Error::ImageNotFound { .. })
            | Err(Error::MirrorsFailed {
                all_not_found: true,
                ..
            }) => return ImageState::Missing,
            Err(e) => return ImageState::Unknown(e.to_string()),
        };
        let key = cache_key(&raw.digest);
        if let Some(state) = from_cache(&key) {
            return state;
        }
        let pinned = location.pinned(&raw.digest);
        let shown = reference.pinned(&raw.digest).to_string();
        let (platform, was_list) =
            match files::platform_manifest(&registry, &pinned, &raw.body, goarch, ROLE).await {
                Ok(found) => found,
                Err(e @ Error::NoPlatform { .. }) => return ImageState::Unusable(e.to_string()),
                Err(e @ Error::UnsupportedManifest { .. }) => {
                    return ImageState::Unusable(e.to_string());
                }
                Err(e) => return ImageState::Unknown(e.to_string()),
            };
        self.reads.images_read.fetch_add(1, Ordering::Relaxed);
        self.reads
            .image_bytes
            .fetch_add(platform.total_size(), Ordering::Relaxed);

        // The config (for the architecture of a single-platform image) and the layers are read
        // at once: one round trip instead of two.
        let architecture = async {
            if was_list {
                return None;
            }
            match files::small_blob(&registry, &pinned, &platform.config, CONFIG_LIMIT).await {
                Ok(config) => foreign_architecture(&config, goarch).map(|arch| {
                    ImageState::Unusable(format!(
                        "{shown} is a linux/{arch} image; the nodes are linux/{goarch}"
                    ))
                }),
                Err(e) => Some(ImageState::Unknown(e.to_string())),
            }
        };
        let layers = async {
            let mut looking = wanted.clone();
            for _ in 0..=MAX_REDIRECTS {
                let query = looking.query();
                let target = looking.clone();
                let mut indexes = Indexes::default();
                let scanned = files::scan_tree(&registry, &pinned, &platform, query, move |t| {
                    layout::answered(&target, t, &mut indexes)
                })
                .await
                .map_err(|e| ImageState::Unknown(e.to_string()))?;
                match looking.redirected(&scanned) {
                    Some(next) => looking = next,
                    None => return Ok((looking, scanned)),
                }
            }
            Err(ImageState::Unusable(format!(
                "{shown}: too many symbolic links above {}",
                wanted.dir_name
            )))
        };
        let (wrong_architecture, scanned) = tokio::join!(architecture, layers);
        if let Some(state) = wrong_architecture {
            return state;
        }
        let (looking, tree) = match scanned {
            Ok(found) => found,
            Err(state) => return state,
        };
        let mut indexes = Indexes::default();
        let finding = layout::evaluate(&looking, &tree, &mut indexes, &shown);
        let kos = if self.deep.is_some() && matches!(finding, Finding::Ready(_)) {
            let paths = layout::load_files(&looking, &tree, &mut indexes);
            let kos = self
                .read_modules(&registry, &pinned, &platform, &paths)
                .await;
            if let Ok(kos) = &kos {
                let files = kos
                    .iter()
                    .filter_map(|k| Some((file_key(&key, &k.path), k.bytes.as_ref()?)));
                let mut files = files;
                let written = files
                    .try_for_each(|(file, bytes)| {
                        self.cache.put_bytes(FILES_NAMESPACE, &file, bytes)
                    })
                    .and_then(|()| self.cache.put(DEEP_NAMESPACE, &key, kos));
                if let Err(e) = written {
                    (self.notify)(format!("could not write the cache: {e}"));
                }
            }
            Some(kos.map_err(|e| format!("{shown}: {e}")))
        } else {
            None
        };
        if matches!(finding, Finding::Ready(_) | Finding::Failed(_))
            && let Err(e) = self.cache.put(
                CACHE_NAMESPACE,
                &key,
                &Cached {
                    finding: finding.clone(),
                },
            )
        {
            (self.notify)(format!("could not write the cache: {e}"));
        }
        ImageState::Found { finding, kos }
    }

    /// The module files at `paths` in the image, decompressed and parsed (a file that cannot be
    /// parsed is an answer, not an error: the kernel would refuse it too).
    async fn read_modules(
        &self,
        registry: &Registry,
        image: &ImageRef,
        platform: &manifest::ImageManifest,
        paths: &[String],
    ) -> Result<Vec<CachedKo>, String> {
        let wanted: Vec<&str> = paths.iter().map(String::as_str).collect();
        let contents = files::read_files(registry, image, platform, &wanted, ko::MAX_MODULE_SIZE)
            .await
            .map_err(|e| e.to_string())?;
        let keep = self.boot.is_some();
        Ok(paths
            .iter()
            .map(|path| {
                let read = match contents.get(path) {
                    Some(Some(bytes)) => {
                        ko::decompress(bytes).and_then(|b| Ok((ko::parse(&b)?, b)))
                    }
                    _ => Err("not a regular file in the image".to_string()),
                };
                let (ko, bytes) = match read {
                    Ok((ko, bytes)) => (Ok(ko), keep.then(|| Arc::new(bytes))),
                    Err(e) => (Err(e), None),
                };
                CachedKo {
                    path: format!("/{path}"),
                    ko,
                    bytes,
                }
            })
            .collect())
    }
}

struct Problem {
    verdict: Verdict,
    text: String,
}

impl Problem {
    fn with_image(self, image: &str) -> (Verdict, String) {
        (
            self.verdict,
            format!("image {image} does not exist, and {}", self.text),
        )
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Counts per verdict, in the order they are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    /// `--deep` only (0 otherwise, and left out of JSON).
    #[serde(skip_serializing_if = "is_zero")]
    pub loads: usize,
    /// `--boot` only.
    #[serde(skip_serializing_if = "is_zero")]
    pub inconclusive: usize,
    pub ready: usize,
    pub will_build: usize,
    pub will_sign: usize,
    pub failed: usize,
    pub unknown: usize,
}

/// What a whole check comes to, in the order that decides it: a Module KMM would refuse, then
/// one that would not load, then one that could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// A Module KMM would refuse (its row says why).
    Invalid,
    Failure,
    Unknown,
    /// Every row is Loads, Inconclusive, Ready, WillBuild or WillSign.
    Success,
    /// Nothing was checked: there was no Module.
    NoModules,
    /// The deadline passed before every Module was checked (none of those checked failed).
    TimedOut,
    /// `status` of a fleet: a preflight not yet done (a snapshot says so, and exits 0).
    InProgress,
}

impl Outcome {
    pub fn of(rows: &[Row]) -> Outcome {
        if rows.is_empty() {
            Outcome::NoModules
        } else if rows.iter().any(|r| r.invalid) {
            Outcome::Invalid
        } else if rows.iter().any(|r| r.verdict == Verdict::Failed) {
            Outcome::Failure
        } else if rows.iter().any(|r| r.verdict == Verdict::Unknown) {
            Outcome::Unknown
        } else {
            Outcome::Success
        }
    }
}

impl Summary {
    pub fn of(rows: &[Row]) -> Summary {
        let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
        Summary {
            total: rows.len(),
            loads: count(Verdict::Loads),
            inconclusive: count(Verdict::Inconclusive),
            ready: count(Verdict::Ready),
            will_build: count(Verdict::WillBuild),
            will_sign: count(Verdict::WillSign),
            failed: count(Verdict::Failed),
            unknown: count(Verdict::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_summaries() {
        assert!(is_short_name("mlx5:1"));
        assert!(is_short_name("vendor/mlx5:1"));
        assert!(!is_short_name("quay.io/vendor/mlx5:1"));
        assert!(!is_short_name("127.0.0.1:5000/mlx5:1"));
        assert!(!is_short_name("localhost/mlx5:1"));
        let row = |verdict| Row {
            namespace: "n".into(),
            name: "m".into(),
            kernel: "k".into(),
            image: None,
            verdict,
            reason: String::new(),
            invalid: false,
            waits_forever: false,
            deep: None,
            dtk_kernel: None,
            boot: None,
            day1: false,
        };
        let summary = Summary::of(&[
            row(Verdict::Ready),
            row(Verdict::Failed),
            row(Verdict::Ready),
        ]);
        assert_eq!((summary.total, summary.ready, summary.failed), (3, 2, 1));
        assert!(Verdict::WillSign.is_ok() && !Verdict::Unknown.is_ok());
    }
}
