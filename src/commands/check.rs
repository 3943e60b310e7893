//! `kubectl kmm check`: every Module, resolved for the target kernel as KMM resolves it and
//! looked up in its image as the node's worker will load it. Read-only: list and get only.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cli::CheckArgs;
use crate::cluster::clusterversion::{self, Risk};
use crate::cluster::{Cluster, kmm};
use crate::error::{Error, ExitStatus, Result};
use crate::module::check::{
    BootConfig, Checker, Inspected, Lookup, ObjectKind, Objects, Outcome, Plan, Row, Target,
};
use crate::module::kernels::NodeInfo;
use crate::module::signature::{Trust, TrustedCert};
use crate::module::source::{self, SecretData};
use crate::module::spec::Module;
use crate::output::check::{CheckReport, Matrix, ReleaseEntry, version_key};
use crate::output::fleet::{ClusterEntry, Fleet, Tabular};
use crate::output::{self, ReportFormat, Term};
use crate::registry::auth::AuthEntries;
use crate::registry::cache::Cache;
use crate::registry::reference::ImageRef;
use crate::registry::{Registry, Transferred};
use crate::release::{Arch, DtkAnswer, ReleaseSpec, dtk};

use super::context::{self, Registries, Shared};
use super::fleet::Said;

/// Secrets and ConfigMaps read from the cluster, as a Module's namespace holds them.
struct ClusterObjects(Arc<Cluster>);

impl Objects for ClusterObjects {
    fn registry_secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Lookup<AuthEntries>> {
        Box::pin(async move {
            match self.0.secret(namespace, name).await {
                Ok(Some((kind, data))) => {
                    match source::registry_entries(&SecretData { kind, data }) {
                        Ok(entries) => Lookup::Found(entries),
                        Err(reason) => Lookup::Unreadable(reason),
                    }
                }
                Ok(None) => Lookup::Missing,
                Err(reason) => Lookup::Unreadable(reason),
            }
        })
    }

    fn secret_entry<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Lookup<Vec<u8>>> {
        Box::pin(async move {
            match self.0.secret(namespace, name).await {
                Ok(Some((_, mut data))) => match data.remove(key) {
                    Some(value) => Lookup::Found(value),
                    None => Lookup::Unreadable(format!("it has no data key {key:?}")),
                },
                Ok(None) => Lookup::Missing,
                Err(reason) => Lookup::Unreadable(reason),
            }
        })
    }

    fn exists<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Lookup<()>> {
        Box::pin(async move {
            match self
                .0
                .object_exists(kind == ObjectKind::ConfigMap, namespace, name)
                .await
            {
                Ok(true) => Lookup::Found(()),
                Ok(false) => Lookup::Missing,
                Err(reason) => Lookup::Unreadable(reason),
            }
        })
    }
}

/// A deadline that passed while the images were checked: its error names the registries the
/// check was still waiting for.
pub fn name_waits(error: Error, checker: &Checker) -> Error {
    match error {
        Error::DeadlineExceeded { after, step } => {
            let waiting = checker.waiting_on();
            let step = if waiting.is_empty() {
                step
            } else {
                format!("{step}, waiting for registry {}", waiting.join(", "))
            };
            Error::DeadlineExceeded { after, step }
        }
        other => other,
    }
}

/// One release to check: how it was named, where its image is, and the risks the cluster knows.
#[derive(Clone)]
struct Listed {
    spec: ReleaseSpec,
    risks: Vec<Risk>,
}

/// Everything a check needs that does not depend on the target: the cluster (or files), the
/// registry, the nodes, the Modules, and the checker over them. `preflight` builds the same.
pub struct Setup {
    pub cluster: Option<Arc<Cluster>>,
    pub registries: Registries,
    pub shared: Shared,
    pub nodes: Option<Vec<NodeInfo>>,
    pub modules: Vec<Module>,
    pub checker: Arc<Checker>,
}

