//! Header hygiene: hop-by-hop headers, X-Forwarded-*, Host, the role header, and upstream path prefixes.

use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::stub::{Seen, Stub, full};
use crate::support::{TestApp, Upstreams, patience};
use shadowdiff::values::TrustedProxies;

/// Writes a raw request (which should ask for `Connection: close`) and reads the whole answer.
pub async fn raw_exchange(app: &TestApp, request: &str) -> String {
    let mut stream = TcpStream::connect(app.proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    patience("the proxy's answer", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

const DIRTY_REQUEST: &str = "GET /orders/42?expand=items HTTP/1.1\r\n\
Host: shop.example\r\n\
Connection: close, x-session-hop\r\n\
X-Session-Hop: drop me\r\n\
Keep-Alive: timeout=5\r\n\
TE: trailers\r\n\
Trailer: x-checksum\r\n\
Upgrade: h2c\r\n\
Proxy-Authorization: Basic c2VjcmV0\r\n\
Proxy-Trace: 1\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
X-Shadowdiff-Role: candidate\r\n\
Accept: application/json\r\n\
Authorization: Bearer end-to-end\r\n\r\n";

fn assert_clean(seen: &Seen) {
    for hop in [
        "connection",
        "x-session-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-trace",
        "transfer-encoding",
    ] {
        assert!(
            !seen.headers.contains_key(hop),
            "{hop} was forwarded: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["accept"], "application/json");
    assert_eq!(seen.headers["authorization"], "Bearer end-to-end");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example");
    assert_eq!(
        seen.uri.path_and_query().unwrap(),
        "/orders/42?expand=items"
    );
}

async fn upstream_with_hop_headers() -> Stub {
    Stub::start(|_| async {
        Response::builder()
            .header("content-type", "application/json")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "internal")
            .header("x-kept", "yes")
            .body(full(&b"{}"[..]))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn hop_by_hop_headers_stay_behind_and_forwarded_headers_are_set() {
    let primary = upstream_with_hop_headers().await;
    let secondary = Stub::json("{}").await;
    let candidate = Stub::json("{}").await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;

    let answer = raw_exchange(&app, DIRTY_REQUEST).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("x-kept: yes"), "{answer}");
    assert!(
        !head.contains("x-upstream-hop"),
        "upstream hop-by-hop header reached the caller: {answer}"
    );

    let primary_seen = primary.next_request().await;
    let secondary_seen = secondary.next_request().await;
    let candidate_seen = candidate.next_request().await;
    for seen in [&primary_seen, &secondary_seen, &candidate_seen] {
        assert_clean(seen);
    }
    // Host is each upstream's own authority; only the copies carry a role, and the caller's forged one is gone.
    assert_eq!(primary_seen.headers["host"], primary.addr().to_string());
    assert_eq!(secondary_seen.headers["host"], secondary.addr().to_string());
    assert_eq!(candidate_seen.headers["host"], candidate.addr().to_string());
    assert!(!primary_seen.headers.contains_key("x-shadowdiff-role"));
    assert_eq!(secondary_seen.headers["x-shadowdiff-role"], "secondary");
    assert_eq!(candidate_seen.headers["x-shadowdiff-role"], "candidate");

    // The exchange keeps the request as the caller sent it.
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.request.headers["x-session-hop"], "drop me");
    assert_eq!(exchange.endpoint, "GET /orders/{id}");
}

#[tokio::test]
async fn preserve_host_and_the_shadow_suffix() {
    let (
        _app,
        Upstreams {
            primary,
            secondary,
            candidate,
        },
    ) = TestApp::with_json_upstreams("{}", |s| {
        s.proxy.shadow.preserve_host = true;
        s.proxy.shadow.host_suffix = true;
    })
    .await;
    let answer = raw_exchange(
        &_app,
        "GET / HTTP/1.1\r\nHost: api.example:8443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        primary.next_request().await.headers["host"],
        "api.example:8443"
    );
    assert_eq!(
        secondary.next_request().await.headers["host"],
        "api.example-shadow:8443"
    );
    assert_eq!(
        candidate.next_request().await.headers["host"],
        "api.example-shadow:8443"
    );
}

#[tokio::test]
async fn shadow_suffix_applies_to_each_upstreams_own_host() {
    let (app, upstreams) =
        TestApp::with_json_upstreams("{}", |s| s.proxy.shadow.host_suffix = true).await;
    let (primary, candidate) = (&upstreams.primary, &upstreams.candidate);
    raw_exchange(
        &app,
        "GET / HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        primary.next_request().await.headers["host"],
        primary.addr().to_string()
    );
    let expected = format!("127.0.0.1-shadow:{}", candidate.addr().port());
    assert_eq!(
        candidate.next_request().await.headers["host"],
        expected.as_str()
    );
}

#[tokio::test]
async fn upstream_path_prefixes_are_prepended() {
    let primary = Stub::json("{}").await;
    let secondary = Stub::json("{}").await;
    let candidate = Stub::json("{}").await;
    let app = TestApp::start(
        &format!("{}/base", primary.url()),
        &format!("{}/v1/", secondary.url()),
        &candidate.url(),
        |_| {},
    )
    .await;
    let response = crate::support::client()
        .get(app.url("/users/7?fields=name&x=%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        primary.next_request().await.uri.to_string(),
        "/base/users/7?fields=name&x=%2F"
    );
    assert_eq!(
        secondary.next_request().await.uri.to_string(),
        "/v1/users/7?fields=name&x=%2F"
    );
    assert_eq!(
        candidate.next_request().await.uri.to_string(),
        "/users/7?fields=name&x=%2F"
    );
}

#[tokio::test]
async fn dot_segments_cannot_climb_above_an_upstream_prefix() {
    let upstreams = Upstreams::json("{}").await;
    let app = TestApp::start(
        &format!("{}/base", upstreams.primary.url()),
        &format!("{}/v1", upstreams.secondary.url()),
        &upstreams.candidate.url(),
        |_| {},
    )
    .await;
    let answer = raw_exchange(
        &app,
        "GET /a/../../%2e%2e/admin?x=.. HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        upstreams.primary.next_request().await.uri.to_string(),
        "/base/admin?x=.."
    );
    assert_eq!(
        upstreams.secondary.next_request().await.uri.to_string(),
        "/v1/admin?x=.."
    );
    assert_eq!(
        upstreams.candidate.next_request().await.uri.to_string(),
        "/admin?x=.."
    );
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_callers_are_replaced_and_counted() {
    const CLAIMS: &str = "GET /x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\
         X-Forwarded-For: 198.51.100.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
         Forwarded: for=198.51.100.9;proto=https\r\n\r\n";
    // A caller outside --trusted-proxies: what the proxy sees replaces what it claims.
    let (app, upstreams) =
        TestApp::with_json_upstreams("{}", |s| s.proxy.trusted_proxies = TrustedProxies::none())
            .await;
    let answer = raw_exchange(&app, CLAIMS).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for stub in [
        &upstreams.primary,
        &upstreams.secondary,
        &upstreams.candidate,
    ] {
        let seen = stub.next_request().await;
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(seen.headers["x-forwarded-proto"], "http");
        assert_eq!(seen.headers["x-forwarded-host"], "shop.example");
        assert!(!seen.headers.contains_key("forwarded"));
    }
    assert_eq!(app.metrics.proxy.forwarded_dropped_count(), 1);

    // A load balancer in front (loopback is trusted by default): its headers are kept and appended to.
    let (app, upstreams) = TestApp::with_json_upstreams("{}", |_| {}).await;
    raw_exchange(&app, CLAIMS).await;
    let seen = upstreams.primary.next_request().await;
    assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "evil.example");
    assert_eq!(app.metrics.proxy.forwarded_dropped_count(), 0);
}
