//! Kmod images as driver vendors build them: kernel modules compiled by gcc into real ELF
//! relocatable objects (`.modinfo`, exported and imported symbols), laid out under
//! `<dirName>/lib/modules/<kernel>/` and indexed by the real `depmod -b`, then packed into an
//! image layer. Nothing here knows how the plugin reads them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::images::TarLayer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zst,
    /// Debian's depmod reads no `.ko.gz`: indexed as `.ko.xz`, then swapped (see `depmod`).
    Gz,
}

/// One kernel module.
#[derive(Debug, Clone)]
pub struct Ko {
    /// The module name (`mlx5_core`); the file may spell it with `-`.
    pub name: String,
    /// Path under the kernel's module directory, without the compression suffix
    /// (`extra/mlx5_core.ko`).
    pub file: String,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub compression: Compression,
    /// `.modinfo` vermagic (default: `<kernel> SMP preempt mod_unload modversions `).
    pub vermagic: Option<String>,
    /// `__versions`: the CRC of each symbol it was built against (None: no such section).
    pub versions: Option<Vec<(String, u32)>>,
    /// CRCs of exports, as `__crc_<sym>` labels on their 32 bits in `__kcrctab` (Linux 6.x) or,
    /// with `absolute_crcs`, as absolute `__crc_<sym>` symbols (Linux 5.14).
    pub export_crcs: Vec<(String, u32)>,
    pub absolute_crcs: bool,
    /// Signed as `scripts/sign-file` does (PKCS#7, issuer and serial), by this key.
    pub signing: Option<Signing>,
    /// `.modinfo` license (none by default: "unspecified" to the kernel).
    pub license: Option<String>,
    /// `.modinfo` import_ns entries.
    pub import_ns: Vec<String>,
    /// Exports placed in the GPL-only table (`__ksymtab_<sym>` in `___ksymtab_gpl+<sym>`).
    pub gpl_exports: Vec<String>,
    /// Exports into a symbol namespace: (symbol, namespace). With any, every export's name is
    /// written as the kernel's build writes it (`__kstrtab_<sym>`, `__kstrtabns_<sym>` labels in
    /// `__ksymtab_strings`); without, the names are bare strings there.
    pub namespaced: Vec<(String, String)>,
}

/// The namespace `symbol` is exported into, from (symbol, namespace) pairs; "" for none.
pub fn namespace_of<'a>(namespaced: &'a [(String, String)], symbol: &str) -> &'a str {
    namespaced
        .iter()
        .find(|(s, _)| s == symbol)
        .map_or("", |(_, n)| n.as_str())
}

impl Ko {
    pub fn new(name: &str) -> Ko {
        Ko {
            name: name.to_string(),
            file: format!("extra/{name}.ko"),
            exports: vec![],
            imports: vec![],
            compression: Compression::None,
            vermagic: None,
            versions: None,
            export_crcs: vec![],
            absolute_crcs: false,
            signing: None,
            license: None,
            import_ns: vec![],
            gpl_exports: vec![],
            namespaced: vec![],
        }
    }

    /// Exported with `EXPORT_SYMBOL_NS(symbol, namespace)`.
    pub fn ns_exports(mut self, symbols: &[(&str, &str)]) -> Ko {
        for (symbol, namespace) in symbols {
            self.namespaced
                .push((symbol.to_string(), namespace.to_string()));
            self.exports.push(symbol.to_string());
        }
        self
    }

    pub fn license(mut self, license: &str) -> Ko {
        self.license = Some(license.to_string());
        self
    }

    pub fn import_ns(mut self, namespace: &str) -> Ko {
        self.import_ns.push(namespace.to_string());
        self
    }

    /// Exported with `EXPORT_SYMBOL_GPL`.
    pub fn gpl_exports(mut self, symbols: &[&str]) -> Ko {
        self.gpl_exports = symbols.iter().map(|s| s.to_string()).collect();
        self.exports.extend(self.gpl_exports.clone());
        self
    }

