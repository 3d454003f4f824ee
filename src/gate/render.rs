//! The gate's verdict written out: text for a CI log, JSON for scripts, JUnit XML for test reports, Markdown for
//! a pull-request comment.

use std::fmt::Write as _;

use super::{FailOn, Failure, GateEndpoint, GateReport, changes};
use crate::analysis::aggregate::{AcceptedReport, RegressionReport};
use crate::analysis::kind::kind_label;
use crate::encoding::{Markup, escape};
use crate::report::change_text::{how, summary};
use crate::units::{count, millis, p99_pair, percent};

/// How the gate prints its verdict.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GateFormat {
    /// Lines for a terminal or a CI log.
    Text,
    /// One JSON object (stable; see the README).
    Json,
    /// JUnit XML, one test case per endpoint, for CI test reports.
    Junit,
    /// A Markdown table, fit for a pull-request comment.
    Markdown,
}

/// The report in the chosen format, ending with a newline.
pub fn render(report: &GateReport, format: GateFormat) -> String {
    match format {
        GateFormat::Text => text(report),
        GateFormat::Json => {
            // Plain data always serializes.
            let mut out = serde_json::to_string_pretty(report).unwrap_or_default();
            out.push('\n');
            out
        }
        GateFormat::Junit => junit(report),
        GateFormat::Markdown => markdown(report),
    }
}

/// What the gate says when requests carried redacted values instead of credentials.
fn redacted_warning(report: &GateReport) -> Option<String> {
    (report.redacted_requests > 0).then(|| {
        format!(
            "{} requests carried redacted values instead of credentials (replayed from a redacted recording?): \
             upstreams likely refused them; replay with --header to set real ones",
            count(report.redacted_requests)
        )
    })
}

/// What the gate says when the run had no secondary.
pub fn baseline_note(report: &GateReport) -> Option<&'static str> {
    report.baseline.map(|_| {
        "noise baseline: primary asked twice (no --secondary): noise that differs between instances (caches, \
         per-instance state) is not seen, and methods that are not safe had no baseline"
    })
}

/// A failure in one line.
pub fn describe(failure: &Failure) -> String {
    match failure {
        Failure::TooFewRequests { requests, min } => format!(
            "only {} compared requests, fewer than --min-requests {min}: too little evidence",
            count(*requests)
        ),
        Failure::DiffRate { rate, max } => {
            format!("diff rate {} is over {}", percent(*rate), percent(*max))
        }
        Failure::EndpointDiffRate {
            endpoint,
            rate,
            max,
        } => format!(
            "{endpoint}: diff rate {} is over {}",
            percent(*rate),
            percent(*max)
        ),
        Failure::Latency {
            endpoint,
            primary_p99_ms,
            candidate_p99_ms,
        } => format!(
            "{endpoint}: candidate p99 {} vs primary {} (latency regression)",
            millis(*candidate_p99_ms),
            millis(*primary_p99_ms)
        ),
    }
}

fn counting(report: &GateReport) -> &'static str {
    match report.settings.fail_on {
        FailOn::Any => "every regression counts",
        FailOn::Breaking => "only breaking regressions count",
    }
}

fn regression_line(regression: &RegressionReport) -> String {
    format!(
        "{} {} ({}): {} of requests (raw {}, noise {}){}",
        regression.path,
        kind_label(regression.kind),
        regression.compat.as_str(),
        percent(regression.rate),
        regression.raw,
        regression.noise,
        regression
            .sample
            .as_deref()
            .map(|id| format!(", sample {id}"))
            .unwrap_or_default()
    )
}

fn accepted_line(accepted: &AcceptedReport) -> String {
    format!(
        "accepted: {}{}",
        regression_line(&accepted.place),
        accepted
            .note
            .as_deref()
            .map(|note| format!(" — {}", one_line(note)))
            .unwrap_or_default()
    )
}

