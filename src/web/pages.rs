//! The report's pages (askama templates): overview, endpoint with its field tree and charts, samples and one
//! exchange side by side; live parts are fragments the script refreshes.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use crate::analysis::aggregate::{EndpointReport, PlaceVerdict, RuleEffect};
use crate::analysis::diff::DiffKind;
use crate::analysis::noise::Verdict;
use crate::analysis::rules::{ActionKind, RuleSpec};
use crate::clock::now_ms;
use crate::encoding::percent_encode;
use crate::endpoint::cluster::LearnedTemplate;
use crate::report::RunReport;
use crate::store::RunInfo;
use crate::store::sample::{SampleDocument, StoredBody, StoredOutcome};
use crate::web::error::{PageError, WebError};
use crate::web::fragment::Fragment;
use crate::web::range::{RangeChoice, ViewQuery};
use crate::web::view::{self, DiffLine, Marks, count, millis, percent, timestamp};
use crate::web::{AdminState, resolve_run};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(home))
        .route("/runs/{run}", get(overview))
        .route("/runs/{run}/live", get(overview_live))
        .route("/runs/{run}/clear", post(clear_run))
        .route("/runs/{run}/endpoints/{endpoint}", get(endpoint_page))
        .route("/runs/{run}/endpoints/{endpoint}/live", get(endpoint_live))
        .route(
            "/runs/{run}/endpoints/{endpoint}/samples",
            get(samples_page),
        )
        .route("/runs/{run}/endpoints/{endpoint}/rules", post(add_rule))
        .route(
            "/runs/{run}/endpoints/{endpoint}/rules/{id}/delete",
            post(delete_rule),
        )
        .route("/exchanges/{id}", get(exchange_page))
}

/// A path segment, percent-encoded (labels and endpoint names hold `/`, spaces and braces).
fn segment(text: &str) -> String {
    percent_encode(text, &[])
}

fn run_href(label: &str, range: RangeChoice) -> String {
    format!("/runs/{}?range={}", segment(label), range.as_str())
}

fn endpoint_href(label: &str, endpoint: &str, range: RangeChoice) -> String {
    format!(
        "/runs/{}/endpoints/{}?range={}",
        segment(label),
        segment(endpoint),
        range.as_str()
    )
}

/// The share a failing rate is shown as: fine, worrying, bad.
fn rate_class(rate: f64) -> &'static str {
    if rate == 0.0 {
        "ok"
    } else if rate < 0.01 {
        "warn"
    } else {
        "bad"
    }
}

struct RunOption {
    label: String,
    selected: bool,
}

struct RangeOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// The run and time-range selectors.
struct Controls {
    action: String,
    runs: Vec<RunOption>,
    ranges: Vec<RangeOption>,
}

impl Controls {
    fn new(action: String, runs: &[RunInfo], selected: Option<&str>, range: RangeChoice) -> Self {
        Self {
            action,
            runs: runs
                .iter()
                .map(|run| RunOption {
                    label: run.label.clone(),
                    selected: Some(run.label.as_str()) == selected,
                })
                .collect(),
            ranges: RangeChoice::ALL
                .iter()
                .map(|choice| RangeOption {
                    value: choice.as_str(),
                    label: choice.label(),
                    selected: *choice == range,
                })
                .collect(),
        }
    }
}

struct RunView {
    label: String,
    primary_url: String,
    secondary_url: String,
    candidate_url: String,
    started: String,
    last_seen: String,
    clear_href: String,
}

struct Summary {
    requests: String,
    diff_rate: String,
    diff_class: &'static str,
    noise_rate: String,
    endpoints: usize,
    regressing: usize,
    slow: usize,
}

struct EndpointRow {
    name: String,
    href: String,
    requests: String,
    failing: String,
    diff_class: &'static str,
    noise: String,
    p50_primary: String,
    p50_candidate: String,
    p99_primary: String,
    p99_candidate: String,
    slow: bool,
    top: Option<String>,
}

/// A learned endpoint template, its generalised segment apart so that the page can mark it.
struct TemplateRow {
    method: String,
    before: String,
    after: String,
}

