//! `kubectl kmm check --hub`: every ManagedClusterModule of a KMM-hub, for every ManagedCluster
//! it selects, against the kernels that cluster's nodes will boot in the target release. All of
//! it is read from the hub: KMM's kernel claim says what each cluster runs, ACM's
//! ManagedClusterInfo what it is offered, TALM's ClusterGroupUpgrade (`--cgu`) which clusters
//! and which release. Clusters that share a target kernel share one check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::cli::CheckArgs;
use crate::cluster::Cluster;
use crate::cluster::hub::{
    self, CLUSTER_GROUP_UPGRADES, ClusterGroupUpgrade, DesiredUpdate, MANAGED_CLUSTER_INFOS,
    MANAGED_CLUSTER_MODULES, MANAGED_CLUSTERS, ManagedCluster, ManagedClusterModule, POLICIES,
};
use crate::error::{Error, ExitStatus, Result};
use crate::module::check::{Job, Outcome, Row, Target, Verdict};
use crate::module::kernels::{self, NodeInfo};
use crate::module::signature::Trust;
use crate::module::spec::Module;
use crate::output::check::{CheckReport, Matrix, ReleaseEntry};
use crate::output::fleet::{ClusterEntry, Fleet};
use crate::output::{self, Term};
use crate::registry::cache::Cache;
use crate::registry::reference::ImageRef;
use crate::release::{Arch, DtkAnswer, ReleaseSpec, dtk};

use super::check::{CheckDoc, Setup, exit_status, matrix_exit, report_transfer};
use super::context::{self, Deadline, Shared};

/// What KMM-hub does when an image is missing, said on every WillBuild/WillSign row.
fn builds_late(cluster: &str) -> String {
    format!(
        "KMM-hub builds it only once a node of {cluster} runs this kernel; that node has no \
         module until then"
    )
}

/// A target release, how it was named (for the table), and where it came from.
#[derive(Debug, Clone)]
struct Wanted {
    label: String,
    spec: ReleaseSpec,
}

/// A `--cgu NAMESPACE/NAME` argument.
fn cgu_name(text: &str) -> Result<(String, String)> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(Error::invalid(
            format!("--cgu {text:?} is not NAMESPACE/NAME"),
            "name the ClusterGroupUpgrade as `kubectl get cgu -A` lists it: --cgu ztp-install/upgrade-4-19",
        )),
    }
}

