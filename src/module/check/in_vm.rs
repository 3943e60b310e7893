//! `--boot` for the checker: the Modules whose files `--deep` read are loaded by the target
//! kernel itself, one VM per kernel (see `crate::boot`). The kernel image, its `modules.dep.bin`
//! and the in-tree modules the Modules depend on come from the driver-toolkit, read once per
//! digest and kept in the cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{Checker, DtkRead, Row, Target, Verdict, lock};
use crate::boot::payload::{self, InitPayload};
use crate::boot::{self, Boot, BootResult, VmFile, VmModule, vm};
use crate::module::deep::CachedKo;
use crate::module::moddep::{self, DepLine};
use crate::module::spec::Module;
use crate::registry::files;
use crate::registry::layers::Want;

/// The driver-toolkit's kernel images and in-tree modules, per digest and path.
const DTK_FILES_NAMESPACE: &str = "dtk-boot-v1";
/// A kernel image is some 10-15 MiB; an in-tree module a few MiB at most.
const DTK_FILE_LIMIT: u64 = 128 * 1024 * 1024;
/// The VM's own bound when the command has no deadline: a boot under emulation takes seconds
/// to a minute; a VM still running after this is stuck.
const VM_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The kernel image and module index of `kernel` in a driver-toolkit (RHEL's `/lib` is a link
/// to `/usr/lib`).
pub fn boot_paths(kernel: &str) -> [String; 2] {
    let dir = format!("usr/lib/modules/{kernel}");
    [format!("{dir}/vmlinuz"), format!("{dir}/modules.dep.bin")]
}

fn dtk_file_key(digest: &str, path: &str) -> String {
    format!("{digest} {path}")
}

/// Keep a file of the driver-toolkit `digest` for `--boot`.
pub fn keep_dtk_file(
    cache: &crate::registry::cache::Cache,
    digest: &str,
    path: &str,
    bytes: &[u8],
    notify: &(dyn Fn(String) + Send + Sync),
) {
    if let Err(e) = cache.put_bytes(DTK_FILES_NAMESPACE, &dtk_file_key(digest, path), bytes) {
        notify(format!("could not write the cache: {e}"));
    }
}

/// What `--boot` needs: the `/init` to use (`--boot-init`, else this binary).
#[derive(Default)]
pub struct BootConfig {
    init: Option<PathBuf>,
    payload: OnceCell<Result<Arc<InitPayload>, String>>,
}

impl BootConfig {
    /// `--boot`, with `/init` from `--boot-init` when given: read now, so that a file that is
    /// not a Linux program is bad input before anything is checked.
    pub fn new(init: Option<PathBuf>) -> Result<Self, String> {
        let payload = match &init {
            Some(path) => OnceCell::new_with(Some(payload::init_payload(path).map(Arc::new))),
            None => OnceCell::new(),
        };
        if let Some(Err(message)) = payload.get() {
            return Err(message.clone());
        }
        Ok(BootConfig { init, payload })
    }

    /// `/init` for a kernel of `goarch`.
    async fn payload(&self, goarch: &str) -> Result<Arc<InitPayload>, String> {
        let payload = self
            .payload
            .get_or_init(|| async {
                let path = match &self.init {
                    Some(path) => path.clone(),
                    None if cfg!(target_os = "linux") => std::env::current_exe()
                        .map_err(|e| format!("cannot find this program to use as /init: {e}"))?,
                    None => {
                        return Err(format!(
                            "the VM's /init must be a Linux program and this one is for {}: give \
                             --boot-init FILE, the plugin's Linux binary for the kernel's \
                             architecture",
                            std::env::consts::OS
                        ));
                    }
                };
                let read = tokio::task::spawn_blocking(move || payload::init_payload(&path));
                read.await
                    .map_err(|e| format!("reading /init stopped: {e}"))?
                    .map(Arc::new)
            })
            .await
            .clone()?;
        if payload.goarch != goarch {
            let named = match &self.init {
                Some(path) => format!("--boot-init {} is", path.display()),
                None => "this plugin is".to_string(),
            };
            return Err(format!(
                "{named} a linux/{} program and the kernel is linux/{goarch}: give --boot-init \
                 FILE, the plugin's linux/{goarch} binary",
                payload.goarch
            ));
        }
        Ok(payload)
    }
}

/// A Module whose files were read, waiting for its kernel's VM.
pub struct Candidate {
    /// `check_jobs`'s call and the job's index in it.
    job: (u64, usize),
    target: Target,
    files: Vec<CachedKo>,
    module_name: String,
    /// `modulesLoadingOrder` (its first entry is `moduleName`).
    order: Vec<String>,
    params: String,
}

impl Candidate {
    pub fn new(job: (u64, usize), module: &Module, target: &Target, files: Vec<CachedKo>) -> Self {
        let modprobe = module
            .container()
            .map(|c| c.modprobe.clone())
            .unwrap_or_default();
        Candidate {
            job,
            target: target.clone(),
            files,
            module_name: modprobe.module_name,
            order: modprobe.modules_loading_order,
            params: modprobe.parameters.join(" "),
        }
    }
}

/// The row as a deadline would leave it: a `--deep` answer is not yet a `--boot` one.
pub fn until_booted(row: &Row, boot: bool) -> Row {
    let mut row = row.clone();
    if boot && row.deep.is_some() && row.verdict.is_ok() {
        row.verdict = Verdict::Unknown;
        row.reason = format!("{}; not yet loaded in the VM (--boot)", row.reason);
    }
    row
}

/// One step of a Module's load: one of its files, or an in-tree module of the driver-toolkit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Own(usize),
    InTree { name: String, path: String },
}

