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
//! - a non-weak undefined symbol nobody exports: "Unknown symbol"; nor may a module whose
//!   license is not GPL-compatible (`license_is_gpl_compatible`; none is "unspecified") use a
//!   GPL-only export (`find_symbol` skips it), nor a module using GPL-only exports use a
//!   proprietary module's (`inherit_taint`).
//! - `verify_namespace_is_imported`: a symbol exported into a namespace, by the kernel or by a
//!   sibling, needs the module's `import_ns` of it (a kernel built with
//!   `CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS` only warns; that is not the default, and
//!   the refusal is the answer that proves nothing false).

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

/// One symbol a kernel exports, as `Module.symvers` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export<'a> {
    pub crc: u32,
    /// `EXPORT_SYMBOL_GPL`: hidden from modules whose license is not GPL-compatible.
    pub gpl_only: bool,
    /// `EXPORT_SYMBOL_NS`: usable only by modules that import the namespace.
    pub namespace: Option<&'a str>,
}

/// A kernel's exports in the compact form the cache keeps: sorted `symbol crc kind[ namespace]`
/// lines (`kind` is `g` for GPL-only, `-` otherwise), looked up by binary search over an index of
/// line starts (20,000 symbols: one string, no map to build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbols {
    text: String,
    starts: Vec<u32>,
}

/// A compact line split into its name and the rest, `xxxxxxxx k[ namespace]`; None when the line
/// is not of that form. Checked byte by byte: every cached `--deep` run checks some 20,000 lines.
fn compact_line(line: &str) -> Option<(&str, &str)> {
    let (name, rest) = line.split_once(' ')?;
    let bytes = rest.as_bytes();
    let well_formed = !name.is_empty()
        && bytes.len() >= 10
        && bytes[..8].iter().all(u8::is_ascii_hexdigit)
        && bytes[8] == b' '
        && matches!(bytes[9], b'g' | b'-')
        && (bytes.len() == 10
            || (bytes[10] == b' ' && bytes.len() > 11 && !bytes[11..].contains(&b' ')));
    well_formed.then_some((name, rest))
}

/// What the rest of a line `compact_line` accepted says (None only for a line it did not).
fn compact_export(rest: &str) -> Option<Export<'_>> {
    let bytes = rest.as_bytes();
    let crc = bytes.get(..8)?.iter().try_fold(0u32, |crc, b| {
        Some((crc << 4) | char::from(*b).to_digit(16)?)
    })?;
    Some(Export {
        crc,
        gpl_only: *bytes.get(9)? == b'g',
        namespace: rest.get(11..),
    })
}

impl Symbols {
    /// From `(symbol, export)` pairs in any order; the first of a repeated symbol is kept.
    pub fn new(mut exports: Vec<(String, Export<'_>)>) -> Symbols {
        exports.sort_by(|a, b| a.0.cmp(&b.0));
        exports.dedup_by(|a, b| a.0 == b.0);
        let mut text = String::with_capacity(exports.len() * 34);
        for (symbol, export) in &exports {
            let kind = if export.gpl_only { "g" } else { "-" };
            text.push_str(&format!("{symbol} {:08x} {kind}", export.crc));
            if let Some(namespace) = export.namespace {
                text.push(' ');
                text.push_str(namespace);
            }
            text.push('\n');
        }
        Symbols::from_compact(text).unwrap_or(Symbols {
            text: String::new(),
            starts: Vec::new(),
        })
    }

    /// The cached text back; None when it is not sorted compact lines.
    pub fn from_compact(text: String) -> Option<Symbols> {
        let mut starts = Vec::with_capacity(text.len() / 24);
        let mut at = 0usize;
        let mut previous = "";
        for line in text.split_terminator('\n') {
            let (name, _) = compact_line(line)?;
            if !previous.is_empty() && previous >= name {
                return None;
            }
            previous = name;
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

    fn line(&self, i: usize) -> &str {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.text.len(), |e| *e as usize);
        self.text[start..end].trim_end_matches('\n')
    }

    pub fn get(&self, symbol: &str) -> Option<Export<'_>> {
        let (mut low, mut high) = (0usize, self.starts.len());
        while low < high {
            let mid = (low + high) / 2;
            // Every line was accepted by `compact_line` when the table was made (`from_compact`
            // is the only way to one): the split needs no second check.
            let (name, rest) = self.line(mid).split_once(' ')?;
            match name.cmp(symbol) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return compact_export(rest),
            }
        }
        None
    }
}

