//! `kubectl kmm dtk` against a real registry (Debian's docker-registry).

use crate::support;

use serde_json::Value;
use support::fixtures::{
    self, dtk_image, dtk_json, image_references, kernel_for, payload_layer, push_payload,
    push_release, push_release_with_dtk, release_metadata,
};
use support::images::{Compression, Flavor, Image, Pusher, TarLayer, layer};
use support::proxy::{Fault, FaultProxy};
use support::registry::TestRegistry;
use support::tokens::{Asked, TokenService};
use support::{Context, auth_file};

const KEYS: [&str; 10] = [
    "releaseImage",
    "releaseDigest",
    "releaseVersion",
    "architecture",
    "dtkImage",
    "kernelVersion",
    "rtKernelVersion",
    "rhelVersion",
    "nodeOs",
    "streams",
];

fn dtk_args<'a>(release: &'a str, registry: &'a str) -> Vec<&'a str> {
    vec!["dtk", "--release", release, "--insecure-registry", registry]
}

#[tokio::test(flavor = "multi_thread")]
async fn resolves_a_release_through_kubectl_plugin_discovery() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let fixture = push_release(&pusher, &registry.addr, "4.19.0", "amd64").await;
    let ctx = Context::new();
    let spec = format!("{}/ocp/release:4.19.0-x86_64", registry.addr);

    let mut args = vec!["kmm"];
    args.extend(dtk_args(&spec, &registry.addr));
    args.extend(["-o", "json"]);
    let run = ctx.kubectl(&args).await.expect_code(0);
    let json = run.json();
    // The documented keys, in the documented order.
    let positions: Vec<usize> = KEYS
        .iter()
        .map(|k| run.stdout.find(&format!("\"{k}\"")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", run.stdout);

    let keys = run.json_keys();
    let mut expected = KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    let pinned = format!("{}/ocp/release@{}", registry.addr, fixture.release.digest);
    assert_eq!(json["releaseImage"], pinned.as_str());
    assert_eq!(json["releaseDigest"], fixture.release.digest.as_str());
    assert_eq!(json["releaseVersion"], "4.19.0");
    assert_eq!(json["architecture"], "x86_64");
    assert_eq!(json["dtkImage"], fixture.dtk.reference.as_str());
    // The top layer's file, not the older copy in the base layer.
    assert_eq!(json["kernelVersion"], "5.14.0-570.19.0.el9_6.x86_64");
    assert_eq!(json["rtKernelVersion"], "5.14.0-570.19.0.el9_6.x86_64+rt");
    assert_eq!(json["rhelVersion"], "9.6");

    // The same answer as text and YAML.
    let text = ctx
        .run(&dtk_args(&spec, &registry.addr))
        .await
        .expect_code(0);
    assert!(
        text.stdout
            .contains("Kernel           5.14.0-570.19.0.el9_6.x86_64\n"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains(&format!("DTK image        {}\n", fixture.dtk.reference))
    );
    let mut args = dtk_args(&spec, &registry.addr);
    args.extend(["-o", "yaml"]);
    let yaml = ctx.run(&args).await.expect_code(0);
    assert!(
        yaml.stdout
            .contains("kernelVersion: 5.14.0-570.19.0.el9_6.x86_64\n")
    );
    assert!(
        yaml.stdout
            .contains(&format!("releaseDigest: {}\n", fixture.release.digest))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_become_tags_of_the_release_repo() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let x86 = push_release(&pusher, &registry.addr, "4.20.0-rc.2", "amd64").await;
    let arm = push_release(&pusher, &registry.addr, "4.20.0-rc.2", "arm64").await;
    let repo = format!("{}/ocp/release", registry.addr);
    let mut ctx = Context::new();

    // --release-repo, default arch x86_64.
    let mut args = dtk_args("4.20.0-rc.2", &registry.addr);
    args.extend(["--release-repo", &repo, "-o", "json"]);
    let json = ctx.run(&args).await.expect_code(0).json();
    assert_eq!(json["releaseDigest"], x86.release.digest.as_str());
    assert_eq!(json["kernelVersion"], x86.kernel.as_str());
    assert_eq!(json["releaseVersion"], "4.20.0-rc.2");

    // KMM_RELEASE_REPO, --arch aarch64 (and its Go alias arm64).
    ctx.env("KMM_RELEASE_REPO", &repo);
    for arch in ["aarch64", "arm64"] {
        let mut args = dtk_args("4.20.0-rc.2", &registry.addr);
        args.extend(["--arch", arch, "-o", "json"]);
        let json = ctx.run(&args).await.expect_code(0).json();
        assert_eq!(
            json["releaseImage"],
            format!("{repo}@{}", arm.release.digest)
        );
        assert_eq!(json["kernelVersion"], arm.kernel.as_str());
        assert_eq!(json["architecture"], "aarch64");
        assert_eq!(json["rtKernelVersion"], Value::Null);
    }

    // A version that was never pushed: bad input, naming the image tried.
    let mut args = dtk_args("4.20.1", &registry.addr);
    args.extend(["--release-repo", &repo]);
    let run = ctx.run(&args).await.expect_code(2);
    assert!(
        run.stderr.contains(&format!(
            "release image {repo}:4.20.1-x86_64 was not found in registry {}",
            registry.addr
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_lists_pick_the_platform() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    // A multi-arch DTK (Docker manifest list) and a multi payload (OCI index) over it.
    let mut dtk_children = Vec::new();
    for goarch in ["amd64", "arm64", "ppc64le"] {
        let image = dtk_image(
            &kernel_for("4.19.3", goarch),
            goarch,
            Flavor::Oci,
            Compression::Gzip,
        );
        dtk_children.push((pusher.push_image("ocp/art-dev", None, &image).await, goarch));
    }
    let children: Vec<_> = dtk_children.iter().map(|(p, a)| (p, *a)).collect();
    let dtk = pusher
        .push_index("ocp/art-dev", None, Flavor::Docker, &children)
        .await;
    let refs = image_references("4.19.3", Some(&dtk.reference), &registry.addr);
    let mut payloads = Vec::new();
    for goarch in ["amd64", "arm64", "ppc64le"] {
        let payload = payload_layer(&refs, &release_metadata("4.19.3", true), 50);
        payloads.push((push_payload(&pusher, None, payload, goarch).await, goarch));
    }
    let children: Vec<_> = payloads.iter().map(|(p, a)| (p, *a)).collect();
    let multi = pusher
        .push_index("ocp/release", Some("4.19.3-multi"), Flavor::Oci, &children)
        .await;

    let ctx = Context::new();
    let spec = format!("{}/ocp/release:4.19.3-multi", registry.addr);
    for (arch, rpm) in [
        ("arm64", "aarch64"),
        ("ppc64le", "ppc64le"),
        ("x86_64", "x86_64"),
    ] {
        let mut args = dtk_args(&spec, &registry.addr);
        args.extend(["--arch", arch, "-o", "json"]);
        let json = ctx.run(&args).await.expect_code(0).json();
        assert_eq!(
            json["releaseDigest"],
            multi.digest.as_str(),
            "the list's digest is reported"
        );
        assert_eq!(json["architecture"], rpm);
        assert_eq!(json["dtkImage"], dtk.reference.as_str());
        assert_eq!(
            json["kernelVersion"],
            format!("5.14.0-570.19.3.el9_6.{rpm}")
        );
    }

    let mut args = dtk_args(&spec, &registry.addr);
    args.extend(["--arch", "s390x"]);
    let run = ctx.run(&args).await.expect_code(2);
    assert!(
        run.stderr
            .contains("has no image for platform linux/s390x (it offers: linux/amd64, linux/arm64, linux/ppc64le)"),
        "{}",
        run.stderr
    );
}

/// A DTK whose layers are given top last, pushed with a release pointing at it.
async fn resolve_dtk(
    layers: Vec<Vec<u8>>,
    compression: Compression,
    flavor: Flavor,
) -> (i32, String, String) {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let image = Image {
        flavor,
        goarch: "amd64",
        layers: layers
            .into_iter()
            .map(|t| layer(t, compression, flavor))
            .collect(),
    };
    let fixture = push_release_with_dtk(&pusher, &registry.addr, "4.19.0", &image, None).await;
    let ctx = Context::new();
    let mut args = dtk_args(&fixture.release.reference, &registry.addr);
    args.extend(["-o", "json"]);
    let run = ctx.run(&args).await;
    let kernel = if run.code == 0 {
        run.json()["kernelVersion"].as_str().unwrap().to_string()
    } else {
        String::new()
    };
    (run.code, kernel, run.stderr)
}

/// A release whose DTK is one layer holding `tar`.
async fn release_over_dtk_layer(
    pusher: &Pusher,
    addr: &str,
    tar: Vec<u8>,
) -> fixtures::ReleaseFixture {
    push_release_with_dtk(pusher, addr, "4.19.0", &Image::single(tar), None).await
}

fn dtk_file(kernel: &str) -> Vec<u8> {
    dtk_json(kernel, None, "9.6")
}

const OLD: &str = "5.14.0-1.1.el9.x86_64";
const NEW: &str = "5.14.0-570.19.1.el9_6.x86_64";

#[tokio::test(flavor = "multi_thread")]
async fn layers_are_read_as_a_container_sees_them() {
    let base = || {
        TarLayer::new()
            .dir("etc")
            .file(fixtures::DTK_FILE, &dtk_file(OLD))
            .finish()
    };
    let filler = || {
        TarLayer::new()
            .dir("usr")
            .noise("usr/lib/blob", 4096, 3)
            .finish()
    };
    let new_file = || {
        TarLayer::new()
            .file(fixtures::DTK_FILE, &dtk_file(NEW))
            .finish()
    };
    let shared = || {
        TarLayer::new()
            .file("usr/share/dtk/release.json", &dtk_file(NEW))
            .finish()
    };
    use Compression::{Gzip, Plain, Zstd};
    use Flavor::{Docker, Oci};

    // (what, layers bottom first, compression, media types, the kernel a container would see)
    type Case = (
        &'static str,
        Vec<Vec<u8>>,
        Compression,
        Flavor,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "newest copy, gzip, Docker",
            vec![base(), filler(), new_file()],
            Gzip,
            Docker,
            Some(NEW),
        ),
        (
            "newest copy, zstd, OCI",
            vec![base(), filler(), new_file()],
            Zstd,
            Oci,
            Some(NEW),
        ),
        (
            "newest copy, plain tar, OCI",
            vec![base(), filler(), new_file()],
            Plain,
            Oci,
            Some(NEW),
        ),
        (
            "newest copy, plain tar, Docker",
            vec![base(), filler(), new_file()],
            Plain,
            Docker,
            Some(NEW),
        ),
        (
            "./ entries",
            vec![
                base(),
                TarLayer::new()
                    .dir("./etc")
                    .file("./etc/driver-toolkit-release.json", &dtk_file(NEW))
                    .finish(),
            ],
            Gzip,
            Docker,
            Some(NEW),
        ),
        (
            "untouched by upper layers",
            vec![base(), filler(), filler()],
            Gzip,
            Docker,
            Some(OLD),
        ),
        (
            "whiteout of the file",
            vec![
                base(),
                TarLayer::new().whiteout(fixtures::DTK_FILE).finish(),
                filler(),
            ],
            Gzip,
            Docker,
            None,
        ),
        (
            "whiteout of its directory",
            vec![base(), TarLayer::new().whiteout("etc").finish(), filler()],
            Zstd,
            Oci,
            None,
        ),
        (
            "opaque directory",
            vec![
                base(),
                TarLayer::new()
                    .dir("etc")
                    .opaque("etc")
                    .file("etc/hostname", b"x")
                    .finish(),
                filler(),
            ],
            Gzip,
            Docker,
            None,
        ),
        (
            "opaque directory with the file in the same layer",
            vec![
                base(),
                TarLayer::new()
                    .dir("etc")
                    .file(fixtures::DTK_FILE, &dtk_file(NEW))
                    .opaque("etc")
                    .finish(),
            ],
            Zstd,
            Oci,
            Some(NEW),
        ),
        (
            "hard link",
            vec![
                base(),
                TarLayer::new()
                    .file("usr/share/dtk/release.json", &dtk_file(NEW))
                    .hardlink(fixtures::DTK_FILE, "usr/share/dtk/release.json")
                    .finish(),
            ],
            Gzip,
            Docker,
            Some(NEW),
        ),
        (
            "symbolic link into a lower layer",
            vec![
                base(),
                shared(),
                TarLayer::new()
                    .symlink(fixtures::DTK_FILE, "../usr/share/dtk/release.json")
                    .finish(),
            ],
            Gzip,
            Docker,
            Some(NEW),
        ),
    ];
    for (what, layers, compression, flavor, expected) in cases {
        let (code, kernel, stderr) = resolve_dtk(layers, compression, flavor).await;
        match expected {
            Some(kernel_seen) => {
                assert_eq!(
                    (code, kernel.as_str()),
                    (0, kernel_seen),
                    "{what}: {stderr}"
                )
            }
            None => {
                assert_eq!(code, 2, "{what}: {stderr}");
                assert!(
                    stderr.contains("does not contain /etc/driver-toolkit-release.json"),
                    "{what}: {stderr}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_top_layer_is_read_only_as_far_as_needed() {
    const BIG: u64 = 48 * 1024 * 1024;
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry.addr).await;
    let pusher = Pusher::via(&registry, &proxy.addr);
    // Squashed-style top layer: the file first, then 48 MiB of incompressible data.
    let top = TarLayer::new()
        .dir("etc")
        .file(fixtures::DTK_FILE, &dtk_file(NEW))
        .noise("usr/lib/modules/big.ko", BIG, 5)
        .finish();
    let base = TarLayer::new()
        .file(fixtures::DTK_FILE, &dtk_file(OLD))
        .finish();
    let image = Image {
        flavor: Flavor::Docker,
        goarch: "amd64",
        layers: vec![
            layer(base, Compression::Gzip, Flavor::Docker),
            layer(top, Compression::Gzip, Flavor::Docker),
        ],
    };
    let fixture = push_release_with_dtk(&pusher, &proxy.addr, "4.19.0", &image, None).await;
    let pushed = proxy.bytes_down();
    let release = fixture.release.reference.clone();

    let ctx = Context::new();
    let mut args = dtk_args(&release, &proxy.addr);
    args.extend(["-o", "json", "-v"]);
    let run = ctx.run(&args).await.expect_code(0);
    assert_eq!(run.json()["kernelVersion"], NEW);

    // The plugin's own count: what it read from the HTTP bodies.
    let fetched: u64 = run
        .stderr
        .split("fetched ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no transfer report in:\n{}", run.stderr));
    let image_size = fixture.dtk.image_size + fixture.release.image_size;
    assert!(
        fetched * 100 < image_size,
        "fetched {fetched} bytes of {image_size}: more than 1%"
    );
    // On the wire (socket buffers included), far less than the big layer.
    assert!(
        proxy.bytes_down() - pushed < BIG / 4,
        "{} bytes crossed the proxy",
        proxy.bytes_down() - pushed
    );

    // The file at the very end of a big layer is still found: the whole layer is scanned.
    let top = TarLayer::new()
        .noise("usr/lib/modules/big.ko", 8 * 1024 * 1024, 9)
        .file(fixtures::DTK_FILE, &dtk_file(NEW))
        .finish();
    let (code, kernel, stderr) = resolve_dtk(
        vec![
            TarLayer::new()
                .file(fixtures::DTK_FILE, &dtk_file(OLD))
                .finish(),
            top,
        ],
        Compression::Gzip,
        Flavor::Docker,
    )
    .await;
    assert_eq!((code, kernel.as_str()), (0, NEW), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_files_are_found_among_hundreds_of_manifests() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let kernel = kernel_for("4.18.7", "amd64");
    let dtk = pusher
        .push_image(
            "ocp/art-dev",
            None,
            &dtk_image(&kernel, "amd64", Flavor::Docker, Compression::Gzip),
        )
        .await;
    // image-references after 400 manifests, release-metadata in a lower layer.
    let mut tar = TarLayer::new().dir("release-manifests");
    for i in 0..400 {
        tar = tar.file(
            &format!("release-manifests/0000_50_op-{i}.yaml"),
            b"kind: ConfigMap\n",
        );
    }
    let refs = image_references("4.18.7", Some(&dtk.reference), &registry.addr);
    let top = tar
        .file("./release-manifests/image-references", &refs)
        .finish();
    let lower = TarLayer::new()
        .file(
            "release-manifests/release-metadata",
            &release_metadata("4.18.7", false),
        )
        .finish();
    let image = Image {
        flavor: Flavor::Oci,
        goarch: "amd64",
        layers: vec![
            layer(lower, Compression::Zstd, Flavor::Oci),
            layer(top, Compression::Gzip, Flavor::Oci),
        ],
    };
    let release = pusher.push_image("ocp/release", None, &image).await;
    let ctx = Context::new();
    let mut args = dtk_args(&release.reference, &registry.addr);
    args.extend(["-o", "json"]);
    let json = ctx.run(&args).await.expect_code(0).json();
    assert_eq!(json["kernelVersion"], kernel.as_str());
    assert_eq!(json["releaseVersion"], "4.18.7");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_for_the_same_digest_reads_no_blobs() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let fixture = push_release(&pusher, &registry.addr, "4.19.0", "amd64").await;
    let ctx = Context::new();
    let by_tag = format!("{}/ocp/release:4.19.0-x86_64", registry.addr);

    let mut args = dtk_args(&by_tag, &registry.addr);
    args.extend(["-o", "json"]);
    let first = ctx.run(&args).await.expect_code(0).json();
    let blobs_after_first = registry.blob_requests();
    assert!(
        blobs_after_first >= 2,
        "the first run reads the payload and DTK layers"
    );

    // By tag (one manifest request) and by digest (none at all): same answer, no blobs.
    let second = ctx.run(&args).await.expect_code(0).json();
    let mut by_digest = dtk_args(&fixture.release.reference, &registry.addr);
    by_digest.extend(["-o", "json"]);
    let third = ctx.run(&by_digest).await.expect_code(0).json();
    assert_eq!(first, second);
    assert_eq!(first, third);
    assert_eq!(registry.blob_requests(), blobs_after_first);
    assert!(ctx.path(".cache/kubectl-kmm").is_dir());

    // --no-cache goes to the registry again.
    args.push("--no-cache");
    assert_eq!(ctx.run(&args).await.expect_code(0).json(), first);
    assert!(registry.blob_requests() > blobs_after_first);
}

/// A cold run asks each thing once, on one kept-alive connection, with no `GET /v2/` probes
/// on a registry that needs no token, and small blobs in one request each.
#[tokio::test(flavor = "multi_thread")]
async fn a_cold_run_asks_each_thing_once_on_two_connections() {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry.addr).await;
    let pusher = Pusher::via(&registry, &proxy.addr);
    let fixture = push_release(&pusher, &proxy.addr, "4.19.0", "amd64").await;
    let pushed = registry.requests().len();
    let connections = proxy.connections();
    let ctx = Context::new();
    // `http://` says the registry speaks plain HTTP: no TLS attempt first.
    let plain = format!("http://{}", proxy.addr);
    let mut args = dtk_args(&fixture.release.reference, &plain);
    args.extend(["-o", "json", "-v", "--no-cache"]);
    let run = ctx.run(&args).await.expect_code(0);
    assert_eq!(run.json()["kernelVersion"], fixture.kernel.as_str());
    assert!(!run.stderr.contains("using plain HTTP"), "{}", run.stderr);

    let asked = registry.requests()[pushed..].to_vec();
    assert!(!asked.is_empty(), "{run:?}");
    assert!(
        !asked.iter().any(|r| r == "GET /v2/"),
        "no probes: {asked:#?}"
    );
    let mut unique = asked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), asked.len(), "nothing asked twice: {asked:#?}");
    // One connection, and a second one for the node OS image, read beside the driver-toolkit
    // so that it adds no round trip.
    assert_eq!(
        proxy.connections() - connections,
        2,
        "two connections for the whole run: {asked:#?}"
    );
    // What the plugin counts is what the registry saw.
    run.expect_stderr(&format!(" in {} requests ", asked.len()));
}

/// Registries with a token service (quay.io, registry.redhat.io): one token per repository,
/// anonymous where the service grants it, the auth file's credentials where it does not.
#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_asked_once_per_repository() {
    let tokens = TokenService::start("vendor", "pw");
    let registry = TestRegistry::with_tokens(&tokens, "vendor", "pw");
    let pusher = Pusher::new(&registry);
    let fixture = push_release(&pusher, &registry.addr, "4.19.0", "amd64").await;
    let ctx = Context::new();
    let plain = format!("http://{}", registry.addr);
    let (tokens_before, requests_before) = (tokens.asked().len(), registry.requests().len());
    let mut args = dtk_args(&fixture.release.reference, &plain);
    args.extend(["-o", "json", "--no-cache", "-v"]);
    let run = ctx.run(&args).await.expect_code(0);
    assert_eq!(run.json()["kernelVersion"], fixture.kernel.as_str());
    let anonymous = |scope: &str| Asked {
        scope: scope.to_string(),
        user: None,
    };
    assert_eq!(
        tokens.asked()[tokens_before..],
        [
            anonymous("repository:ocp/release:pull"),
            anonymous("repository:ocp/art-dev:pull")
        ]
    );
    // Each read once, no probe; the plugin counts them, the two tokens, and the one refusal
    // that told it where tokens come from (the registry does not log refusals as requests).
    let asked = registry.requests()[requests_before..].to_vec();
    let mut unique = asked.clone();
    unique.dedup();
    assert_eq!(unique, asked, "nothing asked twice");
    assert!(!asked.iter().any(|r| r == "GET /v2/"), "{asked:#?}");
    run.expect_stderr(&format!(" in {} requests ", asked.len() + 3));

    // A driver-toolkit in a repository the service grants only to a user.
    let kernel = kernel_for("4.19.0", "amd64");
    let dtk = dtk_image(&kernel, "amd64", Flavor::Docker, Compression::Gzip);
    let dtk = pusher.push_image("private/art-dev", None, &dtk).await;
    let refs = image_references("4.19.0", Some(&dtk.reference), &registry.addr);
    let metadata = release_metadata("4.19.0", false);
    let release = push_payload(&pusher, None, payload_layer(&refs, &metadata, 300), "amd64").await;
    let mut args = dtk_args(&release.reference, &plain);
    args.extend(["-o", "json", "--no-cache"]);
    let refused = ctx.run(&args).await.expect_code(4);
    refused.expect_stderr("anonymous access was refused");

    let file = ctx.write("auth.json", auth_file(&[(&registry.addr, "vendor", "pw")]));
    let file = file.display().to_string();
    args.extend(["--registry-config", &file]);
    let tokens_before = tokens.asked().len();
    let run = ctx.run(&args).await.expect_code(0);
    assert_eq!(run.json()["kernelVersion"], kernel.as_str());
    let asked = tokens.asked()[tokens_before..].to_vec();
    assert_eq!(
        asked,
        [
            anonymous("repository:ocp/release:pull"),
            anonymous("repository:private/art-dev:pull"),
            Asked {
                scope: "repository:private/art-dev:pull".into(),
                user: Some("vendor".into())
            }
        ]
    );
    assert!(!run.stdout.contains("pw") && !run.stderr.contains("pw"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_credentials_as_podman_users_expect() {
    let registry = TestRegistry::secure("kmm", "s3cret-pass");
    let pusher = Pusher::new(&registry);
    let fixture = push_release(&pusher, &registry.addr, "4.19.0", "amd64").await;
    let ca = registry.ca_pem().unwrap().display().to_string();
    let spec = fixture.release.reference.clone();
    let host = registry.addr.clone();
    let good = auth_file(&[(&host, "kmm", "s3cret-pass")]);

    // Unknown CA: a TLS failure, exit 4, with the way out.
    let ctx = Context::new();
    let run = ctx
        .run(&["dtk", "--release", &spec, "--no-cache"])
        .await
        .expect_code(4);
    assert!(
        run.stderr
            .contains(&format!("TLS connection to registry {host} failed")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--registry-ca"), "{}", run.stderr);

    // Trusted CA but no credentials: unauthorized, exit 4.
    let run = ctx
        .run(&[
            "dtk",
            "--release",
            &spec,
            "--registry-ca",
            &ca,
            "--no-cache",
        ])
        .await
        .expect_code(4);
    assert!(
        run.stderr.contains(&format!(
            "not authorized to read {spec} from registry {host}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no auth file was found"),
        "{}",
        run.stderr
    );

    // Every place podman looks for credentials.
    for place in [
        "--registry-config",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "~/.config/containers",
        "DOCKER_CONFIG",
        "~/.docker",
    ] {
        let mut ctx = Context::new();
        let mut args = vec![
            "dtk",
            "--release",
            &spec,
            "--registry-ca",
            &ca,
            "-o",
            "json",
            "-v",
        ];
        let explicit = ctx.path("creds.json").display().to_string();
        match place {
            "--registry-config" => {
                ctx.write("creds.json", &good);
                args.extend(["--registry-config", &explicit]);
            }
            "REGISTRY_AUTH_FILE" => {
                let path = ctx.write("elsewhere/auth.json", &good);
                ctx.env("REGISTRY_AUTH_FILE", path.display().to_string());
            }
            "XDG_RUNTIME_DIR" => {
                ctx.write("run/containers/auth.json", &good);
                let run_dir = ctx.path("run").display().to_string();
                ctx.env("XDG_RUNTIME_DIR", run_dir);
            }
            "~/.config/containers" => {
                ctx.write(".config/containers/auth.json", &good);
            }
            "DOCKER_CONFIG" => {
                ctx.write("dockercfg/config.json", &good);
                let dir = ctx.path("dockercfg").display().to_string();
                ctx.env("DOCKER_CONFIG", dir);
            }
            _ => {
                ctx.write(".docker/config.json", &good);
            }
        }
        let run = ctx.run(&args).await;
        assert_eq!(run.code, 0, "credentials from {place}: {}", run.stderr);
        assert_eq!(run.json()["kernelVersion"], fixture.kernel.as_str());
        // -v names the source of the credentials, never the credentials.
        assert!(
            run.stderr
                .contains(&format!("{host}/ocp/release: credentials from")),
            "{place}: {}",
            run.stderr
        );
        assert!(!run.all_output().contains("s3cret-pass"));
    }

    // A credential helper named in credHelpers (docker's protocol: host on stdin, JSON out).
    let mut ctx = Context::new();
    let helper = ctx.write(
        "bin/docker-credential-kmmtest",
        format!(
            "#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = \"{host}\" ] || exit 1\n\
             echo '{{\"ServerURL\":\"'$host'\",\"Username\":\"kmm\",\"Secret\":\"s3cret-pass\"}}'\n"
        ),
    );
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = support::isolated_path(&[&ctx.path("bin")]);
    ctx.env("PATH", path);
    ctx.write(
        ".config/containers/auth.json",
        format!("{{\"credHelpers\": {{\"{host}\": \"kmmtest\"}}}}"),
    );
    let run = ctx
        .run(&[
            "dtk",
            "--release",
            &spec,
            "--registry-ca",
            &ca,
            "-v",
            "--no-cache",
        ])
        .await
        .expect_code(0);
    assert!(
        run.stderr
            .contains("credentials from docker-credential-kmmtest"),
        "{}",
        run.stderr
    );
    assert!(!run.all_output().contains("s3cret-pass"));
    // A helper that is missing: unauthorized, and the message says what went wrong.
    ctx.write(
        ".config/containers/auth.json",
        format!("{{\"credHelpers\": {{\"{host}\": \"absent\"}}}}"),
    );
    let run = ctx
        .run(&[
            "dtk",
            "--release",
            &spec,
            "--registry-ca",
            &ca,
            "--no-cache",
        ])
        .await
        .expect_code(4);
    assert!(
        run.stderr
            .contains("docker-credential-absent is not on PATH"),
        "{}",
        run.stderr
    );

    // A repository entry beats the host entry of the same file.
    let ctx = Context::new();
    let file = ctx.write(
        "creds.json",
        auth_file(&[
            (&host, "kmm", "wrong"),
            (&format!("{host}/ocp"), "kmm", "s3cret-pass"),
        ]),
    );
    let file = file.display().to_string();
    ctx.run(&[
        "dtk",
        "--release",
        &spec,
        "--registry-ca",
        &ca,
        "--registry-config",
        &file,
    ])
    .await
    .expect_code(0);

    // Wrong password: exit 4, the file named, the password nowhere.
    let file = ctx.write("bad.json", auth_file(&[(&host, "kmm", "hunter2-wrong")]));
    let file = file.display().to_string();
    let run = ctx
        .run(&[
            "dtk",
            "--release",
            &spec,
            "--registry-ca",
            &ca,
            "--registry-config",
            &file,
            "-vv",
            "--no-cache",
        ])
        .await
        .expect_code(4);
    assert!(run.stderr.contains("were refused"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.json"), "{}", run.stderr);
    assert!(!run.all_output().contains("hunter2-wrong"));
    assert!(
        !run.all_output().contains("a21tOmh1bnRlcjItd3Jvbmc"),
        "base64 of the credentials leaked"
    );

    // --insecure-registry: unverified TLS for that host only.
    let file = ctx.write("good.json", &good).display().to_string();
    ctx.run(&[
        "dtk",
        "--release",
        &spec,
        "--insecure-registry",
        &host,
        "--registry-config",
        &file,
        "--no-cache",
    ])
    .await
    .expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_with_a_message_naming_it() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let addr = registry.addr.clone();
    let ctx = Context::new();

    // Flags and values rejected before any network access.
    for (args, needle) in [
        (vec!["dtk", "--release", "4.19"], "invalid release \"4.19\""),
        (
            vec!["dtk", "--release", "latest"],
            "not a version and not a pull spec",
        ),
        (
            vec!["dtk", "--release", "quay.io/Bad/Repo:1"],
            "not a valid repository path",
        ),
        (
            vec!["dtk", "--release", "quay.io/a/b@sha256:123"],
            "digest must be sha256",
        ),
        (
            vec!["dtk", "--release", "ocp/release:4.19.0"],
            "is not a registry host",
        ),
        (
            vec![
                "dtk",
                "--release",
                "4.19.0",
                "--release-repo",
                "quay.io/a/b:tag",
            ],
            "must not carry a tag",
        ),
        (
            vec!["dtk", "--release", "4.19.0", "--arch", "riscv64"],
            "invalid value 'riscv64'",
        ),
        (
            vec!["dtk", "--release", "4.19.0", "--bogus"],
            "unexpected argument '--bogus'",
        ),
        (vec!["dtk"], "--release <VERSION|PULLSPEC>"),
        (
            vec![
                "dtk",
                "--release",
                "4.19.0",
                "--registry-config",
                "/nonexistent/auth.json",
            ],
            "/nonexistent/auth.json",
        ),
        (
            vec![
                "dtk",
                "--release",
                "4.19.0",
                "--registry-ca",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ] {
        let run = ctx.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"));
    }
    let broken = ctx
        .write("broken.json", "{\"auths\": {\"x\": \"secret-value\"}}")
        .display()
        .to_string();
    let run = ctx
        .run(&["dtk", "--release", "4.19.0", "--registry-config", &broken])
        .await
        .expect_code(2);
    assert!(!run.stderr.contains("secret-value"), "{}", run.stderr);

    // Images that are not what they should be.
    let not_a_payload = pusher
        .push_image(
            "ocp/release",
            Some("plain"),
            &Image::single(TarLayer::new().file("bin/sh", b"#!").finish()),
        )
        .await;
    let no_dtk_tag = push_payload(
        &pusher,
        Some("no-dtk"),
        payload_layer(
            &image_references("4.19.0", None, &addr),
            &release_metadata("4.19.0", false),
            10,
        ),
        "amd64",
    )
    .await;
    let garbage_refs = push_payload(
        &pusher,
        Some("garbage"),
        TarLayer::new()
            .file("release-manifests/image-references", b"{\"kind\": \"Pod\"}")
            .finish(),
        "amd64",
    )
    .await;
    let dtk_without_file = release_over_dtk_layer(
        &pusher,
        &addr,
        TarLayer::new().file("etc/os-release", b"x").finish(),
    )
    .await;
    let dtk_malformed = release_over_dtk_layer(
        &pusher,
        &addr,
        TarLayer::new()
            .file(fixtures::DTK_FILE, b"{ \"KERNEL_VERSION\": ")
            .finish(),
    )
    .await;
    let dtk_no_kernel = release_over_dtk_layer(
        &pusher,
        &addr,
        TarLayer::new()
            .file(fixtures::DTK_FILE, b"{\"RHEL_VERSION\": \"9.6\"}")
            .finish(),
    )
    .await;
    let dangling = push_payload(
        &pusher,
        Some("dangling"),
        payload_layer(
            &image_references(
                "4.19.0",
                Some(&format!("{addr}/ocp/art-dev@sha256:{}", "e".repeat(64))),
                &addr,
            ),
            &release_metadata("4.19.0", false),
            5,
        ),
        "amd64",
    )
    .await;
    for (image, needle) in [
        (
            not_a_payload.reference.clone(),
            "is not an OpenShift release payload: it has no /release-manifests/image-references",
        ),
        (
            no_dtk_tag.reference.clone(),
            "has no \"driver-toolkit\" image in release-manifests/image-references",
        ),
        (
            garbage_refs.reference.clone(),
            "is not an image.openshift.io/v1 ImageStream",
        ),
        (
            dtk_without_file.release.reference.clone(),
            &format!(
                "driver-toolkit image {} does not contain /etc/driver-toolkit-release.json",
                dtk_without_file.dtk.reference
            ),
        ),
        (
            dtk_malformed.release.reference.clone(),
            "has a malformed /etc/driver-toolkit-release.json: not valid JSON",
        ),
        (
            dtk_no_kernel.release.reference.clone(),
            "KERNEL_VERSION is missing or empty",
        ),
        (dangling.reference.clone(), "driver-toolkit image"),
        (
            format!("{addr}/ocp/release:4.99.0-x86_64"),
            "was not found in registry",
        ),
    ] {
        let run = ctx
            .run(&["dtk", "--release", &image, "--insecure-registry", &addr])
            .await;
        assert_eq!(run.code, 2, "{image}: {}", run.stderr);
        assert!(
            run.stderr.contains(needle),
            "{image}: expected {needle:?} in:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_registry_exits_4() {
    let port = support::free_port();
    let ctx = Context::new();
    let spec = format!("127.0.0.1:{port}/ocp/release:4.19.0-x86_64");
    let run = ctx
        .run(&["dtk", "--release", &spec, "-v"])
        .await
        .expect_code(4);
    assert!(
        run.stderr
            .contains(&format!("registry 127.0.0.1:{port} is unreachable")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("retry 1"),
        "retries are reported with -v: {}",
        run.stderr
    );
    assert!(run.stderr.contains("hint:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_and_lasting_ones_reported() {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry.addr).await;
    let pusher = Pusher::via(&registry, &proxy.addr);
    let fixture = push_release(&pusher, &proxy.addr, "4.19.0", "amd64").await;
    let spec = fixture.release.reference.clone();
    let ctx = Context::new();
    let mut args = dtk_args(&spec, &proxy.addr);
    args.extend(["-o", "json", "-v", "--no-cache"]);

    // A 503, a 429 and a dropped connection on the first request: three retries, the last
    // attempt allowed succeeds.
    proxy.fail_next([Fault::Status(503), Fault::Status(429), Fault::Close]);
    let run = ctx.run(&args).await.expect_code(0);
    assert_eq!(run.json()["kernelVersion"], fixture.kernel.as_str());
    assert_eq!(proxy.pending_faults(), 0);
    assert!(
        run.stderr.contains("retry 1 after: HTTP 503"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("retry 2 after: HTTP 429"),
        "{}",
        run.stderr
    );

    // Connections cut in the middle of a layer: reading resumes where it stopped (HTTP Range).
    let top = TarLayer::new()
        .noise("usr/lib/modules/big.ko", 2 * 1024 * 1024, 13)
        .file(fixtures::DTK_FILE, &dtk_file(NEW))
        .finish();
    let dtk = Image::single(top);
    let cut = push_release_with_dtk(&pusher, &proxy.addr, "4.19.0", &dtk, None).await;
    let spec_cut = cut.release.reference.clone();
    let mut cut_args = dtk_args(&spec_cut, &proxy.addr);
    cut_args.extend(["-o", "json", "-v", "--no-cache"]);
    proxy.fail_next([Fault::CutAfter(700_000), Fault::CutAfter(700_000)]);
    let run = ctx.run(&cut_args).await.expect_code(0);
    assert_eq!(run.json()["kernelVersion"], NEW);
    assert!(run.stderr.contains("dropped at byte"), "{}", run.stderr);

    // A lasting outage: bounded retries, then exit 4 naming the registry and the status.
    proxy.fail_always(Some(Fault::Status(503)));
    let run = ctx.run(&args).await.expect_code(4);
    assert!(
        run.stderr
            .contains(&format!("registry {} failed while reading", proxy.addr)),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HTTP 503"), "{}", run.stderr);
    let attempts = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("info:") && l.contains(": retry "))
        .count();
    assert_eq!(attempts, 3, "bounded retries: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_layer_is_refused() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let top = layer(
        TarLayer::new()
            .file(fixtures::DTK_FILE, &dtk_file(NEW))
            .finish(),
        Compression::Plain,
        Flavor::Oci,
    );
    let image = Image {
        flavor: Flavor::Oci,
        goarch: "amd64",
        layers: vec![top.clone()],
    };
    let fixture = push_release_with_dtk(&pusher, &registry.addr, "4.19.0", &image, None).await;
    let ctx = Context::new();
    let mut args = dtk_args(&fixture.release.reference, &registry.addr);
    args.push("--no-cache");
    ctx.run(&args).await.expect_code(0);

    // Same size, another kernel: only the digest can tell.
    let path = registry.blob_path(&top.digest);
    let original = std::fs::read(&path).unwrap();
    let forged = String::from_utf8_lossy(&original).replace("570.19.1", "570.66.6");
    assert_eq!(forged.len(), original.len());
    std::fs::write(&path, forged).unwrap();
    let run = ctx.run(&args).await.expect_code(4);
    assert!(
        run.stderr
            .contains(&format!("blob {} does not match its digest", top.digest)),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("570.66.6"));
}

/// 5.x payloads carry a RHEL 10 driver-toolkit beside the RHEL 9 one: both are reported.
#[tokio::test(flavor = "multi_thread")]
async fn both_driver_toolkit_streams_of_a_payload() {
    use support::fixtures::{KERNEL_10, push_two_stream_release};
    let registry = TestRegistry::plain();
    let two = push_two_stream_release(&Pusher::new(&registry), &registry.addr, "5.0.0").await;
    let ctx = Context::new();
    let args = [
        "dtk",
        "--release",
        &two.release.reference,
        "--insecure-registry",
        &registry.addr,
    ];
    let json = ctx
        .run(&[&args[..], &["-o", "json"]].concat())
        .await
        .expect_code(0)
        .json();
    assert_eq!(
        json["kernelVersion"],
        two.kernel.as_str(),
        "the RHEL 9 answer stays"
    );
    let streams = json["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0]["rhelVersion"], "9.6");
    assert_eq!(streams[1]["kernelVersion"], KERNEL_10);
    assert_eq!(streams[1]["rtKernelVersion"], format!("{KERNEL_10}+rt"));
    assert_eq!(streams[1]["rhelVersion"], "10.0");
    let text = ctx.run(&args).await.expect_code(0);
    text.expect_stdout(&format!("  Kernel         {KERNEL_10}"));
    text.expect_stdout("DTK (RHEL 10.0) ");
}
