//! `kubectl kmm status [NAME] [-w]`: existing preflights, with the same display as `preflight`.

use serde_json::Value;

use super::preflight::follow_to_verdict;
use crate::cli::StatusArgs;
use crate::cluster::Cluster;
use crate::cluster::follow::KmmOnly;
use crate::cluster::kmm::{KmmApi, Resource};
use crate::cluster::status::{self, Progress, State};
use crate::error::{Error, ExitStatus, Result};
use crate::output::ReportFormat;
use crate::output::preflight::{self as view, Report};
use crate::output::{self, Term};

pub async fn run(args: StatusArgs, term: &Term) -> Result<ExitStatus> {
    let cluster = Cluster::connect(&super::cluster_options(&args.kube)).await?;
    let api = cluster.detect_kmm().await?;
    let modules = readable_modules(&cluster, term).await?;
    match &args.name {
        None => list(&cluster, &api, modules.as_deref(), args.output).await,
        Some(name) => {
            let (resource, object) = find(&cluster, &api, name).await?;
            if args.watch {
                let header = format!("{} {name}: {}", resource.kind, target(&object));
                let outcome = follow_to_verdict(
                    &cluster,
                    &resource,
                    name,
                    super::context::Deadline::new(args.timeout.0),
                    args.output,
                    term,
                    header,
                    &mut KmmOnly,
                )
                .await?;
                let report = report_of(&resource, &object, outcome.result, &outcome.progress);
                if let Some(text) = report.render(args.output) {
                    output::stdout(&text);
                }
                return Ok(outcome.status);
            }
            let progress = status::progress_of(&object, modules.as_deref());
            let (result, exit) = snapshot_result(&progress);
            let report = report_of(&resource, &object, result, &progress);
            match report.render(args.output) {
                Some(text) => output::stdout(&text),
                None => {
                    let mut lines = vec![format!("{} {name}: {}", resource.kind, target(&object))];
                    lines.extend(view::table(&progress, None, term.stdout_color()));
                    lines.push(format!("{} ({result})", view::summary(&progress)));
                    output::stdout(&lines.join("\n"));
                }
            }
            Ok(exit)
        }
    }
}

/// Success when all verified, Failure when any failed, InProgress otherwise (exit 0: not done
/// is not an error for a snapshot; `-w` waits for the verdict).
fn snapshot_result(progress: &Progress) -> (&'static str, ExitStatus) {
    if !progress.complete() {
        ("InProgress", ExitStatus::Success)
    } else if progress.count(State::Failed) > 0 {
        ("Failure", ExitStatus::VerificationFailed)
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
        object: None,
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

async fn list(
    cluster: &Cluster,
    api: &KmmApi,
    modules: Option<&[Value]>,
    format: ReportFormat,
) -> Result<ExitStatus> {
    let mut found: Vec<(Resource, Value)> = Vec::new();
    if let Some((resource, _)) = &api.pvo {
        for object in cluster.list(resource).await? {
            found.push((resource.clone(), object));
        }
    }
    if let Some(resource) = &api.pv {
        for object in cluster.list(resource).await? {
            // A PVO's own PreflightValidation is an implementation detail.
            if !owned_by_listed(&object, &found) {
                found.push((resource.clone(), object));
            }
        }
    }
    let checked: Vec<(Progress, Report)> = found
        .iter()
        .map(|(resource, object)| {
            let progress = status::progress_of(object, modules);
            let report = report_of(resource, object, snapshot_result(&progress).0, &progress);
            (progress, report)
        })
        .collect();
    let reports: Vec<&Report> = checked.iter().map(|(_, r)| r).collect();
    match format {
        ReportFormat::Json => output::stdout(&output::to_json(&reports)),
        ReportFormat::Yaml => output::stdout(&output::to_yaml(&reports)),
        ReportFormat::Table if reports.is_empty() => {
            output::stdout("No preflights in the cluster.")
        }
        ReportFormat::Table => {
            let mut rows = vec![
                ["KIND", "NAME", "TARGET", "MODULES", "RESULT"]
                    .map(String::from)
                    .to_vec(),
            ];
            for ((_, object), (progress, report)) in found.iter().zip(&checked) {
                let verified = progress.count(State::Verified);
                let failed = progress.count(State::Failed);
                rows.push(vec![
                    report.kind.clone(),
                    report.name.clone(),
                    target(object),
                    format!(
                        "{verified} verified, {failed} failed, {} in progress",
                        progress.rows.len() - verified - failed
                    ),
                    report.result.clone(),
                ]);
            }
            output::stdout(&output::align(&rows, &|_, _, cell| cell).join("\n"));
        }
    }
    Ok(ExitStatus::Success)
}
