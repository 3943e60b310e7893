//! Will the worker find the module in the image? The same questions a node asks (kmm-api.md
//! §5.4): the worker's init container runs `cp -R <dirName>/lib/modules/<kernel> …`, then
//! `modprobe -d <dirName> <moduleName>` looks the name up in `modules.dep.bin` there and inserts
//! the files its line names; `modulesLoadingOrder` entries go through modprobe too, and
//! `<firmwarePath>/*` is copied out. Everything here is pure: it reads a `Tree` of the image.

use std::collections::BTreeMap;

use crate::registry::layers::{self, Node, Subtree, Tree, TreeQuery};

use super::moddep::{self, DepLine};

pub const DEP_INDEX: &str = "modules.dep.bin";
pub const ALIAS_INDEX: &str = "modules.alias.bin";
const DEP_TEXT: &str = "modules.dep";
/// Indexes of a whole kernel's modules stay well under this.
const INDEX_LIMIT: u64 = 32 * 1024 * 1024;
/// Entries listed at most; a kernel's full module tree has about 6,000.
const MAX_ENTRIES: usize = 200_000;
const MAX_SYMLINK_HOPS: usize = 8;

/// What the worker needs from the image for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// `modprobe.dirName` as the Module says it (`/opt`), for messages.
    pub dir_name: String,
    /// Where that directory really is in the image (symlinks above it followed), normalised.
    pub root: String,
    /// The raw kernel (`uname -r`).
    pub kernel: String,
    /// `moduleName`, then the `modulesLoadingOrder` entries.
    pub modules: Vec<String>,
    /// `firmwarePath`, normalised.
    pub firmware: Option<String>,
}

impl Wanted {
    pub fn new(dir_name: &str, kernel: &str, modules: Vec<String>, firmware: &str) -> Self {
        let mut unique: Vec<String> = Vec::new();
        for m in modules {
            if !m.is_empty()
                && !unique
                    .iter()
                    .any(|u| moddep::module_key(u) == moddep::module_key(&m))
            {
                unique.push(m);
            }
        }
        Wanted {
            dir_name: dir_name.to_string(),
            root: layers::normalize(dir_name),
            kernel: kernel.to_string(),
            modules: unique,
            firmware: (!firmware.trim().is_empty()).then(|| layers::normalize(firmware)),
        }
    }

    fn modules_dir(&self) -> String {
        layers::join(&self.root, "lib/modules")
    }

    /// `<root>/lib/modules/<kernel>`, the directory the worker copies.
    pub fn kernel_dir(&self) -> String {
        layers::join(&self.modules_dir(), &self.kernel)
    }

    /// `/opt/lib/modules/<kernel>/`, as a person writes it.
    fn shown_kernel_dir(&self) -> String {
        format!("/{}/", self.kernel_dir())
    }

    pub fn query(&self) -> TreeQuery {
        let mut subtrees = vec![
            Subtree::all(&self.kernel_dir()),
            // For "the image has modules for …" and "set dirName to /" hints.
            Subtree::children(&self.modules_dir()),
        ];
        if !self.root.is_empty() {
            subtrees.push(Subtree::children("lib/modules"));
        }
        if let Some(firmware) = &self.firmware {
            subtrees.push(Subtree::all(firmware));
        }
        TreeQuery {
            subtrees,
            keep: vec![DEP_INDEX.into(), ALIAS_INDEX.into()],
            limit: INDEX_LIMIT,
            max_entries: MAX_ENTRIES,
        }
    }

    /// A symlink above the module directory sends it elsewhere: the `Wanted` to look for next.
    pub fn redirected(&self, tree: &Tree) -> Option<Wanted> {
        let kernel_dir = self.kernel_dir();
        let (at, target) = tree.links_above.iter().find(|(at, _)| {
            kernel_dir.starts_with(at.as_str()) && kernel_dir[at.len()..].starts_with('/')
        })?;
        let moved = layers::follow_symlink(&kernel_dir, at, target);
        let suffix = format!("/lib/modules/{}", self.kernel);
        let root = moved.strip_suffix(&suffix).unwrap_or(&moved).to_string();
        Some(Wanted {
            root,
            ..self.clone()
        })
    }
}

