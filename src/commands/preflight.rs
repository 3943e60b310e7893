//! `kubectl kmm preflight`: resolve the kernel, create the object this KMM understands, follow
//! it to a verdict.

use std::io::IsTerminal;

use crate::cli::{DryRun, PreflightArgs};
use crate::cluster::follow::{self, End, Step};
use crate::cluster::kmm::{self, Inputs, KmmApi, Plan, Resource};
use crate::cluster::status::Progress;
use crate::cluster::{Cluster, status};
use crate::error::{Error, ExitStatus, Result};
use crate::output::ReportFormat;
use crate::output::preflight::{Live, Report};
use crate::output::{self, Term};
use crate::registry::cache::Cache;
use crate::release::ReleaseSpec;

use super::context::{self, PullSecret};

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

    let cluster = Cluster::connect(&super::cluster_options(&args.kube)).await?;
    let api = cluster.detect_kmm().await?;
    term.info(&format!(
        "{}: {} (from {})",
        cluster.server,
        api.generation(),
        api.source
    ));

    let (inputs, basis) = match &release_spec {
        Some(spec) => resolve_release(&cluster, &args, spec, &release_repo, term).await?,
        None => {
            let kernel = args.kernel.clone().unwrap_or_default();
            let inputs = Inputs {
                kernel_version: kernel.trim().to_string(),
                dtk_image: args.dtk_image.clone(),
                release_image: None,
                push_built_image: args.push_built_image,
                rt: false,
            };
            (inputs, kernel.trim().to_string())
        }
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| kmm::default_name(&basis, args.rt));
    let plan = kmm::plan(&api, &name, &inputs)?;
    if let Some(note) = &plan.note {
        term.warn(note);
    }

    if args.dry_run == DryRun::Client {
        let report = report(
            &plan,
            &inputs,
            "DryRun",
            &Progress::default(),
            Some(plan.object.clone()),
        );
        match args.output {
            ReportFormat::Table => output::stdout(&output::to_yaml(&plan.object)),
            format => output::stdout(&report.render(format).unwrap_or_default()),
        }
        return Ok(ExitStatus::Success);
    }

    make_room(&cluster, &api, &plan, &args, term).await?;
    cluster.create(&plan.resource, &plan.object).await?;
    term.info(&format!("created {} {name}", plan.resource.kind));

    if args.no_wait {
        let report = report(&plan, &inputs, "Created", &Progress::default(), None);
        match report.render(args.output) {
            Some(text) => output::stdout(&text),
            None => output::stdout(&format!(
                "{} {name} created for kernel {}.\nFollow it with: kubectl kmm status {name} -w",
                plan.resource.kind, inputs.kernel_version
            )),
        }
        return Ok(ExitStatus::Success);
    }

    let header = format!(
        "{} {name}: kernel {}",
        plan.resource.kind, inputs.kernel_version
    );
    let outcome = follow_to_verdict(
        &cluster,
        &plan.resource,
        &name,
        args.timeout.0,
        args.output,
        term,
        header,
    )
    .await?;
    let report = report(&plan, &inputs, outcome.result, &outcome.progress, None);
    if let Some(text) = report.render(args.output) {
        output::stdout(&text);
    }
    if args.cleanup && matches!(outcome.end, End::Complete) {
        cluster.delete(&plan.resource, &name).await?;
        term.info(&format!(
            "deleted {} {name} (--cleanup)",
            plan.resource.kind
        ));
    }
    Ok(outcome.status)
}

/// Credentials and mirrors, then release → DTK → kernel.
async fn resolve_release(
    cluster: &Cluster,
    args: &PreflightArgs,
    spec: &ReleaseSpec,
    release_repo: &crate::registry::reference::ImageRef,
    term: &Term,
) -> Result<(Inputs, String)> {
    let registry = context::registry(Some(cluster), &args.registry, PullSecret::Last, term).await?;
    let cache = Cache::new(args.registry.no_cache);
    let nodes = context::nodes(Some(cluster), term).await?;
    let answer = context::resolve_release(
        Some(cluster),
        nodes.as_deref(),
        &registry,
        &cache,
        spec,
        release_repo,
        args.arch,
        term,
    )
    .await?;
    let kernel_version = if args.rt {
        context::rt_kernel(&answer)?
    } else {
        answer.kernel_version.clone()
    };
    let inputs = Inputs {
        kernel_version,
        dtk_image: Some(answer.dtk_image.clone()),
        release_image: Some(answer.release_image.clone()),
        push_built_image: args.push_built_image,
        rt: args.rt,
    };
    Ok((inputs, answer.release_version))
}

