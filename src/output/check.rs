//! Rendering of `kubectl kmm check`: a table with a summary, or one JSON/YAML object.

use console::Style;
use serde::Serialize;

use super::fleet::Tabular;
use super::{ReportFormat, to_json, to_yaml};
use crate::cluster::clusterversion::Risk;
use crate::module::check::{Outcome, Row, Summary, Verdict};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub kernels: Vec<String>,
    pub release_image: Option<String>,
    pub dtk_image: Option<String>,
    /// The known risks of the release, when ClusterVersion offers it as a conditional update.
    pub risks: Vec<Risk>,
    /// Success, Failure, Unknown, Invalid, or NoModules (nothing was checked).
    pub result: Outcome,
    pub modules: Vec<Row>,
    pub summary: Summary,
}

impl CheckReport {
    pub fn new(
        kernels: Vec<String>,
        release_image: Option<String>,
        dtk_image: Option<String>,
        rows: &[Row],
    ) -> Self {
        CheckReport {
            kernels,
            release_image,
            dtk_image,
            risks: Vec::new(),
            result: Outcome::of(rows),
            modules: rows.to_vec(),
            summary: Summary::of(rows),
        }
    }

    /// What was decided before a deadline: `Failure` when a row failed, else `TimedOut`.
    pub fn cut_short(rows: &[Row]) -> Self {
        let mut kernels: Vec<String> = rows.iter().map(|r| r.kernel.clone()).collect();
        kernels.sort();
        kernels.dedup();
        let mut report = CheckReport::new(kernels, None, None, rows);
        if report.result != Outcome::Failure {
            report.result = Outcome::TimedOut;
        }
        report
    }

    /// `name` is not offered for `check` (cli::check_format); were it asked for, the table.
    pub fn render(&self, format: ReportFormat, color: bool) -> String {
        match format {
            ReportFormat::Json => to_json(self),
            ReportFormat::Yaml => to_yaml(self),
            ReportFormat::Wide => self.table(color, true),
            ReportFormat::Table | ReportFormat::Name => self.table(color, false),
        }
    }

    /// NAMESPACE, MODULE, KERNEL, (wide: IMAGE,) VERDICT, REASON.
    fn table(&self, color: bool, wide: bool) -> String {
        if self.modules.is_empty() {
            return match self.result {
                Outcome::TimedOut => "No Module was checked before the deadline.".into(),
                _ => "No KMM Module to check: nothing was checked.".into(),
            };
        }
        let header = self.header(wide);
        let verdict_column = header.len() - 2;
        let mut rows = vec![header];
        rows.extend(self.rows(wide));
        let style = |v: Verdict| match v {
            Verdict::Loads | Verdict::Ready | Verdict::WillBuild | Verdict::WillSign => {
                Style::new().green()
            }
            Verdict::Failed => Style::new().red().bold(),
            Verdict::Unknown | Verdict::Inconclusive => Style::new().yellow(),
        };
        let mut lines = super::align(&rows, &|r, c, cell| {
            if color && r > 0 && c == verdict_column {
                style(self.modules[r - 1].verdict)
                    .force_styling(true)
                    .apply_to(cell)
                    .to_string()
            } else {
                cell
            }
        });
        lines.push(self.summary_line());
        if self.result == Outcome::TimedOut {
            lines.push("The deadline passed before every Module was checked.".into());
        }
        lines.join("\n")
    }

    /// `3 Modules × 1 kernel: 1 Ready, 1 WillBuild, 1 Failed`.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let modules: std::collections::BTreeSet<(&str, &str)> = self
            .modules
            .iter()
            .map(|m| (m.namespace.as_str(), m.name.as_str()))
            .collect();
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let counts: Vec<String> = [
            (s.loads, "Loads"),
            (s.inconclusive, "Inconclusive"),
            (s.ready, "Ready"),
            (s.will_build, "WillBuild"),
            (s.will_sign, "WillSign"),
            (s.failed, "Failed"),
            (s.unknown, "Unknown"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
        format!(
            "{} × {}: {}",
            plural(modules.len(), "Module", "Modules"),
            plural(self.kernels.len(), "kernel", "kernels"),
            counts.join(", ")
        )
    }
}

impl Tabular for CheckReport {
    fn header(&self, wide: bool) -> Vec<String> {
        let mut header = vec!["NAMESPACE", "MODULE", "KERNEL"];
        if wide {
            header.push("IMAGE");
        }
        header.extend(["VERDICT", "REASON"]);
        header.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        self.modules
            .iter()
            .map(|m| {
                let name = if m.day1 {
                    format!("{} (day-1)", m.name)
                } else {
                    m.name.clone()
                };
                let mut cells = vec![m.namespace.clone(), name, m.kernel.clone()];
                if wide {
                    cells.push(m.image.clone().unwrap_or_else(|| "-".into()));
                }
                cells.extend([m.verdict.to_string(), m.reason.clone()]);
                cells
            })
            .collect()
    }

