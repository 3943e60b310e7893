//! Left unattended in a runbook or watched at a terminal: one deadline over the whole command,
//! re-runs that follow what is there, kubectl's output conventions and flag positions, and a live
//! view that fits the terminal (a pseudo-terminal of our own, replayed through vt100).

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::{Kmm, Recorded};
use support::cluster::{TestCluster, VERSION, module_spec, resolved};
use support::pty::Pty;
use support::tmux::Tmux;
use support::{Run, Stalled};

const GROUP: &str = "kmm.sigs.x-k8s.io";
/// What a deadline may overrun by: starting the plugin and reporting. Generous, so that a busy
/// machine does not fail the test; a deadline that is not kept overruns by far more.
const MARGIN: Duration = Duration::from_secs(5);

/// The plugin's run, which must end within `deadline` (plus the margin).
async fn ends_within(deadline: Duration, run: impl std::future::Future<Output = Run>) -> Run {
    let started = Instant::now();
    let run = run.await;
    let took = started.elapsed();
    assert!(took < deadline + MARGIN, "took {took:?}: {}", run.stderr);
    run
}

/// A release in the registry that never answers.
fn stalled_release(stalled: &Stalled) -> String {
    format!("{}/ocp/release:{VERSION}-x86_64", stalled.addr)
}

/// `preflight` of that release with a `--timeout`.
fn stalled_preflight<'a>(stalled: &'a Stalled, release: &'a str, timeout: &'a str) -> [&'a str; 7] {
    [
        "preflight",
        "--release",
        release,
        "--insecure-registry",
        &stalled.addr,
        "--timeout",
        timeout,
    ]
}

/// The names of a `List`'s items.
fn item_names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["name"].as_str().unwrap_or_default())
        .collect()
}

