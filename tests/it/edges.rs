//! Edges of HTTP on the caller's path: disconnects, HTTP/2 on either side, trailers, resets, long and odd
//! request targets, upgrades, `Expect`, bad framing and stale pooled connections.

use shadowdiff::exchange::ErrorKind;
use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shadowdiff::exchange::{CapturedBody, Target, UpstreamError};
use shadowdiff::proxy::metrics::UnshadowedReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::hygiene::raw_exchange;
use crate::support::stub::{Misbehaviour, RawPeer, Stub, channel_body};
use crate::support::{TestApp, Upstreams, client, patience};

async fn json_stubs() -> (Stub, Stub, Stub) {
    let upstreams = Upstreams::json("{}").await;
    (upstreams.primary, upstreams.secondary, upstreams.candidate)
}

#[tokio::test]
async fn a_caller_leaving_mid_body_gives_an_abandoned_exchange() {
    let (chunks, body) = channel_body();
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
    let (_, secondary, candidate) = json_stubs().await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;

    let mut response = client().get(app.url("/feed")).send().await.unwrap();
    chunks.send(Bytes::from_static(b"first;")).await.unwrap();
    patience("the first chunk", response.chunk()).await.unwrap();
    drop(response);
    // More data makes the proxy write to the closed connection and notice the caller is gone.
    while chunks.send(Bytes::from_static(b"more;")).await.is_ok() {
        if let Some(exchange) = app.try_exchange() {
            assert_eq!(exchange.primary.error(), Some(&UpstreamError::Abandoned));
            return;
        }
        tokio::task::yield_now().await;
    }
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.primary.error(), Some(&UpstreamError::Abandoned));
}

