//! The bad-input suite: malformed requests from callers, and bodies from upstreams that are too deep, not
//! UTF-8, compression bombs or JSON under the wrong type. Each gets a clear error or a counted skip; the
//! caller's answer is primary's wherever primary could answer, and nothing panics.

use shadowdiff::analysis::BodySkip;
use shadowdiff::app::AppSettings;
use shadowdiff::proxy::metrics::CallerRejection;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use shadowdiff::analysis::Analysis;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::exchange::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::stub::{Stub, full};
use crate::support::{TestApp, client, patience, wait_until};

/// Writes raw bytes to the proxy and reads its whole answer. Reading runs alongside writing, so that an
/// answer sent before the request is complete (431) is read before the connection closes.
async fn raw(app: &TestApp, request: Vec<u8>) -> String {
    let stream = TcpStream::connect(app.proxy).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        // The proxy may stop reading and close: a failed write is part of the case, not of the test.
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match patience("the proxy's answer", reader.read(&mut buf)).await {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buf[..read]),
            // A reset after the answer (the proxy closed with the request unread) ends the answer.
            Err(_) if !answer.is_empty() => break,
            Err(error) => panic!("no answer: {error}"),
        }
    }
    drop(writing);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

async fn healthy_app() -> (TestApp, Stub, Stub, Stub) {
    let (app, upstreams) = TestApp::with_json_upstreams(r#"{"ok":true}"#, |_| {}).await;
    (
        app,
        upstreams.primary,
        upstreams.secondary,
        upstreams.candidate,
    )
}

/// After the bad requests, a good one on a new connection is still served.
async fn still_serving(app: &TestApp) {
    let response = client().get(app.url("/after")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"ok":true}"#);
}

#[tokio::test]
async fn malformed_request_lines_are_answered_400_and_counted() {
    let (app, primary, _secondary, _candidate) = healthy_app().await;
    let cases: [(&[u8], &str); 4] = [
        (b"HELLO\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            // A TLS ClientHello sent to the plain-text port.
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
    ];
    for (request, expected) in cases {
        let answer = raw(&app, request.to_vec()).await;
        assert_eq!(
            status_line(&answer),
            expected,
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    still_serving(&app).await;
    assert_eq!(
        app.metrics
            .proxy
            .callers_rejected_count(CallerRejection::Malformed),
        4
    );
    assert_eq!(primary.hits(), 1, "only the good request reached primary");
    assert_eq!(app.metrics.proxy.requests(), 1);
}

/// Raw UTF-8 in a request target is not valid URI syntax, but common enough that the proxy, like most, passes
/// it on byte for byte rather than refusing the caller.
#[tokio::test]
async fn raw_utf8_in_the_request_target_is_passed_on_unchanged() {
    let (app, primary, _secondary, _candidate) = healthy_app().await;
    let answer = raw(
        &app,
        b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    let seen = primary.next_request().await;
    assert_eq!(seen.uri.path().as_bytes(), b"/caf\xc3\xa9");
    assert_eq!(
        seen.uri.query().map(str::as_bytes),
        Some(&b"q=\xc3\xa9"[..])
    );
}

#[tokio::test]
async fn malformed_headers_are_answered_400_and_counted() {
    let (app, primary, _secondary, _candidate) = healthy_app().await;
    let cases: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    ];
    for request in cases {
        let answer = raw(&app, request.to_vec()).await;
        assert_eq!(
            status_line(&answer),
            "HTTP/1.1 400 Bad Request",
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    still_serving(&app).await;
    assert_eq!(
        app.metrics
            .proxy
            .callers_rejected_count(CallerRejection::Malformed),
        5
    );
    assert_eq!(primary.hits(), 1);
}

#[tokio::test]
async fn a_one_megabyte_header_is_431_and_counted() {
    let (app, primary, _secondary, _candidate) = healthy_app().await;
    let mut request = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
    request.resize(request.len() + (1 << 20), b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let answer = raw(&app, request).await;
    assert_eq!(
        status_line(&answer),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    still_serving(&app).await;
    // The rejection is counted when the rejected connection's task ends, which may be after the 431 was read.
    wait_until("the rejection to be counted", || {
        app.metrics
            .proxy
            .callers_rejected_count(CallerRejection::HeaderTooLarge)
            >= 1
    })
    .await;
    assert_eq!(
        app.metrics
            .proxy
            .callers_rejected_count(CallerRejection::HeaderTooLarge),
        1
    );
    assert_eq!(primary.hits(), 1);
}

/// A stub answering `body` under these headers.
async fn answering(headers: &'static [(&'static str, &'static str)], body: Vec<u8>) -> Stub {
    let body = Bytes::from(body);
    Stub::start(move |_| {
        let body = body.clone();
        async move {
            let mut response = Response::builder().status(StatusCode::OK);
            for (name, value) in headers {
                response = response.header(*name, *value);
            }
            response.body(full(body)).unwrap()
        }
    })
    .await
}

/// Sends one GET through a proxy over these three stubs, checks the caller got primary's bytes exactly, and
/// returns the analysis.
async fn analyse_one(
    primary: &Stub,
    secondary: &Stub,
    candidate: &Stub,
    expected: &[u8],
) -> Analysis {
    analyse_one_with(primary, secondary, candidate, expected, |_| {}).await
}

async fn analyse_one_with(
    primary: &Stub,
    secondary: &Stub,
    candidate: &Stub,
    expected: &[u8],
    change: impl FnOnce(&mut AppSettings),
) -> Analysis {
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), change).await;
    let response = client().get(app.url("/things/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(
        body == expected,
        "the caller got other bytes than primary's"
    );
    let analysis = app.next_analysis().await;
    assert_eq!(app.metrics.analysis.failures(), 0);
    analysis
}

fn nested(depth: usize, leaf: &str) -> Vec<u8> {
    format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

#[tokio::test]
async fn json_ten_thousand_levels_deep_is_a_counted_skip() {
    let deep = nested(10_000, "1");
    let primary = answering(JSON, deep.clone()).await;
    let secondary = answering(JSON, deep.clone()).await;
    let candidate = answering(JSON, nested(10_000, "2")).await;
    let analysis = analyse_one(&primary, &secondary, &candidate, &deep).await;
    let compared = analysis.compared().expect("compared");
    assert!(
        compared
            .body_skipped
            .contains(&(Target::Primary, BodySkip::JsonTooDeep)),
        "{:?}",
        compared.body_skipped
    );

    // Only the candidate's body too deep: a difference of its own, and a counted skip.
    let shallow = br#"[[1]]"#.to_vec();
    let primary = answering(JSON, shallow.clone()).await;
    let secondary = answering(JSON, shallow.clone()).await;
    let candidate = answering(JSON, deep).await;
    let analysis = analyse_one(&primary, &secondary, &candidate, &shallow).await;
    let compared = analysis.compared().expect("compared");
    assert!(
        compared
            .body_skipped
            .contains(&(Target::Candidate, BodySkip::JsonTooDeep))
    );
    assert!(compared.candidate.iter().any(|difference| {
        difference.path == "body"
            && difference.kind == DiffKind::TypeChanged
            && difference.other.as_deref() == Some("json_too_deep")
    }));
}

#[tokio::test]
async fn a_ten_thousand_levels_deep_request_body_reaches_primary_intact() {
    let (mut app, primary, _secondary, _candidate) = healthy_app().await;
    let deep = nested(10_000, "{}");
    let response = client()
        .put(app.url("/things/1"))
        .header("content-type", "application/json")
        .body(deep.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(primary.next_request().await.body, deep);
    // PUT is not shadowed by default: there is no exchange, only primary's answer.
    assert!(app.try_exchange().is_none());
}

#[tokio::test]
async fn bodies_that_differ_only_in_invalid_utf8_are_told_apart() {
    let primary_body = b"{\"name\":\"caf\xe9\"}".to_vec();
    let primary = answering(JSON, primary_body.clone()).await;
    let secondary = answering(JSON, primary_body.clone()).await;
    let candidate = answering(JSON, b"{\"name\":\"caf\xe8\"}".to_vec()).await;
    let analysis = analyse_one(&primary, &secondary, &candidate, &primary_body).await;
    let compared = analysis.compared().expect("compared");
    assert!(compared.noise.is_empty(), "{:?}", compared.noise);
    assert_eq!(compared.candidate.len(), 1, "{:?}", compared.candidate);
    assert_eq!(compared.candidate[0].path, "body");

    // Declared as text, not UTF-8: compared as bytes as well.
    const TEXT: &[(&str, &str)] = &[("content-type", "text/plain; charset=utf-8")];
    let primary = answering(TEXT, b"line one\nna\xefve\n".to_vec()).await;
    let secondary = answering(TEXT, b"line one\nna\xefve\n".to_vec()).await;
    let candidate = answering(TEXT, b"line one\nna\xeeve\n".to_vec()).await;
    let analysis = analyse_one(&primary, &secondary, &candidate, b"line one\nna\xefve\n").await;
    assert_eq!(analysis.compared().expect("compared").candidate.len(), 1);
}

#[tokio::test]
async fn invalid_utf8_in_a_header_value_is_forwarded_unchanged() {
    let (app, primary, _secondary, _candidate) = healthy_app().await;
    let answer = raw(
        &app,
        b"GET /h HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    assert_eq!(
        primary.next_request().await.headers["x-name"].as_bytes(),
        b"caf\xe9"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_bomb_is_decoded_no_further_than_the_cap() {
    const GZIP_JSON: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let mut zeros = vec![b' '; 64 << 20];
    let bomb = gzip(&zeros);
    zeros.push(b'x');
    let other_bomb = gzip(&zeros);
    drop(zeros);
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let primary = answering(GZIP_JSON, bomb.clone()).await;
    let secondary = answering(GZIP_JSON, bomb.clone()).await;
    let candidate = answering(GZIP_JSON, other_bomb).await;
    let analysis = analyse_one_with(&primary, &secondary, &candidate, &bomb, |s| {
        s.analysis.max_decoded_body = 4 << 20
    })
    .await;
    let compared = analysis.compared().expect("compared");
    assert!(
        compared
            .body_skipped
            .contains(&(Target::Primary, BodySkip::DecodedTooLarge)),
        "{:?}",
        compared.body_skipped
    );
}

#[tokio::test]
async fn json_under_a_text_type_is_still_compared_as_json() {
    const TEXT: &[(&str, &str)] = &[("content-type", "text/plain")];
    let body = br#"{"user":{"id":3,"name":"ada"}}"#.to_vec();
    let primary = answering(TEXT, body.clone()).await;
    let secondary = answering(TEXT, body.clone()).await;
    let candidate = answering(TEXT, br#"{"user":{"id":3,"name":"bob"}}"#.to_vec()).await;
    let analysis = analyse_one(&primary, &secondary, &candidate, &body).await;
    let compared = analysis.compared().expect("compared");
    assert_eq!(compared.candidate.len(), 1, "{:?}", compared.candidate);
    assert_eq!(compared.candidate[0].generalised, "body/user/name");
    assert_eq!(compared.candidate[0].kind, DiffKind::ValueChanged);
}

#[tokio::test]
async fn html_under_a_json_type_is_a_type_change() {
    let body = br#"{"user":{"id":3}}"#.to_vec();
    let primary = answering(JSON, body.clone()).await;
    let secondary = answering(JSON, body.clone()).await;
    let candidate = answering(JSON, b"<html><body>Internal error</body></html>".to_vec()).await;
    let analysis = analyse_one(&primary, &secondary, &candidate, &body).await;
    let compared = analysis.compared().expect("compared");
    assert_eq!(compared.candidate.len(), 1, "{:?}", compared.candidate);
    let difference = &compared.candidate[0];
    assert_eq!(
        (
            difference.path.as_str(),
            difference.kind,
            difference.primary.as_deref(),
            difference.other.as_deref()
        ),
        (
            "body",
            DiffKind::TypeChanged,
            Some("json"),
            Some("invalid json")
        )
    );
}

#[tokio::test]
async fn a_caller_trickling_its_body_gets_408_and_is_counted() {
    let (app, upstreams) = TestApp::with_json_upstreams(r#"{"ok":true}"#, |s| {
        s.proxy.body_timeout = Duration::from_millis(300);
        s.proxy.shadow.allow_side_effects = true;
    })
    .await;
    let stream = TcpStream::connect(app.proxy).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    // One byte a second: the whole body would take ten seconds. The caller is the slow one here; nothing
    // waits on this pace but the caller itself.
    let trickle = async move {
        for _ in 0..10 {
            if writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await
    };
    let mut answer = Vec::new();
    tokio::select! {
        read = patience("the 408", reader.read_buf(&mut answer)) => { read.unwrap(); }
        () = trickle => {}
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        app.metrics
            .proxy
            .callers_rejected_count(CallerRejection::BodyTimeout),
        1
    );
    assert_eq!(upstreams.primary.hits(), 0, "nothing was sent on");
}

#[tokio::test]
async fn past_max_connections_a_new_caller_is_closed_at_once_and_counted() {
    let (app, _upstreams) =
        TestApp::with_json_upstreams(r#"{"ok":true}"#, |s| s.proxy.max_connections = 2).await;
    let request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two callers keep their connections open after one request each.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.proxy).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let read = patience("an answer", stream.read(&mut buffer))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = TcpStream::connect(app.proxy).await.unwrap();
    let _ = third.write_all(request).await;
    let mut answer = Vec::new();
    let read = patience(
        "the third caller to be closed",
        third.read_to_end(&mut answer),
    )
    .await;
    assert!(
        read.is_err() || answer.is_empty(),
        "the third caller was served: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        app.metrics
            .proxy
            .callers_rejected_count(CallerRejection::TooManyConnections),
        1
    );
    // Once a caller leaves, a new one is served again.
    drop(held);
    crate::support::wait_for("a new caller to be served", || async {
        let Ok(mut stream) = TcpStream::connect(app.proxy).await else {
            return false;
        };
        if stream.write_all(request).await.is_err() {
            return false;
        }
        let mut buffer = vec![0u8; 4096];
        matches!(stream.read(&mut buffer).await, Ok(read) if buffer[..read].starts_with(b"HTTP/1.1 200"))
    })
    .await;
}