fn creates(c: &TestCluster) -> Vec<Recorded> {
    c.api
        .requests()
        .into_iter()
        .filter(|r| r.verb == "create" && r.group == GROUP)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_never_answers_ends_the_run_at_its_deadline() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let stalled = Stalled::start().await;
    let release = stalled_release(&stalled);
    let preflight = stalled_preflight(&stalled, &release, "3s");
    let run = ends_within(Duration::from_secs(3), c.plugin(&preflight))
        .await
        .expect_code(4);
    assert!(
        run.stderr
            .contains("gave up after 3s (--timeout) while reading release")
            && run
                .stderr
                .contains(&format!("from registry {}", stalled.addr)),
        "{}",
        run.stderr
    );
    assert!(creates(&c).is_empty(), "nothing is created");
    assert!(
        !run.stderr.contains("⠋") && !run.stderr.contains('\r'),
        "no spinner off a terminal: {:?}",
        run.stderr
    );

    // dtk has no --timeout: --request-timeout bounds each registry request, retries included.
    let dtk = [
        "dtk",
        "--release",
        &release,
        "--insecure-registry",
        &stalled.addr,
        "--request-timeout",
        "2s",
    ];
    let run = ends_within(Duration::from_secs(2), c.plugin(&dtk))
        .await
        .expect_code(4);
    assert!(run.stderr.contains(&stalled.addr), "{}", run.stderr);
    assert!(run.stderr.contains("--request-timeout"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_that_never_answers_ends_the_run_at_its_deadline() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let stalled = Stalled::start().await;
    let kubeconfig = c.ctx.write(
        "stalled.yaml",
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: hung\n\
             clusters:\n- name: hung\n  cluster:\n    server: https://{}\n\
             users:\n- name: admin\n  user:\n    token: admin-token\n\
             contexts:\n- name: hung\n  context:\n    cluster: hung\n    user: admin\n",
            stalled.addr
        ),
    );
    let kubeconfig = kubeconfig.display().to_string();
    for (args, step) in [
        (
            vec!["preflight", "--kernel", "5.14.0-570.19.0.el9_6.x86_64"],
            "reading KMM's CRDs, nodes, Modules, pull secret and image mirrors",
        ),
        (vec!["status", "-w"], "reading KMM's CRDs"),
    ] {
        let mut argv = args.clone();
        argv.extend(["--kubeconfig", &kubeconfig, "--timeout", "3s"]);
        let run = ends_within(Duration::from_secs(3), c.ctx.run(&argv))
            .await
            .expect_code(4);
        assert!(
            run.stderr.contains(&format!(
                "gave up after 3s (--timeout) while {step} from https://{}",
                stalled.addr
            )),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_preflight_twice_follows_the_first() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.preflight(&[]).await.expect_code(0);
    // KMM 2.4 made a PreflightValidation of the same name for it.
    assert!(c.pv("preflight-4-19-0").is_some());

    let run = c.preflight(&[]).await.expect_code(0);
    run.expect_stderr(
        "PreflightValidationOCP preflight-4-19-0 exists with the same spec: following it",
    );
    assert!(
        !run.stderr.contains("PreflightValidation/preflight-4-19-0"),
        "KMM's own child is not another preflight: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains("All 1 Modules verified"),
        "{}",
        run.stdout
    );
    assert_eq!(creates(&c).len(), 1, "created once");

    // Another spec under the same name: exit 2, naming the difference and the ways out.
    let run = c.preflight(&["--push-built-image"]).await.expect_code(2);
    run.expect_stderr(
        "PreflightValidationOCP preflight-4-19-0 exists with another spec: pushBuiltImage is false there, true here",
    );
    run.expect_stderr("--replace");
    assert_eq!(creates(&c).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_dry_run_is_an_object_kubectl_applies() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let yaml = c
        .preflight(&["--dry-run=client", "-o", "yaml"])
        .await
        .expect_code(0)
        .stdout;
    let object: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(object["kind"], "PreflightValidationOCP");
    assert_eq!(object["spec"]["kernelVersion"], c.kernel());
    // The default is YAML too; JSON is the same object.
    assert_eq!(
        c.preflight(&["--dry-run=client"])
            .await
            .expect_code(0)
            .stdout,
        yaml
    );
    assert_eq!(
        c.preflight(&["--dry-run=client", "-o", "json"])
            .await
            .expect_code(0)
            .json(),
        object
    );
    // GitOps review: piped into kubectl's server-side dry run (the test API server serves no
    // OpenAPI, which kubectl's client-side validation would want: the server validates).
    let run = c
        .ctx
        .kubectl_with_stdin(
            &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
            Some(&yaml),
        )
        .await
        .expect_code(0);
    assert_eq!(
        run.stdout.trim(),
        "preflightvalidationocp.kmm.sigs.x-k8s.io/preflight-4-19-0 created (server dry run)"
    );
    let posted = creates(&c);
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].param("dryRun").as_deref(), Some("All"));
    assert!(
        c.pvo("preflight-4-19-0").is_none(),
        "a dry run stores nothing"
    );

    // The plugin's own server dry run: the server's answer, nothing stored.
    let run = c
        .preflight(&["--dry-run=server", "-o", "json"])
        .await
        .expect_code(0);
    let answer = run.json();
    assert_eq!(answer["spec"], object["spec"]);
    assert!(
        answer["metadata"]["creationTimestamp"].is_string(),
        "{answer}"
    );
    let posted = creates(&c);
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[1].param("dryRun").as_deref(), Some("All"));
    assert!(c.pvo("preflight-4-19-0").is_none());
    let run = c
        .preflight(&["--dry-run=client", "-o", "name"])
        .await
        .expect_code(0);
    assert_eq!(
        run.stdout,
        "preflightvalidationocp.kmm.sigs.x-k8s.io/preflight-4-19-0\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_output_form() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    let run = c.preflight(&["-o", "name"]).await.expect_code(0);
    assert_eq!(
        run.stdout,
        "preflightvalidationocp.kmm.sigs.x-k8s.io/preflight-4-19-0\n"
    );
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "the release note only: {}",
        run.stderr
    );
    c.ctx
        .run(&[
            "preflight",
            "--kernel",
            "5.14.0-1.el9.x86_64",
            "--replace",
            "--no-wait",
        ])
        .await
        .expect_code(0);

    // The list: a v1 List of reports, names, a table, a wide table.
    let list = c
        .ctx
        .run(&["status", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    let names = item_names(&list);
    assert_eq!(names, ["preflight-5-14-0-1-el9-x86-64"]);
    assert_eq!(list["items"][0]["kind"], "PreflightValidationOCP");
    let yaml: Value = serde_yaml_ng::from_str(
        &c.ctx
            .run(&["status", "-o", "yaml"])
            .await
            .expect_code(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(yaml, list);
    let run = c.ctx.run(&["status", "-o", "name"]).await.expect_code(0);
    assert_eq!(
        run.stdout,
        "preflightvalidationocp.kmm.sigs.x-k8s.io/preflight-5-14-0-1-el9-x86-64\n"
    );
    let table = c.ctx.run(&["status"]).await.expect_code(0).stdout;
    assert!(table.starts_with("KIND  "), "{table}");
    assert!(!table.contains("PUSH"), "{table}");
    let wide = c
        .ctx
        .run(&["status", "-o", "wide"])
        .await
        .expect_code(0)
        .stdout;
    assert!(
        wide.lines()
            .next()
            .unwrap_or_default()
            .ends_with("PUSH   IMAGE"),
        "{wide}"
    );

    // One object: the report itself (not a List); its table narrow and wide.
    let one = c
        .ctx
        .run(&["status", "preflight-5-14-0-1-el9-x86-64", "-o", "json"])
        .await
        .json();
    assert_eq!(one["kind"], "PreflightValidationOCP");
    assert_eq!(one["name"], "preflight-5-14-0-1-el9-x86-64");

    // A followed preflight with the client check: the wide table adds KMM's stage and the
    // check's kernel and image.
    c.preflight(&["--replace"]).await.expect_code(0);
    let narrow = c
        .ctx
        .run(&["status", "preflight-4-19-0"])
        .await
        .expect_code(0)
        .stdout;
    let header = narrow.lines().nth(1).unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAMESPACE", "MODULE", "STATUS", "REASON"],
        "{narrow}"
    );
    let wide = c
        .ctx
        .run(&["status", "preflight-4-19-0", "-o", "wide"])
        .await
        .expect_code(0)
        .stdout;
    let header = wide.lines().nth(1).unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAMESPACE", "MODULE", "STATUS", "STAGE", "REASON"],
        "{wide}"
    );

    // check: wide adds the image; there is no object to name.
    let image = resolved(
        &format!(
            "{}/vendor/nvidia-gpu:${{KERNEL_FULL_VERSION}}",
            c.registry.addr
        ),
        c.kernel(),
    );
    let args = [
        "check",
        "--release",
        VERSION,
        "--insecure-registry",
        &c.registry.addr,
    ];
    let narrow = c.plugin(&args).await.expect_code(0).stdout;
    assert!(!narrow.contains(&image), "{narrow}");
    let mut wide_args = args.to_vec();
    wide_args.extend(["-o", "wide"]);
    let wide = c.plugin(&wide_args).await.expect_code(0).stdout;
    assert!(wide.contains(&image), "{wide}");
    let mut name_args = args.to_vec();
    name_args.extend(["-o", "name"]);
    c.plugin(&name_args)
        .await
        .expect_code(2)
        .expect_stderr("invalid value 'name' for '--output <OUTPUT>'");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_w_without_a_name_follows_every_preflight() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.preflight(&[]).await.expect_code(0);
    // KMM 2.4 answers one preflight at a time: a second one, of another era's kind, by hand.
    c.api.put(
        GROUP,
        "PreflightValidation",
        json!({"metadata": {"name": "by-hand"}, "spec": {"kernelVersion": c.kernel()}}),
    );
    let run = c.ctx.run(&["status", "-w", "-o", "json"]).await;
    let list = run.json();
    assert_eq!(list["kind"], "List", "{}", run.stdout);
    let names = item_names(&list);
    assert_eq!(names, ["preflight-4-19-0", "by-hand"]);
    assert_eq!(list["items"][0]["result"], "Success");
    let run = c.ctx.run(&["status", "-w"]).await;
    assert!(
        run.stdout
            .contains("PreflightValidationOCP preflight-4-19-0:")
            && run.stdout.contains("PreflightValidation by-hand:"),
        "{}",
        run.stdout
    );
    // Without preflights there is nothing to wait for.
    let empty = TestCluster::start(Kmm::Ocp24).await;
    let run = empty.ctx.run(&["status", "-w"]).await.expect_code(0);
    assert_eq!(run.stdout, "No preflights in the cluster.\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_go_before_or_after_the_subcommand() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.preflight(&["--no-wait"]).await.expect_code(0);
    let kubeconfig = c.ctx.path(".kube/config").display().to_string();
    let after = c
        .ctx
        .kubectl(&["kmm", "status", "-o", "name", "--kubeconfig", &kubeconfig])
        .await
        .expect_code(0);
    let before = c
        .ctx
        .kubectl(&[
            "kmm",
            "--kubeconfig",
            &kubeconfig,
            "--request-timeout=20s",
            "-o",
            "name",
            "-v",
            "status",
        ])
        .await
        .expect_code(0);
    assert_eq!(before.stdout, after.stdout);
    assert_eq!(
        before.stdout,
        "preflightvalidationocp.kmm.sigs.x-k8s.io/preflight-4-19-0\n"
    );
    // kubectl itself sees the same object (discovery and its table view).
    let run = c
        .ctx
        .kubectl(&["get", "preflightvalidationsocp"])
        .await
        .expect_code(0);
    assert_eq!(
        run.stdout
            .lines()
            .next()
            .map(str::split_whitespace)
            .map(Vec::from_iter),
        Some(vec!["NAME", "AGE"])
    );
    assert!(run.stdout.contains("preflight-4-19-0"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_say_what_was_wrong() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let run = c
        .ctx
        .run(&["preflight", "--release", VERSION, "--timeout", "-5s"])
        .await
        .expect_code(2);
    run.expect_stderr("invalid value '-5s' for '--timeout <DURATION>'");
    let run = c.ctx.run(&["preflight"]).await.expect_code(2);
    run.expect_stderr("--release <VERSION|PULLSPEC>|--kernel <KVER>");
    let run = c
        .ctx
        .run(&["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .await
        .expect_code(4);
    run.expect_stderr("the kubeconfig /nonexistent/kubeconfig does not exist");
    assert!(!run.stderr.contains("oc login"), "{}", run.stderr);
    let help = c.ctx.run(&["dtk", "--help"]).await.expect_code(0).stdout;
    assert!(
        help.contains("x86_64 (amd64") && help.contains("aarch64 (arm64)"),
        "{help}"
    );
    // The request-timeout hint only where a request timed out.
    let run = c
        .ctx
        .run(&["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .await;
    assert!(!run.stderr.contains("--request-timeout"), "{}", run.stderr);
}

/// 39 Modules KMM verifies at once and one it never finishes (its image is missing, it has no
/// build): `nic/stuck`, last in the table's order.
async fn forty_modules() -> TestCluster {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let image = format!("{}/vendor/fleet:${{KERNEL_FULL_VERSION}}", c.registry.addr);
    let kernel = c.kernel().to_string();
    c.operator().configure(|o| {
        o.images.insert(resolved(&image, &kernel));
        o.step = Duration::from_millis(10);
    });
    for i in 1..=39 {
        c.api
            .add_module("fleet", &format!("m{i:02}"), module_spec(&image, false));
    }
    let missing = format!("{}/vendor/stuck:${{KERNEL_FULL_VERSION}}", c.registry.addr);
    c.api
        .add_module("nic", "stuck", module_spec(&missing, false));
    c
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_modules_in_a_ten_line_terminal_stay_on_screen() {
    let c = forty_modules().await;
    let args = c.preflight_args(&["--no-client-check"]);
    let mut pty = Pty::spawn(&c.ctx, &args, 10, 100);
    // 10 rows: the header, the column titles, five Modules, the line for the rest, the
    // summary, and the cursor's line.
    let more = "… and 35 more verified";
    let shown = |t: &support::pty::Terminal| {
        let screen = t.screen();
        screen.contains(more) && screen.contains("nic        stuck")
    };
    pty.wait_for("the stuck Module above the verified ones", shown)
        .await;
    // Two ticks later: redrawn in place, nothing pushed into the scrollback.
    pty.next_output().await;
    pty.next_output().await;

    // Keys typed meanwhile are not echoed into the table.
    pty.type_keys("abc\r\r\r");
    pty.next_output().await;
    pty.next_output().await;
    let mut terminal = pty.wait_for("a redraw", shown).await;
    let screen = terminal.rows();
    assert!(!terminal.screen().contains("abc"), "{}", terminal.screen());
    assert_eq!(count(&screen, "NAMESPACE"), 1, "{}", terminal.screen());
    assert_eq!(
        count(&terminal.history(), "NAMESPACE"),
        1,
        "one frame in the scrollback and on the screen:\n{}",
        terminal.history().join("\n")
    );
    assert!(
        screen.last().is_some_and(String::is_empty),
        "the cursor rests on the last line: {screen:#?}"
    );

    // Narrower: redrawn cleanly within the new width.
    pty.resize(10, 60);
    pty.wait_for("the frame redrawn for 60 columns", |t| {
        let rows = t.rows();
        count(&rows, "NAMESPACE") == 1
            && rows.iter().any(|r| r.contains(more))
            && rows
                .iter()
                .any(|r| r.starts_with("nic ") && r.contains("stuck"))
            && rows.iter().all(|r| console_width(r) < 60)
    })
    .await;

    // Ctrl-C: the last frame stays, then how to resume.
    pty.type_keys("\u{3}");
    let (code, mut terminal) = pty.finish().await;
    assert_eq!(code, 130, "{}", terminal.screen());
    let history = terminal.history();
    assert!(
        terminal.screen().contains("Stopped following"),
        "{}",
        terminal.screen()
    );
    assert_eq!(count(&history, more), 1, "{}", history.join("\n"));
    assert!(
        count(&history, "of 40 Modules") <= 2,
        "{}",
        history.join("\n")
    );
}

fn console_width(row: &str) -> usize {
    row.trim_end().chars().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_on_a_terminal_shows_progress_on_stderr_only_there() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.module("nic", "mlx5", true, false).await;
    let args = c.preflight_args(&["-o", "json"]);
    let pty = Pty::spawn(&c.ctx, &args, 30, 120);
    let (code, mut terminal) = pty.finish().await;
    assert_eq!(code, 0, "{}", terminal.screen());
    let raw = terminal.raw();
    assert!(raw.contains("of 2 Modules:"), "{raw:?}");
    let history = terminal.history().join("\n");
    assert!(history.contains("\"result\": \"Success\""), "{history}");
    // The progress line is gone when the report is printed.
    assert!(
        !terminal.screen().contains("of 2 Modules:"),
        "{}",
        terminal.screen()
    );

    // Off a terminal: nothing but the report (and the release note).
    let run = c.preflight(&["-o", "json"]).await.expect_code(0);
    assert!(!run.stderr.contains("Modules:"), "{}", run.stderr);
    assert_eq!(run.json()["result"], "Success");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_waits_for_enter() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.api.put(
        GROUP,
        "PreflightValidationOCP",
        json!({"metadata": {"name": "last-week"}, "spec": {"kernelVersion": "5.14.0-1.el9.x86_64"}}),
    );
    let args = c.preflight_args(&[]);
    let mut pty = Pty::spawn(&c.ctx, &args, 30, 120);
    pty.wait_for("the question", |t| t.screen().contains("[y/N]"))
        .await;
    pty.type_keys("y");
    // dialoguer marks the typed answer as the one Enter takes.
    pty.wait_for("the answer typed", |t| t.screen().contains("[Y/n]"))
        .await;
    let deletes = |c: &TestCluster| {
        c.api
            .requests()
            .iter()
            .filter(|r| r.verb == "delete")
            .count()
    };
    assert_eq!(deletes(&c), 0, "nothing is done before Enter");
    pty.type_keys("\r");
    let (code, terminal) = pty.finish().await;
    assert_eq!(code, 0, "{}", terminal.screen());
    assert_eq!(deletes(&c), 1);
    assert!(c.pvo("last-week").is_none());
    assert!(
        terminal.screen().contains("All 1 Modules verified"),
        "{}",
        terminal.screen()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_shows_what_the_plugin_waits_for() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let stalled = Stalled::start().await;
    let release = stalled_release(&stalled);
    let args = stalled_preflight(&stalled, &release, "5s");
    let pty = Pty::spawn(&c.ctx, &args, 20, 200);
    let waiting = format!("reading release {release} from registry {}", stalled.addr);
    pty.wait_for("the spinner line", |t| {
        t.rows()
            .iter()
            .any(|r| r.contains(&waiting) && r.ends_with("s)"))
    })
    .await;
    let (code, terminal) = pty.finish().await;
    assert_eq!(code, 4, "{}", terminal.screen());
    // The spinner is gone; the error says the same step.
    let rows = terminal.rows();
    assert_eq!(
        rows.iter().filter(|r| r.contains(&waiting)).count(),
        1,
        "{}",
        terminal.screen()
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("error: gave up after 5s (--timeout) while reading release")),
        "{}",
        terminal.screen()
    );
}

/// A preflight (`--timeout 3s`, exit 4) while API requests whose path has `hanging` never end;
/// returns the run and the registry requests made by it.
async fn preflight_with_hanging(
    c: &TestCluster,
    hanging: &str,
    read: &[&str],
) -> (Run, Vec<String>) {
    c.module("gpu-operator", "nvidia-gpu", true, false).await;
    c.api.delay(hanging, Duration::from_secs(60));
    let pushed = c.registry.requests().len();
    let run = c.preflight(&["--timeout", "3s"]).await.expect_code(4);
    let asked = c.api.requests();
    for resource in read {
        assert!(
            asked.iter().any(|r| r.resource == *resource),
            "{resource} not read while {hanging} hangs: {}",
            run.stderr
        );
    }
    let registry = c.registry.requests()[pushed..].to_vec();
    (run, registry)
}

/// The cluster reads that do not depend on one another do not wait for one another, and the
/// release is read as soon as what it needs is there: with any one read hanging, the others
/// (and the work behind them) go on.
#[tokio::test(flavor = "multi_thread")]
async fn independent_reads_do_not_wait_for_one_another() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    // The Modules hang: the nodes, the pull secret, the mirror sets, the ClusterVersion, KMM's
    // CRDs and the existing preflights are read, and so is the release.
    let read = [
        "nodes",
        "secrets",
        "clusterversions",
        "imagedigestmirrorsets",
        "imagetagmirrorsets",
        "imagecontentsourcepolicies",
        "customresourcedefinitions",
        "preflightvalidationsocp",
    ];
    let (run, registry) = preflight_with_hanging(&c, "/modules", &read).await;
    assert!(
        registry
            .iter()
            .any(|r| r.starts_with("GET /v2/ocp/release/manifests/")),
        "the release is read while the Modules are listed: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_node_list_holds_back_only_what_needs_the_nodes() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    // The release needs the nodes' architecture: it waits; everything else is read.
    let read = [
        "modules",
        "secrets",
        "clusterversions",
        "customresourcedefinitions",
        "preflightvalidationsocp",
    ];
    let (_, registry) = preflight_with_hanging(&c, "/api/v1/nodes", &read).await;
    assert!(
        registry.is_empty(),
        "the release waits for the nodes: {registry:?}"
    );
}

/// With nothing in the way, KMM's object is created while the images are checked: a Module
/// whose registry never answers holds back the client check, not KMM.
#[tokio::test(flavor = "multi_thread")]
async fn the_object_is_created_while_the_images_are_checked() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let stalled = Stalled::start().await;
    let image = format!("{}/vendor/gpu:${{KERNEL_FULL_VERSION}}", stalled.addr);
    c.api
        .add_module("gpu-operator", "gpu", module_spec(&image, false));
    let run = c
        .preflight(&["--timeout", "3s", "--insecure-registry", &stalled.addr])
        .await
        .expect_code(4);
    assert!(
        c.pvo("preflight-4-19-0").is_some(),
        "created before the check ended: {}",
        run.stderr
    );
    run.expect_stderr("while checking the images of 1 Modules");
}

/// A deadline that passes while the client check waits on a Module's registry keeps what was
/// proven: the Module already failed is reported and decides the exit code (1, not 4), and the
/// error names the registry waited for. Without a failure it is exit 4, and the JSON says
/// `TimedOut`, never `Success`. A terminal sees the check's progress line meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_deadline_during_the_client_check_keeps_what_was_proven() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let stalled = Stalled::start().await;
    // can-bus: its image is missing and it has no build, which fails at once; hung: its
    // registry never answers.
    c.module("edge", "can-bus", false, false).await;
    c.api.add_module(
        "nic",
        "hung",
        module_spec(&format!("{}/vendor/hung:v1", stalled.addr), false),
    );
    let waiting = format!("waiting for registry {}", stalled.addr);

    let run = ends_within(
        Duration::from_secs(4),
        c.preflight(&["--timeout", "4s", "-o", "json"]),
    )
    .await
    .expect_code(1);
    run.expect_stderr("gave up after 4s (--timeout) while checking the images of 2 Modules")
        .expect_stderr(&waiting);
    let report = run.json();
    assert_eq!(report["result"], "Failure", "{report:#}");
    let module = |name: &str| {
        report["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {report:#}"))
    };
    assert_eq!(module("can-bus")["result"], "Failed");
    assert!(module("hung").get("check").is_none(), "{report:#}");

    let mut check = vec!["check", "--release", VERSION, "--timeout", "4s"];
    check.extend(["--insecure-registry", &c.registry.addr]);
    let run = ends_within(
        Duration::from_secs(4),
        c.ctx.run(&[&check[..], &["-o", "json"]].concat()),
    )
    .await
    .expect_code(1);
    run.expect_stderr(&waiting);
    let report = run.json();
    assert_eq!(report["result"], "Failure", "{report:#}");
    assert_eq!(report["summary"]["failed"], 1, "{report:#}");
    assert_eq!(report["modules"][0]["name"], "can-bus", "{report:#}");

    // Only the Module that hangs: nothing proven, exit 4, TimedOut.
    let run = ends_within(
        Duration::from_secs(4),
        c.ctx.run(&[&check[..], &["-o", "json", "hung"]].concat()),
    )
    .await
    .expect_code(4);
    run.expect_stderr(&waiting);
    assert_eq!(run.json()["result"], "TimedOut");

    // At a terminal the check says what it waits for, after the release has been read.
    let pty = Pty::spawn(&c.ctx, &[&check[..], &["hung"]].concat(), 20, 200);
    pty.wait_for("the check's spinner line", |t| {
        t.rows()
            .iter()
            .any(|r| r.contains("checking the images of 1 Modules") && r.ends_with("s)"))
    })
    .await;
    let (code, terminal) = pty.finish().await;
    assert_eq!(code, 4, "{}", terminal.screen());
    assert!(
        terminal
            .rows()
            .iter()
            .any(|r| r.contains("No Module was checked before the deadline.")),
        "{}",
        terminal.screen()
    );
}

/// Ctrl-C while the spinner shows what the plugin waits for: the line goes, the run ends with
/// 130 and says why.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_the_spinner_leaves_no_line_behind() {
    let c = TestCluster::start(Kmm::Ocp24).await;
    let stalled = Stalled::start().await;
    let release = stalled_release(&stalled);
    let args = stalled_preflight(&stalled, &release, "60s");
    let mut pty = Pty::spawn(&c.ctx, &args, 20, 200);
    let waiting = format!("reading release {release} from registry {}", stalled.addr);
    pty.wait_for("the spinner line", |t| {
        t.rows()
            .iter()
            .any(|r| r.contains(&waiting) && r.ends_with("s)"))
    })
    .await;
    pty.type_keys("\x03");
    let (code, terminal) = pty.finish().await;
    assert_eq!(code, 130, "{}", terminal.screen());
    let rows = terminal.rows();
    assert!(
        !rows.iter().any(|r| r.contains(&waiting)),
        "the spinner line is gone: {}",
        terminal.screen()
    );
    assert!(
        rows.iter().any(|r| r == "error: interrupted (Ctrl-C)"),
        "{}",
        terminal.screen()
    );
}

/// tmux keeps what leaves its screen in a history, and a redraw that erases the screen from its
/// top-left corner pushes the whole screen there (scroll-on-clear). The live view, redrawn
/// every second and on every change, leaves at most one frame there however long it runs:
/// here a few seconds of redraws, then the final report under the last frame.
#[tokio::test(flavor = "multi_thread")]
async fn tmux_keeps_no_copies_of_the_live_view() {
    let c = forty_modules().await;
    let args = c.preflight_args(&["--no-client-check", "--timeout", "6s"]);
    let tmux = Tmux::run(&c.ctx, &args, 10, 100);
    let tmux = tokio::task::spawn_blocking(move || {
        let code = tmux.wait();
        (code, tmux)
    })
    .await
    .unwrap();
    let (code, tmux) = tmux;
    let mut kept = tmux.history();
    kept.extend(tmux.screen());
    assert_eq!(code, 3, "{}", kept.join("\n"));
    assert_eq!(
        count(&kept, "NAMESPACE"),
        1,
        "one frame in tmux's history and on its screen:\n{}",
        kept.join("\n")
    );
    assert_eq!(count(&kept, "Timed out after 6s"), 1, "{}", kept.join("\n"));
}
