//! The admin listener's URL space, written once: every route with its method, handler and who may call it.
//! The router, the auth rules (public and protected sub-routers), the OpenAPI document and the links pages
//! carry are all made from these tables; the paths pages link to are in `crate::paths`.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, delete, get, post};

// The paths live apart from the route table, which imports the handlers, so that the handlers and
// notifications can name them without a circle; they are re-exported for the table's readers.
pub use crate::paths::*;
use crate::web::pages::{endpoint, exchange, overview, samples};
use crate::web::{AdminState, api, assets, auth, changes, delivery, guard, health};

/// One route: a method on a path pattern (`{name}` is one segment, `{*name}` the rest), and its handler.
pub struct Route {
    /// `get`, `post` or `delete`, as OpenAPI writes them.
    pub method: &'static str,
    pub path: &'static str,
    /// What it does, for the OpenAPI document.
    pub summary: &'static str,
    /// Its query parameters, for the OpenAPI document.
    pub query: &'static [&'static str],
    /// The schemas (in the OpenAPI document's components) of its JSON body and of its answer, if any.
    pub body: Option<&'static str>,
    pub answer: Option<&'static str>,
    handler: fn() -> MethodRouter<AdminState>,
}

/// Open to anyone who reaches the listener, whatever name they used: the health checks (probes address
/// the listener by whatever IP it has), which say nothing about the traffic.
pub const HEALTH_ROUTES: &[Route] = &[
    route("get", "/healthz", "Liveness", || get(health::healthz)),
    route("get", "/readyz", "Readiness of the caller's path", || {
        get(health::readyz)
    }),
    route("get", "/readyz/store", "Readiness of the store", || {
        get(health::readyz_store)
    }),
];

/// Open without a token: the login and logout forms and the page assets.
pub const PUBLIC_ROUTES: &[Route] = &[
    route("get", LOGIN, "The login form", || get(auth::login_page)),
    route("post", LOGIN, "Log in with the admin token", || {
        post(auth::login)
    }),
    route("post", LOGOUT, "Log out", || post(auth::logout)),
    route("get", "/static/{*file}", "Stylesheets and scripts", || {
        get(assets::serve)
    }),
];

/// The report's pages; with `--admin-token`, a request without it is sent to the login form.
pub const PAGE_ROUTES: &[Route] = &[
    route("get", HOME, "The latest run's overview", || {
        get(overview::home)
    }),
    route("get", RUN, "A run's overview", || get(overview::overview)),
    route("get", RUN_LIVE, "The overview's live part", || {
        get(overview::overview_live)
    }),
    route("post", RUN_CLEAR, "Delete a run", || {
        post(overview::clear_run)
    }),
    route(
        "post",
        CHANGE_ACCEPT,
        "Accept a change: an accept rule for each of its places",
        || post(changes::accept_page),
    ),
    route(
        "get",
        ENDPOINT,
        "An endpoint: its field tree and charts",
        || get(endpoint::endpoint_page),
    ),
    route(
        "get",
        ENDPOINT_LIVE,
        "The endpoint page's live part",
        || get(endpoint::endpoint_live),
    ),
    route(
        "post",
        ENDPOINT_RULES,
        "Add a rule from the field tree",
        || post(endpoint::add_rule),
    ),
    route("post", ENDPOINT_RULE_DELETE, "Remove a stored rule", || {
        post(endpoint::delete_rule)
    }),
    route(
        "get",
        ENDPOINT_SAMPLES,
        "Sample exchanges of a place",
        || get(samples::samples_page),
    ),
    route("get", EXCHANGE, "One exchange side by side", || {
        get(exchange::exchange_page)
    }),
    route(
        "get",
        EXCHANGE_FRAMES,
        "A gRPC call's raw frames, one side's, to download",
        || get(exchange::exchange_frames),
    ),
];

/// Prometheus' scrape; with `--admin-token`, a request without it is answered 401.
pub const METRICS_ROUTES: &[Route] = &[route("get", "/metrics", "Prometheus metrics", || {
    get(health::metrics)
})];

