//! What deployment pipelines call: a run's verdict (Argo Rollouts' web metric), starting a run for a new
//! revision, and Flagger's webhooks (`pre-rollout` starts the revision's run, `rollout` and
//! `confirm-promotion` answer with its verdict).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::gate::{self, GateSettings, verdict::Verdict};
use crate::web::auth;
use crate::web::error::{ApiError, WebError};
use crate::web::{AdminState, CURRENT_RUN, run_label};

/// Longest run label taken from a caller.
const MAX_LABEL: usize = 200;

/// `GET /api/v1/runs/{run}/verdict?max_diff_rate=&min_requests=&fail_on=&latency=&endpoint=`: always 200 with
/// a verdict when the store answers (a run not seen yet has too little data), 400 for a bad option.
pub(crate) async fn verdict(
    State(state): State<AdminState>,
    Path(run): Path<String>,
    Query(options): Query<Vec<(String, String)>>,
) -> Result<Json<Verdict>, ApiError> {
    let mut settings = GateSettings::default();
    for (name, value) in &options {
        // `range` and the like are not the gate's: a verdict is over the whole run.
        if !settings.set(name, value).map_err(bad_request)? {
            return Err(WebError::BadRequest(format!(
                "unknown option `{name}`: the verdict takes max_diff_rate, min_requests, fail_on, latency and \
                 endpoint"
            ))
            .into());
        }
    }
    let label = run_label(&state, &run);
    Ok(Json(
        gate::verdict(&state.reports, &label, &settings).await?,
    ))
}

fn bad_request(error: impl ToString) -> WebError {
    WebError::BadRequest(error.to_string())
}

/// `POST /api/v1/runs`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    label: String,
}

/// The run being written, as `POST /api/v1/runs` answers.
#[derive(Serialize)]
pub struct StartedRun {
    label: String,
    id: i64,
    /// Since when it is the run being written (unix ms).
    since_ms: i64,
    /// Whether this call started it (false: it already was the run being written).
    started: bool,
}

/// `POST /api/v1/runs {"label": ...}`: makes `label` the run this process (and its replicas) write into,
/// closing the one before. 201 when it started, 200 when it already was the run being written.
pub(crate) async fn start_run(
    State(state): State<AdminState>,
    Json(body): Json<StartRun>,
) -> Result<Response, ApiError> {
    let (started, status) = start(&state, &body.label).await?;
    Ok((status, Json(started)).into_response())
}

/// Starts `label` (checked) as the run being written.
async fn start(state: &AdminState, label: &str) -> Result<(StartedRun, StatusCode), WebError> {
    let label = checked_label(label)?;
    let Some(runs) = &state.runs else {
        return Err(WebError::BadRequest(
            "this instance shows a report but writes no run".into(),
        ));
    };
    let (active, changed) = runs.start(label).await?;
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        StartedRun {
            label: active.label,
            id: active.id,
            since_ms: active.since_ms,
            started: changed,
        },
        status,
    ))
}

/// A label fit to name a run: not empty, not a name the API gives its own meaning, printable, bounded.
fn checked_label(label: &str) -> Result<&str, WebError> {
    let label = label.trim();
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(WebError::BadRequest(format!(
            "a run label has 1 to {MAX_LABEL} bytes"
        )));
    }
    if label == "latest" || label == CURRENT_RUN {
        return Err(WebError::BadRequest(format!(
            "`{label}` names a run already; choose another label"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(WebError::BadRequest(
            "a run label has no control characters".into(),
        ));
    }
    Ok(label)
}

/// A label of at most [`MAX_LABEL`] bytes: a longer one keeps its start and gains a hash of the whole, so that
/// different long names stay different runs.
fn fitted(label: String) -> String {
    if label.len() <= MAX_LABEL {
        return label;
    }
    let digest = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(label.as_bytes())[..8]);
    let mut keep = MAX_LABEL - digest.len() - 1;
    while !label.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}-{digest}", &label[..keep])
}

