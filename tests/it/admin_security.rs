//! The admin listener against other web pages and guessers: cross-site forms and fetches change nothing, a
//! rebound host name reads nothing, logins expire, log out, and slow down after failures.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::browser::{self, Browser};
use crate::support::{client, patience, wait_for};
use crate::web::{admin_json, report};

const USERS_RULES: &str = "/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D/rules";

/// A request written by hand to `addr`, with whatever `Host` the test wants; the whole answer.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    patience(
        "the admin listener's answer",
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_reads_nothing_without_a_token_and_the_token_decides_with_one() {
    let open = report(|_| {}).await;
    let admin = open.app.admin;
    let foreign = raw(
        admin,
        "GET /api/v1/runs HTTP/1.1\r\nHost: rebound.evil.example:8888\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&foreign), "403", "{foreign}");
    assert!(foreign.contains("--admin-allowed-host"), "{foreign}");
    assert!(
        !foreign.contains("hostile"),
        "no data in the refusal: {foreign}"
    );
    let own = raw(
        admin,
        &format!("GET /api/v1/runs HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&own), "200", "{own}");
    let localhost = raw(
        admin,
        &format!(
            "GET /api/v1/runs HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            admin.port()
        ),
    )
    .await;
    assert_eq!(status(&localhost), "200", "{localhost}");
    // Probes address the listener by any name: health checks say nothing about the traffic.
    let probe = raw(
        admin,
        "GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:8888\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&probe), "200", "{probe}");
    open.app.stop().await;

    let named = report(|s| s.web.allowed_hosts = vec!["dash.internal".into()]).await;
    let answer = raw(
        named.app.admin,
        "GET /api/v1/runs HTTP/1.1\r\nHost: dash.internal:8888\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    named.app.stop().await;

    let guarded = report(|s| s.web.token = Some("s3cret-token".into())).await;
    let without = raw(
        guarded.app.admin,
        "GET /api/v1/runs HTTP/1.1\r\nHost: anything.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&without), "401", "{without}");
    let with = raw(
        guarded.app.admin,
        "GET /api/v1/runs HTTP/1.1\r\nHost: anything.example\r\nAuthorization: Bearer s3cret-token\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&with), "200", "{with}");
    guarded.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_changes_are_refused_and_scripts_without_browser_headers_are_not() {
    let report = report(|_| {}).await;
    let app = &report.app;
    let post = |path: &str, headers: &[(&'static str, &str)]| {
        let mut request = client()
            .post(app.admin_url(path))
            .form(&[("path", "body/name"), ("action", "ignore")]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        let response = post(USERS_RULES, &headers).await.unwrap();
        assert_eq!(response.status(), 403, "{headers:?}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("cross-site request refused"),
            "{headers:?}"
        );
        let response = post("/runs/hostile/clear", &headers).await.unwrap();
        assert_eq!(response.status(), 403, "{headers:?}");
        let api = client()
            .delete(app.admin_url("/api/v1/runs/hostile"))
            .header(headers[0].0, headers[0].1)
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 403, "{headers:?}");
    }
    let rules = admin_json(app, "/api/v1/rules").await;
    assert_eq!(rules["stored"], Value::Array(vec![]), "no rule was stored");
    assert!(
        admin_json(app, "/api/v1/runs").await[0]["label"] == "hostile",
        "the run is still there"
    );
    // The dashboard's own forms, and scripts that send neither header, still work.
    let own_origin = format!("http://{}", app.admin);
    let response = post(
        USERS_RULES,
        &[
            ("origin", own_origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 303);
    let response = client()
        .delete(app.admin_url("/api/v1/runs/hostile"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    report.app.stop().await;
}

/// Serves one HTML page on a port of its own: another origin than the admin listener.
async fn attacker_page(html: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_that_submits_the_forms_changes_nothing() {
    if browser::skipped() {
        return;
    }
    let report = report(|_| {}).await;
    let app = &report.app;
    let admin = app.admin;
    let browser = Browser::start().await;
    for (form, fields) in [
        ("/runs/hostile/clear", String::new()),
        (
            USERS_RULES,
            r#"<input name="path" value="body/name"><input name="action" value="ignore">"#
                .to_string(),
        ),
    ] {
        let page = attacker_page(format!(
            r#"<!doctype html><html><body>
<form id="f" method="post" action="http://{admin}{form}">{fields}</form>
<script>document.getElementById("f").submit();</script>
</body></html>"#
        ))
        .await;
        browser
            .client
            .goto(&format!("http://{page}/"))
            .await
            .unwrap();
        // The browser lands on the admin listener's answer: a refusal.
        wait_for("the refusal to be shown", || async {
            browser
                .client
                .source()
                .await
                .is_ok_and(|source| source.contains("cross-site request refused"))
        })
        .await;
    }
    let rules = admin_json(app, "/api/v1/rules").await;
    assert_eq!(rules["stored"], Value::Array(vec![]), "no rule was stored");
    let runs = admin_json(app, "/api/v1/runs").await;
    assert_eq!(runs[0]["label"], "hostile", "the run is still there");
    assert!(runs[0]["requests"].as_u64().unwrap() > 0);
    browser.close().await;
    report.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_expire_log_out_and_slow_down_after_failures() {
    let report = report(|s| {
        s.web.token = Some("s3cret-token".into());
        s.web.public_url = Some(format!("https://{}", "127.0.0.1").parse().unwrap());
        s.web.allowed_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    let app = &report.app;
    let login = |token: &'static str, next: &'static str| {
        client()
            .post(app.admin_url("/login"))
            .form(&[("token", token), ("next", next)])
            .send()
    };
    let response = login("s3cret-token", "/\t/evil.example").await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/",
        "a hostile next page goes home"
    );
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in [
        "Max-Age=43200",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let with_session = client()
        .get(app.admin_url("/api/v1/runs"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(with_session.status(), 200);

    let logout = client()
        .post(app.admin_url("/logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    for _ in 0..3 {
        assert_eq!(login("wrong", "/").await.unwrap().status(), 401);
    }
    let slowed = login("s3cret-token", "/").await.unwrap();
    assert_eq!(
        slowed.status(),
        429,
        "the right token waits too, once slowed"
    );
    let retry: u64 = slowed.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    report.app.stop().await;
}