    pub fn vermagic(mut self, vermagic: &str) -> Ko {
        self.vermagic = Some(vermagic.to_string());
        self
    }

    /// `__versions` entries.
    pub fn versions(mut self, versions: &[(&str, u32)]) -> Ko {
        self.versions = Some(versions.iter().map(|(s, c)| (s.to_string(), *c)).collect());
        self
    }

    pub fn export_crcs(mut self, crcs: &[(&str, u32)], absolute: bool) -> Ko {
        self.export_crcs = crcs.iter().map(|(s, c)| (s.to_string(), *c)).collect();
        self.absolute_crcs = absolute;
        self
    }

    /// Signed with SHA-256 by an RSA key with this common name (one key per name and run).
    pub fn signed_by(self, common_name: &str) -> Ko {
        let key = SigningKey::named(common_name);
        self.signed_with(&key, "sha256")
    }

    /// Signed by `key` with the digest `md` (`sha256`, `sha512`, `sha1`), as sign-file does.
    pub fn signed_with(mut self, key: &SigningKey, md: &str) -> Ko {
        self.signing = Some(Signing {
            key: key.clone(),
            md: md.to_string(),
            corrupt: false,
        });
        self
    }

    /// Signed as `signed_with`, then one byte of the signature value flipped.
    pub fn corrupt_signature(mut self) -> Ko {
        if let Some(signing) = self.signing.as_mut() {
            signing.corrupt = true;
        }
        self
    }

    pub fn at(mut self, file: &str) -> Ko {
        self.file = file.to_string();
        self
    }

