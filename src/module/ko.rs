//! What the kernel's module loader reads from a `.ko` file: the `.modinfo` strings (`vermagic`,
//! `name`, `depends`, `license`, `import_ns`), the symbol CRCs it was built against
//! (`__versions`), the symbols it leaves undefined, the symbols it exports to other modules
//! (`__ksymtab_strings` / `__ksymtab_<sym>`, with their CRCs from `__crc_<sym>`, GPL-only when in
//! `__ksymtab_gpl`, and their namespace from `__kstrtabns_<sym>`), and an appended signature
//! (`~Module signature appended~`, as `scripts/sign-file` writes it).
//!
//! Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed first, as kmod does.
//! Nothing here panics on a malformed file: it is an error that names what is wrong.

use std::io::Read;

use object::{Object, ObjectSection, ObjectSymbol, SymbolSection};

/// A decompressed module is at most this large (the largest in-tree module, amdgpu, is ~40 MiB).
pub const MAX_MODULE_SIZE: u64 = 256 * 1024 * 1024;

const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// `struct modversion_info`: an `unsigned long` CRC and a 64-byte record in all.
const MODVERSION_RECORD: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ko {
    /// `.modinfo` `name=`.
    pub name: Option<String>,
    /// `.modinfo` `vermagic=`, exactly as written (kernels end it with a space).
    pub vermagic: Option<String>,
    /// `.modinfo` `depends=`.
    pub depends: Vec<String>,
    /// `.modinfo` `license=` (`MODULE_LICENSE`).
    pub license: Option<String>,
    /// `.modinfo` `import_ns=`: the symbol namespaces it imports (`MODULE_IMPORT_NS`).
    pub import_ns: Vec<String>,
    /// `__versions`: the CRC of each symbol it was built against; None without the section.
    pub versions: Option<Vec<(String, u32)>>,
    /// Symbols it needs from the kernel or other modules (undefined, not weak).
    pub undefined: Vec<String>,
    /// Symbols it exports to other modules.
    pub exports: Vec<KoExport>,
    pub signature: Option<Signature>,
}

/// A symbol a module exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KoExport {
    pub name: String,
    /// Its CRC, when the module carries one.
    pub crc: Option<u32>,
    /// Exported with `EXPORT_SYMBOL_GPL` (its `__ksymtab_<sym>` lies in `__ksymtab_gpl`).
    pub gpl_only: bool,
    /// Exported into this symbol namespace (`EXPORT_SYMBOL_NS`).
    pub namespace: Option<String>,
}

/// An appended module signature (`struct module_signature` and what precedes it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    /// The signer's name: the common name of the issuer in a PKCS#7 signature (as `modinfo`
    /// shows it), or the signer field of an old-style signature.
    pub signer: Option<String>,
    /// `PKCS#7`, or the id type's number for anything else.
    pub kind: String,
    /// PKCS#7: what verifying it needs.
    pub pkcs7: Option<super::signature::Pkcs7>,
}

/// Decompress a module file by its magic bytes (xz, zstd, gzip, or none).
pub fn decompress(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let limited = |reader: Box<dyn Read + '_>, what: &str| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        reader
            .take(MAX_MODULE_SIZE + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("not valid {what} data: {e}"))?;
        if out.len() as u64 > MAX_MODULE_SIZE {
            return Err(format!(
                "decompresses to more than {} MiB",
                MAX_MODULE_SIZE >> 20
            ));
        }
        Ok(out)
    };
    if bytes.starts_with(&XZ_MAGIC) {
        let mut out = Limited(Vec::new());
        let mut input = std::io::BufReader::new(bytes);
        lzma_rs::xz_decompress(&mut input, &mut out)
            .map_err(|e| format!("not valid xz data: {e}"))?;
        Ok(out.0)
    } else if bytes.starts_with(&ZSTD_MAGIC) {
        let reader = crate::registry::layers::decompress(Box::new(bytes))
            .map_err(|e| format!("not valid zstd data: {e}"))?;
        limited(reader, "zstd")
    } else if bytes.starts_with(&GZIP_MAGIC) {
        limited(Box::new(flate2::read::MultiGzDecoder::new(bytes)), "gzip")
    } else {
        Ok(bytes.to_vec())
    }
}

