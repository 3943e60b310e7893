//! KMM's preflight and the client check, together: KMM's word where it means something, the
//! check where KMM ≥ 2.4 cannot see (a module missing from an image that exists) or would never
//! answer (a missing image without build or sign), and the check alone for the kernels of
//! Modules whose nodes boot another kernel than the one the preflight object carries.

use crate::cluster::status::{ClientCheck, Row as KmmRow, State};

use super::check::{Row as CheckRow, Verdict};

/// What the client check knows of one Module: a row per kernel its nodes boot, or that it is
/// being checked again (it changed while being followed).
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub rows: Vec<CheckRow>,
    pub checking: bool,
}

fn cell(row: &CheckRow) -> ClientCheck {
    ClientCheck {
        verdict: row.verdict.to_string(),
        reason: row.reason.clone(),
        image: row.image.clone(),
        kernel: row.kernel.clone(),
        deep: row.deep.clone(),
    }
}

/// The row that decides: a failure, else a row that could not be checked, else the row for the
/// object's kernel, else the first.
fn decisive<'a>(rows: &'a [CheckRow], object_kernel: &str) -> Option<&'a CheckRow> {
    rows.iter()
        .find(|r| r.verdict == Verdict::Failed)
        .or_else(|| rows.iter().find(|r| r.verdict == Verdict::Unknown))
        .or_else(|| rows.iter().find(|r| r.kernel == object_kernel))
        .or_else(|| rows.first())
}

/// KMM ≤ 2.3's own negative answer: `False`/`Requeued` (retried every 3 minutes, never final).
fn kmm_said_no(kmm: &KmmRow) -> bool {
    kmm.status == "False" && kmm.stage == "Requeued"
}

