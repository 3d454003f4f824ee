//! Response modes, failing responders, h2c and https upstreams.

use http::StatusCode;
use shadowdiff::exchange::ErrorKind;
use shadowdiff::exchange::{Target, UpstreamError};
use shadowdiff::proxy::ResponseMode;
use std::time::Duration;

use crate::support::stub::{Gate, Misbehaviour, RawPeer, Refusing, Stub, json_response};
use crate::support::{TestApp, client};

async fn named_stub(name: &'static str) -> Stub {
    Stub::start(move |_| async move {
        json_response(StatusCode::OK, &format!(r#"{{"served_by":"{name}"}}"#))
    })
    .await
}

#[tokio::test]
async fn response_mode_picks_whose_answer_the_caller_gets() {
    for (mode, expected) in [
        (ResponseMode::Primary, "primary"),
        (ResponseMode::Secondary, "secondary"),
        (ResponseMode::Candidate, "candidate"),
    ] {
        let primary = named_stub("primary").await;
        let secondary = named_stub("secondary").await;
        let candidate = named_stub("candidate").await;
        let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
            s.proxy.response_mode = mode
        })
        .await;
        let body = client()
            .get(app.url("/who"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            body,
            format!(r#"{{"served_by":"{expected}"}}"#),
            "mode {mode:?}"
        );
        let exchange = app.next_exchange().await;
        for target in Target::ALL {
            let kept = exchange
                .outcome(target)
                .response()
                .unwrap()
                .body
                .bytes()
                .cloned()
                .unwrap();
            assert_eq!(
                kept,
                format!(r#"{{"served_by":"{target}"}}"#).as_bytes(),
                "mode {mode:?}"
            );
        }
        // The upstream that answers the caller is not marked as a copy.
        let candidate_seen = candidate.next_request().await;
        assert_eq!(
            candidate_seen.headers.contains_key("x-shadowdiff-role"),
            mode != ResponseMode::Candidate,
            "mode {mode:?}"
        );
    }
}

#[tokio::test]
async fn empty_mode_answers_at_once_while_every_upstream_is_still_working() {
    let gate = Gate::new();
    let make = |name: &'static str| {
        let gate = gate.clone();
        Stub::start(move |_| {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                json_response(StatusCode::OK, &format!(r#"{{"served_by":"{name}"}}"#))
            }
        })
    };
    let primary = make("primary").await;
    let secondary = make("secondary").await;
    let candidate = make("candidate").await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.response_mode = ResponseMode::Empty
    })
    .await;

    let response = client().get(app.url("/mirrored")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap().is_empty());
    let primary_seen = primary.next_request().await;
    let secondary_seen = secondary.next_request().await;
    let candidate_seen = candidate.next_request().await;
    assert!(app.try_exchange().is_none());
    gate.open();
    let exchange = app.next_exchange().await;
    for target in Target::ALL {
        assert_eq!(
            exchange.outcome(target).response().unwrap().status,
            200,
            "{target}"
        );
    }
    // Only secondary and candidate are named as copies; primary stands for the current version.
    assert!(!primary_seen.headers.contains_key("x-shadowdiff-role"));
    assert_eq!(secondary_seen.headers["x-shadowdiff-role"], "secondary");
    assert_eq!(candidate_seen.headers["x-shadowdiff-role"], "candidate");
}

#[tokio::test]
async fn empty_mode_sends_unshadowed_requests_nowhere() {
    let primary = named_stub("primary").await;
    let secondary = named_stub("secondary").await;
    let candidate = named_stub("candidate").await;
    let app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.response_mode = ResponseMode::Empty
    })
    .await;
    let response = client()
        .post(app.url("/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(shadowdiff::proxy::metrics::UnshadowedReason::Method),
        1
    );
    assert_eq!(primary.hits(), 0);
}

