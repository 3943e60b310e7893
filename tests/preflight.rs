//! `kubectl kmm preflight` against the test API server, the simulated KMM operator and a real
//! registry.

mod support;

use support::apiserver::Kmm;
use support::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn era_c_all_verified() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false);
    c.module("nic", "mlx5", true, false);
    let run = c.preflight(&["-o", "json", "-v"]).await;
    eprintln!("{}\n{}", run.stdout, run.stderr);
    let run = run.expect_code(0);
    let json = run.json();
    assert_eq!(json["result"], "Success");
}
