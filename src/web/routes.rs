//! The admin listener's URL space, written once: every route with its method, handler and who may call it.
//! The router, the auth rules (public and protected sub-routers), the OpenAPI document and the links pages
//! carry are all made from these tables; the paths pages link to are in `crate::paths`.

use axum::middleware::from_fn_with_state;
use axum::{Json, Router};
use serde_json::Value;

// The paths live apart from the route table, which imports the handlers, so that the handlers and
// notifications can name them without a circle; they are re-exported for the table's readers.
pub use crate::paths::*;
use crate::web::auth::WithoutToken;
use crate::web::pages::{endpoint, exchange, overview, samples};
use crate::web::route::{Route, route};
use crate::web::{AdminState, api, assets, auth, changes, delivery, guard, health, openapi};

// The tables are kept one route to a line where it fits (`rustfmt::skip`), so that they read as tables.

/// Open to anyone who reaches the listener, whatever name they used: the health checks (probes address
/// the listener by whatever IP it has), which say nothing about the traffic.
#[rustfmt::skip]
pub const HEALTH_ROUTES: &[Route] = &[
    route!(get "/healthz" => health::healthz, "Liveness"),
    route!(get "/readyz" => health::readyz, "Readiness of the caller's path"),
    route!(get "/readyz/store" => health::readyz_store, "Readiness of the store"),
];

/// Open without a token: the login and logout forms and the page assets.
#[rustfmt::skip]
pub const PUBLIC_ROUTES: &[Route] = &[
    route!(get LOGIN => auth::login_page, "The login form"),
    route!(post LOGIN => auth::login, "Log in with the admin token"),
    route!(post LOGOUT => auth::logout, "Log out"),
    route!(get "/static/{*file}" => assets::serve, "Stylesheets and scripts"),
];

/// The report's pages; with `--admin-token`, a request without it is sent to the login form.
#[rustfmt::skip]
pub const PAGE_ROUTES: &[Route] = &[
    // A run, and its changes.
    route!(get HOME => overview::home, "The latest run's overview"),
    route!(get RUN => overview::overview, "A run's overview"),
    route!(get RUN_LIVE => overview::overview_live, "The overview's live part"),
    route!(post RUN_CLEAR => overview::clear_run, "Delete a run"),
    route!(post CHANGE_ACCEPT => changes::accept_page, "Accept a change: an accept rule for each of its places"),
    // An endpoint, its rules and samples.
    route!(get ENDPOINT => endpoint::endpoint_page, "An endpoint: its field tree and charts"),
    route!(get ENDPOINT_LIVE => endpoint::endpoint_live, "The endpoint page's live part"),
    route!(post ENDPOINT_RULES => endpoint::add_rule, "Add a rule from the field tree"),
    route!(post ENDPOINT_RULE_DELETE => endpoint::delete_rule, "Remove a stored rule"),
    route!(get ENDPOINT_SAMPLES => samples::samples_page, "Sample exchanges of a place"),
    // An exchange.
    route!(get EXCHANGE => exchange::exchange_page, "One exchange side by side"),
    route!(get EXCHANGE_FRAMES => exchange::exchange_frames, "A gRPC call's raw frames, one side's, to download"),
];

/// Prometheus' scrape; with `--admin-token`, a request without it is answered 401.
#[rustfmt::skip]
pub const METRICS_ROUTES: &[Route] = &[
    route!(get "/metrics" => health::metrics, "Prometheus metrics"),
];

/// The JSON API (and the OpenAPI document's routes); with `--admin-token`, a request without it is answered
/// 401. `{run}` is a run label or `latest`; `{endpoint}` is URL-encoded (`GET%20%2Fusers%2F%7Bid%7D`).
#[rustfmt::skip]
pub const API_ROUTES: &[Route] = &[
    route!(get "/api/v1/runs" => api::runs, "Runs, most recent first, with their request counts"),
    route!(get "/api/v1/runs/{run}" => api::run_report, "A run's report: totals and every endpoint")
        .query(&["range"]),
    route!(post "/api/v1/runs" => delivery::start_run,
        "Start a run: the proxy (and its replicas) write into it from now on, the run before is closed and \
         kept. 201 when started, 200 when it already was the run being written")
        .body("StartRun")
        .answer("StartedRun"),
    route!(get "/api/v1/runs/{run}/verdict" => delivery::verdict,
        "A run's verdict under the gate's options (`endpoint` repeatable); a run not seen yet answers 200 \
         with enough_data false")
        .query(&["max_diff_rate", "min_requests", "fail_on", "latency", "endpoint"])
        .answer("Verdict"),
    route!(delete "/api/v1/runs/{run}" => api::delete_run, "Delete a run and everything counted for it"),
    route!(get "/api/v1/runs/{run}/endpoints" => api::endpoints,
        "Every endpoint of a run, judged (the gate's `endpoints`)")
        .query(&["range"]),
    route!(get "/api/v1/runs/{run}/changes" => changes::list,
        "A run's failing places grouped by cause, most failing requests first, each with its places, \
         consequences and predictors")
        .query(&["range"])
        .answer("Changes"),
    route!(post "/api/v1/runs/{run}/changes/{id}/accept" => changes::accept_api,
        "Accept a change as intended, as grouped over `range`: an accept rule for each of its places and \
         consequences, in one transaction (answers the new rules' ids)")
        .query(&["range"])
        .body("AcceptChange"),
    route!(get "/api/v1/runs/{run}/endpoints/{endpoint}/fields" => api::fields,
        "An endpoint's places with counts and verdicts")
        .query(&["range"]),
    route!(get API_TIMELINE => api::timeline, "An endpoint minute by minute: requests, diff rate, latency")
        .query(&["range"]),
    route!(get "/api/v1/runs/{run}/templates" => api::templates,
        "Endpoint templates learned from traffic in a run, and which segment each generalised"),
    route!(get "/api/v1/runs/{run}/samples" => api::samples,
        "Sample exchanges of an endpoint, newest first, for a place (a path, and optionally a kind) or all: \
         the request line, the three statuses and the values at the place; `value` keeps those whose primary or \
         candidate value contains it; `feature` (with `feature_value`) keeps those whose request has a predictor's \
         feature; `limit` and `offset` page")
        .query(&["endpoint", "path", "kind", "value", "feature", "feature_value", "limit", "offset"]),
    route!(get "/api/v1/exchanges/{id}" => api::exchange, "One stored exchange, whole (redacted)"),
    route!(get "/api/v1/rules" => api::rules, "Rules in force: from the rules file, and stored"),
    route!(post "/api/v1/rules" => api::add_rule,
        "Add a rule (JSON body: endpoint, path, action, absolute, relative; kind, compat and note for accept)")
        .body("Rule"),
    route!(get RULES_TOML => api::rules_toml, "The stored rules as a rules file (TOML), for --rules in CI"),
    route!(delete "/api/v1/rules/{id}" => api::delete_rule, "Remove a stored rule"),
    route!(get "/api/v1/openapi.json" => openapi_json, "This document"),
];

