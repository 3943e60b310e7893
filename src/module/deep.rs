//! `--deep`: the decision the target kernel's module loader will make about each `.ko` a Module
//! loads, made here from the files themselves and the driver-toolkit's `Module.symvers`.
//!
//! Reproduced from Linux 5.14 and 6.12 (`kernel/module/main.c`, `kernel/module/version.c`;
//! `kernel/module.c` before 5.19):
//! - `same_magic`: the module's `vermagic` must equal the kernel's; when the module carries
//!   symbol CRCs (`__versions`) the first word, the release, is skipped.
//! - `check_version`, for every undefined symbol the kernel resolves (vmlinux and in-tree
//!   modules first, then the modules loaded before it): an exporter with a CRC and a module
//!   without `__versions` is a refused load (no forced loads); a `__versions` entry with another
//!   CRC is "disagrees about version of symbol"; a symbol `__versions` does not list passes.
//! - `check_modstruct_version`: the same check for `module_layout` when the kernel exports it.
//! - a non-weak undefined symbol nobody exports: "Unknown symbol".

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ko::Ko;

/// What the target kernel exports and how it stamps its modules, from the driver-toolkit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    pub release: String,
    /// The kernel's vermagic, read from one of its own modules (without it there is no
    /// decision to make: the caller reports the row Unknown).
    pub vermagic: String,
    /// `Module.symvers`: symbol → CRC.
    pub exports: Symbols,
}

/// A kernel's exports in the compact form the cache keeps: sorted `symbol crc` lines, looked up
/// by binary search over an index of line starts (20,000 symbols: one string, no map to build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbols {
    text: String,
    starts: Vec<u32>,
}

impl Symbols {
    /// From `(symbol, crc)` pairs in any order.
    pub fn new(mut pairs: Vec<(String, u32)>) -> Symbols {
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        let mut text = String::with_capacity(pairs.len() * 32);
        for (symbol, crc) in &pairs {
            text.push_str(symbol);
            text.push_str(&format!(" {crc:08x}\n"));
        }
        Symbols::from_compact(text).unwrap_or(Symbols {
            text: String::new(),
            starts: Vec::new(),
        })
    }

    /// The cached text back; None when it is not sorted `symbol crc` lines.
    pub fn from_compact(text: String) -> Option<Symbols> {
        let mut starts = Vec::with_capacity(text.len() / 24);
        let mut at = 0usize;
        let mut previous: Option<&str> = None;
        for line in text.split_terminator('\n') {
            let (symbol, crc) = line.split_once(' ')?;
            if crc.len() != 8 || previous.is_some_and(|p| p >= symbol) {
                return None;
            }
            previous = Some(symbol);
            starts.push(u32::try_from(at).ok()?);
            at += line.len() + 1;
        }
        Some(Symbols { text, starts })
    }

    pub fn compact(&self) -> &str {
        &self.text
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn line(&self, i: usize) -> (&str, &str) {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.text.len(), |e| *e as usize);
        let line = self.text[start..end].trim_end_matches('\n');
        line.split_once(' ').unwrap_or((line, ""))
    }

    pub fn get(&self, symbol: &str) -> Option<u32> {
        let (mut low, mut high) = (0usize, self.starts.len());
        while low < high {
            let mid = (low + high) / 2;
            let (name, crc) = self.line(mid);
            match name.cmp(symbol) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return u32::from_str_radix(crc, 16).ok(),
            }
        }
        None
    }
}

impl KernelFacts {
    /// Module.symvers lines: `0xCRC<TAB>symbol<TAB>module<TAB>EXPORT_…[<TAB>namespace]`.
    pub fn parse_symvers(text: &str) -> Result<Symbols, String> {
        let mut pairs = Vec::new();
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let (Some(crc), Some(symbol)) = (fields.next(), fields.next()) else {
                return Err(format!("line {} is not `CRC<TAB>symbol…`", number + 1));
            };
            let crc = crc
                .strip_prefix("0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("line {}: {crc:?} is not a CRC", number + 1))?;
            if symbol.is_empty() || symbol.contains(' ') {
                return Err(format!("line {}: {symbol:?} is not a symbol", number + 1));
            }
            pairs.push((symbol.to_string(), crc));
        }
        if pairs.is_empty() {
            return Err("it lists no symbol".into());
        }
        Ok(Symbols::new(pairs))
    }

    fn modversions(&self) -> bool {
        self.vermagic.split_whitespace().any(|w| w == "modversions")
    }
}