/// The release the CGU's policies name, checked against `--release`.
async fn cgu_target(
    hub: &Cluster,
    cgu: &ClusterGroupUpgrade,
    released: &[Wanted],
) -> Result<Vec<Wanted>> {
    let mut found: Vec<(String, DesiredUpdate)> = Vec::new();
    for policy in &cgu.managed_policies {
        let Some(object) = hub.get_hub(&POLICIES, &cgu.namespace, policy).await? else {
            return Err(Error::invalid(
                format!(
                    "ClusterGroupUpgrade {}/{} names Policy {policy}, which does not exist in {}",
                    cgu.namespace, cgu.name, cgu.namespace
                ),
                "TALM refuses such a CGU too: create the policy, or fix spec.managedPolicies",
            ));
        };
        match hub::desired_update(&object) {
            Ok(Some(update)) => found.push((policy.clone(), update)),
            Ok(None) => {}
            Err(reason) => {
                return Err(Error::invalid(
                    format!("Policy {}/{policy}: {reason}", cgu.namespace),
                    "name the release with --release",
                ));
            }
        }
    }
    let mut named: Vec<Wanted> = Vec::new();
    for (policy, update) in &found {
        let (text, spec) = match update {
            DesiredUpdate::Image(image) => (
                image.clone(),
                ReleaseSpec::PullSpec(image.parse().map_err(|e| {
                    Error::invalid(
                        format!("Policy {policy}: desiredUpdate.image {image}: {e}"),
                        "fix the policy's ClusterVersion template",
                    )
                })?),
            ),
            DesiredUpdate::Version(version) => (
                version.clone(),
                ReleaseSpec::parse(version).map_err(|e| {
                    Error::invalid(
                        format!("Policy {policy}: desiredUpdate.version {version}: {e}"),
                        "fix the policy's ClusterVersion template",
                    )
                })?,
            ),
        };
        if !named.iter().any(|w| w.label == text) {
            named.push(Wanted { label: text, spec });
        }
    }
    if named.len() > 1 {
        let all: Vec<&str> = named.iter().map(|w| w.label.as_str()).collect();
        return Err(Error::invalid(
            format!(
                "the policies of ClusterGroupUpgrade {}/{} name several releases: {}",
                cgu.namespace,
                cgu.name,
                all.join(", ")
            ),
            "one CGU upgrades to one release: fix the policies",
        ));
    }
    match (named.pop(), released) {
        (Some(from_policy), []) => Ok(vec![from_policy]),
        (Some(from_policy), given) => {
            let agrees = given.iter().all(|w| w.label == from_policy.label);
            if given.len() == 1 && agrees {
                Ok(vec![from_policy])
            } else {
                let given: Vec<&str> = given.iter().map(|w| w.label.as_str()).collect();
                Err(Error::invalid(
                    format!(
                        "--release {} disagrees with ClusterGroupUpgrade {}/{}, whose policies upgrade to {}",
                        given.join(", "),
                        cgu.namespace,
                        cgu.name,
                        from_policy.label
                    ),
                    "drop --release: the CGU's own target is checked",
                ))
            }
        }
        (None, []) => Err(Error::invalid(
            format!(
                "no policy of ClusterGroupUpgrade {}/{} sets a ClusterVersion desiredUpdate",
                cgu.namespace, cgu.name
            ),
            "name the target with --release",
        )),
        (None, given) => Ok(given.to_vec()),
    }
}

/// The architecture of a kernel as `uname -r` prints it (`….x86_64`, `….x86_64+rt`).
fn arch_of(kernel: &str) -> Option<Arch> {
    let plain = kernel.split('+').next().unwrap_or(kernel);
    dtk::kernel_arch(plain).and_then(Arch::from_rpm)
}

/// The kernels a cluster's nodes will boot in `answers` (one per architecture): for each
/// kernel it runs now, the release's kernel of the same kind (stream, real-time, 64k).
fn targets_of(
    running: &[String],
    answers: &BTreeMap<Arch, DtkAnswer>,
) -> (Vec<Target>, Vec<String>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut problems = Vec::new();
    for kernel in running {
        let Some(arch) = arch_of(kernel) else {
            problems.push(format!(
                "its claim lists {kernel}, whose architecture is not known"
            ));
            continue;
        };
        let Some(answer) = answers.get(&arch) else {
            continue;
        };
        let node = NodeInfo {
            name: String::new(),
            labels: BTreeMap::new(),
            kernel: kernel.clone(),
            os_image: String::new(),
            goarch: arch.goarch().to_string(),
        };
        match kernels::kernel_of(kernels::boot_of(&node), &answer.streams) {
            Ok(target) => {
                if !targets.iter().any(|t| t.kernel == target) {
                    targets.push(Target::in_release(&answer.streams, target, arch.goarch()));
                }
            }
            Err(reason) => problems.push(format!("for its nodes on {kernel}: {reason}")),
        }
    }
    targets.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    (targets, problems)
}