impl Setup {
    /// The checker over `objects`, telling `-v` what it finds worth saying.
    pub fn checker(
        registry: &Registry,
        shared: &Shared,
        objects: Arc<dyn Objects>,
        term: &Term,
        deep: Option<Trust>,
        boot: Option<Arc<BootConfig>>,
    ) -> Arc<Checker> {
        let notifier = {
            let term = term.clone();
            Arc::new(move |line: String| term.info(&line))
        };
        Arc::new(
            Checker::new(registry.clone(), shared.cache.clone(), objects, notifier)
                .with_reads(shared.reads.clone())
                .with_deep(deep)
                .with_boot(boot),
        )
    }

    /// Secrets and ConfigMaps from the cluster.
    pub fn cluster_objects(cluster: Arc<Cluster>) -> Arc<dyn Objects> {
        Arc::new(ClusterObjects(cluster))
    }
}

/// What the user typed, checked before anything is read: the releases, the release repository,
/// and the files of `-f`.
struct Inputs {
    listed: Vec<Listed>,
    release_repo: ImageRef,
    loaded: Option<source::Loaded>,
    /// `--deep` (or a flag that implies it) with `--trusted-cert` and `--secure-boot`.
    deep: Option<Trust>,
    /// `--boot`, with `--boot-init`.
    boot: Option<Arc<BootConfig>>,
}

impl Inputs {
    fn read(args: &CheckArgs, term: &Term) -> Result<Inputs> {
        let mut listed = Vec::new();
        for release in &args.release {
            let (spec, _) = context::release_flags(Some(release), &args.release_repo)?;
            if let Some(spec) = spec {
                listed.push(Listed {
                    spec,
                    risks: Vec::new(),
                });
            }
        }
        let (_, release_repo) = context::release_flags(None, &args.release_repo)?;
        for kernel in &args.kernel {
            kmm::validate_kernel(kernel)?;
        }
        let loaded = if args.files.is_empty() {
            None
        } else {
            let namespace = args.namespace.as_deref().unwrap_or("default");
            let loaded = source::load(&args.files, namespace, &mut std::io::stdin().lock())
                .map_err(|reason| {
                    Error::invalid(
                        reason,
                        "-f takes YAML or JSON files of Modules (and the Secrets and ConfigMaps \
                         they name), a directory of them, or - for stdin",
                    )
                })?;
            for ignored in &loaded.ignored {
                term.info(&format!(
                    "ignoring {ignored}: not a Module, Secret or ConfigMap"
                ));
            }
            Some(loaded)
        };
        if args.updates && loaded.is_some() {
            return Err(Error::invalid(
                "--updates reads the cluster's ClusterVersion, and -f means no cluster",
                "list the releases with --release instead",
            ));
        }
        let boot = match args.boot.then(|| BootConfig::new(args.boot_init.clone())) {
            None => None,
            Some(Ok(boot)) => Some(Arc::new(boot)),
            Some(Err(message)) => {
                return Err(Error::invalid(
                    format!("--boot-init: {message}"),
                    "name the plugin's Linux binary for the kernel's architecture (from its krew \
                     archive)",
                ));
            }
        };
        // --boot, --secure-boot and --trusted-cert each imply --deep.
        let deep_asked =
            args.deep || args.boot || args.secure_boot || !args.trusted_cert.is_empty();
        if args.dtk_image.is_some() && !deep_asked {
            return Err(Error::invalid(
                "--dtk-image names the driver-toolkit that --deep reads, and --deep was not given",
                "add --deep (or --boot) to make the kernel's own load decision",
            ));
        }
        let deep = deep_asked.then(|| {
            let mut certs = Vec::new();
            for path in &args.trusted_cert {
                let origin = format!("--trusted-cert {}", path.display());
                let read = std::fs::read(path)
                    .map_err(|e| format!("{origin}: {e}"))
                    .and_then(|bytes| TrustedCert::parse(&bytes, &origin));
                match read {
                    Ok(found) => certs.extend(found),
                    Err(message) => {
                        return Err(Error::invalid(
                            message,
                            "name a certificate file, PEM or DER (mokutil --export writes DER)",
                        ));
                    }
                }
            }
            for cert in &certs {
                if let Some(problem) = cert.key_problem() {
                    term.warn(&format!("{}: {problem}", cert.origin));
                }
            }
            Ok(Trust {
                certs,
                secure_boot: args.secure_boot,
            })
        });
        Ok(Inputs {
            listed,
            release_repo,
            loaded,
            deep: deep.transpose()?,
            boot,
        })
    }

