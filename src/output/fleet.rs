//! Several clusters in one report: one table with CLUSTER first, or one JSON/YAML document with
//! the fleet's result, a summary, and each cluster's own single-cluster document unchanged.

use serde::Serialize;

use super::{ReportFormat, to_json, to_yaml};
use crate::error::ExitStatus;
use crate::module::check::Outcome;

/// A single-cluster document that can stand in the fleet's table: its header and rows (without
/// the CLUSTER column), and its one-line summary.
pub trait Tabular {
    fn header(&self, wide: bool) -> Vec<String>;
    fn rows(&self, wide: bool) -> Vec<Vec<String>>;
    fn summary_line(&self) -> String;
}

/// One cluster of the fleet: its document, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEntry<D> {
    /// The kubeconfig context (or, with `--hub`, the ManagedCluster).
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub result: Outcome,
    /// What the single-cluster command prints for this cluster, as it prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `--cgu`: the TALM batch the cluster is upgraded in (1 first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// The exit code of this cluster's run on its own.
    #[serde(skip)]
    pub exit: ExitStatus,
}

impl<D> ClusterEntry<D> {
    pub fn checked(
        context: String,
        server: Option<String>,
        result: Outcome,
        report: D,
        exit: ExitStatus,
    ) -> Self {
        ClusterEntry {
            context,
            server,
            result,
            report: Some(report),
            error: None,
            batch: None,
            exit,
        }
    }

    /// A cluster that could not be checked: Unknown with the cause (Invalid for bad input,
    /// TimedOut for the deadline).
    pub fn failed(context: String, server: Option<String>, error: &crate::error::Error) -> Self {
        let exit = error.exit_status();
        let result = match error {
            crate::error::Error::DeadlineExceeded { .. } => Outcome::TimedOut,
            _ if exit == ExitStatus::BadInput => Outcome::Invalid,
            _ => Outcome::Unknown,
        };
        ClusterEntry {
            context,
            server,
            result,
            report: None,
            error: Some(error.to_string()),
            batch: None,
            exit,
        }
    }
}

fn first_header(batched: bool) -> Vec<String> {
    let mut header = vec!["CLUSTER".to_string()];
    if batched {
        header.push("BATCH".into());
    }
    header
}

/// How many clusters came to each result.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    pub clusters: usize,
    pub success: usize,
    pub failure: usize,
    pub unknown: usize,
    pub invalid: usize,
    pub timed_out: usize,
    pub no_modules: usize,
    pub in_progress: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet<D> {
    /// The worst result of any cluster (Invalid, Failure, TimedOut, Unknown, InProgress, then
    /// Success; NoModules when no cluster had anything to check).
    pub result: Outcome,
    pub summary: FleetSummary,
    /// What the run noticed about the fleet as a whole (e.g. a ManagedClusterModule that
    /// selects no cluster).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub clusters: Vec<ClusterEntry<D>>,
}

/// The exit codes from worst to best: bad input, a failure, a deadline, the environment,
/// success. Ctrl-C is worse than all of them.
fn rank(status: ExitStatus) -> u8 {
    match status {
        ExitStatus::Success => 0,
        ExitStatus::Environment => 1,
        ExitStatus::TimedOut => 2,
        ExitStatus::VerificationFailed => 3,
        ExitStatus::BadInput => 4,
        ExitStatus::Interrupted => 5,
    }
}

/// The worst of the clusters' exit codes (0 for none).
pub fn worst_exit(statuses: impl IntoIterator<Item = ExitStatus>) -> ExitStatus {
    statuses
        .into_iter()
        .max_by_key(|s| rank(*s))
        .unwrap_or(ExitStatus::Success)
}

fn outcome_rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::NoModules => 0,
        Outcome::Success => 1,
        Outcome::InProgress => 2,
        Outcome::Unknown => 3,
        Outcome::TimedOut => 4,
        Outcome::Failure => 5,
        Outcome::Invalid => 6,
    }
}