/// Two preflights at once fight over the same per-Module objects in KMM ≥ 2.4 (kmm-api.md §4.4);
/// in older KMMs only an object of the same name is in the way.
async fn make_room(
    cluster: &Cluster,
    api: &KmmApi,
    plan: &Plan,
    args: &PreflightArgs,
    term: &Term,
) -> Result<()> {
    let name = plan.object["metadata"]["name"].as_str().unwrap_or_default();
    let mut existing: Vec<(Resource, String)> = Vec::new();
    for resource in api.preflight_resources() {
        for object in cluster.list(&resource).await? {
            let other = object["metadata"]["name"].as_str().unwrap_or_default();
            if api.shared_module_objects || other == name {
                existing.push((resource.clone(), other.to_string()));
            }
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = existing
        .iter()
        .map(|(r, n)| format!("{}/{n}", r.kind))
        .collect();
    let interactive = std::io::stdin().is_terminal() && term.stderr_is_terminal;
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
    for (resource, other) in &existing {
        cluster.delete(resource, other).await?;
        term.info(&format!("deleting {}/{other}", resource.kind));
    }
    for (resource, other) in &existing {
        cluster.wait_gone(resource, other).await?;
    }
    term.info(&format!("deleted {}", names.join(", ")));
    Ok(())
}

fn report(
    plan: &Plan,
    inputs: &Inputs,
    result: &str,
    progress: &Progress,
    object: Option<serde_json::Value>,
) -> Report {
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
        object,
    }
}

pub struct Outcome {
    pub end: End,
    pub result: &'static str,
    pub status: ExitStatus,
    pub progress: Progress,
}

/// Ctrl-C, or never if the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Follow `name` with the live view, then print the verdict. Shared with `status -w`.
pub async fn follow_to_verdict(
    cluster: &Cluster,
    resource: &Resource,
    name: &str,
    timeout: Option<std::time::Duration>,
    format: ReportFormat,
    term: &Term,
    header: String,
) -> Result<Outcome> {
    let mut live = Live::new(format, term, header);
    let followed = follow::follow(
        cluster,
        resource,
        name,
        timeout,
        ctrl_c(),
        |step| match step {
            Step::Changed { progress, .. } => live.changed(progress),
            Step::Tick => live.tick(),
            Step::Notice(text) => term.info(&text),
        },
    )
    .await?;
    let kernel = followed.object["spec"]["kernelVersion"]
        .as_str()
        .or(followed.object["spec"]["releaseImage"].as_str())
        .unwrap_or("the target")
        .to_string();
    let progress = followed.progress;
    let mut lines = Vec::new();
    let (result, status) = match followed.end {
        End::Complete if progress.rows.is_empty() => {
            lines.push("No KMM Modules in the cluster: nothing to verify.".to_string());
            ("Success", ExitStatus::Success)
        }
        End::Complete if progress.count(status::State::Failed) == 0 => {
            lines.push(format!(
                "All {} Modules verified for {kernel}: safe to upgrade as far as KMM is concerned.",
                progress.rows.len()
            ));
            ("Success", ExitStatus::Success)
        }
        End::Complete => {
            lines.push(format!(
                "{} of {} Modules failed verification for {kernel}:",
                progress.count(status::State::Failed),
                progress.rows.len()
            ));
            for row in progress
                .rows
                .iter()
                .filter(|r| r.state == status::State::Failed)
            {
                lines.push(format!("  {}/{}: {}", row.namespace, row.name, row.reason));
            }
            ("Failure", ExitStatus::VerificationFailed)
        }
        End::TimedOut => {
            let waited = timeout
                .map(crate::output::preflight::elapsed)
                .unwrap_or_default();
            let unfinished: Vec<_> = progress.unfinished().cloned().collect();
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
                    row.reason
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
            ("TimedOut", ExitStatus::TimedOut)
        }
        End::Interrupted => {
            lines.push(format!(
                "Stopped following; {} {name} is left in the cluster. Resume with: kubectl kmm status {name} -w",
                resource.kind
            ));
            ("Interrupted", ExitStatus::Interrupted)
        }
    };
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
        progress,
    })
}
