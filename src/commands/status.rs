//! `kubectl kmm status [NAME] [-w] [--check]`: existing preflights, with the same display as
//! `preflight`. KMM's word only, unless `--check` adds the client check for each preflight's
//! kernel.

use std::sync::Arc;

use serde_json::Value;

use super::check::Setup;
use super::context::{self, Deadline, Shared};
use super::fleet::Said;
use super::judge::{ClientJudge, checked_modules};
use super::preflight::follow_to_verdict;
use crate::cli::StatusArgs;
use crate::cluster::Cluster;
use crate::cluster::follow::Judge;
use crate::cluster::kmm::{KmmApi, Resource};
use crate::cluster::status::{self, Progress, State};
use crate::error::{Error, ExitStatus, Result};
use crate::module::check::Outcome;
use crate::module::check::{Checker, Plan, Target};
use crate::module::kernels::NodeInfo;
use crate::module::signature::Trust;
use crate::module::spec::Module;
use crate::output::ReportFormat;
use crate::output::fleet::{ClusterEntry, Fleet, Tabular};
use crate::output::preflight::{self as view, Report};
use crate::output::{self, Term};
use crate::registry::cache::Cache;
use crate::release::{self, ReleaseSpec};

/// Said under the tables when the client check did not run.
const KMM_ONLY: &str = "KMM's word only: KMM 2.4+ passes an image that holds no module for the \
                        kernel; --check adds the client check.";

pub async fn run(args: StatusArgs, term: &Term) -> Result<ExitStatus> {
    if let Some(contexts) = super::fleet::contexts(&args.kube, &args.fleet)? {
        return fleet(&args, &contexts, term).await;
    }
    let deadline = Deadline::new(args.watch.then_some(args.timeout.0).flatten());
    let cluster = Arc::new(Cluster::connect(&super::cluster_options(&args.kube)).await?);
    let read = read(&cluster, &args, deadline, None, term).await?;
    if args.watch {
        return watch(
            &cluster,
            read.found,
            deadline,
            &args,
            read.client.as_ref(),
            term,
        )
        .await;
    }
    let snapshot = read.judge(&args, deadline, term).await?;
    let exit = snapshot.exit();
    match (&args.name, args.output) {
        (Some(_), ReportFormat::Table | ReportFormat::Wide) => {
            let (progress, report) = &snapshot.checked[0];
            let mut lines = vec![format!(
                "{} {}: {}",
                report.kind,
                report.name,
                target(&snapshot.found[0].1)
            )];
            lines.extend(view::table(
                progress,
                None,
                term.stdout_color(),
                args.output == ReportFormat::Wide,
            ));
            lines.push(format!("{} ({})", view::summary(progress), report.result));
            lines.extend(snapshot.note().map(str::to_string));
            output::stdout(&lines.join("\n"));
        }
        (Some(_), format) => {
            let (_, report) = &snapshot.checked[0];
            output::stdout(&report.render(format).unwrap_or_default());
        }
        (None, format) => {
            print_list(&snapshot.found, &snapshot.checked, format);
            if let Some(note) = snapshot.note() {
                output::stdout(note);
            }
        }
    }
    Ok(exit)
}

/// What a cluster holds: its preflights (all, or the one named), and the client side when
/// `--check` asks for it.
struct Read {
    modules: Option<Vec<Value>>,
    found: Vec<(Resource, Value)>,
    client: Option<ClientSide>,
}

async fn read(
    cluster: &Arc<Cluster>,
    args: &StatusArgs,
    deadline: Deadline,
    shared: Option<(&Shared, &crate::registry::Registry)>,
    term: &Term,
) -> Result<Read> {
    term.step(format!("reading KMM's CRDs from {}", cluster.server));
    let api = deadline.bound(term, cluster.detect_kmm()).await?;
    let modules = deadline
        .bound(term, readable_modules(cluster, term))
        .await?;
    let found = match &args.name {
        Some(name) => vec![deadline.bound(term, find(cluster, &api, name)).await?],
        None => deadline.bound(term, preflights(cluster, &api)).await?,
    };
    let client = match args.check {
        true => Some(
            deadline
                .bound(
                    term,
                    ClientSide::new(cluster, args, modules.as_deref(), shared, term),
                )
                .await?,
        ),
        false => None,
    };
    term.step_done();
    Ok(Read {
        modules,
        found,
        client,
    })
}