    pub fn exports(mut self, symbols: &[&str]) -> Ko {
        self.exports = symbols.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn imports(mut self, symbols: &[&str]) -> Ko {
        self.imports = symbols.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn compressed(mut self, compression: Compression) -> Ko {
        self.compression = compression;
        self
    }

    fn source(&self, kernel: &str) -> String {
        let mut c = String::new();
        let mut entries = 0;
        let mut modinfo = |key: &str, value: &str| {
            entries += 1;
            format!(
                "static const char modinfo_{entries}[] __attribute__((section(\".modinfo\"), used, aligned(1))) = \"{key}={value}\";\n"
            )
        };
        c.push_str(&modinfo("name", &self.name));
        let vermagic = self
            .vermagic
            .clone()
            .unwrap_or_else(|| format!("{kernel} SMP preempt mod_unload modversions "));
        c.push_str(&modinfo("vermagic", &vermagic));
        if let Some(license) = &self.license {
            c.push_str(&modinfo("license", license));
        }
        for namespace in &self.import_ns {
            c.push_str(&modinfo("import_ns", namespace));
        }
        if let Some(versions) = &self.versions {
            // struct modversion_info { unsigned long crc; char name[64 - sizeof(long)]; }
            c.push_str(
                "struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; };\n\
                 static const struct modversion_info ____versions[] __attribute__((used, section(\"__versions\"))) = {\n",
            );
            for (symbol, crc) in versions {
                c.push_str(&format!("  {{ 0x{crc:08x}, \"{symbol}\" }},\n"));
            }
            if versions.is_empty() {
                c.push_str("  { 0, \"\" },\n");
            }
            c.push_str("};\n");
        }
        for (symbol, crc) in &self.export_crcs {
            if self.absolute_crcs {
                c.push_str(&format!(
                    "asm(\".globl __crc_{symbol}\\n.set __crc_{symbol}, 0x{crc:08x}\\n\");\n"
                ));
            } else {
                c.push_str(&format!(
                    "asm(\".section \\\"___kcrctab+{symbol}\\\", \\\"a\\\"\\n.globl __crc_{symbol}\\n__crc_{symbol}:\\n.long 0x{crc:08x}\\n.previous\\n\");\n"
                ));
            }
        }
        for import in &self.imports {
            c.push_str(&format!("extern int {import}(void);\n"));
        }
        c.push_str("int init_module(void) { int r = 0;");
        for import in &self.imports {
            c.push_str(&format!(" r += {import}();"));
        }
        c.push_str(" return r; }\n");
        for export in &self.exports {
            c.push_str(&format!("int {export}(void) {{ return 1; }}\n"));
        }
        for export in &self.gpl_exports {
            c.push_str(&format!(
                "asm(\".section \\\"___ksymtab_gpl+{export}\\\", \\\"a\\\"\\n__ksymtab_{export}:\\n.quad {export}\\n.previous\\n\");\n"
            ));
        }
        if !self.namespaced.is_empty() {
            for export in &self.exports {
                let namespace = namespace_of(&self.namespaced, export);
                c.push_str(&format!(
                    "asm(\".section \\\"__ksymtab_strings\\\",\\\"aMS\\\",%progbits,1\\n__kstrtab_{export}:\\n.asciz \\\"{export}\\\"\\n__kstrtabns_{export}:\\n.asciz \\\"{namespace}\\\"\\n.previous\\n\");\n"
                ));
            }
        } else if !self.exports.is_empty() {
            let strings: String = self.exports.iter().map(|e| format!("{e}\\0")).collect();
            c.push_str(&format!(
                "static const char ksymtab_strings[] __attribute__((section(\"__ksymtab_strings\"), used, aligned(1))) = \"{strings}\";\n"
            ));
        }
        c
    }

    /// The file as it lies in an image: compiled (signed when asked), then compressed.
    pub fn built(&self, kernel: &str) -> Vec<u8> {
        let object = self.object(kernel);
        match self.compression {
            Compression::None => object,
            Compression::Xz => xz(&object),
            Compression::Zst => zstd::encode_all(&object[..], 3).unwrap(),
            Compression::Gz => gzip(&object),
        }
    }

    /// The compiled object, built once per process for the same source.
    fn object(&self, kernel: &str) -> Vec<u8> {
        static BUILT: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
        let source = self.source(kernel);
        let key = format!("{source}\n/* signing: {:?} */", self.signing);
        let built = BUILT.get_or_init(Default::default);
        if let Some(object) = built.lock().unwrap().get(&key) {
            return object.clone();
        }
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("m.c");
        let o = dir.path().join("m.ko");
        std::fs::write(&c, &source).unwrap();
        let status = Command::new("gcc")
            .args(["-c", "-O0", "-fno-asynchronous-unwind-tables", "-o"])
            .arg(&o)
            .arg(&c)
            .status()
            .expect("gcc is needed to build test kernel modules");
        assert!(status.success(), "gcc failed on:\n{source}");
        let mut object = std::fs::read(&o).unwrap();
        if let Some(signing) = &self.signing {
            object = sign(&object, signing);
        }
        built.lock().unwrap().insert(key, object.clone());
        object
    }
}

/// How a module is signed.
#[derive(Debug, Clone)]
pub struct Signing {
    pub key: SigningKey,
    pub md: String,
    pub corrupt: bool,
}

/// A module signing key and its self-signed certificate, made by openssl as a vendor or KMM
/// user makes one (`openssl req -x509 -new …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub name: String,
    pub key_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub cert_der: Vec<u8>,
}

impl SigningKey {
    /// A fresh RSA 2048 key.
    pub fn rsa(common_name: &str) -> SigningKey {
        SigningKey::make(common_name, &["-newkey", "rsa:2048"])
    }

    /// A fresh NIST P-384 ECDSA key.
    pub fn p384(common_name: &str) -> SigningKey {
        SigningKey::make(
            common_name,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
        )
    }

    /// A fresh P-256 key: one the kernel does not verify module signatures with.
    pub fn p256(common_name: &str) -> SigningKey {
        SigningKey::make(
            common_name,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        )
    }

    /// One RSA key per common name for the whole test process.
    pub fn named(common_name: &str) -> SigningKey {
        static KEYS: OnceLock<Mutex<HashMap<String, SigningKey>>> = OnceLock::new();
        let keys = KEYS.get_or_init(Default::default);
        let mut keys = keys.lock().unwrap();
        keys.entry(common_name.to_string())
            .or_insert_with(|| SigningKey::rsa(common_name))
            .clone()
    }

