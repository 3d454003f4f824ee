//! Health checks for load balancers and orchestrators, and the Prometheus scrape.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::web::AdminState;

/// Liveness: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness of the caller's path: 503 once shutdown has begun (so that load balancers stop sending traffic).
/// The store is not asked: a store outage costs comparisons, never callers, so it must not take an inline
/// proxy out of rotation (see `/readyz/store`).
pub async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    (StatusCode::OK, "ready\n")
}

/// Readiness of the store: 503 while the database does not answer, or while this instance's writer cannot
/// write it.
pub async fn readyz_store(State(state): State<AdminState>) -> (StatusCode, String) {
    let reachable = tokio::time::timeout(Duration::from_secs(2), state.reports.ping()).await;
    if !matches!(reachable, Ok(Ok(()))) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "store unreachable\n".into(),
        );
    }
    if let Some(problem) = state
        .store_health
        .as_ref()
        .and_then(|health| health.problem())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not written: {}\n", problem.error),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

pub async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
