//! The JSON API under `/api/v1/`: everything the pages show, and the rule and run edits. Its routes are in
//! the route table ([`API_ROUTES`]), which also makes the OpenAPI document.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::analysis::aggregate::EndpointReport;
use crate::analysis::rules::RuleSpec;
use crate::clock::now_ms;
use crate::report::{EndpointDetail, RunReport, TimelinePoint};
use crate::store::RunInfo;
use crate::store::queries::{SampleSummary, StoredRule};
use crate::store::sample::SampleDocument;
use crate::web::error::{ApiError, WebError};
use crate::web::range::ViewQuery;
use crate::web::{AdminState, resolve_run};

pub use crate::web::routes::API_ROUTES;

#[derive(Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    run: RunInfo,
    requests: u64,
}

pub(crate) async fn runs(
    State(state): State<AdminState>,
) -> Result<Json<Vec<RunSummary>>, ApiError> {
    let totals = state.store.run_requests().await?;
    let runs = state.store.runs().await?;
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
            .report(&run, query.range().time_range())
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
        .report(&run, query.range().time_range())
        .await?;
    Ok(Json(report.endpoints))
}

pub(crate) async fn fields(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<EndpointDetail>, ApiError> {
    let run = state.reports.run(&run).await?;
    let range = query.range().time_range();
    Ok(Json(state.reports.endpoint(&run, &endpoint, range).await?))
}

pub(crate) async fn timeline(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Vec<TimelinePoint>>, ApiError> {
    let range = query.range().time_range();
    Ok(Json(state.reports.timeline(&run, &endpoint, range).await?))
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
    let templates = state.store.templates(run.id).await?;
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
    limit: Option<i64>,
}

pub(crate) async fn samples(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<SamplesQuery>,
) -> Result<Json<Vec<SampleSummary>>, ApiError> {
    let run = resolve_run(&state, &run).await?;
    let place = match (&query.path, &query.kind) {
        (Some(path), Some(kind)) => Some((path.as_str(), kind.as_str())),
        (None, None) => None,
        _ => {
            return Err(
                WebError::BadRequest("give both `path` and `kind`, or neither".into()).into(),
            );
        }
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(
        state
            .store
            .samples(run.id, &query.endpoint, place, limit)
            .await?,
    ))
}

pub(crate) async fn exchange(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<SampleDocument>, ApiError> {
    match state.store.exchange(&id).await? {
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
        stored: state.store.rules().await?,
    }))
}

pub(crate) async fn add_rule(
    State(state): State<AdminState>,
    Json(spec): Json<RuleSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let id = state
        .store
        .add_rule(&spec, now_ms())
        .await
        .map_err(WebError::from_rule_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub(crate) async fn delete_rule(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_rule(id).await? {
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
    state.store.delete_run(run.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3 document of [`API_ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in API_ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(
            route
                .query
                .iter()
                .map(|name| json!({"name": name, "in": "query", "required": *name == "endpoint", "schema": {"type": "string"}})),
        );
        let (status, description) = match route.method {
            "post" => ("201", "created"),
            "delete" => ("204", "deleted"),
            _ => ("200", "JSON"),
        };
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                status: {"description": description},
                "401": {"description": "the admin token is required"},
                "404": {"description": "no such run, endpoint, exchange or rule"},
            },
        });
        if route.method == "post" {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object", "required": ["path", "action"], "properties": {
                    "endpoint": {"type": "string"}, "path": {"type": "string"},
                    "action": {"type": "string", "enum": ["ignore", "noise", "tolerance", "unordered", "presence-only", "type-only"]},
                    "absolute": {"type": "number"}, "relative": {"type": "number"}
                }}}},
            });
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "shadowdiff", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The report of a shadow proxy: runs, endpoints, verdicts per place, samples, rules."},
        "components": {"securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
        "security": [{"adminToken": []}, {}],
        "paths": paths,
    })
}
