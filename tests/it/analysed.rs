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
