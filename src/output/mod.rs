//! Everything the plugin writes to the terminal goes through here.

mod activity;
pub mod check;
pub mod dtk;
pub mod fleet;
pub mod preflight;
mod terminal;

use std::io::Write;
use std::sync::Arc;

use console::Style;
use serde::Serialize;

use crate::error::Error;
use crate::registry::{Notice, Notifier};

/// `-o` for commands whose default is human-readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people (also spelt `table`, as the other subcommands call it)
    #[value(alias = "table")]
    Text,
    Json,
    Yaml,
}

/// `-o` for commands whose default is a table (`preflight`, `status`, `check`), as kubectl
/// spells them. `check` has no objects to name and takes all but `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    /// The table with more columns
    Wide,
    Json,
    Yaml,
    /// The preflight objects' names, as `kubectl get -o name` prints them
    Name,
}

impl ReportFormat {
    /// A table for people (narrow or wide) rather than data for programs.
    pub fn is_table(self) -> bool {
        matches!(self, ReportFormat::Table | ReportFormat::Wide)
    }
}

/// Where and how to write: colour only on a terminal and never with `NO_COLOR`/`--no-color`.
#[derive(Debug, Clone)]
pub struct Term {
    pub verbose: u8,
    /// `--no-color` or `NO_COLOR`.
    pub no_color: bool,
    pub stdout_is_terminal: bool,
    pub stderr_is_terminal: bool,
    /// One cluster of a fleet: its messages start with its name, and its steps are its own
    /// (named in its deadline error, never shown as the spinner).
    cluster: Option<Arc<ClusterVoice>>,
}

#[derive(Debug)]
struct ClusterVoice {
    name: String,
    step: std::sync::Mutex<Option<String>>,
}

impl Term {
    pub fn new(verbose: u8, no_color: bool) -> Self {
        let no_color = no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let stdout_is_terminal = terminal::ansi_terminal(false);
        let stderr_is_terminal = terminal::ansi_terminal(true);
        Term {
            verbose,
            no_color,
            stdout_is_terminal,
            stderr_is_terminal,
            cluster: None,
        }
    }

    /// The voice of one cluster of a fleet: `name: ` before each message, steps kept apart.
    pub fn for_cluster(&self, name: &str) -> Term {
        Term {
            cluster: Some(Arc::new(ClusterVoice {
                name: name.to_string(),
                step: std::sync::Mutex::new(None),
            })),
            ..self.clone()
        }
    }

    /// This voice speaks for one cluster of a fleet.
    pub fn is_fleet_member(&self) -> bool {
        self.cluster.is_some()
    }

    /// The run's own voice, whichever cluster this one speaks for.
    pub fn fleet(&self) -> Term {
        Term {
            cluster: None,
            ..self.clone()
        }
    }

    /// `message`, said for the cluster this voice speaks for.
    fn voiced(&self, message: &str) -> String {
        match &self.cluster {
            Some(c) => format!("{}: {message}", c.name),
            None => message.to_string(),
        }
    }

    /// Colour for what goes to stdout (tables).
    pub fn stdout_color(&self) -> bool {
        !self.no_color && self.stdout_is_terminal
    }

    /// Colour for messages on stderr.
    fn style(&self, style: Style) -> Style {
        style.force_styling(!self.no_color && self.stderr_is_terminal)
    }

    fn stderr_line(&self, line: &str) {
        activity::clear_line();
        let mut err = std::io::stderr().lock();
        // Nothing sensible to do if stderr is gone.
        let _ = writeln!(err, "{line}");
    }

    pub fn error(&self, error: &Error) {
        self.error_line(&error.to_string());
        if let Some(hint) = error.hint() {
            let label = self.style(Style::new().cyan()).apply_to("hint:");
            self.stderr_line(&format!("  {label} {hint}"));
        }
    }

    /// An `error:` line on stderr (for one of several errors; `error` for the one that ends
    /// the run).
    pub fn error_line(&self, message: &str) {
        let label = self.style(Style::new().red().bold()).apply_to("error:");
        self.stderr_line(&format!("{label} {}", self.voiced(message)));
    }

