//! Several clusters in one run (`--context` repeated, `--contexts`, `--all-contexts`): which
//! contexts, and each cluster's run, concurrently and bounded, over one shared registry client
//! and cache. A cluster is a value here: what fails in one never stops the others.

use std::future::Future;

use futures::StreamExt;

use crate::cli::{FleetArgs, KubeArgs, RegistryArgs};
use crate::cluster::{ClusterOptions, kubeconfig_contexts};
use crate::error::{Error, Result};
use crate::output::Term;
use crate::output::fleet::ClusterEntry;
use crate::registry::Registry;
use crate::registry::mirrors::Mirrors;

/// Clusters read at once. Each costs a few API round trips and its share of registry reads
/// (most of them shared), so a wide bound keeps a hundred clusters at a few rounds.
const CLUSTERS_AT_ONCE: usize = 16;

/// The contexts of a fleet run, in the order given (each once), or None for a run over one
/// cluster (no flag, or a single `--context`).
pub fn contexts(kube: &KubeArgs, fleet: &FleetArgs) -> Result<Option<Vec<String>>> {
    let mut named: Vec<String> = kube.context.clone();
    named.extend(fleet.contexts.iter().map(|c| c.trim().to_string()));
    if fleet.all_contexts && !kube.context.is_empty() {
        return Err(Error::invalid(
            "--all-contexts takes every context of the kubeconfig, and --context names some",
            "drop one of them",
        ));
    }
    if !fleet.all_contexts && fleet.contexts.is_empty() && kube.context.len() <= 1 {
        return Ok(None);
    }
    let (known, _) = kubeconfig_contexts(kube.kubeconfig.as_ref())?;
    if fleet.all_contexts {
        if known.is_empty() {
            return Err(Error::invalid(
                "--all-contexts: the kubeconfig has no context",
                "add contexts with `kubectl config set-context`, or name them with --context",
            ));
        }
        return Ok(Some(known));
    }
    let mut contexts: Vec<String> = Vec::new();
    for name in named {
        if name.is_empty() {
            return Err(Error::invalid(
                "--contexts has an empty name",
                "separate the context names with single commas: --contexts a,b,c",
            ));
        }
        if !known.contains(&name) {
            return Err(Error::invalid(
                format!("context {name:?} is not in the kubeconfig"),
                format!(
                    "known: {}",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if !contexts.contains(&name) {
            contexts.push(name);
        }
    }
    Ok(Some(contexts))
}

/// The connection flags for one context of the fleet.
pub fn options_for(kube: &KubeArgs, context: &str) -> ClusterOptions {
    ClusterOptions {
        context: Some(context.to_string()),
        ..super::cluster_options(kube)
    }
}

/// The registry client every cluster's clients are made from: connections, what was learnt of
/// each registry, and byte counts are shared; each cluster adds its own credentials and mirrors.
pub fn base_registry(
    args: &RegistryArgs,
    request_timeout: Option<std::time::Duration>,
    term: &Term,
) -> Result<Registry> {
    let local = super::local_credentials(args)?;
    super::registry(args, request_timeout, local, Mirrors::default(), term)
}

/// `work` for every context, at most `CLUSTERS_AT_ONCE` at a time, with the cluster's own voice
/// (its name before each message); the answers in the contexts' order. The fleet's step line
/// counts the clusters done.
pub async fn each<T, F, Fut>(contexts: &[String], term: &Term, what: &str, work: F) -> Vec<T>
where
    F: Fn(String, Term) -> Fut,
    Fut: Future<Output = T>,
{
    let total = contexts.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    term.step(format!("{what} {total} clusters"));
    let mut answers: Vec<(usize, T)> = futures::stream::iter(contexts.iter().enumerate())
        .map(|(i, context)| {
            let voice = term.for_cluster(context);
            let work = work(context.clone(), voice);
            let done = &done;
            async move {
                let answer = work.await;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n < total {
                    term.resume_step(format!("{what} {total} clusters ({n} done)"));
                }
                (i, answer)
            }
        })
        .buffer_unordered(CLUSTERS_AT_ONCE)
        .collect()
        .await;
    term.step_done();
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

/// An error a cluster's run ended with, said after the whole fleet was read, in the
/// contexts' order (said as they happened, concurrent clusters would interleave at random).
pub enum Said {
    Error(Error),
    Line(String),
}

/// Each entry's errors, in the entries' order, in its cluster's voice.
pub fn tell<D>(term: &Term, said: Vec<(ClusterEntry<D>, Vec<Said>)>) -> Vec<ClusterEntry<D>> {
    said.into_iter()
        .map(|(entry, lines)| {
            let voice = term.for_cluster(&entry.context);
            for line in lines {
                match line {
                    Said::Error(e) => voice.error(&e),
                    Said::Line(text) => voice.error_line(&text),
                }
            }
            entry
        })
        .collect()
}
