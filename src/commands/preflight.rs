//! `kubectl kmm preflight`: resolve the kernel, check every Module's image as the nodes will
//! load it, create the object this KMM understands, follow it to a verdict of both.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;

use serde_json::Value;

use crate::cli::{DryRun, PreflightArgs};
use crate::cluster::Cluster;
use crate::cluster::follow::{self, End, Judge, Step};
use crate::cluster::kmm::{self, Inputs, KmmApi, Resource};
use crate::cluster::status::{self, ClientCheck, Progress, State};
use crate::error::{Error, ExitStatus, Result};
use crate::module::check::{Plan, Target};
use crate::module::kernels::{self, Boot, NodeInfo, Variant};
use crate::module::signature::Trust;
use crate::module::spec::Module;
use crate::output::ReportFormat;
use crate::output::fleet::{ClusterEntry, Fleet};
use crate::output::preflight::{Live, Report};
use crate::output::{self, Term};
use crate::registry::cache::Cache;

use super::check::{self, Setup};
use super::context::{self, Shared};
use super::judge::{ClientJudge, checked_modules};

/// What the preflight is about, and how each Module's kernels are chosen for the client check.
struct Subject {
    inputs: Inputs,
    /// For the default name: the release version, or the kernel.
    basis: String,
    plan: Plan,
}

pub async fn run(args: PreflightArgs, term: &Term) -> Result<ExitStatus> {
    // Everything the user typed is checked before the cluster is touched.
    let (release_spec, release_repo) =
        context::release_flags(args.release.as_deref(), &args.release_repo)?;
    if let Some(kernel) = &args.kernel {
        kmm::validate_kernel(kernel)?;
    }
    if let Some(name) = &args.name {
        kmm::validate_name(name)?;
    }
    if args.dry_run != DryRun::None && args.output == ReportFormat::Wide {
        return Err(Error::invalid(
            "--dry-run prints the object, which has no wide form",
            "leave -o out for YAML, or pass -o json or -o name",
        ));
    }

    if let Some(contexts) = super::fleet::contexts(&args.kube, &args.fleet)? {
        return fleet(&args, release_spec.as_ref(), &release_repo, &contexts, term).await;
    }
    let deadline = context::Deadline::new(args.timeout.0);
    let cluster = Arc::new(Cluster::connect(&super::cluster_options(&args.kube)).await?);
    let armed = arm(
        cluster,
        &args,
        release_spec.as_ref(),
        &release_repo,
        deadline,
        None,
        term,
    )
    .await?;
    let mut following = match armed {
        Armed::Ended { status, .. } => return Ok(status),
        Armed::Follow(following) => following,
    };
    let outcome = follow_to_verdict(
        &following.cluster,
        &following.plan.resource,
        &following.name,
        deadline,
        args.output,
        term,
        following.header.clone(),
        &mut following.judge,
    )
    .await?;
    following.finish(&args, outcome, term).await
}

/// A cluster's preflight, created (or found) and ready to follow.
struct Following {
    cluster: Arc<Cluster>,
    plan: kmm::Plan,
    inputs: Inputs,
    name: String,
    judge: ClientJudge,
    header: String,
}

impl Following {
    /// The report of the verdict (printed for -o json|yaml|name), and `--cleanup`.
    async fn finish(
        &self,
        args: &PreflightArgs,
        outcome: Outcome,
        term: &Term,
    ) -> Result<ExitStatus> {
        let report = report(&self.plan, &self.inputs, outcome.result, &outcome.progress);
        if let Some(text) = report.render(args.output) {
            output::stdout(&text);
        }
        self.cleanup(args, &outcome, term).await?;
        Ok(outcome.status)
    }

    async fn cleanup(&self, args: &PreflightArgs, outcome: &Outcome, term: &Term) -> Result<()> {
        if args.cleanup && matches!(outcome.end, End::Complete) {
            self.cluster.delete(&self.plan.resource, &self.name).await?;
            term.info(&format!(
                "deleted {} {} (--cleanup)",
                self.plan.resource.kind, self.name
            ));
        }
        Ok(())
    }
}

/// What `arm` came to: a preflight to follow, or the end already (a dry run, `--no-wait`, a
/// deadline before the object was followed). In a fleet, the end's report is not printed but
/// returned.
enum Armed {
    Follow(Box<Following>),
    Ended {
        report: Option<Report>,
        status: ExitStatus,
    },
}