impl Read {
    /// Each preflight as KMM says it is now, with the client check's word when it ran.
    async fn judge(self, args: &StatusArgs, deadline: Deadline, term: &Term) -> Result<Snapshot> {
        let mut checked: Vec<(Progress, Report)> = Vec::new();
        for (resource, object) in &self.found {
            let kmm = status::progress_of(object, self.modules.as_deref());
            let progress = match &self.client {
                Some(client) => {
                    let judge = deadline.bound(term, client.judge(object, term)).await?;
                    judge.judge(kmm)
                }
                None => kmm,
            };
            let report = report_of(resource, object, snapshot_result(&progress).0, &progress);
            checked.push((progress, report));
        }
        term.step_done();
        Ok(Snapshot {
            kmm_only: self.client.is_none() && args.output.is_table() && !self.found.is_empty(),
            named: args.name.is_some(),
            found: self.found,
            checked,
        })
    }
}

/// The preflights of one cluster as they stand.
pub(super) struct Snapshot {
    found: Vec<(Resource, Value)>,
    checked: Vec<(Progress, Report)>,
    /// Said under the tables: the client check did not run.
    kmm_only: bool,
    /// One preflight was asked for by name: its report is the document.
    named: bool,
}

impl Snapshot {
    fn note(&self) -> Option<&'static str> {
        self.kmm_only.then_some(KMM_ONLY)
    }

    /// A failed preflight (alone or in the list) is a failure; not done is not an error.
    fn exit(&self) -> ExitStatus {
        self.checked
            .iter()
            .map(|(progress, _)| snapshot_result(progress).1)
            .find(|s| *s == ExitStatus::VerificationFailed)
            .unwrap_or(ExitStatus::Success)
    }

    fn outcome(&self) -> Outcome {
        let results: Vec<&str> = self
            .checked
            .iter()
            .map(|(p, _)| snapshot_result(p).0)
            .collect();
        if results.is_empty() {
            Outcome::NoModules
        } else if results.contains(&"Failure") {
            Outcome::Failure
        } else if results.contains(&"InProgress") {
            Outcome::InProgress
        } else {
            Outcome::Success
        }
    }
}

impl serde::Serialize for Snapshot {
    /// What `status -o json` prints for the cluster: the report of the preflight named, or the
    /// `List` of all of them.
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let reports: Vec<&Report> = self.checked.iter().map(|(_, r)| r).collect();
        match (self.named, reports.first()) {
            (true, Some(report)) => report.serialize(serializer),
            _ => output::List::of(&reports).serialize(serializer),
        }
    }
}

impl Tabular for Snapshot {
    fn header(&self, wide: bool) -> Vec<String> {
        list_header(wide)
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        list_rows(&self.found, &self.checked, wide)
    }

    fn summary_line(&self) -> String {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for (progress, _) in &self.checked {
            *counts.entry(snapshot_result(progress).0).or_default() += 1;
        }
        if counts.is_empty() {
            return "no preflights".into();
        }
        let counts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!(
            "{} preflight{}: {}",
            self.checked.len(),
            if self.checked.len() == 1 { "" } else { "s" },
            counts.join(", ")
        )
    }
}

/// Every cluster's preflights at once, in one table with CLUSTER first (`-w` follows one
/// cluster: `preflight --contexts` follows new ones across a fleet).
async fn fleet(args: &StatusArgs, contexts: &[String], term: &Term) -> Result<ExitStatus> {
    if args.watch {
        return Err(Error::invalid(
            "status -w follows the preflights of one cluster",
            "drop -w for the fleet's preflights as they stand, or follow each cluster with --context",
        ));
    }
    let shared = Shared::new(Cache::new(args.registry.no_cache));
    let base = super::fleet::base_registry(&args.registry, args.kube.request_timeout.0, term)?;
    let (shared, base) = (&shared, &base);
    let entries = super::fleet::each(contexts, term, "reading", |name, voice| async move {
        let options = super::fleet::options_for(&args.kube, &name);
        let cluster = match Cluster::connect(&options).await {
            Ok(cluster) => Arc::new(cluster),
            Err(e) => return (ClusterEntry::failed(name, None, &e), vec![Said::Error(e)]),
        };
        let server = Some(cluster.server.clone());
        let deadline = Deadline::new(None);
        let snapshot = async {
            read(&cluster, args, deadline, Some((shared, base)), &voice)
                .await?
                .judge(args, deadline, &voice)
                .await
        }
        .await;
        match snapshot {
            Ok(snapshot) => {
                let (outcome, exit) = (snapshot.outcome(), snapshot.exit());
                (
                    ClusterEntry::checked(name, server, outcome, snapshot, exit),
                    Vec::new(),
                )
            }
            Err(e) => (ClusterEntry::failed(name, server, &e), vec![Said::Error(e)]),
        }
    })
    .await;
    let entries = super::fleet::tell(term, entries);
    let fleet = Fleet::new(entries);
    match args.output {
        ReportFormat::Name => {
            let names: Vec<String> = fleet
                .clusters
                .iter()
                .flat_map(|c| {
                    c.report.iter().flat_map(|s| {
                        s.checked
                            .iter()
                            .map(|(_, r)| format!("{}/{}", c.context, r.object_name()))
                    })
                })
                .collect();
            output::stdout(&names.join("\n"));
        }
        format => output::stdout(&fleet.render(format)),
    }
    if args.output.is_table() && !args.check {
        output::stdout(KMM_ONLY);
    }
    Ok(fleet.exit())
}

