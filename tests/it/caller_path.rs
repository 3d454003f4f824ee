//! The caller's path never waits for the shadows, and nothing a shadow does changes what the caller receives.

use bytes::Bytes;
use http::Response;
use shadowdiff::exchange::ErrorKind;
use shadowdiff::exchange::{Target, UpstreamError};
use std::time::Duration;

use crate::support::stub::{Gate, Misbehaviour, RawPeer, Refusing, Stub, channel_body};
use crate::support::{TestApp, Upstreams, client, patience};

const PRIMARY_BODY: &str = r#"{"user":{"id":1,"name":"ada"}}"#;

#[tokio::test]
async fn caller_gets_primary_while_the_candidate_holds_its_answer() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let gate = Gate::new();
    let candidate = Stub::gated_json(&gate, r#"{"user":{"id":1,"name":"bob"}}"#).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;

    let response = client().get(app.url("/users/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), PRIMARY_BODY);

    // The candidate has the request and is still holding its answer: the exchange cannot be complete.
    let seen = candidate.next_request().await;
    assert_eq!(seen.headers["x-shadowdiff-role"], "candidate");
    assert!(
        app.try_exchange().is_none(),
        "exchange completed before the candidate answered"
    );

    gate.open();
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.endpoint, "GET /users/{id}");
    let body = |target: Target| {
        exchange
            .outcome(target)
            .response()
            .and_then(|response| response.body.bytes().cloned())
            .unwrap_or_default()
    };
    assert_eq!(body(Target::Primary), PRIMARY_BODY.as_bytes());
    assert_eq!(body(Target::Secondary), PRIMARY_BODY.as_bytes());
    assert_eq!(
        body(Target::Candidate),
        &br#"{"user":{"id":1,"name":"bob"}}"#[..]
    );
}

/// Sends `/users/1` through a proxy whose candidate is `candidate_url` and checks the caller sees primary's
/// answer, byte for byte.
async fn caller_unaffected(app: &TestApp) {
    for _ in 0..3 {
        let response = client().get(app.url("/users/1")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.text().await.unwrap(), PRIMARY_BODY);
    }
}

#[tokio::test]
async fn a_dead_candidate_changes_nothing_for_the_caller() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let refused = Refusing::new();
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &refused.url(), |_| {}).await;
    caller_unaffected(&app).await;
    let exchange = app.next_exchange().await;
    assert!(
        matches!(exchange.candidate.error(), Some(UpstreamError::Connect(_))),
        "{:?}",
        exchange.candidate
    );
    assert!(exchange.primary.response().is_some());
    for _ in 0..2 {
        app.next_exchange().await;
    }
    assert_eq!(
        app.metrics
            .proxy
            .upstream_error_count(Target::Candidate, ErrorKind::Connect),
        3
    );
    assert_eq!(
        app.metrics
            .proxy
            .upstream_error_count(Target::Primary, ErrorKind::Connect),
        0
    );
}

#[tokio::test]
async fn a_candidate_that_never_answers_changes_nothing_for_the_caller() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let candidate = RawPeer::start(Misbehaviour::BlackHole).await;
    // A shadow timeout far longer than the test: the caller's answers cannot be waiting for it.
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.upstreams.shadow_timeout = Duration::from_secs(3600)
    })
    .await;
    caller_unaffected(&app).await;
    assert!(app.try_exchange().is_none());
    let metrics = app.scrape().await;
    assert!(
        metrics.contains("shadowdiff_shadow_inflight{target=\"candidate\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_black_holed_candidate_times_out_in_the_background() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let candidate = RawPeer::start(Misbehaviour::BlackHole).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.upstreams.shadow_timeout = Duration::from_millis(200)
    })
    .await;
    caller_unaffected(&app).await;
    for _ in 0..3 {
        let exchange = app.next_exchange().await;
        assert_eq!(
            exchange.candidate.error().map(UpstreamError::kind),
            Some(ErrorKind::Timeout)
        );
        assert!(exchange.secondary.response().is_some());
    }
    assert_eq!(
        app.metrics
            .proxy
            .upstream_error_count(Target::Candidate, ErrorKind::Timeout),
        3
    );
}

#[tokio::test]
async fn a_candidate_resetting_mid_body_changes_nothing_for_the_caller() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let candidate = RawPeer::start(Misbehaviour::ResetMidBody).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    caller_unaffected(&app).await;
    for _ in 0..3 {
        let exchange = app.next_exchange().await;
        assert_eq!(
            exchange.candidate.error().map(UpstreamError::kind),
            Some(ErrorKind::Reset),
            "{:?}",
            exchange.candidate
        );
    }
    assert_eq!(candidate.accepted(), 3);
}

#[tokio::test]
async fn a_candidate_speaking_garbage_is_a_protocol_error() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let candidate = RawPeer::start(Misbehaviour::Garbage).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    caller_unaffected(&app).await;
    let exchange = app.next_exchange().await;
    assert_eq!(
        exchange.candidate.error().map(UpstreamError::kind),
        Some(ErrorKind::Protocol),
        "{:?}",
        exchange.candidate
    );
}