fn key_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    moddep::module_key(file.split(".ko").next().unwrap_or(file))
}

/// The order modprobe would insert a Module's files: `moduleName` last, the rest of
/// `modulesLoadingOrder` before it (last listed first), each file after what its `depends=`
/// names; a dependency that is not one of the Module's files is the driver-toolkit's in-tree
/// module, after its own dependencies from the driver-toolkit's `modules.dep.bin`. A name in
/// neither is built into the kernel, or missing: the kernel decides.
fn load_order(candidate: &Candidate, in_tree: &BTreeMap<String, DepLine>) -> Vec<Step> {
    let own: Vec<String> = candidate
        .files
        .iter()
        .map(|f| match &f.ko {
            Ok(ko) => ko
                .name
                .as_deref()
                .map(moddep::module_key)
                .unwrap_or_else(|| key_of_path(&f.path)),
            Err(_) => key_of_path(&f.path),
        })
        .collect();
    let main = moddep::module_key(&candidate.module_name);
    let mut roots: Vec<String> = own.iter().rev().filter(|k| **k != main).cloned().collect();
    let listed: Vec<String> = candidate
        .order
        .iter()
        .map(|n| moddep::module_key(n))
        .collect();
    roots.retain(|k| !listed.contains(k));
    roots.extend(listed.iter().rev().filter(|k| **k != main).cloned());
    roots.push(main);
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        key: &str,
        candidate: &Candidate,
        own: &[String],
        in_tree: &BTreeMap<String, DepLine>,
        seen: &mut HashSet<String>,
        steps: &mut Vec<Step>,
    ) {
        if !seen.insert(key.to_string()) {
            return;
        }
        if let Some(index) = own.iter().position(|k| k == key) {
            if let Ok(ko) = &candidate.files[index].ko {
                for dep in &ko.depends {
                    visit(
                        &moddep::module_key(dep),
                        candidate,
                        own,
                        in_tree,
                        seen,
                        steps,
                    );
                }
            }
            steps.push(Step::Own(index));
        } else if let Some(line) = in_tree.get(key) {
            for path in line.depends.iter().rev().chain(std::iter::once(&line.path)) {
                let name = key_of_path(path);
                if path == &line.path || seen.insert(name.clone()) {
                    steps.push(Step::InTree {
                        name,
                        path: path.clone(),
                    });
                }
            }
        }
    }
    for root in roots {
        visit(&root, candidate, &own, in_tree, &mut seen, &mut steps);
    }
    steps
}