/// What `--check` needs: the registries as the nodes reach them, the Modules, and a checker.
struct ClientSide {
    cluster: Arc<Cluster>,
    checker: Arc<Checker>,
    modules: Vec<Module>,
    nodes: Option<Vec<NodeInfo>>,
    registries: context::Registries,
    shared: Shared,
}

impl ClientSide {
    async fn new(
        cluster: &Arc<Cluster>,
        args: &StatusArgs,
        modules: Option<&[Value]>,
        fleet: Option<(&Shared, &crate::registry::Registry)>,
        term: &Term,
    ) -> Result<ClientSide> {
        let Some(values) = modules else {
            return Err(Error::Forbidden {
                detail: "--check checks the Modules, and listing them is forbidden".into(),
            });
        };
        term.step(format!(
            "reading the nodes, pull secret and image mirrors of {}",
            cluster.server
        ));
        let (registries, nodes) = tokio::join!(
            context::registries(
                Some(cluster),
                &args.registry,
                args.kube.request_timeout.0,
                fleet.map(|(_, base)| base),
                term
            ),
            context::nodes(Some(cluster), term),
        );
        let (registries, nodes) = (registries?, nodes?);
        let shared = match fleet {
            Some((shared, _)) => shared.clone(),
            None => Shared::new(Cache::new(args.registry.no_cache)),
        };
        let checker = Setup::checker(
            &registries.modules,
            &shared,
            Setup::cluster_objects(cluster.clone()),
            term,
            args.deep.then(Trust::default),
            None,
        );
        Ok(ClientSide {
            cluster: cluster.clone(),
            checker,
            modules: checked_modules(values, term),
            nodes,
            registries,
            shared,
        })
    }