    fn make(common_name: &str, newkey: &[&str]) -> SigningKey {
        let dir = tempfile::tempdir().unwrap();
        let subject = format!("/CN={common_name}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "1", "-subj", &subject];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&["-keyout", "key.pem", "-out", "cert.pem"]);
        openssl(dir.path(), &args);
        openssl(
            dir.path(),
            &[
                "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
            ],
        );
        let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
        SigningKey {
            name: common_name.to_string(),
            key_pem: read("key.pem"),
            cert_pem: read("cert.pem"),
            cert_der: read("cert.der"),
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// Append a module signature as the kernel's `scripts/sign-file` does: a detached PKCS#7 (CMS)
/// signature without certificates or attributes, identified by issuer and serial, then
/// `struct module_signature` and the marker.
fn sign(object: &[u8], signing: &Signing) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), &signing.key.key_pem).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &signing.key.cert_pem).unwrap();
    std::fs::write(dir.path().join("m.ko"), object).unwrap();
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-binary",
            "-noattr",
            "-nocerts",
            "-nosmimecap",
            "-md",
            &signing.md,
            "-outform",
            "DER",
            "-signer",
            "cert.pem",
            "-inkey",
            "key.pem",
            "-in",
            "m.ko",
            "-out",
            "m.p7s",
        ],
    );
    let mut signature = std::fs::read(dir.path().join("m.p7s")).unwrap();
    if signing.corrupt {
        // The signature value is the DER's last element: flip a byte inside it.
        let at = signature.len() - 8;
        signature[at] ^= 0x5a;
    }
    let mut signed = object.to_vec();
    signed.extend_from_slice(&signature);
    // algo, hash, id_type PKEY_ID_PKCS7 = 2, signer_len, key_id_len, pad[3], be32 sig_len
    signed.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
    signed.extend_from_slice(&(signature.len() as u32).to_be_bytes());
    signed.extend_from_slice(b"~Module signature appended~\n");
    signed
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("xz")
        .args(["-z", "-c", "-T1", "--check=crc32"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz (xz-utils) is needed to build test kernel modules");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A staging directory that becomes one image layer.
pub struct Tree {
    dir: tempfile::TempDir,
    /// (kernel directory, file without suffix) of `.ko.gz` modules indexed as `.ko.xz`.
    gz: Vec<(PathBuf, String)>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
            gz: Vec::new(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative.trim_start_matches('/'))
    }

    /// `<dir_name>/lib/modules/<kernel>`
    pub fn kernel_dir(dir_name: &str, kernel: &str) -> String {
        format!("{}/lib/modules/{kernel}", dir_name.trim_end_matches('/'))
    }

    /// Add `ko` for `kernel` under `dir_name` (`/opt`).
    pub fn module(&mut self, dir_name: &str, kernel: &str, ko: &Ko) -> &mut Self {
        let kernel_dir = self.path(&Self::kernel_dir(dir_name, kernel));
        let object = ko.object(kernel);
        let (suffix, bytes) = match ko.compression {
            Compression::None => ("", object),
            Compression::Xz | Compression::Gz => (".xz", xz(&object)),
            Compression::Zst => (".zst", zstd::encode_all(&object[..], 3).unwrap()),
        };
        let path = kernel_dir.join(format!("{}{suffix}", ko.file));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        if ko.compression == Compression::Gz {
            self.gz.push((kernel_dir, ko.file.clone()));
            let raw = ko.object(kernel);
            std::fs::write(
                self.dir
                    .path()
                    .join(format!("{}.gz-payload", self.gz.len())),
                gzip(&raw),
            )
            .unwrap();
        }
        self
    }

    /// Run the real `depmod -b <dir_name> <kernel>`, as KMM's docs tell image builders to.
    pub fn depmod(&mut self, dir_name: &str, kernel: &str) -> &mut Self {
        let base = self.path(dir_name);
        let out = Command::new(depmod())
            .arg("-b")
            .arg(&base)
            .arg(kernel)
            .output()
            .expect("depmod (Debian's kmod) is needed to build test kmod images");
        assert!(
            out.status.success(),
            "depmod failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `.ko.gz`: the index names `X.ko.xz`; the same-length `X.ko.gz` keeps every offset.
        for (i, (kernel_dir, file)) in self.gz.clone().into_iter().enumerate() {
            let payload = self.dir.path().join(format!("{}.gz-payload", i + 1));
            std::fs::remove_file(kernel_dir.join(format!("{file}.xz"))).unwrap();
            std::fs::rename(&payload, kernel_dir.join(format!("{file}.gz"))).unwrap();
            for index in ["modules.dep.bin", "modules.dep"] {
                let path = kernel_dir.join(index);
                let bytes = std::fs::read(&path).unwrap();
                let from = format!("{file}.xz");
                let to = format!("{file}.gz");
                std::fs::write(&path, replace(&bytes, from.as_bytes(), to.as_bytes())).unwrap();
            }
        }
        self.gz.clear();
        self
    }

    pub fn file(&mut self, path: &str, content: &[u8]) -> &mut Self {
        let path = self.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    /// A symbolic link at `path` to `target` (as written, relative or absolute).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let path = self.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    pub fn remove(&mut self, path: &str) -> &mut Self {
        let path = self.path(path);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
        self
    }

    /// The tree as a tar layer (directories included, sorted, deterministic).
    pub fn layer(&self) -> Vec<u8> {
        let mut tar = TarLayer::new();
        let mut paths = Vec::new();
        collect(self.dir.path(), self.dir.path(), &mut paths);
        paths.sort();
        for (relative, kind) in paths {
            if relative.ends_with(".gz-payload") {
                continue;
            }
            let full = self.dir.path().join(&relative);
            tar = match kind {
                Kind::Dir => tar.dir(&relative),
                Kind::Symlink => {
                    let target = std::fs::read_link(&full).unwrap();
                    tar.symlink(&relative, &target.display().to_string())
                }
                Kind::File => tar.file(&relative, &std::fs::read(&full).unwrap()),
            };
        }
        tar.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Dir,
    Symlink,
    File,
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Kind)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap().display().to_string();
        // The entry itself, not what a symlink points at.
        let file_type = entry.file_type().unwrap();
        if file_type.is_symlink() {
            out.push((relative, Kind::Symlink));
        } else if file_type.is_dir() {
            out.push((relative, Kind::Dir));
            collect(root, &path, out);
        } else {
            out.push((relative, Kind::File));
        }
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = haystack.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

fn depmod() -> PathBuf {
    which::which("depmod")
        .ok()
        .or_else(|| {
            ["/usr/sbin/depmod", "/sbin/depmod"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .expect("depmod is not installed; run the README's test command, which installs kmod")
}

/// The base layer of a kmod image: a shell and `cp`, as the worker needs (placeholders here).
pub fn base_layer() -> Vec<u8> {
    TarLayer::new()
        .dir("bin")
        .file("bin/sh", b"#!placeholder shell\n")
        .file("bin/cp", b"#!placeholder cp\n")
        .dir("etc")
        .file(
            "etc/os-release",
            b"NAME=\"Red Hat Enterprise Linux\"\nVERSION_ID=\"9.6\"\n",
        )
        .finish()
}

/// An amd64 kmod image: the base layer, then `module` for `kernel` under `/opt`, indexed by depmod.
pub fn simple_image(module: &str, kernel: &str) -> super::images::Image {
    let mut tree = Tree::new();
    tree.module("/opt", kernel, &Ko::new(module))
        .depmod("/opt", kernel);
    tree.image()
}

impl Tree {
    /// An amd64 kmod image: the base layer, then this tree (gzip layers).
    pub fn image(&self) -> super::images::Image {
        use super::images::{self, Flavor};
        images::Image {
            flavor: Flavor::Docker,
            goarch: "amd64",
            layers: [base_layer(), self.layer()]
                .into_iter()
                .map(|t| images::layer(t, images::Compression::Gzip, Flavor::Docker))
                .collect(),
        }
    }
}
