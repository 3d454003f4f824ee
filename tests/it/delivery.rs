//! Progressive delivery against a live instance: runs started without a restart (from the API, by another
//! replica, by Flagger's pre-rollout hook), the verdict endpoint agreeing with the gate command, Flagger's
//! webhooks answering with Flagger's status codes, the verdict gauges (withdrawn while the store is away),
//! and notifications posted to a receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::support::process::run_command;
use crate::support::stub::{Stub, json_response};
use crate::support::{TestApp, client, temp_database, wait_for};

/// A candidate that renames `name` to `full_name` while `broken` is set, as a bad revision would.
async fn switchable_candidate(broken: Arc<AtomicBool>) -> Stub {
    Stub::item(Some(broken)).await
}

async fn steady() -> Stub {
    Stub::item(None).await
}

/// Primary, secondary and a candidate to break, behind an instance storing into `database` under `run`.
struct Rig {
    app: TestApp,
    broken: Arc<AtomicBool>,
    stubs: [Stub; 3],
}

impl Rig {
    async fn start(
        database: &str,
        run: Option<&str>,
        change: impl FnOnce(&mut shadowdiff::app::AppSettings),
    ) -> Rig {
        let broken = Arc::new(AtomicBool::new(false));
        let stubs = [
            steady().await,
            steady().await,
            switchable_candidate(broken.clone()).await,
        ];
        let app = Self::instance(&stubs, database, run, change).await;
        Rig { app, broken, stubs }
    }

    /// Another instance in front of the same upstreams, as a replica is.
    async fn instance(
        stubs: &[Stub; 3],
        database: &str,
        run: Option<&str>,
        change: impl FnOnce(&mut shadowdiff::app::AppSettings),
    ) -> TestApp {
        let run = run.map(str::to_string);
        TestApp::start_stored(
            &stubs[0].url(),
            &stubs[1].url(),
            &stubs[2].url(),
            |s| {
                s.writer.run = run;
                s.writer.flush_interval = Duration::from_millis(50);
                s.monitor.refresh = Duration::from_millis(100);
                change(s);
            },
            database,
        )
        .await
    }
}

