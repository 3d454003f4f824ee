//! The deployment files under `deploy/` against a live instance: the Argo Rollouts templates' URLs, bodies,
//! JSONPath and conditions give the outcomes they promise for a passing, a failing and a too-young run;
//! Flagger's webhooks are routed; every metric the Grafana dashboard and Flagger's MetricTemplate query is one
//! `/metrics` exposes. (`scripts/check-deploy.sh` checks the same files' schemas offline.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::stub::Stub;
use crate::support::{TestApp, client, temp_database, wait_for};

fn deploy_file(path: &str) -> String {
    let path = format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// Every document of a YAML file, as JSON values.
fn yaml_documents(path: &str) -> Vec<Value> {
    let text = deploy_file(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|error| panic!("{path}: {error}"))
        })
        .collect()
}

/// The first metric of an AnalysisTemplate named `name`.
fn template_metric(name: &str) -> Value {
    yaml_documents("argo-rollouts/analysis-template.yaml")
        .into_iter()
        .find(|document| {
            document["kind"] == "AnalysisTemplate" && document["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no AnalysisTemplate {name}"))["spec"]["metrics"][0]
        .clone()
}

/// A template string with Argo's `{{args.NAME}}` filled.
fn fill(text: &str, args: &[(&str, &str)]) -> String {
    args.iter().fold(text.to_string(), |text, (name, value)| {
        text.replace(&format!("{{{{args.{name}}}}}"), value)
    })
}

/// The template's URL aimed at this instance's admin listener (the path and query as written).
fn aimed(url: &str, app: &TestApp) -> String {
    let rest = url.split_once("://").unwrap().1;
    let path = &rest[rest.find('/').unwrap()..];
    app.admin_url(path)
}

/// Argo's client-go JSONPath (`{$.passed}`) evaluated on `body`: the braces off, then RFC 9535 JSONPath.
fn json_path(expression: &str, body: &Value) -> Value {
    let inner = expression
        .trim()
        .strip_prefix('{')
        .unwrap()
        .strip_suffix('}')
        .unwrap();
    let path = serde_json_path::JsonPath::parse(inner).unwrap_or_else(|e| panic!("{inner}: {e}"));
    path.query(body).exactly_one().unwrap().clone()
}

/// The simple expr-lang forms the templates use: `result.a.b == LITERAL`, joined with `&&`.
fn condition(expression: &str, result: &Value) -> bool {
    expression.split("&&").all(|term| {
        let (left, right) = term
            .split_once("==")
            .unwrap_or_else(|| panic!("unsupported condition {term}"));
        let mut value = result;
        let mut names = left.trim().split('.');
        assert_eq!(names.next(), Some("result"), "{term}");
        for name in names {
            value = &value[name];
        }
        let literal: Value =
            serde_json::from_str(right.trim()).unwrap_or_else(|_| panic!("literal in {term}"));
        *value == literal
    })
}

/// What Argo Rollouts would make of one measurement: Successful, Failed or Inconclusive.
fn outcome(metric: &Value, body: &Value, args: &[(&str, &str)]) -> &'static str {
    let result = json_path(
        metric["provider"]["web"]["jsonPath"].as_str().unwrap(),
        body,
    );
    let success = condition(
        &fill(metric["successCondition"].as_str().unwrap(), args),
        &result,
    );
    let failure = metric["failureCondition"]
        .as_str()
        .is_some_and(|failure| condition(&fill(failure, args), &result));
    match (success, failure) {
        (true, false) => "Successful",
        (false, true) => "Failed",
        (false, false) => "Inconclusive",
        (true, true) => panic!("both conditions hold for {body}"),
    }
}