impl TemplateRow {
    fn new(template: &LearnedTemplate) -> Self {
        let after = (template.segments as usize).saturating_sub(template.position() + 1);
        Self {
            method: template.method.clone(),
            before: format!("{}/", template.prefix),
            after: "/*".repeat(after),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "overview_live.html")]
struct OverviewLive {
    /// Why this instance cannot write the store, if it cannot.
    store_problem: Option<String>,
    summary: Summary,
    endpoints: Vec<EndpointRow>,
    templates: Vec<TemplateRow>,
}

/// What the banner says while this instance's writer cannot write the store.
fn store_problem(state: &AdminState) -> Option<String> {
    let problem = state.store_health.as_ref()?.problem()?;
    Some(format!(
        "The store cannot be written since {} ({}). Comparisons are kept in a bounded buffer and written when \
         it is back; past the buffer they are dropped and counted. Callers are not affected.",
        timestamp(problem.since_ms),
        problem.error
    ))
}

impl OverviewLive {
    fn new(
        report: &RunReport,
        range: RangeChoice,
        templates: &[LearnedTemplate],
        store_problem: Option<String>,
    ) -> Self {
        let summary = Summary {
            requests: count(report.requests),
            diff_rate: percent(report.diff_rate),
            diff_class: rate_class(report.diff_rate),
            noise_rate: percent(report.noise_rate),
            endpoints: report.endpoints.len(),
            regressing: report
                .endpoints
                .iter()
                .filter(|e| !e.regressions.is_empty())
                .count(),
            slow: report
                .endpoints
                .iter()
                .filter(|e| e.latency_regression)
                .count(),
        };
        let endpoints = report
            .endpoints
            .iter()
            .map(|endpoint| endpoint_row(&report.run.label, endpoint, range))
            .collect();
        Self {
            store_problem,
            summary,
            endpoints,
            templates: templates.iter().map(TemplateRow::new).collect(),
        }
    }
}

fn endpoint_row(run: &str, endpoint: &EndpointReport, range: RangeChoice) -> EndpointRow {
    let latency = &endpoint.latency;
    EndpointRow {
        name: endpoint.endpoint.clone(),
        href: endpoint_href(run, &endpoint.endpoint, range),
        requests: count(endpoint.requests),
        failing: percent(endpoint.diff_rate),
        diff_class: rate_class(endpoint.diff_rate),
        noise: percent(endpoint.noise_rate),
        p50_primary: millis(latency.primary.p50_ms),
        p50_candidate: millis(latency.candidate.p50_ms),
        p99_primary: millis(latency.primary.p99_ms),
        p99_candidate: millis(latency.candidate.p99_ms),
        slow: endpoint.latency_regression,
        top: endpoint
            .regressions
            .first()
            .map(|top| format!("{} ({})", top.path, view::kind_label(top.kind))),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
struct OverviewPage {
    controls: Controls,
    run: Option<RunView>,
    live: Fragment,
    live_href: String,
    proxy_addr: Option<String>,
    store_problem: Option<String>,
}

async fn home(
    state: State<AdminState>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, PageError> {
    let run = query.run.clone().unwrap_or_else(|| "latest".to_string());
    render_overview(&state, &run, &query).await
}

async fn overview(
    state: State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, PageError> {
    // The selector sends `?run=` to whichever page it is on.
    if let Some(selected) = query.run.as_deref().filter(|selected| *selected != run) {
        return Ok(Redirect::to(&run_href(selected, query.range())).into_response());
    }
    render_overview(&state, &run, &query).await
}

async fn render_overview(
    state: &AdminState,
    run: &str,
    query: &ViewQuery,
) -> Result<Response, PageError> {
    let runs = state.store.runs().await?;
    let range = query.range();
    let proxy_addr = state.proxy_addr.map(|addr| addr.to_string());
    if runs.is_empty() {
        let page = OverviewPage {
            controls: Controls::new("/".to_string(), &runs, None, range),
            run: None,
            live: Fragment::none(),
            live_href: String::new(),
            proxy_addr,
            store_problem: store_problem(state),
        };
        return Ok(page.into_response());
    }
    let report = state
        .reports
        .report(run, query.range().time_range())
        .await?;
    let templates = state.store.templates(report.run.id).await?;
    let info = &report.run;
    let page = OverviewPage {
        controls: Controls::new(
            format!("/runs/{}", segment(&info.label)),
            &runs,
            Some(&info.label),
            range,
        ),
        run: Some(RunView {
            label: info.label.clone(),
            primary_url: info.primary_url.clone(),
            secondary_url: info.secondary_url.clone(),
            candidate_url: info.candidate_url.clone(),
            started: timestamp(info.started_at_ms),
            last_seen: timestamp(info.last_seen_at_ms),
            clear_href: format!("/runs/{}/clear", segment(&info.label)),
        }),
        live_href: format!(
            "/runs/{}/live?range={}",
            segment(&info.label),
            range.as_str()
        ),
        live: Fragment::render(&OverviewLive::new(
            &report,
            range,
            &templates,
            store_problem(state),
        ))?,
        proxy_addr,
        store_problem: None,
    };
    Ok(page.into_response())
}

async fn overview_live(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let report = state
        .reports
        .report(&run, query.range().time_range())
        .await?;
    let templates = state.store.templates(report.run.id).await?;
    let live = OverviewLive::new(&report, query.range(), &templates, store_problem(&state));
    Ok(Fragment::render(&live)?.respond(&headers))
}

async fn clear_run(
    State(state): State<AdminState>,
    Path(run): Path<String>,
) -> Result<Redirect, PageError> {
    let run = resolve_run(&state, &run).await?;
    state.store.delete_run(run.id).await?;
    Ok(Redirect::to("/"))
}

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
            });
            open.push((*parent).to_string());
        }
        let (verdict, verdict_label) = match (place.rule, place.verdict) {
            (Some(RuleEffect::Ignored), _) => ("ignored", "ignored (rule)"),
            (Some(RuleEffect::Noise), _) => ("noise", "noise (rule)"),
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
                "/runs/{}/endpoints/{}/samples?path={}&kind={}",
                segment(run),
                segment(endpoint),
                segment(&place.path),
                place.kind.as_str()
            ),
            can_rule: place.rule.is_none(),
        });
    }
    rows
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