/// A note on one line: a newline in it must not look like another line of the report.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn status(endpoint: &GateEndpoint) -> &'static str {
    if endpoint.failed {
        "FAIL"
    } else if !endpoint.judged {
        "few"
    } else if endpoint.latency_regression {
        "slow"
    } else {
        "ok"
    }
}

fn text(report: &GateReport) -> String {
    let mut out = String::new();
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        out,
        "shadowdiff gate {verdict}: run {}, {} compared requests, diff rate {} (max {}; {})",
        report.run,
        count(report.requests),
        percent(report.diff_rate),
        percent(report.max_diff_rate),
        counting(report)
    );
    for failure in &report.failures {
        let _ = writeln!(out, "  ✗ {}", describe(failure));
    }
    if let Some(warning) = redacted_warning(report) {
        let _ = writeln!(out, "  ! {warning}");
    }
    if let Some(note) = baseline_note(report) {
        let _ = writeln!(out, "  ! {note}");
    }
    if !report.changes.is_empty() {
        let _ = writeln!(out, "changes, most failing requests first:");
        out.push_str(&changes::text_block(&report.changes));
        let _ = writeln!(out, "endpoints:");
    }
    for endpoint in &report.endpoints {
        let _ = writeln!(
            out,
            "{:<4}  {}  {} requests, diff rate {}, noise {}, p99 primary {} / candidate {}",
            status(endpoint),
            endpoint.endpoint,
            count(endpoint.requests),
            percent(endpoint.diff_rate),
            percent(endpoint.noise_rate),
            millis(endpoint.latency.primary.p99_ms),
            millis(endpoint.latency.candidate.p99_ms),
        );
        for regression in &endpoint.regressions {
            let _ = writeln!(out, "        {}", regression_line(regression));
        }
        for accepted in &endpoint.accepted {
            let _ = writeln!(out, "        {}", accepted_line(accepted));
        }
        if endpoint.latency_regression {
            let judged = if report.settings.latency {
                ""
            } else {
                " (reported only; --latency fails the gate on it)"
            };
            let _ = writeln!(
                out,
                "        latency regression: candidate p99 {} vs secondary {}{judged}",
                millis(endpoint.latency.candidate.p99_ms),
                millis(endpoint.latency.secondary.p99_ms),
            );
        }
        if !endpoint.judged {
            let _ = writeln!(
                out,
                "        fewer than --min-requests {}: counted in the total, not judged alone",
                report.settings.min_requests
            );
        }
    }
    if report.endpoints.is_empty() {
        let _ = writeln!(out, "(no endpoints in this run match)");
    }
    out
}

/// XML-escapes text for attributes and element content.
fn xml(text: &str) -> String {
    escape(text, Markup::Xml)
}