/// A sink that refuses to grow past `MAX_MODULE_SIZE`.
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.0.len() + buf.len()) as u64 > MAX_MODULE_SIZE {
            return Err(std::io::Error::other(format!(
                "decompresses to more than {} MiB",
                MAX_MODULE_SIZE >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parse a (decompressed) module.
pub fn parse(bytes: &[u8]) -> Result<Ko, String> {
    let (elf, signature) = split_signature(bytes)?;
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
    if file.format() != object::BinaryFormat::Elf {
        return Err("not an ELF object".into());
    }
    if file.kind() != object::ObjectKind::Relocatable {
        return Err(format!(
            "not a relocatable ELF object (a kernel module is one), but {:?}",
            file.kind()
        ));
    }
    let section_data = |name: &str| -> Result<Option<&[u8]>, String> {
        match file.section_by_name(name) {
            Some(section) => section
                .data()
                .map(Some)
                .map_err(|e| format!("section {name} cannot be read: {e}")),
            None => Ok(None),
        }
    };

    let mut ko = Ko {
        name: None,
        vermagic: None,
        depends: Vec::new(),
        license: None,
        import_ns: Vec::new(),
        versions: None,
        undefined: Vec::new(),
        exports: Vec::new(),
        signature,
    };
    if let Some(modinfo) = section_data(".modinfo")? {
        for entry in modinfo.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            match key {
                "name" => ko.name = Some(value.to_string()),
                "vermagic" => ko.vermagic = Some(value.to_string()),
                "license" => ko.license = Some(value.to_string()),
                "import_ns" => ko.import_ns.push(value.to_string()),
                "depends" => {
                    ko.depends = value
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
    }

    let big_endian = file.endianness() == object::Endianness::Big;
    let word = if file.is_64() { 8 } else { 4 };
    let read_u32 = |b: &[u8]| {
        let raw = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        }
    };
    if let Some(versions) = section_data("__versions")? {
        if versions.len() % MODVERSION_RECORD != 0 {
            return Err(format!(
                "__versions is {} bytes, not a whole number of {MODVERSION_RECORD}-byte records",
                versions.len()
            ));
        }
        let mut list = Vec::with_capacity(versions.len() / MODVERSION_RECORD);
        for record in versions.chunks_exact(MODVERSION_RECORD) {
            // The CRC is an unsigned long holding a 32-bit value: its low half.
            let crc = if big_endian && word == 8 {
                read_u32(&record[4..8])
            } else {
                read_u32(&record[..4])
            };
            let name = &record[word..];
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            list.push((String::from_utf8_lossy(&name[..end]).into_owned(), crc));
        }
        ko.versions = Some(list);
    }

    // Export names: the `__ksymtab_<sym>` entries, and the names in `__ksymtab_strings`. Those
    // strings are labelled `__kstrtab_<sym>` (and the namespace after each `__kstrtabns_<sym>`)
    // in modules the kernel's build made; without labels every string there is taken as a name.
    let mut exported: Vec<String> = Vec::new();
    let mut strings: Vec<String> = Vec::new();
    if let Some(data) = section_data("__ksymtab_strings")? {
        strings.extend(
            data.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned()),
        );
    }
    let mut labelled: Vec<String> = Vec::new();
    let mut namespaces: Vec<(String, String)> = Vec::new();
    // What a symbol labels: its section's bytes from the symbol on (in a relocatable object a
    // symbol's value is its offset in its section).
    let labelled_bytes = |symbol: &object::Symbol<'_, '_>| -> Option<&[u8]> {
        let SymbolSection::Section(index) = symbol.section() else {
            return None;
        };
        let data = file.section_by_index(index).ok()?.data().ok()?;
        data.get(usize::try_from(symbol.address()).ok()?..)
    };
    let mut crcs: Vec<(String, u32)> = Vec::new();
    let mut gpl_only: Vec<String> = Vec::new();
    for symbol in file.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        if symbol.is_undefined() {
            if !symbol.is_weak() {
                ko.undefined.push(name.to_string());
            }
            continue;
        }
        if let Some(export) = name.strip_prefix("__ksymtab_") {
            // `___ksymtab_gpl+<sym>` in an object, merged into `__ksymtab_gpl` in a linked .ko.
            let in_gpl_table = match symbol.section() {
                SymbolSection::Section(index) => file
                    .section_by_index(index)
                    .ok()
                    .and_then(|s| s.name().ok().map(str::to_string))
                    .is_some_and(|s| s == "__ksymtab_gpl" || s.starts_with("___ksymtab_gpl+")),
                _ => false,
            };
            if in_gpl_table {
                gpl_only.push(export.to_string());
            }
            exported.push(export.to_string());
        } else if let Some(export) = name.strip_prefix("__kstrtab_") {
            labelled.push(export.to_string());
        } else if let Some(export) = name.strip_prefix("__kstrtabns_") {
            let namespace = labelled_bytes(&symbol).and_then(|b| {
                Some(String::from_utf8_lossy(
                    &b[..b.iter().position(|c| *c == 0)?],
                ))
            });
            if let Some(namespace) = namespace.filter(|n| !n.is_empty()) {
                namespaces.push((export.to_string(), namespace.into_owned()));
            }
        } else if let Some(export) = name.strip_prefix("__crc_") {
            // Linux 5.14: an absolute symbol whose value is the CRC. Later kernels: a label
            // on the CRC's 32 bits in __kcrctab.
            let crc = match symbol.section() {
                SymbolSection::Absolute => Some(symbol.address() as u32),
                _ => labelled_bytes(&symbol)
                    .and_then(|b| b.get(..4))
                    .map(read_u32),
            };
            if let Some(crc) = crc {
                crcs.push((export.to_string(), crc));
            }
        }
    }
    exported.extend(if labelled.is_empty() {
        strings
    } else {
        labelled
    });
    exported.sort();
    exported.dedup();
    ko.exports = exported
        .into_iter()
        .map(|name| KoExport {
            crc: crcs.iter().find(|(n, _)| *n == name).map(|(_, c)| *c),
            gpl_only: gpl_only.contains(&name),
            namespace: namespaces
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, ns)| ns.clone()),
            name,
        })
        .collect();
    ko.undefined.sort();
    ko.undefined.dedup();
    Ok(ko)
}

/// The ELF part of the file and its appended signature, if any.
fn split_signature(bytes: &[u8]) -> Result<(&[u8], Option<Signature>), String> {
    let Some(rest) = bytes.strip_suffix(SIGNATURE_MAGIC) else {
        return Ok((bytes, None));
    };
    // struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len.
    let Some(header_at) = rest.len().checked_sub(12) else {
        return Err("the appended signature is truncated".into());
    };
    let header = &rest[header_at..];
    let id_type = header[2];
    let signer_len = header[3] as usize;
    let key_id_len = header[4] as usize;
    let sig_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
    let total = sig_len.saturating_add(signer_len + key_id_len);
    let Some(start) = header_at.checked_sub(total) else {
        return Err(format!(
            "the appended signature claims {total} bytes, more than the file has"
        ));
    };
    let signer_bytes = &rest[start..start + signer_len];
    let signature = &rest[start + signer_len + key_id_len..header_at];
    let elf = &rest[..start];
    let signature = if id_type == 2 {
        let (signer, pkcs7) = super::signature::read_pkcs7(elf, signature);
        Signature {
            signer,
            kind: "PKCS#7".into(),
            pkcs7: Some(pkcs7),
        }
    } else {
        Signature {
            signer: (!signer_bytes.is_empty())
                .then(|| String::from_utf8_lossy(signer_bytes).into_owned()),
            kind: format!("id type {id_type}"),
            pkcs7: None,
        }
    };
    Ok((elf, Some(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_are_errors_not_panics() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x7fELF\x02\x01\x01").is_err());
        assert!(parse(&[0u8; 4096]).is_err());
        let mut truncated_signature = b"\x7fELF".to_vec();
        truncated_signature.extend_from_slice(SIGNATURE_MAGIC);
        assert!(parse(&truncated_signature).is_err());
        let mut huge = vec![0u8; 64];
        huge.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        huge.extend_from_slice(SIGNATURE_MAGIC);
        assert!(split_signature(&huge).is_err());
        assert!(decompress(&XZ_MAGIC).is_err());
        assert!(decompress(&[0x1f, 0x8b, 0, 0]).is_err());
    }
}
