//! `check --deep` with `--secure-boot` and `--trusted-cert`: module signatures made by openssl
//! as the kernel's sign-file makes them (RSA and P-384 keys, SHA-256/512/1), verified against
//! the Module's certSecret and the certificates the admin says the nodes trust.

use crate::support;

use serde_json::{Value, json};
use support::apiserver::Kmm;
use support::cluster::{TestCluster, VERSION};
use support::fixtures::devel_dtk_image;
use support::images::Compression as Layer;
use support::kmod::{Compression, Ko, SigningKey};

use super::deep::{GOOD, add, devel_kernels, kernel, row, tree_of};

/// The keys of the world: a vendor's RSA key and P-384 key, the key the nodes trusted before a
/// rotation and the one after it, KMM's signing key and the one its certSecret holds since.
struct Keys {
    vendor: SigningKey,
    vendor_ec: SigningKey,
    rotated_out: SigningKey,
    current: SigningKey,
    kmm: SigningKey,
    kmm_new: SigningKey,
    p256: SigningKey,
}

fn keys() -> Keys {
    Keys {
        vendor: SigningKey::rsa("Vendor Secure Boot key"),
        vendor_ec: SigningKey::p384("Vendor ECDSA key"),
        rotated_out: SigningKey::rsa("Fleet MOK 2025"),
        current: SigningKey::rsa("Fleet MOK 2026"),
        kmm: SigningKey::rsa("KMM signing key"),
        kmm_new: SigningKey::rsa("KMM signing key"),
        p256: SigningKey::p256("P-256 key"),
    }
}

fn mlx5() -> Ko {
    Ko::new("mlx5_core")
        .license("GPL")
        .imports(&["pci_enable_device", "printk"])
        .versions(&GOOD)
}

/// A sign section whose certSecret is `cert`.
fn signing(spec: &mut Value, registry: &str, cert: &str) {
    spec["moduleLoader"]["container"]["sign"] = json!({
        "unsignedImage": format!("{registry}/vendor/unsigned-src:${{KERNEL_FULL_VERSION}}"),
        "keySecret": {"name": "kmm-key"}, "certSecret": {"name": cert},
        "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/extra/mlx5_core.ko"]});
}

async fn world(keys: &Keys) -> TestCluster {
    let c = TestCluster::start_with_dtk(
        Kmm::Ocp24,
        &devel_dtk_image(&devel_kernels(), 256 * 1024, Layer::Gzip),
    )
    .await;
    let k = kernel();
    let addr = c.registry.addr.to_string();
    // Vendors' signed modules, no sign section: the nodes must trust the vendor's key.
    let plain = [
        (
            "vendor-rsa",
            mlx5()
                .compressed(Compression::Xz)
                .signed_with(&keys.vendor, "sha256"),
        ),
        ("vendor-p384", mlx5().signed_with(&keys.vendor_ec, "sha512")),
        ("rotated", mlx5().signed_with(&keys.rotated_out, "sha256")),
        (
            "corrupt",
            mlx5()
                .signed_with(&keys.vendor, "sha256")
                .corrupt_signature(),
        ),
        ("sha1", mlx5().signed_with(&keys.vendor, "sha1")),
        ("unsigned", mlx5()),
    ];
    for (name, ko) in plain {
        let spec = add(&c, name, "mlx5_core", &k, tree_of(&k, &[ko])).await;
        c.api.add_module("nic", name, spec);
    }
    // What README shows: the nodes trust this year's MOK; one driver is still signed by last
    // year's, one is signed by KMM with the key its certSecret holds.
    for (name, key) in [("ice", &keys.current), ("qat", &keys.rotated_out)] {
        let ko = Ko::new(name)
            .license("GPL")
            .imports(&["printk"])
            .versions(&GOOD)
            .signed_with(key, "sha256");
        let spec = add(&c, &format!("drivers-{name}"), name, &k, tree_of(&k, &[ko])).await;
        c.api.add_module("drivers", name, spec);
    }
    c.api.add_secret(
        "drivers",
        "kmm-key",
        &[("key", b"never read by the plugin")],
    );
    c.api
        .add_secret("drivers", "kmm-cert", &[("cert", &keys.kmm.cert_der)]);
    let ko = Ko::new("nvme_tcp")
        .license("GPL")
        .imports(&["printk"])
        .versions(&GOOD)
        .signed_with(&keys.kmm, "sha256");
    let mut spec = add(&c, "drivers-nvme", "nvme_tcp", &k, tree_of(&k, &[ko])).await;
    signing(&mut spec, &addr, "kmm-cert");
    c.api.add_module("drivers", "nvme-tcp", spec);

    // KMM signs: its certSecret's certificate must verify the image's modules.
    c.api
        .add_secret("secure", "kmm-key", &[("key", b"never read by the plugin")]);
    c.api
        .add_secret("secure", "kmm-cert", &[("cert", &keys.kmm.cert_der)]);
    c.api.add_secret(
        "secure",
        "kmm-cert-new",
        &[("cert", &keys.kmm_new.cert_pem)],
    );
    c.api.add_secret(
        "secure",
        "kmm-cert-garbage",
        &[("cert", b"not a certificate")],
    );
    c.api
        .add_secret("secure", "kmm-cert-p256", &[("cert", &keys.p256.cert_der)]);
    let signed = [
        ("kmm-signed", "kmm-cert", Some(&keys.kmm)),
        ("kmm-stale", "kmm-cert-new", Some(&keys.kmm)),
        ("kmm-unsigned", "kmm-cert", None),
        ("kmm-garbage", "kmm-cert-garbage", Some(&keys.kmm)),
    ];
    for (name, cert, key) in signed {
        let ko = match key {
            Some(key) => mlx5().signed_with(key, "sha256"),
            None => mlx5(),
        };
        let mut spec = add(&c, name, "mlx5_core", &k, tree_of(&k, &[ko])).await;
        signing(&mut spec, &addr, cert);
        c.api.add_module("secure", name, spec);
    }
    // WillSign: the signed image does not exist yet, its unsigned image does; KMM would sign
    // with a P-256 certificate the kernel cannot verify with.
    let unsigned_src = tree_of(&k, &[mlx5()]);
    support::images::Pusher::new(&c.registry)
        .push_image("vendor/unsigned-src", Some(&k), &unsigned_src.image())
        .await;
    let mut will_sign = super::deep::add(
        &c,
        "will-sign-unused",
        "mlx5_core",
        &k,
        tree_of(&k, &[mlx5()]),
    )
    .await;
    will_sign["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"] = json!(format!(
        "{addr}/vendor/not-signed-yet:${{KERNEL_FULL_VERSION}}"
    ));
    signing(&mut will_sign, &addr, "kmm-cert-p256");
    c.api.add_module("secure", "will-sign-p256", will_sign);
    c
}