/// One measurement as Argo's web provider takes it: method, URL, headers and body from the template.
async fn measure(metric: &Value, app: &TestApp, args: &[(&str, &str)]) -> (StatusCode, Value) {
    let web = &metric["provider"]["web"];
    let url = aimed(&fill(web["url"].as_str().unwrap(), args), app);
    let mut request = match web["method"].as_str().unwrap_or("GET") {
        "POST" => client().post(url),
        "GET" => client().get(url),
        other => panic!("method {other}"),
    };
    for header in web["headers"].as_array().into_iter().flatten() {
        request = request.header(
            header["key"].as_str().unwrap(),
            fill(header["value"].as_str().unwrap(), args),
        );
    }
    if let Some(body) = web.get("jsonBody") {
        let body = fill(&body.to_string(), args);
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn item_stub(broken: Option<Arc<AtomicBool>>) -> Stub {
    Stub::item(broken).await
}

async fn send(app: &TestApp, requests: usize) {
    futures_util::stream::iter(0..requests)
        .map(|n| async move {
            let response = client()
                .get(app.url(&format!("/items/{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

const TOKEN: &str = "argo-s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_argo_templates_pass_fail_and_wait_as_they_say() {
    let (_dir, database) = temp_database();
    let broken = Arc::new(AtomicBool::new(false));
    let stubs = [
        item_stub(None).await,
        item_stub(None).await,
        item_stub(Some(broken.clone())).await,
    ];
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            s.writer.run = Some("before".into());
            s.writer.flush_interval = Duration::from_millis(50);
            s.web.token = Some(TOKEN.into());
        },
        &database,
    )
    .await;
    let start = template_metric("shadowdiff-start-run");
    let verdict = template_metric("shadowdiff-verdict");
    assert_eq!(verdict["provider"]["web"]["jsonPath"], "{$}");
    assert_eq!(verdict["successCondition"], "result.passed == true");
    assert_eq!(
        verdict["failureCondition"],
        "result.enough_data == true && result.passed == false"
    );
    let min_requests: u64 = verdict["provider"]["web"]["url"]
        .as_str()
        .unwrap()
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("min_requests="))
        .expect("the verdict URL sets min_requests")
        .parse()
        .unwrap();
    assert!(
        min_requests >= 300,
        "hundreds of requests, to see a 1 % regression: {min_requests}"
    );

    let judged = |revision: &'static str| [("revision", revision), ("admin-token", TOKEN)];
    for (revision, candidate_broken, requests, expected) in [
        ("good", false, min_requests as usize, "Successful"),
        ("bad", true, min_requests as usize, "Failed"),
        ("young", false, 10, "Inconclusive"),
    ] {
        let args = judged(revision);
        // The start-run step, as Argo runs it: the run named after the revision becomes the one written.
        let (status, answer) = measure(&start, &app, &args).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(outcome(&start, &answer, &args), "Successful", "{answer}");
        let (status, again) = measure(&start, &app, &args).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a retried start is a success too: {again}"
        );
        assert_eq!(outcome(&start, &again, &args), "Successful");

        broken.store(candidate_broken, Ordering::SeqCst);
        send(&app, requests).await;
        let run = format!("checkout-{revision}");
        wait_for(&format!("{requests} requests in {run}"), || async {
            let (_, answer) = measure(&verdict, &app, &args).await;
            answer["run"] == run.as_str() && answer["requests"] == requests as u64
        })
        .await;
        let (status, answer) = measure(&verdict, &app, &args).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            outcome(&verdict, &answer, &args),
            expected,
            "{revision}: {answer}"
        );
    }
    // A revision not seen yet: 200 and Inconclusive, not an Error.
    let args = judged("never-started");
    let (status, answer) = measure(&verdict, &app, &args).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome(&verdict, &answer, &args), "Inconclusive");
    // Without the Secret's token the measurement is an Error (a 401), never a verdict.
    let (status, _) = measure(
        &verdict,
        &app,
        &[("revision", "good"), ("admin-token", "wrong")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flagger_canary_webhooks_are_routed_and_answer_in_flaggers_terms() {
    let (_dir, database) = temp_database();
    let stubs = [
        item_stub(None).await,
        item_stub(None).await,
        item_stub(None).await,
    ];
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| s.web.token = Some("REPLACE-ME-with-the-admin-token".into()),
        &database,
    )
    .await;
    let canary = &yaml_documents("flagger/canary.yaml")[0];
    let webhooks = canary["spec"]["analysis"]["webhooks"].as_array().unwrap();
    let types: BTreeSet<&str> = webhooks
        .iter()
        .map(|hook| hook["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from(["confirm-promotion", "pre-rollout", "rollout"])
    );
    for hook in webhooks {
        let payload = json!({
            "name": canary["metadata"]["name"], "namespace": canary["metadata"]["namespace"],
            "phase": "Progressing", "checksum": "7f6d9c", "metadata": hook["metadata"],
        });
        let response = client()
            .post(aimed(hook["url"].as_str().unwrap(), &app))
            .json(&payload)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let expected = match hook["type"].as_str().unwrap() {
            "pre-rollout" => StatusCode::OK,
            // No traffic yet: a rollout check passes, promotion waits.
            "rollout" => StatusCode::OK,
            _ => StatusCode::PRECONDITION_FAILED,
        };
        assert_eq!(status, expected, "{}: {text}", hook["name"]);
        assert!(text.contains("checkout.shop-7f6d9c"), "{text}");
    }
    app.stop().await;
}

/// The metric names a scrape exposes, with the suffixes their types render (`_total`, `_bucket`, ...).
fn exposed(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// Every `shadowdiff_*` name in a query.
fn queried(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expression;
    while let Some(at) = rest.find("shadowdiff_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_metric_template_query_only_exposed_metrics() {
    let (_dir, database) = temp_database();
    let stubs = [
        item_stub(None).await,
        item_stub(None).await,
        item_stub(None).await,
    ];
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            s.writer.flush_interval = Duration::from_millis(50);
            s.monitor.refresh = Duration::from_millis(50);
        },
        &database,
    )
    .await;
    send(&app, 25).await;
    wait_for("the verdict gauges", || async {
        app.scrape()
            .await
            .contains("shadowdiff_verdict_enough_data{run=")
    })
    .await;
    let names = exposed(&app.scrape().await);

    let dashboard: Value = serde_json::from_str(&deploy_file("grafana/shadowdiff.json")).unwrap();
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(queries.len() >= 6, "{queries:?}");
    let template = &yaml_documents("flagger/metric-template.yaml")[0];
    queries.push(template["spec"]["query"].as_str().unwrap().to_string());
    let mut checked = BTreeSet::new();
    for query in &queries {
        for name in queried(query) {
            assert!(
                names.contains(&name),
                "`{name}` (in `{query}`) is not on /metrics; it has {names:?}"
            );
            checked.insert(name);
        }
    }
    for verdict in [
        "shadowdiff_verdict_passed",
        "shadowdiff_run_diff_rate",
        "shadowdiff_endpoint_diff_rate",
    ] {
        assert!(checked.contains(verdict), "the dashboard shows {verdict}");
    }
    app.stop().await;
}