#[tokio::test]
async fn a_failing_responder_gives_502_naming_it() {
    let secondary = named_stub("secondary").await;
    let candidate = named_stub("candidate").await;
    let refused = Refusing::new();
    let dead = refused.url();
    let mut app = TestApp::start(&dead, &secondary.url(), &candidate.url(), |_| {}).await;
    let response = client().get(app.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(body.contains("primary upstream failed (connect)"), "{body}");
    let exchange = app.next_exchange().await;
    assert!(matches!(
        exchange.primary.error(),
        Some(UpstreamError::Connect(_))
    ));
    assert!(exchange.candidate.response().is_some());
    assert_eq!(
        app.metrics
            .proxy
            .upstream_error_count(Target::Primary, ErrorKind::Connect),
        1
    );

    // Candidate as responder, black-holed, with a short response timeout.
    let primary = named_stub("primary").await;
    let hole = RawPeer::start(Misbehaviour::BlackHole).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &hole.url(), |s| {
        s.proxy.response_mode = ResponseMode::Candidate;
        s.upstreams.response_timeout = Duration::from_millis(200);
    })
    .await;
    let response = client().get(app.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("candidate upstream failed (timeout)")
    );
    let exchange = app.next_exchange().await;
    assert_eq!(
        exchange.candidate.error().map(UpstreamError::kind),
        Some(ErrorKind::Timeout)
    );

    // Primary-only (unshadowed) request to a dead primary.
    let mut app = TestApp::start(&dead, &secondary.url(), &candidate.url(), |_| {}).await;
    let response = client()
        .post(app.url("/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("primary upstream failed")
    );
    assert_eq!(
        app.metrics
            .proxy
            .upstream_error_count(Target::Primary, ErrorKind::Connect),
        1
    );
    assert!(app.try_exchange().is_none());
}

#[tokio::test]
async fn upstream_http2_speaks_h2c() {
    let handler = |_| async { json_response(StatusCode::OK, "{}") };
    let primary = Stub::start_h2(handler).await;
    let secondary = Stub::start_h2(handler).await;
    let candidate = Stub::start_h2(handler).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.upstreams.http2 = true
    })
    .await;
    let response = client().get(app.url("/h2")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_11);
    for stub in [&primary, &secondary, &candidate] {
        let seen = stub.next_request().await;
        assert_eq!(seen.version, http::Version::HTTP_2);
        assert_eq!(seen.uri.path(), "/h2");
    }
    let exchange = app.next_exchange().await;
    assert!(
        Target::ALL
            .iter()
            .all(|t| exchange.outcome(*t).response().is_some())
    );
}

#[tokio::test]
async fn https_upstreams_with_a_private_ca() {
    let tls = crate::support::tls::TlsStub::start(r#"{"secure":true}"#).await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &tls.ca_pem).unwrap();
    let plain = Stub::json(r#"{"secure":true}"#).await;
    let mut app = TestApp::start(
        &format!("{}/prefix", tls.url()),
        &plain.url(),
        &tls.url(),
        |s| s.upstreams.ca_file = Some(ca.path().to_str().unwrap().into()),
    )
    .await;
    let response = client().get(app.url("/secure")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), r#"{"secure":true}"#);
    let exchange = app.next_exchange().await;
    assert!(
        exchange.candidate.response().is_some(),
        "{:?}",
        exchange.candidate
    );
    let paths = tls.paths();
    assert!(paths.contains(&"/prefix/secure".to_string()), "{paths:?}");

    // Without the CA the certificate is not trusted: a connect error, named as such.
    let mut untrusting = TestApp::start(&plain.url(), &plain.url(), &tls.url(), |_| {}).await;
    client()
        .get(untrusting.url("/secure"))
        .send()
        .await
        .unwrap();
    let exchange = untrusting.next_exchange().await;
    assert!(
        matches!(exchange.candidate.error(), Some(UpstreamError::Connect(_))),
        "{:?}",
        exchange.candidate
    );
}
