//! The JSON API under `/api/v1/`: everything the pages show, and the rule and run edits. Its routes are in
//! the route table, which also makes the OpenAPI document.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::aggregate::EndpointReport;
use crate::analysis::rules::RuleSpec;
use crate::report::{EndpointDetail, RunReport, TimelinePoint};
use crate::store::RunInfo;
use crate::store::listing::{SampleFilter, SampleListing};
use crate::store::queries::StoredRule;
use crate::store::sample::SampleDocument;
use crate::web::error::{ApiError, WebError};
use crate::web::range::ViewQuery;
use crate::web::{AdminState, resolve_run, run_label};

#[derive(Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    run: RunInfo,
    requests: u64,
}

pub(crate) async fn runs(
    State(state): State<AdminState>,
) -> Result<Json<Vec<RunSummary>>, ApiError> {
    let totals = state.reports.run_requests().await?;
    let runs = state.reports.runs().await?;
    Ok(Json(
        runs.into_iter()
            .map(|run| RunSummary {
                requests: totals.get(&run.id).copied().unwrap_or(0),
                run,
            })
            .collect(),
    ))
}

pub(crate) async fn run_report(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(
        state
            .reports
            .report(&run_label(&state, &run), query.range().time_range())
            .await?,
    ))
}

pub(crate) async fn endpoints(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Vec<EndpointReport>>, ApiError> {
    let report = state
        .reports
        .report(&run_label(&state, &run), query.range().time_range())
        .await?;
    Ok(Json(report.endpoints))
}

pub(crate) async fn fields(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<EndpointDetail>, ApiError> {
    let run = resolve_run(&state, &run).await?;
    let range = query.range().time_range();
    Ok(Json(state.reports.endpoint(&run, &endpoint, range).await?))
}

pub(crate) async fn timeline(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Vec<TimelinePoint>>, ApiError> {
    let range = query.range().time_range();
    Ok(Json(
        state
            .reports
            .timeline(&run_label(&state, &run), &endpoint, range)
            .await?,
    ))
}

/// A learned template as the API shows it.
#[derive(Serialize)]
pub struct TemplateView {
    /// `GET /users/{param}/*`: the generalised segment is `{param}`, each later one `*`.
    template: String,
    method: String,
    segments: u32,
    /// The template of the segments before the generalised one.
    prefix: String,
    /// The generalised segment's 0-based position.
    position: usize,
}

pub(crate) async fn templates(
    State(state): State<AdminState>,
    Path(run): Path<String>,
) -> Result<Json<Vec<TemplateView>>, ApiError> {
    let run = resolve_run(&state, &run).await?;
    let templates = state.reports.templates(run.id).await?;
    Ok(Json(
        templates
            .into_iter()
            .map(|template| TemplateView {
                template: template.display(),
                position: template.position(),
                method: template.method,
                segments: template.segments,
                prefix: template.prefix,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct SamplesQuery {
    endpoint: String,
    path: Option<String>,
    kind: Option<String>,
    value: Option<String>,
    /// Only samples whose request has this feature (a predictor's), with `feature_value` if given.
    feature: Option<String>,
    feature_value: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Samples an API page lists at most, and the deepest page.
const MAX_SAMPLES: usize = 500;
const MAX_OFFSET: usize = 10_000;

pub(crate) async fn samples(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<SamplesQuery>,
) -> Result<Json<Vec<SampleListing>>, ApiError> {
    let run = resolve_run(&state, &run).await?;
    if query.kind.is_some() && query.path.is_none() {
        return Err(WebError::BadRequest("`kind` needs `path`".into()).into());
    }
    let filter = SampleFilter {
        path: query.path,
        kind: query.kind,
        value: query.value.filter(|value| !value.is_empty()),
        feature: query
            .feature
            .filter(|feature| !feature.is_empty())
            .map(|feature| (feature, query.feature_value)),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_SAMPLES);
    let offset = query.offset.unwrap_or(0).min(MAX_OFFSET);
    Ok(Json(
        state
            .reports
            .samples(&run, &query.endpoint, &filter, limit, offset)
            .await?,
    ))
}

pub(crate) async fn exchange(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<SampleDocument>, ApiError> {
    match state.reports.exchange(&id).await? {
        Some(document) => Ok(Json(document)),
        None => Err(WebError::NotFound(format!("exchange {id}")).into()),
    }
}

#[derive(Serialize)]
pub struct Rules {
    /// From `--rules` (read-only here).
    from_file: Vec<RuleSpec>,
    /// Added through the API or the pages.
    stored: Vec<StoredRule>,
}

pub(crate) async fn rules(State(state): State<AdminState>) -> Result<Json<Rules>, ApiError> {
    Ok(Json(Rules {
        from_file: state
            .reports
            .file_rules()
            .rules()
            .iter()
            .map(|rule| rule.spec.clone())
            .collect(),
        stored: state.reports.stored_rules().await?,
    }))
}

/// The stored rules (those made on the dashboard or through the API) as a rules file, so that `gate --rules`
/// in CI applies the same decisions.
pub(crate) async fn rules_toml(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let specs = state.reports.stored_specs().await?;
    let text = format!(
        "# shadowdiff rules made on the dashboard or through the API; use with --rules.\n\n{}",
        crate::analysis::rules::rules_file(&specs)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/toml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"shadowdiff-rules.toml\"",
            ),
        ],
        text,
    )
        .into_response())
}

pub(crate) async fn add_rule(
    State(state): State<AdminState>,
    Json(spec): Json<RuleSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let id = state.edits.add_rule(&spec).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub(crate) async fn delete_rule(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if state.edits.delete_rule(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(WebError::NotFound(format!("rule {id}")).into())
    }
}

pub(crate) async fn delete_run(
    State(state): State<AdminState>,
    Path(run): Path<String>,
) -> Result<StatusCode, ApiError> {
    let run = resolve_run(&state, &run).await?;
    state.edits.clear_run(state.runs.as_deref(), &run).await?;
    Ok(StatusCode::NO_CONTENT)
}