pub async fn run(
    args: &CheckArgs,
    releases: &[ReleaseSpec],
    release_repo: &ImageRef,
    term: &Term,
) -> Result<ExitStatus> {
    let cgu_ref = args.cgu.as_deref().map(cgu_name).transpose()?;
    let deadline = Deadline::new(args.timeout.0);
    let hub = Arc::new(Cluster::connect(&super::cluster_options(&args.kube)).await?);
    term.step(format!(
        "reading the ManagedClusterModules and ManagedClusters of hub {}",
        hub.server
    ));
    let (modules, clusters, infos, cgu, registries) = deadline
        .bound(term, async {
            let cgu = async {
                match &cgu_ref {
                    Some((ns, name)) => hub.get_hub(&CLUSTER_GROUP_UPGRADES, ns, name).await,
                    None => Ok(None),
                }
            };
            let infos = async {
                match args.updates {
                    true => hub.list_hub(&MANAGED_CLUSTER_INFOS, None).await,
                    false => Ok(Some(Vec::new())),
                }
            };
            let (modules, clusters, infos, cgu, registries) = tokio::join!(
                hub.list_hub(&MANAGED_CLUSTER_MODULES, None),
                hub.list_hub(&MANAGED_CLUSTERS, None),
                infos,
                cgu,
                context::registries(
                    Some(&hub),
                    &args.registry,
                    args.kube.request_timeout.0,
                    None,
                    term,
                ),
            );
            Ok((modules?, clusters?, infos?, cgu?, registries?))
        })
        .await?;
    term.step_done();
    let Some(modules) = modules else {
        return Err(Error::KmmNotInstalled {
            looked_for: format!(
                "no ManagedClusterModule resource ({}): KMM-hub is not installed on {}, or it is \
                 not the hub (--context)",
                MANAGED_CLUSTER_MODULES.group, hub.server
            ),
        });
    };
    let Some(clusters) = clusters else {
        return Err(Error::KmmNotInstalled {
            looked_for: format!(
                "no ManagedCluster resource ({}): {} is not an ACM (or OCM) hub",
                MANAGED_CLUSTERS.group, hub.server
            ),
        });
    };
    let clusters: Vec<ManagedCluster> = clusters.iter().map(ManagedCluster::from_value).collect();
    let mut mcms = Vec::new();
    for value in &modules {
        let mcm = ManagedClusterModule::from_value(value)?;
        if args.modules.is_empty() || args.modules.contains(&mcm.name) {
            mcms.push(mcm);
        }
    }
    for wanted in &args.modules {
        if !mcms.iter().any(|m| &m.name == wanted) {
            return Err(Error::invalid(
                format!("no ManagedClusterModule named {wanted}"),
                "list them with `kubectl get managedclustermodules`",
            ));
        }
    }
    mcms.sort_by(|a, b| a.name.cmp(&b.name));
    // The Module each MCM stands for, as KMM-hub resolves it (in its own namespace).
    let mut hub_modules: Vec<Module> = Vec::new();
    for mcm in &mcms {
        hub_modules.push(
            Module::from_value(&mcm.module_value(&args.hub_namespace)).map_err(|reason| {
                Error::invalid(
                    format!("ManagedClusterModule {} cannot be read: {reason}", mcm.name),
                    "fix its spec.moduleSpec: it must be a Module's spec (kmm.sigs.x-k8s.io/v1beta1)",
                )
            })?,
        );
    }

    let mut released: Vec<Wanted> = releases
        .iter()
        .map(|spec| Wanted {
            label: match spec {
                ReleaseSpec::Version(v) => v.clone(),
                ReleaseSpec::PullSpec(image) => image.to_string(),
            },
            spec: spec.clone(),
        })
        .collect();
    let mut notes = Vec::new();
    // Which clusters, and (with --cgu) in which batch.
    let (chosen, batches): (Vec<String>, BTreeMap<String, usize>) = match (&cgu_ref, cgu) {
        (Some((ns, name)), None) => {
            return Err(Error::invalid(
                format!("no ClusterGroupUpgrade {ns}/{name} on the hub"),
                "list them with `kubectl get cgu -A`",
            ));
        }
        (Some(_), Some(object)) => {
            let cgu = ClusterGroupUpgrade::from_value(&object);
            released = cgu_target(&hub, &cgu, &released).await?;
            let selected = cgu.selected(&clusters);
            if selected.is_empty() {
                return Err(Error::invalid(
                    format!(
                        "ClusterGroupUpgrade {}/{} selects no cluster",
                        cgu.namespace, cgu.name
                    ),
                    "check its spec.clusters and clusterLabelSelectors",
                ));
            }
            if cgu.enabled {
                term.warn(&format!(
                    "ClusterGroupUpgrade {}/{} is enabled: TALM may already be upgrading (create \
                     it with enable: false, check, then enable it)",
                    cgu.namespace, cgu.name
                ));
            }
            let batches = cgu.batches(&selected);
            (selected, batches)
        }
        (None, _) => {
            let mut chosen: BTreeSet<String> = BTreeSet::new();
            for mcm in &mcms {
                let selected: Vec<&ManagedCluster> =
                    clusters.iter().filter(|c| mcm.selects(c)).collect();
                if selected.is_empty() {
                    let note = format!(
                        "ManagedClusterModule {} selects no ManagedCluster (selector {}): nothing \
                         is checked for it",
                        mcm.name,
                        serde_json::to_string(&mcm.selector).unwrap_or_default()
                    );
                    term.warn(&note);
                    notes.push(note);
                }
                chosen.extend(selected.iter().map(|c| c.name.clone()));
            }
            (chosen.into_iter().collect(), BTreeMap::new())
        }
    };
    if mcms.is_empty() {
        term.warn("the hub has no ManagedClusterModule to check: nothing was checked");
    }

    let shared = Shared::new(Cache::new(args.registry.no_cache));
    let checker = Setup::checker(
        &registries.modules,
        &shared,
        Setup::cluster_objects(hub.clone()),
        term,
        args.deep.then(Trust::default),
        None,
    );
    let offers: HashMap<String, Vec<Wanted>> = infos
        .unwrap_or_default()
        .iter()
        .filter_map(|info| {
            let name = info["metadata"]["name"].as_str()?.to_string();
            let wanted = hub::offers(info)
                .into_iter()
                .filter_map(|o| {
                    let spec = match &o.image {
                        Some(image) => ReleaseSpec::PullSpec(image.parse().ok()?),
                        None => ReleaseSpec::parse(&o.version).ok()?,
                    };
                    Some(Wanted {
                        label: o.version,
                        spec,
                    })
                })
                .collect();
            Some((name, wanted))
        })
        .collect();

    // Each cluster: its targets (releases), the architectures it runs, resolved once each.
    term.step(format!(
        "resolving the target releases of {} clusters",
        chosen.len()
    ));
    let by_name: HashMap<&str, &ManagedCluster> =
        clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut resolved: HashMap<(String, Arch), Result<DtkAnswer>> = HashMap::new();
    let mut plans: Vec<ClusterPlan> = Vec::new();
    for name in &chosen {
        let Some(cluster) = by_name.get(name.as_str()) else {
            plans.push(ClusterPlan::missing(
                name,
                "no ManagedCluster of that name on the hub",
            ));
            continue;
        };
        let Some(running) = &cluster.kernels else {
            plans.push(ClusterPlan::missing(name, &cluster.without_claim()));
            continue;
        };
        let wanted = if args.updates {
            offers.get(name).cloned().unwrap_or_default()
        } else {
            released.clone()
        };
        if wanted.is_empty() {
            plans.push(ClusterPlan::missing(
                name,
                "ACM lists no update offered to it (its ManagedClusterInfo has no \
                 status.distributionInfo.ocp.versionAvailableUpdates)",
            ));
            continue;
        }
        let arches: BTreeSet<Arch> = running.iter().filter_map(|k| arch_of(k)).collect();
        let mut releases = Vec::new();
        for w in &wanted {
            let mut answers = BTreeMap::new();
            let mut error = None;
            for arch in &arches {
                let key = (w.label.clone(), *arch);
                if !resolved.contains_key(&key) {
                    let answer = deadline
                        .bound(
                            term,
                            context::resolve_release(
                                None,
                                None,
                                &registries.release,
                                &shared,
                                &w.spec,
                                release_repo,
                                Some(*arch),
                                term,
                            ),
                        )
                        .await
                        .map(|(answer, _)| answer);
                    if let Ok(answer) = &answer {
                        shared.say_release(term, answer);
                    }
                    resolved.insert(key.clone(), answer);
                }
                match &resolved[&key] {
                    Ok(answer) => {
                        answers.insert(*arch, answer.clone());
                    }
                    Err(e) => error = Some(e.clone()),
                }
            }
            let (targets, problems) = targets_of(running, &answers);
            releases.push(ReleasePlan {
                wanted: w.clone(),
                answer: answers.values().next().cloned(),
                targets,
                problems,
                error,
            });
        }
        plans.push(ClusterPlan {
            name: name.clone(),
            releases,
            missing: None,
        });
    }

    // Every distinct (Module, target kernel) once, whatever the number of clusters on it.
    term.step(format!(
        "checking {} ManagedClusterModules for {} clusters",
        mcms.len(),
        chosen.len()
    ));
    let mut jobs: Vec<Job<'_>> = Vec::new();
    let mut seen: BTreeSet<(usize, String, String)> = BTreeSet::new();
    for plan in &plans {
        let Some(cluster) = by_name.get(plan.name.as_str()) else {
            continue;
        };
        for (i, mcm) in mcms.iter().enumerate() {
            if !mcm.selects(cluster) {
                continue;
            }
            for release in &plan.releases {
                for target in &release.targets {
                    if seen.insert((i, target.kernel.clone(), target.goarch.clone())) {
                        jobs.push(Job {
                            module: &hub_modules[i],
                            target: target.clone(),
                            note: None,
                        });
                    }
                }
            }
        }
    }
    let before = registries.release.transferred();
    let checked = deadline
        .bound(term, async { Ok(checker.check_jobs(&jobs).await) })
        .await;
    term.step_done();
    let checked = checked.map_err(|e| super::check::name_waits(e, &checker))?;
    report_transfer(
        term,
        registries.release.transferred().since(before),
        checker.inspected(),
    );
    let mut rows_by: HashMap<(String, String, String), Row> = HashMap::new();
    for (job, row) in jobs.iter().zip(checked) {
        rows_by.insert(
            (
                job.module.metadata.name.clone(),
                job.target.kernel.clone(),
                job.target.goarch.clone(),
            ),
            row,
        );
    }

    // Each cluster's own report, its rows in MCM, then kernel order.
    let mut entries = Vec::new();
    let mut precache: BTreeSet<String> = BTreeSet::new();
    let mut not_cached: BTreeSet<String> = BTreeSet::new();
    for plan in &plans {
        let batch = batches.get(&plan.name).copied();
        if let Some(reason) = &plan.missing {
            let mut entry = ClusterEntry::failed(
                plan.name.clone(),
                None,
                &Error::NotKnown {
                    detail: reason.clone(),
                },
            );
            entry.batch = batch;
            entries.push(entry);
            continue;
        }
        let cluster = by_name[plan.name.as_str()];
        let mut docs = Vec::new();
        for release in &plan.releases {
            let mut rows = Vec::new();
            for mcm in mcms.iter().filter(|m| m.selects(cluster)) {
                for target in &release.targets {
                    let key = (
                        mcm.name.clone(),
                        target.kernel.clone(),
                        target.goarch.clone(),
                    );
                    let Some(row) = rows_by.get(&key) else {
                        continue;
                    };
                    let mut row = row.clone();
                    row.namespace = mcm.spoke_namespace.clone();
                    if matches!(row.verdict, Verdict::WillBuild | Verdict::WillSign) {
                        let late = builds_late(&plan.name);
                        if args.images_must_exist {
                            row.reason = format!(
                                "{} ({late}; --images-must-exist wants the image in place)",
                                row.reason
                            );
                            row.verdict = Verdict::Failed;
                        } else {
                            row.reason = format!("{} ({late})", row.reason);
                        }
                    }
                    match (row.verdict, &row.image) {
                        (Verdict::Ready | Verdict::Loads, Some(image)) => {
                            precache.insert(image.clone());
                        }
                        (_, Some(image)) => {
                            not_cached.insert(image.clone());
                        }
                        _ => {}
                    }
                    rows.push(row);
                }
                if release.targets.is_empty() && release.error.is_none() {
                    rows.push(Row {
                        namespace: mcm.spoke_namespace.clone(),
                        name: mcm.name.clone(),
                        kernel: "-".into(),
                        image: None,
                        verdict: Verdict::Unknown,
                        reason: format!(
                            "no target kernel for the cluster's nodes: {}",
                            release.problems.join("; ")
                        ),
                        invalid: false,
                        waits_forever: false,
                        deep: None,
                        dtk_kernel: None,
                        boot: None,
                        day1: false,
                    });
                }
            }
            docs.push((release, rows));
        }
        let (doc, exit) = if args.updates || docs.len() != 1 {
            let entries = docs
                .into_iter()
                .map(|(release, rows)| release.entry(rows))
                .collect();
            let matrix = Matrix::new(entries);
            let exit = matrix_exit(&matrix, matrix.outcome() == Outcome::Invalid);
            (CheckDoc::Matrix(matrix), exit)
        } else {
            let (release, rows) = docs.remove(0);
            if let Some(e) = &release.error {
                let mut entry = ClusterEntry::failed(plan.name.clone(), None, e);
                entry.batch = batch;
                entries.push(entry);
                continue;
            }
            let report = release.report(&rows);
            let exit = exit_status(&rows);
            (CheckDoc::Report(report), exit)
        };
        let mut entry = ClusterEntry::checked(plan.name.clone(), None, doc.outcome(), doc, exit);
        entry.batch = batch;
        entries.push(entry);
    }
    if !batches.is_empty() {
        entries.sort_by_key(|e| e.batch.unwrap_or(usize::MAX));
    }
    let mut fleet = Fleet::new(entries);
    fleet.notes = notes;
    if args.precache_images {
        for image in &not_cached {
            if !precache.contains(image) {
                term.warn(&format!(
                    "not listed for pre-caching: {image} (it does not exist yet, or could not be checked)"
                ));
            }
        }
        let list: Vec<&str> = precache.iter().map(String::as_str).collect();
        output::stdout(&list.join("\n"));
    } else {
        output::stdout(&fleet.render(args.output));
    }
    if mcms.is_empty() || chosen.is_empty() {
        return Ok(ExitStatus::Success);
    }
    Ok(fleet.exit())
}

