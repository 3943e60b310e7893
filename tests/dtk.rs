//! `kubectl kmm dtk` against a real registry.

mod support;

use support::Context;
use support::fixtures::push_release;
use support::images::Pusher;
use support::registry::TestRegistry;

#[tokio::test(flavor = "multi_thread")]
async fn resolves_a_release_through_kubectl_plugin_discovery() {
    let registry = TestRegistry::plain();
    let pusher = Pusher::new(&registry);
    let fixture = push_release(&pusher, &registry.addr, "4.19.0", "amd64").await;
    let ctx = Context::new();
    let spec = format!("{}/ocp/release:4.19.0-x86_64", registry.addr);
    let run = ctx
        .kubectl(&[
            "kmm",
            "dtk",
            "--release",
            &spec,
            "--insecure-registry",
            &registry.addr,
            "-o",
            "json",
            "-v",
        ])
        .await;
    eprintln!("{}", run.stderr);
    let run = run.expect_code(0);
    let json = run.json();
    assert_eq!(json["kernelVersion"], fixture.kernel.as_str());
    assert_eq!(json["dtkImage"], fixture.dtk.reference.as_str());
    assert_eq!(json["releaseDigest"], fixture.release.digest.as_str());
}
