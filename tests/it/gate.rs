//! The CI gate as a process: exit 0 within bounds, 1 over them (naming endpoints, paths, rates and samples), 2
//! without a verdict; its JSON has exactly the documented shape; JUnit and Markdown carry the same verdict.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::replay::{endpoint, gate_json, regressions};
use crate::support::process::run_command;
use crate::support::stub::Stub;
use crate::support::{TestApp, client, temp_database};

/// Stores a run of `requests` GETs of `/items/{n}` against these upstreams.
async fn stored_run(database: &str, label: &str, stubs: [Stub; 3], requests: usize) {
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| s.writer.run = Some(label.into()),
        database,
    )
    .await;
    for n in 0..requests {
        let response = client()
            .get(app.url(&format!("/items/{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    app.stop().await;
}

/// A store with four runs: `same` (no differences), `renamed` (a field renamed in every response), `added` (only
/// an extra field) and `thin` (too few requests to judge).
async fn store_with_runs() -> (tempfile::TempDir, String) {
    let (dir, database) = temp_database();
    let same = || Stub::json(r#"{"id":1,"name":"ada"}"#);
    stored_run(
        &database,
        "same",
        [same().await, same().await, same().await],
        30,
    )
    .await;
    let renamed = [
        Stub::users(0, false).await,
        Stub::users(5_000, false).await,
        Stub::users(90_000, true).await,
    ];
    stored_run(&database, "renamed", renamed, 30).await;
    let added = [
        Stub::json(r#"{"a":1}"#).await,
        Stub::json(r#"{"a":1}"#).await,
        Stub::json(r#"{"a":1,"b":2}"#).await,
    ];
    stored_run(&database, "added", added, 30).await;
    stored_run(
        &database,
        "thin",
        [same().await, same().await, same().await],
        5,
    )
    .await;
    (dir, database)
}

async fn gate(database: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["gate", "--database-url", database];
    all.extend_from_slice(args);
    let ran = run_command(&all).await;
    (ran.code, ran.stdout, ran.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_passed_failed_or_no_verdict() {
    let (_dir, database) = store_with_runs().await;

    let (code, out, _) = gate(&database, &["--run", "same"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("shadowdiff gate PASSED"), "{out}");

    let (code, out, _) = gate(&database, &["--run", "renamed"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("shadowdiff gate FAILED"), "{out}");
    assert!(
        out.contains("GET /items/{id}: diff rate 100.0% is over 1.0%"),
        "{out}"
    );
    let missing = out
        .lines()
        .find(|line| line.contains("body/name missing (breaking)"))
        .unwrap_or_else(|| panic!("the failing path is named: {out}"));
    let sample = missing.rsplit("sample ").next().unwrap().trim();
    assert!(
        uuid::Uuid::parse_str(sample).is_ok(),
        "a sample id: {missing}"
    );
    assert!(
        !out.contains("served_at"),
        "noise is not called a failure: {out}"
    );

    let (code, out, _) = gate(&database, &["--run", "renamed", "--max-diff-rate", "100%"]).await;
    assert_eq!(code, Some(0), "{out}");

    let (code, out, _) = gate(&database, &["--run", "thin"]).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("only 5 compared requests") && out.contains("too little evidence"),
        "{out}"
    );
    let (code, _, _) = gate(&database, &["--run", "thin", "--min-requests", "5"]).await;
    assert_eq!(code, Some(0));

    let (code, out, _) = gate(&database, &["--run", "added"]).await;
    assert_eq!(code, Some(1), "an extra field is a regression: {out}");
    let (code, out, _) = gate(&database, &["--run", "added", "--fail-on", "breaking"]).await;
    assert_eq!(code, Some(0), "but not a breaking one: {out}");
    let (code, _, _) = gate(&database, &["--run", "renamed", "--fail-on", "breaking"]).await;
    assert_eq!(code, Some(1), "a missing field is breaking");

    let (code, out, _) = gate(
        &database,
        &["--run", "renamed", "--endpoint", "GET /other/**"],
    )
    .await;
    assert_eq!(code, Some(1), "nothing selected is no evidence: {out}");
    assert!(out.contains("only 0 compared requests"), "{out}");

    let (code, _, err) = gate(&database, &["--run", "nope"]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("no run labelled `nope`"), "{err}");
    let (code, _, err) = gate("bogus://nowhere", &[]).await;
    assert_eq!(code, Some(2));
    assert!(err.starts_with("error:"), "{err}");
    let (code, _, err) = gate(&database, &["--max-diff-rate", "lots"]).await;
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "a one-line usage error: {err}");

    let (_empty_dir, empty) = temp_database();
    let (code, _, err) = gate(&empty, &[]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("no runs yet"), "{err}");
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_junit_and_markdown_carry_the_verdict() {
    let (_dir, database) = store_with_runs().await;

    let (code, report) = gate_json(&database, "renamed", &[]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        keys(&report),
        set(&[
            "run",
            "passed",
            "max_diff_rate",
            "requests",
            "diff_rate",
            "endpoints",
            "changes"
        ])
    );
    assert_eq!(report["run"], "renamed");
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "the rename is one change: {changes:#?}");
    let change = &changes[0];
    for key in [
        "id",
        "title",
        "compat",
        "requests",
        "endpoints",
        "places",
        "consequences",
        "predictors",
        "sample",
    ] {
        assert!(change.get(key).is_some(), "{key} in {change:#}");
    }
    assert_eq!(
        change["title"],
        "`body/name` missing, `body/full_name` extra on GET /items/{id}"
    );
    assert_eq!(change["compat"], "breaking");
    assert_eq!(change["requests"], 30);
    assert_eq!(change["endpoints"], serde_json::json!(["GET /items/{id}"]));
    for place in change["places"].as_array().unwrap() {
        for key in ["endpoint", "path", "kind", "compat", "rate"] {
            assert!(place.get(key).is_some(), "{key} in {place:#}");
        }
    }
    assert!(
        change["predictors"].as_array().unwrap().is_empty(),
        "it fails on every request"
    );
    assert_eq!(report["passed"], false);
    assert_eq!(report["max_diff_rate"], 0.01);
    assert_eq!(report["requests"], 30);
    assert_eq!(report["diff_rate"], 1.0);
    let items = endpoint(&report, "GET /items/{id}");
    assert_eq!(
        keys(items),
        set(&[
            "endpoint",
            "requests",
            "diff_rate",
            "noise_rate",
            "latency",
            "latency_regression",
            "regressions",
            "noise"
        ])
    );
    assert_eq!(
        keys(&items["latency"]),
        set(&["primary", "secondary", "candidate"])
    );
    for target in ["primary", "secondary", "candidate"] {
        assert_eq!(keys(&items["latency"][target]), set(&["p50_ms", "p99_ms"]));
        assert!(items["latency"][target]["p99_ms"].as_f64().unwrap() > 0.0);
    }
    for regression in items["regressions"].as_array().unwrap() {
        assert_eq!(
            keys(regression),
            set(&["path", "kind", "compat", "raw", "noise", "rate", "sample"])
        );
        assert!(uuid::Uuid::parse_str(regression["sample"].as_str().unwrap()).is_ok());
    }
    assert_eq!(
        regressions(items),
        [
            ("body/full_name".to_string(), "extra".to_string()),
            ("body/name".to_string(), "missing".to_string())
        ]
    );
    let compat: Vec<&str> = items["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["compat"].as_str().unwrap())
        .collect();
    assert_eq!(
        compat,
        ["breaking", "additive"],
        "worst class first at equal rates"
    );
    let noise: Vec<&Value> = items["noise"].as_array().unwrap().iter().collect();
    assert!(
        noise
            .iter()
            .any(|n| n["path"] == "body/served_at" && keys(n) == set(&["path", "raw", "noise"])),
        "{noise:?}"
    );
    let (code, passed) = gate_json(&database, "same", &[]).await;
    assert_eq!(code, Some(0));
    assert_eq!(passed["passed"], true);
    assert!(
        endpoint(&passed, "GET /items/{id}")["regressions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let (code, junit, _) = gate(&database, &["--run", "renamed", "--format", "junit"]).await;
    assert_eq!(code, Some(1));
    assert!(
        junit.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"),
        "{junit}"
    );
    assert_eq!(
        junit.matches("<testcase ").count(),
        2,
        "the whole run, and one per endpoint: {junit}"
    );
    assert!(
        junit.contains("name=\"GET /items/{id}\">\n      <failure message=\"GET /items/{id}: diff rate 100.0% is over 1.0%\""),
        "{junit}"
    );
    assert!(junit.contains("body/name missing (breaking)"));
    assert!(junit.trim_end().ends_with("</testsuites>"));
    let (code, junit, _) = gate(&database, &["--run", "same", "--format", "junit"]).await;
    assert_eq!(code, Some(0));
    assert!(!junit.contains("<failure"), "{junit}");

    let (code, markdown, _) = gate(&database, &["--run", "renamed", "--format", "markdown"]).await;
    assert_eq!(code, Some(1));
    assert!(
        markdown.starts_with("### ❌ shadowdiff gate failed"),
        "{markdown}"
    );
    let row = markdown
        .lines()
        .find(|line| line.starts_with("| ❌ | `GET /items/{id}`"))
        .unwrap_or_else(|| panic!("a row per endpoint: {markdown}"));
    assert_eq!(row.matches(" | ").count(), 6, "seven cells: {row}");
    assert!(
        row.contains("`body/name` missing (breaking) 100.0%"),
        "{row}"
    );
}