fn signature<'a>(json: &'a Value, name: &str) -> &'a Value {
    &row(json, name)["deep"]["files"][0]["signature"]
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_are_verified_as_the_kernel_verifies_them() {
    let keys = keys();
    let c = world(&keys).await;
    let dir = tempfile::tempdir().unwrap();
    let vendor_pem = dir.path().join("vendor.pem");
    let vendor_ec_der = dir.path().join("vendor-ec.der");
    let mok_der = dir.path().join("mok.der");
    std::fs::write(&vendor_pem, &keys.vendor.cert_pem).unwrap();
    std::fs::write(&vendor_ec_der, &keys.vendor_ec.cert_der).unwrap();
    std::fs::write(&mok_der, &keys.current.cert_der).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // --deep alone: signatures are information, bar a Module that signs its own.
    let run = c
        .plugin(&["check", "--release", VERSION, "--deep", "-o", "json", "-A"])
        .await
        .expect_code(1);
    let json = run.json();
    let verdict =
        |json: &Value, name: &str| row(json, name)["verdict"].as_str().unwrap().to_string();
    let reason = |json: &Value, name: &str| row(json, name)["reason"].as_str().unwrap().to_string();
    for name in [
        "vendor-rsa",
        "vendor-p384",
        "rotated",
        "corrupt",
        "sha1",
        "unsigned",
    ] {
        assert_eq!(
            verdict(&json, name),
            "Loads",
            "{name}: {}",
            reason(&json, name)
        );
    }
    // Without the vendor's certificate nobody can say whether it verifies.
    assert_eq!(signature(&json, "vendor-rsa")["status"], "unknownSigner");
    assert_eq!(
        signature(&json, "vendor-rsa")["signer"],
        "Vendor Secure Boot key"
    );
    assert_eq!(signature(&json, "unsigned")["status"], "unsigned");
    assert_eq!(signature(&json, "sha1")["status"], "unsupported");
    assert_eq!(signature(&json, "sha1")["hash"], "SHA-1");

    // KMM's own signing: verified against the certSecret (DER), which is all it needs.
    assert_eq!(
        verdict(&json, "kmm-signed"),
        "Loads",
        "{}",
        reason(&json, "kmm-signed")
    );
    assert_eq!(signature(&json, "kmm-signed")["status"], "valid");
    assert!(
        reason(&json, "kmm-signed")
            .ends_with("; signed by KMM signing key (Secret secure/kmm-cert (certSecret))"),
        "{}",
        reason(&json, "kmm-signed")
    );
    // The certSecret now holds another certificate with the same name: not the signer.
    assert_eq!(verdict(&json, "kmm-stale"), "Failed");
    assert_eq!(
        reason(&json, "kmm-stale"),
        "the Module signs its modules, but the image's do not verify against its certificate: \
         mlx5_core.ko: signed by KMM signing key: it is none of KMM signing key (Secret \
         secure/kmm-cert-new (certSecret))"
    );
    assert_eq!(verdict(&json, "kmm-unsigned"), "Failed");
    assert!(
        reason(&json, "kmm-unsigned").ends_with("mlx5_core.ko: no signature appended"),
        "{}",
        reason(&json, "kmm-unsigned")
    );
    // A certSecret that holds no certificate: the signer cannot be proven either way.
    assert_eq!(verdict(&json, "kmm-garbage"), "Unknown");
    assert!(
        reason(&json, "kmm-garbage").starts_with(
            "whether the signatures are the Module's own is not known: Secret \
             secure/kmm-cert-garbage (certSecret): not a DER or PEM X.509 certificate"
        ),
        "{}",
        reason(&json, "kmm-garbage")
    );
    // WillSign with a P-256 certificate: the nodes could never verify what KMM signs.
    assert_eq!(verdict(&json, "will-sign-p256"), "Failed");
    assert!(
        reason(&json, "will-sign-p256").starts_with(
            "KMM would sign with a certificate the kernel cannot verify with: P-256 key: an \
             ECDSA key on curve 1.2.840.10045.3.1.7"
        ),
        "{}",
        reason(&json, "will-sign-p256")
    );
    // The private key's Secret is never read (only whether it exists).
    assert!(
        !c.api
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/secrets/kmm-key")
                && !r.accept.contains("PartialObjectMetadata")),
        "the signing key was read"
    );

    // The nodes boot with Secure Boot and trust the vendor's keys (PEM, DER) and this year's
    // MOK: last year's, the corrupted, SHA-1 and unsigned modules would not load.
    let args = [
        "check".to_string(),
        "--release".into(),
        VERSION.into(),
        "--secure-boot".into(),
        "--trusted-cert".into(),
        path(&vendor_pem),
        "--trusted-cert".into(),
        path(&vendor_ec_der),
        "--trusted-cert".into(),
        path(&mok_der),
        "-o".into(),
        "json".into(),
        "-A".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sb = c.plugin(&args).await.expect_code(1).json();
    assert_eq!(
        verdict(&sb, "vendor-rsa"),
        "Loads",
        "{}",
        reason(&sb, "vendor-rsa")
    );
    assert_eq!(signature(&sb, "vendor-rsa")["status"], "valid");
    assert_eq!(signature(&sb, "vendor-rsa")["hash"], "sha256");
    assert_eq!(
        verdict(&sb, "vendor-p384"),
        "Loads",
        "{}",
        reason(&sb, "vendor-p384")
    );
    assert_eq!(signature(&sb, "vendor-p384")["hash"], "sha512");
    assert_eq!(
        signature(&sb, "vendor-p384")["verifiedBy"],
        format!("Vendor ECDSA key (--trusted-cert {})", path(&vendor_ec_der))
    );
    let refused = "the nodes boot with Secure Boot and would refuse it (\"Required key not \
                   available\"): mlx5_core.ko: ";
    assert_eq!(verdict(&sb, "rotated"), "Failed");
    assert_eq!(signature(&sb, "rotated")["status"], "unknownSigner");
    assert!(
        reason(&sb, "rotated")
            .starts_with(&format!("{refused}signed by Fleet MOK 2025: it is none of")),
        "{}",
        reason(&sb, "rotated")
    );
    assert!(reason(&sb, "rotated").contains("Fleet MOK 2026 (--trusted-cert"));
    assert_eq!(verdict(&sb, "corrupt"), "Failed");
    assert_eq!(signature(&sb, "corrupt")["status"], "invalid");
    assert!(
        reason(&sb, "corrupt").contains("does not verify with Vendor Secure Boot key"),
        "{}",
        reason(&sb, "corrupt")
    );
    assert_eq!(verdict(&sb, "sha1"), "Failed");
    assert!(
        reason(&sb, "sha1").contains("signed with SHA-1"),
        "{}",
        reason(&sb, "sha1")
    );
    assert_eq!(verdict(&sb, "unsigned"), "Failed");
    assert_eq!(
        reason(&sb, "unsigned"),
        format!("{refused}no signature appended")
    );
    assert_eq!(verdict(&sb, "kmm-signed"), "Loads");

    // README shows a run with this year's MOK alone (captures of world `secureboot`), from the
    // directory holding mok.der.
    std::fs::write(c.ctx.home.path().join("mok.der"), &keys.current.cert_der).unwrap();
    support::docs::assert_world("secureboot", &c.ctx, &c.registry.addr).await;

    // A certificate file that is not one, or is not there: exit 2, naming it.
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for (file, said) in [
        (path(&junk), "PEM without a CERTIFICATE block"),
        (path(&dir.path().join("missing.der")), "No such file"),
    ] {
        let bad = c
            .plugin(&["check", "--release", VERSION, "--trusted-cert", &file])
            .await
            .expect_code(2);
        assert!(
            bad.stderr.contains(&file) && bad.stderr.contains(said),
            "{}",
            bad.stderr
        );
        assert!(!bad.stderr.contains("panicked"), "{}", bad.stderr);
    }
}