/// One module file as read from the image: its path there, and what it holds.
pub struct Loaded<'a> {
    pub path: &'a str,
    pub ko: Result<&'a Ko, &'a str>,
}

/// Why the kernel would refuse a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    pub file: String,
    /// `crc`, `unknownSymbol`, `vermagic`, `noVersions`, `noVermagic` or `malformed`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_crc: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeepFile {
    pub path: String,
    pub vermagic: Option<String>,
    pub symbols: usize,
    pub signed: bool,
    pub signer: Option<String>,
}

/// `modules[].deep` in `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deep {
    /// The vermagic of the Module's own module (moduleName).
    pub vermagic: Option<String>,
    /// Symbol CRCs compared, over every file.
    pub symbols: usize,
    pub mismatches: Vec<Mismatch>,
    /// Every file carries an appended signature.
    pub signed: bool,
    /// The signer of the Module's own module.
    pub signer: Option<String>,
    pub kernel_vermagic: String,
    pub files: Vec<DeepFile>,
}

/// `same_magic`.
pub fn same_magic(module: &str, kernel: &str, has_crcs: bool) -> bool {
    if has_crcs {
        let skip = |s: &str| s.find(' ').map(|i| s[i..].to_string()).unwrap_or_default();
        skip(module) == skip(kernel)
    } else {
        module == kernel
    }
}

