//! The merged view of a few directories of an image, as a container sees them: what `ls -R` would
//! list there, built from the layers newest first, without unpacking anything.
//!
//! A path is taken from the newest layer that has it. `.wh.<name>` and `.wh..wh..opq` hide what
//! lower layers have (never their own layer), and so does a file or symlink standing where a lower
//! layer has a directory. Reading stops as soon as the caller's question is answered: once a layer
//! shows an entry, no lower layer can take it away, so "everything I need is there" is final the
//! moment it becomes true, while "something is missing" needs every layer.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use super::{
    FindError, Hit, LayerSource, Rules, ancestors, base, decompress, is_under, normalize,
    scan_layer,
};

/// One directory whose contents are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtree {
    /// Normalised path (`opt/lib/modules/5.14.0-570.el9.x86_64`).
    pub root: String,
    /// Levels listed below the root; None for all. `Some(1)` lists the root's children only
    /// (deeper entries still prove their level-1 ancestor exists).
    pub depth: Option<usize>,
}

impl Subtree {
    pub fn all(root: &str) -> Self {
        Subtree {
            root: normalize(root),
            depth: None,
        }
    }

    pub fn children(root: &str) -> Self {
        Subtree {
            root: normalize(root),
            depth: Some(1),
        }
    }

    /// The path `path` is recorded as, if it falls in this subtree: itself, or its ancestor at
    /// the depth limit.
    fn recorded_as<'a>(&self, path: &'a str) -> Option<&'a str> {
        if path == self.root {
            return Some(path);
        }
        let rest = if self.root.is_empty() {
            path
        } else {
            path.strip_prefix(self.root.as_str())?.strip_prefix('/')?
        };
        match self.depth {
            None => Some(path),
            Some(depth) => {
                let cut = rest
                    .match_indices('/')
                    .nth(depth.saturating_sub(1))
                    .map(|(i, _)| i);
                Some(match cut {
                    Some(i) => &path[..path.len() - rest.len() + i],
                    None => path,
                })
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct TreeQuery {
    pub subtrees: Vec<Subtree>,
    /// File names (the last path component) whose content is kept, up to `limit` bytes each.
    pub keep: Vec<String>,
    pub limit: u64,
    /// Entries recorded at most; past it the listing is marked truncated.
    pub max_entries: usize,
}

/// What the merged view has at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file; `content` when its name is kept and it fits the limit.
    File {
        size: u64,
        content: Option<Vec<u8>>,
    },
    Dir,
    Symlink(String),
    /// A hard link to another path of the same layer, whose content could not be had.
    HardLink(String),
    /// A device, fifo or the like.
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<String, Node>,
    /// Visible symbolic links at strict ancestors of a subtree root (`opt` → `usr/local`): the
    /// subtree lives elsewhere, and nothing below the link was looked at.
    pub links_above: Vec<(String, String)>,
    /// Every layer was read, or what was left was hidden: an absence is final.
    pub complete: bool,
    /// More entries than `max_entries`: some were not recorded.
    pub truncated: bool,
    pub layers_read: usize,
}

impl Tree {
    /// Whether `path` exists in the view: recorded, or the ancestor of something recorded.
    pub fn exists(&self, path: &str) -> bool {
        if self.entries.contains_key(path) {
            return true;
        }
        let prefix = format!("{path}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix))
    }

    /// Recorded entries below `dir` (at any depth), in path order.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
    }
}

/// Where `path` stands relative to the subtrees.
enum Place<'a> {
    /// Recorded as this path (itself, or its ancestor at a depth limit).
    Inside(&'a str),
    /// A strict ancestor of a subtree root.
    Above,
    Elsewhere,
}

struct Scan<'q> {
    query: &'q TreeQuery,
    tree: Tree,
    /// What upper layers had at the strict ancestors of the roots.
    above: HashMap<String, bool>,
    rules: Rules,
}