/// What the image says about a Module for a kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Finding {
    /// modprobe will find every module and every file it needs; what was found.
    Ready(String),
    Failed(String),
    /// Could not be decided from what was read.
    Unknown(String),
}

/// What `modules.dep.bin` resolves a name to.
struct Resolution {
    line: DepLine,
}

/// The parsed indexes, kept between calls while the tree grows.
#[derive(Default)]
pub struct Indexes {
    dep: Option<Result<BTreeMap<String, Vec<String>>, String>>,
    alias: Option<Result<BTreeMap<String, Vec<String>>, String>>,
}

fn content<'a>(tree: &'a Tree, path: &str) -> Option<&'a [u8]> {
    match tree.entries.get(path) {
        Some(Node::File {
            content: Some(c), ..
        }) => Some(c),
        _ => None,
    }
}

impl Indexes {
    fn load(&mut self, tree: &Tree, kernel_dir: &str) {
        if self.dep.is_none()
            && let Some(bytes) = content(tree, &layers::join(kernel_dir, DEP_INDEX))
        {
            self.dep = Some(moddep::parse_index(bytes));
        }
        if self.alias.is_none()
            && let Some(bytes) = content(tree, &layers::join(kernel_dir, ALIAS_INDEX))
        {
            self.alias = Some(moddep::parse_index(bytes));
        }
    }

    /// The dep line modprobe uses for `name`: its own, or through an alias.
    fn resolve(&self, name: &str) -> Option<Resolution> {
        let dep = self.dep.as_ref()?.as_ref().ok()?;
        let line = |module: &str| {
            dep.get(&moddep::module_key(module))
                .and_then(|values| values.first())
                .and_then(|v| moddep::parse_dep_line(v))
        };
        if let Some(line) = line(name) {
            return Some(Resolution { line });
        }
        let aliases = self.alias.as_ref()?.as_ref().ok()?;
        let key = moddep::module_key(name);
        aliases
            .iter()
            .filter(|(pattern, _)| moddep::glob_match(pattern, &key))
            .flat_map(|(_, modules)| modules.iter())
            .find_map(|module| line(module))
            .map(|line| Resolution { line })
    }
}

/// Where `path` (inside the copied kernel directory) leads once symlinks are followed, as the
/// worker sees the copy: a link that leaves the directory dangles there.
fn resolve_in_copy<'a>(
    tree: &'a Tree,
    kernel_dir: &str,
    path: &str,
) -> Result<(String, Option<&'a Node>), String> {
    let mut current = path.to_string();
    for _ in 0..MAX_SYMLINK_HOPS {
        // The first symlink on the way (at the path or above it, below the kernel directory).
        let mut link = None;
        let mut prefix = String::new();
        for part in current.split('/') {
            prefix = layers::join(&prefix, part);
            if prefix.len() <= kernel_dir.len() {
                continue;
            }
            if let Some(Node::Symlink(target)) = tree.entries.get(&prefix) {
                link = Some((prefix.clone(), target.clone()));
                break;
            }
        }
        let Some((at, target)) = link else {
            return Ok((current.clone(), tree.entries.get(&current)));
        };
        if target.starts_with('/') {
            return Err(format!(
                "/{at} is an absolute symbolic link ({target}), which dangles once the worker has copied the directory"
            ));
        }
        let next = layers::follow_symlink(&current, &at, &target);
        if !(next.starts_with(kernel_dir) && next[kernel_dir.len()..].starts_with('/')) {
            return Err(format!(
                "/{at} links to {target}, outside the directory the worker copies"
            ));
        }
        current = next;
    }
    Err(format!("/{path}: too many levels of symbolic links"))
}

