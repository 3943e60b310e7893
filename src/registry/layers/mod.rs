//! Read files from image layers as a running container would see them.
//!
//! Layers are walked newest first; each one is a stream (decompressor → tar reader) that is
//! dropped as soon as the answer is known. Whiteouts follow the OCI layer spec
//! (image-spec `layer.md`): `.wh.<name>` removes `<name>` from lower layers, `.wh..wh..opq`
//! hides every lower child of its directory, and either one never hides a file of its own layer.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

mod tree;
pub use tree::{Node, Subtree, Tree, TreeQuery, scan_tree};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Symlinks followed per file before giving up (the kernel's own limit is 40; 8 is plenty here).
const MAX_SYMLINK_HOPS: usize = 8;

/// Where the layers come from: a registry in production, memory in tests.
pub trait LayerSource {
    /// Number of layers.
    fn layer_count(&self) -> usize;
    /// Open layer `index` counted from the **top** (0 = newest), compressed or not.
    fn open(&self, index_from_top: usize) -> io::Result<Box<dyn Read + '_>>;
}

#[derive(Debug)]
pub enum FindError {
    /// A wanted file is larger than the limit: refuse rather than buffer it.
    TooLarge { path: String, size: u64, limit: u64 },
    /// Reading or decoding a layer failed (the registry error, when there is one, is inside).
    Io(io::Error),
}

impl From<io::Error> for FindError {
    fn from(e: io::Error) -> Self {
        FindError::Io(e)
    }
}

/// Wrap `reader` in the decompressor its first bytes call for (gzip, zstd, or plain tar).
/// Media types lie often enough (and OCI allows plain tar) that the magic bytes decide.
pub fn decompress<'a>(mut reader: Box<dyn Read + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head_bytes = head[..filled].to_vec();
    let whole = io::Cursor::new(head_bytes).chain(reader);
    if filled >= 2 && head[..2] == GZIP_MAGIC {
        Ok(Box::new(MultiGzDecoder::new(whole)))
    } else if filled == 4 && head == ZSTD_MAGIC {
        Ok(Box::new(ZstdFrames::new(whole)))
    } else {
        Ok(Box::new(whole))
    }
}

/// A zstd stream of any number of frames (zstd:chunked layers are many), skippable frames
/// skipped, decoded in pure Rust (ruzstd; its window limit is libzstd's default, 128 MiB).
struct ZstdFrames<R: Read> {
    source: Peekable<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: Read> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source: Peekable {
                inner: source,
                peeked: None,
            },
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(io::Error::other)?;
                }
                let n = self.decoder.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.in_frame = false;
            }
            if self.source.at_end()? {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped < u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd stream ends inside a skippable frame",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// A reader that can tell whether anything is left, without losing the byte it looked at.
struct Peekable<R: Read> {
    inner: R,
    peeked: Option<u8>,
}

impl<R: Read> Peekable<R> {
    fn at_end(&mut self) -> io::Result<bool> {
        if self.peeked.is_some() {
            return Ok(false);
        }
        let mut byte = [0u8; 1];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => return Ok(true),
                Ok(_) => {
                    self.peeked = Some(byte[0]);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Read for Peekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.peeked.take() {
            Some(byte) => {
                buf[0] = byte;
                Ok(1)
            }
            None => self.inner.read(buf),
        }
    }
}

/// Strip `./`, `/` and trailing `/` so `./etc/x`, `/etc/x` and `etc/x` compare equal.
pub fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

pub(crate) fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

pub(crate) fn base(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Proper ancestors of `path`: `a/b/c` → [`a`, `a/b`].
pub(crate) fn ancestors(path: &str) -> Vec<&str> {
    path.match_indices('/').map(|(i, _)| &path[..i]).collect()
}

/// `path` is strictly below `dir` ("" is the top of the image).
fn is_under(path: &str, dir: &str) -> bool {
    if dir.is_empty() {
        return !path.is_empty();
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()..].starts_with('/')
}

/// What a layer holds at a wanted path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hit {
    File(Vec<u8>),
    HardLink(String),
    /// A symlink at the path itself or at one of its ancestors (`at`).
    SymLink {
        at: String,
        target: String,
    },
    /// A directory, device or anything else that is not file content.
    NotAFile,
}

#[derive(Debug, Default)]
struct LayerScan {
    hits: HashMap<String, Hit>,
    hidden: HashSet<String>,
}

/// Scan one (decompressed) tar stream for `wanted` paths. Stops at the first moment every wanted
/// path has a hit; a whiteout alone is not an answer, since a file of the same layer beats it.
fn scan_layer(tar: impl Read, wanted: &[String], limit: u64) -> Result<LayerScan, FindError> {
    let mut scan = LayerScan::default();
    // What this layer hides in lower ones. A symlink does not: lookups follow it.
    let mut rules = Rules::default();
    let relevant = |path: &str| wanted.iter().any(|w| w == path || is_under(w, path));
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        if rules.whiteout(&name, relevant) {
            continue;
        }
        let kind = entry.header().entry_type();
        let is_symlink = kind.is_symlink();
        if !kind.is_dir() && !is_symlink && relevant(&name) {
            rules.shadow.insert(name.clone());
        }
        for path in wanted {
            if scan.hits.contains_key(path) {
                continue;
            }
            if &name == path {
                let hit = if kind.is_file() || kind == tar::EntryType::Continuous {
                    let size = entry.size();
                    if size > limit {
                        return Err(FindError::TooLarge {
                            path: path.clone(),
                            size,
                            limit,
                        });
                    }
                    let mut content = Vec::with_capacity(size as usize);
                    (&mut entry).take(limit + 1).read_to_end(&mut content)?;
                    Hit::File(content)
                } else if kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| normalize(&String::from_utf8_lossy(&b)))
                        .unwrap_or_default();
                    Hit::HardLink(target)
                } else if is_symlink {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    Hit::SymLink {
                        at: name.clone(),
                        target,
                    }
                } else {
                    Hit::NotAFile
                };
                scan.hits.insert(path.clone(), hit);
            } else if is_symlink && ancestors(path).contains(&name.as_str()) {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                scan.hits.insert(
                    path.clone(),
                    Hit::SymLink {
                        at: name.clone(),
                        target,
                    },
                );
            }
        }
        if wanted.iter().all(|p| scan.hits.contains_key(p)) {
            break;
        }
    }
    scan.hidden = wanted.iter().filter(|p| rules.hides(p)).cloned().collect();
    Ok(scan)
}