    /// One row per release rather than one table of Modules.
    fn is_matrix(&self, args: &CheckArgs) -> bool {
        args.updates || self.listed.len() > 1
    }
}

/// What one cluster's check came to: the document printed for it, its exit code, the lines
/// said on stderr besides, and the deadline when it cut the check short.
pub(super) struct Checked {
    doc: CheckDoc,
    exit: ExitStatus,
    errors: Vec<String>,
    cut_short: Option<Error>,
}

/// The single-cluster document: one table of Modules, or one row per release.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub(super) enum CheckDoc {
    Report(CheckReport),
    Matrix(Matrix),
}

impl CheckDoc {
    pub(super) fn render(&self, format: ReportFormat, color: bool) -> String {
        match self {
            CheckDoc::Report(r) => r.render(format, color),
            CheckDoc::Matrix(m) => m.render(format),
        }
    }

    pub(super) fn outcome(&self) -> Outcome {
        match self {
            CheckDoc::Report(r) => r.result,
            CheckDoc::Matrix(m) => m.outcome(),
        }
    }
}

impl Tabular for CheckDoc {
    fn header(&self, wide: bool) -> Vec<String> {
        match self {
            CheckDoc::Report(r) => r.header(wide),
            CheckDoc::Matrix(m) => m.header(wide),
        }
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        match self {
            CheckDoc::Report(r) => r.rows(wide),
            CheckDoc::Matrix(m) => m.rows(wide),
        }
    }

    fn summary_line(&self) -> String {
        match self {
            CheckDoc::Report(r) => Tabular::summary_line(r),
            CheckDoc::Matrix(m) => m.summary_line(),
        }
    }
}

pub async fn run(args: CheckArgs, term: &Term) -> Result<ExitStatus> {
    // Everything the user typed is checked before anything is read.
    let inputs = Inputs::read(&args, term)?;
    if args.hub {
        let releases: Vec<ReleaseSpec> = inputs.listed.iter().map(|l| l.spec.clone()).collect();
        return super::hub::run(&args, &releases, &inputs.release_repo, term).await;
    }
    if let Some(contexts) = super::fleet::contexts(&args.kube, &args.fleet)? {
        if inputs.loaded.is_some() {
            return Err(Error::invalid(
                "-f checks Modules from files, without a cluster, and --context… names clusters",
                "drop -f to check the clusters' own Modules, or drop the contexts",
            ));
        }
        return fleet(&args, &inputs, &contexts, term).await;
    }
    let deadline = context::Deadline::new(args.timeout.0);
    // With files no cluster is needed, or contacted.
    let cluster = match &inputs.loaded {
        Some(_) => None,
        None => Some(Arc::new(
            Cluster::connect(&super::cluster_options(&args.kube)).await?,
        )),
    };
    let shared = Shared::new(Cache::new(args.registry.no_cache));
    let setup = prepare(&args, &inputs, cluster, &shared, None, deadline, term).await?;
    let checked = judge(&setup, &args, &inputs, deadline, term).await?;
    output::stdout(&checked.doc.render(args.output, term.stdout_color()));
    for line in &checked.errors {
        term.error_line(line);
    }
    if let Some(error) = checked.cut_short {
        // What was decided before the deadline is reported above, and a failure counts.
        if checked.exit != ExitStatus::VerificationFailed {
            return Err(error);
        }
        term.error(&error);
    }
    Ok(checked.exit)
}

