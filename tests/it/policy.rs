//! What gets shadowed: side-effect methods and sampling.

use http::HeaderName;
use shadowdiff::app::AppSettings;
use std::collections::HashMap;

use http::Method;
use shadowdiff::analysis::rules::EndpointGlob;
use shadowdiff::proxy::metrics::UnshadowedReason;

use crate::support::{TestApp, Upstreams, client, wait_until};

async fn upstreams() -> Upstreams {
    Upstreams::json(r#"{"ok":true}"#).await
}

async fn start(upstreams: &Upstreams, change: impl FnOnce(&mut AppSettings)) -> TestApp {
    TestApp::start_for(upstreams, change).await
}

async fn send(app: &TestApp, method: Method, path: &str) {
    let response = client()
        .request(method.clone(), app.url(path))
        .body(format!("{method} body"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{method}");
    assert_eq!(response.text().await.unwrap(), r#"{"ok":true}"#);
}

#[tokio::test]
async fn side_effect_methods_go_to_primary_only_by_default() {
    let upstreams = upstreams().await;
    let mut app = start(&upstreams, |_| {}).await;
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        send(&app, method.clone(), "/orders/9").await;
        let seen = upstreams.primary.next_request().await;
        assert_eq!(seen.method, method);
        assert_eq!(seen.body, format!("{method} body").as_bytes());
    }
    assert_eq!(
        app.metrics.proxy.unshadowed_count(UnshadowedReason::Method),
        3
    );

    // A GET afterwards is shadowed; its exchange is the first and only one.
    send(&app, Method::GET, "/orders/9").await;
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.method, Method::GET);
    assert!(app.try_exchange().is_none());
    assert_eq!(upstreams.secondary.next_request().await.method, Method::GET);
    assert_eq!(upstreams.candidate.next_request().await.method, Method::GET);
    assert_eq!(upstreams.secondary.hits(), 1);
    assert_eq!(upstreams.candidate.hits(), 1);
    // The shadow thread counts the exchange just after handing it on.
    let queued = || {
        app.metrics
            .queues
            .queued_count(shadowdiff::pipeline::metrics::Queue::Exchanges)
    };
    wait_until("the exchange to be counted", || queued() > 0).await;
    assert_eq!(queued(), 1);
}

#[tokio::test]
async fn allow_side_effects_shadows_every_method() {
    let upstreams = upstreams().await;
    let mut app = start(&upstreams, |s| s.proxy.shadow.allow_side_effects = true).await;
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        send(&app, method.clone(), "/orders/9").await;
        let exchange = app.next_exchange().await;
        assert_eq!(exchange.request.method, method);
        assert_eq!(exchange.request.body, format!("{method} body").as_bytes());
        for stub in [&upstreams.secondary, &upstreams.candidate] {
            let seen = stub.next_request().await;
            assert_eq!(seen.method, method);
            assert_eq!(seen.body, format!("{method} body").as_bytes());
        }
    }
    assert_eq!(
        app.metrics.proxy.unshadowed_count(UnshadowedReason::Method),
        0
    );
}

#[tokio::test]
async fn shadow_methods_lists_exactly_what_is_shadowed() {
    let upstreams = upstreams().await;
    let mut app = start(&upstreams, |s| {
        s.proxy.shadow.methods = "GET,DELETE".parse().unwrap()
    })
    .await;
    send(&app, Method::POST, "/a").await;
    send(&app, Method::PUT, "/a").await;
    send(&app, Method::DELETE, "/a").await;
    assert_eq!(
        app.metrics.proxy.unshadowed_count(UnshadowedReason::Method),
        2
    );
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.method, Method::DELETE);
    assert_eq!(
        upstreams.candidate.next_request().await.method,
        Method::DELETE
    );
}

#[tokio::test]
async fn sampling_by_key_is_all_or_nothing_per_key() {
    let upstreams = upstreams().await;
    let mut app = start(&upstreams, |s| {
        s.proxy.shadow.sample_rate = 0.5;
        s.proxy.shadow.sample_key_header = Some(HeaderName::from_static("x-user"));
    })
    .await;
    let users = 40;
    let repeats = 3;
    for round in 0..repeats {
        for user in 0..users {
            let response = client()
                .get(app.url(&format!("/feed?round={round}")))
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    let sampled_out = app
        .metrics
        .proxy
        .unshadowed_count(UnshadowedReason::SampledOut) as usize;
    let shadowed = users * repeats - sampled_out;
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for _ in 0..shadowed {
        let exchange = app.next_exchange().await;
        let user = exchange.request.headers["x-user"]
            .to_str()
            .unwrap()
            .to_string();
        *per_user.entry(user).or_default() += 1;
    }
    assert!(app.try_exchange().is_none());
    assert!(
        per_user.values().all(|count| *count == repeats),
        "{per_user:?}"
    );
    // 40 keys at 0.5: some in and some out (a fixed outcome, as the hash is fixed).
    assert!(
        !per_user.is_empty() && per_user.len() < users,
        "{} of {users} keys shadowed",
        per_user.len()
    );
}

#[tokio::test]
async fn no_shadow_patterns_keep_requests_to_primary_alone() {
    let upstreams = upstreams().await;
    let mut app = start(&upstreams, |s| {
        s.proxy.shadow.allow_side_effects = true;
        s.proxy.shadow.never = vec![
            EndpointGlob::parse("POST /oauth/token").unwrap(),
            EndpointGlob::parse("/links/*").unwrap(),
        ];
    })
    .await;
    send(&app, Method::POST, "/oauth/token").await;
    send(&app, Method::GET, "/links/one-time-abc").await;
    send(&app, Method::GET, "/oauth/token").await;
    // Only the GET of /oauth/token (another method) is shadowed.
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.uri.path(), "/oauth/token");
    assert_eq!(exchange.request.method, Method::GET);
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::Excluded),
        2
    );
    assert_eq!(upstreams.primary.hits(), 3);
    assert_eq!(upstreams.secondary.hits(), 1);
    assert_eq!(upstreams.candidate.hits(), 1);
}

#[tokio::test]
async fn per_endpoint_sample_rates_in_the_rules_file_win_over_the_global_rate() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[sample]]\nendpoint = \"POST /login\"\nrate = 0\n\n[[sample]]\nendpoint = \"/links/{token}\"\nrate = 0.0\n",
    )
    .unwrap();
    let upstreams = upstreams().await;
    let mut app = start(&upstreams, |s| {
        s.proxy.shadow.allow_side_effects = true;
        s.analysis.rules = Some(rules.clone());
    })
    .await;
    send(&app, Method::POST, "/login").await;
    send(&app, Method::GET, "/links/abc").await;
    send(&app, Method::GET, "/items/1").await;
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.uri.path(), "/items/1");
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::SampledOut),
        2
    );
    assert_eq!(upstreams.secondary.hits(), 1);
}