/// Flagger's webhooks: Flagger cannot set headers, so with `--admin-token` they check the token in the
/// payload's `metadata.token` (or a bearer header) themselves.
#[rustfmt::skip]
pub const WEBHOOK_ROUTES: &[Route] = &[
    route!(post "/api/v1/webhooks/flagger/{hook}" => delivery::flagger,
        "Flagger webhook (`pre-rollout` starts the revision's run; `rollout` answers 412 when the verdict \
         fails on enough data; `confirm-promotion` answers 200 only when it passes)")
        .body("FlaggerPayload"),
];

/// The OpenAPI document of the API's routes and the webhooks. Apart from its handler: an async fn that reads
/// the table it is named in would make the table's type depend on itself.
pub fn openapi_document() -> Value {
    openapi::document(API_ROUTES.iter().chain(WEBHOOK_ROUTES))
}

/// `GET /api/v1/openapi.json`.
async fn openapi_json() -> Json<Value> {
    Json(openapi_document())
}

/// Every table, for checks over the whole URL space.
pub const ALL_ROUTES: [&[Route]; 6] = [
    HEALTH_ROUTES,
    PUBLIC_ROUTES,
    PAGE_ROUTES,
    METRICS_ROUTES,
    API_ROUTES,
    WEBHOOK_ROUTES,
];

fn routes(table: &[Route]) -> Router<AdminState> {
    table.iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.method_router())
    })
}

/// The admin listener: the health checks as they are; everything else only for the listener's own names and
/// with no cross-site changes (`guard`); the pages behind the login redirect, the API and the metrics behind
/// a 401, the webhooks checking the token themselves; the security headers on every answer.
pub fn router(state: AdminState) -> Router {
    let pages = routes(PAGE_ROUTES)
        .fallback(crate::web::pages::not_found)
        .layer(from_fn_with_state(
            (state.clone(), WithoutToken::Login),
            auth::require_token,
        ));
    let api = routes(API_ROUTES)
        .merge(routes(METRICS_ROUTES))
        .layer(from_fn_with_state(
            (state.clone(), WithoutToken::Unauthorized),
            auth::require_token,
        ));
    let guarded = routes(PUBLIC_ROUTES)
        .merge(routes(WEBHOOK_ROUTES))
        .merge(pages)
        .merge(api)
        .layer(from_fn_with_state(state.clone(), guard::check));
    routes(HEALTH_ROUTES)
        .merge(guarded)
        .layer(axum::middleware::from_fn(auth::security_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fill_patterns_and_every_linked_path_is_routed() {
        assert_eq!(
            link(ENDPOINT, &["run 1", "GET /users/{id}"]),
            "/runs/run%201/endpoints/GET%20%2Fusers%2F%7Bid%7D"
        );
        assert_eq!(link(HOME, &[]), "/");
        let routed: Vec<&str> = ALL_ROUTES
            .iter()
            .flat_map(|table| table.iter().map(|route| route.path))
            .collect();
        for linked in [
            HOME,
            LOGIN,
            LOGOUT,
            RUN,
            RUN_LIVE,
            RUN_CLEAR,
            CHANGE_ACCEPT,
            ENDPOINT,
            ENDPOINT_LIVE,
            ENDPOINT_SAMPLES,
            ENDPOINT_RULES,
            ENDPOINT_RULE_DELETE,
            EXCHANGE,
            API_TIMELINE,
        ] {
            assert!(
                routed.contains(&linked),
                "{linked} is linked but not routed"
            );
        }
    }
}