/// One cluster's targets: per release, the kernels its nodes will boot.
struct ClusterPlan {
    name: String,
    releases: Vec<ReleasePlan>,
    /// Why the cluster cannot be checked at all.
    missing: Option<String>,
}

impl ClusterPlan {
    fn missing(name: &str, reason: &str) -> Self {
        ClusterPlan {
            name: name.to_string(),
            releases: Vec::new(),
            missing: Some(reason.to_string()),
        }
    }
}

struct ReleasePlan {
    wanted: Wanted,
    answer: Option<DtkAnswer>,
    targets: Vec<Target>,
    problems: Vec<String>,
    error: Option<Error>,
}

impl ReleasePlan {
    fn report(&self, rows: &[Row]) -> CheckReport {
        let kernels = self.targets.iter().map(|t| t.kernel.clone()).collect();
        CheckReport::new(
            kernels,
            self.answer.as_ref().map(|a| a.release_image.clone()),
            self.answer.as_ref().map(|a| a.dtk_image.clone()),
            rows,
        )
    }

    fn entry(&self, rows: Vec<Row>) -> ReleaseEntry {
        match (&self.error, &self.answer) {
            (Some(e), _) => ReleaseEntry::unresolved(self.wanted.label.clone(), Vec::new(), e),
            (None, answer) => ReleaseEntry::checked(
                answer
                    .as_ref()
                    .map_or(self.wanted.label.clone(), |a| a.release_version.clone()),
                Vec::new(),
                self.report(&rows),
            ),
        }
    }
}
