//! The admin listener: the report (pages and JSON API), Prometheus metrics and health checks, behind
//! `--admin-token` when one is set.

pub mod api;
pub mod assets;
pub mod auth;
pub mod error;
pub mod fragment;
pub mod pages;
pub mod range;
pub mod view;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::report::Reports;
use crate::store::health::StoreHealth;
use crate::store::{RunInfo, Store};
use crate::web::error::WebError;

/// The admin listener.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// Address of the admin listener (health, metrics, dashboard).
    pub listen: SocketAddr,
    /// Token every page, API call and /metrics then needs; health checks stay open.
    pub token: Option<String>,
}

impl WebSettings {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8888));
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            token: None,
        }
    }
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Counters of this instance, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled once shutdown has begun: the instance finishes what it has but wants no new traffic.
    pub draining: CancellationToken,
    /// Where samples, exchanges and rules are read from, and rules and deletions written.
    pub store: Store,
    /// Runs judged under the rules in force (the rules file's and the stored ones).
    pub reports: Reports,
    /// `--admin-token`: when set, everything but health checks and assets needs it.
    pub token: Option<Arc<str>>,
    /// The proxy's address, for the hint on an empty report.
    pub proxy_addr: Option<SocketAddr>,
    /// Whether this instance's writer can write the store (none for a report without a proxy).
    pub store_health: Option<Arc<StoreHealth>>,
}

/// Every admin route, in one place.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/store", get(readyz_store))
        .route("/metrics", get(metrics))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/{*file}", get(assets::serve))
        .merge(pages::routes())
        .merge(api::routes())
        .layer(from_fn_with_state(state.clone(), auth::require_token))
        .layer(from_fn(auth::security_headers))
        .with_state(state)
}

/// The run with this label, or the most recent for `latest`.
pub async fn resolve_run(state: &AdminState, label: &str) -> Result<RunInfo, WebError> {
    Ok(state.reports.run(label).await?)
}

/// Liveness: the process is up and serving.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness of the caller's path: 503 once shutdown has begun (so that load balancers stop sending traffic).
/// The store is not asked: a store outage costs comparisons, never callers, so it must not take an inline
/// proxy out of rotation (see `/readyz/store`).
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    (StatusCode::OK, "ready\n")
}

/// Readiness of the store: 503 while the database does not answer, or while this instance's writer cannot
/// write it.
async fn readyz_store(State(state): State<AdminState>) -> (StatusCode, String) {
    let reachable = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
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

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