impl<D: Serialize + Tabular> Fleet<D> {
    pub fn new(clusters: Vec<ClusterEntry<D>>) -> Self {
        let mut summary = FleetSummary {
            clusters: clusters.len(),
            ..Default::default()
        };
        for c in &clusters {
            *match c.result {
                Outcome::Success => &mut summary.success,
                Outcome::Failure => &mut summary.failure,
                Outcome::Unknown => &mut summary.unknown,
                Outcome::Invalid => &mut summary.invalid,
                Outcome::TimedOut => &mut summary.timed_out,
                Outcome::NoModules => &mut summary.no_modules,
                Outcome::InProgress => &mut summary.in_progress,
            } += 1;
        }
        let result = clusters
            .iter()
            .map(|c| c.result)
            .max_by_key(|o| outcome_rank(*o))
            .unwrap_or(Outcome::NoModules);
        Fleet {
            result,
            summary,
            notes: Vec::new(),
            clusters,
        }
    }

    /// The worst exit code over the clusters.
    pub fn exit(&self) -> ExitStatus {
        worst_exit(self.clusters.iter().map(|c| c.exit))
    }

    pub fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Json => to_json(self),
            ReportFormat::Yaml => to_yaml(self),
            ReportFormat::Wide => self.table(true),
            ReportFormat::Table | ReportFormat::Name => self.table(false),
        }
    }

    /// CLUSTER and the single-cluster columns; a cluster that could not be checked is one row
    /// that says why. Then each cluster's summary, and the fleet's.
    fn table(&self, wide: bool) -> String {
        // A cluster without a document takes one row: its result and why, in the last two
        // columns.
        let header = self
            .clusters
            .iter()
            .find_map(|c| c.report.as_ref())
            .map(|r| r.header(wide))
            .unwrap_or_else(|| vec!["RESULT".into(), "REASON".into()]);
        let width = header.len();
        // With --cgu, the batch each cluster goes in.
        let batched = self.clusters.iter().any(|c| c.batch.is_some());
        let first = |c: &ClusterEntry<D>| {
            let mut cells = vec![c.context.clone()];
            if batched {
                cells.push(c.batch.map_or("-".into(), |b| b.to_string()));
            }
            cells
        };
        let mut rows = vec![first_header(batched).into_iter().chain(header).collect()];
        for c in &self.clusters {
            match (&c.report, &c.error) {
                (Some(report), _) => {
                    let cells = report.rows(wide);
                    if cells.is_empty() {
                        let mut cells = first(c);
                        cells.extend(std::iter::repeat_n(
                            "-".to_string(),
                            width.saturating_sub(2),
                        ));
                        cells.push(format!("{:?}", c.result));
                        cells.push("nothing to check".into());
                        rows.push(cells);
                    }
                    for cells in cells {
                        rows.push(first(c).into_iter().chain(cells).collect());
                    }
                }
                (None, error) => {
                    let mut cells = first(c);
                    cells.extend(std::iter::repeat_n(
                        "-".to_string(),
                        width.saturating_sub(2),
                    ));
                    cells.push(format!("{:?}", c.result));
                    cells.push(format!(
                        "not checked: {}",
                        error.as_deref().unwrap_or("no answer")
                    ));
                    rows.push(cells);
                }
            }
        }
        let mut lines = super::align(&rows, &|_, _, cell| cell);
        for c in &self.clusters {
            if let Some(report) = &c.report {
                lines.push(format!("{}: {}", c.context, report.summary_line()));
            }
        }
        lines.push(self.summary_line());
        lines.join("\n")
    }

    /// `3 clusters: 1 Success, 1 Failure, 1 Unknown`.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let counts: Vec<String> = [
            (s.success, "Success"),
            (s.no_modules, "NoModules"),
            (s.in_progress, "InProgress"),
            (s.failure, "Failure"),
            (s.invalid, "Invalid"),
            (s.timed_out, "TimedOut"),
            (s.unknown, "Unknown"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        format!(
            "{} {}: {}",
            s.clusters,
            if s.clusters == 1 {
                "cluster"
            } else {
                "clusters"
            },
            counts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_exit_code_wins_in_the_documented_order() {
        use ExitStatus::*;
        assert_eq!(worst_exit([Success, Environment]), Environment);
        assert_eq!(
            worst_exit([Environment, VerificationFailed]),
            VerificationFailed
        );
        assert_eq!(
            worst_exit([VerificationFailed, BadInput, Success]),
            BadInput
        );
        assert_eq!(worst_exit([TimedOut, Environment]), TimedOut);
        assert_eq!(worst_exit([]), Success);
    }
}