#[tokio::test]
async fn http2_callers_are_served_and_compared() {
    let (mut app, upstreams) = TestApp::with_json_upstreams(r#"{"via":"h2"}"#, |_| {}).await;
    let primary = &upstreams.primary;

    let stream = TcpStream::connect(app.proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(format!("http://{}/h2/7", app.proxy))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = patience("an h2 response", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, &br#"{"via":"h2"}"#[..]);

    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.version, http::Version::HTTP_2);
    assert_eq!(exchange.endpoint, "GET /h2/{id}");
    assert_eq!(primary.next_request().await.version, http::Version::HTTP_11);
    for target in Target::ALL {
        assert!(
            exchange.outcome(target).response().is_some(),
            "{target}: {:?}",
            exchange.outcome(target)
        );
    }
}

#[tokio::test]
async fn trailers_from_an_http2_upstream_end_the_body() {
    let handler = |_| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"{\"part\":"))),
            Ok(Frame::data(Bytes::from_static(b"1}"))),
            Ok(Frame::trailers(trailers)),
        ];
        Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            .unwrap()
    };
    let primary = Stub::start_h2(handler).await;
    let secondary = Stub::start_h2(handler).await;
    let candidate = Stub::start_h2(handler).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.upstreams.http2 = true
    })
    .await;
    let body = client()
        .get(app.url("/t"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, r#"{"part":1}"#);
    let exchange = app.next_exchange().await;
    let kept = exchange.primary.response().map(|r| r.body.clone());
    assert_eq!(
        kept,
        Some(CapturedBody::Complete(Bytes::from_static(br#"{"part":1}"#)))
    );
}

#[tokio::test]
async fn a_primary_resetting_mid_body_cuts_the_caller_and_is_recorded() {
    let primary = RawPeer::start(Misbehaviour::ResetMidBody).await;
    let (_, secondary, candidate) = json_stubs().await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    let response = client().get(app.url("/r")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the caller must see the cut, not a short body"
    );
    let exchange = app.next_exchange().await;
    assert_eq!(
        exchange.primary.error().map(UpstreamError::kind),
        Some(ErrorKind::Reset),
        "{:?}",
        exchange.primary
    );
    assert_eq!(
        app.metrics
            .proxy
            .upstream_error_count(Target::Primary, ErrorKind::Reset),
        1
    );
}

#[tokio::test]
async fn a_uri_too_long_for_an_upstream_prefix_is_414() {
    let (primary, secondary, candidate) = json_stubs().await;
    let app = TestApp::start(
        &format!("{}/base", primary.url()),
        &secondary.url(),
        &candidate.url(),
        |_| {},
    )
    .await;
    // Fits in a URI alone, but not with `/base` in front.
    let path = format!("/{}", "a".repeat(65_530));
    let answer = raw_exchange(
        &app,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let status_line = answer.lines().next().unwrap_or_default();
    assert_eq!(status_line, "HTTP/1.1 414 URI Too Long");
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::UriTooLong),
        1
    );
    assert_eq!(primary.hits(), 0);
}

#[tokio::test]
async fn options_asterisk_is_answered_by_the_proxy() {
    let (primary, secondary, candidate) = json_stubs().await;
    let app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    let answer = raw_exchange(
        &app,
        "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let after = client().get(app.url("/after")).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(primary.next_request().await.uri.path(), "/after");
    assert_eq!(primary.hits(), 1);
}

#[tokio::test]
async fn absolute_form_targets_name_the_host() {
    let (primary, secondary, candidate) = json_stubs().await;
    let app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.shadow.preserve_host = true
    })
    .await;
    let answer = raw_exchange(
        &app,
        "GET http://real.example/b?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = primary.next_request().await;
    assert_eq!(seen.uri.to_string(), "/b?q=1");
    assert_eq!(seen.headers["host"], "real.example");
    assert_eq!(seen.headers["x-forwarded-host"], "real.example");
}

#[tokio::test]
async fn expect_continue_is_handled_by_the_proxy() {
    let (primary, secondary, candidate) = json_stubs().await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.shadow.allow_side_effects = true
    })
    .await;
    let answer = raw_exchange(
        &app,
        "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.contains("200 OK"), "{answer}");
    for stub in [&primary, &secondary, &candidate] {
        let seen = stub.next_request().await;
        assert!(!seen.headers.contains_key("expect"));
        assert_eq!(seen.body, &b"hello"[..]);
    }
    app.next_exchange().await;
}

#[tokio::test]
async fn transfer_encoding_wins_over_a_stale_content_length() {
    let primary = RawPeer::start(Misbehaviour::ChunkedWithLength).await;
    let (_, secondary, candidate) = json_stubs().await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    let response = client().get(app.url("/te")).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("content-length")
            .is_none_or(|len| len != "3")
    );
    assert_eq!(response.text().await.unwrap(), "hello world");
    let exchange = app.next_exchange().await;
    let kept = exchange.primary.response().map(|r| r.body.clone());
    assert_eq!(
        kept,
        Some(CapturedBody::Complete(Bytes::from_static(b"hello world")))
    );
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_for_idempotent_requests() {
    let primary = RawPeer::start(Misbehaviour::CloseAfterResponse).await;
    let secondary = RawPeer::start(Misbehaviour::CloseAfterResponse).await;
    let candidate = RawPeer::start(Misbehaviour::CloseAfterResponse).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    for i in 0..30 {
        let response = client()
            .get(app.url(&format!("/stale/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(response.text().await.unwrap(), "{}");
        let exchange = app.next_exchange().await;
        for target in Target::ALL {
            assert!(
                exchange.outcome(target).response().is_some(),
                "{target} of request {i}: {:?}",
                exchange.outcome(target)
            );
        }
    }
}

/// An upstream that switches to an echo protocol on request.
async fn echo_upgrade_stub() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(|mut request: Request<hyper::body::Incoming>| async move {
                        let upgrade = hyper::upgrade::on(&mut request);
                        tokio::spawn(async move {
                            if let Ok(upgraded) = upgrade.await {
                                let mut io = TokioIo::new(upgraded);
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "echo")
                                .body(Empty::<Bytes>::new())
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn upgrades_are_tunnelled_to_primary_alone() {
    let (echo, _task) = echo_upgrade_stub().await;
    let (_, secondary, candidate) = json_stubs().await;
    let app = TestApp::start(
        &format!("http://{echo}"),
        &secondary.url(),
        &candidate.url(),
        |_| {},
    )
    .await;

    let mut stream = TcpStream::connect(app.proxy).await.unwrap();
    stream
        .write_all(
            b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        patience("the switching response", stream.read_exact(&mut byte))
            .await
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    patience("the echo", stream.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(&echoed, b"ping");
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::Upgrade),
        1
    );
    assert_eq!(secondary.hits() + candidate.hits(), 0);
}

#[tokio::test]
async fn http2_upstreams_refuse_host_rewriting_flags() {
    let (primary, secondary, candidate) = json_stubs().await;
    let args = crate::support::settings(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.upstreams.http2 = true;
        s.proxy.shadow.host_suffix = true;
    });
    let error = shadowdiff::app::Application::build(args)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("--upstream-http2"), "{error}");
}
