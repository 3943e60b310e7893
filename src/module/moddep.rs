//! What modprobe (kmod) reads to find a module: the binary indexes `depmod` writes next to the
//! modules. kmod looks names up in `modules.dep.bin` only (libkmod `kmod_search_moddep`); the
//! text `modules.dep` is for people, and without the `.bin` modprobe reports the module as not
//! found. Aliases come from `modules.alias.bin`, whose keys are glob patterns.
//!
//! The index format (libkmod-index.c): big-endian u32 magic `0xB007F457`, version `0x0002xxxx`,
//! root offset; each node offset carries flags in its top nibble (prefix, children, values). A
//! node is an optional NUL-terminated prefix, an optional child range `first`, `last` with
//! `last - first + 1` child offsets, and optional values (count, then priority + NUL-terminated
//! string each). Keys are the concatenated prefixes and child characters from the root.

use std::collections::BTreeMap;

const MAGIC: u32 = 0xB007_F457;
const MAJOR: u32 = 0x0002;
const FLAG_PREFIX: u32 = 0x8000_0000;
const FLAG_VALUES: u32 = 0x4000_0000;
const FLAG_CHILDREN: u32 = 0x2000_0000;
const OFFSET_MASK: u32 = 0x0FFF_FFFF;
/// Longest key accepted (kmod's own keys are names and paths, under PATH_MAX).
const MAX_KEY: usize = 4096;

/// modprobe treats `-` and `_` in module names alike; the indexes store `_`.
pub fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn u32_at(&self, at: usize) -> Result<u32, String> {
        let bytes = self
            .data
            .get(at..at + 4)
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string_at(&self, at: usize) -> Result<(String, usize), String> {
        let rest = self
            .data
            .get(at..)
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| format!("unterminated string at byte {at}"))?;
        Ok((
            String::from_utf8_lossy(&rest[..end]).into_owned(),
            at + end + 1,
        ))
    }
}

/// Every key of a kmod index and its values (lowest priority first, as kmod sorts them).
pub fn parse_index(data: &[u8]) -> Result<BTreeMap<String, Vec<String>>, String> {
    let cursor = Cursor { data };
    if cursor.u32_at(0)? != MAGIC {
        return Err("not a kmod index (bad magic number)".into());
    }
    let version = cursor.u32_at(4)?;
    if version >> 16 != MAJOR {
        return Err(format!("kmod index version {version:#x} is not supported"));
    }
    let mut entries = BTreeMap::new();
    let mut stack: Vec<(u32, String)> = vec![(cursor.u32_at(8)?, String::new())];
    // Every node takes bytes of its own, so a sound index has fewer nodes than bytes: more
    // visits mean a loop in a damaged (or hostile) file.
    let mut visited = 0;
    while let Some((offset, mut key)) = stack.pop() {
        visited += 1;
        if visited > data.len() || key.len() > MAX_KEY {
            return Err("kmod index is damaged (its nodes loop)".into());
        }
        let mut at = (offset & OFFSET_MASK) as usize;
        if at == 0 {
            continue;
        }
        if offset & FLAG_PREFIX != 0 {
            let (prefix, next) = cursor.string_at(at)?;
            key.push_str(&prefix);
            at = next;
        }
        if offset & FLAG_CHILDREN != 0 {
            let first = *data.get(at).ok_or("truncated child range")?;
            let last = *data.get(at + 1).ok_or("truncated child range")?;
            if first > last {
                return Err(format!("bad child range at byte {at}"));
            }
            at += 2;
            for (i, c) in (first..=last).enumerate() {
                let child = cursor.u32_at(at + 4 * i)?;
                if child & OFFSET_MASK != 0 {
                    let mut child_key = key.clone();
                    child_key.push(c as char);
                    stack.push((child, child_key));
                }
            }
            at += 4 * (last as usize - first as usize + 1);
        }
        if offset & FLAG_VALUES != 0 {
            let count = cursor.u32_at(at)? as usize;
            at += 4;
            let mut values: Vec<(u32, String)> = Vec::new();
            for _ in 0..count.min(data.len()) {
                let priority = cursor.u32_at(at)?;
                let (value, next) = cursor.string_at(at + 4)?;
                values.push((priority, value));
                at = next;
            }
            values.sort_by_key(|(p, _)| *p);
            entries.insert(key, values.into_iter().map(|(_, v)| v).collect());
        }
    }
    Ok(entries)
}

/// A `modules.dep` line: the module's file and the files it depends on, relative to the
/// kernel's module directory (`extra/a.ko.xz: kernel/drivers/b.ko`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    pub path: String,
    pub depends: Vec<String>,
}

