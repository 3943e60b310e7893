//! Follow a preflight to completion by watch: one watch on the object, one on every Module.
//! kube's watcher resumes after dropped connections and relists after 410 Expired; its errors
//! are stream items, and only the ones retrying cannot fix end the follow.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::time::Instant;

use super::kmm::Resource;
use super::status::{self, Progress};
use super::{Cluster, fatal_watch_error};
use crate::error::{Error, Result};

/// Who decides what the rows say: KMM alone, or KMM and the client check together. The follower
/// tells the judge about the Modules as they change and runs the work it asks for (checks of new
/// or edited Modules) beside the watches.
pub trait Judge {
    type Update;
    /// The current Modules, after every change to them: the work to start.
    fn modules(
        &mut self,
        modules: &BTreeMap<(String, String), Value>,
    ) -> Vec<LocalBoxFuture<'static, Self::Update>>;
    /// A piece of that work is done.
    fn update(&mut self, update: Self::Update);
    /// The rows from KMM's entries, judged.
    fn judge(&self, kmm: Progress) -> Progress;
}

/// What the follower tells its caller as it goes.
pub enum Step<'a> {
    /// The rows changed (status, stage, reason, or the set of Modules).
    Changed {
        progress: &'a Progress,
        object: &'a Value,
    },
    /// A second went by (for elapsed-time displays).
    Tick,
    /// Something worth a line with `-v`.
    Notice(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Complete,
    TimedOut,
    Interrupted,
}

pub struct Followed {
    pub end: End,
    pub progress: Progress,
    pub object: Value,
}

enum Source {
    Object(std::result::Result<watcher::Event<DynamicObject>, watcher::Error>),
    Module(std::result::Result<watcher::Event<DynamicObject>, watcher::Error>),
}

fn key(object: &Value) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .into(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .into(),
    )
}

fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

/// Follow `name` until every current Module is verified or failed, the deadline passes, or
/// Ctrl-C. `interrupt` resolves on Ctrl-C (a parameter so that callers and tests choose).
pub async fn follow<J: Judge>(
    cluster: &Cluster,
    resource: &Resource,
    name: &str,
    timeout: Option<Duration>,
    interrupt: impl std::future::Future<Output = ()>,
    judge: &mut J,
    mut sink: impl FnMut(Step<'_>),
) -> Result<Followed> {
    let object_events = watcher(
        cluster.api(resource),
        cluster
            .watcher_config()
            .fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .map(Source::Object);
    let module_events = watcher(cluster.api(&Resource::module()), cluster.watcher_config())
        .default_backoff()
        .map(Source::Module);
    let mut events = futures::stream::select(object_events.boxed(), module_events.boxed());

    let deadline = timeout.map(|t| Instant::now() + t);
    tokio::pin!(interrupt);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut object: Option<Value> = None;
    let mut object_listed = false;
    let mut modules: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut relisting: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut modules_listed = false;
    let mut modules_unreadable = false;
    let mut last: Option<Progress> = None;
    let mut work: FuturesUnordered<LocalBoxFuture<'static, J::Update>> = FuturesUnordered::new();

    loop {
        let changed = tokio::select! {
            Some(update) = work.next(), if !work.is_empty() => {
                judge.update(update);
                true
            }
            event = events.next() => match event {
                None => return Err(Error::ClusterApi {
                    action: format!("watch {} {name}", resource.kind),
                    code: 0,
                    detail: "the watch ended".into(),
                }),
                Some(Source::Object(Ok(event))) => {
                    match event {
                        watcher::Event::Init => {}
                        watcher::Event::InitApply(o) | watcher::Event::Apply(o) => object = Some(to_value(o)),
                        watcher::Event::InitDone => {
                            object_listed = true;
                            if object.is_none() {
                                return Err(Error::PreflightNotFound { name: name.to_string() });
                            }
                        }
                        watcher::Event::Delete(_) => {
                            return Err(Error::ClusterApi {
                                action: format!("follow {} {name}", resource.kind),
                                code: 0,
                                detail: "it was deleted while being followed".into(),
                            });
                        }
                    }
                    true
                }
                Some(Source::Module(Ok(event))) => {
                    let settled = match event {
                        watcher::Event::Init => {
                            relisting.clear();
                            false
                        }
                        watcher::Event::InitApply(o) => {
                            let v = to_value(o);
                            relisting.insert(key(&v), v);
                            false
                        }
                        watcher::Event::InitDone => {
                            modules = std::mem::take(&mut relisting);
                            modules_listed = true;
                            true
                        }
                        watcher::Event::Apply(o) => {
                            let v = to_value(o);
                            modules.insert(key(&v), v);
                            modules_listed
                        }
                        watcher::Event::Delete(o) => {
                            modules.remove(&key(&to_value(o)));
                            modules_listed
                        }
                    };
                    if settled {
                        work.extend(judge.modules(&modules));
                    }
                    true
                }
                Some(Source::Object(Err(e))) => {
                    if let Some(fatal) = fatal_watch_error(cluster, &e) {
                        return Err(fatal);
                    }
                    sink(Step::Notice(format!("watch of {name} interrupted, resuming: {e}")));
                    false
                }
                Some(Source::Module(Err(e))) => {
                    if let Some(fatal) = fatal_watch_error(cluster, &e) {
                        if matches!(fatal, Error::Forbidden { .. }) && !modules_unreadable {
                            modules_unreadable = true;
                            sink(Step::Notice(format!(
                                "cannot watch Modules ({fatal}); judging from the status entries alone"
                            )));
                            true
                        } else if modules_unreadable {
                            false
                        } else {
                            return Err(fatal);
                        }
                    } else {
                        sink(Step::Notice(format!("watch of Modules interrupted, resuming: {e}")));
                        false
                    }
                }
            },
            _ = ticker.tick() => {
                sink(Step::Tick);
                false
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                return Ok(Followed {
                    end: End::TimedOut,
                    progress: last.unwrap_or_default(),
                    object: object.unwrap_or_default(),
                });
            }
            _ = &mut interrupt => {
                return Ok(Followed {
                    end: End::Interrupted,
                    progress: last.unwrap_or_default(),
                    object: object.unwrap_or_default(),
                });
            }
        };
        let ready = object_listed && (modules_listed || modules_unreadable);
        let Some(current) = object.as_ref().filter(|_| changed && ready) else {
            continue;
        };
        let entries = status::entries(&current["status"]);
        let refs = if modules_unreadable {
            status::modules_from_entries(&entries)
        } else {
            status::checked_modules(&modules.values().cloned().collect::<Vec<_>>())
        };
        let progress = judge.judge(status::evaluate(&refs, &entries));
        if last.as_ref() != Some(&progress) {
            sink(Step::Changed {
                progress: &progress,
                object: current,
            });
        }
        // Without Module access an empty status only means "not started".
        let complete = progress.complete() && !(modules_unreadable && progress.rows.is_empty());
        if complete {
            return Ok(Followed {
                end: End::Complete,
                progress,
                object: current.clone(),
            });
        }
        last = Some(progress);
    }
}