/// Every cluster of `contexts`, each checked as `run` checks one, concurrently, over one
/// registry client, one cache and the reads they share; one report.
async fn fleet(
    args: &CheckArgs,
    inputs: &Inputs,
    contexts: &[String],
    term: &Term,
) -> Result<ExitStatus> {
    let deadline = context::Deadline::new(args.timeout.0);
    let shared = Shared::new(Cache::new(args.registry.no_cache));
    let base = super::fleet::base_registry(&args.registry, args.kube.request_timeout.0, term)?;
    let shared = &shared;
    let base = &base;
    let entries = super::fleet::each(contexts, term, "checking", |name, voice| async move {
        let options = super::fleet::options_for(&args.kube, &name);
        let cluster = match Cluster::connect(&options).await {
            Ok(cluster) => Arc::new(cluster),
            Err(e) => return (ClusterEntry::failed(name, None, &e), vec![Said::Error(e)]),
        };
        let server = Some(cluster.server.clone());
        let checked = async {
            let setup = prepare(
                args,
                inputs,
                Some(cluster),
                shared,
                Some(base),
                deadline,
                &voice,
            )
            .await?;
            judge(&setup, args, inputs, deadline, &voice).await
        }
        .await;
        match checked {
            Ok(checked) => {
                let mut said: Vec<Said> = checked.errors.into_iter().map(Said::Line).collect();
                let mut outcome = checked.doc.outcome();
                if let Some(error) = checked.cut_short {
                    said.push(Said::Error(error));
                    if checked.exit != ExitStatus::VerificationFailed {
                        outcome = Outcome::TimedOut;
                    }
                }
                let entry = ClusterEntry::checked(name, server, outcome, checked.doc, checked.exit);
                (entry, said)
            }
            Err(e) => (ClusterEntry::failed(name, server, &e), vec![Said::Error(e)]),
        }
    })
    .await;
    let entries = super::fleet::tell(term, entries);
    report_transfer(term, base.transferred(), shared.reads.inspected());
    let fleet = Fleet::new(entries);
    output::stdout(&fleet.render(args.output));
    Ok(fleet.exit())
}

/// Everything a cluster's check needs before its target: registries (from `base` in a fleet),
/// nodes, and the Modules to check, with the checker over them.
async fn prepare(
    args: &CheckArgs,
    inputs: &Inputs,
    cluster: Option<Arc<Cluster>>,
    shared: &Shared,
    base: Option<&Registry>,
    deadline: context::Deadline,
    term: &Term,
) -> Result<Setup> {
    let cluster_ref = cluster.as_deref();
    // The pull secret, mirror sets, nodes and Modules at once.
    if let Some(cluster) = cluster_ref {
        term.step(format!(
            "reading the nodes, Modules, pull secret and image mirrors of {}",
            cluster.server
        ));
    }
    let listing = async {
        match (&inputs.loaded, cluster_ref) {
            (Some(loaded), _) => Ok(loaded.modules.clone()),
            (None, Some(cluster)) => {
                let namespace = args.namespace.as_deref();
                let (modules, boot) = tokio::join!(
                    cluster.modules(namespace),
                    cluster.boot_module_configs(namespace)
                );
                let mut values = modules?;
                values.extend(boot?);
                Ok(values)
            }
            (None, None) => Ok(Vec::new()),
        }
    };
    // Versions and --updates are looked up in the ClusterVersion: read it now too.
    let wants_cluster_version =
        args.updates || inputs.listed.iter().any(|l| l.spec.version().is_some());
    let cluster_version = async {
        if let Some(cluster) = cluster_ref.filter(|_| wants_cluster_version) {
            let _ = cluster.cluster_version().await;
        }
    };
    let (registries, nodes, values) = deadline
        .bound(term, async {
            let (registries, nodes, values, ()) = tokio::join!(
                context::registries(
                    cluster_ref,
                    &args.registry,
                    args.kube.request_timeout.0,
                    base,
                    term,
                ),
                context::nodes(cluster_ref, term),
                listing,
                cluster_version,
            );
            Ok((registries?, nodes?, values?))
        })
        .await?;
    term.step_done();
    let files = inputs.loaded.as_ref().map(|l| l.module_files.as_slice());
    let modules = select_modules(&values, files, args, term)?;
    if modules.is_empty() {
        nothing_to_check(args, inputs.loaded.as_ref(), &values, term)?;
    }
    let objects: Arc<dyn Objects> = match (&inputs.loaded, &cluster) {
        (Some(loaded), _) => Arc::new(loaded.clone()),
        (None, Some(cluster)) => Setup::cluster_objects(cluster.clone()),
        (None, None) => Arc::new(source::Loaded::default()),
    };
    let checker = Setup::checker(
        &registries.modules,
        shared,
        objects,
        term,
        inputs.deep.clone(),
        inputs.boot.clone(),
    );
    Ok(Setup {
        cluster,
        registries,
        shared: shared.clone(),
        nodes,
        modules,
        checker,
    })
}

