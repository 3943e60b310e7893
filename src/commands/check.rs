//! `kubectl kmm check`: every Module, resolved for the target kernel as KMM resolves it and
//! looked up in its image as the node's worker will load it. Read-only: list and get only.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cli::CheckArgs;
use crate::cluster::{Cluster, kmm};
use crate::error::{Error, ExitStatus, Result};
use crate::module::check::{Checker, Inspected, Lookup, ObjectKind, Objects, Row, Target, Verdict};
use crate::module::source::{self, SecretData};
use crate::module::spec::Module;
use crate::output::check::CheckReport;
use crate::output::{self, Term};
use crate::registry::Transferred;
use crate::registry::auth::AuthEntries;
use crate::registry::cache::Cache;
use crate::release::{Arch, dtk};

use super::context::{self, PullSecret};

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

/// What to check against: the kernels, and the release they came from.
struct Targets {
    targets: Vec<Target>,
    release_image: Option<String>,
    dtk_image: Option<String>,
}

pub async fn run(args: CheckArgs, term: &Term) -> Result<ExitStatus> {
    // Everything the user typed is checked before anything is read.
    let (release_spec, release_repo) =
        context::release_flags(args.release.as_deref(), &args.release_repo)?;
    for kernel in &args.kernel {
        kmm::validate_kernel(kernel)?;
    }
    let loaded = if args.files.is_empty() {
        None
    } else {
        let namespace = args.namespace.as_deref().unwrap_or("default");
        let loaded = source::load(&args.files, namespace, &mut std::io::stdin().lock()).map_err(
            |reason| {
                Error::invalid(
                    reason,
                    "-f takes YAML or JSON files of Modules (and the Secrets and ConfigMaps they \
                     name), a directory of them, or - for stdin",
                )
            },
        )?;
        for ignored in &loaded.ignored {
            term.info(&format!(
                "ignoring {ignored}: not a Module, Secret or ConfigMap"
            ));
        }
        Some(loaded)
    };

    // With files no cluster is needed, or contacted.
    let cluster = match &loaded {
        Some(_) => None,
        None => Some(Arc::new(
            Cluster::connect(&super::cluster_options(&args.kube)).await?,
        )),
    };
    let cluster_ref = cluster.as_deref();
    let registry = context::registry(cluster_ref, &args.registry, PullSecret::First, term).await?;
    let cache = Cache::new(args.registry.no_cache);

    let targets = match &release_spec {
        Some(spec) => {
            let answer = context::resolve_release(
                cluster_ref,
                &registry,
                &cache,
                spec,
                &release_repo,
                args.arch,
                term,
            )
            .await?;
            let kernel = if args.rt {
                context::rt_kernel(&answer)?
            } else {
                answer.kernel_version.clone()
            };
            let goarch = Arch::from_rpm(&answer.architecture)
                .unwrap_or(Arch::X86_64)
                .goarch()
                .to_string();
            Targets {
                targets: vec![Target { kernel, goarch }],
                release_image: Some(answer.release_image),
                dtk_image: Some(answer.dtk_image),
            }
        }
        None => {
            // The nodes' architecture: `--arch`, else the kernel's own name (`….x86_64`), else
            // the cluster's nodes (asked once), else x86_64.
            let mut targets = Vec::new();
            let mut nodes_arch = None;
            for kernel in &args.kernel {
                let kernel = kernel.trim().to_string();
                if targets.iter().any(|t: &Target| t.kernel == kernel) {
                    continue;
                }
                let named = args
                    .arch
                    .or_else(|| dtk::kernel_arch(&kernel).and_then(Arch::from_rpm));
                let arch = match (named, nodes_arch) {
                    (Some(arch), _) | (None, Some(arch)) => arch,
                    (None, None) => {
                        let arch = context::payload(cluster_ref, None, term).await?.1;
                        nodes_arch = Some(arch);
                        arch
                    }
                };
                targets.push(Target {
                    kernel,
                    goarch: arch.goarch().to_string(),
                });
            }
            Targets {
                targets,
                release_image: None,
                dtk_image: None,
            }
        }
    };

    let values = match (&loaded, cluster_ref) {
        (Some(loaded), _) => loaded.modules.clone(),
        (None, Some(cluster)) => cluster.modules(args.namespace.as_deref()).await?,
        (None, None) => Vec::new(),
    };
    let modules = select_modules(&values, &args, loaded.is_some(), term)?;

    let objects: Arc<dyn Objects> = match (loaded, cluster) {
        (Some(loaded), _) => Arc::new(loaded),
        (None, Some(cluster)) => Arc::new(ClusterObjects(cluster)),
        (None, None) => Arc::new(source::Loaded::default()),
    };
    let notifier = {
        let term = term.clone();
        Arc::new(move |line: String| term.info(&line))
    };
    let checker = Checker::new(registry.clone(), cache, objects, notifier);
    let before = registry.transferred();
    let rows = checker.check(&modules, &targets.targets).await;
    report_transfer(
        term,
        registry.transferred().since(before),
        checker.inspected(),
    );

    let report = CheckReport::new(
        targets.targets.iter().map(|t| t.kernel.clone()).collect(),
        targets.release_image,
        targets.dtk_image,
        &rows,
    );
    output::stdout(&report.render(args.output, term.stdout_color()));
    Ok(exit_status(&rows))
}

/// The Modules to check: by namespace and name, not being deleted, with a module loader.
fn select_modules(
    values: &[serde_json::Value],
    args: &CheckArgs,
    from_files: bool,
    term: &Term,
) -> Result<Vec<Module>> {
    let mut modules = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for value in values {
        let module = Module::from_value(value).map_err(|reason| {
            let name = value["metadata"]["name"].as_str().unwrap_or("(unnamed)");
            Error::invalid(
                format!("Module {name} cannot be read: {reason}"),
                "fix the Module: it does not match the Module CRD (kmm.sigs.x-k8s.io/v1beta1)",
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
fn report_transfer(term: &Term, transferred: Transferred, inspected: Inspected) {
    let fetched = transferred.manifest_bytes + transferred.blob_bytes;
    let share = if inspected.bytes > 0 {
        format!(
            " ({:.3}% of their size)",
            fetched as f64 * 100.0 / inspected.bytes as f64
        )
    } else {
        String::new()
    };
    term.info(&format!(
        "fetched {fetched} bytes in {} requests; {} kmod images read, of {} bytes{share}",
        transferred.requests, inspected.images, inspected.bytes
    ));
}

/// 2 when KMM would refuse a Module, else 1 when one would fail to load, else 4 when one could
/// not be checked, else 0.
fn exit_status(rows: &[Row]) -> ExitStatus {
    if rows.iter().any(|r| r.invalid) {
        ExitStatus::BadInput
    } else if rows.iter().any(|r| r.verdict == Verdict::Failed) {
        ExitStatus::VerificationFailed
    } else if rows.iter().any(|r| r.verdict == Verdict::Unknown) {
        ExitStatus::Environment
    } else {
        ExitStatus::Success
    }
}