/// The driver-toolkit's image of one kernel, as `--boot` needs it.
struct BootKernel {
    vmlinuz: Vec<u8>,
    in_tree: BTreeMap<String, DepLine>,
}

impl Checker {
    /// `--boot`: one VM per kernel for the Modules of this call, and their rows updated.
    pub(super) async fn boot_all(&self, call: u64, rows: &mut [Row]) {
        let queued: Vec<Candidate> = {
            let mut queue = lock(&self.boot_queue);
            let (mine, others) = queue.drain(..).partition(|c| c.job.0 == call);
            *queue = others;
            mine
        };
        let mut groups: BTreeMap<(Option<String>, String, String), Vec<Candidate>> =
            BTreeMap::new();
        for candidate in queued {
            let t = &candidate.target;
            groups
                .entry((t.dtk.clone(), t.kernel.clone(), t.goarch.clone()))
                .or_default()
                .push(candidate);
        }
        for (_, group) in groups {
            let boots = match self.boot_group(&group).await {
                Ok(boots) => boots,
                Err(reason) => vec![Boot::unknown(reason); group.len()],
            };
            for (candidate, boot) in group.iter().zip(boots) {
                if let Some(row) = rows.get_mut(candidate.job.1) {
                    merge(row, boot);
                }
            }
        }
    }

    async fn boot_group(&self, group: &[Candidate]) -> Result<Vec<Boot>, String> {
        let Some(config) = &self.boot else {
            return Err("--boot was not asked for".into());
        };
        let Some(first) = group.first() else {
            return Ok(Vec::new());
        };
        let target = &first.target;
        let machine = vm::machine(&target.goarch)
            .ok_or_else(|| format!("no VM can boot a linux/{} kernel here", target.goarch))?;
        let init = config.payload(&target.goarch).await?;
        let qemu = which::which(machine.program).map_err(|_| vm::install_hint(&machine))?;
        let Some(dtk) = target.dtk.clone() else {
            return Err(format!(
                "no driver-toolkit for kernel {}: --boot boots the kernel image of the release's \
                 (--release), or of the one --dtk-image names with --kernel",
                target.kernel
            ));
        };
        let kernel = self.boot_kernel(&dtk, target).await?;
        let orders: Vec<Vec<Step>> = group
            .iter()
            .map(|c| load_order(c, &kernel.in_tree))
            .collect();
        let mut wanted: Vec<String> = orders
            .iter()
            .flatten()
            .filter_map(|s| match s {
                Step::InTree { path, .. } => Some(path.clone()),
                Step::Own(_) => None,
            })
            .collect();
        wanted.sort();
        wanted.dedup();
        let dir = format!("usr/lib/modules/{}", target.kernel);
        let paths: Vec<String> = wanted.iter().map(|p| format!("{dir}/{p}")).collect();
        let in_tree = self.dtk_files(&dtk, &target.goarch, &paths).await?;
        let mut modules = Vec::new();
        let mut unreadable: HashMap<usize, String> = HashMap::new();
        for (i, (candidate, steps)) in group.iter().zip(&orders).enumerate() {
            let mut files = Vec::new();
            for step in steps {
                match step {
                    Step::Own(index) => {
                        let file = &candidate.files[*index];
                        let Some(data) = file.bytes.clone() else {
                            unreadable
                                .entry(i)
                                .or_insert_with(|| format!("{} could not be read", file.path));
                            continue;
                        };
                        let name = match &file.ko {
                            Ok(ko) => ko.name.clone().unwrap_or_else(|| key_of_path(&file.path)),
                            Err(_) => key_of_path(&file.path),
                        };
                        let params = if moddep::module_key(&name)
                            == moddep::module_key(&candidate.module_name)
                        {
                            candidate.params.clone()
                        } else {
                            String::new()
                        };
                        files.push(VmFile {
                            name,
                            shown: file.path.clone(),
                            data,
                            params,
                            in_tree: false,
                        });
                    }
                    Step::InTree { name, path } => {
                        let full = format!("{dir}/{path}");
                        let Some(data) = in_tree.get(&full) else {
                            unreadable
                                .entry(i)
                                .or_insert_with(|| format!("driver-toolkit {dtk} has no /{full}"));
                            continue;
                        };
                        files.push(VmFile {
                            name: name.clone(),
                            shown: format!("/{full}"),
                            data: data.clone(),
                            params: String::new(),
                            in_tree: true,
                        });
                    }
                }
            }
            if files.is_empty() {
                unreadable
                    .entry(i)
                    .or_insert_with(|| "no module file to load".to_string());
            }
            modules.push(VmModule {
                files: if unreadable.contains_key(&i) {
                    Vec::new()
                } else {
                    files
                },
            });
        }
        let (boots, run) = boot::boot_modules(
            &target.goarch,
            &qemu,
            &target.kernel,
            &kernel.vmlinuz,
            &init,
            &modules,
            VM_LIMIT,
        )
        .await?;
        (self.notify)(format!(
            "--boot: kernel {} booted to /init in {:.1} s ({}); the VM ran {:.1} s for {} Modules",
            target.kernel,
            run.started.as_ref().map_or(0.0, |s| s.uptime),
            run.accel,
            run.wall.as_secs_f64(),
            modules.len()
        ));
        Ok(boots
            .into_iter()
            .enumerate()
            .map(|(i, boot)| match unreadable.remove(&i) {
                Some(reason) => Boot::unknown(reason),
                None => boot,
            })
            .collect())
    }

