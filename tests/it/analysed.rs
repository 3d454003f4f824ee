//! The proxy feeding the analysis: real traffic through stubs, analysed off the caller's path.

use shadowdiff::analysis::BodySkip;
use shadowdiff::pipeline::metrics::Analysed;
use std::io::Write;

use bytes::Bytes;
use http::Response;
use shadowdiff::analysis::SkipReason;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::exchange::Target;

use crate::support::stub::{Gate, Stub, full};
use crate::support::{TestApp, client, wait_for};

#[tokio::test]
async fn exchanges_through_the_proxy_are_analysed() {
    let primary = Stub::users(0, false).await;
    let secondary = Stub::users(500, false).await;
    let candidate = Stub::users(1_000_000, true).await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    for id in 1..=5 {
        let body = client()
            .get(app.url(&format!("/users/{id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains(r#""name":"ada""#), "{body}");
    }
    for _ in 1..=5 {
        let analysis = app.next_analysis().await;
        assert_eq!(analysis.exchange.endpoint, "GET /users/{id}");
        let compared = analysis.compared().expect("compared");
        let mut candidate: Vec<(&str, DiffKind)> = compared
            .candidate
            .iter()
            .map(|d| (d.path.as_str(), d.kind))
            .collect();
        candidate.sort();
        assert_eq!(
            candidate,
            vec![
                ("body/full_name", DiffKind::Extra),
                ("body/name", DiffKind::Missing),
                ("body/served_at", DiffKind::ValueChanged)
            ]
        );
        let noise: Vec<&str> = compared.noise.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(noise, vec!["body/served_at"]);
        assert_eq!(
            compared.signature(),
            vec![
                ("body/full_name".to_string(), DiffKind::Extra),
                ("body/name".to_string(), DiffKind::Missing)
            ]
        );
    }
    let metrics = app.scrape().await;
    assert!(
        metrics.contains(r#"shadowdiff_exchanges_analysed_total{result="compared"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"shadowdiff_differences_total{side="candidate"} 15"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"shadowdiff_differences_total{side="noise"} 5"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rules_file_applies_to_the_analysis() {
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "[[rule]]\nendpoint = \"GET /users/*\"\npath = \"body/served_at\"\naction = \"ignore\"\n",
    )
    .unwrap();
    let primary = Stub::users(0, false).await;
    let secondary = Stub::users(500, false).await;
    let candidate = Stub::users(1_000_000, true).await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |s| {
            s.analysis.rules = Some(rules.path().to_str().unwrap().into())
        })
        .await;
    client().get(app.url("/users/9")).send().await.unwrap();
    let analysis = app.next_analysis().await;
    let compared = analysis.compared().unwrap();
    assert!(compared.noise.is_empty());
    assert_eq!(compared.candidate.len(), 2);
}

#[tokio::test]
async fn an_invalid_rules_file_stops_the_start_with_its_line() {
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "[[rule]]\npath = \"body/a\"\naction = \"tolerance\"\n",
    )
    .unwrap();
    let args = crate::support::settings(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
        |s| s.analysis.rules = Some(rules.path().to_str().unwrap().into()),
    );
    let error = shadowdiff::app::Application::build(args)
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(
        text.contains(&format!("{}:1:", rules.path().display())),
        "{text}"
    );
    assert!(text.contains("absolute"), "{text}");

    let (_database, url) = crate::support::temp_database();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .env("SHADOWDIFF_DATABASE_URL", url)
        .args([
            "serve",
            "--primary",
            "http://127.0.0.1:1",
            "--secondary",
            "http://127.0.0.1:2",
        ])
        .args([
            "--candidate",
            "http://127.0.0.1:3",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--rules", rules.path().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(":1:") && stderr.contains("tolerance"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bodies_the_analysis_cannot_read_do_not_touch_the_caller() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 48 << 20]).unwrap();
    let bomb = Bytes::from(bomb.finish().unwrap());
    let deep_body = deep.clone();
    let bomb_body = bomb.clone();
    let candidate = Stub::start(move |seen| {
        let (deep, bomb) = (deep_body.clone(), bomb_body.clone());
        async move {
            if seen.uri.path() == "/deep" {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(full(deep))
                    .unwrap()
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(full(bomb))
                    .unwrap()
            }
        }
    })
    .await;
    let primary = Stub::json("[]").await;
    let secondary = Stub::json("[]").await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |s| {
            s.analysis.max_decoded_body = 4 << 20
        })
        .await;

    let deep_answer = client()
        .get(app.url("/deep"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(deep_answer, "[]");
    let analysis = app.next_analysis().await;
    assert!(
        analysis
            .compared()
            .unwrap()
            .body_skipped
            .contains(&(Target::Candidate, BodySkip::JsonTooDeep))
    );

    let bomb_answer = client()
        .get(app.url("/bomb"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bomb_answer, "[]");
    let analysis = app.next_analysis().await;
    assert_eq!(
        analysis.compared().unwrap().body_skipped,
        vec![(Target::Candidate, BodySkip::DecodedTooLarge)]
    );
    assert_eq!(app.metrics.analysis.failures(), 0);
}

#[tokio::test]
async fn shed_shadows_are_counted_skips() {
    let primary = Stub::json("{}").await;
    let secondary = Stub::json("{}").await;
    let gate = Gate::new();
    let candidate = Stub::gated_json(&gate, "{}").await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |s| {
            s.proxy.shadow.max_inflight = 1
        })
        .await;
    client().get(app.url("/first")).send().await.unwrap();
    candidate.next_request().await;
    // Secondary's answer to the first is read on a shadow thread; its slot must be free before the second.
    wait_for("secondary's first request to finish", || async {
        app.scrape()
            .await
            .contains("shadowdiff_shadow_inflight{target=\"secondary\"} 0")
    })
    .await;
    client().get(app.url("/second")).send().await.unwrap();
    let shed = app.next_analysis().await;
    assert_eq!(shed.exchange.request.uri.path(), "/second");
    assert_eq!(shed.result.unwrap_err(), SkipReason::CandidateShed);
    gate.open();
    let first = app.next_analysis().await;
    assert!(first.compared().unwrap().candidate.is_empty());
    assert_eq!(
        app.metrics
            .analysis
            .analysed_count(Analysed::Skipped(SkipReason::CandidateShed)),
        1
    );
    assert_eq!(app.metrics.analysis.analysed_count(Analysed::Compared), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_rewrites_send_the_candidate_its_own_words_and_compare_the_answers() {
    use crate::support::stub::json_response;
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        r#"
[[rewrite]]
target = "candidate"
path_prefix = { from = "/api/v4/", to = "/api/v5/" }
set_header = { "X-Feature" = "new-checkout" }
remove_header = ["X-Legacy"]
set_query = { flag = "on" }
remove_query = ["debug"]

[[rewrite]]
target = "secondary"
path_regex = { pattern = "^/api/v4/orders/(\\d+)$", replace = "/api/v4/order/$1" }
"#,
    )
    .unwrap();
    // Each version answers only the request in its own words: a rewrite that did not happen is a 404.
    let current = |accepted: &'static str| {
        Stub::start(move |seen| async move {
            let status = if seen.uri.path().starts_with(accepted) {
                200
            } else {
                404
            };
            json_response(
                http::StatusCode::from_u16(status).unwrap(),
                r#"{"id":7,"total":12}"#,
            )
        })
    };
    let primary = current("/api/v4/orders/").await;
    let secondary = current("/api/v4/order/").await;
    let candidate = current("/api/v5/orders/").await;
    let (_dir, database) = crate::support::temp_database();
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.analysis.rules = Some(rules.path().to_str().unwrap().into());
            s.writer.run = Some("rewritten".into());
            s.writer.flush_interval = std::time::Duration::from_millis(50);
        },
        &database,
    )
    .await;
    let response = client()
        .get(app.url("/api/v4/orders/7?debug=1&page=2"))
        .header("x-legacy", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let sent = candidate.next_request().await;
    assert_eq!(sent.uri.path(), "/api/v5/orders/7");
    assert_eq!(sent.uri.query(), Some("page=2&flag=on"));
    assert_eq!(sent.headers["x-feature"], "new-checkout");
    assert!(sent.headers.get("x-legacy").is_none());
    let to_secondary = secondary.next_request().await;
    assert_eq!(to_secondary.uri.path(), "/api/v4/order/7");
    assert_eq!(to_secondary.uri.query(), Some("debug=1&page=2"));
    assert_eq!(
        to_secondary.headers["x-legacy"], "1",
        "a secondary rewrite changes only its path"
    );
    let to_primary = primary.next_request().await;
    assert_eq!(
        to_primary.uri.path_and_query().unwrap().as_str(),
        "/api/v4/orders/7?debug=1&page=2"
    );

    // The answers are compared as answers to one request: nothing differs.
    let url = app.admin_url("/api/v1/runs/rewritten/verdict?min_requests=1");
    crate::support::wait_for("the exchange to be stored", || {
        let url = url.clone();
        async move {
            let verdict = crate::support::get_json(&url).await;
            verdict["requests"] == 1
        }
    })
    .await;
    let verdict = crate::support::get_json(&url).await;
    assert_eq!(verdict["passed"], true, "{verdict}");
    // The exchange page says what each rewritten upstream was sent.
    let samples = crate::support::get_json(&app.admin_url(
        "/api/v1/runs/rewritten/samples?endpoint=GET%20%2Fapi%2Fv4%2Forders%2F%7Bid%7D",
    ))
    .await;
    let id = samples[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a sample: {samples}"))
        .to_string();
    let exchange =
        crate::support::get_json(&app.admin_url(&format!("/api/v1/exchanges/{id}"))).await;
    let sent = exchange["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 2, "{exchange}");
    let to_candidate = sent.iter().find(|s| s["target"] == "candidate").unwrap();
    assert_eq!(to_candidate["uri"], "/api/v5/orders/7?page=2&flag=on");
    let page = crate::support::get_text(&app.admin_url(&format!("/exchanges/{id}"))).await;
    assert!(
        page.contains("Sent to candidate (rewritten by the rules file)"),
        "{page}"
    );
    assert!(
        page.contains("/api/v5/orders/7?page=2&#38;flag=on"),
        "{page}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secondary_primary_is_asked_twice_for_safe_methods_only() {
    let primary = Stub::users(0, false).await;
    let candidate = Stub::users(1_000_000, false).await;
    let (_dir, database) = crate::support::temp_database();
    let url = |stub: &Stub| stub.url().parse().unwrap();
    let app = TestApp::start_stored(
        &primary.url(),
        &primary.url(),
        &candidate.url(),
        |s| {
            s.upstreams = shadowdiff::proxy::upstream::UpstreamSettings::without_secondary(
                url(&primary),
                url(&candidate),
            );
            s.proxy.shadow.allow_side_effects = true;
            s.writer.run = Some("alone".into());
            s.writer.flush_interval = std::time::Duration::from_millis(50);
        },
        &database,
    )
    .await;
    for id in 0..10 {
        client()
            .get(app.url(&format!("/users/{id}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    client()
        .post(app.url("/users/1"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let url = app.admin_url("/api/v1/runs/alone/verdict?min_requests=1");
    crate::support::wait_for("the exchanges to be stored", || {
        let url = url.clone();
        async move { crate::support::get_json(&url).await["requests"] == 11 }
    })
    .await;
    // Each GET reached primary twice (the second answer is the baseline), the POST once.
    assert_eq!(primary.hits(), 21);
    assert_eq!(candidate.hits(), 11);
    // `served_at` differs between primary's two answers: noise, not a regression; the POST had no baseline, so
    // its `served_at` counts.
    let report = crate::support::get_json(&app.admin_url("/api/v1/runs/alone")).await;
    let gets = report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "GET /users/{id}")
        .unwrap();
    assert_eq!(gets["diff_rate"], 0.0, "{gets}");
    assert!(
        gets["noise"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["path"] == "body/served_at"),
        "{gets}"
    );
    let runs = crate::support::get_json(&app.admin_url("/api/v1/runs")).await;
    assert_eq!(
        runs[0]["secondary_url"], "",
        "the run records that it had no secondary"
    );
    let overview = crate::support::get_text(&app.admin_url("/runs/alone")).await;
    assert!(
        overview.contains("noise baseline: primary asked twice (no secondary)"),
        "{overview}"
    );
    app.stop().await;
    let database = database.clone();
    let gate = crate::support::process::run_command(&[
        "gate",
        "--database-url",
        &database,
        "--run",
        "alone",
        "--min-requests",
        "1",
        "--format",
        "json",
    ])
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&gate.stdout).unwrap_or_else(|_| panic!("{}", gate.stderr));
    assert_eq!(json["baseline"], "primary-twice");
    let text = crate::support::process::run_command(&[
        "gate",
        "--database-url",
        &database,
        "--run",
        "alone",
        "--min-requests",
        "1",
    ])
    .await;
    assert!(
        text.stdout.contains("noise baseline: primary asked twice"),
        "{}",
        text.stdout
    );
}
