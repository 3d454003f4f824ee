//! Bodies: big requests and responses, chunked requests, and responses that have no body (HEAD, 204, 304).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use shadowdiff::exchange::{CapturedBody, Target};
use shadowdiff::proxy::metrics::BodySide;
use shadowdiff::proxy::metrics::UnshadowedReason;

use crate::hygiene::raw_exchange;
use crate::support::stub::{Stub, full, json_response};
use crate::support::{TestApp, Upstreams, client};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_response_over_max_body_reaches_the_caller_whole_and_is_marked_too_large() {
    let big = Bytes::from(pattern(3 << 20));
    let body = big.clone();
    let primary = Stub::start(move |_| {
        let body = body.clone();
        async move {
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    let secondary = Stub::json("{}").await;
    let candidate = Stub::json("{}").await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.shadow.max_body = 1 << 20
    })
    .await;

    let response = client().get(app.url("/download")).send().await.unwrap();
    assert_eq!(
        response.headers()["content-length"],
        (3 << 20).to_string().as_str()
    );
    let received = response.bytes().await.unwrap();
    assert!(
        received == big,
        "caller got {} bytes, not the 3 MiB primary sent",
        received.len()
    );

    let exchange = app.next_exchange().await;
    let kept = &exchange.primary.response().unwrap().body;
    assert_eq!(kept, &CapturedBody::TooLarge { limit: 1 << 20 });
    assert_eq!(
        exchange.secondary.response().unwrap().body,
        CapturedBody::Complete(Bytes::from_static(b"{}"))
    );
    assert_eq!(
        app.metrics
            .proxy
            .too_large_count(BodySide::Response(Target::Primary)),
        1
    );
}

#[tokio::test]
async fn a_request_over_max_body_reaches_primary_whole_and_is_not_shadowed() {
    let primary = Stub::json(r#"{"stored":true}"#).await;
    let secondary = Stub::json("{}").await;
    let candidate = Stub::json("{}").await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.proxy.shadow.max_body = 64 << 10;
        s.proxy.shadow.allow_side_effects = true;
    })
    .await;

    // Declared length over the cap.
    let upload = pattern(200 << 10);
    let response = client()
        .put(app.url("/blobs/1"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), r#"{"stored":true}"#);
    assert_eq!(primary.next_request().await.body, upload);

    // Chunked, length unknown until the cap is passed mid-stream.
    let chunks: Vec<Result<Bytes, std::io::Error>> = upload
        .chunks(10 << 10)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = client()
        .put(app.url("/blobs/2"))
        .body(streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(primary.next_request().await.body, upload);

    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::BodyTooLarge),
        2
    );
    assert_eq!(app.metrics.proxy.too_large_count(BodySide::Request), 2);

    // A small request afterwards is shadowed and is the only exchange.
    let response = client()
        .put(app.url("/blobs/3"))
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.uri.path(), "/blobs/3");
    assert_eq!(secondary.next_request().await.body, &b"small"[..]);
    assert_eq!(secondary.hits(), 1);
}

#[tokio::test]
async fn a_chunked_request_is_read_once_and_sent_whole_to_all_three() {
    let (
        mut app,
        Upstreams {
            primary,
            secondary,
            candidate,
        },
    ) = TestApp::with_json_upstreams("{}", |s| s.proxy.shadow.allow_side_effects = true).await;
    let answer = raw_exchange(
        &app,
        "POST /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for stub in [&primary, &secondary, &candidate] {
        let seen = stub.next_request().await;
        assert_eq!(seen.body, &b"hello world"[..]);
        assert!(!seen.headers.contains_key("transfer-encoding"));
        assert_eq!(seen.headers["content-length"], "11");
    }
    assert_eq!(app.next_exchange().await.request.body, &b"hello world"[..]);
}

#[tokio::test]
async fn a_chunked_body_not_shadowed_still_reaches_primary_whole() {
    const CHUNKED_GET: &str = "GET /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    // Sampled out: sent to primary alone, streamed as it arrives.
    let (app, upstreams) =
        TestApp::with_json_upstreams("{}", |s| s.proxy.shadow.sample_rate = 0.0).await;
    let answer = raw_exchange(&app, CHUNKED_GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        upstreams.primary.next_request().await.body,
        &b"hello world"[..]
    );
    assert_eq!(upstreams.secondary.hits() + upstreams.candidate.hits(), 0);
    // Over --max-body: what was read to find out, then the rest, to primary alone.
    let (app, upstreams) =
        TestApp::with_json_upstreams("{}", |s| s.proxy.shadow.max_body = 4).await;
    let answer = raw_exchange(&app, CHUNKED_GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        upstreams.primary.next_request().await.body,
        &b"hello world"[..]
    );
    assert_eq!(
        app.metrics
            .proxy
            .unshadowed_count(UnshadowedReason::BodyTooLarge),
        1
    );
}

const DOC: &str = r#"{"title":"a document with a length"}"#;

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection_usable() {
    let handler = |seen: crate::support::stub::Seen| async move {
        match seen.uri.path() {
            "/gone" => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(full(Bytes::new()))
                .unwrap(),
            "/cached" => Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"v1\"")
                .body(full(Bytes::new()))
                .unwrap(),
            _ => json_response(StatusCode::OK, DOC),
        }
    };
    let primary = Stub::start(handler).await;
    let secondary = Stub::start(handler).await;
    let candidate = Stub::start(handler).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;

    // One client, one keep-alive connection: a stray body after any of these would corrupt the next answer.
    let client = client();
    let head = client
        .request(Method::HEAD, app.url("/doc"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        DOC.len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());
    let no_content = client.get(app.url("/gone")).send().await.unwrap();
    assert_eq!(no_content.status(), 204);
    assert!(no_content.bytes().await.unwrap().is_empty());
    let not_modified = client
        .get(app.url("/cached"))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], "\"v1\"");
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let after = client.get(app.url("/doc")).send().await.unwrap();
    assert_eq!(after.text().await.unwrap(), DOC);

    // The HEAD, 204 and 304 exchanges are complete (not abandoned) with empty bodies.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let exchange = app.next_exchange().await;
        for target in Target::ALL {
            let response = exchange.outcome(target).response().unwrap_or_else(|| {
                panic!(
                    "{target} of {} has no response: {:?}",
                    exchange.endpoint,
                    exchange.outcome(target)
                )
            });
            if exchange.request.method == Method::HEAD || response.status != StatusCode::OK {
                assert_eq!(response.body, CapturedBody::Complete(Bytes::new()));
            }
        }
        statuses.push((
            exchange.primary.response().unwrap().status.as_u16(),
            exchange.request.method.to_string(),
        ));
    }
    statuses.sort();
    let expected = [(200, "GET"), (200, "HEAD"), (204, "GET"), (304, "GET")]
        .map(|(status, method)| (status, method.to_string()));
    assert_eq!(statuses, expected);
}