/// Where a symlink at `at` pointing to `target` sends `path`.
pub(crate) fn follow_symlink(path: &str, at: &str, target: &str) -> String {
    let rest = &path[at.len()..];
    let resolved = if target.starts_with('/') {
        normalize(target)
    } else {
        normalize(&join(parent(at), target))
    };
    normalize(&format!("{resolved}{rest}"))
}

/// Find `paths` (normalised or not) as a container sees them. The answer holds every wanted path:
/// `Some(content)` when the file is visible, `None` when it is absent, deleted or not a regular file.
pub fn find_files(
    source: &dyn LayerSource,
    paths: &[&str],
    limit: u64,
) -> Result<HashMap<String, Option<Vec<u8>>>, FindError> {
    struct Lookup {
        original: String,
        current: String,
        hops: usize,
    }
    let mut answers: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut round: Vec<Lookup> = paths
        .iter()
        .map(|p| Lookup {
            original: p.to_string(),
            current: normalize(p),
            hops: 0,
        })
        .collect();

    // A symlink sends its lookup back to the top layer, hence rounds.
    while !round.is_empty() {
        let mut next_round = Vec::new();
        for layer in 0..source.layer_count() {
            if round.is_empty() {
                break;
            }
            let wanted: Vec<String> = round.iter().map(|l| l.current.clone()).collect();
            let scan = scan_layer(decompress(source.open(layer)?)?, &wanted, limit)?;
            let mut still_pending = Vec::new();
            for mut lookup in round {
                match scan.hits.get(&lookup.current) {
                    Some(Hit::File(content)) => {
                        answers.insert(lookup.original, Some(content.clone()));
                    }
                    Some(Hit::HardLink(target)) => {
                        // The link's data lives in an earlier entry of this same layer.
                        let again = scan_layer(
                            decompress(source.open(layer)?)?,
                            std::slice::from_ref(target),
                            limit,
                        )?;
                        let content = match again.hits.get(target) {
                            Some(Hit::File(content)) => Some(content.clone()),
                            _ => None,
                        };
                        answers.insert(lookup.original, content);
                    }
                    Some(Hit::SymLink { at, target }) => {
                        lookup.hops += 1;
                        if lookup.hops > MAX_SYMLINK_HOPS {
                            answers.insert(lookup.original, None);
                        } else {
                            lookup.current = follow_symlink(&lookup.current, at, target);
                            next_round.push(lookup);
                        }
                    }
                    Some(Hit::NotAFile) => {
                        answers.insert(lookup.original, None);
                    }
                    None if scan.hidden.contains(&lookup.current) => {
                        answers.insert(lookup.original, None);
                    }
                    None => still_pending.push(lookup),
                }
            }
            round = still_pending;
        }
        for lookup in round {
            answers.insert(lookup.original, None);
        }
        round = next_round;
    }
    Ok(answers)
}

