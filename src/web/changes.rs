//! A run's changes for the JSON API, and accepting one: every place of it (and what trails it) gets an accept
//! rule of its own, from the API or from the overview's button.

use axum::Form;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::rules::RuleSpec;
use crate::paths::{self, link};
use crate::report::changes::Change;
use crate::store::queries::TimeRange;
use crate::web::error::{ApiError, PageError, WebError};
use crate::web::range::{RangeChoice, ViewQuery};
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

/// The overview's accept form: the note, and the time range the change was grouped over there.
#[derive(Default, Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    range: Option<String>,
}

/// Places a change accepted in one action may have at most: past it, accept rules by pattern instead.
pub const MAX_ACCEPTED_PLACES: usize = 5_000;

pub(crate) async fn accept_api(
    State(state): State<AdminState>,
    Path((run, id)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
    body: Option<Json<AcceptChange>>,
) -> Result<impl IntoResponse, ApiError> {
    let note = body.and_then(|Json(body)| body.note);
    let range = query.range().time_range();
    let rules = accept(&state, &run, &id, note, range).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "change": id, "rules": rules })),
    ))
}

pub(crate) async fn accept_page(
    State(state): State<AdminState>,
    Path((run, id)): Path<(String, String)>,
    Form(form): Form<AcceptForm>,
) -> Result<Redirect, PageError> {
    let label = run_label(&state, &run);
    let range = RangeChoice::parse(form.range.as_deref());
    accept(&state, &label, &id, form.note, range.time_range()).await?;
    Ok(Redirect::to(&format!(
        "{}?range={}",
        link(paths::RUN, &[&label]),
        range.as_str()
    )))
}

/// Stores an accept rule for every place and consequence of the run's change `id` (grouped over `range`, as
/// the reader saw it), each for its endpoint, path, kind and class, in one transaction; a place a stored rule
/// already accepts so gets no second one. The ids of the rules made.
async fn accept(
    state: &AdminState,
    run: &str,
    id: &str,
    note: Option<String>,
    range: TimeRange,
) -> Result<Vec<i64>, WebError> {
    let run = state.reports.run(&run_label(state, run)).await?;
    let report = state.reports.judge(run, range).await?;
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
    if specs.len() > MAX_ACCEPTED_PLACES {
        return Err(WebError::BadRequest(format!(
            "change {id} has {} places, more than {MAX_ACCEPTED_PLACES} to accept in one action: accept them by a \
             rule with a pattern instead",
            specs.len()
        )));
    }
    let stored = state.reports.stored_specs().await?;
    let new: Vec<RuleSpec> = specs
        .into_iter()
        .filter(|spec| !stored.iter().any(|known| same_acceptance(known, spec)))
        .collect();
    // One transaction: the change is accepted whole or not at all.
    state.edits.add_rules(&new).await
}

/// Whether two accept rules accept the same place the same way (their notes aside).
fn same_acceptance(a: &RuleSpec, b: &RuleSpec) -> bool {
    (&a.endpoint, &a.path, a.action, a.kind, a.compat)
        == (&b.endpoint, &b.path, b.action, b.kind, b.compat)
}