fn junit(report: &GateReport) -> String {
    let run_failures: Vec<&Failure> = report
        .failures
        .iter()
        .filter(|f| matches!(f, Failure::TooFewRequests { .. } | Failure::DiffRate { .. }))
        .collect();
    let tests = report.endpoints.len() + 1;
    let failures = report.endpoints.iter().filter(|e| e.failed).count()
        + usize::from(!run_failures.is_empty());
    let suite = xml(&format!("shadowdiff run {}", report.run));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"shadowdiff\" tests=\"{tests}\" failures=\"{failures}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\">"
    );
    let classname = xml(&format!("shadowdiff.{}", report.run));
    let _ = write!(
        out,
        "    <testcase classname=\"{classname}\" name=\"{}\"",
        xml(&format!(
            "whole run: {} requests, diff rate {}",
            report.requests,
            percent(report.diff_rate)
        ))
    );
    let changed = (!report.changes.is_empty()).then(|| {
        format!(
            "changes, most failing requests first:\n{}",
            changes::text_block(&report.changes)
        )
    });
    let warning = match (redacted_warning(report), changed) {
        (Some(warning), Some(changed)) => Some(format!("{warning}\n{changed}")),
        (warning, changed) => warning.or(changed),
    };
    if warning.is_none() && run_failures.is_empty() {
        out.push_str("/>\n");
    } else {
        out.push('>');
        if let Some(warning) = &warning {
            let _ = write!(out, "\n      <system-out>{}</system-out>", xml(warning));
        }
        if !run_failures.is_empty() {
            let message: Vec<String> = run_failures.iter().map(|f| describe(f)).collect();
            let _ = write!(
                out,
                "\n      <failure message=\"{}\" type=\"gate\"/>",
                xml(&message.join("; "))
            );
        }
        out.push_str("\n    </testcase>\n");
    }
    for endpoint in &report.endpoints {
        let _ = write!(
            out,
            "    <testcase classname=\"{classname}\" name=\"{}\"",
            xml(&endpoint.endpoint)
        );
        let reasons: Vec<String> = report
            .failures
            .iter()
            .filter(|f| match f {
                Failure::EndpointDiffRate { endpoint: e, .. }
                | Failure::Latency { endpoint: e, .. } => *e == endpoint.endpoint,
                _ => false,
            })
            .map(describe)
            .collect();
        let accepted: Vec<String> = endpoint.accepted.iter().map(accepted_line).collect();
        let system_out = if accepted.is_empty() {
            String::new()
        } else {
            format!(
                "\n      <system-out>{}</system-out>",
                xml(&accepted.join("\n"))
            )
        };
        if endpoint.failed {
            let mut details = String::new();
            for regression in &endpoint.regressions {
                let _ = writeln!(details, "{}", regression_line(regression));
            }
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\" type=\"regression\">{}</failure>{system_out}\n    </testcase>",
                xml(&reasons.join("; ")),
                xml(&details)
            );
        } else if !endpoint.judged {
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>{system_out}\n    </testcase>",
                xml(&format!(
                    "{} requests, fewer than --min-requests {}",
                    endpoint.requests, report.settings.min_requests
                ))
            );
        } else if !system_out.is_empty() {
            let _ = writeln!(out, ">{system_out}\n    </testcase>");
        } else {
            out.push_str("/>\n");
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Text as inline code in a Markdown table cell: backticks long enough to hold any in the text, and `|` escaped
/// (GitHub splits cells on it even inside code).
fn code(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let padded = if text.starts_with('`') || text.ends_with('`') {
        format!(" {text} ")
    } else {
        text.to_string()
    };
    format!("{fence}{}{fence}", padded.replace('|', "\\|"))
}

fn markdown(report: &GateReport) -> String {
    let mut out = String::new();
    let (mark, verdict) = if report.passed {
        ("✅", "passed")
    } else {
        ("❌", "failed")
    };
    let _ = writeln!(
        out,
        "### {mark} shadowdiff gate {verdict}: diff rate {} of {} requests (max {})\n",
        percent(report.diff_rate),
        count(report.requests),
        percent(report.max_diff_rate)
    );
    let _ = writeln!(out, "Run {} · {}.\n", code(&report.run), counting(report));
    for failure in &report.failures {
        let _ = writeln!(out, "- {}", describe(failure).replace('|', "\\|"));
    }
    if let Some(warning) = redacted_warning(report) {
        let _ = writeln!(out, "- ⚠️ {warning}");
    }
    if !report.failures.is_empty() {
        out.push('\n');
    }
    markdown_changes(&mut out, report);
    out.push_str(
        "| | Endpoint | Requests | Diff rate | Noise | p99 primary → candidate | Regressions |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---|---|\n");
    for endpoint in &report.endpoints {
        let icon = match status(endpoint) {
            "FAIL" => "❌",
            "slow" => "🐢",
            "few" => "➖",
            _ => "✅",
        };
        let regressions: Vec<String> = endpoint
            .regressions
            .iter()
            .map(|r| {
                format!(
                    "{} {} ({}) {}{}",
                    code(&r.path),
                    kind_label(r.kind),
                    r.compat.as_str(),
                    percent(r.rate),
                    r.sample
                        .as_deref()
                        .map(|id| format!(", sample {}", code(id)))
                        .unwrap_or_default()
                )
            })
            .collect();
        let p99 = p99_pair(
            endpoint.latency.primary.p99_ms,
            endpoint.latency.candidate.p99_ms,
            " → ",
            endpoint.latency_regression.then_some(" **slower**"),
        );
        let _ = writeln!(
            out,
            "| {icon} | {} | {} | {} | {} | {p99} | {} |",
            code(&endpoint.endpoint),
            count(endpoint.requests),
            percent(endpoint.diff_rate),
            percent(endpoint.noise_rate),
            if regressions.is_empty() {
                "–".to_string()
            } else {
                regressions.join("<br>")
            }
        );
    }
    let accepted: Vec<(&str, &AcceptedReport)> = report
        .endpoints
        .iter()
        .flat_map(|e| e.accepted.iter().map(|a| (e.endpoint.as_str(), a)))
        .collect();
    if !accepted.is_empty() {
        out.push_str("\n**Accepted as intended** (not counted in the diff rate):\n\n");
        out.push_str("| Endpoint | Path | Kind | Rate | Note |\n|---|---|---|---:|---|\n");
        for (endpoint, accepted) in accepted {
            let place = &accepted.place;
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} |",
                code(endpoint),
                code(&place.path),
                kind_label(place.kind),
                place.compat.as_str(),
                percent(place.rate),
                accepted
                    .note
                    .as_deref()
                    .map(markdown_text)
                    .unwrap_or_default()
            );
        }
    }
    out
}

