//! An endpoint: its places as a field tree with counts and verdicts, latency charts, and the rules in force
//! (with the forms that add and remove them).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Controls, endpoint_href, rate_class, render, run_href};
use crate::analysis::aggregate::{AcceptedReport, PlaceVerdict, RuleEffect};
use crate::analysis::compat::Compat;
use crate::analysis::diff::DiffKind;
use crate::analysis::noise::Verdict;
use crate::analysis::rules::{ActionKind, RuleSpec};
use crate::encoding::percent_encode;
use crate::grpc::schema::Schemas;
use crate::paths::{self, link};
use crate::web::error::{PageError, WebError};
use crate::web::fragment::Fragment;
use crate::web::range::{RangeChoice, ViewQuery};
use crate::web::view::{self, count, millis, percent};
use crate::web::{AdminState, resolve_run};

/// A row of the field tree: a group (a path segment shared by the rows below it) or a place.
struct FieldRow {
    group: bool,
    depth: usize,
    label: String,
    path: String,
    kind: String,
    compat: Option<&'static str>,
    raw: String,
    noise: String,
    relative: String,
    absolute: String,
    rate: String,
    verdict: &'static str,
    verdict_label: &'static str,
    samples_href: String,
    can_rule: bool,
    /// A regression by the counts: it may be accepted as intended.
    can_accept: bool,
    kind_name: &'static str,
    note: Option<String>,
}

/// Places sorted by path, with a group row for each path segment the first time it appears.
fn field_rows(run: &str, endpoint: &str, places: &[PlaceVerdict]) -> Vec<FieldRow> {
    let mut places: Vec<&PlaceVerdict> = places.iter().collect();
    places.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
    let mut rows = Vec::new();
    let mut open: Vec<String> = Vec::new();
    for place in places {
        let segments: Vec<&str> = place.path.split('/').collect();
        let parents = &segments[..segments.len() - 1];
        let shared = open
            .iter()
            .zip(parents)
            .take_while(|(a, b)| a.as_str() == **b)
            .count();
        open.truncate(shared);
        for (depth, parent) in parents.iter().enumerate().skip(shared) {
            rows.push(FieldRow {
                group: true,
                depth: depth.min(12),
                label: (*parent).to_string(),
                path: segments[..=depth].join("/"),
                kind: String::new(),
                compat: None,
                raw: String::new(),
                noise: String::new(),
                relative: String::new(),
                absolute: String::new(),
                rate: String::new(),
                verdict: "",
                verdict_label: "",
                samples_href: String::new(),
                can_rule: false,
                can_accept: false,
                kind_name: "",
                note: None,
            });
            open.push((*parent).to_string());
        }
        let (verdict, verdict_label) = match (place.rule, place.verdict) {
            (Some(RuleEffect::Ignored), _) => ("ignored", "ignored (rule)"),
            (Some(RuleEffect::Noise), _) => ("noise", "noise (rule)"),
            (Some(RuleEffect::Accepted), _) => ("accepted", "accepted (rule)"),
            (None, Verdict::Regression) => ("regression", "regression"),
            (None, Verdict::Noise) => ("noise", "noise"),
        };
        rows.push(FieldRow {
            group: false,
            depth: parents.len().min(12),
            label: segments.last().copied().unwrap_or_default().to_string(),
            path: place.path.clone(),
            kind: view::kind_label(place.kind),
            compat: place.compat.map(|compat| compat.as_str()),
            raw: count(place.raw),
            noise: count(place.noise),
            relative: percent(place.relative),
            absolute: percent(place.absolute),
            rate: percent(place.rate),
            verdict,
            verdict_label,
            samples_href: format!(
                "{}?path={}&kind={}",
                link(paths::ENDPOINT_SAMPLES, &[run, endpoint]),
                percent_encode(&place.path, &[]),
                place.kind.as_str()
            ),
            can_rule: place.rule.is_none(),
            can_accept: place.rule.is_none()
                && place.verdict == Verdict::Regression
                && place.compat.is_some(),
            kind_name: place.kind.as_str(),
            note: place.note.clone(),
        });
    }
    rows
}

/// An intended change, listed apart from the field tree's regressions.
struct AcceptedRow {
    path: String,
    kind: String,
    compat: &'static str,
    rate: String,
    note: String,
    sample_href: Option<String>,
}