fn hex(crc: u32) -> String {
    format!("0x{crc:08x}")
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Symbols the loader never resolves (PowerPC's TOC base, the GOT).
fn ignored(symbol: &str) -> bool {
    matches!(symbol, ".TOC." | "_GLOBAL_OFFSET_TABLE_")
}

/// Judge every file (the Module's own modules and their dependencies) against the kernel.
pub fn judge(files: &[Loaded<'_>], kernel: &KernelFacts) -> Deep {
    let mut deep = Deep {
        vermagic: None,
        symbols: 0,
        mismatches: Vec::new(),
        signed: !files.is_empty(),
        signer: None,
        kernel_vermagic: kernel.vermagic.clone(),
        files: Vec::new(),
    };
    // What the modules loaded alongside export (checked after the kernel's own exports).
    let mut siblings: HashMap<&str, (&str, Option<u32>)> = HashMap::new();
    for file in files {
        if let Ok(ko) = file.ko {
            for (symbol, crc) in &ko.exports {
                siblings
                    .entry(symbol.as_str())
                    .or_insert((file_name(file.path), *crc));
            }
        }
    }
    for (index, file) in files.iter().enumerate() {
        let name = file_name(file.path);
        let refuse = |deep: &mut Deep, kind: &str, reason: String| {
            deep.mismatches.push(Mismatch {
                file: file.path.to_string(),
                kind: kind.to_string(),
                symbol: None,
                crc: None,
                kernel_crc: None,
                reason,
            });
        };
        let ko = match file.ko {
            Ok(ko) => ko,
            Err(reason) => {
                deep.signed = false;
                refuse(
                    &mut deep,
                    "malformed",
                    format!("{name}: not a kernel module the loader can read: {reason}"),
                );
                deep.files.push(DeepFile {
                    path: file.path.to_string(),
                    vermagic: None,
                    symbols: 0,
                    signed: false,
                    signer: None,
                });
                continue;
            }
        };
        if index == 0 {
            deep.vermagic = ko.vermagic.clone();
            deep.signer = ko.signature.as_ref().and_then(|s| s.signer.clone());
        }
        deep.signed &= ko.signature.is_some();
        let has_crcs = ko.versions.is_some();
        let mut checked = 0;

        let target = &kernel.vermagic;
        match &ko.vermagic {
            None => refuse(
                &mut deep,
                "noVermagic",
                format!("{name}: no vermagic in .modinfo: the kernel refuses it (no forced loads)"),
            ),
            Some(module) if !same_magic(module, target, has_crcs) => {
                let release = module.split(' ').next().unwrap_or_default();
                let reason = if !has_crcs && release != kernel.release {
                    format!(
                        "{name}: vermagic {}: built for another kernel and carries no symbol CRCs",
                        module.trim_end()
                    )
                } else {
                    format!(
                        "{name}: vermagic {} should be {}: built with another configuration \
                         (preempt model, SMP, module unloading or modversions differ); rebuild \
                         against this kernel",
                        module.trim_end(),
                        target.trim_end()
                    )
                };
                refuse(&mut deep, "vermagic", reason);
            }
            _ => {}
        }

        let versions: Option<HashMap<&str, u32>> = ko
            .versions
            .as_ref()
            .map(|v| v.iter().map(|(s, c)| (s.as_str(), *c)).collect());
        let mut no_versions_reported = false;
        let kernel_name = format!("kernel {}", kernel.release);
        let mut check = |deep: &mut Deep, symbol: &str, exported: Option<u32>, exporter: &str| {
            let Some(expected) = exported else { return };
            match &versions {
                None => {
                    if !no_versions_reported {
                        no_versions_reported = true;
                        refuse(
                            deep,
                            "noVersions",
                            format!(
                                "{name}: carries no symbol CRCs (__versions), and the kernel \
                                 exports `{symbol}` with one: refused (built without \
                                 CONFIG_MODVERSIONS; rebuild against this kernel's devel files)"
                            ),
                        );
                    }
                }
                Some(versions) => {
                    let Some(found) = versions.get(symbol) else {
                        return; // "no symbol version": a warning, the load goes on
                    };
                    checked += 1;
                    if *found != expected {
                        deep.mismatches.push(Mismatch {
                            file: file.path.to_string(),
                            kind: "crc".into(),
                            symbol: Some(symbol.to_string()),
                            crc: Some(hex(*found)),
                            kernel_crc: Some(hex(expected)),
                            reason: format!(
                                "{name}: symbol `{symbol}` CRC {}, {exporter} exports {}: rebuild \
                                 against this kernel",
                                hex(*found),
                                hex(expected)
                            ),
                        });
                    }
                }
            }
        };
        if kernel.modversions()
            && let Some(crc) = kernel.exports.get("module_layout")
        {
            check(&mut deep, "module_layout", Some(crc), &kernel_name);
        }
        for symbol in &ko.undefined {
            if ignored(symbol) {
                continue;
            }
            if let Some(crc) = kernel.exports.get(symbol.as_str()) {
                check(
                    &mut deep,
                    symbol,
                    kernel.modversions().then_some(crc),
                    &kernel_name,
                );
            } else if let Some((provider, crc)) = siblings.get(symbol.as_str()) {
                check(&mut deep, symbol, *crc, provider);
            } else {
                deep.mismatches.push(Mismatch {
                    file: file.path.to_string(),
                    kind: "unknownSymbol".into(),
                    symbol: Some(symbol.clone()),
                    crc: None,
                    kernel_crc: None,
                    reason: format!(
                        "{name}: unknown symbol `{symbol}`: neither kernel {} nor the modules \
                         loaded with it export it",
                        kernel.release
                    ),
                });
            }
        }
        deep.symbols += checked;
        deep.files.push(DeepFile {
            path: file.path.to_string(),
            vermagic: ko.vermagic.clone(),
            symbols: checked,
            signed: ko.signature.is_some(),
            signer: ko.signature.as_ref().and_then(|s| s.signer.clone()),
        });
    }
    deep
}

/// The parsed modules kept in the cache per image digest and path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedKo {
    pub path: String,
    pub ko: Result<Ko, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ko::Signature;

    const K: &str = "5.14.0-570.19.1.el9_6.x86_64";

    fn kernel() -> KernelFacts {
        KernelFacts {
            release: K.into(),
            vermagic: format!("{K} SMP preempt mod_unload modversions "),
            exports: Symbols::new(vec![
                ("pci_enable_device".to_string(), 0x5e6f7a8b),
                ("module_layout".to_string(), 0x11111111),
                ("printk".to_string(), 0x22222222),
            ]),
        }
    }

    fn ko(vermagic: &str, versions: Option<&[(&str, u32)]>, undefined: &[&str]) -> Ko {
        Ko {
            name: Some("m".into()),
            vermagic: Some(vermagic.into()),
            depends: vec![],
            versions: versions.map(|v| v.iter().map(|(s, c)| (s.to_string(), *c)).collect()),
            undefined: undefined.iter().map(|s| s.to_string()).collect(),
            exports: vec![],
            signature: None,
        }
    }

    fn one(ko: &Ko) -> Deep {
        judge(
            &[Loaded {
                path: "extra/m.ko",
                ko: Ok(ko),
            }],
            &kernel(),
        )
    }

    #[test]
    fn the_kernels_own_comparisons() {
        let ours = format!("{K} SMP preempt mod_unload modversions ");
        let other = "5.14.0-427.50.1.el9_4.x86_64 SMP preempt mod_unload modversions ";
        assert!(same_magic(&ours, &ours, false));
        assert!(same_magic(other, &ours, true));
        assert!(!same_magic(other, &ours, false));
        assert!(!same_magic(
            &format!("{K} SMP preempt_rt mod_unload modversions "),
            &ours,
            true
        ));

        let good = ko(
            other,
            Some(&[
                ("pci_enable_device", 0x5e6f7a8b),
                ("module_layout", 0x11111111),
            ]),
            &["pci_enable_device", "printk"],
        );
        let deep = one(&good);
        assert_eq!(deep.mismatches, vec![], "{deep:?}");
        // module_layout and pci_enable_device; printk is not in __versions (a warning only).
        assert_eq!(deep.symbols, 2);

        let bad = ko(
            &ours,
            Some(&[("pci_enable_device", 0x1a2b3c4d)]),
            &["pci_enable_device", "foo_bar"],
        );
        let deep = one(&bad);
        let reasons: Vec<&str> = deep.mismatches.iter().map(|m| m.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                format!(
                    "m.ko: symbol `pci_enable_device` CRC 0x1a2b3c4d, kernel {K} exports 0x5e6f7a8b: rebuild against this kernel"
                ),
                format!(
                    "m.ko: unknown symbol `foo_bar`: neither kernel {K} nor the modules loaded with it export it"
                )
            ]
        );

        let no_crcs = ko(other, None, &["printk"]);
        let deep = one(&no_crcs);
        assert_eq!(deep.mismatches[0].kind, "vermagic");
        assert!(
            deep.mismatches[0]
                .reason
                .contains("built for another kernel and carries no symbol CRCs"),
            "{deep:?}"
        );
        assert_eq!(deep.mismatches[1].kind, "noVersions");
    }

    #[test]
    fn siblings_and_signatures() {
        let mut provider = ko(&kernel().vermagic, Some(&[]), &[]);
        provider.exports = vec![("shared_fn".into(), Some(0xabcdef01))];
        provider.signature = Some(Signature {
            signer: Some("Vendor key".into()),
            kind: "PKCS#7".into(),
        });
        let user = ko(
            &kernel().vermagic,
            Some(&[("shared_fn", 0xabcdef02)]),
            &["shared_fn"],
        );
        let deep = judge(
            &[
                Loaded {
                    path: "extra/user.ko",
                    ko: Ok(&user),
                },
                Loaded {
                    path: "extra/provider.ko",
                    ko: Ok(&provider),
                },
            ],
            &kernel(),
        );
        assert_eq!(deep.mismatches.len(), 1);
        assert_eq!(deep.mismatches[0].kernel_crc.as_deref(), Some("0xabcdef01"));
        assert!(!deep.signed);
        assert_eq!(deep.signer, None);
        assert_eq!(deep.files[1].signer.as_deref(), Some("Vendor key"));
        let malformed = judge(
            &[Loaded {
                path: "extra/x.ko",
                ko: Err("not an ELF object"),
            }],
            &kernel(),
        );
        assert_eq!(malformed.mismatches[0].kind, "malformed");
    }

    #[test]
    fn symvers_and_its_compact_form() {
        let text = "0x5e6f7a8b\tpci_enable_device\tvmlinux\tEXPORT_SYMBOL\t\n\
                    0x00000001\tmlx_fn\tdrivers/net/mlx\tEXPORT_SYMBOL_GPL\tMLX\n";
        let exports = KernelFacts::parse_symvers(text).unwrap();
        assert_eq!(exports.get("pci_enable_device"), Some(0x5e6f7a8b));
        assert_eq!(exports.get("mlx_fn"), Some(1));
        assert_eq!(exports.get("absent"), None);
        assert_eq!(exports.get(""), None);
        let again = Symbols::from_compact(exports.compact().to_string()).unwrap();
        assert_eq!(again, exports);
        assert_eq!(again.len(), 2);
        // Every one of many symbols is found, and nothing else.
        let many = Symbols::new((0..5000).map(|i| (format!("s{i}"), i)).collect());
        assert!((0..5000).all(|i| many.get(&format!("s{i}")) == Some(i)));
        assert_eq!(many.get("s5000"), None);
        assert!(Symbols::from_compact("b 00000001\na 00000002\n".into()).is_none());
        assert!(Symbols::from_compact("garbage\n".into()).is_none());
        assert!(KernelFacts::parse_symvers("garbage\n").is_err());
        assert!(KernelFacts::parse_symvers("").is_err());
    }
}