/// The JSON API (and the OpenAPI document's routes); with `--admin-token`, a request without it is answered
/// 401. `{run}` is a run label or `latest`; `{endpoint}` is URL-encoded (`GET%20%2Fusers%2F%7Bid%7D`).
pub const API_ROUTES: &[Route] = &[
    route(
        "get",
        "/api/v1/runs",
        "Runs, most recent first, with their request counts",
        || get(api::runs),
    ),
    api_route(
        "get",
        "/api/v1/runs/{run}",
        "A run's report: totals and every endpoint",
        &["range"],
        || get(api::run_report),
    ),
    Route {
        body: Some("StartRun"),
        answer: Some("StartedRun"),
        ..route(
            "post",
            "/api/v1/runs",
            "Start a run: the proxy (and its replicas) write into it from now on, the run before is closed and \
             kept. 201 when started, 200 when it already was the run being written",
            || post(delivery::start_run),
        )
    },
    Route {
        answer: Some("Verdict"),
        ..api_route(
            "get",
            "/api/v1/runs/{run}/verdict",
            "A run's verdict under the gate's options (`endpoint` repeatable); a run not seen yet answers 200 \
             with enough_data false",
            &[
                "max_diff_rate",
                "min_requests",
                "fail_on",
                "latency",
                "endpoint",
            ],
            || get(delivery::verdict),
        )
    },
    route(
        "delete",
        "/api/v1/runs/{run}",
        "Delete a run and everything counted for it",
        || delete(api::delete_run),
    ),
    api_route(
        "get",
        "/api/v1/runs/{run}/endpoints",
        "Every endpoint of a run, judged (the gate's `endpoints`)",
        &["range"],
        || get(api::endpoints),
    ),
    Route {
        answer: Some("Changes"),
        ..api_route(
            "get",
            "/api/v1/runs/{run}/changes",
            "A run's failing places grouped by cause, most failing requests first, each with its places, \
             consequences and predictors",
            &["range"],
            || get(changes::list),
        )
    },
    Route {
        body: Some("AcceptChange"),
        ..api_route(
            "post",
            "/api/v1/runs/{run}/changes/{id}/accept",
            "Accept a change as intended, as grouped over `range`: an accept rule for each of its places and \
             consequences, in one transaction (answers the new rules' ids)",
            &["range"],
            || post(changes::accept_api),
        )
    },
    api_route(
        "get",
        "/api/v1/runs/{run}/endpoints/{endpoint}/fields",
        "An endpoint's places with counts and verdicts",
        &["range"],
        || get(api::fields),
    ),
    api_route(
        "get",
        API_TIMELINE,
        "An endpoint minute by minute: requests, diff rate, latency",
        &["range"],
        || get(api::timeline),
    ),
    route(
        "get",
        "/api/v1/runs/{run}/templates",
        "Endpoint templates learned from traffic in a run, and which segment each generalised",
        || get(api::templates),
    ),
    api_route(
        "get",
        "/api/v1/runs/{run}/samples",
        "Sample exchanges of an endpoint, newest first, for a place (a path, and optionally a kind) or all: \
         the request line, the three statuses and the values at the place; `value` keeps those whose primary or \
         candidate value contains it; `feature` (with `feature_value`) keeps those whose request has a predictor's \
         feature; `limit` and `offset` page",
        &[
            "endpoint",
            "path",
            "kind",
            "value",
            "feature",
            "feature_value",
            "limit",
            "offset",
        ],
        || get(api::samples),
    ),
    route(
        "get",
        "/api/v1/exchanges/{id}",
        "One stored exchange, whole (redacted)",
        || get(api::exchange),
    ),
    route(
        "get",
        "/api/v1/rules",
        "Rules in force: from the rules file, and stored",
        || get(api::rules),
    ),
    Route {
        body: Some("Rule"),
        ..route(
            "post",
            "/api/v1/rules",
            "Add a rule (JSON body: endpoint, path, action, absolute, relative; kind, compat and note for accept)",
            || post(api::add_rule),
        )
    },
    route(
        "get",
        RULES_TOML,
        "The stored rules as a rules file (TOML), for --rules in CI",
        || get(api::rules_toml),
    ),
    route(
        "delete",
        "/api/v1/rules/{id}",
        "Remove a stored rule",
        || delete(api::delete_rule),
    ),
    route("get", "/api/v1/openapi.json", "This document", || {
        get(api::openapi)
    }),
];

/// Flagger's webhooks: Flagger cannot set headers, so with `--admin-token` they check the token in the
/// payload's `metadata.token` (or a bearer header) themselves.
pub const WEBHOOK_ROUTES: &[Route] = &[Route {
    body: Some("FlaggerPayload"),
    ..route(
        "post",
        "/api/v1/webhooks/flagger/{hook}",
        "Flagger webhook (`pre-rollout` starts the revision's run; `rollout` answers 412 when the verdict \
         fails on enough data; `confirm-promotion` answers 200 only when it passes)",
        || post(delivery::flagger),
    )
}];

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    handler: fn() -> MethodRouter<AdminState>,
) -> Route {
    api_route(method, path, summary, &[], handler)
}

const fn api_route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: &'static [&'static str],
    handler: fn() -> MethodRouter<AdminState>,
) -> Route {
    Route {
        method,
        path,
        summary,
        query,
        body: None,
        answer: None,
        handler,
    }
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
        router.route(route.path, (route.handler)())
    })
}

/// The admin listener: the health checks as they are; everything else only for the listener's own names and
/// with no cross-site changes (`guard`); the pages behind the login redirect, the API and the metrics behind
/// a 401, the webhooks checking the token themselves; the security headers on every answer.
pub fn router(state: AdminState) -> Router {
    let pages = routes(PAGE_ROUTES)
        .fallback(crate::web::pages::not_found)
        .layer(from_fn_with_state(state.clone(), auth::require_page_token));
    let api = routes(API_ROUTES)
        .merge(routes(METRICS_ROUTES))
        .layer(from_fn_with_state(state.clone(), auth::require_api_token));
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
