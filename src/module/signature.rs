//! Secure Boot: whether a module's appended signature verifies the way the kernel verifies it
//! (`kernel/module/signing.c` → `verify_pkcs7_signature`, `crypto/asymmetric_keys/pkcs7_*`).
//!
//! `scripts/sign-file` appends a detached CMS `SignedData` without certificates, one
//! `SignerInfo` naming the key by issuer and serial (or by subject key identifier with `-k`),
//! and by default no signed attributes: the signature is over the digest of the module's bytes.
//! With signed attributes (older sign-file) the `messageDigest` attribute must equal that digest
//! and the signature is over the attributes' DER `SET OF`.
//!
//! The kernel takes SHA-2 (256, 384, 512) and SHA-3 digests and RSA (PKCS#1 v1.5) or NIST P-384
//! ECDSA keys (`Documentation/admin-guide/module-signing.rst`); anything else is `unsupported`
//! here, which is the answer that claims nothing the kernel might not do. The certificate's
//! validity dates are not checked: the kernel ignores them for module signatures.
//!
//! Everything is parsed with RustCrypto's `cms`, `x509-cert` and `der`; RSA and ECDSA come from
//! `rsa` and `p384` (verification only: no private key is ever handled).

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use x509_cert::Certificate;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

/// A digest algorithm a signature names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    /// One the kernel does not take for modules (SHA-1, SHA-224, MD5, …): its name.
    Refused(&'static str),
    Unknown,
}

impl Hash {
    fn of(oid: &ObjectIdentifier) -> Hash {
        match oid.to_string().as_str() {
            "2.16.840.1.101.3.4.2.1" => Hash::Sha256,
            "2.16.840.1.101.3.4.2.2" => Hash::Sha384,
            "2.16.840.1.101.3.4.2.3" => Hash::Sha512,
            "2.16.840.1.101.3.4.2.8" => Hash::Sha3_256,
            "2.16.840.1.101.3.4.2.9" => Hash::Sha3_384,
            "2.16.840.1.101.3.4.2.10" => Hash::Sha3_512,
            "2.16.840.1.101.3.4.2.4" => Hash::Refused("SHA-224"),
            "1.3.14.3.2.26" => Hash::Refused("SHA-1"),
            "1.2.840.113549.2.5" => Hash::Refused("MD5"),
            _ => Hash::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
            Hash::Sha3_256 => "sha3-256",
            Hash::Sha3_384 => "sha3-384",
            Hash::Sha3_512 => "sha3-512",
            Hash::Refused(name) => name,
            Hash::Unknown => "an unknown digest",
        }
    }

    /// The digest of `data`; None for a hash the kernel refuses.
    fn digest(self, data: &[u8]) -> Option<Vec<u8>> {
        Some(match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
            Hash::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            Hash::Sha3_384 => sha3::Sha3_384::digest(data).to_vec(),
            Hash::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
            Hash::Refused(_) | Hash::Unknown => return None,
        })
    }

    fn rsa_scheme(self) -> Option<rsa::Pkcs1v15Sign> {
        Some(match self {
            Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            Hash::Sha3_256 => rsa::Pkcs1v15Sign::new::<sha3::Sha3_256>(),
            Hash::Sha3_384 => rsa::Pkcs1v15Sign::new::<sha3::Sha3_384>(),
            Hash::Sha3_512 => rsa::Pkcs1v15Sign::new::<sha3::Sha3_512>(),
            Hash::Refused(_) | Hash::Unknown => return None,
        })
    }
}

/// What parsing a PKCS#7 trailer keeps for verification later (the cache holds this, not the
/// module): the signature's DER and the digest of the signed bytes by the algorithm it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkcs7 {
    /// The CMS `ContentInfo`, hex.
    pub der: String,
    /// The module's digest (hex) by the signature's digest algorithm; None when the kernel
    /// would not take that algorithm or the signature could not be parsed.
    pub digest: Option<String>,
}

/// The issuer common name of the signer (what `modinfo` prints as `signer`), or its subject key
/// identifier in hex; and what verification needs.
pub fn read_pkcs7(signed: &[u8], der: &[u8]) -> (Option<String>, Pkcs7) {
    let parsed = signer_info(der).ok();
    let signer = parsed.as_ref().and_then(|info| signer_name(&info.sid));
    let digest = parsed
        .as_ref()
        .and_then(|info| Hash::of(&info.digest_alg.oid).digest(signed))
        .map(hex::encode);
    (
        signer,
        Pkcs7 {
            der: hex::encode(der),
            digest,
        },
    )
}

