//! `--sample-retention` on both backends: samples older than it go (at the writer's first retention pass, so a
//! restart applies it at once) while the counts and the verdict they give stay; younger samples are kept.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use shadowdiff::clock::now_ms;
use shadowdiff::store::queries::TimeRange;

use crate::changes::respond;
use crate::support::db::TestDb;
use crate::support::stub::{Seen, Stub, StubBody};
use crate::support::{TestApp, client, get_json, wait_for};

crate::support::on_both_backends!(old_samples_go_and_the_counts_stay);

const HOUR_MS: i64 = 3_600_000;

fn answer(_: &Seen, candidate: bool) -> http::Response<StubBody> {
    let body = if candidate {
        r#"{"a":2}"#
    } else {
        r#"{"a":1}"#
    };
    respond(StatusCode::OK, &[], body.to_string())
}

/// An instance writing run `kept`, samples kept for an hour.
async fn instance(db: &TestDb, stubs: &[Stub; 3]) -> TestApp {
    TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            s.writer.run = Some("kept".into());
            s.writer.flush_interval = Duration::from_millis(50);
            s.writer.sample_retention = Some(Duration::from_secs(3600));
        },
        db.url(),
    )
    .await
}

async fn send(app: &TestApp, count: usize) {
    for n in 0..count {
        let answered = client()
            .get(app.url(&format!("/items/{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200);
        answered.bytes().await.unwrap();
    }
}

/// The regressions the API reports for the run's one endpoint, by path.
fn regressions(endpoints: &Value) -> Vec<String> {
    endpoints[0]["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

async fn old_samples_go_and_the_counts_stay(db: TestDb) {
    let stubs = crate::changes::upstreams(answer).await;
    let store = db.store().await;
    let app = instance(&db, &stubs).await;
    send(&app, 20).await;
    let endpoints = app.admin_url("/api/v1/runs/kept/endpoints");
    wait_for("twenty requests counted", || async {
        get_json(&endpoints).await[0]["requests"] == 20
    })
    .await;
    let samples_url = app.admin_url("/api/v1/runs/kept/samples?endpoint=GET%20%2Fitems%2F%7Bid%7D");
    wait_for("samples", || async {
        get_json(&samples_url)
            .await
            .as_array()
            .is_some_and(|s| !s.is_empty())
    })
    .await;
    let before = get_json(&endpoints).await;
    assert_eq!(regressions(&before), ["body/a"]);
    app.stop().await;
    let run_id = store.run("kept").await.unwrap().unwrap().id;
    let counted = |store: shadowdiff::store::Store| async move {
        store
            .endpoint_counts(run_id, TimeRange::all())
            .await
            .unwrap()
            .values()
            .map(|c| c.tally.requests)
            .sum::<u64>()
    };
    assert_eq!(counted(store.clone()).await, 20);
    let stored_samples = |store: shadowdiff::store::Store| async move {
        store
            .samples(run_id, "GET /items/{id}", None, 100)
            .await
            .unwrap()
    };
    assert!(!stored_samples(store.clone()).await.is_empty());

    // The samples were taken two hours ago, the counts are recent: the next start's first pass deletes the
    // samples alone.
    db.execute(&format!(
        "UPDATE samples SET created_at = created_at - {}",
        2 * HOUR_MS
    ))
    .await;
    let app = instance(&db, &stubs).await;
    wait_for("the old samples to go", || {
        let store = store.clone();
        async move { stored_samples(store).await.is_empty() }
    })
    .await;
    assert_eq!(counted(store.clone()).await, 20, "the counts stay");
    let after = get_json(&endpoints_of(&app)).await;
    assert_eq!(after[0]["requests"], 20);
    assert_eq!(regressions(&after), ["body/a"], "the verdict stays");
    assert!(
        get_json(&samples_of(&app))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Samples younger than the retention are kept.
    send(&app, 5).await;
    wait_for("new samples", || {
        let store = store.clone();
        async move { !stored_samples(store).await.is_empty() }
    })
    .await;
    app.stop().await;
    let kept = stored_samples(store.clone()).await;
    assert!(kept.iter().all(|s| s.created_at_ms > now_ms() - HOUR_MS));
    assert_eq!(counted(store).await, 25);
}

fn endpoints_of(app: &TestApp) -> String {
    app.admin_url("/api/v1/runs/kept/endpoints")
}

fn samples_of(app: &TestApp) -> String {
    app.admin_url("/api/v1/runs/kept/samples?endpoint=GET%20%2Fitems%2F%7Bid%7D")
}