/// The check of one cluster (or of files) against its target: one release or kernel, or one
/// row per release.
async fn judge(
    setup: &Setup,
    args: &CheckArgs,
    inputs: &Inputs,
    deadline: context::Deadline,
    term: &Term,
) -> Result<Checked> {
    let mut listed = inputs.listed.clone();
    if args.updates {
        listed.extend(deadline.bound(term, offered_updates(setup, term)).await?);
    }
    if inputs.is_matrix(args) {
        return deadline
            .bound(
                term,
                matrix(setup, args, listed, &inputs.release_repo, term),
            )
            .await
            .map_err(|e| name_waits(e, &setup.checker));
    }

    let before = setup.registries.release.transferred();
    term.step(format!(
        "checking the images of {} Modules",
        setup.modules.len()
    ));
    let checked = deadline
        .bound(term, async {
            Ok(match listed.into_iter().next() {
                Some(release) => {
                    let (answer, risks) = context::resolve_release(
                        setup.cluster.as_deref(),
                        setup.nodes.as_deref(),
                        &setup.registries.release,
                        &setup.shared,
                        &release.spec,
                        &inputs.release_repo,
                        args.arch,
                        term,
                    )
                    .await?;
                    setup.shared.say_release(term, &answer);
                    let mut report = release_report(setup, &answer, args.rt).await;
                    report.risks = risks;
                    report
                }
                None => {
                    let targets = kernel_targets(args, setup.nodes.as_deref(), term);
                    let rows = setup.checker.check(&setup.modules, &targets).await;
                    CheckReport::new(
                        targets.iter().map(|t| t.kernel.clone()).collect(),
                        None,
                        None,
                        &rows,
                    )
                }
            })
        })
        .await;
    term.step_done();
    if term.is_fleet_member() {
        // A fleet says what it read once, for all its clusters.
    } else {
        report_transfer(
            term,
            setup.registries.release.transferred().since(before),
            setup.checker.inspected(),
        );
    }
    match checked {
        Ok(report) => {
            let errors = refused(&report.modules);
            let exit = exit_status(&report.modules);
            Ok(Checked {
                doc: CheckDoc::Report(report),
                exit,
                errors,
                cut_short: None,
            })
        }
        Err(e @ Error::DeadlineExceeded { .. }) => {
            // What was decided before the deadline is still reported, and a failure counts.
            let report = CheckReport::cut_short(&setup.checker.decided());
            let exit = if report.result == Outcome::Failure {
                ExitStatus::VerificationFailed
            } else {
                e.exit_status()
            };
            Ok(Checked {
                doc: CheckDoc::Report(report),
                exit,
                errors: Vec::new(),
                cut_short: Some(name_waits(e, &setup.checker)),
            })
        }
        Err(e) => Err(e),
    }
}

/// Every exit 2 says why on stderr: a Module KMM would refuse has its reason in its row, on
/// stdout, and in these lines.
fn refused(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.invalid)
        .map(|row| format!("{}/{}: {}", row.namespace, row.name, row.reason))
        .collect()
}

/// `--kernel`: each kernel once, for the nodes' architecture (`--arch`, else the kernel's own
/// name `….x86_64`, else the cluster's nodes, else x86_64).
fn kernel_targets(args: &CheckArgs, nodes: Option<&[NodeInfo]>, term: &Term) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    let mut nodes_arch = None;
    for kernel in &args.kernel {
        let kernel = kernel.trim().to_string();
        if targets.iter().any(|t| t.kernel == kernel) {
            continue;
        }
        let named = args
            .arch
            .or_else(|| dtk::kernel_arch(&kernel).and_then(Arch::from_rpm));
        let arch = match (named, nodes_arch) {
            (Some(arch), _) | (None, Some(arch)) => arch,
            (None, None) => {
                let arch = context::payload(nodes, None, term).1;
                nodes_arch = Some(arch);
                arch
            }
        };
        targets.push(Target {
            kernel,
            goarch: arch.goarch().to_string(),
            dtk: args.dtk_image.clone(),
            dtk_kernel: None,
        });
    }
    targets
}

