//! The admin listener: the report (pages and JSON API), Prometheus metrics and health checks, behind
//! `--admin-token` when one is set.

pub mod api;
pub mod assets;
pub mod auth;
pub mod changes;
pub mod delivery;
pub mod edits;
pub mod error;
pub mod fragment;
pub mod guard;
pub mod health;
pub mod openapi;
pub mod pages;
pub mod range;
pub mod report_file;
pub mod route;
pub mod routes;
pub mod view;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Exposition;
use crate::report::Reports;
use crate::store::RunInfo;
use crate::store::health::StoreHealth;
use crate::web::edits::Edits;
use crate::web::error::WebError;
use crate::web::guard::AdminGuard;

/// The admin listener.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// Address of the admin listener (health, metrics, dashboard).
    pub listen: SocketAddr,
    /// Token every page, API call and /metrics then needs; health checks stay open.
    pub token: Option<String>,
    /// The URL people reach the dashboard at (behind a load balancer or TLS): its host is served, its origin
    /// accepted for changes, and an https one makes the session cookie `Secure`.
    pub public_url: Option<http::Uri>,
    /// More names the listener answers to without a token (`dashboard.internal`, `10.0.0.5:8888`).
    pub allowed_hosts: Vec<String>,
    /// How long a login lasts.
    pub session_ttl: Duration,
}

impl WebSettings {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8888));
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            token: None,
            public_url: None,
            allowed_hosts: Vec::new(),
            session_ttl: Self::DEFAULT_SESSION_TTL,
        }
    }
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Renders this instance's metrics, for `/metrics`.
    pub metrics: Exposition,
    /// Cancelled once shutdown has begun: the instance finishes what it has but wants no new traffic.
    pub draining: CancellationToken,
    /// Everything the pages and the API read: runs judged under the rules in force (the rules file's and the
    /// stored ones), and what is read as stored (runs, samples, exchanges, rules).
    pub reports: Reports,
    /// The only writes the pages and the API make: stored rules added and removed, runs cleared.
    pub edits: Edits,
    /// `--admin-token`: when set, everything but health checks and assets needs it.
    pub token: Option<Arc<str>>,
    /// The proxy's address, for the hint on an empty report.
    pub proxy_addr: Option<SocketAddr>,
    /// Whether this instance's writer can write the store (none for a report without a proxy).
    pub store_health: Option<Arc<StoreHealth>>,
    /// Samples kept per endpoint and place (`--samples-per-path`), which the samples page tells.
    pub samples_per_path: usize,
    /// The run the proxy writes into (`current`), switched from the API and deployment hooks; none for a
    /// report without a proxy.
    pub runs: Option<Arc<crate::runs::RunControl>>,
    /// Which hosts and origins are the listener's own, and the pace of login attempts.
    pub guard: Arc<AdminGuard>,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Whether the session cookie is `Secure` (the public URL is https).
    pub secure_cookie: bool,
    /// The gRPC schemas the analysis decodes calls with, for what the endpoint page says of a method.
    pub grpc: crate::grpc::schema::Schemas,
}

/// Every admin route, from the route table.
pub fn router(state: AdminState) -> Router {
    routes::router(state)
}

/// The label that names the run being written (switched with `POST /api/v1/runs`).
pub const CURRENT_RUN: &str = "current";

/// A run label as asked for, with `current` made the label of the run being written.
pub fn run_label(state: &AdminState, label: &str) -> String {
    match &state.runs {
        Some(runs) if label == CURRENT_RUN => runs.current().label,
        _ => label.to_string(),
    }
}

/// The run with this label, the one being written for `current`, or the most recent for `latest`.
pub async fn resolve_run(state: &AdminState, label: &str) -> Result<RunInfo, WebError> {
    Ok(state.reports.run(&run_label(state, label)).await?)
}
