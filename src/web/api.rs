//! The JSON API under `/api/v1/`: everything the pages show, and the rule and run edits. Its routes are in
//! the route table ([`API_ROUTES`]), which also makes the OpenAPI document.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::analysis::aggregate::EndpointReport;
use crate::analysis::rules::RuleSpec;
use crate::clock::now_ms;
use crate::report::{EndpointDetail, RunReport, TimelinePoint};
use crate::store::RunInfo;
use crate::store::listing::{SampleFilter, SampleListing};
use crate::store::queries::StoredRule;
use crate::store::sample::SampleDocument;
use crate::web::error::{ApiError, WebError};
use crate::web::range::ViewQuery;
use crate::web::{AdminState, resolve_run, run_label};

pub use crate::web::routes::{API_ROUTES, WEBHOOK_ROUTES};

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
            .store
            .sample_listing(run.id, &query.endpoint, &filter, limit, offset)
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

/// The stored rules (those made on the dashboard or through the API) as a rules file, so that `gate --rules`
/// in CI applies the same decisions.
pub(crate) async fn rules_toml(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let specs: Vec<RuleSpec> = state
        .store
        .rules()
        .await?
        .into_iter()
        .map(|stored| stored.spec)
        .collect();
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
    crate::web::clear::clear_run(&state, &run).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3 document of [`API_ROUTES`] and [`WEBHOOK_ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in API_ROUTES.iter().chain(WEBHOOK_ROUTES) {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let required = |name: &str| name == "endpoint" && route.path.ends_with("/samples");
        parameters.extend(
            route
                .query
                .iter()
                .map(|name| json!({"name": name, "in": "query", "required": required(name), "schema": {"type": "string"}})),
        );
        let (status, description) = match route.method {
            "post" if route.answer.is_some() => ("200", "JSON"),
            "post" => ("201", "created"),
            "delete" => ("204", "deleted"),
            _ => ("200", "JSON"),
        };
        let mut answer = json!({"description": description});
        if let Some(schema) = route.answer {
            answer["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
        }
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                status: answer,
                "400": {"description": "a bad option or body"},
                "401": {"description": "the admin token is required"},
                "404": {"description": "no such run, endpoint, exchange or rule"},
            },
        });
        if let Some(schema) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
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
                 "description": "The report of a shadow proxy: runs, endpoints, verdicts per place, samples, rules; \
                                 runs started and judged for deployment pipelines."},
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"adminToken": []}, {}],
        "paths": paths,
    })
}

/// The request and answer bodies the routes name.
fn schemas() -> Value {
    let string = json!({"type": "string"});
    json!({
        "Rule": {"type": "object", "required": ["path", "action"], "properties": {
            "endpoint": string, "path": string,
            "action": {"type": "string", "enum": ["ignore", "noise", "tolerance", "unordered", "presence-only", "type-only", "accept"]},
            "absolute": {"type": "number"}, "relative": {"type": "number"},
            "kind": {"type": "string", "description": "accept: the kind of difference accepted (any when absent)"},
            "compat": {"type": "string", "enum": ["breaking", "additive", "changed"],
                       "description": "accept: the compatibility class accepted (any when absent)"},
            "note": {"type": "string", "description": "why; at most 500 characters"}
        }},
        "StartRun": {"type": "object", "required": ["label"], "properties": {"label": string}},
        "AcceptChange": {"type": "object", "properties": {"note": {"type": "string", "description": "why; at most 500 characters"}}},
        "Changes": {"type": "object", "properties": {
            "run": string, "requests": {"type": "integer"}, "diff_rate": {"type": "number"},
            "changes": {"type": "array", "items": {"type": "object", "properties": {
                "id": string, "title": string, "compat": {"type": "string", "enum": ["breaking", "additive", "changed"]},
                "requests": {"type": "integer"}, "endpoints": {"type": "array", "items": string},
                "places": {"type": "array", "items": {"$ref": "#/components/schemas/ChangePlace"}},
                "consequences": {"type": "array", "items": {"$ref": "#/components/schemas/ChangePlace"}},
                "predictors": {"type": "array", "items": {"type": "object", "properties": {
                    "feature": string, "value": {"type": "string", "nullable": true},
                    "failing_share": {"type": "number"}, "passing_share": {"type": "number"}
                }}},
                "sample": {"type": "string", "nullable": true}
            }}}
        }},
        "ChangePlace": {"type": "object", "properties": {
            "endpoint": string, "path": string, "kind": string,
            "compat": {"type": "string", "enum": ["breaking", "additive", "changed"]}, "rate": {"type": "number"}
        }},
        "StartedRun": {"type": "object", "properties": {
            "label": string, "id": {"type": "integer"}, "since_ms": {"type": "integer"}, "started": {"type": "boolean"}
        }},
        "Verdict": {"type": "object", "required": ["run", "passed", "enough_data", "requests", "diff_rate", "breaking",
                                                   "latency_regressions", "failing", "reason"], "properties": {
            "run": string,
            "passed": {"type": "boolean", "description": "false whenever enough_data is false"},
            "enough_data": {"type": "boolean", "description": "at least min_requests compared requests"},
            "requests": {"type": "integer"},
            "diff_rate": {"type": "number"},
            "breaking": {"type": "integer", "description": "places whose regression is breaking"},
            "latency_regressions": {"type": "integer", "description": "endpoints slower on the candidate"},
            "failing": {"type": "array", "items": {"type": "object", "properties": {
                "endpoint": string, "path": string, "kind": string,
                "compat": {"type": "string", "enum": ["breaking", "additive", "changed"]},
                "rate": {"type": "number"}, "sample": {"type": "string", "nullable": true}
            }}},
            "reason": string
        }},
        "FlaggerPayload": {"type": "object", "required": ["name", "namespace"], "properties": {
            "name": string, "namespace": string, "phase": string, "checksum": string,
            "metadata": {"type": "object", "additionalProperties": string,
                         "description": "run, max_diff_rate, min_requests, fail_on, latency, token"}
        }},
    })
}
