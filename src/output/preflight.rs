//! Rendering of `kubectl kmm preflight` and `status`: the live view, the verdict, the report.

use std::collections::HashMap;
use std::time::Duration;

use console::Style;
use serde::Serialize;
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

/// The table: NAMESPACE, MODULE, STATUS, CHECK (when the client check ran), ELAPSED (when
/// given) and REASON; `wide` adds KMM's STAGE and the client check's KERNEL and IMAGE. STATUS is
/// KMM's word, coloured as KMM means it; CHECK is coloured by the verdict of both together.
pub fn table(
    progress: &Progress,
    times: Option<&dyn Fn(&Row) -> Duration>,
    color: bool,
    wide: bool,
) -> Vec<String> {
    let rows: Vec<&Row> = progress.rows.iter().collect();
    table_of(progress, &rows, times, color, wide)
}

/// The table of some of `progress`'s rows, with the columns all of them need.
fn table_of(
    progress: &Progress,
    shown: &[&Row],
    times: Option<&dyn Fn(&Row) -> Duration>,
    color: bool,
    wide: bool,
) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Column {
        Cluster,
        Namespace,
        Module,
        Status,
        Stage,
        Check,
        Kernel,
        Image,
        Reason,
        Elapsed,
    }
    let checked = progress.rows.iter().any(|r| r.check.is_some());
    let mut columns = Vec::new();
    if progress.rows.iter().any(|r| !r.cluster.is_empty()) {
        columns.push(Column::Cluster);
    }
    columns.extend([Column::Namespace, Column::Module, Column::Status]);
    if wide {
        columns.push(Column::Stage);
    }
    if checked {
        columns.push(Column::Check);
        if wide {
            columns.extend([Column::Kernel, Column::Image]);
        }
    }
    // The reason last: the free text a narrow terminal cuts.
    if times.is_some() {
        columns.push(Column::Elapsed);
    }
    columns.push(Column::Reason);
    let title = |c: Column| match c {
        Column::Cluster => "CLUSTER",
        Column::Namespace => "NAMESPACE",
        Column::Module => "MODULE",
        Column::Status => "STATUS",
        Column::Stage => "STAGE",
        Column::Check => "CHECK",
        Column::Kernel => "KERNEL",
        Column::Image => "IMAGE",
        Column::Reason => "REASON",
        Column::Elapsed => "ELAPSED",
    };
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let cell = |row: &Row, c: Column| match c {
        Column::Cluster => row.cluster.clone(),
        Column::Namespace => row.namespace.clone(),
        Column::Module => row.name.clone(),
        Column::Status => status_text(row).to_string(),
        Column::Stage => dash(&row.stage),
        Column::Check => check_text(row).to_string(),
        Column::Kernel => row.check.as_ref().map_or("-".into(), |c| dash(&c.kernel)),
        Column::Image => row
            .check
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_else(|| "-".into()),
        Column::Reason => row.why.clone(),
        Column::Elapsed => times.map(|t| elapsed(t(row))).unwrap_or_default(),
    };
    let mut rows = vec![columns.iter().map(|c| title(*c).to_string()).collect()];
    rows.extend(
        shown
            .iter()
            .map(|row| columns.iter().map(|c| cell(row, *c)).collect::<Vec<_>>()),
    );
    super::align(&rows, &|r, c, text| {
        if !color || r == 0 {
            return text;
        }
        let row = shown[r - 1];
        let style = match columns.get(c) {
            Some(Column::Status) => style_for(crate::cluster::status::state_of(&row.status)),
            Some(Column::Check) => style_for(row.state),
            _ => return text,
        };
        style.force_styling(true).apply_to(text).to_string()
    })
}

/// A row's identity across frames: cluster (with several), namespace, name.
type RowKey = (String, String, String);