/// Every Module against the kernels its nodes will boot in `answer`'s release.
pub async fn release_report(setup: &Setup, answer: &DtkAnswer, force_rt: bool) -> CheckReport {
    let plan = Plan::Release {
        nodes: setup.nodes.clone(),
        streams: answer.streams.clone(),
        goarch: context::release_goarch(answer),
        force_rt,
    };
    let jobs = plan.jobs(&setup.modules);
    let rows = setup.checker.check_jobs(&jobs).await;
    // The standard kernel sorts before its `+rt` and `+64k` variants.
    let mut kernels: Vec<String> = jobs.iter().map(|j| j.target.kernel.clone()).collect();
    kernels.sort();
    kernels.dedup();
    if kernels.is_empty() {
        kernels.push(
            answer
                .streams
                .first()
                .map_or(answer.kernel_version.clone(), |s| {
                    s.boot_kernel().to_string()
                }),
        );
    }
    CheckReport::new(
        kernels,
        Some(answer.release_image.clone()),
        Some(answer.dtk_image.clone()),
        &rows,
    )
}

/// The updates ClusterVersion offers: `availableUpdates`, then `conditionalUpdates` with their
/// risks, by digest.
async fn offered_updates(setup: &Setup, term: &Term) -> Result<Vec<Listed>> {
    let Some(cluster) = setup.cluster.as_deref() else {
        return Ok(Vec::new());
    };
    let cluster_version = cluster.cluster_version().await.map_err(|reason| {
        Error::invalid(
            format!("--updates needs the cluster's ClusterVersion: {reason}"),
            "list the releases with --release instead",
        )
    })?;
    let mut listed = Vec::new();
    for update in clusterversion::offered(&cluster_version) {
        match update.image.parse() {
            Ok(image) => listed.push(Listed {
                spec: ReleaseSpec::PullSpec(image),
                risks: update.risks.clone(),
            }),
            Err(e) => term.warn(&format!(
                "ClusterVersion offers {} with an unusable image {e}; skipping it",
                update.version
            )),
        }
    }
    if listed.is_empty() {
        term.say("the cluster is offered no updates (ClusterVersion availableUpdates and conditionalUpdates are empty)");
    }
    Ok(listed)
}