/// Everything up to following: KMM's API and the release at once, the client check while the
/// object is created (or after the objects in the way are gone). `fleet`: the registry and
/// reads the clusters of a fleet share (nothing printed then, and no question asked).
async fn arm(
    cluster: Arc<Cluster>,
    args: &PreflightArgs,
    release_spec: Option<&crate::release::ReleaseSpec>,
    release_repo: &crate::registry::reference::ImageRef,
    deadline: context::Deadline,
    fleet: Option<(&Shared, &crate::registry::Registry)>,
    term: &Term,
) -> Result<Armed> {
    // Two lines of work at once, each starting a step as soon as its inputs are there: KMM's
    // CRDs, then the preflight objects already there; and the cluster reads the release needs
    // (pull secret, mirror sets, nodes, ClusterVersion) and the Modules, then the release.
    // KMM's errors win: without KMM nothing else matters.
    term.step(format!(
        "reading KMM's CRDs, nodes, Modules, pull secret and image mirrors from {}",
        cluster.server
    ));
    let kmm_side = async {
        let api = cluster.detect_kmm().await?;
        let listed = match args.dry_run {
            DryRun::None => list_preflights(&cluster, &api).await?,
            _ => Vec::new(),
        };
        Ok::<_, Error>((api, listed))
    };
    let release_side = release_side(&cluster, args, release_spec, release_repo, fleet, term);
    let ((api, listed), side) = deadline
        .bound(term, async {
            tokio::pin!(kmm_side, release_side);
            tokio::select! {
                kmm = &mut kmm_side => Ok((kmm?, release_side.await)),
                release = &mut release_side => Ok((kmm_side.await?, release)),
            }
        })
        .await?;
    let ReleaseSide {
        registries,
        shared,
        modules,
        client_check,
        target,
    } = side?;
    term.info(&format!(
        "{}: {} (from {})",
        cluster.server,
        api.generation(),
        api.source
    ));
    let inputs = &target.inputs;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| kmm::default_name(&target.basis, inputs.rt));
    let plan = kmm::plan(&api, &name, inputs)?;
    if let Some(note) = &plan.note {
        term.warn(note);
    }

    // kubectl's dry runs: the object itself (YAML unless -o json or name), so that it can be
    // reviewed or piped to `kubectl apply -f -`; the server's answer with `server`.
    if args.dry_run != DryRun::None {
        let object = if args.dry_run == DryRun::Server {
            term.step(format!(
                "sending {} {name} to {} as a dry run",
                plan.resource.kind, cluster.server
            ));
            let answer = deadline
                .bound(term, cluster.create(&plan.resource, &plan.object, true))
                .await?;
            term.step_done();
            answer
        } else {
            plan.object.clone()
        };
        output::stdout(&match args.output {
            ReportFormat::Json => output::to_json(&object),
            ReportFormat::Name => report(&plan, inputs, "", &Progress::default()).object_name(),
            _ => output::to_yaml(&object),
        });
        return Ok(Armed::Ended {
            report: None,
            status: ExitStatus::Success,
        });
    }

    let assessment = assess(&api, &plan, args, listed)?;
    let room = if assessment.same {
        term.say(&format!(
            "{} {name} exists with the same spec: following it",
            plan.resource.kind
        ));
        Room::Follow
    } else {
        Room::Create
    };

    // The client check: what the nodes will find in each image. With nothing in the way, KMM's
    // object is created while the images are checked; otherwise the check runs first and the
    // objects in the way are dealt with (a prompt at a terminal) after it.
    let checker = client_check.then(|| {
        Setup::checker(
            &registries.modules,
            &shared,
            Setup::cluster_objects(cluster.clone()),
            term,
            args.deep.then(Trust::default),
            None,
        )
    });
    if checker.is_some() {
        term.step(format!("checking the images of {} Modules", modules.len()));
    }
    let kept = checker.clone();
    let check = ClientJudge::start(
        checker,
        target.plan.clone(),
        &inputs.kernel_version,
        &modules,
    );
    let create = async {
        if room == Room::Create {
            cluster.create(&plan.resource, &plan.object, false).await?;
            term.info(&format!("created {} {name}", plan.resource.kind));
        }
        Ok(())
    };
    let judged = deadline
        .bound(term, async {
            if assessment.existing.is_empty() {
                let (judge, created) = tokio::join!(check, create);
                created.map(|()| judge)
            } else {
                let judge = check.await;
                term.step_done();
                clear(&cluster, &assessment.existing, args, fleet.is_some(), term).await?;
                term.step(format!("creating {} {name}", plan.resource.kind));
                create.await.map(|()| judge)
            }
        })
        .await;
    term.step_done();
    let judge = match (judged, kept) {
        (Ok(judge), _) => judge,
        (Err(e @ Error::DeadlineExceeded { .. }), Some(checker)) => {
            // What the client check proved before the deadline is still said.
            let judge = ClientJudge::with_rows(
                None,
                target.plan.clone(),
                &inputs.kernel_version,
                &modules,
                checker.decided(),
            );
            let progress = judge.judge(status::evaluate(&judge.refs(), &[]));
            let report = report(&plan, inputs, "TimedOut", &progress);
            let error = check::name_waits(e, &checker);
            if fleet.is_some() {
                let failed = !failure_lines(&progress, &inputs.kernel_version).is_empty();
                term.error(&error);
                return Ok(Armed::Ended {
                    report: Some(report),
                    status: if failed {
                        ExitStatus::VerificationFailed
                    } else {
                        error.exit_status()
                    },
                });
            }
            let status = cut_short(
                error,
                &progress,
                &report,
                &inputs.kernel_version,
                args.output,
                term,
            )?;
            return Ok(Armed::Ended {
                report: None,
                status,
            });
        }
        (Err(e), _) => return Err(e),
    };

    if args.no_wait {
        // KMM has said nothing yet: what the client check found is all there is.
        let progress = judge.judge(status::evaluate(&judge.refs(), &[]));
        let (result, what) = match room {
            Room::Create => ("Created", "created"),
            Room::Follow => ("Following", "was already there with the same spec"),
        };
        let report = report(&plan, inputs, result, &progress);
        let failed = failure_lines(&progress, &inputs.kernel_version);
        let status = if failed.is_empty() {
            ExitStatus::Success
        } else {
            ExitStatus::VerificationFailed
        };
        if fleet.is_some() {
            for line in &failed {
                term.say(line.trim_start());
            }
            return Ok(Armed::Ended {
                report: Some(report),
                status,
            });
        }
        match report.render(args.output) {
            Some(text) => {
                output::stdout(&text);
                for line in &failed {
                    term.say(line.trim_start());
                }
            }
            None => {
                let mut lines = vec![format!(
                    "{} {name} {what} for kernel {}.",
                    plan.resource.kind, inputs.kernel_version
                )];
                lines.extend(failed.iter().cloned());
                lines.push(format!("Follow it with: kubectl kmm status {name} -w"));
                output::stdout(&lines.join("\n"));
            }
        }
        return Ok(Armed::Ended {
            report: None,
            status,
        });
    }

    let header = format!(
        "{} {name}: kernel {}",
        plan.resource.kind, inputs.kernel_version
    );
    Ok(Armed::Follow(Box::new(Following {
        inputs: inputs.clone(),
        cluster,
        plan,
        name,
        judge,
        header,
    })))
}

