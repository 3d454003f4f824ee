//! One exchange side by side: the request, primary, candidate and secondary with their differences marked.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::{endpoint_href, render, run_href};
use crate::analysis::decode::media_type;
use crate::analysis::diff::DiffKind;
use crate::analysis::structured;
use crate::paths::{self, link};
use crate::store::sample::{SampleDocument, StoredBody, StoredOutcome};
use crate::web::AdminState;
use crate::web::error::{PageError, WebError};
use crate::web::range::RangeChoice;
use crate::web::view::{self, DiffLine, Marks, millis, timestamp};

pub(crate) struct HeaderRow {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) marked: bool,
}

/// The request one upstream was sent instead of the caller's, its headers marked where they differ.
struct SentRow {
    target: String,
    uri: String,
    headers: Vec<HeaderRow>,
}

/// One upstream's response, ready to show.
pub(crate) struct Panel {
    pub(crate) title: &'static str,
    pub(crate) status: Option<String>,
    pub(crate) status_class: char,
    pub(crate) elapsed: String,
    pub(crate) error: Option<String>,
    pub(crate) headers: Vec<HeaderRow>,
    pub(crate) marked_headers: usize,
    /// A JSON body, rendered and escaped, with its differing places marked.
    pub(crate) json_html: Option<String>,
    pub(crate) text: Option<String>,
    pub(crate) note: Option<String>,
}

pub(crate) fn panel(
    title: &'static str,
    outcome: &StoredOutcome,
    marks: &Marks,
    header_marks: &[String],
) -> Panel {
    let headers: Vec<HeaderRow> = outcome
        .headers
        .iter()
        .map(|(name, value)| HeaderRow {
            marked: header_marks.iter().any(|marked| marked == name),
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    let (json_html, text, note) = match &outcome.body {
        Some(StoredBody::Text { text, .. }) if text.is_empty() => {
            (None, None, Some("no body".to_string()))
        }
        Some(StoredBody::Text {
            text,
            truncated: true,
        }) => (None, Some(text.clone()), Some(TRUNCATED.to_string())),
        Some(StoredBody::Text { text, .. }) => match serde_json::from_str::<Value>(text) {
            Ok(value) => (Some(view::json_html(&value, marks)), None, None),
            // XML, CSV and NDJSON shown as the trees they are compared as, their differences marked.
            Err(_) => match structured::as_value(&media_type_of(&outcome.headers), text) {
                Some(value) => (
                    Some(view::json_html(&value, marks)),
                    None,
                    Some("shown as the tree it is compared as".to_string()),
                ),
                None => (None, Some(text.clone()), None),
            },
        },
        Some(StoredBody::Base64 { data, truncated }) => (
            None,
            None,
            Some(format!(
                "binary body, {} bytes base64{}",
                data.len(),
                if *truncated { "; truncated" } else { "" }
            )),
        ),
        Some(StoredBody::TooLarge { limit }) => (
            None,
            None,
            Some(format!("body larger than {limit} bytes: not kept")),
        ),
        Some(StoredBody::OverBudget) => (
            None,
            None,
            Some("body not kept: holding it would have gone over --memory-budget".to_string()),
        ),
        Some(StoredBody::Sealed) => (None, None, Some("body encrypted".to_string())),
        None => (None, None, None),
    };
    Panel {
        title,
        status_class: outcome.status.map_or('x', |status| {
            status.to_string().chars().next().unwrap_or('x')
        }),
        status: outcome.status.map(|status| status.to_string()),
        elapsed: millis(outcome.elapsed_ms),
        error: outcome
            .error
            .as_ref()
            .map(|kind| match &outcome.error_detail {
                Some(detail) => format!("{kind} ({detail})"),
                None => kind.clone(),
            }),
        marked_headers: headers.iter().filter(|header| header.marked).count(),
        headers,
        json_html,
        text,
        note,
    }
}

/// The media type a stored side's headers declare (`text/csv` for `text/csv; charset=utf-8`).
fn media_type_of(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| media_type(value))
        .unwrap_or_default()
}

pub(crate) struct DifferenceRow {
    pub(crate) path: String,
    pub(crate) kind: String,
    pub(crate) compat: &'static str,
    pub(crate) primary: String,
    pub(crate) other: String,
    pub(crate) cancelled: bool,
    /// The place it counts at (indices as `*`) and its kind's stored name, for accepting it as intended.
    pub(crate) generalised: String,
    pub(crate) kind_name: &'static str,
}

#[derive(Template)]
#[template(path = "exchange.html")]
struct ExchangePage {
    id: String,
    run_label: String,
    run_href: String,
    endpoint_href: String,
    endpoint: String,
    method: String,
    uri: String,
    time: String,
    result: String,
    request_headers: Vec<HeaderRow>,
    /// What secondary or candidate was sent instead, when a rewrite changed it.
    sent: Vec<SentRow>,
    request_body: Option<String>,
    /// Said when only the beginning of the request body was kept.
    request_truncated: Option<&'static str>,
    differences: Vec<DifferenceRow>,
    /// Where "accept as intended" posts (the endpoint's rules).
    rule_href: String,
    noise: Vec<DifferenceRow>,
    primary: Panel,
    candidate: Panel,
    secondary: Panel,
    diff_lines: Vec<DiffLine>,
    /// A gRPC call's raw frames that were kept, to download.
    frames: Vec<FrameLink>,
    /// Why the values are not shown, for a sealed sample this process cannot open (`--sample-identity`).
    sealed: Option<String>,
}

/// A link to one side's raw gRPC frames.
struct FrameLink {
    side: String,
    href: String,
}

/// Body marks and header names for one side's differences (`missing` marks primary's side, `extra` the other).
pub(crate) fn marks_of<'a>(
    differences: impl Iterator<Item = &'a crate::analysis::diff::Difference>,
) -> (Marks, Marks, Vec<String>) {
    let (mut primary, mut other, mut headers) = (Marks::new(), Marks::new(), Vec::new());
    for difference in differences {
        if let Some(name) = difference.path.strip_prefix("header/") {
            headers.push(name.to_string());
        } else if let Some(pointer) = difference
            .path
            .strip_prefix("body")
            .filter(|p| p.is_empty() || p.starts_with('/'))
        {
            let class = view::mark_class(difference.kind);
            match difference.kind {
                DiffKind::Missing => {
                    primary.insert(pointer.to_string(), class);
                }
                DiffKind::Extra => {
                    other.insert(pointer.to_string(), class);
                }
                _ => {
                    primary.insert(pointer.to_string(), class);
                    other.insert(pointer.to_string(), class);
                }
            }
        }
    }
    (primary, other, headers)
}