/// Several releases: each resolved (concurrently), every Module checked against what its nodes
/// will boot in each, one row per release and the newest that is safe for every Module.
async fn matrix(
    setup: &Setup,
    args: &CheckArgs,
    listed: Vec<Listed>,
    release_repo: &ImageRef,
    term: &Term,
) -> Result<Checked> {
    if listed.is_empty() {
        return Err(Error::invalid(
            "no release to check",
            "pass --release VERSION (repeatable), or use --updates on a cluster that is offered updates",
        ));
    }
    let before = setup.registries.release.transferred();
    let resolved = futures::future::join_all(listed.iter().map(|release| {
        context::resolve_release(
            setup.cluster.as_deref(),
            setup.nodes.as_deref(),
            &setup.registries.release,
            &setup.shared,
            &release.spec,
            release_repo,
            args.arch,
            term,
        )
    }))
    .await;
    // Said in the table's order, newest first, whatever order they were read in.
    let mut read: Vec<&DtkAnswer> = resolved.iter().flatten().map(|(a, _)| a).collect();
    read.sort_by_key(|a| std::cmp::Reverse(version_key(&a.release_version)));
    for answer in read {
        setup.shared.say_release(term, answer);
    }
    let mut releases: Vec<ReleaseEntry> = Vec::new();
    for (release, answer) in listed.iter().zip(resolved) {
        // `--release 4.19.0 --updates` may name a release twice.
        if let Ok((answer, _)) = &answer
            && releases.iter().any(|r| r.version == answer.release_version)
        {
            continue;
        }
        let label = match &release.spec {
            ReleaseSpec::Version(v) => v.clone(),
            ReleaseSpec::PullSpec(image) => image.to_string(),
        };
        releases.push(match answer {
            Ok((answer, known)) => {
                let report = release_report(setup, &answer, args.rt).await;
                // An offered update comes with its risks; a version ClusterVersion lists
                // brings its own.
                let risks = if release.risks.is_empty() {
                    known
                } else {
                    release.risks.clone()
                };
                ReleaseEntry::checked(answer.release_version.clone(), risks, report)
            }
            Err(e) => ReleaseEntry::unresolved(label, release.risks.clone(), &e),
        });
    }
    if !term.is_fleet_member() {
        report_transfer(
            term,
            setup.registries.release.transferred().since(before),
            setup.checker.inspected(),
        );
    }
    let matrix = Matrix::new(releases);
    // A release named wrong, or a Module KMM would refuse, is bad input whatever the others say
    // (a refused Module is said once, not once per release).
    let mut errors = Vec::new();
    for release in &matrix.releases {
        if release.bad_input
            && let Some(error) = &release.error
        {
            errors.push(format!("release {}: {error}", release.version));
        }
    }
    let mut rows: Vec<Row> = matrix
        .releases
        .iter()
        .flat_map(|r| r.modules.iter().filter(|m| m.invalid).cloned())
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows.dedup_by(|a, b| (&a.namespace, &a.name, &a.reason) == (&b.namespace, &b.name, &b.reason));
    errors.extend(refused(&rows));
    let exit = matrix_exit(&matrix, !errors.is_empty());
    Ok(Checked {
        doc: CheckDoc::Matrix(matrix),
        exit,
        errors,
        cut_short: None,
    })
}

/// A matrix's exit code: 2 for bad input, 0 when a release is safe for every Module, 4 when
/// none failed but some could not be checked, else 1.
pub(super) fn matrix_exit(matrix: &Matrix, bad_input: bool) -> ExitStatus {
    if bad_input {
        ExitStatus::BadInput
    } else if matrix.newest_safe.is_some() {
        ExitStatus::Success
    } else if matrix
        .releases
        .iter()
        .any(|r| r.error.is_some() || r.summary.unknown > 0)
        && matrix.releases.iter().all(|r| r.summary.failed == 0)
    {
        ExitStatus::Environment
    } else {
        ExitStatus::VerificationFailed
    }
}