    fn summary_line(&self) -> String {
        CheckReport::summary_line(self)
    }
}

/// Order of OpenShift versions: numeric parts, a release after its pre-releases
/// (`4.20.0-rc.2` < `4.20.0` < `4.20.1` < `4.20.10`).
pub fn version_key(version: &str) -> (Vec<u64>, bool, String) {
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let numbers = core.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    (numbers, pre.is_none(), pre.unwrap_or_default().to_string())
}

/// One release of `check --updates` (or several `--release`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseEntry {
    pub version: String,
    /// Risks of a conditional update.
    pub risks: Vec<Risk>,
    /// Every Module is Ready, WillBuild or WillSign for every kernel its nodes boot.
    pub safe: bool,
    pub kernels: Vec<String>,
    pub release_image: Option<String>,
    pub dtk_image: Option<String>,
    pub modules: Vec<Row>,
    pub summary: Summary,
    /// Why the release could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The release could not be read because it was named wrong (not found, not a payload).
    #[serde(skip)]
    pub bad_input: bool,
}

impl ReleaseEntry {
    pub fn checked(version: String, risks: Vec<Risk>, report: CheckReport) -> Self {
        ReleaseEntry {
            safe: report.modules.iter().all(|m| m.verdict.is_ok()),
            version,
            risks,
            kernels: report.kernels,
            release_image: report.release_image,
            dtk_image: report.dtk_image,
            modules: report.modules,
            summary: report.summary,
            error: None,
            bad_input: false,
        }
    }

    pub fn unresolved(version: String, risks: Vec<Risk>, error: &crate::error::Error) -> Self {
        ReleaseEntry {
            version,
            risks,
            safe: false,
            kernels: Vec::new(),
            release_image: None,
            dtk_image: None,
            modules: Vec::new(),
            summary: Summary::default(),
            error: Some(error.to_string()),
            bad_input: error.exit_status() == crate::error::ExitStatus::BadInput,
        }
    }

    /// Modules that are fine for every kernel of the release, of all Modules.
    fn ready_count(&self) -> (usize, usize) {
        let mut modules: std::collections::BTreeMap<(&str, &str), bool> = Default::default();
        for m in &self.modules {
            let ok = modules.entry((&m.namespace, &m.name)).or_insert(true);
            *ok &= m.verdict.is_ok();
        }
        (modules.values().filter(|ok| **ok).count(), modules.len())
    }
}

/// The releases, newest first, and the newest that every Module can take.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Matrix {
    pub releases: Vec<ReleaseEntry>,
    pub newest_safe: Option<String>,
}

impl Matrix {
    /// Success when the newest release is safe for every Module; otherwise what keeps it from
    /// being so (a refused Module, a failure, or what could not be checked).
    pub fn outcome(&self) -> Outcome {
        let rows: Vec<Row> = self
            .releases
            .iter()
            .flat_map(|r| r.modules.iter().cloned())
            .collect();
        if rows.iter().any(|r| r.invalid) || self.releases.iter().any(|r| r.bad_input) {
            Outcome::Invalid
        } else if self.newest_safe.is_some() {
            Outcome::Success
        } else if self.releases.iter().all(|r| r.summary.failed == 0) {
            Outcome::Unknown
        } else {
            Outcome::Failure
        }
    }

    pub fn new(mut releases: Vec<ReleaseEntry>) -> Self {
        releases.sort_by_key(|r| std::cmp::Reverse(version_key(&r.version)));
        let newest_safe = releases.iter().find(|r| r.safe).map(|r| r.version.clone());
        Matrix {
            releases,
            newest_safe,
        }
    }

    pub fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Json => to_json(self),
            ReportFormat::Yaml => to_yaml(self),
            ReportFormat::Wide => self.table(true),
            ReportFormat::Table | ReportFormat::Name => self.table(false),
        }
    }

    /// VERSION, KERNELS, RISKS, READY, FAILED (wide: and the release image).
    fn table(&self, wide: bool) -> String {
        let mut rows = vec![self.header(wide)];
        rows.extend(self.rows(wide));
        let mut lines = super::align(&rows, &|_, _, cell| cell);
        lines.push(match &self.newest_safe {
            Some(v) => format!("Newest release safe for every Module: {v}"),
            None => "No listed release is safe for every Module.".into(),
        });
        lines.join("\n")
    }
}