/// What hides paths of the layers below the ones they came from.
#[derive(Debug, Default)]
struct Rules {
    /// `.wh.<name>`: the path and everything under it.
    removed: HashSet<String>,
    /// `.wh..wh..opq` in a directory: everything under it.
    opaque: HashSet<String>,
    /// A file or symlink at the path: everything under it.
    shadow: HashSet<String>,
}

impl Rules {
    /// Records what the entry `name` hides when it is a whiteout, and only where `relevant` says
    /// it can matter; false when `name` is not a whiteout (`.wh..wh.plnk` and the like are AUFS
    /// metadata: whiteouts that hide nothing).
    fn whiteout(&mut self, name: &str, relevant: impl Fn(&str) -> bool) -> bool {
        let file_name = base(name);
        let Some(removed) = file_name.strip_prefix(WHITEOUT_PREFIX) else {
            return false;
        };
        if file_name == OPAQUE_MARKER {
            let dir = parent(name);
            if dir.is_empty() || relevant(dir) {
                self.opaque.insert(dir.to_string());
            }
        } else if !removed.starts_with(WHITEOUT_PREFIX) {
            let path = join(parent(name), removed);
            if relevant(&path) {
                self.removed.insert(path);
            }
        }
        true
    }

    fn hides(&self, path: &str) -> bool {
        if self.removed.contains(path) || self.opaque.contains("") {
            return true;
        }
        ancestors(path)
            .into_iter()
            .any(|a| self.removed.contains(a) || self.opaque.contains(a) || self.shadow.contains(a))
    }

    /// Nothing below `dir` can show through.
    fn hides_below(&self, dir: &str) -> bool {
        self.hides(dir) || self.opaque.contains(dir) || self.shadow.contains(dir)
    }

    fn extend(&mut self, other: Rules) {
        self.removed.extend(other.removed);
        self.opaque.extend(other.opaque);
        self.shadow.extend(other.shadow);
    }
}

/// A file found: its path and content.
pub type FoundFile = (String, Vec<u8>);

/// A file wanted by `find_first`: one path, or the first regular file below a directory whose
/// name contains a marker (`.ko`: any kernel module).
#[derive(Debug, Clone)]
pub enum Want {
    Path(String),
    FirstUnder { dir: String, contains: String },
}

impl Want {
    fn matches(&self, path: &str) -> bool {
        match self {
            Want::Path(p) => p == path,
            Want::FirstUnder { dir, contains } => {
                is_under(path, dir) && base(path).contains(contains.as_str())
            }
        }
    }

    /// What an upper layer has at `path` can hide what this wants in lower ones.
    fn concerns(&self, path: &str) -> bool {
        match self {
            Want::Path(p) => p == path || is_under(p, path),
            Want::FirstUnder { dir, .. } => {
                dir == path || is_under(dir, path) || is_under(path, dir)
            }
        }
    }
}