/// No Module to check. From files, or in a namespace or among names asked for, that is bad
/// input (exit 2, saying what was read); in a whole cluster it is a fact worth a warning (the
/// run goes on to an empty report, `result: NoModules`, exit 0).
fn nothing_to_check(
    args: &CheckArgs,
    loaded: Option<&source::Loaded>,
    values: &[serde_json::Value],
    term: &Term,
) -> Result<()> {
    // The Modules there were, and what none of them was.
    let mut wanted = Vec::new();
    if let Some(ns) = &args.namespace {
        wanted.push(format!("in namespace {ns}"));
    }
    wanted.push("with a moduleLoader and not being deleted".to_string());
    let found = if values.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = values
            .iter()
            .map(|v| {
                format!(
                    "{}/{}",
                    v["metadata"]["namespace"].as_str().unwrap_or_default(),
                    v["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        format!(" (found {}: none {})", names.join(", "), wanted.join(", "))
    };
    if let Some(loaded) = loaded {
        let what = if loaded.modules.is_empty() {
            format!(
                "no KMM Module in the files given ({})",
                loaded.without_modules()
            )
        } else {
            format!("no KMM Module to check in the files given{found}")
        };
        return Err(Error::invalid(
            what,
            "-f takes Modules (kmm.sigs.x-k8s.io), as `kubectl get modules -A -o yaml` writes \
             them; when piping, check that the command before the pipe succeeded",
        ));
    }
    if let Some(ns) = &args.namespace {
        return Err(Error::invalid(
            format!("no KMM Module to check in namespace {ns}{found}"),
            "list the Modules with `kubectl get modules -A`, or drop -n to check every namespace",
        ));
    }
    term.warn(&format!(
        "the cluster has no KMM Module to check{found}: nothing was checked"
    ));
    Ok(())
}

/// The Modules to check: by namespace and name, not being deleted, with a module loader.
/// `files`: the file each of `values` came from, with `-f`.
fn select_modules(
    values: &[serde_json::Value],
    files: Option<&[String]>,
    args: &CheckArgs,
    term: &Term,
) -> Result<Vec<Module>> {
    let from_files = files.is_some();
    let mut modules = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for (i, value) in values.iter().enumerate() {
        let day1 = value["kind"] == "BootModuleConfig";
        let parsed = if day1 {
            Module::from_boot_config(value)
        } else {
            Module::from_value(value)
        };
        let module = parsed.map_err(|reason| {
            let name = format!(
                "{}/{}",
                value["metadata"]["namespace"].as_str().unwrap_or_default(),
                value["metadata"]["name"].as_str().unwrap_or("(unnamed)")
            );
            let place = match files.and_then(|f| f.get(i)) {
                Some(file) => format!(" in {file}"),
                None => String::new(),
            };
            let kind = if day1 { "BootModuleConfig" } else { "Module" };
            Error::invalid(
                format!("{kind} {name}{place} cannot be read: {reason}"),
                format!(
                    "fix the {kind}: it does not match the {kind} CRD (kmm.sigs.x-k8s.io/v1beta1)"
                ),
            )
        })?;
        if let Some(ns) = &args.namespace
            && from_files
            && module.metadata.namespace != *ns
        {
            continue;
        }
        if !args.modules.is_empty() && !args.modules.contains(&module.metadata.name) {
            continue;
        }
        named.insert(module.metadata.name.clone());
        if module.is_deleting() {
            term.info(&format!("skipping {}: it is being deleted", module.key()));
            continue;
        }
        if module.container().is_none() {
            term.info(&format!(
                "skipping {}: it has no moduleLoader (device plugin or DRA only)",
                module.key()
            ));
            continue;
        }
        modules.push(module);
    }
    for wanted in &args.modules {
        if !named.contains(wanted) {
            let place = match &args.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "in any namespace".into(),
            };
            return Err(Error::invalid(
                format!("no Module named {wanted} {place}"),
                "list them with `kubectl get modules -A`",
            ));
        }
    }
    modules.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(modules)
}

/// `-v`: what the check read against what the images hold.
pub(super) fn report_transfer(term: &Term, transferred: Transferred, inspected: Inspected) {
    let fetched = transferred.manifest_bytes + transferred.blob_bytes;
    // --deep's driver-toolkit layers are said on their own line, not counted against the
    // kmod images.
    let share = if inspected.bytes > 0 {
        format!(
            " ({:.3}% of their size)",
            fetched.saturating_sub(inspected.dtk_bytes) as f64 * 100.0 / inspected.bytes as f64
        )
    } else {
        String::new()
    };
    term.info(&format!(
        "fetched {fetched} bytes in {} requests; {} kmod images read, of {} bytes{share}",
        transferred.requests, inspected.images, inspected.bytes
    ));
    if inspected.dtk_bytes > 0 {
        term.info(&format!(
            "--deep: {} bytes of driver-toolkit layers read for Module.symvers and the kernel's \
             vermagic (--boot: and its image and in-tree modules)",
            inspected.dtk_bytes
        ));
    }
}

/// 2 when KMM would refuse a Module, else 1 when one would fail to load, else 4 when one could
/// not be checked, else 0 (with nothing to check too: said as a warning, and `NoModules`).
pub(super) fn exit_status(rows: &[Row]) -> ExitStatus {
    match Outcome::of(rows) {
        Outcome::Invalid => ExitStatus::BadInput,
        Outcome::Failure => ExitStatus::VerificationFailed,
        Outcome::Unknown | Outcome::TimedOut | Outcome::InProgress => ExitStatus::Environment,
        Outcome::Success | Outcome::NoModules => ExitStatus::Success,
    }
}