    pub fn warn(&self, message: &str) {
        let label = self
            .style(Style::new().yellow().bold())
            .apply_to("warning:");
        self.stderr_line(&format!("{label} {}", self.voiced(message)));
    }

    /// Always shown, on stderr (stdout stays for the result).
    pub fn say(&self, message: &str) {
        let label = self.style(Style::new().cyan()).apply_to("note:");
        self.stderr_line(&format!("{label} {}", self.voiced(message)));
    }

    /// Shown with `-v`.
    pub fn info(&self, message: &str) {
        if self.verbose > 0 {
            let label = self.style(Style::new().dim()).apply_to("info:");
            self.stderr_line(&format!("{label} {}", self.voiced(message)));
        }
    }

    /// What the command waits for now: shown as a spinner on a terminal after a few seconds,
    /// named in a `--timeout` error, and said with `-v`.
    pub fn step(&self, what: impl Into<String>) {
        let what = what.into();
        self.info(&what);
        self.resume_step(what);
    }

    /// Back to a step said before (after a step inside it): shown again, not said again.
    pub fn resume_step(&self, what: String) {
        match &self.cluster {
            Some(c) => *c.step.lock().unwrap_or_else(|p| p.into_inner()) = Some(what),
            None => activity::set(Some(what), self.stderr_is_terminal),
        }
    }

    /// Nothing to wait for any more (or something else, the live table, shows progress).
    pub fn step_done(&self) {
        match &self.cluster {
            Some(c) => *c.step.lock().unwrap_or_else(|p| p.into_inner()) = None,
            None => activity::set(None, false),
        }
    }

    /// The step under way, for a `--timeout` error.
    pub fn current_step(&self) -> Option<String> {
        match &self.cluster {
            Some(c) => c.step.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => activity::current(),
        }
    }

    /// A notifier for core code: registry notices become `-v` lines.
    pub fn notifier(&self) -> Notifier {
        let term = self.clone();
        Arc::new(move |notice| term.notice(&notice))
    }

    fn notice(&self, notice: &Notice) {
        match notice {
            Notice::Credentials { repository, source } => {
                self.info(&format!("{repository}: credentials from {source}"))
            }
            Notice::Anonymous { repository } => {
                self.info(&format!("{repository}: anonymous access"))
            }
            Notice::Retrying {
                registry,
                attempt,
                reason,
            } => self.info(&format!("{registry}: retry {attempt} after: {reason}")),
            Notice::PlainHttp { registry } => self.info(&format!(
                "{registry}: no TLS, using plain HTTP (--insecure-registry)"
            )),
            Notice::SkippedAuthFile { detail } => {
                self.warn(&format!("ignoring unreadable auth file {detail}"))
            }
            Notice::Mirror {
                image,
                mirror,
                origin,
            } => self.info(&format!("{image}: answered by mirror {mirror} ({origin})")),
            Notice::LocationFailed { image, reason } => {
                self.info(&format!("{image}: trying the next location after {reason}"))
            }
        }
    }
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    // Our output types are plain data; serialisation cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_else(|e| format!("error: {e}\n"))
}

/// Write to stdout; a closed pipe (`| head`) is not an error worth reporting.
/// Several objects as kubectl prints them with `-o json|yaml`: a `v1` `List`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct List<'a, T: Serialize> {
    api_version: &'static str,
    items: &'a [T],
    kind: &'static str,
    metadata: ListMeta,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: &'static str,
}

impl<'a, T: Serialize> List<'a, T> {
    pub fn of(items: &'a [T]) -> Self {
        List {
            api_version: "v1",
            items,
            kind: "List",
            metadata: ListMeta {
                resource_version: "",
            },
        }
    }
}

/// Exactly `text` (control sequences of the live view), flushed.
pub fn write_stdout_raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Rows padded into columns (two spaces apart, no trailing blanks). `decorate(row, column, cell)`
/// may style a padded cell (colour codes do not count towards the width).
pub fn align(
    rows: &[Vec<String>],
    decorate: &dyn Fn(usize, usize, String) -> String,
) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| decorate(r, c, format!("{cell:<width$}", width = widths[c])))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200.0 MiB");
    }
}