/// What Flagger sends to a webhook.
#[derive(Deserialize)]
pub struct FlaggerPayload {
    name: String,
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    checksum: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl FlaggerPayload {
    /// The run this revision is judged under: `metadata.run`, or `{name}.{namespace}-{checksum}` (made to
    /// fit a label when Kubernetes' longer names make it too long).
    fn run(&self) -> Result<String, WebError> {
        if let Some(run) = self
            .metadata
            .get("run")
            .filter(|run| !run.trim().is_empty())
        {
            return Ok(checked_label(run)?.to_string());
        }
        let derived = match self.checksum.trim() {
            "" => format!("{}.{}", self.name, self.namespace),
            checksum => format!("{}.{}-{checksum}", self.name, self.namespace),
        };
        Ok(checked_label(&fitted(derived))?.to_string())
    }

    /// The gate's options from the metadata; other keys (`run`, `token`, the user's own) are left alone.
    fn settings(&self) -> Result<GateSettings, WebError> {
        let mut settings = GateSettings::default();
        for (name, value) in &self.metadata {
            settings.set(name, value).map_err(bad_request)?;
        }
        Ok(settings)
    }
}

/// The hooks answered here, by Flagger's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    PreRollout,
    Rollout,
    ConfirmPromotion,
}

impl Hook {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "pre-rollout" => Some(Hook::PreRollout),
            "rollout" => Some(Hook::Rollout),
            "confirm-promotion" => Some(Hook::ConfirmPromotion),
            _ => None,
        }
    }
}

/// `POST /api/v1/webhooks/flagger/{hook}`. Flagger passes a hook on 200-202 and fails it on anything else,
/// putting the body in the canary's events, so every answer is one line saying why.
pub(crate) async fn flagger(
    State(state): State<AdminState>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    Json(payload): Json<FlaggerPayload>,
) -> Response {
    // Flagger cannot set headers on a webhook: the token may come in the metadata instead.
    let token = payload.metadata.get("token").map(String::as_str);
    if !auth::admitted_with(&state, &headers, token) {
        return line(
            StatusCode::UNAUTHORIZED,
            "admin token required (as metadata.token or Authorization: Bearer)".into(),
        );
    }
    let Some(hook) = Hook::parse(&hook) else {
        return line(
            StatusCode::NOT_FOUND,
            format!("no Flagger hook `{hook}` here: use pre-rollout, rollout or confirm-promotion"),
        );
    };
    match answer(&state, hook, &payload).await {
        Ok((status, text)) => {
            tracing::info!(
                hook = ?hook,
                canary = %payload.name,
                namespace = %payload.namespace,
                phase = %payload.phase,
                status = status.as_u16(),
                "{text}"
            );
            line(status, text)
        }
        Err(error) => {
            let status = match error {
                WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            line(status, error.to_string())
        }
    }
}

async fn answer(
    state: &AdminState,
    hook: Hook,
    payload: &FlaggerPayload,
) -> Result<(StatusCode, String), WebError> {
    let run = payload.run()?;
    let settings = payload.settings()?;
    if hook == Hook::PreRollout {
        let (started, _) = start(state, &run).await?;
        let text = if started.started {
            format!("run `{}` started", started.label)
        } else {
            format!("run `{}` already being written", started.label)
        };
        return Ok((StatusCode::OK, text));
    }
    let verdict = gate::verdict(&state.reports, &run, &settings).await?;
    let fails = match hook {
        // A rollout hook's failures count toward rollback: only a verdict made on enough data may fail it.
        Hook::Rollout => verdict.enough_data && !verdict.passed,
        // Promotion waits until the verdict passes.
        _ => !verdict.passed,
    };
    let status = if fails {
        StatusCode::PRECONDITION_FAILED
    } else {
        StatusCode::OK
    };
    let text = if verdict.enough_data || verdict.passed {
        format!("run `{run}`: {}", verdict.reason)
    } else {
        format!("run `{run}`: waiting for data: {}", verdict.reason)
    };
    Ok((status, text))
}

fn line(status: StatusCode, mut text: String) -> Response {
    text.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_derived_labels_fit_and_stay_apart() {
        let long = |tail: &str| format!("{}.shop-{tail}", "a".repeat(240));
        let (one, two) = (fitted(long("1")), fitted(long("2")));
        assert!(one.len() <= MAX_LABEL && two.len() <= MAX_LABEL);
        assert_ne!(one, two);
        assert!(checked_label(&one).is_ok());
        assert_eq!(fitted("checkout.shop-abc".into()), "checkout.shop-abc");
        let wide = fitted("é".repeat(150));
        assert!(wide.len() <= MAX_LABEL, "{}", wide.len());
    }
}