fn is_file(node: Option<&Node>) -> bool {
    matches!(node, Some(Node::File { .. } | Node::HardLink(_)))
}

/// Names of the directories in `dir` (recorded children).
fn child_dirs(tree: &Tree, dir: &str) -> Vec<String> {
    tree.under(dir)
        .filter(|(path, node)| {
            matches!(node, Node::Dir | Node::Symlink(_)) && !path[dir.len() + 1..].contains('/')
        })
        .map(|(path, _)| path[dir.len() + 1..].to_string())
        .collect()
}

/// `a, b, c and 4 more`.
fn list(names: &[String], most: usize) -> String {
    let shown: Vec<&str> = names.iter().take(most).map(String::as_str).collect();
    let more = names.len().saturating_sub(most);
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Evaluate what the image offers. `complete` trees give final answers; a partial tree (a scan
/// still under way) can only give `Ready`, and anything else means "not yet".
pub fn evaluate(wanted: &Wanted, tree: &Tree, indexes: &mut Indexes, image: &str) -> Finding {
    let kernel_dir = wanted.kernel_dir();
    let depmod = format!(
        "run `depmod -b {} {}` in the image build",
        wanted.dir_name, wanted.kernel
    );
    match tree.entries.get(&kernel_dir) {
        None if !tree.exists(&kernel_dir) => {
            if tree.truncated {
                return Finding::Unknown(format!(
                    "{image} has more files than the check lists; {} was not seen",
                    wanted.shown_kernel_dir()
                ));
            }
            let others = child_dirs(tree, &wanted.modules_dir());
            let at_top = if wanted.root.is_empty() {
                Vec::new()
            } else {
                child_dirs(tree, "lib/modules")
            };
            let found = if !others.is_empty() {
                format!("; the image has modules for {}", list(&others, 4))
            } else if at_top.contains(&wanted.kernel) {
                format!(
                    "; it has /lib/modules/{}/: set modprobe.dirName to /",
                    wanted.kernel
                )
            } else if !at_top.is_empty() {
                format!(
                    "; it has no /{} at all (only /lib/modules, for {})",
                    wanted.modules_dir(),
                    list(&at_top, 4)
                )
            } else {
                format!("; it has no /{} at all", wanted.modules_dir())
            };
            return Finding::Failed(format!(
                "no {} in {image}{found}",
                wanted.shown_kernel_dir()
            ));
        }
        Some(Node::Symlink(target)) => {
            return Finding::Failed(format!(
                "/{kernel_dir} in {image} is a symbolic link (to {target}): the worker copies it \
                 with `cp -R`, which copies the link, not the modules"
            ));
        }
        Some(Node::File { .. } | Node::HardLink(_) | Node::Other) => {
            return Finding::Failed(format!("/{kernel_dir} in {image} is not a directory"));
        }
        _ => {}
    }

    let index_path = layers::join(&kernel_dir, DEP_INDEX);
    let index_node = match resolve_in_copy(tree, &kernel_dir, &index_path) {
        Ok((_, node)) => node,
        Err(reason) => {
            return Finding::Failed(format!("{reason}: modprobe cannot read {DEP_INDEX}"));
        }
    };
    match index_node {
        None => {
            let text = tree.exists(&layers::join(&kernel_dir, DEP_TEXT));
            return Finding::Failed(if text {
                format!(
                    "{}{DEP_INDEX} is missing (only the text {DEP_TEXT} is there): modprobe reads \
                     the binary index only; {depmod}",
                    wanted.shown_kernel_dir()
                )
            } else {
                format!(
                    "no {DEP_INDEX} in {}: modprobe cannot find any module there; {depmod}",
                    wanted.shown_kernel_dir()
                )
            });
        }
        Some(Node::File {
            content: None,
            size,
        }) => {
            return Finding::Unknown(format!(
                "{}{DEP_INDEX} ({size} bytes) was not read",
                wanted.shown_kernel_dir()
            ));
        }
        Some(Node::File { .. }) => {}
        Some(_) => {
            return Finding::Unknown(format!(
                "{}{DEP_INDEX} is not a regular file",
                wanted.shown_kernel_dir()
            ));
        }
    }
    indexes.load(tree, &kernel_dir);
    if let Some(Err(reason)) = &indexes.dep {
        return Finding::Failed(format!(
            "{}{DEP_INDEX} is not a kmod index ({reason}); {depmod}",
            wanted.shown_kernel_dir()
        ));
    }

    let mut found = Vec::new();
    for name in &wanted.modules {
        let Some(resolution) = indexes.resolve(name) else {
            let key = moddep::module_key(name);
            let listed: Vec<String> = match &indexes.dep {
                Some(Ok(dep)) => dep.keys().cloned().collect(),
                _ => Vec::new(),
            };
            let on_disk = tree.under(&kernel_dir).map(|(p, _)| p).find(|p| {
                let file = layers::base(p);
                file.split(".ko").next().map(moddep::module_key) == Some(key.clone())
                    && file.contains(".ko")
            });
            let stale = match on_disk {
                Some(p) => format!(
                    " although {} is in the image: the index is stale",
                    &p[kernel_dir.len() + 1..]
                ),
                None => String::new(),
            };
            let lists = if listed.is_empty() {
                "it lists no module".to_string()
            } else {
                format!("it lists {}", list(&listed, 5))
            };
            return Finding::Failed(format!(
                "{DEP_INDEX} does not list {key}{stale} ({lists}); {depmod}"
            ));
        };
        let line = resolution.line;
        for file in std::iter::once(&line.path).chain(&line.depends) {
            if file.starts_with('/') {
                return Finding::Failed(format!(
                    "{DEP_INDEX} names {file} for {name} by absolute path, which the worker does \
                     not have; {depmod}"
                ));
            }
            let path = layers::join(&kernel_dir, file);
            match resolve_in_copy(tree, &kernel_dir, &path) {
                Ok((_, node)) if is_file(node) => {}
                Ok(_) => {
                    return Finding::Failed(format!(
                        "{DEP_INDEX} names {file} for {name}, but /{path} is not in {image}"
                    ));
                }
                Err(reason) => return Finding::Failed(format!("{name}: {reason}")),
            }
        }
        found.push(match line.depends.len() {
            0 => format!("{name}: {}", line.path),
            1 => format!("{name}: {} (+1 dependency)", line.path),
            n => format!("{name}: {} (+{n} dependencies)", line.path),
        });
    }

    if let Some(firmware) = &wanted.firmware {
        match tree.entries.get(firmware) {
            Some(Node::Symlink(target)) => {
                return Finding::Unknown(format!(
                    "firmwarePath /{firmware} is a symbolic link (to {target}), which the check does not follow"
                ));
            }
            Some(Node::File { .. }) => {
                return Finding::Failed(format!(
                    "firmwarePath /{firmware} in {image} is a file, not a directory"
                ));
            }
            _ if !tree.exists(firmware) => {
                return Finding::Failed(format!(
                    "firmwarePath /{firmware} is not in {image}: the worker's copy of it fails"
                ));
            }
            _ => {}
        }
        let files = tree
            .under(firmware)
            .filter(|(_, n)| matches!(n, Node::File { .. } | Node::HardLink(_) | Node::Symlink(_)))
            .count();
        if files == 0 {
            return Finding::Failed(format!(
                "firmwarePath /{firmware} in {image} holds no files: the worker's `cp {}/*` fails",
                firmware
            ));
        }
        found.push(format!(
            "firmware: {files} file{}",
            if files == 1 { "" } else { "s" }
        ));
    }
    if found.is_empty() {
        return Finding::Unknown("nothing to check: the Module names no module".into());
    }
    Finding::Ready(found.join("; "))
}

/// The image paths of every file modprobe inserts for `wanted` (after `evaluate` found it
/// Ready, with the indexes it parsed): each name's module, then its dependencies, links inside
/// the copy followed, each once.
pub fn load_files(wanted: &Wanted, tree: &Tree, indexes: &mut Indexes) -> Vec<String> {
    let kernel_dir = wanted.kernel_dir();
    indexes.load(tree, &kernel_dir);
    let mut files: Vec<String> = Vec::new();
    for name in &wanted.modules {
        let Some(resolution) = indexes.resolve(name) else {
            continue;
        };
        let line = resolution.line;
        for file in std::iter::once(&line.path).chain(&line.depends) {
            let path = layers::join(&kernel_dir, file);
            if let Ok((resolved, node)) = resolve_in_copy(tree, &kernel_dir, &path)
                && is_file(node)
                && !files.contains(&resolved)
            {
                files.push(resolved);
            }
        }
    }
    files
}

/// For the scan: true once the image is known to be `Ready`, so that no more is read. Called
/// after every entry recorded, so it only looks for the positive answer, cheaply: every name in
/// `modules.dep.bin` (aliases wait for the end of the scan) and every file it names present.
pub fn answered(wanted: &Wanted, tree: &Tree, indexes: &mut Indexes) -> bool {
    let kernel_dir = wanted.kernel_dir();
    if content(tree, &layers::join(&kernel_dir, DEP_INDEX)).is_none() {
        return false;
    }
    indexes.load(tree, &kernel_dir);
    let Some(Ok(dep)) = &indexes.dep else {
        return false;
    };
    for name in &wanted.modules {
        let Some(line) = dep
            .get(&moddep::module_key(name))
            .and_then(|values| values.first())
            .and_then(|v| moddep::parse_dep_line(v))
        else {
            return false;
        };
        for file in std::iter::once(&line.path).chain(&line.depends) {
            let path = layers::join(&kernel_dir, file);
            match resolve_in_copy(tree, &kernel_dir, &path) {
                Ok((_, node)) if is_file(node) => {}
                _ => return false,
            }
        }
    }
    if let Some(firmware) = &wanted.firmware
        && !tree
            .under(firmware)
            .any(|(_, n)| matches!(n, Node::File { .. } | Node::HardLink(_) | Node::Symlink(_)))
    {
        return false;
    }
    // Everything is there: the full evaluation must agree before reading stops.
    matches!(evaluate(wanted, tree, indexes, ""), Finding::Ready(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "5.14.0-570.19.1.el9_6.x86_64";
    const DEP_BIN: &[u8] = include_bytes!("testdata/modules.dep.bin");
    const ALIAS_BIN: &[u8] = include_bytes!("testdata/modules.alias.bin");

    fn file(content: Option<&[u8]>) -> Node {
        Node::File {
            size: content.map_or(100, |c| c.len() as u64),
            content: content.map(<[u8]>::to_vec),
        }
    }

    /// The image of the depmod fixture: mlx5-ib → mlx5_core → mlxfw under /opt.
    fn tree(extra: &[(&str, Node)], skip: &[&str]) -> Tree {
        let kd = format!("opt/lib/modules/{K}");
        let mut entries: BTreeMap<String, Node> = [
            ("opt/lib/modules".to_string(), Node::Dir),
            (kd.clone(), Node::Dir),
            (format!("{kd}/modules.dep.bin"), file(Some(DEP_BIN))),
            (format!("{kd}/modules.alias.bin"), file(Some(ALIAS_BIN))),
            (format!("{kd}/modules.dep"), file(None)),
            (format!("{kd}/extra/mlx5_core.ko"), file(None)),
            (format!("{kd}/extra/mlx5-ib.ko"), file(None)),
            (format!("{kd}/kernel/drivers/net/mlxfw.ko"), file(None)),
        ]
        .into_iter()
        .filter(|(p, _)| !skip.iter().any(|s| p.ends_with(s)))
        .collect();
        for (path, node) in extra {
            entries.insert(path.to_string(), node.clone());
        }
        Tree {
            entries,
            complete: true,
            ..Tree::default()
        }
    }

    fn eval(wanted: &Wanted, tree: &Tree) -> Finding {
        evaluate(
            wanted,
            tree,
            &mut Indexes::default(),
            "q.io/v/mlx5@sha256:1",
        )
    }

    fn wanted(modules: &[&str]) -> Wanted {
        Wanted::new(
            "/opt",
            K,
            modules.iter().map(|s| s.to_string()).collect(),
            "",
        )
    }

    #[test]
    fn ready_when_modprobe_finds_every_file() {
        let finding = eval(&wanted(&["mlx5_ib"]), &tree(&[], &[]));
        assert_eq!(
            finding,
            Finding::Ready("mlx5_ib: extra/mlx5-ib.ko (+2 dependencies)".into())
        );
        // `-` and `_` are the same name; loading order entries are checked too; an alias works.
        let finding = eval(
            &wanted(&[
                "mlx5-core",
                "mlxfw",
                "pci:v000015B3d00001017sv0sd0bc02sc00i00",
            ]),
            &tree(&[], &[]),
        );
        assert!(
            matches!(finding, Finding::Ready(ref s) if s.contains("mlxfw: kernel/drivers/net/mlxfw.ko")),
            "{finding:?}"
        );
    }

    #[test]
    fn a_missing_dependency_or_an_unlisted_name_fails() {
        let finding = eval(&wanted(&["mlx5_ib"]), &tree(&[], &["mlxfw.ko"]));
        assert_eq!(
            finding,
            Finding::Failed(format!(
                "modules.dep.bin names kernel/drivers/net/mlxfw.ko for mlx5_ib, but /opt/lib/modules/{K}/kernel/drivers/net/mlxfw.ko is not in q.io/v/mlx5@sha256:1"
            ))
        );
        let stale = tree(
            &[(
                &format!("opt/lib/modules/{K}/extra/nvidia.ko.xz"),
                file(None),
            )],
            &[],
        );
        let Finding::Failed(reason) = eval(&wanted(&["nvidia"]), &stale) else {
            panic!()
        };
        assert_eq!(
            reason,
            format!(
                "modules.dep.bin does not list nvidia although extra/nvidia.ko.xz is in the image: the index is stale (it lists mlx5_core, mlx5_ib, mlxfw); run `depmod -b /opt {K}` in the image build"
            )
        );
    }

    #[test]
    fn the_binary_index_is_what_counts() {
        let Finding::Failed(reason) = eval(&wanted(&["mlx5_ib"]), &tree(&[], &["modules.dep.bin"]))
        else {
            panic!()
        };
        assert!(
            reason.contains("modules.dep.bin is missing (only the text modules.dep is there)"),
            "{reason}"
        );
        let Finding::Failed(reason) = eval(
            &wanted(&["mlx5_ib"]),
            &tree(&[], &["modules.dep.bin", "modules.dep"]),
        ) else {
            panic!()
        };
        assert!(
            reason.starts_with(&format!("no modules.dep.bin in /opt/lib/modules/{K}/")),
            "{reason}"
        );
        let garbage = tree(
            &[(
                &format!("opt/lib/modules/{K}/modules.dep.bin"),
                file(Some(b"junk")),
            )],
            &[],
        );
        assert!(
            matches!(eval(&wanted(&["mlx5_ib"]), &garbage), Finding::Failed(r) if r.contains("is not a kmod index"))
        );
    }

    #[test]
    fn another_kernel_or_another_directory() {
        let other = Tree {
            entries: [
                ("opt/lib/modules".to_string(), Node::Dir),
                (
                    "opt/lib/modules/5.14.0-427.50.1.el9_4.x86_64".to_string(),
                    Node::Dir,
                ),
            ]
            .into_iter()
            .collect(),
            complete: true,
            ..Tree::default()
        };
        assert_eq!(
            eval(&wanted(&["mlx5_core"]), &other),
            Finding::Failed(format!(
                "no /opt/lib/modules/{K}/ in q.io/v/mlx5@sha256:1; the image has modules for 5.14.0-427.50.1.el9_4.x86_64"
            ))
        );
        let at_top = Tree {
            entries: [
                ("lib/modules".to_string(), Node::Dir),
                (format!("lib/modules/{K}"), Node::Dir),
            ]
            .into_iter()
            .collect(),
            complete: true,
            ..Tree::default()
        };
        assert!(
            matches!(eval(&wanted(&["m"]), &at_top), Finding::Failed(r) if r.ends_with("set modprobe.dirName to /"))
        );
        let link = tree(&[], &[]);
        let mut link = link.clone();
        link.entries
            .insert(format!("opt/lib/modules/{K}"), Node::Symlink("real".into()));
        assert!(matches!(eval(&wanted(&["m"]), &link), Finding::Failed(r) if r.contains("cp -R")));
    }

    #[test]
    fn symlinks_inside_the_copy() {
        let kd = format!("opt/lib/modules/{K}");
        let relative = tree(
            &[
                (
                    &format!("{kd}/extra/mlx5-ib.ko"),
                    Node::Symlink("../updates/ib.ko".into()),
                ),
                (&format!("{kd}/updates/ib.ko"), file(None)),
            ],
            &[],
        );
        assert!(matches!(
            eval(&wanted(&["mlx5_ib"]), &relative),
            Finding::Ready(_)
        ));
        let absolute = tree(
            &[(
                &format!("{kd}/extra/mlx5-ib.ko"),
                Node::Symlink("/usr/lib/ib.ko".into()),
            )],
            &[],
        );
        assert!(
            matches!(eval(&wanted(&["mlx5_ib"]), &absolute), Finding::Failed(r) if r.contains("dangles"))
        );
        let outside = tree(
            &[(
                &format!("{kd}/extra/mlx5-ib.ko"),
                Node::Symlink("../../../ib.ko".into()),
            )],
            &[],
        );
        assert!(
            matches!(eval(&wanted(&["mlx5_ib"]), &outside), Finding::Failed(r) if r.contains("outside"))
        );
    }

    #[test]
    fn firmware_must_be_there_with_files() {
        let with_fw = |entries: &[(&str, Node)]| {
            let w = Wanted::new("/opt", K, vec!["mlxfw".into()], "/lib/firmware/mlx5/");
            eval(&w, &tree(entries, &[]))
        };
        assert!(
            matches!(with_fw(&[]), Finding::Failed(r) if r.contains("firmwarePath /lib/firmware/mlx5 is not in"))
        );
        assert!(
            matches!(with_fw(&[("lib/firmware/mlx5", Node::Dir)]), Finding::Failed(r) if r.contains("holds no files"))
        );
        assert!(matches!(
            with_fw(&[("lib/firmware/mlx5/fw.bin", file(None))]),
            Finding::Ready(r) if r.ends_with("firmware: 1 file")
        ));
    }

    #[test]
    fn answered_only_when_ready() {
        let w = wanted(&["mlx5_ib"]);
        let mut indexes = Indexes::default();
        assert!(answered(&w, &tree(&[], &[]), &mut indexes));
        let mut partial = tree(&[], &["mlxfw.ko"]);
        partial.complete = false;
        assert!(!answered(&w, &partial, &mut Indexes::default()));
        assert!(!answered(
            &w,
            &tree(&[], &["modules.dep.bin"]),
            &mut Indexes::default()
        ));
    }

    #[test]
    fn redirects_through_a_symlink_above() {
        let w = wanted(&["m"]);
        let tree = Tree {
            links_above: vec![("opt".into(), "usr/local".into())],
            ..Tree::default()
        };
        let moved = w.redirected(&tree).unwrap();
        assert_eq!(moved.kernel_dir(), format!("usr/local/lib/modules/{K}"));
        assert_eq!(moved.dir_name, "/opt");
    }
}