#[derive(Template, WebTemplate)]
#[template(path = "endpoint_live.html")]
struct EndpointLive {
    summary: EndpointSummary,
    rows: Vec<FieldRow>,
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
        rule_href: format!(
            "/runs/{}/endpoints/{}/rules",
            segment(&info.label),
            segment(endpoint)
        ),
    };
    Ok((live, info.label))
}

struct RuleRow {
    action: &'static str,
    path: String,
    endpoint: String,
    delete_href: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "endpoint.html")]
struct EndpointPage {
    controls: Controls,
    run_label: String,
    run_href: String,
    endpoint: String,
    timeline_href: String,
    live_href: String,
    live: Fragment,
    hide_noise: bool,
    rules: Vec<RuleRow>,
}

async fn endpoint_page(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, PageError> {
    let range = query.range();
    if let Some(selected) = query.run.as_deref().filter(|selected| *selected != run) {
        return Ok(Redirect::to(&endpoint_href(selected, &endpoint, range)).into_response());
    }
    let (live, label) = endpoint_live_of(&state, &run, &endpoint, &query).await?;
    let runs = state.store.runs().await?;
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
            delete_href: None,
        })
        .collect();
    for stored in state.store.rules().await? {
        let applies = crate::analysis::rules::Rule::new(stored.spec.clone())
            .is_ok_and(|rule| rule.applies_to_endpoint(&endpoint));
        if applies {
            rules.push(RuleRow {
                action: stored.spec.action.as_str(),
                path: stored.spec.path.clone(),
                endpoint: stored.spec.endpoint.clone().unwrap_or_else(|| "*".into()),
                delete_href: Some(format!(
                    "/runs/{}/endpoints/{}/rules/{}/delete",
                    segment(&label),
                    segment(&endpoint),
                    stored.id
                )),
            });
        }
    }
    let encoded = (segment(&label), segment(&endpoint));
    let page = EndpointPage {
        controls: Controls::new(
            format!("/runs/{}/endpoints/{}", encoded.0, encoded.1),
            &runs,
            Some(&label),
            range,
        ),
        run_href: run_href(&label, range),
        timeline_href: format!(
            "/api/v1/runs/{}/endpoints/{}/timeline?range={}",
            encoded.0,
            encoded.1,
            range.as_str()
        ),
        live_href: format!(
            "/runs/{}/endpoints/{}/live?range={}",
            encoded.0,
            encoded.1,
            range.as_str()
        ),
        live: Fragment::render(&live)?,
        hide_noise: query.hides_noise(),
        endpoint,
        run_label: label,
        rules,
    };
    Ok(page.into_response())
}

async fn endpoint_live(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (live, _) = endpoint_live_of(&state, &run, &endpoint, &query).await?;
    Ok(Fragment::render(&live)?.respond(&headers))
}

#[derive(Deserialize)]
struct RuleForm {
    path: String,
    action: String,
}

/// Marks a path as noise or ignored for this endpoint, from the field tree: stored as a rule, in force at once.
async fn add_rule(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Form(form): Form<RuleForm>,
) -> Result<Redirect, PageError> {
    let action = match form.action.as_str() {
        "noise" => ActionKind::Noise,
        "ignore" => ActionKind::Ignore,
        other => {
            return Err(
                WebError::BadRequest(format!("`{other}` cannot be set from the page")).into(),
            );
        }
    };
    let info = resolve_run(&state, &run).await?;
    let spec = RuleSpec::new(Some(endpoint.clone()), form.path, action);
    state
        .store
        .add_rule(&spec, now_ms())
        .await
        .map_err(WebError::from_rule_error)?;
    Ok(Redirect::to(&endpoint_href(
        &info.label,
        &endpoint,
        RangeChoice::All,
    )))
}