/// Regular files for `wants`, newest layer first, in one pass that stops once every want is
/// answered: `(path, content)` per want, None when no visible file matches. What upper layers
/// hide (whiteouts, opaque directories, a file or link where a lower layer has a directory, a
/// directory or link at a wanted path) is hidden; links are not followed.
pub fn find_first(
    source: &dyn LayerSource,
    wants: &[Want],
    limit: u64,
) -> Result<Vec<Option<FoundFile>>, FindError> {
    let mut found: Vec<Option<FoundFile>> = vec![None; wants.len()];
    let relevant = |path: &str| wants.iter().any(|w| w.concerns(path));
    let mut rules = Rules::default();
    for layer in 0..source.layer_count() {
        if found.iter().all(Option::is_some) {
            break;
        }
        let mut pending = Rules::default();
        let mut archive = tar::Archive::new(decompress(source.open(layer)?)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            if pending.whiteout(&name, relevant) || rules.hides(&name) {
                continue;
            }
            let kind = entry.header().entry_type();
            let is_file = kind.is_file() || kind == tar::EntryType::Continuous;
            if !kind.is_dir() && relevant(&name) {
                pending.shadow.insert(name.clone());
            }
            if !is_file {
                // A wanted path this layer shows as something else keeps lower copies hidden.
                if wants
                    .iter()
                    .any(|w| matches!(w, Want::Path(wanted) if *wanted == name))
                {
                    pending.removed.insert(name);
                }
                continue;
            }
            let Some(index) = wants
                .iter()
                .enumerate()
                .position(|(i, w)| found[i].is_none() && w.matches(&name))
            else {
                continue;
            };
            let size = entry.size();
            if size > limit {
                return Err(FindError::TooLarge {
                    path: name,
                    size,
                    limit,
                });
            }
            let mut content = Vec::with_capacity(size as usize);
            (&mut entry).take(limit + 1).read_to_end(&mut content)?;
            found[index] = Some((name, content));
            if found.iter().all(Option::is_some) {
                return Ok(found);
            }
        }
        rules.extend(pending);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(super) enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Link(&'a str, &'a str),
        Sym(&'a str, &'a str),
    }

    pub(super) fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match e {
                E::File(name, data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    builder.append_data(&mut h, name, *data).unwrap();
                }
                E::Dir(name) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    builder.append_data(&mut h, name, &[][..]).unwrap();
                }
                E::Link(name, target) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Link);
                    builder.append_link(&mut h, name, target).unwrap();
                }
                E::Sym(name, target) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Symlink);
                    builder.append_link(&mut h, name, target).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Layers bottom first, as in a manifest; records how many were opened.
    pub(super) struct Mem {
        layers: Vec<Vec<u8>>,
        pub(super) opened: std::cell::RefCell<Vec<usize>>,
    }

    impl Mem {
        pub(super) fn new(layers: Vec<Vec<u8>>) -> Self {
            Mem {
                layers,
                opened: Default::default(),
            }
        }
    }

    impl LayerSource for Mem {
        fn layer_count(&self) -> usize {
            self.layers.len()
        }
        fn open(&self, i: usize) -> io::Result<Box<dyn Read + '_>> {
            self.opened.borrow_mut().push(i);
            Ok(Box::new(&self.layers[self.layers.len() - 1 - i][..]))
        }
    }

    const P: &str = "etc/driver-toolkit-release.json";

    fn find(layers: Vec<Vec<u8>>) -> Option<Vec<u8>> {
        find_files(&Mem::new(layers), &[P], 1024)
            .unwrap()
            .remove(P)
            .unwrap()
    }

    #[test]
    fn newest_layer_wins_with_or_without_dot_prefix() {
        let old = tar_of(&[
            E::Dir("etc"),
            E::File("etc/driver-toolkit-release.json", b"old"),
        ]);
        let new = tar_of(&[E::File("./etc/driver-toolkit-release.json", b"new")]);
        assert_eq!(find(vec![old.clone(), new]).as_deref(), Some(&b"new"[..]));
        let mem = Mem::new(vec![old, tar_of(&[E::File("usr/x", b"x")])]);
        let found = find_files(&mem, &["/etc/driver-toolkit-release.json"], 1024).unwrap();
        assert_eq!(
            found["/etc/driver-toolkit-release.json"].as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(*mem.opened.borrow(), vec![0, 1]);
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_files() {
        let base = tar_of(&[E::File("etc/driver-toolkit-release.json", b"old")]);
        let wh = tar_of(&[E::File("etc/.wh.driver-toolkit-release.json", b"")]);
        assert_eq!(find(vec![base.clone(), wh]), None);

        let opq = tar_of(&[E::Dir("etc"), E::File("etc/.wh..wh..opq", b"")]);
        assert_eq!(find(vec![base.clone(), opq]), None);

        let dir_gone = tar_of(&[E::File(".wh.etc", b"")]);
        assert_eq!(find(vec![base.clone(), dir_gone]), None);

        // A whiteout for a sibling hides nothing.
        let sibling = tar_of(&[E::File("etc/.wh.other.json", b"")]);
        assert_eq!(
            find(vec![base.clone(), sibling]).as_deref(),
            Some(&b"old"[..])
        );

        // AUFS metadata is not a whiteout.
        let plnk = tar_of(&[E::File(".wh..wh.plnk/12.34", b"")]);
        assert_eq!(find(vec![base.clone(), plnk]).as_deref(), Some(&b"old"[..]));

        // etc replaced by a regular file.
        let etc_file = tar_of(&[E::File("etc", b"not a dir")]);
        assert_eq!(find(vec![base, etc_file]), None);
    }

    #[test]
    fn same_layer_file_beats_its_whiteout_in_any_order() {
        let base = tar_of(&[E::File("etc/driver-toolkit-release.json", b"old")]);
        let after = tar_of(&[
            E::File("etc/.wh..wh..opq", b""),
            E::File("etc/driver-toolkit-release.json", b"new"),
        ]);
        let before = tar_of(&[
            E::File("etc/driver-toolkit-release.json", b"new"),
            E::File("etc/.wh..wh..opq", b""),
        ]);
        assert_eq!(
            find(vec![base.clone(), after]).as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(find(vec![base, before]).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn compressed_layers_and_absent_files() {
        let gz = gzip(&tar_of(&[E::File(
            "etc/driver-toolkit-release.json",
            b"gz",
        )]));
        assert_eq!(find(vec![gz]).as_deref(), Some(&b"gz"[..]));
        let zst = zstd::encode_all(
            &tar_of(&[E::File("etc/driver-toolkit-release.json", b"zst")])[..],
            3,
        )
        .unwrap();
        assert_eq!(find(vec![zst]).as_deref(), Some(&b"zst"[..]));
        assert_eq!(find(vec![tar_of(&[E::File("etc/other", b"")])]), None);
        assert_eq!(find(vec![Vec::new()]), None);
    }

    #[test]
    fn find_first_stops_early_and_respects_what_upper_layers_hide() {
        let symvers = "usr/src/kernels/k/Module.symvers";
        let wants = [
            Want::Path(symvers.into()),
            Want::FirstUnder {
                dir: "usr/lib/modules/k/kernel".into(),
                contains: ".ko".into(),
            },
        ];
        let value = |found: &[Option<FoundFile>], i: usize| {
            found[i]
                .as_ref()
                .map(|(p, c)| (p.clone(), String::from_utf8_lossy(c).into_owned()))
        };
        let lower = tar_of(&[
            E::File(symvers, b"old"),
            E::File("usr/lib/modules/k/kernel/a.ko.xz", b"a"),
        ]);
        // Both in the top layer: the lower one is never opened.
        let top = tar_of(&[
            E::File("usr/lib/modules/k/kernel/drivers/b.ko", b"b"),
            E::File(symvers, b"new"),
        ]);
        let source = Mem::new(vec![lower.clone(), top]);
        let found = find_first(&source, &wants, 1024).unwrap();
        assert_eq!(value(&found, 0), Some((symvers.into(), "new".into())));
        assert_eq!(
            value(&found, 1),
            Some(("usr/lib/modules/k/kernel/drivers/b.ko".into(), "b".into()))
        );
        assert_eq!(*source.opened.borrow(), [0]);

        // A whiteout hides the lower file; an opaque directory hides the lower modules; a
        // directory at the wanted path hides the lower file too.
        let whiteout = tar_of(&[
            E::File("usr/src/kernels/k/.wh.Module.symvers", b""),
            E::File("usr/lib/modules/k/kernel/.wh..wh..opq", b""),
        ]);
        let found = find_first(&Mem::new(vec![lower.clone(), whiteout]), &wants, 1024).unwrap();
        assert_eq!((value(&found, 0), value(&found, 1)), (None, None));
        let directory = tar_of(&[E::Dir(symvers)]);
        let found = find_first(&Mem::new(vec![lower.clone(), directory]), &wants, 1024).unwrap();
        assert_eq!(value(&found, 0), None);
        assert_eq!(
            value(&found, 1),
            Some(("usr/lib/modules/k/kernel/a.ko.xz".into(), "a".into()))
        );
        // What stands where a lower layer has a directory hides all below it: a link at the
        // kernel's source directory, a whiteout of `usr/src`, a file at `usr/lib/modules`, and
        // an opaque marker at the top of the image.
        for upper in [
            tar_of(&[E::Sym("usr/src/kernels/k", "/elsewhere")]),
            tar_of(&[E::File("usr/.wh.src", b"")]),
        ] {
            let found = find_first(&Mem::new(vec![lower.clone(), upper]), &wants, 1024).unwrap();
            assert_eq!(value(&found, 0), None);
            assert!(value(&found, 1).is_some());
        }
        let file = tar_of(&[E::File("usr/lib/modules", b"")]);
        let found = find_first(&Mem::new(vec![lower.clone(), file]), &wants, 1024).unwrap();
        assert_eq!(value(&found, 0), Some((symvers.into(), "old".into())));
        assert_eq!(value(&found, 1), None);
        let opaque = tar_of(&[E::File(".wh..wh..opq", b"")]);
        let found = find_first(&Mem::new(vec![lower, opaque]), &wants, 1024).unwrap();
        assert_eq!((value(&found, 0), value(&found, 1)), (None, None));
    }

    #[test]
    fn zstd_streams_of_several_frames_and_skippable_ones() {
        let tar = tar_of(&[E::File("etc/driver-toolkit-release.json", b"frames")]);
        let (first, second) = tar.split_at(700);
        // As zstd:chunked writes them: frames one after another, metadata in skippable frames.
        let mut stream = zstd::encode_all(first, 3).unwrap();
        stream.extend_from_slice(&0x184D2A50u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(zstd::encode_all(second, 19).unwrap());
        let mut out = Vec::new();
        decompress(Box::new(&stream[..]))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, tar);
        assert_eq!(find(vec![stream.clone()]).as_deref(), Some(&b"frames"[..]));

        // Cut inside a frame: an error, not a short file.
        let cut = &stream[..stream.len() - 3];
        let mut out = Vec::new();
        assert!(
            decompress(Box::new(cut))
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn stops_reading_once_every_file_is_found() {
        // Layer 0 (top) has both files first, followed by a body that is not even a valid tar:
        // reading past the two entries would fail.
        let mut top = tar_of(&[
            E::File("release-manifests/image-references", b"refs"),
            E::File("release-manifests/release-metadata", b"meta"),
        ]);
        top.truncate(top.len() - 1024); // drop the end-of-archive blocks
        top.extend(std::iter::repeat_n(0xAB, 4096));
        let mem = Mem::new(vec![tar_of(&[E::File("x", b"x")]), top]);
        let found = find_files(
            &mem,
            &[
                "release-manifests/image-references",
                "release-manifests/release-metadata",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(
            found["release-manifests/release-metadata"].as_deref(),
            Some(&b"meta"[..])
        );
        assert_eq!(*mem.opened.borrow(), vec![0]);
    }

    #[test]
    fn links_are_followed() {
        let hard = tar_of(&[
            E::File("usr/lib/dtk.json", b"hard"),
            E::Link("etc/driver-toolkit-release.json", "usr/lib/dtk.json"),
        ]);
        assert_eq!(find(vec![hard]).as_deref(), Some(&b"hard"[..]));

        let target = tar_of(&[E::File("usr/share/dtk.json", b"sym")]);
        let sym = tar_of(&[E::Sym(
            "etc/driver-toolkit-release.json",
            "../usr/share/dtk.json",
        )]);
        assert_eq!(
            find(vec![target.clone(), sym]).as_deref(),
            Some(&b"sym"[..])
        );

        let dir_sym = tar_of(&[E::Sym("etc", "/usr/share/etc")]);
        let moved = tar_of(&[E::File(
            "usr/share/etc/driver-toolkit-release.json",
            b"moved",
        )]);
        assert_eq!(find(vec![moved, dir_sym]).as_deref(), Some(&b"moved"[..]));

        let looping = tar_of(&[E::Sym(
            "etc/driver-toolkit-release.json",
            "driver-toolkit-release.json",
        )]);
        assert_eq!(find(vec![looping]), None);
    }

    #[test]
    fn refuses_oversized_files() {
        let big = tar_of(&[E::File("etc/driver-toolkit-release.json", &[b'x'; 2048])]);
        let err = find_files(&Mem::new(vec![big]), &[P], 1024).unwrap_err();
        assert!(matches!(
            err,
            FindError::TooLarge {
                size: 2048,
                limit: 1024,
                ..
            }
        ));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("./etc/x"), "etc/x");
        assert_eq!(normalize("/etc//x/"), "etc/x");
        assert_eq!(normalize("."), "");
        assert_eq!(
            follow_symlink("etc/a.json", "etc/a.json", "b.json"),
            "etc/b.json"
        );
        assert_eq!(follow_symlink("etc/a.json", "etc", "/x/y"), "x/y/a.json");
    }
}