fn accepted_rows(run: &str, accepted: &[AcceptedReport]) -> Vec<AcceptedRow> {
    accepted
        .iter()
        .map(|accepted| (&accepted.place, accepted.note.clone()))
        .map(|(place, note)| AcceptedRow {
            path: place.path.clone(),
            kind: view::kind_label(place.kind),
            compat: place.compat.as_str(),
            rate: percent(place.rate),
            note: note.unwrap_or_default(),
            sample_href: place
                .sample
                .as_ref()
                .map(|id| link(paths::EXCHANGE, &[run, id])),
        })
        .collect()
}

struct EndpointSummary {
    requests: String,
    failing: String,
    diff_class: &'static str,
    noise: String,
    p99_primary: String,
    p99_secondary: String,
    p99_candidate: String,
    slow: bool,
}

#[derive(Template)]
#[template(path = "endpoint_live.html")]
struct EndpointLive {
    summary: EndpointSummary,
    rows: Vec<FieldRow>,
    accepted: Vec<AcceptedRow>,
    rule_href: String,
}

async fn endpoint_live_of(
    state: &AdminState,
    run: &str,
    endpoint: &str,
    query: &ViewQuery,
) -> Result<(EndpointLive, String), WebError> {
    let info = resolve_run(state, run).await?;
    let fields = state
        .reports
        .endpoint(&info, endpoint, query.range().time_range())
        .await?;
    let report = &fields.report;
    let latency = &report.latency;
    let live = EndpointLive {
        summary: EndpointSummary {
            requests: count(report.requests),
            failing: percent(report.diff_rate),
            diff_class: rate_class(report.diff_rate),
            noise: percent(report.noise_rate),
            p99_primary: millis(latency.primary.p99_ms),
            p99_secondary: millis(latency.secondary.p99_ms),
            p99_candidate: millis(latency.candidate.p99_ms),
            slow: report.latency_regression,
        },
        rows: field_rows(&info.label, endpoint, &fields.places),
        accepted: accepted_rows(&info.label, &report.accepted),
        rule_href: link(paths::ENDPOINT_RULES, &[&info.label, endpoint]),
    };
    Ok((live, info.label))
}

struct RuleRow {
    action: &'static str,
    path: String,
    endpoint: String,
    /// What an accept rule holds to, and the note.
    detail: String,
    delete_href: Option<String>,
}

/// `missing, breaking: renamed to full_name`.
fn rule_detail(spec: &RuleSpec) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(kind) = spec.kind {
        parts.push(kind.as_str().to_string());
    }
    if let Some(compat) = spec.compat {
        parts.push(compat.as_str().to_string());
    }
    let held = parts.join(", ");
    match (&spec.note, held.is_empty()) {
        (Some(note), true) => note.clone(),
        (Some(note), false) => format!("{held}: {note}"),
        (None, _) => held,
    }
}

#[derive(Template)]
#[template(path = "endpoint.html")]
struct EndpointPage {
    controls: Controls,
    run_label: String,
    run_href: String,
    endpoint: String,
    /// For a gRPC method: how it streams, as its schema says.
    call_kind: Option<String>,
    timeline_href: String,
    live_href: String,
    live: Fragment,
    hide_noise: bool,
    rules: Vec<RuleRow>,
    rules_toml_href: &'static str,
}

/// What a gRPC endpoint is (`gRPC pkg.Service/Method`): its method's streaming kind, or that no schema has it.
fn grpc_call_kind(schemas: &Schemas, endpoint: &str) -> Option<String> {
    let method = endpoint.strip_prefix("gRPC ")?;
    Some(match schemas.method(&format!("/{method}")) {
        Some(method) => format!(
            "gRPC method, {}: {} in, {} out",
            method.streaming(),
            method.input.full_name(),
            method.output.full_name()
        ),
        None if !schemas.were_given() => {
            "gRPC method, no schema given: its messages are compared by field number".to_string()
        }
        None => "gRPC method that no schema has: its bodies are not compared".to_string(),
    })
}

