//! The demo's example service. Both versions answer with noise (timestamps, request ids, tags in random order,
//! a random boolean); the candidate adds the regressions listed in [`super::CANDIDATE_CHANGES`].

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One lookup in the demo's pretend database: long enough that the candidate's ten of them stand well above a
/// loaded machine's scheduling stalls, which the latency verdict would otherwise see on the secondary too.
const LOOKUP: Duration = Duration::from_millis(12);
const RESULTS: u64 = 10;
const PLANS: [&str; 3] = ["free", "pro", "team"];

/// Which version of the demo's example service.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DemoVariant {
    /// The current version (run it twice: primary and secondary).
    Current,
    /// The new version, with the demo's regressions.
    Candidate,
}

/// The service's routes.
pub fn router(variant: DemoVariant) -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .route("/products/{id}", get(product))
        .route("/orders/{id}", get(order))
        .route("/search", get(search))
        .route("/health", get(health))
        .with_state(variant)
}

/// Serves until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    variant: DemoVariant,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(variant))
        .with_graceful_shutdown(stop)
        .await
}

/// A fresh random id, different on every call (noise).
fn request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The current time to the nanosecond (noise).
fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// JSON with the per-response request id header (noise in a header).
fn answer(body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

async fn user(State(variant): State<DemoVariant>, Path(id): Path<u64>) -> Response {
    let name_field = match variant {
        DemoVariant::Current => "name",
        DemoVariant::Candidate => "full_name",
    };
    answer(json!({
        "id": id,
        name_field: format!("User {id}"),
        "email": format!("user{id}@example.com"),
        "plan": PLANS[(id % 3) as usize],
        "request_id": request_id(),
        "generated_at": now(),
    }))
}

async fn product(State(variant): State<DemoVariant>, Path(id): Path<u64>) -> Response {
    let cents = 499 + (id * 137) % 9_000;
    let price = match variant {
        DemoVariant::Current => json!(cents as f64 / 100.0),
        DemoVariant::Candidate => json!(format!("{}.{:02}", cents / 100, cents % 100)),
    };
    let mut tags = vec!["new", "sale", "eco", "gift"];
    fastrand::shuffle(&mut tags);
    answer(json!({
        "id": id,
        "title": format!("Product {id}"),
        "price": price,
        "currency": "EUR",
        "tags": tags,
        "cached": fastrand::bool(),
    }))
}

async fn order(State(variant): State<DemoVariant>, Path(id): Path<u64>) -> Response {
    let items: Vec<(u64, u64, u64)> = (0..=(id % 3))
        .map(|n| (100 + (id + n) % 50, 1 + n, 250 + 100 * ((id + n) % 7)))
        .collect();
    let mut total: u64 = items.iter().map(|(_, qty, cents)| qty * cents).sum();
    if variant == DemoVariant::Candidate && id % 20 == 7 {
        // The candidate's bug: the last line is left out of the total, for one order in twenty.
        let (_, qty, cents) = items[items.len() - 1];
        total -= qty * cents;
    }
    answer(json!({
        "id": id,
        "status": "shipped",
        "items": items.iter().map(|(sku, qty, cents)| json!({"sku": sku, "qty": qty, "unit_cents": cents})).collect::<Vec<_>>(),
        "total_cents": total,
        "generated_at": now(),
    }))
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(State(variant): State<DemoVariant>, Query(query): Query<SearchQuery>) -> Response {
    match variant {
        // One query for all the results.
        DemoVariant::Current => tokio::time::sleep(LOOKUP).await,
        // The N+1 pattern: one query per result, one after another.
        DemoVariant::Candidate => {
            for _ in 0..RESULTS {
                tokio::time::sleep(LOOKUP).await;
            }
        }
    }
    let seed = query.q.bytes().map(u64::from).sum::<u64>();
    let results: Vec<Value> = (0..RESULTS)
        .map(|n| json!({"id": seed * 10 + n, "title": format!("{} {}", query.q, n + 1)}))
        .collect();
    answer(json!({"query": query.q, "results": results}))
}

async fn health() -> Response {
    answer(json!({"status": "ok"}))
}
