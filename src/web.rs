//! The admin listener's routes: health, readiness and Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::metrics::Metrics;
use crate::store::Store;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Cancelled once shutdown has begun: the instance finishes what it has but wants no new traffic.
    pub draining: CancellationToken,
    /// The store, checked by readiness.
    pub store: Option<Store>,
}

/// Every admin route, in one place.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness: the process is up and serving.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 503 once shutdown has begun (so that load balancers stop sending traffic), or while the store
/// does not answer.
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    if let Some(store) = &state.store {
        let reachable = tokio::time::timeout(Duration::from_secs(2), store.ping()).await;
        if !matches!(reachable, Ok(Ok(()))) {
            return (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n");
        }
    }
    (StatusCode::OK, "ready\n")
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