fn signer_info(der: &[u8]) -> Result<SignerInfo, String> {
    let content = ContentInfo::from_der(der).map_err(|e| format!("not CMS: {e}"))?;
    if content.content_type != OID_SIGNED_DATA {
        return Err(format!(
            "content type {} is not SignedData",
            content.content_type
        ));
    }
    let data: SignedData = content
        .content
        .decode_as()
        .map_err(|e| format!("not a SignedData: {e}"))?;
    let mut infos = data.signer_infos.0.into_vec();
    match infos.len() {
        1 => Ok(infos.remove(0)),
        0 => Err("it names no signer".into()),
        n => Err(format!("it has {n} signers; sign-file writes one")),
    }
}

fn signer_name(sid: &SignerIdentifier) -> Option<String> {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => id
            .issuer
            .common_name()
            .ok()
            .flatten()
            .map(String::from)
            .or_else(|| Some(id.issuer.to_string())),
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            Some(format!("key id {}", hex::encode(ski.0.as_bytes())))
        }
    }
}

/// A certificate whose key may have signed modules: the Module's certSecret, or one the admin
/// enrolled (`--trusted-cert`).
#[derive(Debug, Clone)]
pub struct TrustedCert {
    /// Where it came from: "Secret ns/name (certSecret)", "--trusted-cert mok.der".
    pub origin: String,
    /// The subject's common name (or whole name).
    pub subject: String,
    cert: Certificate,
}

impl TrustedCert {
    /// Every certificate in `bytes`: PEM (one or more `CERTIFICATE` blocks) or one DER.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Vec<TrustedCert>, String> {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
        let certs = if text.contains("-----BEGIN") {
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "{origin}: PEM without a CERTIFICATE block (a key or request?)"
                ));
            }
            Certificate::load_pem_chain(bytes)
                .map_err(|e| format!("{origin}: not a PEM certificate: {e}"))?
        } else {
            vec![
                Certificate::from_der(bytes)
                    .map_err(|e| format!("{origin}: not a DER or PEM X.509 certificate: {e}"))?,
            ]
        };
        if certs.is_empty() {
            return Err(format!("{origin}: no certificate in it"));
        }
        Ok(certs
            .into_iter()
            .map(|cert| {
                let name = cert.tbs_certificate().subject();
                let subject = name
                    .common_name()
                    .ok()
                    .flatten()
                    .map(String::from)
                    .unwrap_or_else(|| name.to_string());
                TrustedCert {
                    origin: origin.to_string(),
                    subject,
                    cert,
                }
            })
            .collect())
    }

    /// Why the kernel could not verify module signatures with this key; None when it can.
    pub fn key_problem(&self) -> Option<String> {
        self.key().err()
    }

    fn key(&self) -> Result<Key, String> {
        let spki = self.cert.tbs_certificate().subject_public_key_info();
        let raw = spki.subject_public_key.raw_bytes();
        let oid = spki.algorithm.oid;
        if oid == OID_RSA {
            use rsa::pkcs1::DecodeRsaPublicKey;
            return rsa::PublicKey::from_pkcs1_der(raw)
                .map(Key::Rsa)
                .map_err(|e| format!("{}: its RSA key does not parse: {e}", self.subject));
        }
        if oid == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            if curve != Some(OID_SECP384R1) {
                return Err(format!(
                    "{}: an ECDSA key on curve {}: the kernel verifies module signatures with \
                     RSA or NIST P-384 keys",
                    self.subject,
                    curve.map_or("unknown".into(), |c| c.to_string())
                ));
            }
            return p384::ecdsa::VerifyingKey::from_sec1_bytes(raw)
                .map(Key::P384)
                .map_err(|e| format!("{}: its P-384 key does not parse: {e}", self.subject));
        }
        Err(format!(
            "{}: a key of type {oid}: the kernel verifies module signatures with RSA or NIST \
             P-384 keys",
            self.subject
        ))
    }

    fn matches(&self, sid: &SignerIdentifier) -> bool {
        let tbs = self.cert.tbs_certificate();
        match sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                id.issuer == *tbs.issuer() && id.serial_number == *tbs.serial_number()
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
                .extensions()
                .into_iter()
                .flatten()
                .filter(|e| e.extn_id == OID_SUBJECT_KEY_ID)
                .any(|e| {
                    der::asn1::OctetString::from_der(e.extn_value.as_bytes())
                        .is_ok_and(|own| own.as_bytes() == ski.0.as_bytes())
                }),
        }
    }
}

/// What `--deep` verifies signatures against, and whether the nodes enforce them.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// `--trusted-cert`: the keys the nodes have enrolled.
    pub certs: Vec<TrustedCert>,
    /// `--secure-boot`: a module that verifies against no trusted key does not load.
    pub secure_boot: bool,
}

