//! The report over HTTP: every page escapes what traffic put in the store and carries a strict CSP, the JSON
//! API has the documented shapes and routes, rules and run deletion work from the pages, the admin token
//! guards everything but health checks, and empty reports say what to do.

use shadowdiff::app::AppSettings;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::Value;

use crate::support::stub::{Stub, full};
use crate::support::{TestApp, client, wait_for};

pub const SCRIPT: &str = "<script>alert(1)</script>";
pub const IMG: &str = "\"><img src=x onerror=alert(1)>";

/// An upstream whose answers carry hostile strings in headers and bodies; the candidate renames a field and
/// answers HTML differently.
pub async fn hostile(role: &'static str) -> Stub {
    let clock = Arc::new(AtomicUsize::new(match role {
        "primary" => 0,
        "secondary" => 5_000,
        _ => 90_000,
    }));
    Stub::start(move |seen| {
        let tick = clock.fetch_add(1, Ordering::SeqCst);
        async move {
            if seen.uri.path() == "/page" {
                let line = if role == "candidate" { format!("<p>changed {SCRIPT}</p>") } else { "<p>same</p>".to_string() };
                return Response::builder()
                    .header("content-type", "text/html")
                    .body(full(format!("<html><body><h1>{IMG}</h1>{line}</body></html>")))
                    .unwrap();
            }
            let name = if role == "candidate" { "full_name" } else { "name" };
            let body = serde_json::json!({name: format!("ada {SCRIPT}"), "note": IMG, "served_at": tick, "id": 1});
            Response::builder()
                .header("content-type", "application/json")
                .header("x-note", if role == "candidate" { IMG } else { "plain" })
                .body(full(body.to_string()))
                .unwrap()
        }
    })
    .await
}

/// A stored report with a known regression, with hostile bytes in it, served by a running instance.
pub struct Report {
    pub app: TestApp,
    /// The store the report is in.
    pub database_url: String,
    _stubs: [Stub; 3],
    _database: tempfile::TempDir,
}

pub async fn report(change: impl FnOnce(&mut AppSettings)) -> Report {
    let (database, url) = crate::support::temp_database();
    let stubs = [
        hostile("primary").await,
        hostile("secondary").await,
        hostile("candidate").await,
    ];
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            s.writer.run = Some("hostile".into());
            s.writer.flush_interval = Duration::from_millis(50);
            change(s);
        },
        &url,
    )
    .await;
    let token = app.admin_token.clone();
    let mut sent = 0;
    for id in 0..20 {
        send(&app, &format!("/users/{id}"), None).await;
        sent += 1;
    }
    for _ in 0..3 {
        send(&app, "/page", None).await;
        send(&app, "/named", Some(SCRIPT)).await;
        sent += 2;
    }
    let runs_url = app.admin_url("/api/v1/runs");
    wait_for("the report to be stored", || {
        let (url, token) = (runs_url.clone(), token.clone());
        async move {
            let mut request = client().get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let runs: Value = request
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            runs.get(0).and_then(|run| run["requests"].as_u64()) == Some(sent)
        }
    })
    .await;
    Report {
        app,
        database_url: url,
        _stubs: stubs,
        _database: database,
    }
}

pub async fn send(app: &TestApp, path: &str, canonical: Option<&str>) {
    let mut request = client().get(app.url(path));
    if let Some(name) = canonical {
        request = request.header("canonical-resource", name);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
}

/// A page's HTML, checked for escaping and for the security headers.
pub async fn page(app: &TestApp, path: &str) -> String {
    let response = admin_get(app, path).await;
    assert_eq!(response.status(), 200, "{path}");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{path}: {csp}"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let html = response.text().await.unwrap();
    for raw in [SCRIPT, "<script>alert", "<img src=x", "onerror=alert(1)>"] {
        assert!(!html.contains(raw), "{path} shows `{raw}` unescaped");
    }
    // Templates escape with numeric references, hand-built fragments with named ones; compare one spelling.
    html.replace("&#60;", "&lt;")
        .replace("&#62;", "&gt;")
        .replace("&#34;", "&quot;")
        .replace("&#38;", "&amp;")
}

/// An admin path, fetched without a token.
pub async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    client().get(app.admin_url(path)).send().await.unwrap()
}

