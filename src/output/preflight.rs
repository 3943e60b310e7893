//! Rendering of `kubectl kmm preflight` and `status`: the live view, the verdict, the report.

use std::collections::HashMap;
use std::time::Duration;

use console::Style;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{ReportFormat, Term, stdout, to_json, to_yaml};
use crate::cluster::status::{ClientCheck, Progress, Row, State};

/// `12s`, `3m05s`, `1h02m`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn status_text(row: &Row) -> &str {
    if row.status.is_empty() {
        "(waiting)"
    } else {
        &row.status
    }
}

fn style_for(state: State) -> Style {
    match state {
        State::Verified => Style::new().green(),
        State::Failed => Style::new().red().bold(),
        State::InProgress | State::Unknown => Style::new().yellow(),
        State::Pending => Style::new().dim(),
    }
}

/// The CHECK cell: the client check's verdict, or `checking` while it runs again.
fn check_text(row: &Row) -> &str {
    row.check.as_ref().map_or("-", |c| c.verdict.as_str())
}

/// The table: NAMESPACE, MODULE, STATUS, STAGE, CHECK (when the client check ran), REASON and,
/// when given, ELAPSED. STATUS is KMM's word, coloured as KMM means it; CHECK is coloured by the
/// verdict of both together.
pub fn table(
    progress: &Progress,
    times: Option<&dyn Fn(&Row) -> Duration>,
    color: bool,
) -> Vec<String> {
    let checked = progress.rows.iter().any(|r| r.check.is_some());
    let mut header: Vec<String> = ["NAMESPACE", "MODULE", "STATUS", "STAGE"]
        .map(String::from)
        .to_vec();
    if checked {
        header.push("CHECK".into());
    }
    header.push("REASON".into());
    if times.is_some() {
        header.push("ELAPSED".into());
    }
    let mut rows = vec![header];
    for row in &progress.rows {
        let mut cells = vec![
            row.namespace.clone(),
            row.name.clone(),
            status_text(row).to_string(),
            row.stage.clone(),
        ];
        if checked {
            cells.push(check_text(row).to_string());
        }
        cells.push(row.why.clone());
        if let Some(t) = times {
            cells.push(elapsed(t(row)));
        }
        rows.push(cells);
    }
    super::align(&rows, &|r, c, cell| {
        if !color || r == 0 {
            return cell;
        }
        let row = &progress.rows[r - 1];
        let style = match c {
            2 => style_for(crate::cluster::status::state_of(&row.status)),
            4 if checked => style_for(row.state),
            _ => return cell,
        };
        style.force_styling(true).apply_to(cell).to_string()
    })
}

pub fn summary(progress: &Progress) -> String {
    if progress.rows.is_empty() {
        return "no Modules".into();
    }
    let mut parts = vec![
        format!("{} verified", progress.count(State::Verified)),
        format!("{} failed", progress.count(State::Failed)),
        format!("{} in progress", progress.count(State::InProgress)),
    ];
    let unknown = progress.count(State::Unknown);
    if unknown > 0 {
        parts.push(format!("{unknown} not checked"));
    }
    let pending = progress.count(State::Pending);
    if pending > 0 {
        parts.push(format!("{pending} waiting for a status"));
    }
    format!(
        "{} of {} Modules: {}",
        progress.rows.iter().filter(|r| r.state.is_done()).count(),
        progress.rows.len(),
        parts.join(", ")
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Redrawn in place (stdout is a terminal).
    Table,
    /// One line per change, no control characters.
    Lines,
    /// JSON or YAML at the end only.
    Quiet,
}

/// The live view while following.
pub struct Live {
    mode: Mode,
    color: bool,
    header: String,
    started: Instant,
    out: console::Term,
    drawn: usize,
    progress: Progress,
    /// When each Module reached its final state.
    done_at: HashMap<(String, String), Duration>,
    previous: HashMap<(String, String), (String, String, String, String)>,
    said_no_modules: bool,
}

impl Live {
    pub fn new(format: ReportFormat, term: &Term, header: String) -> Live {
        let mode = match format {
            ReportFormat::Json | ReportFormat::Yaml => Mode::Quiet,
            ReportFormat::Table if term.stdout_is_terminal => Mode::Table,
            ReportFormat::Table => Mode::Lines,
        };
        let live = Live {
            mode,
            color: term.stdout_color() && mode == Mode::Table,
            header,
            started: Instant::now(),
            out: console::Term::stdout(),
            drawn: 0,
            progress: Progress::default(),
            done_at: HashMap::new(),
            previous: HashMap::new(),
            said_no_modules: false,
        };
        if mode == Mode::Lines {
            stdout(&live.header);
        }
        live
    }

    fn key(row: &Row) -> (String, String) {
        (row.namespace.clone(), row.name.clone())
    }

    fn module_time(&self, row: &Row) -> Duration {
        self.done_at
            .get(&Self::key(row))
            .copied()
            .unwrap_or_else(|| self.started.elapsed())
    }

    fn redraw(&mut self) {
        let width = self.out.size().1 as usize;
        let mut lines = vec![self.header.clone()];
        let times = |row: &Row| self.module_time(row);
        lines.extend(table(&self.progress, Some(&times), self.color));
        lines.push(format!(
            "{} ({})",
            summary(&self.progress),
            elapsed(self.started.elapsed())
        ));
        let _ = self.out.clear_last_lines(self.drawn);
        for line in &lines {
            let _ = self
                .out
                .write_line(&console::truncate_str(line, width.max(20), "…"));
        }
        self.drawn = lines.len();
    }

    pub fn changed(&mut self, progress: &Progress) {
        let now = self.started.elapsed();
        for row in &progress.rows {
            if row.state.is_done() {
                self.done_at.entry(Self::key(row)).or_insert(now);
            } else {
                self.done_at.remove(&Self::key(row));
            }
        }
        if self.mode == Mode::Lines {
            if progress.rows.is_empty() && !self.said_no_modules {
                self.said_no_modules = true;
                stdout(&format!("[{}] no Modules in the cluster", elapsed(now)));
            }
            for row in &progress.rows {
                let current = (
                    row.status.clone(),
                    row.stage.clone(),
                    row.why.clone(),
                    check_text(row).to_string(),
                );
                if self.previous.get(&Self::key(row)) != Some(&current) {
                    let reason = if row.why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", row.why)
                    };
                    let stage = if row.stage.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", row.stage)
                    };
                    let check = match &row.check {
                        Some(c) => format!(", check {}", c.verdict),
                        None => String::new(),
                    };
                    stdout(&format!(
                        "[{}] {}/{} {}{stage}{check}{reason}",
                        elapsed(now),
                        row.namespace,
                        row.name,
                        status_text(row)
                    ));
                    self.previous.insert(Self::key(row), current);
                }
            }
        }
        self.progress = progress.clone();
        if self.mode == Mode::Table {
            self.redraw();
        }
    }

    pub fn tick(&mut self) {
        if self.mode == Mode::Table && self.drawn > 0 {
            self.redraw();
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }
}

