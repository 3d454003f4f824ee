//! The overview: a run's changes (most failing first), its totals, its endpoints worst first, and the
//! templates learned from its traffic.

mod changes;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use super::{Controls, endpoint_href, rate_class, render, run_href};
use crate::analysis::aggregate::EndpointReport;
use crate::endpoint::cluster::LearnedTemplate;
use crate::paths::{self, link};
use crate::report::RunReport;
use crate::web::error::PageError;
use crate::web::fragment::Fragment;
use crate::web::range::{RangeChoice, ViewQuery};
use crate::web::view::{self, count, millis, percent, timestamp};
use crate::web::{AdminState, resolve_run, run_label};

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
    /// Intended changes accepted by a rule, shown apart from the regressions.
    accepted: usize,
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

#[derive(Template)]
#[template(path = "overview_live.html")]
struct OverviewLive {
    /// Why this instance cannot write the store, if it cannot.
    store_problem: Option<String>,
    summary: Summary,
    changes: Vec<changes::ChangeRow>,
    /// Changes past those listed, which the API has.
    more_changes: usize,
    changes_api: String,
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
            changes: changes::rows(&report.run.label, &report.changes, range),
            more_changes: report.changes.len().saturating_sub(changes::SHOWN),
            changes_api: format!(
                "/api/v1/runs/{}/changes",
                crate::encoding::percent_encode(&report.run.label, &[])
            ),
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
        accepted: endpoint.accepted.len(),
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    controls: Controls,
    run: Option<RunView>,
    live: Fragment,
    live_href: String,
    proxy_addr: Option<String>,
    store_problem: Option<String>,
}

pub async fn home(
    state: State<AdminState>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, PageError> {
    let run = query.run.clone().unwrap_or_else(|| "latest".to_string());
    render_overview(&state, &run, &query).await
}

pub async fn overview(
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
    let runs = state.reports.runs().await?;
    let range = query.range();
    let proxy_addr = state.proxy_addr.map(|addr| addr.to_string());
    if runs.is_empty() {
        let page = OverviewPage {
            controls: Controls::new(paths::HOME.to_string(), &runs, None, range),
            run: None,
            live: Fragment::none(),
            live_href: String::new(),
            proxy_addr,
            store_problem: store_problem(state),
        };
        return render(&page);
    }
    let report = state
        .reports
        .explained(&run_label(state, run), query.range().time_range())
        .await?;
    let templates = state.reports.templates(report.run.id).await?;
    let info = &report.run;
    let page = OverviewPage {
        controls: Controls::new(
            link(paths::RUN, &[&info.label]),
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
            clear_href: link(paths::RUN_CLEAR, &[&info.label]),
        }),
        live_href: format!(
            "{}?range={}",
            link(paths::RUN_LIVE, &[&info.label]),
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
    render(&page)
}

pub async fn overview_live(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let report = state
        .reports
        .explained(&run_label(&state, &run), query.range().time_range())
        .await?;
    let templates = state.reports.templates(report.run.id).await?;
    let live = OverviewLive::new(&report, query.range(), &templates, store_problem(&state));
    Ok(Fragment::render(&live)?.respond(&headers))
}

pub async fn clear_run(
    State(state): State<AdminState>,
    Path(run): Path<String>,
) -> Result<Redirect, PageError> {
    let run = resolve_run(&state, &run).await?;
    state.edits.clear_run(state.runs.as_deref(), &run).await?;
    Ok(Redirect::to(paths::HOME))
}