    /// The judge of `object`: every Module checked against the kernel the preflight carries
    /// (KMM ≥ 2.4: its kernelVersion and dtkImage; earlier: its releaseImage's kernel).
    async fn judge(&self, object: &Value, term: &Term) -> Result<ClientJudge> {
        let spec = &object["spec"];
        let (kernel, plan) = match (
            spec["kernelVersion"].as_str(),
            spec["releaseImage"].as_str(),
        ) {
            (Some(kernel), _) => {
                let goarch = context::kernel_goarch(kernel, None, self.nodes.as_deref(), term);
                let target = Target {
                    kernel: kernel.to_string(),
                    goarch,
                    dtk: spec["dtkImage"].as_str().map(str::to_string),
                    dtk_kernel: None,
                };
                (kernel.to_string(), Plan::Kernels(vec![target]))
            }
            (None, Some(image)) => {
                let image = image.parse().map_err(|e| {
                    Error::invalid(
                        format!("the preflight's releaseImage is not an image reference: {e}"),
                        "status --check reads the release the preflight names",
                    )
                })?;
                let (answer, _) = context::resolve_release(
                    Some(&self.cluster),
                    self.nodes.as_deref(),
                    &self.registries.release,
                    &self.shared,
                    &ReleaseSpec::PullSpec(image),
                    &release::parse_release_repo(None)?,
                    None,
                    term,
                )
                .await?;
                context::say_release(term, &answer);
                let rt = spec["useRTKernel"].as_bool().unwrap_or(false);
                let kernel = match rt {
                    true => context::rt_kernel(&answer)?,
                    false => answer.kernel_version.clone(),
                };
                let plan = Plan::Release {
                    nodes: self.nodes.clone(),
                    streams: answer.streams.clone(),
                    goarch: context::release_goarch(&answer),
                    force_rt: rt,
                };
                (kernel, plan)
            }
            (None, None) => {
                return Err(Error::invalid(
                    format!(
                        "{} names neither a kernelVersion nor a releaseImage",
                        object["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                    "status --check checks the Modules against the preflight's kernel",
                ));
            }
        };
        term.step(format!(
            "checking the images of {} Modules",
            self.modules.len()
        ));
        Ok(ClientJudge::start(Some(self.checker.clone()), plan, &kernel, &self.modules).await)
    }
}

/// `status -w`: follow each preflight in turn, all within one `--timeout`. A failure anywhere
/// decides the exit code, then a timeout; Ctrl-C stops at once.
async fn watch(
    cluster: &Cluster,
    found: Vec<(Resource, Value)>,
    deadline: Deadline,
    args: &StatusArgs,
    client: Option<&ClientSide>,
    term: &Term,
) -> Result<ExitStatus> {
    let single = args.name.is_some();
    if found.is_empty() {
        print_list(&[], &[], args.output);
        return Ok(ExitStatus::Success);
    }
    let mut reports = Vec::new();
    let mut exit = ExitStatus::Success;
    let count = found.len();
    for (i, (resource, object)) in found.iter().enumerate() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if deadline.remaining().is_some_and(|left| left.is_zero()) {
            let rest: Vec<String> = found[i..]
                .iter()
                .map(|(r, o)| {
                    format!(
                        "{}/{}",
                        r.kind,
                        o["metadata"]["name"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            term.warn(&format!(
                "not followed, the --timeout has passed: {}",
                rest.join(", ")
            ));
            break;
        }
        if !single && args.output.is_table() && i > 0 {
            output::stdout("");
        }
        let header = format!("{} {name}: {}", resource.kind, target(object));
        let mut judge = match client {
            Some(client) => deadline.bound(term, client.judge(object, term)).await?,
            None => ClientJudge::kmm_only(),
        };
        term.step_done();
        let outcome = follow_to_verdict(
            cluster,
            resource,
            name,
            deadline,
            args.output,
            term,
            header,
            &mut judge,
        )
        .await?;
        reports.push(report_of(
            resource,
            object,
            outcome.result,
            &outcome.progress,
        ));
        exit = match (exit, outcome.status) {
            (_, ExitStatus::Interrupted) => ExitStatus::Interrupted,
            (ExitStatus::VerificationFailed, _) | (_, ExitStatus::VerificationFailed) => {
                ExitStatus::VerificationFailed
            }
            (ExitStatus::TimedOut, _) | (_, ExitStatus::TimedOut) => ExitStatus::TimedOut,
            (ExitStatus::Success, other) => other,
            (kept, _) => kept,
        };
        if exit == ExitStatus::Interrupted {
            break;
        }
        if !single && args.output.is_table() && i + 1 < count {
            term.info(&format!("{} of {count} preflights followed", i + 1));
        }
    }
    match args.output {
        ReportFormat::Table | ReportFormat::Wide => {}
        ReportFormat::Name => {
            let names: Vec<String> = reports.iter().map(Report::object_name).collect();
            output::stdout(&names.join("\n"));
        }
        format if single => output::stdout(&reports[0].render(format).unwrap_or_default()),
        ReportFormat::Json => output::stdout(&output::to_json(&output::List::of(&reports))),
        ReportFormat::Yaml => output::stdout(&output::to_yaml(&output::List::of(&reports))),
    }
    Ok(exit)
}

/// Failure as soon as one failed (a failure is final), else Success when all verified, else
/// InProgress (exit 0: not done is not an error for a snapshot; `-w` waits for the verdict).
fn snapshot_result(progress: &Progress) -> (&'static str, ExitStatus) {
    if progress.count(State::Failed) > 0 {
        ("Failure", ExitStatus::VerificationFailed)
    } else if !progress.complete() {
        ("InProgress", ExitStatus::Success)
    } else {
        ("Success", ExitStatus::Success)
    }
}

/// Every Module, or None (said with -v) when Modules may not be listed.
async fn readable_modules(cluster: &Cluster, term: &Term) -> Result<Option<Vec<Value>>> {
    match cluster.list(&Resource::module()).await {
        Ok(modules) => Ok(Some(modules)),
        Err(Error::Forbidden { detail }) => {
            term.info(&format!(
                "cannot list Modules ({detail}); judging from the status entries alone"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn target(object: &Value) -> String {
    match (
        object["spec"]["kernelVersion"].as_str(),
        object["spec"]["releaseImage"].as_str(),
    ) {
        (Some(kernel), _) => format!("kernel {kernel}"),
        (None, Some(release)) => format!("release {release}"),
        _ => "(no target)".into(),
    }
}

async fn find(cluster: &Cluster, api: &KmmApi, name: &str) -> Result<(Resource, Value)> {
    for resource in api.preflight_resources() {
        if let Some(object) = cluster.get(&resource, name).await? {
            return Ok((resource, object));
        }
    }
    Err(Error::PreflightNotFound { name: name.into() })
}

fn report_of(resource: &Resource, object: &Value, result: &str, progress: &Progress) -> Report {
    let text = |v: &Value| v.as_str().map(str::to_string);
    Report {
        api_version: resource.api_version(),
        kind: resource.kind.into(),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .into(),
        kernel_version: text(&object["spec"]["kernelVersion"]),
        dtk_image: text(&object["spec"]["dtkImage"]),
        release_image: text(&object["spec"]["releaseImage"]),
        push_built_image: object["spec"]["pushBuiltImage"].as_bool().unwrap_or(false),
        result: result.into(),
        modules: Report::modules_from(progress),
    }
}

fn owned_by_listed(object: &Value, listed: &[(Resource, Value)]) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| listed.iter().any(|(_, l)| l["metadata"]["uid"] == o["uid"]))
        })
}

/// Every preflight object; a PreflightValidationOCP's own PreflightValidation (KMM ≥ 2.4
/// creates one of the same name) is an implementation detail, not a second preflight.
async fn preflights(cluster: &Cluster, api: &KmmApi) -> Result<Vec<(Resource, Value)>> {
    let mut found: Vec<(Resource, Value)> = Vec::new();
    if let Some((resource, _)) = &api.pvo {
        for object in cluster.list(resource).await? {
            found.push((resource.clone(), object));
        }
    }
    if let Some(resource) = &api.pv {
        for object in cluster.list(resource).await? {
            if !owned_by_listed(&object, &found) {
                found.push((resource.clone(), object));
            }
        }
    }
    Ok(found)
}

/// The list of preflights: a table (wide: with the push flag and the image), a `List` of
/// reports, or their names.
fn print_list(found: &[(Resource, Value)], checked: &[(Progress, Report)], format: ReportFormat) {
    let reports: Vec<&Report> = checked.iter().map(|(_, r)| r).collect();
    match format {
        ReportFormat::Json => output::stdout(&output::to_json(&output::List::of(&reports))),
        ReportFormat::Yaml => output::stdout(&output::to_yaml(&output::List::of(&reports))),
        ReportFormat::Name => {
            let names: Vec<String> = reports.iter().map(|r| r.object_name()).collect();
            if !names.is_empty() {
                output::stdout(&names.join("\n"));
            }
        }
        ReportFormat::Table | ReportFormat::Wide if reports.is_empty() => {
            output::stdout("No preflights in the cluster.")
        }
        ReportFormat::Table | ReportFormat::Wide => {
            let wide = format == ReportFormat::Wide;
            let mut rows = vec![list_header(wide)];
            rows.extend(list_rows(found, checked, wide));
            output::stdout(&output::align(&rows, &|_, _, cell| cell).join("\n"));
        }
    }
}

/// KIND, NAME, TARGET, MODULES, RESULT (wide: PUSH, IMAGE).
fn list_header(wide: bool) -> Vec<String> {
    let mut header = vec!["KIND", "NAME", "TARGET", "MODULES", "RESULT"];
    if wide {
        header.extend(["PUSH", "IMAGE"]);
    }
    header.into_iter().map(String::from).collect()
}

fn list_rows(
    found: &[(Resource, Value)],
    checked: &[(Progress, Report)],
    wide: bool,
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for ((_, object), (progress, report)) in found.iter().zip(checked) {
        let verified = progress.count(State::Verified);
        let failed = progress.count(State::Failed);
        let mut row = vec![
            report.kind.clone(),
            report.name.clone(),
            target(object),
            format!(
                "{verified} verified, {failed} failed, {} in progress",
                progress.rows.len() - verified - failed
            ),
            report.result.clone(),
        ];
        if wide {
            row.push(report.push_built_image.to_string());
            row.push(
                report
                    .dtk_image
                    .clone()
                    .or_else(|| report.release_image.clone())
                    .unwrap_or_else(|| "-".into()),
            );
        }
        rows.push(row);
    }
    rows
}