/// One Module in the final report: KMM's word, and the client check's when it ran.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportModule {
    pub namespace: String,
    pub name: String,
    pub verification_status: Option<String>,
    pub verification_stage: Option<String>,
    pub status_reason: Option<String>,
    /// With the client check: the verdict of both together, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<ClientCheck>,
}

/// The one final object of `-o json|yaml`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub kernel_version: Option<String>,
    pub dtk_image: Option<String>,
    pub release_image: Option<String>,
    pub push_built_image: bool,
    /// Success, Failure, TimedOut, Created, DryRun (and InProgress, Interrupted for snapshots).
    pub result: String,
    pub modules: Vec<ReportModule>,
    /// With `--dry-run=client`: the object that would have been created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

impl Report {
    pub fn modules_from(progress: &Progress) -> Vec<ReportModule> {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        progress
            .rows
            .iter()
            .map(|r| ReportModule {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                verification_status: text(&r.status),
                verification_stage: text(&r.stage),
                status_reason: text(&r.reason),
                result: r.check.as_ref().map(|_| r.state),
                reason: r.check.as_ref().map(|_| r.why.clone()),
                check: r.check.clone(),
            })
            .collect()
    }

    pub fn render(&self, format: ReportFormat) -> Option<String> {
        match format {
            ReportFormat::Json => Some(to_json(self)),
            ReportFormat::Yaml => Some(to_yaml(self)),
            ReportFormat::Table => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ns: &str, name: &str, state: State, status: &str, reason: &str) -> Row {
        Row {
            namespace: ns.into(),
            name: name.into(),
            state,
            status: status.into(),
            stage: if state.is_done() {
                "Done".into()
            } else {
                "Image".into()
            },
            reason: reason.into(),
            why: reason.into(),
            check: None,
        }
    }

    #[test]
    fn table_and_summary() {
        let progress = Progress {
            rows: vec![
                row(
                    "gpu-operator",
                    "nvidia-gpu",
                    State::Verified,
                    "Success",
                    "verified image exists",
                ),
                row(
                    "nic",
                    "mlx5",
                    State::InProgress,
                    "InProgress",
                    "verification is not finished yet",
                ),
                row("storage", "nvme-of", State::Pending, "", ""),
            ],
        };
        let lines = table(&progress, None, false);
        assert_eq!(
            lines[0],
            "NAMESPACE     MODULE      STATUS      STAGE  REASON"
        );
        assert_eq!(
            lines[1],
            "gpu-operator  nvidia-gpu  Success     Done   verified image exists"
        );
        assert_eq!(lines[3], "storage       nvme-of     (waiting)   Image");
        assert_eq!(
            summary(&progress),
            "1 of 3 Modules: 1 verified, 0 failed, 1 in progress, 1 waiting for a status"
        );
        let colored = table(&progress, None, true);
        assert!(colored[1].contains("\u{1b}["), "{:?}", colored[1]);
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
        assert_eq!(summary(&Progress::default()), "no Modules");
    }
}