pub fn parse_dep_line(line: &str) -> Option<DepLine> {
    let (path, rest) = line.split_once(':')?;
    let path = path.trim();
    if path.is_empty() {
        return None;
    }
    Some(DepLine {
        path: path.to_string(),
        depends: rest.split_whitespace().map(str::to_string).collect(),
    })
}

/// fnmatch(3) without flags, as kmod matches alias patterns: `*`, `?`, `[...]` (with `!` or `^`
/// negation and ranges), other characters literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn class(pattern: &[char], c: char) -> Option<(bool, usize)> {
        // pattern[0] == '['; returns (matched, length of the class).
        let mut i = 1;
        let negate = matches!(pattern.get(i), Some('!' | '^'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while let Some(&p) = pattern.get(i) {
            if p == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|e| *e != ']') {
                let end = pattern[i + 2];
                matched |= p <= c && c <= end;
                i += 3;
            } else {
                matched |= p == c;
                i += 1;
            }
        }
        None // unterminated: '[' is literal
    }
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|skip| go(&p[1..], &t[skip..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') => match (class(p, t.first().copied().unwrap_or('\0')), t.is_empty()) {
                (_, true) => false,
                (Some((true, len)), false) => go(&p[len..], &t[1..]),
                (Some((false, _)), false) => false,
                (None, false) => t[0] == '[' && go(&p[1..], &t[1..]),
            },
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by kmod 30's `depmod -b` for three gcc-built modules: mlx5-ib → mlx5_core → mlxfw,
    // mlx5_core with a PCI alias.
    const DEP_BIN: &[u8] = include_bytes!("testdata/modules.dep.bin");
    const ALIAS_BIN: &[u8] = include_bytes!("testdata/modules.alias.bin");

    #[test]
    fn reads_what_depmod_wrote() {
        let deps = parse_index(DEP_BIN).unwrap();
        assert_eq!(
            deps.keys().collect::<Vec<_>>(),
            ["mlx5_core", "mlx5_ib", "mlxfw"]
        );
        assert_eq!(
            deps["mlx5_ib"],
            ["extra/mlx5-ib.ko: extra/mlx5_core.ko kernel/drivers/net/mlxfw.ko"]
        );
        assert_eq!(deps["mlxfw"], ["kernel/drivers/net/mlxfw.ko:"]);
        let aliases = parse_index(ALIAS_BIN).unwrap();
        assert_eq!(
            aliases["pci:v000015B3d00001017sv*sd*bc*sc*i*"],
            ["mlx5_core"]
        );
    }

    #[test]
    fn refuses_what_is_not_an_index() {
        assert!(parse_index(b"not an index").is_err());
        assert!(parse_index(&[0xb0, 0x07, 0xf4, 0x57, 0, 3, 0, 0, 0, 0, 0, 0]).is_err());
        // Cut short anywhere: an error, never a panic.
        for len in 0..DEP_BIN.len() {
            let _ = parse_index(&DEP_BIN[..len]);
        }
        // A node whose child points back at itself is cut off by the node budget.
        let mut looping = vec![0xb0, 0x07, 0xf4, 0x57, 0, 2, 0, 1, 0x20, 0, 0, 12];
        looping.extend_from_slice(&[b'a', b'a', 0x20, 0, 0, 12]);
        assert!(parse_index(&looping).is_err());
    }

    #[test]
    fn dep_lines_and_names() {
        assert_eq!(
            parse_dep_line("extra/a.ko.xz: kernel/drivers/b.ko kernel/c.ko.zst"),
            Some(DepLine {
                path: "extra/a.ko.xz".into(),
                depends: vec!["kernel/drivers/b.ko".into(), "kernel/c.ko.zst".into()]
            })
        );
        assert_eq!(parse_dep_line("extra/a.ko:").unwrap().depends.len(), 0);
        assert_eq!(parse_dep_line("garbage"), None);
        assert_eq!(module_key("mlx5-core"), "mlx5_core");
    }

    #[test]
    fn alias_globs() {
        assert!(glob_match(
            "pci:v000015B3d*sv*sd*bc*sc*i*",
            "pci:v000015B3d00001017sv0sd0bc02sc00i00"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("x[0-9]y", "x5y"));
        assert!(!glob_match("x[!0-9]y", "x5y"));
        assert!(glob_match("x[]]y", "x]y"));
        assert!(glob_match("plain", "plain"));
        assert!(!glob_match("plain", "plainer"));
    }
}