/// The deadline passed before KMM's object could be followed: what the client check decided
/// is reported (`report`, or lines for the table) and counted. A Module already failed is
/// exit 1 (the error still said); otherwise the deadline's error, exit 4.
fn cut_short(
    error: Error,
    progress: &Progress,
    report: &Report,
    kernel: &str,
    format: ReportFormat,
    term: &Term,
) -> Result<ExitStatus> {
    let failed = failure_lines(progress, kernel);
    let mut report = report.clone();
    if !failed.is_empty() {
        report.result = "Failure".into();
    }
    match report.render(format) {
        Some(text) => output::stdout(&text),
        None => {
            let decided: Vec<(&status::Row, &ClientCheck)> = progress
                .rows
                .iter()
                .filter_map(|r| r.check.as_ref().map(|c| (r, c)))
                .collect();
            let mut lines = vec![format!(
                "Before the deadline the client check decided {} of {} Modules:",
                decided.len(),
                progress.rows.len()
            )];
            for (row, check) in decided {
                let why = match row.state {
                    State::Failed => &row.why,
                    _ => &check.reason,
                };
                lines.push(format!(
                    "  {}/{}: {}: {why}",
                    row.namespace, row.name, check.verdict
                ));
            }
            output::stdout(&lines.join("\n"));
        }
    }
    if failed.is_empty() {
        return Err(error);
    }
    term.error(&error);
    Ok(ExitStatus::VerificationFailed)
}

/// `N of M Modules failed verification for K:` and a line per failed Module with its reason
/// (nothing when none failed).
fn failure_lines(progress: &Progress, kernel: &str) -> Vec<String> {
    let failed: Vec<&status::Row> = progress
        .rows
        .iter()
        .filter(|r| r.state == State::Failed)
        .collect();
    if failed.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{} of {} Modules failed verification for {kernel}:",
        failed.len(),
        progress.rows.len()
    )];
    for row in failed {
        lines.push(format!("  {}/{}: {}", row.namespace, row.name, row.why));
    }
    lines
}