    /// `paths` in the driver-toolkit `dtk`: from the cache when it has them all for the digest
    /// the reference names (or, for a tag, the registry says), else read in one pass over its
    /// layers. A cached run asks the registry nothing for an image named by digest.
    async fn dtk_files(
        &self,
        dtk: &str,
        goarch: &str,
        paths: &[String],
    ) -> Result<HashMap<String, Arc<Vec<u8>>>, String> {
        let cached = |digest: &str| -> Option<HashMap<String, Arc<Vec<u8>>>> {
            paths
                .iter()
                .map(|path| {
                    let bytes = self
                        .cache
                        .get_bytes(DTK_FILES_NAMESPACE, &dtk_file_key(digest, path))?;
                    Some((path.clone(), Arc::new(bytes)))
                })
                .collect()
        };
        let (digest, pinned, platform) = match self.dtk_through_cache(dtk, goarch, cached).await? {
            DtkRead::Cached(found) => return Ok(found),
            DtkRead::Image {
                digest,
                pinned,
                platform,
                ..
            } => (digest, pinned, platform),
        };
        let wants = paths.iter().map(|p| Want::Path(p.clone())).collect();
        let read = files::find_first(
            &self.registry,
            &pinned,
            &platform,
            wants,
            DTK_FILE_LIMIT,
            self.reads.deep_bytes.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut found = HashMap::new();
        for (path, file) in paths.iter().zip(read) {
            if let Some((_, bytes)) = file {
                keep_dtk_file(&self.cache, &digest, path, &bytes, &*self.notify);
                found.insert(path.clone(), Arc::new(bytes));
            }
        }
        Ok(found)
    }

    /// The kernel image and the in-tree modules' dependencies of `target`'s kernel.
    async fn boot_kernel(&self, dtk: &str, target: &Target) -> Result<BootKernel, String> {
        let [vmlinuz, index] = boot_paths(&target.kernel);
        let mut read = self
            .dtk_files(dtk, &target.goarch, &[vmlinuz.clone(), index.clone()])
            .await?;
        let Some(kernel) = read.remove(&vmlinuz) else {
            return Err(format!(
                "driver-toolkit {dtk} has no kernel image /{vmlinuz} (kernel-core) to boot"
            ));
        };
        let Some(deps) = read.remove(&index) else {
            return Err(format!("driver-toolkit {dtk} has no /{index}"));
        };
        let entries = moddep::parse_index(&deps).map_err(|e| format!("/{index} in {dtk}: {e}"))?;
        let in_tree = entries
            .into_iter()
            .filter_map(|(name, values)| {
                let line = values.last().and_then(|v| moddep::parse_dep_line(v))?;
                Some((moddep::module_key(&name), line))
            })
            .collect();
        Ok(BootKernel {
            vmlinuz: Arc::unwrap_or_clone(kernel),
            in_tree,
        })
    }
}

/// The row once the VM has answered. The kernel's answer decides what the loader model
/// decided; a verdict made for another reason (a signature Secure Boot refuses) stands.
fn merge(row: &mut Row, boot: Boot) {
    let deep_loads = row.deep.as_ref().is_some_and(|d| d.mismatches.is_empty());
    let other_reason = deep_loads && row.verdict != Verdict::Loads;
    if boot.result == BootResult::Unknown || other_reason {
        if boot.result == BootResult::Unknown && row.verdict.is_ok() {
            row.verdict = Verdict::Unknown;
        }
        row.reason = format!("{}; --boot: {}", row.reason, boot.reason);
        row.boot = Some(boot);
        return;
    }
    let deep_said = row.reason.clone();
    let disagree = match boot.result {
        BootResult::Failed => deep_loads,
        _ => !deep_loads,
    };
    row.verdict = match boot.result {
        BootResult::Loads => Verdict::Loads,
        BootResult::Inconclusive => Verdict::Inconclusive,
        _ => Verdict::Failed,
    };
    row.reason = match boot.result {
        BootResult::Loads => format!("{deep_said}; {} in a VM", boot.reason),
        _ => boot.reason.clone(),
    };
    if disagree {
        row.reason = format!(
            "{} — but --deep said: {deep_said}. --deep and --boot disagree: one of them is wrong \
             (please report it)",
            row.reason
        );
    }
    row.boot = Some(boot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ko::Ko;

    fn ko(name: &str, depends: &[&str]) -> CachedKo {
        CachedKo {
            path: format!("/opt/lib/modules/k/extra/{name}.ko"),
            ko: Ok(Ko {
                name: Some(name.into()),
                vermagic: None,
                depends: depends.iter().map(|d| d.to_string()).collect(),
                license: None,
                import_ns: vec![],
                versions: None,
                undefined: vec![],
                exports: vec![],
                signature: None,
            }),
            bytes: None,
        }
    }

    #[test]
    fn modprobes_order() {
        let target = Target {
            kernel: "k".into(),
            goarch: "amd64".into(),
            dtk: None,
            dtk_kernel: None,
        };
        let candidate = |order: &[&str]| Candidate {
            job: (0, 0),
            target: target.clone(),
            files: vec![
                ko("main", &["helper", "crc-itu-t", "builtin"]),
                ko("helper", &[]),
                ko("extra_fw", &[]),
            ],
            module_name: "main".into(),
            order: order.iter().map(|o| o.to_string()).collect(),
            params: String::new(),
        };
        let in_tree: BTreeMap<String, DepLine> = [(
            "crc_itu_t".to_string(),
            DepLine {
                path: "kernel/lib/crc-itu-t.ko".into(),
                depends: vec!["kernel/lib/base.ko".into()],
            },
        )]
        .into();
        let tree = |name: &str, path: &str| Step::InTree {
            name: name.into(),
            path: path.into(),
        };
        // Dependencies first (an in-tree one after its own), `moduleName` last; a name neither
        // the Module's nor the driver-toolkit's (built in) is left to the kernel.
        assert_eq!(
            load_order(&candidate(&[]), &in_tree),
            [
                Step::Own(2),
                Step::Own(1),
                tree("base", "kernel/lib/base.ko"),
                tree("crc_itu_t", "kernel/lib/crc-itu-t.ko"),
                Step::Own(0),
            ]
        );
        // modulesLoadingOrder: the last listed first.
        assert_eq!(
            load_order(&candidate(&["main", "extra_fw", "helper"]), &in_tree)[..2],
            [Step::Own(1), Step::Own(2)]
        );
    }
}