impl Tabular for Matrix {
    fn header(&self, wide: bool) -> Vec<String> {
        let mut header = vec!["VERSION", "KERNELS", "RISKS", "READY", "FAILED"];
        if wide {
            header.push("RELEASE IMAGE");
        }
        header.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = Vec::new();
        for r in &self.releases {
            let (ready, all) = r.ready_count();
            let failed: Vec<String> = {
                let mut names: Vec<String> = r
                    .modules
                    .iter()
                    .filter(|m| !m.verdict.is_ok())
                    .map(|m| format!("{}/{} ({})", m.namespace, m.name, m.verdict))
                    .collect();
                names.dedup();
                names
            };
            rows.push(vec![
                r.version.clone(),
                if r.kernels.is_empty() {
                    "-".into()
                } else {
                    r.kernels.join(", ")
                },
                if r.risks.is_empty() {
                    "-".into()
                } else if wide {
                    let detail: Vec<String> = r
                        .risks
                        .iter()
                        .map(|k| format!("{}: {} ({})", k.name, k.message, k.url))
                        .collect();
                    detail.join("; ")
                } else {
                    let names: Vec<&str> = r.risks.iter().map(|k| k.name.as_str()).collect();
                    names.join(", ")
                },
                match &r.error {
                    Some(_) => "-".into(),
                    None => format!("{ready}/{all}"),
                },
                match &r.error {
                    Some(e) => format!("not checked: {e}"),
                    None if failed.is_empty() => "-".into(),
                    None => failed.join(", "),
                },
            ]);
            if wide && let Some(row) = rows.last_mut() {
                row.push(r.release_image.clone().unwrap_or_else(|| "-".into()));
            }
        }
        rows
    }

    fn summary_line(&self) -> String {
        match &self.newest_safe {
            Some(v) => format!("newest release safe for every Module: {v}"),
            None => "no listed release is safe for every Module".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, verdict: Verdict, reason: &str) -> Row {
        Row {
            namespace: "nic".into(),
            name: name.into(),
            kernel: "5.14.0-570.el9.x86_64".into(),
            image: Some(format!("q.io/v/{name}:1")),
            verdict,
            reason: reason.into(),
            invalid: false,
            waits_forever: false,
            deep: None,
            dtk_kernel: None,
            boot: None,
            day1: false,
        }
    }

    #[test]
    fn table_and_json_keys() {
        let report = CheckReport::new(
            vec!["5.14.0-570.el9.x86_64".into()],
            None,
            None,
            &[
                row("mlx5", Verdict::Ready, "mlx5_core: extra/mlx5_core.ko"),
                row(
                    "ice",
                    Verdict::Failed,
                    "no /opt/lib/modules/5.14.0-570.el9.x86_64/ in q.io/v/ice:1",
                ),
            ],
        );
        let table = report.render(ReportFormat::Table, false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  MODULE  KERNEL"), "{table}");
        assert!(
            lines[2].contains("Failed   no /opt/lib/modules/"),
            "{table}"
        );
        assert_eq!(lines[3], "2 Modules × 1 kernel: 1 Ready, 1 Failed");
        assert!(!table.contains("q.io/v/ice:1  "), "{table}");
        let wide = report.render(ReportFormat::Wide, false);
        assert!(
            wide.lines()
                .next()
                .unwrap_or_default()
                .contains("KERNEL                 IMAGE"),
            "{wide}"
        );
        assert!(wide.contains("q.io/v/ice:1   Failed"), "{wide}");
        let json: serde_json::Value =
            serde_json::from_str(&report.render(ReportFormat::Json, false)).unwrap();
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "dtkImage",
                "kernels",
                "modules",
                "releaseImage",
                "result",
                "risks",
                "summary"
            ]
        );
        assert_eq!(json["modules"][1]["verdict"], "Failed");
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["summary"]["willBuild"], 0);
    }

    #[test]
    fn the_matrix_puts_the_newest_first_and_names_the_newest_safe() {
        let report = |rows: Vec<Row>| {
            CheckReport::new(
                vec!["5.14.0-570.el9.x86_64".into()],
                Some("r@sha256:1".into()),
                None,
                &rows,
            )
        };
        let matrix = Matrix::new(vec![
            ReleaseEntry::checked(
                "4.19.9".into(),
                vec![],
                report(vec![row("mlx5", Verdict::Ready, "")]),
            ),
            ReleaseEntry::checked(
                "4.19.10".into(),
                vec![Risk {
                    name: "SomeRisk".into(),
                    message: "it may break".into(),
                    url: "https://example.com/r".into(),
                }],
                report(vec![row("mlx5", Verdict::Failed, "x")]),
            ),
            ReleaseEntry::checked(
                "4.20.0-rc.1".into(),
                vec![],
                report(vec![row("mlx5", Verdict::Unknown, "")]),
            ),
        ]);
        let versions: Vec<&str> = matrix.releases.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(versions, ["4.20.0-rc.1", "4.19.10", "4.19.9"]);
        assert_eq!(matrix.newest_safe.as_deref(), Some("4.19.9"));
        let table = matrix.render(ReportFormat::Table);
        assert!(
            table
                .contains("4.19.10      5.14.0-570.el9.x86_64  SomeRisk  0/1    nic/mlx5 (Failed)"),
            "{table}"
        );
        assert!(table.ends_with("Newest release safe for every Module: 4.19.9"));
        assert!(version_key("4.20.0-rc.2") < version_key("4.20.0"));
    }
}