pub async fn endpoint_page(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, PageError> {
    let range = query.range();
    if let Some(selected) = query.run.as_deref().filter(|selected| *selected != run) {
        return Ok(Redirect::to(&endpoint_href(selected, &endpoint, range)).into_response());
    }
    let (live, label) = endpoint_live_of(&state, &run, &endpoint, &query).await?;
    let runs = state.reports.runs().await?;
    let mut rules: Vec<RuleRow> = state
        .reports
        .file_rules()
        .rules()
        .iter()
        .filter(|rule| rule.applies_to_endpoint(&endpoint))
        .map(|rule| RuleRow {
            action: rule.spec.action.as_str(),
            path: rule.spec.path.clone(),
            endpoint: rule.spec.endpoint.clone().unwrap_or_else(|| "*".into()),
            detail: rule_detail(&rule.spec),
            delete_href: None,
        })
        .collect();
    for stored in state.reports.stored_rules().await? {
        let applies = crate::analysis::rules::Rule::new(stored.spec.clone())
            .is_ok_and(|rule| rule.applies_to_endpoint(&endpoint));
        if applies {
            rules.push(RuleRow {
                action: stored.spec.action.as_str(),
                path: stored.spec.path.clone(),
                endpoint: stored.spec.endpoint.clone().unwrap_or_else(|| "*".into()),
                detail: rule_detail(&stored.spec),
                delete_href: Some(link(
                    paths::ENDPOINT_RULE_DELETE,
                    &[&label, &endpoint, &stored.id.to_string()],
                )),
            });
        }
    }
    let params = [label.as_str(), endpoint.as_str()];
    let call_kind = grpc_call_kind(&state.grpc, &endpoint);
    let page = EndpointPage {
        call_kind,
        controls: Controls::new(link(paths::ENDPOINT, &params), &runs, Some(&label), range),
        run_href: run_href(&label, range),
        timeline_href: format!(
            "{}?range={}",
            link(paths::API_TIMELINE, &params),
            range.as_str()
        ),
        live_href: format!(
            "{}?range={}",
            link(paths::ENDPOINT_LIVE, &params),
            range.as_str()
        ),
        live: Fragment::render(&live)?,
        hide_noise: query.hides_noise(),
        endpoint,
        run_label: label,
        rules,
        rules_toml_href: paths::RULES_TOML,
    };
    render(&page)
}

pub async fn endpoint_live(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (live, _) = endpoint_live_of(&state, &run, &endpoint, &query).await?;
    Ok(Fragment::render(&live)?.respond(&headers))
}

#[derive(Deserialize)]
pub struct RuleForm {
    path: String,
    action: String,
    /// Accept only: the kind and class of the difference accepted, and why.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    compat: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// Marks a path as noise, ignored or accepted as intended (the difference of that kind and class, with a note)
/// for this endpoint, from the field tree: stored as a rule, in force at once.
pub async fn add_rule(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Form(form): Form<RuleForm>,
) -> Result<Redirect, PageError> {
    let bad = |what: String| PageError::from(WebError::BadRequest(what));
    let spec = match form.action.as_str() {
        "noise" => RuleSpec::new(Some(endpoint.clone()), form.path, ActionKind::Noise),
        "ignore" => RuleSpec::new(Some(endpoint.clone()), form.path, ActionKind::Ignore),
        "accept" => {
            let kind = match form.kind.as_deref().filter(|text| !text.is_empty()) {
                Some(text) => Some(
                    DiffKind::parse(text)
                        .ok_or_else(|| bad(format!("`{text}` is not a kind of difference")))?,
                ),
                None => None,
            };
            let compat = match form.compat.as_deref().filter(|text| !text.is_empty()) {
                Some(text) => Some(
                    Compat::parse(text)
                        .ok_or_else(|| bad(format!("`{text}` is not a compatibility class")))?,
                ),
                None => None,
            };
            RuleSpec::accept(Some(endpoint.clone()), form.path, kind, compat, form.note)
        }
        other => return Err(bad(format!("`{other}` cannot be set from the page"))),
    };
    let info = resolve_run(&state, &run).await?;
    state.edits.add_rule(&spec).await?;
    Ok(Redirect::to(&endpoint_href(
        &info.label,
        &endpoint,
        RangeChoice::All,
    )))
}

pub async fn delete_rule(
    State(state): State<AdminState>,
    Path((run, endpoint, id)): Path<(String, String, i64)>,
) -> Result<Redirect, PageError> {
    state.edits.delete_rule(id).await?;
    Ok(Redirect::to(&endpoint_href(
        &run,
        &endpoint,
        RangeChoice::All,
    )))
}