/// Which rows a screen of `room` table rows shows when not all fit: failed first, then the
/// unfinished, then the verified, each in the table's order. The rest is counted in one line.
fn fitting(progress: &Progress, room: usize) -> (Vec<&Row>, Option<String>) {
    if progress.rows.len() <= room {
        return (progress.rows.iter().collect(), None);
    }
    let room = room.saturating_sub(1);
    let rank = |row: &Row| match row.state {
        State::Failed => 0,
        State::InProgress | State::Pending | State::Unknown => 1,
        State::Verified => 2,
    };
    let mut ordered: Vec<&Row> = progress.rows.iter().collect();
    ordered.sort_by_key(|row| rank(row));
    let hidden = &ordered[room.min(ordered.len())..];
    let count = |state: State| hidden.iter().filter(|r| r.state == state).count();
    let verified = count(State::Verified);
    let more = if verified == hidden.len() {
        format!("… and {verified} more verified")
    } else {
        let parts: Vec<String> = [
            (State::Failed, "failed"),
            (State::InProgress, "in progress"),
            (State::Pending, "waiting for a status"),
            (State::Unknown, "not checked"),
            (State::Verified, "verified"),
        ]
        .iter()
        .filter(|(state, _)| count(*state) > 0)
        .map(|(state, word)| format!("{} {word}", count(*state)))
        .collect();
        format!("… and {} more: {}", hidden.len(), parts.join(", "))
    };
    (ordered[..room.min(ordered.len())].to_vec(), Some(more))
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
    /// JSON, YAML or the name at the end only (and, when stderr is a terminal, a progress line
    /// there).
    Quiet,
}

/// The live view while following.
pub struct Live {
    mode: Mode,
    color: bool,
    wide: bool,
    header: String,
    started: Instant,
    /// The lines of the frame on the screen, and the terminal's size (rows, columns) then.
    drawn: Vec<String>,
    size: (u16, u16),
    progress: Progress,
    /// When each Module reached its final state.
    done_at: HashMap<RowKey, Duration>,
    previous: HashMap<RowKey, (String, String, String, String)>,
    said_no_modules: bool,
    /// `-o json|yaml|name` with stderr on a terminal: one line of progress there.
    progress_line: bool,
    /// Keys typed while the table is drawn are not echoed into it.
    _echo: Option<super::terminal::EchoOff>,
}

impl Live {
    pub fn new(format: ReportFormat, term: &Term, header: String) -> Live {
        let mode = match format {
            ReportFormat::Json | ReportFormat::Yaml | ReportFormat::Name => Mode::Quiet,
            ReportFormat::Table | ReportFormat::Wide if term.stdout_is_terminal => Mode::Table,
            ReportFormat::Table | ReportFormat::Wide => Mode::Lines,
        };
        let live = Live {
            mode,
            color: term.stdout_color() && mode == Mode::Table,
            wide: format == ReportFormat::Wide,
            header,
            started: Instant::now(),
            drawn: Vec::new(),
            size: (0, 0),
            progress: Progress::default(),
            done_at: HashMap::new(),
            previous: HashMap::new(),
            said_no_modules: false,
            progress_line: mode == Mode::Quiet && term.stderr_is_terminal,
            _echo: (mode == Mode::Table)
                .then(super::terminal::EchoOff::stdin)
                .flatten(),
        };
        if mode == Mode::Lines {
            stdout(&live.header);
        }
        live
    }

    fn key(row: &Row) -> RowKey {
        (row.cluster.clone(), row.namespace.clone(), row.name.clone())
    }

    fn module_time(&self, row: &Row) -> Duration {
        self.done_at
            .get(&Self::key(row))
            .copied()
            .unwrap_or_else(|| self.started.elapsed())
    }

    /// The frame for a terminal of `rows` × `columns`: never taller than `rows - 1` (the cursor
    /// rests on the last line), so that going back up over it always reaches its top and nothing
    /// is pushed into the scrollback; lines cut to the width so none wraps.
    fn frame(&self, rows: usize, columns: usize) -> Vec<String> {
        let summary = format!(
            "{} ({})",
            summary(&self.progress),
            elapsed(self.started.elapsed())
        );
        let budget = rows.saturating_sub(1).max(1);
        // The header, the column titles and the summary around the Modules' rows.
        let room = budget.saturating_sub(3);
        let mut lines = Vec::with_capacity(budget);
        if room == 0 {
            lines.push(summary);
        } else {
            let (shown, more) = fitting(&self.progress, room);
            let times = |row: &Row| self.module_time(row);
            lines.push(self.header.clone());
            lines.extend(table_of(
                &self.progress,
                &shown,
                Some(&times),
                self.color,
                self.wide,
            ));
            lines.extend(more);
            lines.push(summary);
        }
        let width = columns.saturating_sub(1).max(20);
        lines
            .iter()
            .map(|line| console::truncate_str(line, width, "…").into_owned())
            .collect()
    }

