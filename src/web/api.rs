//! The JSON API under `/api/v1/`: everything the pages show, and the rule and run edits. Routes are listed
//! once, in [`API_ROUTES`], which also makes the OpenAPI document.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::analysis::aggregate::{self, EndpointReport, PlaceVerdict};
use crate::analysis::rules::RuleSpec;
use crate::clock::now_ms;
use crate::store::RunInfo;
use crate::store::queries::{RunReport, SampleSummary, StoredRule, TimelinePoint};
use crate::store::sample::SampleDocument;
use crate::web::error::{ApiError, WebError};
use crate::web::range::ViewQuery;
use crate::web::{AdminState, resolve_run};

/// One route of the API, for the router and for the OpenAPI document.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub query: &'static [&'static str],
}

/// Every API route. `{run}` is a run label or `latest`; `{endpoint}` is URL-encoded (`GET%20%2Fusers%2F%7Bid%7D`).
pub const API_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        method: "get",
        path: "/api/v1/runs",
        summary: "Runs, most recent first, with their request counts",
        query: &[],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{run}",
        summary: "A run's report: totals and every endpoint",
        query: &["range"],
    },
    ApiRoute {
        method: "delete",
        path: "/api/v1/runs/{run}",
        summary: "Delete a run and everything counted for it",
        query: &[],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{run}/endpoints",
        summary: "Every endpoint of a run, judged (the gate's `endpoints`)",
        query: &["range"],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{run}/endpoints/{endpoint}/fields",
        summary: "An endpoint's places with counts and verdicts",
        query: &["range"],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{run}/endpoints/{endpoint}/timeline",
        summary: "An endpoint minute by minute: requests, diff rate, latency",
        query: &["range"],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{run}/templates",
        summary: "Endpoint templates learned from traffic in a run, and which segment each generalised",
        query: &[],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{run}/samples",
        summary: "Sample exchanges of an endpoint, for a place or all",
        query: &["endpoint", "path", "kind", "limit"],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/exchanges/{id}",
        summary: "One stored exchange, whole (redacted)",
        query: &[],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/rules",
        summary: "Rules in force: from the rules file, and stored",
        query: &[],
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/rules",
        summary: "Add a rule (JSON body: endpoint, path, action, absolute, relative)",
        query: &[],
    },
    ApiRoute {
        method: "delete",
        path: "/api/v1/rules/{id}",
        summary: "Remove a stored rule",
        query: &[],
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        query: &[],
    },
];

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{run}", get(run_report).delete(delete_run))
        .route("/api/v1/runs/{run}/endpoints", get(endpoints))
        .route(
            "/api/v1/runs/{run}/endpoints/{endpoint}/fields",
            get(fields),
        )
        .route(
            "/api/v1/runs/{run}/endpoints/{endpoint}/timeline",
            get(timeline),
        )
        .route("/api/v1/runs/{run}/templates", get(templates))
        .route("/api/v1/runs/{run}/samples", get(samples))
        .route("/api/v1/exchanges/{id}", get(exchange))
        .route("/api/v1/rules", get(rules).post(add_rule))
        .route("/api/v1/rules/{id}", delete(delete_rule))
        .route("/api/v1/openapi.json", get(openapi))
}

#[derive(Serialize)]
struct RunSummary {
    #[serde(flatten)]
    run: RunInfo,
    requests: u64,
}

async fn runs(State(state): State<AdminState>) -> Result<Json<Vec<RunSummary>>, ApiError> {
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

/// A run judged over the requested range, under the rules in force.
pub async fn report_of(
    state: &AdminState,
    run: &str,
    query: &ViewQuery,
) -> Result<RunReport, WebError> {
    let run = resolve_run(state, run).await?;
    let rules = state.store.rule_set(&state.file_rules).await?;
    Ok(state
        .store
        .run_report(run, query.range().time_range(), &state.verdicts, &rules)
        .await?)
}

async fn run_report(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(report_of(&state, &run, &query).await?))
}

async fn endpoints(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Vec<EndpointReport>>, ApiError> {
    Ok(Json(report_of(&state, &run, &query).await?.endpoints))
}

/// An endpoint's places, judged.
#[derive(Serialize)]
pub struct Fields {
    pub endpoint: String,
    pub requests: u64,
    pub places: Vec<PlaceVerdict>,
}

pub async fn fields_of(
    state: &AdminState,
    run: &str,
    endpoint: &str,
    query: &ViewQuery,
) -> Result<(Fields, EndpointReport), WebError> {
    let run = resolve_run(state, run).await?;
    let rules = state.store.rule_set(&state.file_rules).await?;
    let counts = state
        .store
        .endpoint_counts(run.id, query.range().time_range())
        .await?;
    let counts = counts.get(endpoint).cloned().unwrap_or_default();
    let places = aggregate::places(endpoint, &counts, &state.verdicts, &rules);
    let report = aggregate::report(endpoint, &counts, &state.verdicts, &rules);
    Ok((
        Fields {
            endpoint: endpoint.to_string(),
            requests: counts.tally.compared,
            places,
        },
        report,
    ))
}

async fn fields(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Fields>, ApiError> {
    Ok(Json(fields_of(&state, &run, &endpoint, &query).await?.0))
}

async fn timeline(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Vec<TimelinePoint>>, ApiError> {
    let run = resolve_run(&state, &run).await?;
    let rules = state.store.rule_set(&state.file_rules).await?;
    let points = state
        .store
        .timeline(
            run.id,
            &endpoint,
            query.range().time_range(),
            &state.verdicts,
            &rules,
        )
        .await?;
    Ok(Json(points))
}

/// A learned template as the API shows it.
#[derive(Serialize)]
struct TemplateView {
    /// `GET /users/{param}/*`: the generalised segment is `{param}`, each later one `*`.
    template: String,
    method: String,
    segments: u32,
    /// The template of the segments before the generalised one.
    prefix: String,
    /// The generalised segment's 0-based position.
    position: usize,
}

async fn templates(
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
struct SamplesQuery {
    endpoint: String,
    path: Option<String>,
    kind: Option<String>,
    limit: Option<i64>,
}

async fn samples(
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

async fn exchange(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<SampleDocument>, ApiError> {
    match state.store.exchange(&id).await? {
        Some(document) => Ok(Json(document)),
        None => Err(WebError::NotFound(format!("exchange {id}")).into()),
    }
}

#[derive(Serialize)]
struct Rules {
    /// From `--rules` (read-only here).
    from_file: Vec<RuleSpec>,
    /// Added through the API or the pages.
    stored: Vec<StoredRule>,
}

async fn rules(State(state): State<AdminState>) -> Result<Json<Rules>, ApiError> {
    Ok(Json(Rules {
        from_file: state
            .file_rules
            .rules()
            .iter()
            .map(|rule| rule.spec.clone())
            .collect(),
        stored: state.store.rules().await?,
    }))
}

async fn add_rule(
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

async fn delete_rule(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_rule(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(WebError::NotFound(format!("rule {id}")).into())
    }
}

async fn delete_run(
    State(state): State<AdminState>,
    Path(run): Path<String>,
) -> Result<StatusCode, ApiError> {
    let run = resolve_run(&state, &run).await?;
    state.store.delete_run(run.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn openapi() -> Json<Value> {
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
