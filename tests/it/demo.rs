//! `shadowdiff demo --then-gate` as a user runs it: the built-in services, proxy, store and traffic in one
//! process; the gate fails and names exactly the candidate's regressions, and none of the noise.

use serde_json::Value;

use crate::replay::{endpoint, regressions};
use crate::support::process::run_command;
use crate::support::temp_database;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(path, kind)| (path.to_string(), kind.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fails_the_gate_on_its_regressions_and_none_of_its_noise() {
    let (_dir, database) = temp_database();
    let ran = run_command(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--database-url",
        &database,
        "--rate",
        "500",
        // 400 searches: the p99 the latency verdict compares is then not one stall of a loaded machine.
        "--requests",
        "2000",
        "--duration",
        "10m",
        "--then-gate",
        "--latency",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("Open the dashboard: http://127.0.0.1:"),
        "{}",
        ran.stderr
    );
    let report: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(
        report["requests"], 2000,
        "every request was compared and stored"
    );

    let users = endpoint(&report, "GET /users/{id}");
    assert_eq!(
        regressions(users),
        pairs(&[("body/full_name", "extra"), ("body/name", "missing")])
    );
    let products = endpoint(&report, "GET /products/{id}");
    assert_eq!(
        regressions(products),
        pairs(&[("body/price", "type_changed")])
    );
    assert_eq!(products["regressions"][0]["compat"], "breaking");
    let orders = endpoint(&report, "GET /orders/{id}");
    assert_eq!(
        regressions(orders),
        pairs(&[("body/total_cents", "value_changed")])
    );
    assert_eq!(orders["diff_rate"], 0.05, "one order in twenty");
    let search = endpoint(&report, "GET /search");
    assert_eq!(search["latency_regression"], true, "{search:#}");
    assert!(search["regressions"].as_array().unwrap().is_empty());
    let health = endpoint(&report, "GET /health");
    assert!(health["regressions"].as_array().unwrap().is_empty());

    // The four planted changes, and nothing made of noise: the rename, the type change, the wrong total named
    // by its predictor, the slow search.
    let changes = report["changes"].as_array().unwrap();
    let titles: Vec<&str> = changes
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(changes.len(), 4, "{titles:#?}");
    let titled = |title: &str| {
        changes
            .iter()
            .find(|c| c["title"] == title)
            .unwrap_or_else(|| panic!("{title} among {titles:#?}"))
    };
    let rename = titled("`body/name` missing, `body/full_name` extra on GET /users/{id}");
    assert_eq!(rename["requests"], 600);
    let price = titled("`body/price` number → string on GET /products/{id}");
    assert_eq!(price["compat"], "breaking");
    let total = titled("`body/total_cents` changed on GET /orders/{id}");
    assert_eq!(total["requests"], 20);
    let predictors = total["predictors"].as_array().unwrap();
    assert_eq!(
        predictors[0]["feature"], "path /orders/{id} last digit",
        "{predictors:#?}"
    );
    assert_eq!(predictors[0]["value"], "7");
    assert_eq!(predictors[0]["failing_share"], 1.0);
    assert!(predictors[0]["passing_share"].as_f64().unwrap() < 0.06);
    // Every slower endpoint is one change (latency is one shape); the search is always among them.
    let slow = changes
        .iter()
        .find(|c| c["places"][0]["path"] == "latency")
        .expect("the slow search is a change");
    assert!(
        slow["endpoints"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("GET /search")),
        "{slow:#}"
    );
    assert_eq!(slow["places"][0]["kind"], "slower");
    for change in [rename, price, slow] {
        assert!(
            change["predictors"].as_array().unwrap().is_empty(),
            "{change:#}"
        );
    }

    let mut noise = Vec::new();
    for endpoint in report["endpoints"].as_array().unwrap() {
        for place in endpoint["noise"].as_array().unwrap() {
            noise.push(place["path"].as_str().unwrap().to_string());
        }
    }
    for expected in [
        "body/generated_at",
        "body/request_id",
        "body/tags",
        "body/cached",
        "header/x-request-id",
    ] {
        assert!(
            noise.iter().any(|path| path == expected),
            "{expected} is seen and called noise: {noise:?}"
        );
    }
}

#[tokio::test]
async fn then_gate_needs_an_end_to_the_traffic() {
    let (_dir, database) = temp_database();
    let ran = run_command(&["demo", "--then-gate", "--database-url", &database]).await;
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .contains("--then-gate needs --duration or --requests"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_its_dashboard_until_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (_dir, database) = temp_database();
    let mut child = tokio::process::Command::new(crate::support::process::BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
            "--run",
            "interactive",
        ])
        .env("SHADOWDIFF_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let dashboard = crate::support::patience("the dashboard's address", async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the demo prints its banner");
            if let Some(url) = line.trim().strip_prefix("Open the dashboard: ") {
                return url.to_string();
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let runs_url = format!("{dashboard}api/v1/runs");
    crate::support::wait_for("the demo's traffic to be stored", || {
        let url = runs_url.clone();
        async move {
            let runs = crate::support::get_json(&url).await;
            runs[0]["label"] == "interactive" && runs[0]["requests"].as_u64() > Some(0)
        }
    })
    .await;
    let page = crate::support::client()
        .get(&dashboard)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("GET /users/{id}"));

    let pid = child.id().unwrap().to_string();
    let interrupted = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(interrupted.success());
    let status = crate::support::patience("the demo to stop", child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C is a clean stop");
}