    fn redraw(&mut self) {
        let (rows, columns) = self.term_size();
        let lines = self.frame(rows as usize, columns as usize);
        // Up over the frame on the screen. After a resize to fewer columns a terminal that
        // rewraps its lines shows each old line on as many rows as it now takes.
        let up: usize = if (rows, columns) == self.size {
            self.drawn.len()
        } else {
            let columns = usize::from(columns.max(1));
            let taken: usize = self
                .drawn
                .iter()
                .map(|line| console::measure_text_width(line).max(1).div_ceil(columns))
                .sum();
            taken.min(usize::from(rows).saturating_sub(1))
        };
        // Each line overwrites the old one and erases what is left of it; only below the new
        // frame is the rest of the screen erased. Erasing the screen from its top-left corner
        // (as `ESC [J` there would) makes tmux push the whole screen into its history, a copy
        // of the frame per redraw.
        let mut out = String::new();
        if up > 0 {
            out.push_str(&format!("\x1b[{up}A"));
        }
        out.push('\r');
        for line in &lines {
            out.push_str(line);
            out.push_str("\x1b[K\n");
        }
        out.push_str("\x1b[J");
        super::write_stdout_raw(&out);
        self.drawn = lines;
        self.size = (rows, columns);
    }

    fn term_size(&self) -> (u16, u16) {
        console::Term::stdout().size()
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
                        "[{}] {}{}/{} {}{stage}{check}{reason}",
                        elapsed(now),
                        if row.cluster.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", row.cluster)
                        },
                        row.namespace,
                        row.name,
                        status_text(row)
                    ));
                    self.previous.insert(Self::key(row), current);
                }
            }
        }
        self.progress = progress.clone();
        self.refresh();
    }

    /// The elapsed-time tick (and the moment a resize is noticed).
    pub fn tick(&mut self) {
        if !self.drawn.is_empty() || self.progress_line {
            self.refresh();
        }
    }

    fn refresh(&mut self) {
        match self.mode {
            Mode::Table => self.redraw(),
            Mode::Quiet if self.progress_line => super::activity::show(&format!(
                "{} ({})",
                summary(&self.progress),
                elapsed(self.started.elapsed())
            )),
            _ => {}
        }
    }

    /// A `-v` line while following: above the table, which is drawn again under it.
    pub fn notice(&mut self, term: &Term, text: &str) {
        if term.verbose == 0 {
            return;
        }
        if self.mode == Mode::Table && !self.drawn.is_empty() {
            // The notice takes the frame's first line; the frame is drawn again under it.
            super::write_stdout_raw(&format!("\x1b[{}A\r\x1b[2K", self.drawn.len()));
            self.drawn.clear();
            term.info(text);
            self.redraw();
        } else {
            term.info(text);
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.progress_line {
            super::activity::clear_line();
        }
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
    /// Success, Failure, TimedOut, Created (and InProgress, Interrupted for snapshots).
    pub result: String,
    pub modules: Vec<ReportModule>,
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

    /// The report as data, or None for the tables (drawn by the caller).
    pub fn render(&self, format: ReportFormat) -> Option<String> {
        match format {
            ReportFormat::Json => Some(to_json(self)),
            ReportFormat::Yaml => Some(to_yaml(self)),
            ReportFormat::Name => Some(self.object_name()),
            ReportFormat::Table | ReportFormat::Wide => None,
        }
    }

    /// `preflightvalidationocp.kmm.sigs.x-k8s.io/<name>`, as `kubectl get -o name` says it.
    pub fn object_name(&self) -> String {
        let group = self.api_version.split('/').next().unwrap_or_default();
        format!("{}.{group}/{}", self.kind.to_ascii_lowercase(), self.name)
    }
}

impl super::fleet::Tabular for Report {
    fn header(&self, _wide: bool) -> Vec<String> {
        ["NAMESPACE", "MODULE", "RESULT", "REASON"]
            .map(String::from)
            .to_vec()
    }

    /// Each Module: the verdict of both checks when the client check ran, else KMM's.
    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        self.modules
            .iter()
            .map(|m| {
                let result = match &m.result {
                    Some(state) => format!("{state:?}"),
                    None => m.verification_status.clone().unwrap_or_else(|| "-".into()),
                };
                let reason = m
                    .reason
                    .clone()
                    .or_else(|| m.status_reason.clone())
                    .unwrap_or_default();
                vec![m.namespace.clone(), m.name.clone(), result, reason]
            })
            .collect()
    }

    fn summary_line(&self) -> String {
        format!("{} {}: {}", self.kind, self.name, self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ns: &str, name: &str, state: State, status: &str, reason: &str) -> Row {
        Row {
            cluster: String::new(),
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
        let lines = table(&progress, None, false, false);
        assert_eq!(lines[0], "NAMESPACE     MODULE      STATUS      REASON");
        assert_eq!(
            lines[1],
            "gpu-operator  nvidia-gpu  Success     verified image exists"
        );
        assert_eq!(lines[3], "storage       nvme-of     (waiting)");
        let wide = table(&progress, None, false, true);
        assert_eq!(
            wide[0],
            "NAMESPACE     MODULE      STATUS      STAGE  REASON"
        );
        assert_eq!(wide[3], "storage       nvme-of     (waiting)   Image");
        assert_eq!(
            summary(&progress),
            "1 of 3 Modules: 1 verified, 0 failed, 1 in progress, 1 waiting for a status"
        );
        let colored = table(&progress, None, true, false);
        assert!(colored[1].contains("\u{1b}["), "{:?}", colored[1]);
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
        assert_eq!(summary(&Progress::default()), "no Modules");
    }

    #[test]
    fn a_frame_never_exceeds_the_terminal_and_puts_the_unfinished_first() {
        let mut rows: Vec<Row> = (0..40)
            .map(|i| row("ns", &format!("m{i:02}"), State::Verified, "Success", "ok"))
            .collect();
        rows[17] = row("ns", "m17", State::InProgress, "InProgress", "pulling");
        rows[30] = row("ns", "m30", State::Failed, "Failure", "no image");
        let term = Term::new(0, true);
        let mut live = Live::new(ReportFormat::Json, &term, "PreflightValidationOCP p".into());
        live.progress = Progress { rows };
        let frame = live.frame(10, 80);
        assert_eq!(frame.len(), 9, "{frame:#?}");
        assert!(frame[2].starts_with("ns         m30"), "{frame:#?}");
        assert!(frame[3].starts_with("ns         m17"), "{frame:#?}");
        assert_eq!(frame[7], "… and 35 more verified");
        assert!(
            frame[8].starts_with("39 of 40 Modules: 38 verified, 1 failed, 1 in progress"),
            "{frame:#?}"
        );
        // Everything fits: the table's own order, no summary of hidden rows.
        let frame = live.frame(50, 80);
        assert_eq!(frame.len(), 43);
        assert!(frame[2].starts_with("ns         m00"), "{frame:#?}");
        // Narrow: cut, never wrapped; tiny: the summary alone.
        assert!(
            live.frame(10, 30)
                .iter()
                .all(|l| console::measure_text_width(l) <= 29)
        );
        assert_eq!(live.frame(3, 80).len(), 1);
        // Hidden rows that are not all verified are counted by state.
        let (shown, more) = fitting(&live.progress, 2);
        assert_eq!(shown.len(), 1);
        assert_eq!(
            more.as_deref(),
            Some("… and 39 more: 1 in progress, 38 verified")
        );
    }

    #[test]
    fn a_fleet_frame_puts_the_cluster_first_and_its_failing_rows_on_top() {
        // 30 clusters of 3 Modules: one cluster has a failure, another is still checking.
        let mut rows = Vec::new();
        for c in 0..30 {
            for m in 0..3 {
                let mut r = row("ns", &format!("m{m}"), State::Verified, "Success", "ok");
                r.cluster = format!("site-{c:02}");
                rows.push(r);
            }
        }
        rows[22].state = State::Failed;
        rows[22].status = "Failure".into();
        rows[61].state = State::InProgress;
        rows[61].status = "InProgress".into();
        let term = Term::new(0, true);
        let mut live = Live::new(
            ReportFormat::Json,
            &term,
            "preflights on 30 clusters".into(),
        );
        live.progress = Progress { rows };
        let frame = live.frame(12, 100);
        assert_eq!(frame.len(), 11, "{frame:#?}");
        assert!(frame[1].starts_with("CLUSTER  NAMESPACE"), "{frame:#?}");
        assert!(frame[2].starts_with("site-07  ns         m1"), "{frame:#?}");
        assert!(frame[3].starts_with("site-20  ns         m1"), "{frame:#?}");
        assert_eq!(frame[9], "… and 83 more verified");
    }
}
