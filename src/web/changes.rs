//! A run's changes for the JSON API, and accepting one: every place of it (and what trails it) gets an accept
//! rule of its own, from the API or from the overview's button.

use axum::Form;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::rules::{Rule, RuleSpec};
use crate::clock::now_ms;
use crate::report::changes::Change;
use crate::store::queries::TimeRange;
use crate::web::error::{ApiError, PageError, WebError};
use crate::web::range::{RangeChoice, ViewQuery};
use crate::web::routes::{self, link};
use crate::web::{AdminState, run_label};

/// `GET /api/v1/runs/{run}/changes`.
#[derive(Serialize)]
pub struct ChangesAnswer {
    run: String,
    requests: u64,
    diff_rate: f64,
    changes: Vec<Change>,
}

pub(crate) async fn list(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<ChangesAnswer>, ApiError> {
    let report = state
        .reports
        .explained(&run_label(&state, &run), query.range().time_range())
        .await?;
    Ok(Json(ChangesAnswer {
        run: report.run.label,
        requests: report.requests,
        diff_rate: report.diff_rate,
        changes: report.changes,
    }))
}

/// Why a change is accepted (the accept form and the API's body).
#[derive(Default, Deserialize)]
pub struct AcceptChange {
    #[serde(default)]
    note: Option<String>,
}

pub(crate) async fn accept_api(
    State(state): State<AdminState>,
    Path((run, id)): Path<(String, String)>,
    body: Option<Json<AcceptChange>>,
) -> Result<impl IntoResponse, ApiError> {
    let note = body.and_then(|Json(body)| body.note);
    let rules = accept(&state, &run, &id, note).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "change": id, "rules": rules })),
    ))
}

pub(crate) async fn accept_page(
    State(state): State<AdminState>,
    Path((run, id)): Path<(String, String)>,
    Form(form): Form<AcceptChange>,
) -> Result<Redirect, PageError> {
    let label = run_label(&state, &run);
    accept(&state, &label, &id, form.note).await?;
    Ok(Redirect::to(&format!(
        "{}?range={}",
        link(routes::RUN, &[&label]),
        RangeChoice::All.as_str()
    )))
}

/// Stores an accept rule for every place and consequence of the run's change `id` (over the whole run), each
/// for its endpoint, path, kind and class: the ids of the rules made.
async fn accept(
    state: &AdminState,
    run: &str,
    id: &str,
    note: Option<String>,
) -> Result<Vec<i64>, WebError> {
    let run = state.reports.run(&run_label(state, run)).await?;
    let report = state.reports.judge(run, TimeRange::all()).await?;
    let change = report
        .changes
        .into_iter()
        .find(|change| change.id == id)
        .ok_or_else(|| WebError::NotFound(format!("change {id}")))?;
    let note = note
        .map(|note| note.trim().to_string())
        .filter(|note| !note.is_empty());
    let specs: Vec<RuleSpec> = change
        .places
        .iter()
        .chain(&change.consequences)
        .map(|place| {
            RuleSpec::accept(
                Some(place.endpoint.clone()),
                place.path.clone(),
                Some(place.kind),
                Some(place.compat),
                note.clone(),
            )
        })
        .collect();
    // Every rule checked before any is stored, so that a change is accepted whole or not at all.
    for spec in &specs {
        Rule::new(spec.clone()).map_err(WebError::BadRequest)?;
    }
    let mut ids = Vec::with_capacity(specs.len());
    for spec in &specs {
        ids.push(
            state
                .store
                .add_rule(spec, now_ms())
                .await
                .map_err(WebError::from_rule_error)?,
        );
    }
    Ok(ids)
}