impl Scan<'_> {
    fn place<'p>(&self, path: &'p str) -> Place<'p> {
        for subtree in &self.query.subtrees {
            if let Some(recorded) = subtree.recorded_as(path) {
                return Place::Inside(recorded);
            }
        }
        if self.query.subtrees.iter().any(|s| is_under(&s.root, path)) {
            Place::Above
        } else {
            Place::Elsewhere
        }
    }

    /// A rule matters when it can hide something inside a subtree.
    fn relevant(&self, path: &str) -> bool {
        !matches!(self.place(path), Place::Elsewhere)
    }

    /// Every root hidden by upper layers: lower layers cannot add anything.
    fn all_hidden(&self) -> bool {
        self.query
            .subtrees
            .iter()
            .all(|s| self.rules.hides_below(&s.root))
    }

    fn record(&mut self, path: &str, node: Node) -> bool {
        if self.tree.entries.contains_key(path) {
            return false;
        }
        if self.tree.entries.len() >= self.query.max_entries {
            self.tree.truncated = true;
            return false;
        }
        // The directories leading to it exist, whether or not the tar lists them.
        for ancestor in ancestors(path) {
            if self.place(ancestor).is_inside() && !self.tree.entries.contains_key(ancestor) {
                self.tree.entries.insert(ancestor.to_string(), Node::Dir);
            }
        }
        self.tree.entries.insert(path.to_string(), node);
        true
    }
}

impl Place<'_> {
    fn is_inside(&self) -> bool {
        matches!(self, Place::Inside(_))
    }
}