pub(crate) fn difference_row(
    difference: &crate::analysis::diff::Difference,
    cancelled: bool,
) -> DifferenceRow {
    DifferenceRow {
        path: difference.path.clone(),
        kind: view::kind_label(difference.kind),
        compat: difference.compat.as_str(),
        primary: difference.primary.clone().unwrap_or_else(|| "–".into()),
        other: difference.other.clone().unwrap_or_else(|| "–".into()),
        cancelled,
        generalised: difference.generalised.clone(),
        kind_name: difference.kind.as_str(),
    }
}

pub async fn exchange_page(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Some(document) = state.reports.exchange(&id).await? else {
        return Err(WebError::NotFound(format!("exchange {id}")).into());
    };
    render(&exchange_view(document))
}

/// What a body cut to `--sample-body-limit` says on the exchange page.
const TRUNCATED: &str = "truncated: only the beginning of this body is kept (--sample-body-limit)";

/// The candidate's differences, and primary's and the candidate's panels with them marked.
pub(crate) fn side_by_side(document: &SampleDocument) -> (Vec<DifferenceRow>, Panel, Panel) {
    let (primary_marks, candidate_marks, candidate_headers) =
        marks_of(document.candidate_differences.iter().map(|d| &d.difference));
    (
        document
            .candidate_differences
            .iter()
            .map(|d| difference_row(&d.difference, d.cancelled))
            .collect(),
        panel(
            "Primary",
            &document.primary,
            &primary_marks,
            &candidate_headers,
        ),
        panel(
            "Candidate",
            &document.candidate,
            &candidate_marks,
            &candidate_headers,
        ),
    )
}