/// One Module's verdict from KMM's entry and the client check (None: not checked, KMM alone).
pub fn combine(mut kmm: KmmRow, client: Option<&Client>, object_kernel: &str) -> KmmRow {
    let Some(client) = client else {
        return kmm;
    };
    if client.checking {
        kmm.check = Some(ClientCheck {
            verdict: "checking".into(),
            reason: String::new(),
            image: None,
            kernel: object_kernel.into(),
            deep: None,
        });
        if kmm.state.is_done() {
            kmm.state = State::InProgress;
        }
        kmm.why = format!("{} (the Module changed: checking it again)", kmm.reason)
            .trim_start()
            .to_string();
        return kmm;
    }
    let Some(row) = decisive(&client.rows, object_kernel) else {
        return kmm;
    };
    kmm.check = Some(cell(row));
    let kmm_checks_it = row.kernel == object_kernel;
    let on_object_kernel = client.rows.iter().any(|r| r.kernel == object_kernel);
    let other_kernel = |reason: &str| {
        format!(
            "{reason} (on {}, which KMM's preflight object does not check)",
            row.kernel
        )
    };
    match row.verdict {
        Verdict::Failed if row.waits_forever => {
            // KMM ≥ 2.4 never finishes it: no reason to wait.
            kmm.state = State::Failed;
            kmm.why = row.reason.clone();
        }
        Verdict::Failed if !kmm_checks_it => {
            kmm.state = State::Failed;
            kmm.why = other_kernel(&row.reason);
        }
        // What a node would not load fails at once: KMM's word cannot change that.
        Verdict::Failed => {
            kmm.why = match kmm.state {
                State::Verified => format!(
                    "KMM's preflight passed it, but {}: the node would not load it",
                    row.reason
                ),
                State::Failed => format!("{}; the client check: {}", kmm.reason, row.reason),
                _ if kmm_said_no(&kmm) => format!(
                    "{}: the node would not load it (KMM: {})",
                    row.reason, kmm.reason
                ),
                _ => format!("{}: the node would not load it", row.reason),
            };
            kmm.state = State::Failed;
        }
        Verdict::Unknown if on_object_kernel => {
            kmm.why = format!(
                "{} (the client check could not run: {})",
                kmm.reason, row.reason
            )
            .trim_start()
            .to_string();
        }
        Verdict::Unknown => {
            kmm.state = State::Unknown;
            kmm.why = other_kernel(&format!("the client check could not run: {}", row.reason));
        }
        _ if on_object_kernel => {}
        _ => {
            kmm.state = State::Verified;
            kmm.why = other_kernel(&row.reason);
        }
    }
    kmm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::status::state_of;

    const K: &str = "5.14.0-570.19.1.el9_6.x86_64";

    fn kmm(status: &str, stage: &str, reason: &str) -> KmmRow {
        KmmRow {
            cluster: String::new(),
            namespace: "nic".into(),
            name: "mlx5".into(),
            state: state_of(status),
            status: status.into(),
            stage: stage.into(),
            reason: reason.into(),
            why: reason.into(),
            check: None,
        }
    }

    fn check(kernel: &str, verdict: Verdict, reason: &str, waits_forever: bool) -> Client {
        Client {
            rows: vec![CheckRow {
                namespace: "nic".into(),
                name: "mlx5".into(),
                kernel: kernel.into(),
                image: Some("q.io/v/mlx5:1".into()),
                verdict,
                reason: reason.into(),
                invalid: false,
                waits_forever,
                deep: None,
                dtk_kernel: None,
                boot: None,
                day1: false,
            }],
            checking: false,
        }
    }

    #[test]
    fn both_agree_or_kmm_alone() {
        let verified = combine(
            kmm("Success", "Done", "verified image exists"),
            Some(&check(
                K,
                Verdict::Ready,
                "mlx5_core: extra/mlx5_core.ko",
                false,
            )),
            K,
        );
        assert_eq!(verified.state, State::Verified);
        assert_eq!(verified.why, "verified image exists");
        assert_eq!(verified.check.unwrap().verdict, "Ready");
        let alone = combine(kmm("InProgress", "Image", "not yet"), None, K);
        assert_eq!((alone.state, alone.check), (State::InProgress, None));
    }

    #[test]
    fn what_kmm_passes_but_a_node_would_not_load_fails() {
        let missing = "no /opt/lib/modules/K/ in q.io/v/mlx5@sha256:1";
        let waiting = combine(
            kmm("InProgress", "Image", "verification is not finished yet"),
            Some(&check(K, Verdict::Failed, missing, false)),
            K,
        );
        assert_eq!(waiting.state, State::Failed, "KMM's word is not awaited");
        assert_eq!(
            waiting.why,
            format!("{missing}: the node would not load it")
        );
        assert_eq!(waiting.status, "InProgress", "KMM's entry is still shown");
        let passed = combine(
            kmm("Success", "Done", "verified image exists"),
            Some(&check(K, Verdict::Failed, missing, false)),
            K,
        );
        assert_eq!(passed.state, State::Failed);
        assert_eq!(
            passed.why,
            format!("KMM's preflight passed it, but {missing}: the node would not load it")
        );
        let both = combine(
            kmm("Failure", "Done", "verified image does not exist"),
            Some(&check(K, Verdict::Failed, "x", false)),
            K,
        );
        assert_eq!(
            both.why,
            "verified image does not exist; the client check: x"
        );
        let old = combine(
            kmm("False", "Requeued", "image does not contain kernel module"),
            Some(&check(K, Verdict::Failed, missing, false)),
            K,
        );
        assert_eq!(old.state, State::Failed);
    }

    #[test]
    fn a_missing_image_without_build_fails_at_once() {
        let forever = combine(
            kmm("InProgress", "Image", "verification is not finished yet"),
            Some(&check(
                K,
                Verdict::Failed,
                "image x does not exist and …: KMM 2.4+ would wait for it forever",
                true,
            )),
            K,
        );
        assert_eq!(forever.state, State::Failed);
        assert!(forever.why.ends_with("wait for it forever"));
    }

    #[test]
    fn kmm_stands_when_the_check_cannot_run() {
        let unknown = combine(
            kmm("Success", "Done", "verified image exists"),
            Some(&check(
                K,
                Verdict::Unknown,
                "registry q.io is unreachable",
                false,
            )),
            K,
        );
        assert_eq!(unknown.state, State::Verified);
        assert_eq!(
            unknown.why,
            "verified image exists (the client check could not run: registry q.io is unreachable)"
        );
    }

    #[test]
    fn another_kernel_is_decided_by_the_check_alone() {
        let rt = format!("{K}+rt");
        let ready = combine(
            kmm("Failure", "Done", "mapping not found"),
            Some(&check(&rt, Verdict::Ready, "rtmod: extra/rtmod.ko", false)),
            K,
        );
        assert_eq!(ready.state, State::Verified);
        assert!(
            ready
                .why
                .contains("which KMM's preflight object does not check")
        );
        assert_eq!(ready.status, "Failure", "KMM's entry is still shown");
        let failed = combine(
            kmm("Success", "Done", "verified image exists"),
            Some(&check(&rt, Verdict::Failed, "no module", false)),
            K,
        );
        assert_eq!(failed.state, State::Failed);
        let unknown = combine(
            kmm("InProgress", "Image", ""),
            Some(&check(&rt, Verdict::Unknown, "unreachable", false)),
            K,
        );
        assert_eq!(unknown.state, State::Unknown);
        let checking = combine(
            kmm("Success", "Done", "verified image exists"),
            Some(&Client {
                rows: vec![],
                checking: true,
            }),
            K,
        );
        assert_eq!(checking.state, State::InProgress);
    }
}
