//! GraphQL operations shadowed by what they do: queries whatever their method, mutations never by default, an
//! operation known only by its persisted hash never; each named after its operation.

use http::Method;
use shadowdiff::app::AppSettings;
use shadowdiff::graphql::GraphqlMode;
use shadowdiff::proxy::metrics::UnshadowedReason;

use crate::support::{TestApp, Upstreams, client};

async fn start(upstreams: &Upstreams, change: impl FnOnce(&mut AppSettings)) -> TestApp {
    TestApp::start_for(upstreams, change).await
}

/// Sends `body` as a JSON POST, checks it was answered 200 and gives back the answer's body.
pub async fn post_json(app: &TestApp, path: &str, body: &str) -> String {
    let response = client()
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{body}");
    response.text().await.unwrap()
}

/// Sends `body` as a JSON POST and checks the caller got primary's answer.
async fn post(app: &TestApp, path: &str, body: &str) {
    assert_eq!(post_json(app, path, body).await, r#"{"data":{"ok":true}}"#);
}

async fn get(app: &TestApp, path: &str) {
    let response = client().get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
}

/// The next exchange is for `body`, sent to both shadows, and named `endpoint`: requests sent before it and not
/// shadowed never reached them.
async fn next_shadowed(app: &mut TestApp, upstreams: &Upstreams, body: &str, endpoint: &str) {
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.endpoint, endpoint);
    assert_eq!(exchange.request.body, body.as_bytes());
    for stub in [&upstreams.secondary, &upstreams.candidate] {
        assert_eq!(stub.next_request().await.body, body.as_bytes());
    }
}

const QUERY: &str = r#"{"query":"query Posts { allPosts { id } }","variables":{"first":2}}"#;
const MUTATION: &str = r#"{"query":"mutation { createPost(title: \"t\") { id } }"}"#;

#[tokio::test]
async fn queries_are_shadowed_whatever_their_method_and_mutations_are_not() {
    let upstreams = Upstreams::json(r#"{"data":{"ok":true}}"#).await;
    let mut app = start(&upstreams, |_| {}).await;

    post(&app, "/graphql", MUTATION).await;
    post(
        &app,
        "/graphql",
        r#"[{"query":"{ a }"},{"query":"mutation { b }"}]"#,
    )
    .await;
    post(
        &app,
        "/graphql",
        r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"abc"}}}"#,
    )
    .await;
    post(&app, "/orders", r#"{"item":42}"#).await;
    get(&app, "/graphql?query=mutation%20%7B%20b%20%7D").await;
    let mut methods = Vec::new();
    for _ in 0..5 {
        methods.push(upstreams.primary.next_request().await.method);
    }
    assert_eq!(
        methods
            .iter()
            .filter(|method| **method == Method::POST)
            .count(),
        4
    );
    let proxy = &app.metrics.proxy;
    assert_eq!(
        proxy.unshadowed_count(UnshadowedReason::GraphqlSideEffect),
        3
    );
    assert_eq!(proxy.unshadowed_count(UnshadowedReason::GraphqlUnknown), 1);
    assert_eq!(proxy.unshadowed_count(UnshadowedReason::Method), 1);

    post(&app, "/graphql", QUERY).await;
    next_shadowed(&mut app, &upstreams, QUERY, "GraphQL query Posts").await;

    // Off the GraphQL path, a JSON POST holding a query is recognised too, and named by its root fields.
    let anonymous = r#"{"query":"{ _allPostsMeta { count } allPosts { id } }"}"#;
    post(&app, "/api", anonymous).await;
    next_shadowed(
        &mut app,
        &upstreams,
        anonymous,
        "GraphQL query allPosts+_allPostsMeta",
    )
    .await;

    let batch = r#"[{"query":"query A { a }"},{"query":"{ b }"}]"#;
    post(&app, "/graphql", batch).await;
    next_shadowed(
        &mut app,
        &upstreams,
        batch,
        "GraphQL batch query A, query b",
    )
    .await;

    get(&app, "/graphql?query=%7B%20me%20%7D").await;
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.endpoint, "GraphQL query me");
    assert!(app.try_exchange().is_none());
}