async fn delete_rule(
    State(state): State<AdminState>,
    Path((run, endpoint, id)): Path<(String, String, i64)>,
) -> Result<Redirect, PageError> {
    state.store.delete_rule(id).await?;
    Ok(Redirect::to(&endpoint_href(
        &run,
        &endpoint,
        RangeChoice::All,
    )))
}

#[derive(Deserialize)]
struct SamplesQuery {
    path: Option<String>,
    kind: Option<String>,
}

struct SampleRow {
    id: String,
    href: String,
    time: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "samples.html")]
struct SamplesPage {
    run_label: String,
    run_href: String,
    endpoint: String,
    endpoint_href: String,
    place: Option<String>,
    per_path: usize,
    samples: Vec<SampleRow>,
}

async fn samples_page(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<SamplesQuery>,
) -> Result<Response, PageError> {
    let info = resolve_run(&state, &run).await?;
    let place = match (&query.path, &query.kind) {
        (Some(path), Some(kind)) => Some((path.as_str(), kind.as_str())),
        _ => None,
    };
    let samples = state.store.samples(info.id, &endpoint, place, 50).await?;
    let page = SamplesPage {
        run_href: run_href(&info.label, RangeChoice::All),
        endpoint_href: endpoint_href(&info.label, &endpoint, RangeChoice::All),
        place: place.map(|(path, kind)| format!("{path} ({})", kind.replace('_', " "))),
        per_path: 5,
        samples: samples
            .into_iter()
            .map(|sample| SampleRow {
                href: format!("/exchanges/{}", segment(&sample.id)),
                time: timestamp(sample.created_at_ms),
                id: sample.id,
            })
            .collect(),
        run_label: info.label,
        endpoint,
    };
    Ok(page.into_response())
}

struct HeaderRow {
    name: String,
    value: String,
    marked: bool,
}

/// One upstream's response, ready to show.
struct Panel {
    title: &'static str,
    status: Option<String>,
    status_class: char,
    elapsed: String,
    error: Option<String>,
    headers: Vec<HeaderRow>,
    marked_headers: usize,
    /// A JSON body, rendered and escaped, with its differing places marked.
    json_html: Option<String>,
    text: Option<String>,
    note: Option<String>,
}

fn panel(
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
            Err(_) => (None, Some(text.clone()), None),
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

struct DifferenceRow {
    path: String,
    kind: String,
    compat: &'static str,
    primary: String,
    other: String,
    cancelled: bool,
}

#[derive(Template, WebTemplate)]
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
    request_body: Option<String>,
    /// Said when only the beginning of the request body was kept.
    request_truncated: Option<&'static str>,
    differences: Vec<DifferenceRow>,
    noise: Vec<DifferenceRow>,
    primary: Panel,
    candidate: Panel,
    secondary: Panel,
    diff_lines: Vec<DiffLine>,
}

/// Body marks and header names for one side's differences (`missing` marks primary's side, `extra` the other).
fn marks_of<'a>(
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

fn difference_row(
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
    }
}

async fn exchange_page(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Some(document) = state.store.exchange(&id).await? else {
        return Err(WebError::NotFound(format!("exchange {id}")).into());
    };
    Ok(exchange_view(document).into_response())
}

/// What a body cut to `--sample-body-limit` says on the exchange page.
const TRUNCATED: &str = "truncated: only the beginning of this body is kept (--sample-body-limit)";

fn exchange_view(document: SampleDocument) -> ExchangePage {
    let (primary_marks, candidate_marks, candidate_headers) =
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
        differences: document
            .candidate_differences
            .iter()
            .map(|d| difference_row(&d.difference, d.cancelled))
            .collect(),
        noise: document
            .noise_differences
            .iter()
            .map(|d| difference_row(d, false))
            .collect(),
        primary: panel(
            "Primary",
            &document.primary,
            &primary_marks,
            &candidate_headers,
        ),
        candidate: panel(
            "Candidate",
            &document.candidate,
            &candidate_marks,
            &candidate_headers,
        ),
        secondary: panel(
            "Secondary",
            &document.secondary,
            &secondary_marks,
            &secondary_headers,
        ),
        diff_lines,
        id: document.id,
    }
}