/// Build the view of `query`'s subtrees. `answered` sees the view after each entry recorded and
/// ends the scan by returning true.
pub fn scan_tree(
    source: &dyn LayerSource,
    query: &TreeQuery,
    answered: &mut dyn FnMut(&Tree) -> bool,
) -> Result<Tree, FindError> {
    let mut scan = Scan {
        query,
        tree: Tree::default(),
        above: HashMap::new(),
        rules: Rules::default(),
    };
    for layer in 0..source.layer_count() {
        if scan.all_hidden() {
            break;
        }
        let mut pending = Rules::default();
        // Hard links to kept files whose content is elsewhere in this layer: (path, target).
        let mut links: Vec<(String, String)> = Vec::new();
        let mut stop = false;
        let mut archive = tar::Archive::new(decompress(source.open(layer)?)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            let file_name = base(&name);
            if pending.whiteout(&name, |path| scan.relevant(path)) {
                continue;
            }
            if scan.rules.hides(&name) {
                continue;
            }
            let kind = entry.header().entry_type();
            let link_target = || {
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            match scan.place(&name) {
                Place::Elsewhere => {}
                Place::Above => {
                    if scan.above.contains_key(&name) {
                        continue;
                    }
                    let is_dir = kind.is_dir();
                    scan.above.insert(name.clone(), is_dir);
                    if !is_dir {
                        if kind.is_symlink() {
                            scan.tree.links_above.push((name.clone(), link_target()));
                        }
                        pending.shadow.insert(name.clone());
                    }
                }
                Place::Inside(recorded) if recorded != name => {
                    // Deeper than the listing goes: it proves its ancestor is a directory.
                    let recorded = recorded.to_string();
                    if scan.record(&recorded, Node::Dir) && answered(&scan.tree) {
                        stop = true;
                        break;
                    }
                }
                Place::Inside(_) => {
                    if scan.tree.entries.contains_key(&name) {
                        continue;
                    }
                    let node = if kind.is_file() || kind == tar::EntryType::Continuous {
                        let size = entry.size();
                        let content =
                            if query.keep.iter().any(|k| k == file_name) && size <= query.limit {
                                let mut content = Vec::with_capacity(size as usize);
                                (&mut entry)
                                    .take(query.limit + 1)
                                    .read_to_end(&mut content)?;
                                Some(content)
                            } else {
                                None
                            };
                        Node::File { size, content }
                    } else if kind.is_dir() {
                        Node::Dir
                    } else if kind.is_symlink() {
                        Node::Symlink(link_target())
                    } else if kind.is_hard_link() {
                        let target = normalize(&link_target());
                        let kept = query.keep.iter().any(|k| k == file_name);
                        match scan.tree.entries.get(&target) {
                            Some(
                                file @ Node::File {
                                    content: Some(_), ..
                                },
                            ) => file.clone(),
                            Some(Node::File { size, .. }) if !kept => Node::File {
                                size: *size,
                                content: None,
                            },
                            _ => {
                                if kept {
                                    links.push((name.clone(), target.clone()));
                                }
                                Node::HardLink(target)
                            }
                        }
                    } else {
                        Node::Other
                    };
                    if !matches!(node, Node::Dir) {
                        pending.shadow.insert(name.clone());
                    }
                    if scan.record(&name, node) && answered(&scan.tree) {
                        stop = true;
                        break;
                    }
                }
            }
        }
        drop(archive);
        // A kept file reached through a hard link: its data is an earlier entry of this layer.
        for (path, target) in links {
            let again = match scan_layer(
                decompress(source.open(layer)?)?,
                std::slice::from_ref(&target),
                query.limit,
            ) {
                Ok(again) => again,
                Err(FindError::TooLarge { .. }) => continue,
                Err(e) => return Err(e),
            };
            if let Some(Hit::File(content)) = again.hits.get(&target) {
                scan.tree.entries.insert(
                    path,
                    Node::File {
                        size: content.len() as u64,
                        content: Some(content.clone()),
                    },
                );
            }
        }
        scan.tree.layers_read = layer + 1;
        if stop {
            return Ok(scan.tree);
        }
        scan.rules.extend(pending);
    }
    scan.tree.complete = true;
    Ok(scan.tree)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{E, Mem, tar_of};
    use super::*;

    const K: &str = "opt/lib/modules/5.14.0";

    fn query() -> TreeQuery {
        TreeQuery {
            subtrees: vec![Subtree::all(K), Subtree::children("opt/lib/modules")],
            keep: vec!["modules.dep.bin".into()],
            limit: 1024,
            max_entries: 100,
        }
    }

    fn scan(layers: Vec<Vec<u8>>) -> Tree {
        scan_tree(&Mem::new(layers), &query(), &mut |_| false).unwrap()
    }

    fn paths(tree: &Tree) -> Vec<&str> {
        tree.entries.keys().map(String::as_str).collect()
    }

    #[test]
    fn lists_the_subtrees_with_implicit_directories() {
        let layer = tar_of(&[
            E::File("etc/os-release", b"x"),
            E::File("opt/lib/modules/5.14.0/extra/a.ko", b"ko"),
            E::File("./opt/lib/modules/5.14.0/modules.dep.bin", b"bin"),
            E::File("opt/lib/modules/4.18.0/extra/old.ko", b"old"),
        ]);
        let tree = scan(vec![layer]);
        assert_eq!(
            paths(&tree),
            vec![
                "opt/lib/modules",
                "opt/lib/modules/4.18.0",
                K,
                "opt/lib/modules/5.14.0/extra",
                "opt/lib/modules/5.14.0/extra/a.ko",
                "opt/lib/modules/5.14.0/modules.dep.bin",
            ]
        );
        assert_eq!(
            tree.entries["opt/lib/modules/5.14.0/modules.dep.bin"],
            Node::File {
                size: 3,
                content: Some(b"bin".to_vec())
            }
        );
        assert_eq!(
            tree.entries["opt/lib/modules/5.14.0/extra/a.ko"],
            Node::File {
                size: 2,
                content: None
            }
        );
        assert!(tree.complete && tree.exists(K) && !tree.exists("opt/lib/modules/6.0"));
        assert_eq!(tree.under(K).count(), 3);
    }

    #[test]
    fn upper_layers_win_and_whiteouts_hide_lower_ones() {
        let base = tar_of(&[
            E::File("opt/lib/modules/5.14.0/extra/a.ko", b"old"),
            E::File("opt/lib/modules/5.14.0/extra/gone.ko", b"x"),
            E::File("opt/lib/modules/5.14.0/kernel/b.ko", b"x"),
        ]);
        let top = tar_of(&[
            E::File("opt/lib/modules/5.14.0/extra/a.ko", b"newer"),
            E::File("opt/lib/modules/5.14.0/extra/.wh.gone.ko", b""),
        ]);
        let tree = scan(vec![base.clone(), top]);
        assert_eq!(
            tree.entries["opt/lib/modules/5.14.0/extra/a.ko"],
            Node::File {
                size: 5,
                content: None
            }
        );
        assert!(!tree.exists("opt/lib/modules/5.14.0/extra/gone.ko"));
        assert!(tree.exists("opt/lib/modules/5.14.0/kernel/b.ko"));

        // An opaque directory hides every lower child, and the scan stops early.
        let opaque = tar_of(&[E::File("opt/lib/modules/5.14.0/.wh..wh..opq", b"")]);
        let tree = scan(vec![base.clone(), opaque]);
        assert!(!tree.exists("opt/lib/modules/5.14.0/kernel/b.ko"));

        // The whole /opt removed above: nothing below is visible, nothing below is read.
        let removed = tar_of(&[E::File(".wh.opt", b"")]);
        let mem = Mem::new(vec![base.clone(), removed]);
        let tree = scan_tree(&mem, &query(), &mut |_| false).unwrap();
        assert!(tree.entries.is_empty() && tree.complete);
        assert_eq!(*mem.opened.borrow(), vec![0]);

        // A file where a lower layer has the directory.
        let file = tar_of(&[E::File("opt/lib/modules/5.14.0/extra", b"not a dir")]);
        let tree = scan(vec![base, file]);
        assert!(!tree.exists("opt/lib/modules/5.14.0/extra/a.ko"));
        assert!(tree.exists("opt/lib/modules/5.14.0/kernel/b.ko"));
    }

    #[test]
    fn a_layer_is_not_hidden_by_its_own_whiteouts() {
        let base = tar_of(&[E::File("opt/lib/modules/5.14.0/extra/a.ko", b"old")]);
        let top = tar_of(&[
            E::File("opt/lib/modules/5.14.0/.wh..wh..opq", b""),
            E::File("opt/lib/modules/5.14.0/extra/b.ko", b"new"),
        ]);
        let tree = scan(vec![base, top]);
        assert!(tree.exists("opt/lib/modules/5.14.0/extra/b.ko"));
        assert!(!tree.exists("opt/lib/modules/5.14.0/extra/a.ko"));
    }

    #[test]
    fn links_above_and_inside() {
        let top = tar_of(&[
            E::Sym("opt", "usr/local"),
            E::File("usr/local/lib/modules/5.14.0/extra/a.ko", b"x"),
        ]);
        let base = tar_of(&[E::File("opt/lib/modules/5.14.0/extra/hidden.ko", b"x")]);
        let tree = scan(vec![base, top]);
        assert_eq!(
            tree.links_above,
            vec![("opt".to_string(), "usr/local".to_string())]
        );
        assert!(tree.entries.is_empty());

        let layer = tar_of(&[
            E::File("opt/lib/modules/5.14.0/modules.dep.real", b"index"),
            E::Link(
                "opt/lib/modules/5.14.0/modules.dep.bin",
                "opt/lib/modules/5.14.0/modules.dep.real",
            ),
            E::Sym("opt/lib/modules/5.14.0/extra/b.ko", "a.ko"),
        ]);
        let tree = scan(vec![layer]);
        assert_eq!(
            tree.entries["opt/lib/modules/5.14.0/modules.dep.bin"],
            Node::File {
                size: 5,
                content: Some(b"index".to_vec())
            }
        );
        assert_eq!(
            tree.entries["opt/lib/modules/5.14.0/extra/b.ko"],
            Node::Symlink("a.ko".into())
        );
    }

    #[test]
    fn stops_as_soon_as_the_question_is_answered() {
        let base = tar_of(&[E::File("opt/lib/modules/5.14.0/extra/lower.ko", b"x")]);
        let mut top = tar_of(&[
            E::File("opt/lib/modules/5.14.0/extra/a.ko", b"x"),
            E::File("opt/lib/modules/5.14.0/modules.dep.bin", b"bin"),
        ]);
        // Past the two entries the layer is garbage: reading on would fail.
        top.truncate(top.len() - 1024);
        top.extend(std::iter::repeat_n(0xAB, 4096));
        let mem = Mem::new(vec![base, top]);
        let tree = scan_tree(&mem, &query(), &mut |t| {
            t.exists("opt/lib/modules/5.14.0/modules.dep.bin")
        })
        .unwrap();
        assert!(!tree.complete);
        assert_eq!(tree.layers_read, 1);
        assert_eq!(*mem.opened.borrow(), vec![0]);
    }

    #[test]
    fn depth_limits_and_the_entry_cap() {
        let layer = tar_of(&[
            E::File("opt/lib/modules/4.18.0/kernel/a.ko", b"x"),
            E::File("opt/lib/modules/4.18.0/kernel/b.ko", b"x"),
        ]);
        let tree = scan(vec![layer]);
        assert_eq!(
            paths(&tree),
            vec!["opt/lib/modules", "opt/lib/modules/4.18.0"]
        );

        let many: Vec<(String, &[u8])> = (0..10)
            .map(|i| (format!("{K}/extra/m{i}.ko"), &b"x"[..]))
            .collect();
        let entries: Vec<E> = many.iter().map(|(p, d)| E::File(p, d)).collect();
        let mut small = query();
        small.max_entries = 5;
        let tree = scan_tree(&Mem::new(vec![tar_of(&entries)]), &small, &mut |_| false).unwrap();
        assert!(tree.truncated);
        assert_eq!(tree.entries.len(), 5);
        assert!(tree.exists("opt/lib/modules/5.14.0/extra/m0.ko"));
    }
}