impl KernelFacts {
    /// Module.symvers lines: `0xCRC<TAB>symbol<TAB>module<TAB>EXPORT_…[<TAB>namespace]`.
    pub fn parse_symvers(text: &str) -> Result<Symbols, String> {
        let mut exports = Vec::new();
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let number = number + 1;
            let mut fields = line.split('\t');
            let (Some(crc), Some(symbol)) = (fields.next(), fields.next()) else {
                return Err(format!("line {number} is not `CRC<TAB>symbol…`"));
            };
            let crc = crc
                .strip_prefix("0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("line {number}: {crc:?} is not a CRC"))?;
            if symbol.is_empty() || symbol.contains(' ') {
                return Err(format!("line {number}: {symbol:?} is not a symbol"));
            }
            let _module = fields.next();
            let gpl_only = match fields.next().unwrap_or("EXPORT_SYMBOL") {
                "EXPORT_SYMBOL" | "EXPORT_SYMBOL_NS" | "" => false,
                "EXPORT_SYMBOL_GPL" | "EXPORT_SYMBOL_NS_GPL" => true,
                // An export type this does not know: assume the stricter one.
                other if other.starts_with("EXPORT_SYMBOL") => true,
                other => return Err(format!("line {number}: {other:?} is not an export type")),
            };
            let namespace = fields.next().map(str::trim).filter(|n| !n.is_empty());
            if namespace.is_some_and(|n| n.contains(' ')) {
                return Err(format!("line {number}: {namespace:?} is not a namespace"));
            }
            exports.push((
                symbol.to_string(),
                Export {
                    crc,
                    gpl_only,
                    namespace,
                },
            ));
        }
        if exports.is_empty() {
            return Err("it lists no symbol".into());
        }
        Ok(Symbols::new(exports))
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
    /// `crc`, `unknownSymbol`, `gplOnly`, `namespace`, `proprietaryProvider`, `vermagic`,
    /// `noVersions`, `noVermagic` or `malformed`.
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
    /// What its signature proves against the Module's certificate and `--trusted-cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<super::signature::Verified>,
    /// The appended signature as read, for verifying it.
    #[serde(skip)]
    pub appended: Option<super::ko::Signature>,
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

/// A symbol another module loaded with it exports.
struct Sibling<'a> {
    file: &'a str,
    crc: Option<u32>,
    gpl_only: bool,
    namespace: Option<&'a str>,
    /// That module's license is not GPL-compatible.
    proprietary: bool,
}

/// `license_is_gpl_compatible` (include/linux/license.h); no license is "unspecified", which is
/// not.
fn gpl_compatible(license: Option<&str>) -> bool {
    matches!(
        license,
        Some(
            "GPL"
                | "GPL v2"
                | "GPL and additional rights"
                | "Dual BSD/GPL"
                | "Dual MIT/GPL"
                | "Dual MPL/GPL"
        )
    )
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
    // What the modules loaded alongside export (looked up after the kernel's own exports).
    let mut siblings: HashMap<&str, Sibling<'_>> = HashMap::new();
    for file in files {
        if let Ok(ko) = file.ko {
            for export in &ko.exports {
                siblings.entry(export.name.as_str()).or_insert(Sibling {
                    file: file_name(file.path),
                    crc: export.crc,
                    gpl_only: export.gpl_only,
                    namespace: export.namespace.as_deref(),
                    proprietary: !gpl_compatible(ko.license.as_deref()),
                });
            }
        }
    }
    for (index, file) in files.iter().enumerate() {
        let name = file_name(file.path);
        // A refusal that carries no CRCs: of the file, or of one symbol.
        let refuse = |deep: &mut Deep, kind: &str, symbol: Option<&str>, reason: String| {
            deep.mismatches.push(Mismatch {
                file: file.path.to_string(),
                kind: kind.to_string(),
                symbol: symbol.map(str::to_string),
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
                    None,
                    format!("{name}: not a kernel module the loader can read: {reason}"),
                );
                deep.files.push(DeepFile {
                    path: file.path.to_string(),
                    vermagic: None,
                    symbols: 0,
                    signed: false,
                    signer: None,
                    signature: None,
                    appended: None,
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
                None,
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
                refuse(&mut deep, "vermagic", None, reason);
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
                            None,
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
            && let Some(export) = kernel.exports.get("module_layout")
        {
            check(&mut deep, "module_layout", Some(export.crc), &kernel_name);
        }
        // A module whose license is not GPL-compatible is tainted proprietary: the kernel's
        // GPL-only exports are invisible to it (`find_symbol` skips them: "Unknown symbol").
        let license = ko.license.as_deref();
        let proprietary = !gpl_compatible(license);
        let license_shown = license.unwrap_or("unspecified");
        let mut uses_gpl_only = false;
        let mut proprietary_providers: Vec<&str> = Vec::new();
        // Refusals of a symbol (kind, symbol, reason), recorded after the CRC comparisons.
        let mut refusals: Vec<(&str, Option<&str>, String)> = Vec::new();
        for symbol in &ko.undefined {
            if ignored(symbol) {
                continue;
            }
            let from_kernel = kernel.exports.get(symbol.as_str());
            let sibling = siblings.get(symbol.as_str());
            // `verify_namespace_is_imported`, once the exporter is known.
            let mut namespace_of = |namespace: Option<&str>| {
                if let Some(namespace) = namespace
                    && !ko.import_ns.iter().any(|n| n == namespace)
                {
                    refusals.push((
                        "namespace",
                        Some(symbol.as_str()),
                        format!(
                            "{name}: uses `{symbol}` from symbol namespace {namespace} but does \
                             not import it (MODULE_IMPORT_NS({namespace})): the kernel refuses it"
                        ),
                    ));
                }
            };
            match (from_kernel, sibling) {
                (Some(export), _) if !(export.gpl_only && proprietary) => {
                    uses_gpl_only |= export.gpl_only;
                    namespace_of(export.namespace);
                    check(
                        &mut deep,
                        symbol,
                        kernel.modversions().then_some(export.crc),
                        &kernel_name,
                    );
                }
                (_, Some(provider)) if !(provider.gpl_only && proprietary) => {
                    uses_gpl_only |= provider.gpl_only;
                    if provider.proprietary {
                        proprietary_providers.push(provider.file);
                    }
                    namespace_of(provider.namespace);
                    check(&mut deep, symbol, provider.crc, provider.file);
                }
                (Some(_), _) | (_, Some(_)) => refusals.push((
                    "gplOnly",
                    Some(symbol),
                    format!(
                        "{name}: `{symbol}` is exported GPL-only and its license \
                         \"{license_shown}\" is not GPL-compatible: the kernel refuses it \
                         (unknown symbol)"
                    ),
                )),
                (None, None) => refuse(
                    &mut deep,
                    "unknownSymbol",
                    Some(symbol),
                    format!(
                        "{name}: unknown symbol `{symbol}`: neither kernel {} nor the modules \
                         loaded with it export it",
                        kernel.release
                    ),
                ),
            }
        }
        // `inherit_taint`: a module using GPL-only symbols may not use a proprietary module's
        // symbols. The kernel decides in symbol order; any such pair is reported here.
        if uses_gpl_only && let Some(provider) = proprietary_providers.first() {
            refusals.push((
                "proprietaryProvider",
                None,
                format!(
                    "{name}: uses GPL-only symbols and symbols of {provider}, whose license is \
                     not GPL-compatible: the kernel refuses the mix"
                ),
            ));
        }
        for (kind, symbol, reason) in refusals {
            refuse(&mut deep, kind, symbol, reason);
        }
        deep.symbols += checked;
        deep.files.push(DeepFile {
            path: file.path.to_string(),
            vermagic: ko.vermagic.clone(),
            symbols: checked,
            signed: ko.signature.is_some(),
            signer: ko.signature.as_ref().and_then(|s| s.signer.clone()),
            signature: None,
            appended: ko.signature.clone(),
        });
    }
    deep
}

/// The parsed modules kept in the cache per image digest and path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedKo {
    pub path: String,
    pub ko: Result<Ko, String>,
    /// `--boot`: the file itself, decompressed (kept in the cache apart, as it is).
    #[serde(skip)]
    pub bytes: Option<std::sync::Arc<Vec<u8>>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ko::{KoExport, Signature};

    fn plain(crc: u32) -> Export<'static> {
        Export {
            crc,
            gpl_only: false,
            namespace: None,
        }
    }

    const K: &str = "5.14.0-570.19.1.el9_6.x86_64";

    fn kernel() -> KernelFacts {
        KernelFacts {
            release: K.into(),
            vermagic: format!("{K} SMP preempt mod_unload modversions "),
            exports: Symbols::new(vec![
                ("pci_enable_device".to_string(), plain(0x5e6f7a8b)),
                ("module_layout".to_string(), plain(0x11111111)),
                ("printk".to_string(), plain(0x22222222)),
                (
                    "pci_irq_vector".to_string(),
                    Export {
                        crc: 0x33333333,
                        gpl_only: true,
                        namespace: None,
                    },
                ),
                (
                    "cxl_bus_type".to_string(),
                    Export {
                        crc: 0x44444444,
                        gpl_only: false,
                        namespace: Some("CXL"),
                    },
                ),
            ]),
        }
    }

    fn ko(vermagic: &str, versions: Option<&[(&str, u32)]>, undefined: &[&str]) -> Ko {
        Ko {
            name: Some("m".into()),
            vermagic: Some(vermagic.into()),
            depends: vec![],
            license: None,
            import_ns: vec![],
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
        provider.exports = vec![KoExport {
            name: "shared_fn".into(),
            crc: Some(0xabcdef01),
            gpl_only: false,
            namespace: None,
        }];
        provider.signature = Some(Signature {
            signer: Some("Vendor key".into()),
            kind: "PKCS#7".into(),
            pkcs7: None,
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
        assert_eq!(exports.get("pci_enable_device"), Some(plain(0x5e6f7a8b)));
        assert_eq!(
            exports.get("mlx_fn"),
            Some(Export {
                crc: 1,
                gpl_only: true,
                namespace: Some("MLX")
            })
        );
        assert_eq!(exports.get("absent"), None);
        assert_eq!(exports.get(""), None);
        let again = Symbols::from_compact(exports.compact().to_string()).unwrap();
        assert_eq!(again, exports);
        assert_eq!(again.len(), 2);
        // Every one of many symbols is found, and nothing else.
        let many = Symbols::new((0..5000).map(|i| (format!("s{i}"), plain(i))).collect());
        assert!((0..5000).all(|i| many.get(&format!("s{i}")) == Some(plain(i))));
        assert_eq!(many.get("s5000"), None);
        assert!(Symbols::from_compact("b 00000001 -\na 00000002 -\n".into()).is_none());
        // The form of an earlier cache (no export kind) is not taken for this one.
        assert!(Symbols::from_compact("a 00000001\n".into()).is_none());
        assert!(KernelFacts::parse_symvers("0x00000001\ts\tvmlinux\tNOT_AN_EXPORT\t\n").is_err());
        assert!(Symbols::from_compact("garbage\n".into()).is_none());
        assert!(KernelFacts::parse_symvers("garbage\n").is_err());
        assert!(KernelFacts::parse_symvers("").is_err());
    }

    #[test]
    fn licenses_and_namespaces() {
        let user = |license: Option<&str>, import_ns: &[&str], undefined: &[&str]| {
            let mut m = ko(&kernel().vermagic, Some(&[]), undefined);
            m.license = license.map(str::to_string);
            m.import_ns = import_ns.iter().map(|n| n.to_string()).collect();
            m
        };
        let kinds = |deep: &Deep| -> Vec<String> {
            deep.mismatches.iter().map(|m| m.kind.clone()).collect()
        };
        // GPL-only exports: for GPL-compatible licenses only; none is "unspecified".
        for license in ["GPL", "GPL v2", "Dual MIT/GPL"] {
            let deep = one(&user(Some(license), &[], &["pci_irq_vector"]));
            assert_eq!(kinds(&deep), Vec::<String>::new(), "{license}");
        }
        for license in [Some("NVIDIA"), Some("Proprietary"), Some("gpl"), None] {
            let deep = one(&user(license, &[], &["pci_irq_vector", "printk"]));
            assert_eq!(kinds(&deep), ["gplOnly"], "{license:?}");
            assert_eq!(deep.mismatches[0].symbol.as_deref(), Some("pci_irq_vector"));
            let shown = license.unwrap_or("unspecified");
            assert_eq!(
                deep.mismatches[0].reason,
                format!(
                    "m.ko: `pci_irq_vector` is exported GPL-only and its license \"{shown}\" is \
                     not GPL-compatible: the kernel refuses it (unknown symbol)"
                )
            );
        }
        // A namespaced export needs the namespace imported.
        let deep = one(&user(Some("GPL"), &[], &["cxl_bus_type"]));
        assert_eq!(kinds(&deep), ["namespace"]);
        assert!(deep.mismatches[0].reason.contains("MODULE_IMPORT_NS(CXL)"));
        let deep = one(&user(Some("GPL"), &["CXL"], &["cxl_bus_type"]));
        assert_eq!(kinds(&deep), Vec::<String>::new());

        // Siblings: a GPL-only export is hidden from a proprietary user, and a user of GPL-only
        // symbols may not take a proprietary module's.
        let mut provider = ko(&kernel().vermagic, Some(&[]), &[]);
        provider.license = Some("NVIDIA".into());
        provider.exports = vec![
            KoExport {
                name: "nv_gpl_fn".into(),
                crc: None,
                gpl_only: true,
                namespace: None,
            },
            KoExport {
                name: "nv_fn".into(),
                crc: None,
                gpl_only: false,
                namespace: None,
            },
            KoExport {
                name: "nv_ns_fn".into(),
                crc: None,
                gpl_only: false,
                namespace: Some("NVIDIA_NS".into()),
            },
        ];
        let with = |user: &Ko| {
            judge(
                &[
                    Loaded {
                        path: "extra/m.ko",
                        ko: Ok(user),
                    },
                    Loaded {
                        path: "extra/nvidia.ko",
                        ko: Ok(&provider),
                    },
                ],
                &kernel(),
            )
        };
        let deep = with(&user(Some("NVIDIA"), &[], &["nv_fn", "nv_gpl_fn"]));
        assert_eq!(kinds(&deep), ["gplOnly"]);
        let deep = with(&user(Some("GPL"), &[], &["nv_fn"]));
        assert_eq!(kinds(&deep), Vec::<String>::new());
        let deep = with(&user(Some("GPL"), &[], &["nv_fn", "pci_irq_vector"]));
        assert_eq!(kinds(&deep), ["proprietaryProvider"]);
        assert!(deep.mismatches[0].reason.contains("nvidia.ko"));
        // A sibling's namespaced export needs the import as much as the kernel's.
        let deep = with(&user(Some("NVIDIA"), &[], &["nv_ns_fn"]));
        assert_eq!(kinds(&deep), ["namespace"]);
        assert!(
            deep.mismatches[0]
                .reason
                .contains("MODULE_IMPORT_NS(NVIDIA_NS)")
        );
        let deep = with(&user(Some("NVIDIA"), &["NVIDIA_NS"], &["nv_ns_fn"]));
        assert_eq!(kinds(&deep), Vec::<String>::new());
    }
}