enum Key {
    Rsa(rsa::PublicKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// `signature.status` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    Valid,
    Invalid,
    UnknownSigner,
    Unsupported,
    Unsigned,
}

/// What the signature of one module file proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub status: Status,
    /// Who signed it, as the signature names the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Valid: the certificate that verified it and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub reason: String,
}

impl Verified {
    fn new(status: Status, signer: Option<String>, reason: String) -> Verified {
        Verified {
            status,
            signer,
            verified_by: None,
            hash: None,
            reason,
        }
    }
}

/// Verify one module's signature against the certificates, as the kernel would with those keys
/// in its keyrings.
pub fn verify(signature: Option<&super::ko::Signature>, certs: &[TrustedCert]) -> Verified {
    let Some(signature) = signature else {
        return Verified::new(Status::Unsigned, None, "no signature appended".into());
    };
    let signer = signature.signer.clone();
    let Some(pkcs7) = &signature.pkcs7 else {
        return Verified::new(
            Status::Unsupported,
            signer,
            format!(
                "a signature of {}: the kernel verifies PKCS#7 module signatures only",
                signature.kind
            ),
        );
    };
    let invalid =
        |signer: Option<String>, reason: String| Verified::new(Status::Invalid, signer, reason);
    let Ok(der) = hex::decode(&pkcs7.der) else {
        return invalid(signer, "the cached signature is not hex".into());
    };
    let info = match signer_info(&der) {
        Ok(info) => info,
        Err(e) => {
            return invalid(
                signer,
                format!("the signature is not one the kernel can parse: {e}"),
            );
        }
    };
    let hash = Hash::of(&info.digest_alg.oid);
    let with_hash = |mut v: Verified| {
        v.hash = Some(hash.name().to_string());
        v
    };
    let (Some(module_digest), Some(scheme)) = (
        pkcs7.digest.as_deref().and_then(|d| hex::decode(d).ok()),
        hash.rsa_scheme(),
    ) else {
        return with_hash(Verified::new(
            Status::Unsupported,
            signer,
            format!(
                "signed with {}: the kernel takes SHA-2 (256, 384, 512) or SHA-3 module \
                 signatures",
                hash.name()
            ),
        ));
    };
    let Some(cert) = certs.iter().find(|c| c.matches(&info.sid)) else {
        let tried = if certs.is_empty() {
            "no certificate was given (the Module's certSecret, --trusted-cert)".to_string()
        } else {
            let names: Vec<String> = certs
                .iter()
                .map(|c| format!("{} ({})", c.subject, c.origin))
                .collect();
            format!("it is none of {}", names.join(", "))
        };
        return with_hash(Verified::new(
            Status::UnknownSigner,
            signer.clone(),
            format!(
                "signed by {}: {tried}",
                signer.as_deref().unwrap_or("an unnamed key")
            ),
        ));
    };
    let key = match cert.key() {
        Ok(key) => key,
        Err(reason) => return with_hash(Verified::new(Status::Unsupported, signer, reason)),
    };
    // With signed attributes the signature covers them, and they carry the module's digest.
    let signed_digest = match &info.signed_attrs {
        None => module_digest,
        Some(attrs) => {
            let carried = attrs
                .iter()
                .find(|a| a.oid == OID_MESSAGE_DIGEST)
                .and_then(|a| a.values.iter().next())
                .and_then(|v| v.decode_as::<der::asn1::OctetString>().ok());
            if carried.as_ref().map(|d| d.as_bytes()) != Some(module_digest.as_slice()) {
                return with_hash(invalid(
                    signer,
                    "the digest it signed is not the module's: the file changed after signing"
                        .into(),
                ));
            }
            match attrs.to_der().ok().and_then(|der| hash.digest(&der)) {
                Some(digest) => digest,
                None => {
                    return with_hash(invalid(
                        signer,
                        "its signed attributes do not encode".into(),
                    ));
                }
            }
        }
    };
    let algorithm = info.signature_algorithm.oid;
    let value = info.signature.as_bytes();
    let checked = match &key {
        _ if algorithm == OID_RSA_PSS => Err("RSASSA-PSS".to_string()),
        Key::Rsa(public) => public
            .verify(scheme, &signed_digest, value)
            .map_err(|_| String::new()),
        Key::P384(public) => {
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            p384::ecdsa::Signature::from_der(value)
                .map_err(|_| String::new())
                .and_then(|sig| {
                    public
                        .verify_prehash(&signed_digest, &sig)
                        .map_err(|_| String::new())
                })
        }
    };
    match checked {
        Ok(()) => with_hash(Verified {
            status: Status::Valid,
            signer: signer.clone(),
            verified_by: Some(format!("{} ({})", cert.subject, cert.origin)),
            hash: None,
            reason: format!("signed by {} ({})", cert.subject, cert.origin),
        }),
        Err(scheme) if !scheme.is_empty() => with_hash(Verified::new(
            Status::Unsupported,
            signer,
            format!("a {scheme} signature: the kernel verifies PKCS#1 v1.5 RSA and ECDSA"),
        )),
        Err(_) => with_hash(invalid(
            signer,
            format!(
                "does not verify with {} ({}): the bytes changed after signing, or another key \
                 with the same issuer and serial signed it",
                cert.subject, cert.origin
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A key and self-signed certificate made by openssl, as a MOK key is made.
    struct Made {
        dir: tempfile::TempDir,
    }

    fn openssl(args: &[&str], dir: &std::path::Path) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    fn made(key: &str, name: &str) -> Made {
        let dir = tempfile::tempdir().unwrap();
        let subject = format!("/CN={name}");
        let newkey: &[&str] = match key {
            "rsa" => &["-newkey", "rsa:2048"],
            _ => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
        };
        let mut args = vec!["req", "-x509", "-nodes", "-days", "1", "-subj", &subject];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&["-keyout", "key.pem", "-out", "cert.pem"]);
        openssl(&args, dir.path());
        Made { dir }
    }

    impl Made {
        /// The module `data` signed as sign-file signs it, and its signature split off.
        fn sign(&self, data: &[u8], md: &str, attributes: bool) -> (Option<String>, Pkcs7) {
            std::fs::write(self.dir.path().join("m.ko"), data).unwrap();
            let mut args = vec![
                "cms",
                "-sign",
                "-binary",
                "-nocerts",
                "-nosmimecap",
                "-md",
                md,
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
            ];
            if !attributes {
                args.push("-noattr");
            }
            openssl(&args, self.dir.path());
            let der = std::fs::read(self.dir.path().join("m.p7s")).unwrap();
            read_pkcs7(data, &der)
        }

        fn certs(&self) -> Vec<TrustedCert> {
            let pem = std::fs::read(self.dir.path().join("cert.pem")).unwrap();
            TrustedCert::parse(&pem, "test").unwrap()
        }
    }

    fn signature(parts: (Option<String>, Pkcs7)) -> crate::module::ko::Signature {
        crate::module::ko::Signature {
            signer: parts.0,
            kind: "PKCS#7".into(),
            pkcs7: Some(parts.1),
        }
    }

    #[test]
    fn rsa_and_p384_with_and_without_attributes() {
        let data = b"\x7fELF a module".to_vec();
        for (key, md) in [("rsa", "sha256"), ("ec", "sha512"), ("rsa", "sha384")] {
            let made = made(key, "Vendor key");
            for attributes in [false, true] {
                let sig = signature(made.sign(&data, md, attributes));
                assert_eq!(sig.signer.as_deref(), Some("Vendor key"));
                let verified = verify(Some(&sig), &made.certs());
                assert_eq!(verified.status, Status::Valid, "{key} {md}: {verified:?}");
                // Another key with the same name is not the signer.
                let other = made_other(key);
                assert_eq!(
                    verify(Some(&sig), &other).status,
                    Status::UnknownSigner,
                    "{key} {md}"
                );
                // The same signature over other bytes.
                let (_, over_other) = read_pkcs7(
                    b"other bytes",
                    &hex::decode(&sig.pkcs7.as_ref().unwrap().der).unwrap(),
                );
                let moved = signature((sig.signer.clone(), over_other));
                assert_eq!(verify(Some(&moved), &made.certs()).status, Status::Invalid);
            }
        }
    }

    fn made_other(key: &str) -> Vec<TrustedCert> {
        made(key, "Vendor key").certs()
    }

    #[test]
    fn refused_hashes_unsigned_and_garbage() {
        let made = made("rsa", "Old key");
        let sig = signature(made.sign(b"module", "sha1", false));
        let verified = verify(Some(&sig), &made.certs());
        assert_eq!(verified.status, Status::Unsupported);
        assert!(verified.reason.contains("SHA-1"), "{}", verified.reason);
        assert_eq!(verify(None, &made.certs()).status, Status::Unsigned);
        for junk in [&b""[..], b"\x30\x84\xff", b"\x30\x03\x02\x01\x01"] {
            let sig = signature(read_pkcs7(b"m", junk));
            assert_eq!(verify(Some(&sig), &made.certs()).status, Status::Invalid);
        }
        assert!(TrustedCert::parse(b"not a certificate", "x").is_err());
        assert!(TrustedCert::parse(b"-----BEGIN PRIVATE KEY-----\n", "x").is_err());
    }
}