/// A form posted to an admin path without a token.
pub async fn admin_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(app.admin_url(path))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// An admin path's JSON, read without a token.
pub async fn admin_json(app: &TestApp, path: &str) -> Value {
    admin_get(app, path).await.json().await.unwrap()
}

/// An admin path's text, read without a token.
pub async fn admin_text(app: &TestApp, path: &str) -> String {
    admin_get(app, path).await.text().await.unwrap()
}

fn links(html: &str, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = html
        .match_indices(&format!("href=\"{prefix}"))
        .map(|(at, _)| {
            let start = at + "href=\"".len();
            let end = start + html[start..].find('"').unwrap();
            html[start..end].replace("&amp;", "&")
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_escapes_what_traffic_stored_and_sets_a_strict_csp() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let overview = page(app, "/").await;
    assert!(
        overview.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the hostile endpoint name is shown, escaped"
    );
    page(app, "/runs/hostile/live").await;
    // The endpoint pages (the changes link to samples too, which the endpoint pages reach below).
    let endpoints: Vec<String> = links(&overview, "/runs/hostile/endpoints/")
        .into_iter()
        .filter(|link| !link.contains("/samples"))
        .collect();
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    let mut exchanges = Vec::new();
    for endpoint in &endpoints {
        let html = page(app, endpoint).await;
        let live = endpoint.replacen("?", "/live?", 1);
        page(app, &live).await;
        for samples in links(&html, "/runs/hostile/endpoints/") {
            if samples.contains("/samples") {
                exchanges.extend(links(&page(app, &samples).await, "/exchanges/"));
            }
        }
    }
    exchanges.sort();
    exchanges.dedup();
    assert!(exchanges.len() >= 3, "{exchanges:?}");
    let mut saw_diff = false;
    for exchange in &exchanges {
        let html = page(app, exchange).await;
        assert!(
            html.contains("&lt;script&gt;") || html.contains("&quot;&gt;&lt;img"),
            "{exchange} shows the payloads, escaped"
        );
        saw_diff |= html.contains("class=\"udiff\"");
    }
    assert!(
        saw_diff,
        "the HTML endpoint's exchange shows a unified diff"
    );
    for path in ["/login", "/no-such-page", "/exchanges/no-such-id"] {
        let response = admin_get(app, path).await;
        assert!(
            response.headers().contains_key("content-security-policy"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_has_the_documented_shapes_and_every_route_in_openapi() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let get = |path: String| async move {
        let response = admin_get(app, &path).await;
        assert_eq!(response.status(), 200, "{path}");
        response.json::<Value>().await.unwrap()
    };
    let endpoints = get("/api/v1/runs/latest/endpoints".into()).await;
    let users = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "GET /users/{id}")
        .unwrap();
    for key in [
        "endpoint",
        "requests",
        "diff_rate",
        "noise_rate",
        "latency",
        "latency_regression",
        "regressions",
        "noise",
    ] {
        assert!(users.get(key).is_some(), "{key} missing: {users}");
    }
    for target in ["primary", "secondary", "candidate"] {
        assert!(
            users["latency"][target]["p50_ms"].is_f64()
                && users["latency"][target]["p99_ms"].is_f64()
        );
    }
    let regression = users["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "body/name")
        .unwrap();
    for key in ["path", "kind", "compat", "raw", "noise", "rate", "sample"] {
        assert!(regression.get(key).is_some(), "{key} missing: {regression}");
    }
    assert_eq!(regression["kind"], "missing");
    assert_eq!(regression["compat"], "breaking");
    let noise = users["noise"].as_array().unwrap();
    assert!(
        noise
            .iter()
            .any(|n| n["path"] == "body/served_at" && n["raw"].is_u64() && n["noise"].is_u64())
    );

    let sample = regression["sample"].as_str().unwrap().to_string();
    let openapi = get("/api/v1/openapi.json".into()).await;
    let paths = openapi["paths"].as_object().unwrap();
    let api_and_webhooks = || {
        shadowdiff::web::routes::API_ROUTES
            .iter()
            .chain(shadowdiff::web::routes::WEBHOOK_ROUTES)
    };
    for route in api_and_webhooks() {
        let documented = paths.get(route.path).and_then(|p| p.get(route.method));
        assert!(
            documented.is_some(),
            "{} {} is not in openapi.json",
            route.method,
            route.path
        );
    }
    let documented: usize = paths
        .values()
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, api_and_webhooks().count());
    let verdict = &paths["/api/v1/runs/{run}/verdict"]["get"];
    assert_eq!(
        verdict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Verdict"
    );
    let schema = &openapi["components"]["schemas"]["Verdict"];
    for field in [
        "run",
        "passed",
        "enough_data",
        "requests",
        "diff_rate",
        "breaking",
        "latency_regressions",
        "failing",
        "reason",
    ] {
        assert!(
            schema["properties"].get(field).is_some(),
            "Verdict.{field} is documented"
        );
    }

    // Every documented read answers (no 404 or 405 for a route that exists).
    for route in shadowdiff::web::routes::API_ROUTES
        .iter()
        .filter(|r| r.method == "get")
    {
        let path = route
            .path
            .replace("{run}", "latest")
            .replace("{endpoint}", "GET%20%2Fusers%2F%7Bid%7D")
            .replace("{id}", &sample);
        let query = if route.path.ends_with("/samples") {
            "?endpoint=GET%20%2Fusers%2F%7Bid%7D"
        } else {
            ""
        };
        if route.path.ends_with(".toml") {
            // The one read that is not JSON: a rules file.
            let response = admin_get(app, &path).await;
            assert_eq!(response.status(), 200, "{path}");
            let text = response.text().await.unwrap();
            assert!(text.starts_with("# shadowdiff rules"), "{text}");
            continue;
        }
        get(format!("{path}{query}")).await;
    }
    let exchange = get(format!("/api/v1/exchanges/{sample}")).await;
    assert_eq!(exchange["run"], "hostile");
    assert_eq!(exchange["endpoint"], "GET /users/{id}");
    let fields =
        get("/api/v1/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/fields".into()).await;
    assert_eq!(fields["requests"], 20);
    let missing = fields["places"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "body/name")
        .unwrap();
    assert_eq!(
        (missing["verdict"].as_str(), missing["relative"].as_f64()),
        (Some("regression"), Some(1.0))
    );
    let missing_run = admin_get(app, "/api/v1/runs/nope/endpoints").await;
    assert_eq!(missing_run.status(), 404);
    assert!(
        missing_run.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_a_path_from_the_page_changes_its_verdict_at_once() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let verdict_of = |path: &'static str| async move {
        let fields = admin_json(
            app,
            "/api/v1/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/fields",
        )
        .await;
        let place = fields["places"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["path"] == path)
            .cloned()
            .unwrap();
        (
            place["verdict"].as_str().unwrap().to_string(),
            place["rule"].as_str().map(str::to_string),
        )
    };
    assert_eq!(verdict_of("body/name").await, ("regression".into(), None));

    let form = admin_form(
        app,
        "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/rules",
        &[("path", "body/name"), ("action", "noise")],
    )
    .await;
    assert_eq!(form.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        verdict_of("body/name").await,
        ("noise".into(), Some("noise".into()))
    );
    let endpoints: Value = admin_json(app, "/api/v1/runs/hostile/endpoints").await;
    let users = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "GET /users/{id}")
        .unwrap();
    assert!(
        users["regressions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["path"] != "body/name")
    );

    let added = client()
        .post(app.admin_url("/api/v1/rules"))
        .json(&serde_json::json!({"endpoint": "GET /users/{id}", "path": "body/full_name", "action": "ignore"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    let id = added.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(
        verdict_of("body/full_name").await,
        ("noise".into(), Some("ignored".into()))
    );
    let bad = client()
        .post(app.admin_url("/api/v1/rules"))
        .json(&serde_json::json!({"path": "nowhere", "action": "ignore"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let rules: Value = admin_json(app, "/api/v1/rules").await;
    assert_eq!(rules["stored"].as_array().unwrap().len(), 2);
    let removed = client()
        .delete(app.admin_url(&format!("/api/v1/rules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        verdict_of("body/full_name").await,
        ("regression".into(), None)
    );
    let page = crate::web::page(app, "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D").await;
    assert!(page.contains("Rules in force here") && page.contains("body/name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_run_leaves_the_empty_state() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let cleared = client()
        .post(app.admin_url("/runs/hostile/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::SEE_OTHER);
    // The run this process writes is started again at once, empty, so that what follows the clear is kept.
    let runs: Value = admin_json(app, "/api/v1/runs").await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["label"], "hostile");
    let run: Value = admin_json(app, "/api/v1/runs/hostile").await;
    assert_eq!(
        run["endpoints"].as_array().map(Vec::len),
        Some(0),
        "{run:#}"
    );
    let html = page(app, "/").await;
    assert!(
        html.contains("No exchanges compared") && html.contains("send traffic through the proxy"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_differences_says_so() {
    let (database, url) = crate::support::temp_database();
    let same = [
        Stub::json(r#"{"ok":true}"#).await,
        Stub::json(r#"{"ok":true}"#).await,
        Stub::json(r#"{"ok":true}"#).await,
    ];
    let app = TestApp::start_stored(
        &same[0].url(),
        &same[1].url(),
        &same[2].url(),
        |s| {
            s.writer.run = Some("clean".into());
            s.writer.flush_interval = Duration::from_millis(50);
        },
        &url,
    )
    .await;
    for i in 0..5 {
        send(&app, &format!("/health/{i}"), None).await;
    }
    let endpoints_url = app.admin_url("/api/v1/runs/clean/endpoints");
    wait_for("the run to be stored", || {
        let url = endpoints_url.clone();
        async move {
            let response = client().get(url).send().await.unwrap();
            response.status() == 200 && response.json::<Value>().await.unwrap()[0]["requests"] == 5
        }
    })
    .await;
    let overview = page(&app, "/").await;
    assert!(
        overview.contains("No differences beyond noise in 5 requests"),
        "{overview}"
    );
    let endpoint = page(&app, "/runs/clean/endpoints/GET%20%2Fhealth%2F%7Bid%7D").await;
    assert!(endpoint.contains("No differences here"), "{endpoint}");
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_everything_but_health() {
    let report = report(|s| s.web.token = Some("s3cret-token".to_string())).await;
    let app = &report.app;
    let home = admin_get(app, "/runs/hostile?range=1h").await;
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        home.headers()["location"],
        "/login?next=/runs/hostile%3Frange%3D1h"
    );
    for path in ["/api/v1/runs", "/metrics"] {
        let refused = admin_get(app, path).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
        let allowed = client()
            .get(app.admin_url(path))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status(), StatusCode::OK, "{path}");
    }
    let wrong = client()
        .get(app.admin_url("/api/v1/runs"))
        .bearer_auth("s3cret-tokeN")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/readyz", "/login", "/static/app.css"] {
        assert_eq!(admin_get(app, open).await.status(), 200, "{open}");
    }
    let failed = admin_form(app, "/login", &[("token", "guess"), ("next", "/")]).await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let signed_in = admin_form(
        app,
        "/login",
        &[("token", "s3cret-token"), ("next", "/runs/hostile")],
    )
    .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/runs/hostile");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("s3cret-token")
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = client()
        .get(app.admin_url("/runs/hostile"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_endpoints_latency_and_queues() {
    let report = report(|_| {}).await;
    let text = admin_text(&report.app, "/metrics").await;
    for expected in [
        "shadowdiff_endpoint_requests_total{endpoint=\"GET /users/{id}\"} 20",
        "shadowdiff_upstream_latency_seconds_bucket{le=",
        "shadowdiff_upstream_latency_seconds_count{target=\"candidate\"} 26",
        "shadowdiff_queue_depth{queue=\"exchanges\"}",
        "shadowdiff_store_writes_total{result=\"ok\"}",
        "shadowdiff_shadow_shed_total{target=\"candidate\"} 0",
        "shadowdiff_differences_total{side=\"candidate\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fragments_answer_not_modified_until_the_report_changes() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let live = "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/live";
    let first = admin_get(app, live).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(first.text().await.unwrap().contains("Requests compared"));
    let page = admin_text(app, "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D").await;
    assert!(
        page.contains(&format!("data-etag=\"{}\"", etag.replace('"', "&#34;")))
            || page.contains(&format!("data-etag=\"{}\"", etag.replace('"', "&quot;"))),
        "the page names the fragment it was drawn with"
    );
    let conditional = |etag: String| async move {
        client()
            .get(app.admin_url(live))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap()
    };
    let unchanged = conditional(etag.clone()).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.headers()["etag"].to_str().unwrap(), etag);

    send(app, "/users/77", None).await;
    let url = app.admin_url("/api/v1/runs/hostile/endpoints");
    wait_for("the new request to be stored", || {
        let url = url.clone();
        async move {
            let endpoints = crate::support::get_json(&url).await;
            endpoints
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["endpoint"] == "GET /users/{id}" && e["requests"] == 21)
        }
    })
    .await;
    let changed = conditional(etag.clone()).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_page_tells_the_samples_per_path_in_force() {
    let report = report(|s| s.writer.samples_per_path = 3).await;
    let html = page(
        &report.app,
        "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/samples?path=body/nowhere&kind=missing",
    )
    .await;
    assert!(
        html.contains("Samples are kept for the first 3 exchanges of each place"),
        "{html}"
    );
    report.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_page_is_a_404_page_and_behind_the_token() {
    let report = report(|s| s.web.token = Some("s3cret-token".into())).await;
    let response = admin_get(&report.app, "/no/such/page").await;
    assert_eq!(response.status(), 303, "to the login form first");
    let response = client()
        .get(report.app.admin_url("/no/such/page"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("/no/such/page"));
    report.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_are_readable_in_the_list_filtered_by_value_and_paged() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let api = |query: &str| {
        let url = app.admin_url(&format!(
            "/api/v1/runs/hostile/samples?endpoint=GET%20%2Fusers%2F%7Bid%7D{query}"
        ));
        async move { client().get(url).send().await.unwrap() }
    };
    // `kind` is optional: every kind at the path.
    let listed: Value = api("&path=body/name").await.json().await.unwrap();
    let listed = listed.as_array().unwrap();
    assert!(!listed.is_empty());
    for sample in listed {
        assert_eq!(sample["method"], "GET");
        assert!(
            sample["target"].as_str().unwrap().starts_with("/users/"),
            "{sample}"
        );
        assert_eq!(
            sample["statuses"],
            serde_json::json!({"primary": 200, "secondary": 200, "candidate": 200})
        );
        let value = &sample["values"][0];
        assert_eq!(value["path"], "body/name");
        assert_eq!(value["kind"], "missing");
        assert_eq!(value["primary"], format!("\"ada {SCRIPT}\""));
        assert!(
            value["candidate"].is_null(),
            "absent on the candidate: {value}"
        );
    }
    let kinds: Value = api("&path=body/name&kind=missing")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kinds.as_array().unwrap().len(), listed.len());
    let none: Value = api("&path=body/name&kind=extra")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, serde_json::json!([]));
    // Filtered by value, and paged.
    let matching: Value = api("&path=body/full_name&value=script")
        .await
        .json()
        .await
        .unwrap();
    assert!(!matching.as_array().unwrap().is_empty());
    let unmatched: Value = api("&path=body/full_name&value=nothing-like-this")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unmatched, serde_json::json!([]));
    let first: Value = api("&limit=1").await.json().await.unwrap();
    let second: Value = api("&limit=1&offset=1").await.json().await.unwrap();
    assert_eq!(
        (
            first.as_array().unwrap().len(),
            second.as_array().unwrap().len()
        ),
        (1, 1)
    );
    assert_ne!(first[0]["id"], second[0]["id"]);
    assert_eq!(
        api("&kind=missing").await.status(),
        400,
        "a kind needs its path"
    );

    // The page shows the same, every stored byte escaped, the differing part marked.
    let html = page(
        app,
        "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/samples?path=body/full_name",
    )
    .await;
    assert!(html.contains("<code>GET /users/"), "the request line");
    assert!(!html.contains(SCRIPT), "stored markup is escaped");
    assert!(html.contains("ada &lt;script&gt;"), "{html}");
    assert!(html.contains(r#"<mark class="mark-extra">"#), "{html}");
    let filtered = page(
        app,
        "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/samples?path=body/full_name&value=nothing-like-this",
    )
    .await;
    assert!(
        filtered.contains("No sample of this place has a value containing"),
        "{filtered}"
    );
    report.app.stop().await;
}

/// Writes the fixture's run as a report file; its path.
pub async fn report_file(report: &Report, dir: &std::path::Path) -> std::path::PathBuf {
    let output = dir.join("report.html");
    let ran = crate::support::process::run_command(&[
        "report",
        "--database-url",
        &report.database_url,
        "--run",
        "hostile",
        "--output",
        output.to_str().unwrap(),
    ])
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("run hostile: failed"), "{}", ran.stderr);
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_file_is_self_contained_and_escapes_every_stored_byte() {
    let report = report(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(report_file(&report, dir.path()).await).unwrap();
    assert!(html.contains("<h1>hostile</h1>"), "{html}");
    assert!(html.contains("<strong>FAILED</strong>"));
    assert!(html.contains("<code>GET /users/{id}</code>"));
    assert!(html.contains("<code>body/name</code>") && html.contains("breaking"));
    assert!(
        html.contains(r#"<div class="side-by-side">"#),
        "a sample side by side"
    );
    // Nothing is loaded: no script, no external reference, and a policy that forbids loading anything.
    assert!(
        html.contains(r#"content="default-src 'none'; style-src 'unsafe-inline'; img-src data:""#)
    );
    for forbidden in ["url(", "@import"] {
        assert!(
            !html.contains(forbidden),
            "`{forbidden}` in the report file"
        );
    }
    // Every element is one the report is made of: stored markup came out as text, never as a tag.
    let made_of = [
        "html", "head", "meta", "title", "style", "body", "main", "section", "h1", "h2", "h3", "p",
        "strong", "span", "table", "thead", "tbody", "tr", "th", "td", "code", "svg", "path",
        "div", "pre", "details", "summary", "br", "mark", "ol", "ul", "li",
    ];
    for (at, _) in html.match_indices('<') {
        let name: String = html[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            name.is_empty() || made_of.contains(&name.as_str()),
            "<{name}> in the report file"
        );
    }
    assert!(
        html.contains("ada &lt;script&gt;alert(1)&lt;/script&gt;")
            || html.contains("ada &#60;script&#62;"),
        "escaped, shown as text"
    );
    let missing = crate::support::process::run_command(&[
        "report",
        "--database-url",
        &report.database_url,
        "--run",
        "nope",
        "--output",
        dir.path().join("x.html").to_str().unwrap(),
    ])
    .await;
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("no run labelled `nope`"),
        "{}",
        missing.stderr
    );
    report.app.stop().await;
}
