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
    Stub::start(move |seen| {
        let broken = broken.load(Ordering::SeqCst);
        async move {
            let id = seen
                .uri
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("0")
                .to_string();
            let key = if broken { "full_name" } else { "name" };
            json_response(StatusCode::OK, &format!(r#"{{"id":{id},"{key}":"ada"}}"#))
        }
    })
    .await
}

async fn steady() -> Stub {
    Stub::start(|seen| async move {
        let id = seen
            .uri
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("0")
            .to_string();
        json_response(StatusCode::OK, &format!(r#"{{"id":{id},"name":"ada"}}"#))
    })
    .await
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
        run: &str,
        change: impl FnOnce(&mut shadowdiff::app::AppSettings),
    ) -> Rig {
        let broken = Arc::new(AtomicBool::new(false));
        let stubs = [
            steady().await,
            steady().await,
            switchable_candidate(broken.clone()).await,
        ];
        let app = Self::instance(&stubs, database, Some(run), change).await;
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
    let rig = Rig::start(&database, "rev-1", |_| {}).await;
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
        for field in ["passed", "enough_data", "requests", "diff_rate"] {
            assert_eq!(
                gate[field], answer[field],
                "{run} {args:?}: {field} of {gate} vs {answer}"
            );
        }
        assert_eq!(ran.code, Some(if answer["passed"] == true { 0 } else { 1 }));
    }
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_run_started_on_one_and_a_restarted_one_rejoins_it() {
    let (_dir, database) = temp_database();
    let rig = Rig::start(&database, "first", |_| {}).await;
    let replica = Rig::instance(&rig.stubs, &database, Some("first"), |_| {}).await;
    let (status, _) = start_run(&rig.app, "second").await;
    assert_eq!(status, StatusCode::CREATED);
    // The replica learns of it from the store, at a flush; until then its exchanges still count for `first`.
    wait_for("the replica to follow", || async {
        verdict(&replica, "current", "").await.1["run"] == "second"
    })
    .await;
    send(&replica, 25).await;
    counted(&rig.app, "second", 25).await;

    // Started without --run, an instance in front of the same upstreams joins the open run.
    let rejoined = Rig::instance(&rig.stubs, &database, None, |_| {}).await;
    assert_eq!(verdict(&rejoined, "current", "").await.1["run"], "second");
    send(&rejoined, 5).await;
    counted(&rig.app, "second", 30).await;
    // One in front of other upstreams keeps to runs of its own.
    let others = [steady().await, steady().await, steady().await];
    let elsewhere = Rig::instance(&others, &database, None, |_| {}).await;
    assert_ne!(verdict(&elsewhere, "current", "").await.1["run"], "second");
    for app in [elsewhere, rejoined, replica, rig.app] {
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
    let rig = Rig::start(&database, "before-canary", |s| {
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
