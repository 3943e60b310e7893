//! Rendering of `kubectl kmm check`: a table with a summary, or one JSON/YAML object.

use console::Style;
use serde::Serialize;

use super::{ReportFormat, to_json, to_yaml};
use crate::module::check::{Row, Summary, Verdict};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub kernels: Vec<String>,
    pub release_image: Option<String>,
    pub dtk_image: Option<String>,
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
            modules: rows.to_vec(),
            summary: Summary::of(rows),
        }
    }

    pub fn render(&self, format: ReportFormat, color: bool) -> String {
        match format {
            ReportFormat::Json => to_json(self),
            ReportFormat::Yaml => to_yaml(self),
            ReportFormat::Table => self.table(color),
        }
    }

    fn table(&self, color: bool) -> String {
        if self.modules.is_empty() {
            return "No KMM Modules to check.".into();
        }
        let mut rows = vec![
            [
                "NAMESPACE",
                "MODULE",
                "KERNEL",
                "IMAGE",
                "VERDICT",
                "REASON",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for m in &self.modules {
            rows.push(vec![
                m.namespace.clone(),
                m.name.clone(),
                m.kernel.clone(),
                m.image.clone().unwrap_or_else(|| "-".into()),
                m.verdict.to_string(),
                m.reason.clone(),
            ]);
        }
        let style = |v: Verdict| match v {
            Verdict::Ready | Verdict::WillBuild | Verdict::WillSign => Style::new().green(),
            Verdict::Failed => Style::new().red().bold(),
            Verdict::Unknown => Style::new().yellow(),
        };
        let mut lines = super::align(&rows, &|r, c, cell| {
            if color && r > 0 && c == 4 {
                style(self.modules[r - 1].verdict)
                    .force_styling(true)
                    .apply_to(cell)
                    .to_string()
            } else {
                cell
            }
        });
        lines.push(self.summary_line());
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
        let json: serde_json::Value =
            serde_json::from_str(&report.render(ReportFormat::Json, false)).unwrap();
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["dtkImage", "kernels", "modules", "releaseImage", "summary"]
        );
        assert_eq!(json["modules"][1]["verdict"], "Failed");
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["summary"]["willBuild"], 0);
    }
}