#[tokio::test]
async fn primary_body_streams_to_the_caller_and_is_kept_for_comparison() {
    let (chunks_tx, body) = channel_body();
    let body = std::sync::Mutex::new(Some(body));
    let primary = Stub::start(move |_| {
        let body = body.lock().unwrap().take().expect("one request");
        async move {
            Response::builder()
                .header("content-type", "text/plain")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let secondary = Stub::json("{}").await;
    let candidate = Stub::json("{}").await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;

    let mut response = client().get(app.url("/stream")).send().await.unwrap();
    chunks_tx
        .send(Bytes::from_static(b"first chunk;"))
        .await
        .unwrap();
    // The first chunk reaches the caller while primary has not finished its body.
    let first = patience("the first chunk", response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, &b"first chunk;"[..]);
    chunks_tx
        .send(Bytes::from_static(b"second chunk"))
        .await
        .unwrap();
    drop(chunks_tx);
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second chunk");

    let exchange = app.next_exchange().await;
    let kept = exchange
        .primary
        .response()
        .unwrap()
        .body
        .bytes()
        .cloned()
        .unwrap();
    assert_eq!(kept, &b"first chunk;second chunk"[..]);
}

#[tokio::test]
async fn shadows_over_the_in_flight_bound_are_shed_and_counted() {
    let primary = Stub::json(PRIMARY_BODY).await;
    let secondary = Stub::json(PRIMARY_BODY).await;
    let gate = Gate::new();
    let candidate = Stub::gated_json(&gate, PRIMARY_BODY).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.shadow.max_inflight = 1
    })
    .await;

    caller_unaffected_once(&app, "/users/1").await;
    candidate.next_request().await;
    // The candidate's one permit is held: the next two shadow requests for it are shed.
    caller_unaffected_once(&app, "/users/2").await;
    caller_unaffected_once(&app, "/users/3").await;
    assert_eq!(app.metrics.proxy.shed_count(Target::Candidate), 2);

    for _ in 0..2 {
        let exchange = app.next_exchange().await;
        assert_eq!(exchange.candidate.error(), Some(&UpstreamError::Shed));
    }
    gate.open();
    let last = app.next_exchange().await;
    assert!(last.candidate.response().is_some());
    assert_eq!(candidate.hits(), 1);
}

async fn caller_unaffected_once(app: &TestApp, path: &str) {
    let response = client().get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), PRIMARY_BODY);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let (
        mut app,
        Upstreams {
            primary,
            secondary,
            candidate,
        },
    ) = TestApp::with_json_upstreams(PRIMARY_BODY, |settings| {
        // Each caller thread keeps its own pool to primary: with one, one connection is the whole pool.
        settings.proxy.caller_threads = Some(1);
    })
    .await;
    for _ in 0..10 {
        caller_unaffected_once(&app, "/users/1").await;
        // Waiting for each exchange makes the requests sequential, so one connection per upstream suffices.
        app.next_exchange().await;
    }
    assert_eq!(primary.hits(), 10);
    assert_eq!(primary.connections(), 1);
    assert_eq!(secondary.connections(), 1);
    assert_eq!(candidate.connections(), 1);
}

/// Callers are served by a thread per listener, each keeping a pool to primary of its own: however many
/// caller connections come and go, primary sees at most one connection per caller thread when requests come
/// one at a time, and every caller gets primary's answer.
#[tokio::test]
async fn each_caller_thread_keeps_one_pool_to_primary() {
    let (mut app, Upstreams { primary, .. }) =
        TestApp::with_json_upstreams(PRIMARY_BODY, |settings| {
            settings.proxy.caller_threads = Some(2);
        })
        .await;
    for _ in 0..20 {
        // A client of its own each time: a new caller connection, which the kernel gives to either listener.
        caller_unaffected_once(&app, "/users/1").await;
        app.next_exchange().await;
    }
    assert_eq!(primary.hits(), 20);
    assert!(
        (1..=2).contains(&primary.connections()),
        "{} connections to primary from 2 caller threads",
        primary.connections()
    );
}

#[tokio::test]
async fn a_full_exchange_queue_drops_and_counts_without_delaying_callers() {
    use shadowdiff::pipeline::metrics::{DropReason, Queue};

    let (mut app, _upstreams) =
        TestApp::with_json_upstreams(PRIMARY_BODY, |s| s.proxy.exchange_queue = 1).await;
    let metrics = app.metrics.clone();
    let offered = |n: u64| {
        let metrics = metrics.clone();
        patience("exchanges to be offered", async move {
            while metrics.queues.queued_count(Queue::Exchanges)
                + metrics
                    .queues
                    .dropped_count(Queue::Exchanges, DropReason::QueueFull)
                < n
            {
                tokio::task::yield_now().await;
            }
        })
    };
    // Nobody reads the queue: the first exchange fills it, the next two are dropped; callers are served.
    caller_unaffected_once(&app, "/users/1").await;
    offered(1).await;
    caller_unaffected_once(&app, "/users/2").await;
    caller_unaffected_once(&app, "/users/3").await;
    offered(3).await;
    assert_eq!(app.metrics.queues.queued_count(Queue::Exchanges), 1);
    assert_eq!(
        app.metrics
            .queues
            .dropped_count(Queue::Exchanges, DropReason::QueueFull),
        2
    );
    assert_eq!(app.next_exchange().await.request.uri.path(), "/users/1");
    assert!(app.try_exchange().is_none());
}