/// The kernel of the preflight object: `--rt`'s, else the one most of the Modules' nodes boot.
/// The client check gives each Module the kernels its own nodes boot.
fn release_target(
    args: &PreflightArgs,
    answer: &crate::release::DtkAnswer,
    nodes: Option<&[NodeInfo]>,
    modules: &[Module],
    term: &Term,
) -> Result<Subject> {
    let goarch = context::release_goarch(answer);
    let boot = if args.rt {
        Boot {
            variant: Variant::RealTime,
            ..Boot::STANDARD
        }
    } else {
        let selectors: Vec<&BTreeMap<String, String>> =
            modules.iter().map(|m| &m.spec.selector).collect();
        nodes.map_or(Boot::STANDARD, |nodes| {
            kernels::most_booted(&selectors, nodes, &goarch)
        })
    };
    let kernel_version = match kernels::dtk_kernel_of(boot, &answer.streams) {
        Ok(kernel) => kernel,
        Err(_) if args.rt => context::rt_kernel(answer)?,
        Err(reason) => {
            term.warn(&format!(
                "most Modules' nodes boot the {boot} kernel, but {reason}: the preflight object \
                 gets the standard kernel"
            ));
            answer.kernel_version.clone()
        }
    };
    if boot != Boot::STANDARD && !args.rt {
        term.say(&format!(
            "most of the Modules' nodes boot the {boot} kernel: the preflight object checks {kernel_version}"
        ));
    }
    // KMM is given the driver-toolkit's kernel, as it expects; the client check below checks
    // the kernel the nodes will boot.
    if let Ok(nodes_kernel) = kernels::kernel_of(boot, &answer.streams)
        && nodes_kernel != kernel_version
    {
        term.warn(&format!(
            "the preflight object checks {kernel_version}, the driver-toolkit's kernel, as KMM \
             expects: that is what KMM will check; the nodes will boot {nodes_kernel}, which the \
             client check checks"
        ));
    }
    Ok(Subject {
        inputs: Inputs {
            rt: kernel_version.ends_with("+rt"),
            kernel_version,
            dtk_image: Some(answer.dtk_image.clone()),
            release_image: Some(answer.release_image.clone()),
            push_built_image: args.push_built_image,
        },
        plan: Plan::Release {
            nodes: nodes.map(<[NodeInfo]>::to_vec),
            streams: answer.streams.clone(),
            goarch,
            force_rt: args.rt,
        },
        basis: answer.release_version.clone(),
    })
}

/// What to do about the object once the room is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Create,
    /// An object of that name and the same spec is there: follow it.
    Follow,
}

/// KMM ≥ 2.4 creates a PreflightValidation for every PreflightValidationOCP, of the same name and
/// owned by it: part of that preflight, not another one.
fn owned_by_ocp_preflight(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "PreflightValidationOCP")
}

