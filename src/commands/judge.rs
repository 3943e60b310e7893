//! The judge of a followed preflight: KMM's entries and the client check together
//! (module::combine), checking again the Modules that change while followed. `preflight` and
//! `status --check` use it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use crate::cluster::follow::Judge;
use crate::cluster::status::{self, Progress};
use crate::module::check::{Checker, Plan, Row as CheckRow};
use crate::module::combine::{self, Client};
use crate::module::spec::Module;
use crate::output::Term;

type Key = (String, String);

/// The Modules a preflight covers, as the client check reads them.
pub fn checked_modules(values: &[Value], term: &Term) -> Vec<Module> {
    values
        .iter()
        .filter_map(|v| match Module::from_value(v) {
            Ok(m) if !m.is_deleting() && m.container().is_some() => Some(m),
            Ok(_) => None,
            Err(reason) => {
                term.warn(&format!(
                    "Module {} cannot be read ({reason}): KMM's word alone for it",
                    v["metadata"]["name"].as_str().unwrap_or("(unnamed)")
                ));
                None
            }
        })
        .collect()
}

/// KMM's entries and the client check together (module::combine), checking again the Modules
/// that change while followed. Without a checker (`--no-client-check`), KMM's entries as they are.
pub struct ClientJudge {
    checker: Option<Arc<Checker>>,
    plan: Plan,
    object_kernel: String,
    /// The client check's rows per Module, and the version of the Module they are for.
    clients: BTreeMap<Key, (Version, Client)>,
}

fn key_of(module: &Module) -> Key {
    (
        module.metadata.namespace.clone(),
        module.metadata.name.clone(),
    )
}

/// Which Module, as it is: a new object of the same name has another uid, an edit moves the
/// generation.
type Version = (Option<String>, Option<i64>);

fn version_of(module: &Module) -> Version {
    (module.metadata.uid.clone(), module.metadata.generation)
}

impl ClientJudge {
    pub async fn start(
        checker: Option<Arc<Checker>>,
        plan: Plan,
        object_kernel: &str,
        modules: &[Module],
    ) -> Self {
        let rows = match &checker {
            Some(checker) => Some(checker.check_jobs(&plan.jobs(modules)).await),
            None => None,
        };
        match rows {
            Some(rows) => Self::with_rows(checker, plan, object_kernel, modules, rows),
            None => ClientJudge {
                plan,
                object_kernel: object_kernel.to_string(),
                ..Self::kmm_only()
            },
        }
    }

    /// KMM's entries as they are (`status` without `--check`).
    pub fn kmm_only() -> Self {
        ClientJudge {
            checker: None,
            plan: Plan::Kernels(Vec::new()),
            object_kernel: String::new(),
            clients: BTreeMap::new(),
        }
    }

    /// The judge of `modules` whose client check gave `rows` (those of a Module without rows
    /// are not decided yet).
    pub fn with_rows(
        checker: Option<Arc<Checker>>,
        plan: Plan,
        object_kernel: &str,
        modules: &[Module],
        rows: Vec<CheckRow>,
    ) -> Self {
        let mut clients: BTreeMap<Key, (Version, Client)> = BTreeMap::new();
        for m in modules {
            clients.insert(key_of(m), (version_of(m), Client::default()));
        }
        for row in rows {
            if let Some((_, client)) = clients.get_mut(&(row.namespace.clone(), row.name.clone())) {
                client.rows.push(row);
            }
        }
        ClientJudge {
            checker,
            plan,
            object_kernel: object_kernel.to_string(),
            clients,
        }
    }

    /// The Modules checked, as rows a preflight has before KMM says anything.
    pub fn refs(&self) -> Vec<status::ModuleRef> {
        self.clients
            .keys()
            .map(|(namespace, name)| status::ModuleRef {
                namespace: namespace.clone(),
                name: name.clone(),
            })
            .collect()
    }
}

impl Judge for ClientJudge {
    type Update = (Key, Version, Vec<CheckRow>);

    fn modules(
        &mut self,
        modules: &BTreeMap<Key, Value>,
    ) -> Vec<LocalBoxFuture<'static, Self::Update>> {
        let mut work = Vec::new();
        let Some(checker) = &self.checker else {
            return work;
        };
        self.clients.retain(|key, _| modules.contains_key(key));
        for (key, value) in modules {
            let Ok(module) = Module::from_value(value) else {
                continue;
            };
            if module.is_deleting() || module.container().is_none() {
                continue;
            }
            let version = version_of(&module);
            if self
                .clients
                .get(key)
                .is_some_and(|(seen, _)| *seen == version)
            {
                continue;
            }
            // New, or edited while followed: checked again.
            self.clients.insert(
                key.clone(),
                (
                    version.clone(),
                    Client {
                        rows: Vec::new(),
                        checking: true,
                    },
                ),
            );
            let checker = checker.clone();
            let plan = self.plan.clone();
            let key = key.clone();
            work.push(Box::pin(async move {
                let modules = [module];
                let rows = checker.check_jobs(&plan.jobs(&modules)).await;
                (key, version, rows)
            }) as LocalBoxFuture<'static, Self::Update>);
        }
        work
    }

    fn update(&mut self, (key, version, rows): Self::Update) {
        if let Some((seen, client)) = self.clients.get_mut(&key)
            && *seen == version
        {
            *client = Client {
                rows,
                checking: false,
            };
        }
    }

    fn judge(&self, kmm: Progress) -> Progress {
        Progress {
            rows: kmm
                .rows
                .into_iter()
                .map(|row| {
                    let key = (row.namespace.clone(), row.name.clone());
                    let client = self.clients.get(&key).map(|(_, c)| c);
                    combine::combine(row, client, &self.object_kernel)
                })
                .collect(),
        }
    }
}