/// The changes as a numbered list, each with its places, what trails it and its predictors beneath.
fn markdown_changes(out: &mut String, report: &GateReport) {
    if report.changes.is_empty() {
        return;
    }
    out.push_str("**Changes**, most failing requests first:\n\n");
    let group_text = |group: &crate::report::changes::PlaceGroup| {
        format!("{} {}", code(&group.path), markdown_text(&how(group)))
    };
    for (index, change) in report.changes.iter().enumerate() {
        let named: Vec<String> = change.summary.iter().take(2).map(group_text).collect();
        let more = change.summary.len().saturating_sub(2);
        let place = match change.endpoints.as_slice() {
            [only] => code(only),
            many => format!("{} endpoints", many.len()),
        };
        let requests = if change.is_latency() {
            String::new()
        } else {
            format!(": {} failing requests", count(change.requests))
        };
        let _ = writeln!(
            out,
            "{}. **{}** {}{} on {place}{requests}",
            index + 1,
            change.compat.as_str(),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
        );
        for group in change.summary.iter().skip(2) {
            let _ = writeln!(
                out,
                "   - {} ({})",
                group_text(group),
                group.compat.as_str()
            );
        }
        for group in summary(&change.consequences) {
            let _ = writeln!(
                out,
                "   - trailing it: {} ({})",
                group_text(&group),
                group.compat.as_str()
            );
        }
        for predictor in &change.predictors {
            let _ = writeln!(
                out,
                "   - predictor: {}",
                markdown_text(&changes::predictor_line(predictor))
            );
        }
    }
    out.push('\n');
}

/// Free text (a rule's note) in a Markdown table cell: on one line, with Markdown and HTML markup escaped, so
/// that a note cannot add links, images or markup to a pull request comment.
fn markdown_text(text: &str) -> String {
    let mut out = String::new();
    for c in one_line(text).chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '['
                | ']'
                | '('
                | ')'
                | '<'
                | '>'
                | '|'
                | '#'
                | '!'
                | '&'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_in_markdown_cannot_add_markup() {
        assert_eq!(
            markdown_text("see [x](http://e) <img>\n| next"),
            "see \\[x\\]\\(http://e\\) \\<img\\> \\| next"
        );
    }

    #[test]
    fn code_spans_survive_backticks_and_pipes() {
        assert_eq!(code("GET /a"), "`GET /a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code("a|b"), "`a\\|b`");
    }

    #[test]
    fn xml_escapes_markup_and_control_characters() {
        assert_eq!(
            xml("<a href=\"x\">&'\u{1}</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\u{FFFD}&lt;/a&gt;"
        );
    }
}