fn exchange_view(document: SampleDocument) -> ExchangePage {
    let (differences, primary, candidate) = side_by_side(&document);
    let (_, _, candidate_headers) =
        marks_of(document.candidate_differences.iter().map(|d| &d.difference));
    let (_, secondary_marks, secondary_headers) = marks_of(document.noise_differences.iter());
    let text_of = |outcome: &StoredOutcome| match &outcome.body {
        Some(StoredBody::Text { text, .. }) if serde_json::from_str::<Value>(text).is_err() => {
            Some(text.clone())
        }
        _ => None,
    };
    let diff_lines = match (text_of(&document.primary), text_of(&document.candidate)) {
        (Some(primary), Some(candidate)) if primary != candidate => {
            view::unified_diff(&primary, &candidate, "primary", "candidate")
        }
        _ => Vec::new(),
    };
    let request_body = match &document.request.body {
        StoredBody::Text { text, .. } if !text.is_empty() => Some(text.clone()),
        StoredBody::Base64 { data, .. } => Some(format!("(binary, base64) {data}")),
        _ => None,
    };
    let request_truncated = document.request.body.is_truncated().then_some(TRUNCATED);
    let mut primary_header_marks = candidate_headers.clone();
    primary_header_marks.extend(secondary_headers.iter().cloned());
    ExchangePage {
        run_href: run_href(&document.run, RangeChoice::All),
        endpoint_href: endpoint_href(&document.run, &document.endpoint, RangeChoice::All),
        run_label: document.run.clone(),
        endpoint: document.endpoint.clone(),
        method: document.request.method.clone(),
        uri: document.request.uri.clone(),
        time: timestamp(document.started_at_ms),
        result: document.result.replace('_', " "),
        sent: document
            .sent
            .iter()
            .map(|sent| SentRow {
                target: sent.target.clone(),
                uri: sent.uri.clone(),
                headers: sent
                    .headers
                    .iter()
                    .map(|(name, value)| HeaderRow {
                        marked: !document
                            .request
                            .headers
                            .iter()
                            .any(|(n, v)| n == name && v == value),
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            })
            .collect(),
        request_headers: document
            .request
            .headers
            .iter()
            .map(|(name, value)| HeaderRow {
                name: name.clone(),
                value: value.clone(),
                marked: false,
            })
            .collect(),
        request_body,
        request_truncated,
        differences,
        rule_href: link(paths::ENDPOINT_RULES, &[&document.run, &document.endpoint]),
        noise: document
            .noise_differences
            .iter()
            .map(|d| difference_row(d, false))
            .collect(),
        primary,
        candidate,
        secondary: panel(
            "Secondary",
            &document.secondary,
            &secondary_marks,
            &secondary_headers,
        ),
        diff_lines,
        frames: document
            .frames
            .iter()
            .map(|(side, _)| FrameLink {
                side: side.clone(),
                href: link(paths::EXCHANGE_FRAMES, &[&document.id, side]),
            })
            .collect(),
        sealed: document.unopened.clone(),
        id: document.id,
    }
}

/// One side's raw gRPC frames (`request`, `primary`, `secondary`, `candidate`), as they came, to download.
pub async fn exchange_frames(
    State(state): State<AdminState>,
    Path((id, side)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let Some(document) = state.reports.exchange(&id).await? else {
        return Err(WebError::NotFound(format!("exchange {id}")).into());
    };
    // The stored id and side name the file: what the request's path says is only matched against them.
    let kept = document
        .frames
        .iter()
        .find(|(kept, _)| *kept == side)
        .and_then(|(kept, data)| Some((kept.clone(), STANDARD.decode(data).ok()?)));
    let Some((side, frames)) = kept else {
        return Err(WebError::NotFound(format!("raw frames of {side} in exchange {id}")).into());
    };
    let disposition = format!("attachment; filename=\"{}-{side}.grpc\"", document.id);
    Ok((
        [
            (CONTENT_TYPE, "application/grpc".to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        frames,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(content_type: &str, body: &str) -> StoredOutcome {
        StoredOutcome {
            elapsed_ms: 1.0,
            status: Some(200),
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: Some(StoredBody::Text {
                text: body.to_string(),
                truncated: false,
            }),
            error: None,
            error_detail: None,
        }
    }

    #[test]
    fn a_csv_body_is_shown_as_its_rows_with_the_differing_cell_marked() {
        let marks = Marks::from([("/1/price".to_string(), "changed")]);
        let shown = panel(
            "candidate",
            &outcome("text/csv; charset=utf-8", "sku,price\nA1,1.20\nB2,3.75\n"),
            &marks,
            &[],
        );
        let html = shown.json_html.expect("shown as a tree");
        assert!(html.contains(r#"data-path="/1/price""#), "{html}");
        assert!(html.contains("&quot;B2&quot;"), "{html}");
        assert_eq!(shown.text, None);
    }

    #[test]
    fn a_body_of_no_structured_kind_or_that_does_not_read_stays_text() {
        for (content_type, body) in [("text/plain", "a,b\n1,2\n"), ("application/x-ndjson", "{")] {
            let shown = panel("primary", &outcome(content_type, body), &Marks::new(), &[]);
            assert_eq!(shown.json_html, None, "{content_type}");
            assert_eq!(shown.text.as_deref(), Some(body));
        }
    }
}
