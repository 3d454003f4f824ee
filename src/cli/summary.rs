//! A run's report as a plain-text table, for the end of `replay` and `demo`.

use std::fmt::Write as _;

use crate::analysis::kind::kind_label;
use crate::report::RunReport;
use crate::units::{count, p99_pair, percent};

/// One line of totals, then one row per endpoint (most failing first).
pub fn table(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {}: {} compared requests, diff rate {}, noise rate {}",
        report.run.label,
        count(report.requests),
        percent(report.diff_rate),
        percent(report.noise_rate)
    );
    if report.endpoints.is_empty() {
        return out;
    }
    let mut rows = vec![[
        "ENDPOINT".to_string(),
        "REQUESTS".to_string(),
        "DIFF RATE".to_string(),
        "NOISE".to_string(),
        "P99 PRIMARY / CANDIDATE".to_string(),
        "TOP REGRESSION".to_string(),
    ]];
    for endpoint in &report.endpoints {
        let p99 = p99_pair(
            endpoint.latency.primary.p99_ms,
            endpoint.latency.candidate.p99_ms,
            " / ",
            endpoint.latency_regression.then_some(" (slower)"),
        );
        let top = endpoint.regressions.first().map_or_else(
            || "-".to_string(),
            |r| format!("{} {} ({})", r.path, kind_label(r.kind), r.compat.as_str()),
        );
        rows.push([
            endpoint.endpoint.clone(),
            count(endpoint.requests),
            percent(endpoint.diff_rate),
            percent(endpoint.noise_rate),
            p99,
            top,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let pad = widths[column] - cell.chars().count();
            // Numbers align right, text left; the last column is not padded.
            if (1..=3).contains(&column) {
                let _ = write!(line, "{}{cell}  ", " ".repeat(pad));
            } else if column == 5 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