/// How the spec we would create differs from the one in the cluster (None: the same). Only the
/// fields we set count; an absent field there equals a false or empty one here.
fn spec_difference(ours: &Value, theirs: &Value) -> Option<String> {
    let ours = ours.as_object()?;
    let differences: Vec<String> = ours
        .iter()
        .filter(|(key, value)| {
            let there = &theirs[key.as_str()];
            let empty = |v: &Value| v.is_null() || *v == Value::Bool(false) || *v == "";
            !(there == *value || (empty(there) && empty(value)))
        })
        .map(|(key, value)| format!("{key} is {} there, {value} here", theirs[key.as_str()]))
        .collect();
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// What the release side of `run` found: registry clients, the Modules to check, and what to
/// check them (and the KMM object) against.
struct ReleaseSide {
    registries: context::Registries,
    shared: Shared,
    modules: Vec<Module>,
    client_check: bool,
    target: Subject,
}

/// The cluster reads the release needs and the Modules, at once; then the release.
async fn release_side(
    cluster: &Cluster,
    args: &PreflightArgs,
    release_spec: Option<&crate::release::ReleaseSpec>,
    release_repo: &crate::registry::reference::ImageRef,
    fleet: Option<(&Shared, &crate::registry::Registry)>,
    term: &Term,
) -> Result<ReleaseSide> {
    let mut client_check = !args.no_client_check && args.dry_run == DryRun::None;
    let wanted = client_check;
    let modules = async move {
        match wanted {
            true => Some(cluster.modules(None).await),
            false => None,
        }
    };
    let cluster_version = async {
        if release_spec.is_some_and(|s| s.version().is_some()) {
            let _ = cluster.cluster_version().await;
        }
    };
    // The release needs the credentials, mirrors, nodes and ClusterVersion, not the Modules.
    let release = async {
        let (registries, nodes, ()) = tokio::join!(
            context::registries(
                Some(cluster),
                &args.registry,
                args.kube.request_timeout.0,
                fleet.map(|(_, base)| base),
                term,
            ),
            context::nodes(Some(cluster), term),
            cluster_version,
        );
        let (registries, nodes) = (registries?, nodes?);
        let shared = match fleet {
            Some((shared, _)) => shared.clone(),
            None => Shared::new(Cache::new(args.registry.no_cache)),
        };
        let answer = match release_spec {
            Some(spec) => Some(
                context::resolve_release(
                    Some(cluster),
                    nodes.as_deref(),
                    &registries.release,
                    &shared,
                    spec,
                    release_repo,
                    args.arch,
                    term,
                )
                .await
                .inspect(|(answer, _)| shared.say_release(term, answer))?,
            ),
            None => None,
        };
        Ok::<_, Error>((registries, nodes, shared, answer))
    };
    let (listed, released) = tokio::join!(modules, release);
    let modules = match listed {
        None => Vec::new(),
        Some(Ok(values)) => checked_modules(&values, term),
        Some(Err(e @ Error::Forbidden { .. })) => {
            term.warn(&format!(
                "the Modules cannot be read ({e}): KMM's preflight alone, without the client check"
            ));
            client_check = false;
            Vec::new()
        }
        Some(Err(e)) => return Err(e),
    };
    let (registries, nodes, shared, answer) = released?;
    let target = match answer {
        Some((answer, _)) => release_target(args, &answer, nodes.as_deref(), &modules, term)?,
        None => {
            let kernel = args.kernel.clone().unwrap_or_default().trim().to_string();
            let goarch = context::kernel_goarch(&kernel, args.arch, nodes.as_deref(), term);
            Subject {
                inputs: Inputs {
                    kernel_version: kernel.clone(),
                    dtk_image: args.dtk_image.clone(),
                    release_image: None,
                    push_built_image: args.push_built_image,
                    rt: false,
                },
                plan: Plan::Kernels(vec![Target {
                    kernel: kernel.clone(),
                    goarch,
                    dtk: args.dtk_image.clone(),
                    dtk_kernel: None,
                }]),
                basis: kernel,
            }
        }
    };
    Ok(ReleaseSide {
        registries,
        shared,
        modules,
        client_check,
        target,
    })
}

/// The preflight objects of every kind this KMM serves, listed at once.
async fn list_preflights(cluster: &Cluster, api: &KmmApi) -> Result<Vec<(Resource, Vec<Value>)>> {
    let resources = api.preflight_resources();
    let lists = futures::future::join_all(resources.iter().map(|r| cluster.list(r))).await;
    resources
        .into_iter()
        .zip(lists)
        .map(|(resource, list)| Ok((resource, list?)))
        .collect()
}

/// What is in the way of the preflight object: nothing, an object of that name with the same
/// spec (`same`: follow it), or others to delete first (`existing`).
struct Assessment {
    same: bool,
    existing: Vec<(Resource, String)>,
}

/// Two preflights at once fight over the same per-Module objects in KMM ≥ 2.4 (kmm-api.md §4.4);
/// in older KMMs only an object of the same name is in the way. One of that name and the same
/// spec is followed instead (unless `--replace`); one of that name and another spec is an error.
fn assess(
    api: &KmmApi,
    plan: &kmm::Plan,
    args: &PreflightArgs,
    listed: Vec<(Resource, Vec<Value>)>,
) -> Result<Assessment> {
    let name = plan.object["metadata"]["name"].as_str().unwrap_or_default();
    let mut existing: Vec<(Resource, String)> = Vec::new();
    let mut same = false;
    for (resource, objects) in listed {
        for object in objects {
            let other = object["metadata"]["name"].as_str().unwrap_or_default();
            if resource.kind == "PreflightValidation" && owned_by_ocp_preflight(&object) {
                continue;
            }
            if other == name && resource == plan.resource && !args.replace {
                match spec_difference(&plan.object["spec"], &object["spec"]) {
                    None => {
                        same = true;
                        continue;
                    }
                    Some(difference) => {
                        return Err(Error::PreflightDiffers {
                            kind: resource.kind.into(),
                            name: name.into(),
                            difference,
                        });
                    }
                }
            }
            if api.shared_module_objects || other == name {
                existing.push((resource.clone(), other.to_string()));
            }
        }
    }
    Ok(Assessment { same, existing })
}

/// Delete the objects in the way, after asking at a terminal (or with `--replace`/`--yes`),
/// and wait until they are gone.
async fn clear(
    cluster: &Cluster,
    existing: &[(Resource, String)],
    args: &PreflightArgs,
    in_fleet: bool,
    term: &Term,
) -> Result<()> {
    let names: Vec<String> = existing
        .iter()
        .map(|(r, n)| format!("{}/{n}", r.kind))
        .collect();
    let interactive = !in_fleet && std::io::stdin().is_terminal() && term.stderr_is_terminal;
    let delete = if args.replace {
        true
    } else if interactive && !args.yes {
        term.warn(&format!(
            "other preflight objects exist: {}",
            names.join(", ")
        ));
        dialoguer::Confirm::new()
            .with_prompt("Delete them before creating the new one?")
            .default(false)
            .wait_for_newline(true)
            .interact_on(&console::Term::stderr())
            .unwrap_or(false)
    } else {
        false
    };
    if !delete {
        return Err(Error::ExistingPreflights {
            names: names.join(", "),
        });
    }
    for (resource, other) in existing {
        cluster.delete(resource, other).await?;
        term.info(&format!("deleting {}/{other}", resource.kind));
    }
    term.step(format!("waiting for {} to be deleted", names.join(", ")));
    for (resource, other) in existing {
        cluster.wait_gone(resource, other).await?;
    }
    term.step_done();
    let why = if args.replace { " (--replace)" } else { "" };
    term.say(&format!("deleted {}{why}", names.join(", ")));
    Ok(())
}

fn report(plan: &kmm::Plan, inputs: &Inputs, result: &str, progress: &Progress) -> Report {
    Report {
        api_version: plan.resource.api_version(),
        kind: plan.resource.kind.into(),
        name: plan.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .into(),
        kernel_version: Some(inputs.kernel_version.clone()),
        dtk_image: inputs.dtk_image.clone(),
        release_image: inputs.release_image.clone(),
        push_built_image: inputs.push_built_image,
        result: result.into(),
        modules: Report::modules_from(progress),
    }
}

pub struct Outcome {
    pub end: End,
    pub result: &'static str,
    pub status: ExitStatus,
    pub progress: Progress,
}

/// Follow `name` with the live view, then print the verdict. Shared with `status -w`.
#[allow(clippy::too_many_arguments)]
pub async fn follow_to_verdict<J: Judge>(
    cluster: &Cluster,
    resource: &Resource,
    name: &str,
    deadline: context::Deadline,
    format: ReportFormat,
    term: &Term,
    header: String,
    judge: &mut J,
) -> Result<Outcome> {
    let mut live = Live::new(format, term, header);
    let _ctrl_c = super::interrupt::take();
    let followed = follow::follow(
        cluster,
        resource,
        name,
        deadline.remaining(),
        super::interrupt::wait(),
        judge,
        |step| match step {
            Step::Changed { progress, .. } => live.changed(progress),
            Step::Tick => live.tick(),
            Step::Notice(text) => live.notice(term, &text),
        },
    )
    .await?;
    let (lines, result, status) = verdict(cluster, resource, name, &followed, deadline).await;
    if live.is_quiet() {
        for line in &lines {
            term.info(line);
        }
    } else {
        output::stdout(&lines.join("\n"));
    }
    Ok(Outcome {
        end: followed.end,
        result,
        status,
        progress: followed.progress,
    })
}

/// What a followed preflight came to: the lines that say so, its result and its exit code.
async fn verdict(
    cluster: &Cluster,
    resource: &Resource,
    name: &str,
    followed: &follow::Followed,
    deadline: context::Deadline,
) -> (Vec<String>, &'static str, ExitStatus) {
    let kernel = followed.object["spec"]["kernelVersion"]
        .as_str()
        .or(followed.object["spec"]["releaseImage"].as_str())
        .unwrap_or("the target")
        .to_string();
    let progress = &followed.progress;
    let checked = progress.rows.iter().any(|r| r.check.is_some());
    let failed = failure_lines(progress, &kernel);
    let mut lines = Vec::new();
    let (result, status) = match followed.end {
        End::Complete if progress.rows.is_empty() => {
            lines.push("No KMM Modules in the cluster: nothing to verify.".to_string());
            ("NoModules", ExitStatus::Success)
        }
        End::Complete if !failed.is_empty() => {
            lines.extend(failed.iter().cloned());
            ("Failure", ExitStatus::VerificationFailed)
        }
        End::Complete if progress.count(State::Unknown) > 0 => {
            lines.push(format!(
                "{} of {} Modules could not be checked:",
                progress.count(State::Unknown),
                progress.rows.len()
            ));
            for row in progress.rows.iter().filter(|r| r.state == State::Unknown) {
                lines.push(format!("  {}/{}: {}", row.namespace, row.name, row.why));
            }
            ("Unknown", ExitStatus::Environment)
        }
        End::Complete if checked => {
            lines.push(format!(
                "All {} Modules verified for {kernel}: KMM's preflight passed them and their \
                 images hold what the nodes will load.",
                progress.rows.len()
            ));
            ("Success", ExitStatus::Success)
        }
        End::Complete => {
            lines.push(format!(
                "All {} Modules verified for {kernel}: safe to upgrade as far as KMM is concerned.",
                progress.rows.len()
            ));
            ("Success", ExitStatus::Success)
        }
        End::TimedOut => {
            let waited = deadline
                .limit()
                .map(crate::output::preflight::elapsed)
                .unwrap_or_default();
            let unfinished: Vec<_> = progress.unfinished().cloned().collect();
            lines.extend(failed.iter().cloned());
            lines.push(format!(
                "Timed out after {waited}: {} of {} Modules are still in progress:",
                unfinished.len(),
                progress.rows.len()
            ));
            for row in &unfinished {
                let mut line = format!(
                    "  {}/{}: {} ({}) {}",
                    row.namespace,
                    row.name,
                    if row.status.is_empty() {
                        "no status yet"
                    } else {
                        &row.status
                    },
                    if row.stage.is_empty() {
                        "-"
                    } else {
                        &row.stage
                    },
                    row.why
                );
                if let Some(pods) = cluster.pull_pod_reasons(&row.namespace, &row.name).await {
                    line.push_str(&format!("\n    pull pod: {pods}"));
                    line.push_str(
                        "\n    KMM 2.4+ never fails a missing image without build or sign: push the \
                         image, or give the Module a build section",
                    );
                }
                lines.push(line);
            }
            // A failure already proven outweighs the ones not finished.
            if failed.is_empty() {
                ("TimedOut", ExitStatus::TimedOut)
            } else {
                ("Failure", ExitStatus::VerificationFailed)
            }
        }
        End::Interrupted => {
            lines.push(format!(
                "Stopped following; {} {name} is left in the cluster. Resume with: kubectl kmm status {name} -w",
                resource.kind
            ));
            ("Interrupted", ExitStatus::Interrupted)
        }
    };
    (lines, result, status)
}

/// `preflight --contexts …`: each cluster's preflight created as `run` creates one, over one
/// registry client and the reads the clusters share; then all of them followed at once in one
/// live view (CLUSTER first, the failing and unfinished rows first, the rest summed up), and one
/// report with the worst exit code.
async fn fleet(
    args: &PreflightArgs,
    release_spec: Option<&crate::release::ReleaseSpec>,
    release_repo: &crate::registry::reference::ImageRef,
    contexts: &[String],
    term: &Term,
) -> Result<ExitStatus> {
    if args.dry_run != DryRun::None {
        return Err(Error::invalid(
            "--dry-run prints one cluster's object",
            "name one cluster with --context to see its object",
        ));
    }
    let deadline = context::Deadline::new(args.timeout.0);
    let shared = Shared::new(Cache::new(args.registry.no_cache));
    let base = super::fleet::base_registry(&args.registry, args.kube.request_timeout.0, term)?;
    let (shared, base) = (&shared, &base);
    let armed = super::fleet::each(contexts, term, "preparing", |name, voice| async move {
        let options = super::fleet::options_for(&args.kube, &name);
        let cluster = match Cluster::connect(&options).await {
            Ok(cluster) => Arc::new(cluster),
            Err(e) => {
                voice.error(&e);
                return (name, None, Err(e));
            }
        };
        let server = Some(cluster.server.clone());
        let armed = arm(
            cluster,
            args,
            release_spec,
            release_repo,
            deadline,
            Some((shared, base)),
            &voice,
        )
        .await;
        if let Err(e) = &armed {
            voice.error(e);
        }
        (name, server, armed)
    })
    .await;

    let mut entries: Vec<Option<ClusterEntry<Report>>> = Vec::new();
    let mut following: Vec<(usize, String, Option<String>, Box<Following>)> = Vec::new();
    for (i, (name, server, armed)) in armed.into_iter().enumerate() {
        entries.push(match armed {
            Err(e) => Some(ClusterEntry::failed(name, server, &e)),
            Ok(Armed::Ended { report, status }) => Some(match report {
                Some(report) => {
                    let outcome = outcome_of(&report.result);
                    ClusterEntry::checked(name, server, outcome, report, status)
                }
                None => ClusterEntry::failed(
                    name,
                    server,
                    &Error::NotKnown {
                        detail: "ended without a report".into(),
                    },
                ),
            }),
            Ok(Armed::Follow(f)) => {
                following.push((i, name, server, f));
                None
            }
        });
    }
    let (verdicts, quiet) = follow_all(&mut following, deadline, args.output, term).await;
    for ((i, name, server, f), verdict) in following.into_iter().zip(verdicts) {
        let voice = term.for_cluster(&name);
        let entry = match verdict {
            Ok((outcome, lines)) => {
                for line in &lines {
                    if quiet {
                        voice.info(line);
                    } else {
                        output::stdout(&format!("{name}: {line}"));
                    }
                }
                if let Err(e) = f.cleanup(args, &outcome, &voice).await {
                    voice.error(&e);
                }
                let report = report(&f.plan, &f.inputs, outcome.result, &outcome.progress);
                ClusterEntry::checked(
                    name,
                    server,
                    outcome_of(outcome.result),
                    report,
                    outcome.status,
                )
            }
            Err(e) => {
                voice.error(&e);
                ClusterEntry::failed(name, server, &e)
            }
        };
        entries[i] = Some(entry);
    }
    let fleet = Fleet::new(entries.into_iter().flatten().collect());
    match args.output {
        ReportFormat::Table | ReportFormat::Wide => {
            for c in fleet.clusters.iter().filter(|c| c.report.is_none()) {
                output::stdout(&format!(
                    "{}: not checked: {}",
                    c.context,
                    c.error.as_deref().unwrap_or_default()
                ));
            }
            output::stdout(&fleet.summary_line());
        }
        ReportFormat::Name => {
            let names: Vec<String> = fleet
                .clusters
                .iter()
                .filter_map(|c| {
                    let report = c.report.as_ref()?;
                    Some(format!("{}/{}", c.context, report.object_name()))
                })
                .collect();
            output::stdout(&names.join("\n"));
        }
        format => output::stdout(&fleet.render(format)),
    }
    Ok(fleet.exit())
}

/// A preflight's result word as a fleet counts it.
fn outcome_of(result: &str) -> crate::module::check::Outcome {
    use crate::module::check::Outcome;
    match result {
        "Success" => Outcome::Success,
        "Failure" => Outcome::Failure,
        "NoModules" => Outcome::NoModules,
        "TimedOut" => Outcome::TimedOut,
        "Created" | "Following" | "InProgress" => Outcome::InProgress,
        _ => Outcome::Unknown,
    }
}

type Verdict = Result<(Outcome, Vec<String>)>;

/// Follow every cluster's preflight at once in one live view; each one's outcome and the lines
/// that say it, and whether the view was quiet (the lines are for `-v` then).
async fn follow_all(
    following: &mut [(usize, String, Option<String>, Box<Following>)],
    deadline: context::Deadline,
    format: ReportFormat,
    term: &Term,
) -> (Vec<Verdict>, bool) {
    if following.is_empty() {
        return (Vec::new(), true);
    }
    let kinds: std::collections::BTreeSet<String> = following
        .iter()
        .map(|(_, _, _, f)| format!("{} {}", f.plan.resource.kind, f.name))
        .collect();
    let header = format!(
        "{} on {} clusters",
        kinds.into_iter().collect::<Vec<_>>().join(", "),
        following.len()
    );
    let live = std::cell::RefCell::new(Live::new(format, term, header));
    let progress: std::cell::RefCell<Vec<Progress>> =
        std::cell::RefCell::new(vec![Progress::default(); following.len()]);
    let _ctrl_c = super::interrupt::take();
    let follows = following
        .iter_mut()
        .enumerate()
        .map(|(i, (_, name, _, f))| {
            let (live, progress) = (&live, &progress);
            let voice = term.for_cluster(name);
            let name = name.clone();
            let Following {
                cluster,
                plan,
                name: object,
                judge,
                ..
            } = &mut **f;
            async move {
                let followed = follow::follow(
                    cluster,
                    &plan.resource,
                    object,
                    deadline.remaining(),
                    super::interrupt::wait(),
                    judge,
                    |step| match step {
                        Step::Changed { progress: now, .. } => {
                            let mut all = progress.borrow_mut();
                            let mut mine = now.clone();
                            for row in &mut mine.rows {
                                row.cluster = name.clone();
                            }
                            all[i] = mine;
                            let merged = Progress {
                                rows: all.iter().flat_map(|p| p.rows.iter().cloned()).collect(),
                            };
                            live.borrow_mut().changed(&merged);
                        }
                        Step::Tick => live.borrow_mut().tick(),
                        Step::Notice(text) => live.borrow_mut().notice(&voice, &text),
                    },
                )
                .await?;
                let (lines, result, status) =
                    verdict(cluster, &plan.resource, object, &followed, deadline).await;
                Ok((
                    Outcome {
                        end: followed.end,
                        result,
                        status,
                        progress: followed.progress,
                    },
                    lines,
                ))
            }
        });
    let verdicts = futures::future::join_all(follows).await;
    let quiet = live.borrow().is_quiet();
    drop(live);
    (verdicts, quiet)
}