#[tokio::test]
async fn graphql_off_no_shadow_and_allow_side_effects_keep_their_meaning() {
    let upstreams = Upstreams::json(r#"{"data":{"ok":true}}"#).await;
    let mut off = start(&upstreams, |settings| {
        settings.proxy.shadow.graphql.mode = GraphqlMode::Off
    })
    .await;
    post(&off, "/graphql", QUERY).await;
    upstreams.primary.next_request().await;
    assert_eq!(
        off.metrics.proxy.unshadowed_count(UnshadowedReason::Method),
        1
    );
    get(&off, "/graphql?query=%7B%20me%20%7D").await;
    assert_eq!(off.next_exchange().await.endpoint, "GET /graphql");
    off.stop().await;

    let upstreams = Upstreams::json(r#"{"data":{"ok":true}}"#).await;
    let excluded = start(&upstreams, |settings| {
        settings.proxy.shadow.never = vec![
            shadowdiff::analysis::rules::EndpointGlob::parse_template("POST /graphql").unwrap(),
        ]
    })
    .await;
    post(&excluded, "/graphql", QUERY).await;
    upstreams.primary.next_request().await;
    assert_eq!(
        excluded
            .metrics
            .proxy
            .unshadowed_count(UnshadowedReason::Excluded),
        1
    );

    let upstreams = Upstreams::json(r#"{"data":{"ok":true}}"#).await;
    let mut allowed = start(&upstreams, |settings| {
        settings.proxy.shadow.allow_side_effects = true
    })
    .await;
    post(&allowed, "/graphql", MUTATION).await;
    next_shadowed(
        &mut allowed,
        &upstreams,
        MUTATION,
        "GraphQL mutation createPost",
    )
    .await;
}

/// `{"extensions":{"persistedQuery":...}}` for `text`, with the text too or by its hash alone.
fn persisted(text: &str, with_text: bool) -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let extensions = format!(r#"{{"persistedQuery":{{"version":1,"sha256Hash":"{hash}"}}}}"#);
    if with_text {
        format!(
            r#"{{"query":{},"extensions":{extensions}}}"#,
            serde_json::json!(text)
        )
    } else {
        format!(r#"{{"extensions":{extensions}}}"#)
    }
}

#[tokio::test]
async fn a_persisted_query_is_shadowed_with_its_text_once_its_hash_has_been_seen_with_it() {
    let upstreams = Upstreams::json(r#"{"data":{"ok":true}}"#).await;
    let mut app = start(&upstreams, |_| {}).await;
    let text = "query Feed { feed { id } }";
    let by_hash = persisted(text, false);

    // A hash never seen with its text: what it does is not known.
    post(&app, "/graphql", &by_hash).await;
    assert_eq!(
        upstreams.primary.next_request().await.body,
        by_hash.as_bytes()
    );
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::GraphqlUnknown),
        1
    );

    let with_text = persisted(text, true);
    post(&app, "/graphql", &with_text).await;
    next_shadowed(&mut app, &upstreams, &with_text, "GraphQL query Feed").await;

    // Known now: primary gets the caller's request, the shadows the text beside the hash, as after a miss.
    post(&app, "/graphql", &by_hash).await;
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.endpoint, "GraphQL query Feed");
    assert_eq!(exchange.request.body, by_hash.as_bytes());
    for stub in [&upstreams.secondary, &upstreams.candidate] {
        let seen: serde_json::Value =
            serde_json::from_slice(&stub.next_request().await.body).unwrap();
        assert_eq!(seen["query"], text);
        assert_eq!(
            seen["extensions"],
            serde_json::from_str::<serde_json::Value>(&by_hash).unwrap()["extensions"]
        );
    }

    // A text whose hash is not its own teaches nothing: a mutation cannot pass for a known query.
    let forged = persisted("mutation Drop { drop }", true)
        .replace("mutation Drop { drop }", "query Feed { feed { id } }");
    let forged_hash_only = persisted("mutation Drop { drop }", false);
    post(&app, "/graphql", &forged).await;
    next_shadowed(&mut app, &upstreams, &forged, "GraphQL query Feed").await;
    post(&app, "/graphql", &forged_hash_only).await;
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::GraphqlUnknown),
        2
    );

    // By GET, the shadows are sent the text as `query`.
    let extensions =
        serde_json::from_str::<serde_json::Value>(&by_hash).unwrap()["extensions"].to_string();
    let path = format!(
        "/graphql?extensions={}",
        shadowdiff::encoding::percent_encode(&extensions, b"")
    );
    get(&app, &path).await;
    assert_eq!(app.next_exchange().await.endpoint, "GraphQL query Feed");
    for stub in [&upstreams.secondary, &upstreams.candidate] {
        let seen = stub.next_request().await;
        let query = seen.uri.query().unwrap_or_default().to_string();
        assert!(
            query.ends_with(&format!(
                "&query={}",
                shadowdiff::encoding::percent_encode(text, b"")
            )),
            "{query}"
        );
    }
}