async fn send(app: &TestApp, requests: usize) {
    for n in 0..requests {
        let response = client()
            .get(app.url(&format!("/items/{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
}

fn authorised(request: reqwest::RequestBuilder, app: &TestApp) -> reqwest::RequestBuilder {
    match &app.admin_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn verdict(app: &TestApp, run: &str, query: &str) -> (StatusCode, Value) {
    let url = app.admin_url(&format!("/api/v1/runs/{run}/verdict{query}"));
    let response = authorised(client().get(url), app).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn start_run(app: &TestApp, label: &str) -> (StatusCode, Value) {
    let request = client()
        .post(app.admin_url("/api/v1/runs"))
        .json(&json!({ "label": label }));
    let response = authorised(request, app).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `run` has counted `requests` compared requests.
async fn counted(app: &TestApp, run: &str, requests: u64) {
    let last = std::sync::Mutex::new(Value::Null);
    let counted = async {
        loop {
            let (_, answer) = verdict(app, run, "").await;
            if answer["requests"] == requests {
                return;
            }
            *last.lock().unwrap() = answer;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), counted)
        .await
        .is_err()
    {
        let runs = crate::support::get_json(&app.admin_url("/api/v1/runs")).await;
        panic!(
            "{requests} requests never counted in {run}: last {}; runs {runs}",
            last.lock().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_per_revision_without_a_restart_judged_as_the_gate_judges() {
    let (_dir, database) = temp_database();
    let rig = Rig::start(&database, Some("rev-1"), |_| {}).await;
    let app = &rig.app;
    send(app, 30).await;
    counted(app, "rev-1", 30).await;

    let (status, started) = start_run(app, "rev-2").await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["label"], "rev-2");
    assert_eq!(started["started"], true);
    let (status, again) = start_run(app, "rev-2").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "starting the run being written is a no-op"
    );
    assert_eq!(again["started"], false);
    assert_eq!(again["since_ms"], started["since_ms"]);
    for bad in ["", "latest", "current", "a\nb"] {
        let (status, answer) = start_run(app, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "label {bad:?}: {answer}");
    }

    rig.broken.store(true, Ordering::SeqCst);
    send(app, 40).await;
    counted(app, "rev-2", 40).await;

    let (status, first) = verdict(app, "rev-1", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["passed"], true, "{first}");
    assert_eq!(first["enough_data"], true);
    assert_eq!(
        first["requests"], 30,
        "the first revision's run is kept as it was: {first}"
    );
    assert_eq!(first["failing"], json!([]));
    assert!(
        first["reason"].as_str().unwrap().starts_with("passed"),
        "{first}"
    );

    let (_, second) = verdict(app, "current", "").await;
    assert_eq!(second["run"], "rev-2", "`current` is the run being written");
    assert_eq!(second["passed"], false, "{second}");
    assert_eq!(second["enough_data"], true);
    assert_eq!(second["diff_rate"], 1.0);
    assert!(second["breaking"].as_u64().unwrap() >= 1, "{second}");
    let failing = second["failing"].as_array().unwrap();
    let missing = failing
        .iter()
        .find(|place| place["path"] == "body/name" && place["kind"] == "missing")
        .unwrap_or_else(|| panic!("the missing field is named: {second}"));
    assert_eq!(missing["endpoint"], "GET /items/{id}");
    assert_eq!(missing["compat"], "breaking");
    assert_eq!(missing["rate"], 1.0);
    assert!(missing["sample"].is_string(), "{missing}");
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .contains("diff rate 100.0% is over 1.0%"),
        "{second}"
    );
    let keys: Vec<&str> = second
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "breaking",
            "diff_rate",
            "enough_data",
            "failing",
            "latency_regressions",
            "passed",
            "reason",
            "requests",
            "run"
        ],
        "exactly the documented fields"
    );

    // The gate's options, as query parameters.
    let (_, lenient) = verdict(app, "rev-2", "?max_diff_rate=1").await;
    assert_eq!(lenient["passed"], true, "{lenient}");
    let (_, young) = verdict(app, "rev-2", "?min_requests=500").await;
    assert_eq!(
        (young["passed"].clone(), young["enough_data"].clone()),
        (json!(false), json!(false)),
        "{young}"
    );
    let (_, other) = verdict(
        app,
        "rev-2",
        "?endpoint=GET%20/other/**&endpoint=POST%20/**",
    )
    .await;
    assert_eq!(other["requests"], 0, "no endpoint selected: {other}");
    let (_, breaking) = verdict(app, "rev-2", "?fail_on=breaking&latency=true").await;
    assert_eq!(breaking["passed"], false);
    let (status, bad) = verdict(app, "rev-2", "?max_diff_rate=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("max_diff_rate"),
        "{bad}"
    );
    let (status, bad) = verdict(app, "rev-2", "?max_diff=0.1").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an unknown option is named: {bad}"
    );

    // A run not seen yet is "too little data", never a 404 (Argo Rollouts counts a 404 as an error).
    let (status, unknown) = verdict(app, "rev-9", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unknown["enough_data"], false);
    assert_eq!(unknown["passed"], false);
    assert_eq!(unknown["requests"], 0);

    // The run list says which run was closed.
    let runs: Value = client()
        .get(app.admin_url("/api/v1/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let closed = |label: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|run| run["label"] == label)
            .unwrap()["closed_at_ms"]
            .is_i64()
    };
    assert!(closed("rev-1"), "{runs}");
    assert!(!closed("rev-2"), "{runs}");
    let overview = crate::support::get_text(&app.admin_url("/runs/current")).await;
    assert!(
        overview.contains(">rev-1 (closed)</option>"),
        "the run selector says which run is closed"
    );
    assert!(overview.contains(">rev-2</option>"));

    // The gate command judges the same runs the same way.
    for (run, args) in [
        ("rev-1", vec![]),
        ("rev-2", vec![]),
        ("rev-2", vec!["--max-diff-rate", "1"]),
        ("rev-2", vec!["--min-requests", "500"]),
    ] {
        let mut all = vec![
            "gate",
            "--database-url",
            &database,
            "--run",
            run,
            "--format",
            "json",
        ];
        all.extend(args.iter().copied());
        let ran = run_command(&all).await;
        let gate: Value =
            serde_json::from_str(&ran.stdout).unwrap_or_else(|_| panic!("{}", ran.stderr));
        let query = match args.as_slice() {
            ["--max-diff-rate", rate] => format!("?max_diff_rate={rate}"),
            ["--min-requests", n] => format!("?min_requests={n}"),
            _ => String::new(),
        };
        let (_, answer) = verdict(app, run, &query).await;
        for field in ["passed", "requests", "diff_rate"] {
            assert_eq!(
                gate[field], answer[field],
                "{run} {args:?}: {field} of {gate} vs {answer}"
            );
        }
        assert_eq!(ran.code, Some(if answer["passed"] == true { 0 } else { 1 }));
        let min_requests = if args.first() == Some(&"--min-requests") {
            500
        } else {
            20
        };
        let enough = gate["requests"].as_u64().unwrap() >= min_requests;
        assert_eq!(answer["enough_data"], enough, "{run} {args:?}");
    }
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_run_started_on_one_and_a_restarted_one_rejoins_it() {
    let (_dir, database) = temp_database();
    // Without --run, replicas in front of the same upstreams share one run and follow its switches.
    let rig = Rig::start(&database, None, |_| {}).await;
    let replica = Rig::instance(&rig.stubs, &database, None, |_| {}).await;
    let first = verdict(&rig.app, "current", "").await.1["run"].clone();
    assert_eq!(verdict(&replica, "current", "").await.1["run"], first);
    // One given --run keeps to it, as before runs could be switched (a CI job beside them, say).
    let pinned = Rig::instance(&rig.stubs, &database, Some("pinned"), |_| {}).await;

    let (status, _) = start_run(&rig.app, "second").await;
    assert_eq!(status, StatusCode::CREATED);
    // The replica learns of it from the store, at a flush.
    wait_for("the replica to follow", || async {
        verdict(&replica, "current", "").await.1["run"] == "second"
    })
    .await;
    send(&replica, 25).await;
    counted(&rig.app, "second", 25).await;
    send(&pinned, 5).await;
    counted(&pinned, "pinned", 5).await;
    assert_eq!(verdict(&pinned, "current", "").await.1["run"], "pinned");
    assert_eq!(verdict(&rig.app, "second", "").await.1["requests"], 25);

    // Started without --run, an instance in front of the same upstreams joins the open run.
    let rejoined = Rig::instance(&rig.stubs, &database, None, |_| {}).await;
    assert_eq!(verdict(&rejoined, "current", "").await.1["run"], "second");
    send(&rejoined, 5).await;
    counted(&rig.app, "second", 30).await;
    // One in front of other upstreams keeps to runs of its own.
    let others = [steady().await, steady().await, steady().await];
    let elsewhere = Rig::instance(&others, &database, None, |_| {}).await;
    assert_ne!(verdict(&elsewhere, "current", "").await.1["run"], "second");
    for app in [elsewhere, rejoined, pinned, replica, rig.app] {
        app.stop().await;
    }
}

/// Flagger's webhook payload, as Flagger sends it.
fn flagger_payload(checksum: &str, metadata: Value) -> Value {
    json!({
        "name": "checkout",
        "namespace": "shop",
        "phase": "Progressing",
        "checksum": checksum,
        "metadata": metadata,
    })
}

async fn flagger(app: &TestApp, hook: &str, payload: &Value) -> (StatusCode, String) {
    let response = client()
        .post(app.admin_url(&format!("/api/v1/webhooks/flagger/{hook}")))
        .json(payload)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_webhooks_start_the_revisions_run_and_gate_rollout_and_promotion() {
    let (_dir, database) = temp_database();
    let rig = Rig::start(&database, Some("before-canary"), |s| {
        s.web.token = Some("s3cret".into())
    })
    .await;
    let app = &rig.app;
    let meta = |extra: Value| {
        let mut metadata = json!({"token": "s3cret", "min_requests": "20"});
        metadata
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        metadata
    };

    let (status, text) = flagger(app, "pre-rollout", &flagger_payload("abc123", json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token, no run: {text}");
    let (status, text) = flagger(
        app,
        "pre-rollout",
        &flagger_payload("abc123", json!({"token": "wrong"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let (status, text) = flagger(
        app,
        "pre-rollout",
        &flagger_payload("abc123", meta(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, "run `checkout.shop-abc123` started\n");
    let run = "checkout.shop-abc123";
    assert_eq!(verdict(app, "current", "").await.1["run"], run);

    // Too little data: a rollout check does not count toward rollback; promotion waits.
    rig.broken.store(true, Ordering::SeqCst);
    let (status, text) = flagger(app, "rollout", &flagger_payload("abc123", meta(json!({})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("waiting for data"), "{text}");
    let (status, text) = flagger(
        app,
        "confirm-promotion",
        &flagger_payload("abc123", meta(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{text}");
    assert!(text.contains("only 0 compared requests"), "{text}");

    send(app, 30).await;
    counted(app, run, 30).await;
    let (status, text) = flagger(app, "rollout", &flagger_payload("abc123", meta(json!({})))).await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "a failing verdict on enough data: {text}"
    );
    assert!(
        text.contains(&format!("run `{run}`")) && text.contains("diff rate 100.0% is over 1.0%"),
        "{text}"
    );
    let (status, _) = flagger(
        app,
        "confirm-promotion",
        &flagger_payload("abc123", meta(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    // Thresholds come from the metadata.
    let (status, text) = flagger(
        app,
        "rollout",
        &flagger_payload("abc123", meta(json!({"max_diff_rate": "1"}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = flagger(
        app,
        "rollout",
        &flagger_payload("abc123", meta(json!({"min_requests": "500"}))),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "too little data under metadata's min_requests: {text}"
    );
    let (status, text) = flagger(
        app,
        "rollout",
        &flagger_payload("abc123", meta(json!({"max_diff_rate": "lots"}))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("max_diff_rate"), "{text}");

    // The next revision (a new checksum) is judged apart.
    rig.broken.store(false, Ordering::SeqCst);
    let (status, text) = flagger(
        app,
        "pre-rollout",
        &flagger_payload("def456", meta(json!({}))),
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "run `checkout.shop-def456` started\n")
    );
    let (status, text) = flagger(
        app,
        "pre-rollout",
        &flagger_payload("def456", meta(json!({}))),
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (
            StatusCode::OK,
            "run `checkout.shop-def456` already being written\n"
        )
    );
    send(app, 30).await;
    counted(app, "checkout.shop-def456", 30).await;
    let (status, text) = flagger(
        app,
        "confirm-promotion",
        &flagger_payload("def456", meta(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("passed"), "{text}");
    let (status, _) = flagger(app, "rollout", &flagger_payload("def456", meta(json!({})))).await;
    assert_eq!(status, StatusCode::OK);
    // The old revision's run is still there, and still fails.
    let (status, _) = flagger(
        app,
        "confirm-promotion",
        &flagger_payload("abc123", meta(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    // `metadata.run` names the run outright; a bearer header serves as well as the metadata's token.
    let response = client()
        .post(app.admin_url("/api/v1/webhooks/flagger/confirm-promotion"))
        .bearer_auth("s3cret")
        .json(&flagger_payload(
            "zzz",
            json!({"run": "checkout.shop-def456", "min_requests": "20"}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (status, text) =
        flagger(app, "rollback", &flagger_payload("def456", meta(json!({})))).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a rollback hook answered 200 would roll back: {text}"
    );
    // The rest of the API still wants the token.
    let response = client()
        .get(app.admin_url("/api/v1/runs/current/verdict"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    rig.app.stop().await;
}

/// The value of the first series of `name` in a scrape, if there is one.
fn series(scrape: &str, name: &str) -> Option<(String, f64)> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !rest.starts_with('{') {
            return None;
        }
        let (labels, value) = rest.rsplit_once(' ')?;
        Some((labels.to_string(), value.parse().ok()?))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_gauges_follow_the_run_and_are_withdrawn_while_the_store_is_away() {
    if crate::support::db::TestDb::postgres().await.is_none() {
        return;
    }
    // A cluster of this test's own, so that stopping it disturbs no other test.
    let cluster = crate::support::db::PgCluster::start();
    let url = crate::support::db::create_database(&cluster.url).await;
    let rig = Rig::start(&url, Some("gauged"), |_| {}).await;
    let app = &rig.app;
    rig.broken.store(true, Ordering::SeqCst);
    send(app, 30).await;
    counted(app, "gauged", 30).await;
    wait_for("the gauges to show the failing run", || async {
        series(&app.scrape().await, "shadowdiff_verdict_enough_data").is_some_and(|(_, v)| v == 1.0)
    })
    .await;
    let scrape = app.scrape().await;
    assert_eq!(
        series(&scrape, "shadowdiff_verdict_passed"),
        Some((r#"{run="gauged"}"#.into(), 0.0)),
        "{scrape}"
    );
    assert_eq!(
        series(&scrape, "shadowdiff_run_diff_rate"),
        Some((r#"{run="gauged"}"#.into(), 1.0))
    );
    assert_eq!(
        series(&scrape, "shadowdiff_run_noise_rate"),
        Some((r#"{run="gauged"}"#.into(), 0.0))
    );
    assert_eq!(
        series(&scrape, "shadowdiff_endpoint_diff_rate"),
        Some((r#"{run="gauged",endpoint="GET /items/{id}"}"#.into(), 1.0))
    );
    assert_eq!(
        series(&scrape, "shadowdiff_endpoint_latency_regression"),
        Some((r#"{run="gauged",endpoint="GET /items/{id}"}"#.into(), 0.0))
    );

    // A new run: the gauges speak of it alone.
    rig.broken.store(false, Ordering::SeqCst);
    start_run(app, "gauged-2").await;
    send(app, 25).await;
    counted(app, "gauged-2", 25).await;
    wait_for("the gauges to follow the new run", || async {
        series(&app.scrape().await, "shadowdiff_verdict_passed")
            == Some((r#"{run="gauged-2"}"#.into(), 1.0))
    })
    .await;
    assert!(
        !app.scrape().await.contains(r#"run="gauged""#),
        "the closed run's series are gone"
    );

    cluster.pause();
    wait_for("the verdict gauges to be withdrawn", || async {
        series(&app.scrape().await, "shadowdiff_verdict_passed").is_none()
    })
    .await;
    let scrape = app.scrape().await;
    for gone in [
        "shadowdiff_verdict_enough_data",
        "shadowdiff_run_diff_rate",
        "shadowdiff_endpoint_diff_rate",
    ] {
        assert!(
            series(&scrape, gone).is_none(),
            "{gone} is withdrawn, not left stale: {scrape}"
        );
    }
    cluster.resume();
    wait_for("the verdict gauges to come back", || async {
        series(&app.scrape().await, "shadowdiff_verdict_passed").is_some()
    })
    .await;
    rig.app.stop().await;
}

/// Every message a receiver got, as JSON.
async fn received(receiver: &Stub) -> Vec<Value> {
    let mut messages = Vec::new();
    for _ in 0..receiver.hits() {
        let seen = receiver.next_request().await;
        assert_eq!(seen.method, http::Method::POST);
        assert_eq!(seen.headers["content-type"], "application/json");
        messages.push(serde_json::from_slice(&seen.body).unwrap());
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_sent_once_across_replicas_in_the_chosen_format() {
    let (_dir, database) = temp_database();
    let receiver = Stub::json("{}").await;
    let hook: http::Uri = format!("{}/hooks/T000/B000", receiver.url())
        .parse()
        .unwrap();
    let notify = |format: shadowdiff::notify::NotifyFormat| {
        let hook = hook.clone();
        move |s: &mut shadowdiff::app::AppSettings| {
            s.notify.urls = vec![hook];
            s.notify.format = format;
            s.web.public_url = Some("https://shadowdiff.example".parse().unwrap());
        }
    };
    let rig = Rig::start(
        &database,
        Some("told"),
        notify(shadowdiff::notify::NotifyFormat::Json),
    )
    .await;
    let replica = Rig::instance(
        &rig.stubs,
        &database,
        Some("told"),
        notify(shadowdiff::notify::NotifyFormat::Slack),
    )
    .await;
    // Too little data first: the verdict is `waiting`; then the candidate breaks and it fails.
    rig.broken.store(true, Ordering::SeqCst);
    send(&rig.app, 15).await;
    send(&replica, 15).await;
    counted(&rig.app, "told", 30).await;
    for app in [&rig.app, &replica] {
        wait_for("both replicas to judge the failing run", || async {
            series(&app.scrape().await, "shadowdiff_verdict_enough_data")
                .is_some_and(|(_, v)| v == 1.0)
        })
        .await;
    }
    replica.stop().await;
    rig.app.stop().await;

    let messages = received(&receiver).await;
    let text = |message: &Value| {
        message["text"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default()
    };
    // The rename is one change of two places: one message, whichever replica sent it.
    let regressions: Vec<&Value> = messages
        .iter()
        .filter(|m| text(m).starts_with("New change"))
        .collect();
    assert_eq!(
        regressions.len(),
        1,
        "one message for the new change, whichever replica sent it: {messages:?}"
    );
    assert!(
        text(regressions[0])
            .contains("`body/name` missing, `body/full_name` extra on GET /items/{id}"),
        "{messages:?}"
    );
    let flips: Vec<&Value> = messages
        .iter()
        .filter(|m| text(m).contains("waiting → failed"))
        .collect();
    assert_eq!(flips.len(), 1, "one message for the flip: {messages:?}");
    let summaries: Vec<&Value> = messages
        .iter()
        .filter(|m| text(m).starts_with("shadowdiff stopped"))
        .collect();
    assert_eq!(summaries.len(), 2, "each process's summary: {messages:?}");

    // The JSON format carries the event's fields; the Slack one text and blocks linking the dashboard.
    let json_summary = summaries
        .iter()
        .find(|m| m.get("event").is_some())
        .expect("the JSON-format summary");
    assert_eq!(json_summary["event"], "summary");
    assert_eq!(json_summary["run"], "told");
    assert_eq!(
        json_summary["dashboard"],
        "https://shadowdiff.example/runs/told"
    );
    assert_eq!(json_summary["verdict"]["passed"], false);
    assert_eq!(json_summary["verdict"]["requests"], 30);
    let slack_summary = summaries
        .iter()
        .find(|m| m.get("blocks").is_some())
        .expect("the Slack-format summary");
    let shown = slack_summary["blocks"][0]["text"]["text"].as_str().unwrap();
    assert_eq!(slack_summary["blocks"][0]["text"]["type"], "mrkdwn");
    assert!(
        shown.ends_with("<https://shadowdiff.example/runs/told|dashboard>"),
        "{shown}"
    );
    for message in [regressions[0], flips[0]] {
        if message.get("event").is_some() {
            assert!(
                message["run"] == "told" && message["dashboard"].is_string(),
                "{message}"
            );
        } else {
            assert!(message["blocks"].is_array(), "{message}");
        }
    }
    if let Some(event) = regressions[0].get("event") {
        assert_eq!(event, "change");
        assert_eq!(
            regressions[0]["endpoints"],
            serde_json::json!(["GET /items/{id}"])
        );
        assert_eq!(regressions[0]["compat"], "breaking");
        assert_eq!(regressions[0]["places"], 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_retried_then_counted_and_callers_never_wait() {
    let (_dir, database) = temp_database();
    let receiver =
        Stub::start(|_| async { json_response(StatusCode::SERVICE_UNAVAILABLE, "{}") }).await;
    let hook: http::Uri = receiver.url().parse().unwrap();
    let rig = Rig::start(&database, Some("unheard"), |s| s.notify.urls = vec![hook]).await;
    rig.broken.store(true, Ordering::SeqCst);
    send(&rig.app, 30).await;
    let metrics = rig.app.metrics.clone();
    crate::support::wait_until("a message to fail after its retries", || {
        metrics.notify.outcome("failed") >= 1
    })
    .await;
    assert!(
        receiver.hits() >= 4,
        "four attempts before giving up: {}",
        receiver.hits()
    );
    assert_eq!(metrics.notify.outcome("sent"), 0);
    assert!(
        rig.app
            .scrape()
            .await
            .contains(r#"shadowdiff_notifications_total{outcome="failed"}"#)
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_begun_before_a_switch_is_counted_for_neither_run_but_as_dropped() {
    use shadowdiff::store::metrics::{Unstored, UnstoredReason};
    let (_dir, database) = temp_database();
    let gate = crate::support::stub::Gate::new();
    let stubs = [
        steady().await,
        steady().await,
        Stub::gated_json(&gate, r#"{"id":1,"name":"ada"}"#).await,
    ];
    let app = Rig::instance(&stubs, &database, Some("old"), |_| {}).await;
    // The caller is answered by primary while the candidate holds its answer back.
    send(&app, 1).await;
    let (status, _) = start_run(&app, "new").await;
    assert_eq!(status, StatusCode::CREATED);
    gate.open();
    let metrics = app.metrics.clone();
    crate::support::wait_until("the straggler to be dropped", || {
        metrics
            .store
            .dropped_reason_count(Unstored::Exchange, UnstoredReason::RunClosed)
            == 1
    })
    .await;
    // Afterwards the new run counts what begins in it.
    send(&app, 3).await;
    counted(&app, "new", 3).await;
    assert_eq!(verdict(&app, "old", "").await.1["requests"], 0);
    let scrape = app.scrape().await;
    assert!(
        scrape.contains(r#"shadowdiff_store_dropped_total{what="exchange",reason="run_closed"} 1"#),
        "{scrape}"
    );
    app.stop().await;
}

crate::support::on_both_backends!(starts_at_once_from_many_replicas_leave_one_open_run_pointed_at);

async fn starts_at_once_from_many_replicas_leave_one_open_run_pointed_at(
    db: crate::support::db::TestDb,
) {
    use shadowdiff::store::runs::Start;
    let store = db.store().await;
    let urls = ["http://p", "http://s", "http://c"];
    let starts = (0..8).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let label = format!("rev-{n}");
            store
                .start_run(&label, urls, n, Start::Replace, None)
                .await
                .unwrap()
        })
    });
    let started = futures_util::future::join_all(starts).await;
    let mut generations: Vec<i64> = started
        .iter()
        .map(|s| s.as_ref().unwrap().0.generation)
        .collect();
    generations.sort();
    assert_eq!(
        generations,
        (1..=8).collect::<Vec<_>>(),
        "each start moved the pointer once, in turn"
    );
    let active = store.active_run(urls).await.unwrap().unwrap();
    assert_eq!(active.generation, 8);
    let runs = store.runs().await.unwrap();
    let open: Vec<&str> = runs
        .iter()
        .filter(|r| r.closed_at_ms.is_none())
        .map(|r| r.label.as_str())
        .collect();
    assert_eq!(
        open,
        [active.label.as_str()],
        "every run but the active one is closed"
    );
    // Replicas starting together agree on the run one of them named.
    let (joined, moved) = store
        .start_run("fallback", urls, 9, Start::JoinOrCreate, None)
        .await
        .unwrap();
    assert!(!moved);
    assert_eq!(joined, active);
}
