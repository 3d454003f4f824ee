//! Clearing the live run while traffic flows: what follows the clear's answer is stored in the run started
//! again, and only what began before is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use shadowdiff::store::metrics::{Unstored, UnstoredReason};
use shadowdiff::store::queries::TimeRange;

use crate::bounded::{get_all, stored_app, stored_requests};
use crate::support::db::TestDb;
use crate::support::{TestApp, client, wait_for};

crate::support::on_both_backends!(
    clearing_the_live_run_keeps_what_follows_the_answer,
    a_replica_learns_of_the_clear_at_its_next_write,
);

fn paths(prefix: &str, count: usize) -> Vec<(String, Option<String>)> {
    (0..count)
        .map(|i| (format!("/{prefix}/{i}"), None))
        .collect()
}

async fn clearing_the_live_run_keeps_what_follows_the_answer(db: TestDb) {
    let (app, _upstreams) = stored_app(&db, r#"{"n":1}"#, |s| {
        s.writer.run = Some("live".into());
        s.writer.flush_interval = Duration::from_millis(50);
    })
    .await;
    let store = db.store().await;
    get_all(&app, paths("before", 30), 4).await;
    let old = store.run("live").await.unwrap().unwrap();

    // Traffic keeps flowing while the run is cleared: one caller sends until told to stop, counting the
    // requests it has begun.
    let begun = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flowing = {
        let (begun, stop) = (begun.clone(), stop.clone());
        let urls: Vec<String> = (0..400).map(|i| app.url(&format!("/during/{i}"))).collect();
        let backlog = app.backlog.clone();
        tokio::spawn(async move {
            let http = client();
            for url in urls {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // Shadow work that falls behind is shed; this caller must not lose any, so it waits for it.
                while backlog() > 16 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                begun.fetch_add(1, Ordering::SeqCst);
                let response = http.get(url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        })
    };
    // Some of the flowing traffic is in the writer's hands when the clear comes.
    wait_for("traffic to flow", || {
        let begun = begun.clone();
        async move { begun.load(Ordering::SeqCst) >= 20 }
    })
    .await;
    let cleared = client()
        .delete(app.admin_url("/api/v1/runs/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    // Every request begun from here on began after the clear was answered.
    let begun_before_answer = begun.load(Ordering::SeqCst);
    get_all(&app, paths("after", 60), 4).await;
    stop.store(true, Ordering::SeqCst);
    flowing.await.unwrap();
    let during = begun.load(Ordering::SeqCst);

    let metrics = app.metrics.clone();
    app.stop().await;
    let restarted = store.run("live").await.unwrap().unwrap();
    assert_ne!(
        restarted.id, old.id,
        "the run was started again under its label"
    );
    assert_eq!(restarted.primary_url, old.primary_url);
    let counts = store
        .endpoint_counts(restarted.id, TimeRange::all())
        .await
        .unwrap();
    let requests = |endpoint: &str| counts.get(endpoint).map_or(0, |c| c.tally.requests);
    assert_eq!(requests("GET /after/{id}"), 60, "{:?}", counts.keys());
    assert_eq!(
        requests("GET /before/{id}"),
        0,
        "what began before the clear is not in the new run"
    );
    let during_stored = requests("GET /during/{id}") as usize;
    assert!(
        during_stored >= during - begun_before_answer,
        "every flowing request begun after the answer is stored: {during_stored} of {during}, {begun_before_answer} begun before"
    );
    assert!(during_stored <= during);
    // Dropped as deleted: only what began before the answer (and was not yet written into the deleted run).
    let deleted = metrics
        .store
        .dropped_reason_count(Unstored::Exchange, UnstoredReason::RunDeleted)
        as usize;
    assert!(
        deleted <= 30 + begun_before_answer,
        "{deleted} dropped as deleted, but only {} began before the clear",
        30 + begun_before_answer
    );
    assert_eq!(store.runs().await.unwrap().len(), 1);
}

async fn a_replica_learns_of_the_clear_at_its_next_write(db: TestDb) {
    let settings = |s: &mut shadowdiff::app::AppSettings| {
        s.writer.run = Some("shared".into());
        s.writer.flush_interval = Duration::from_millis(50);
    };
    let (a, upstreams) = stored_app(&db, r#"{"n":1}"#, settings).await;
    let b = TestApp::start_stored(
        &upstreams[0].url(),
        &upstreams[1].url(),
        &upstreams[2].url(),
        settings,
        db.url(),
    )
    .await;
    let store = db.store().await;
    get_all(&a, paths("a", 10), 2).await;
    get_all(&b, paths("b", 10), 2).await;
    wait_for("both replicas' traffic to be stored", || {
        let store = store.clone();
        async move { stored_requests(&store, "shared").await == Some(20) }
    })
    .await;
    let old = store.run("shared").await.unwrap().unwrap();

    let cleared = client()
        .delete(a.admin_url("/api/v1/runs/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    let restarted = store.run("shared").await.unwrap().unwrap();
    assert_ne!(restarted.id, old.id);

    // The other replica learns of the clear when it next writes: what it holds then is dropped and counted
    // (or, if its heartbeat found the run gone first, written into the run started again).
    get_all(&b, paths("learning", 1), 1).await;
    let b_metrics = b.metrics.clone();
    wait_for("the other replica to learn of the clear", || {
        let (store, b_metrics) = (store.clone(), b_metrics.clone());
        async move {
            let dropped = b_metrics
                .store
                .dropped_reason_count(Unstored::Exchange, UnstoredReason::RunDeleted);
            dropped >= 1 || stored_requests(&store, "shared").await == Some(1)
        }
    })
    .await;
    get_all(&a, paths("a-after", 30), 2).await;
    get_all(&b, paths("b-after", 30), 2).await;
    a.stop().await;
    b.stop().await;

    assert_eq!(
        store.runs().await.unwrap().len(),
        1,
        "one run, started again once"
    );
    let run = store.run("shared").await.unwrap().unwrap();
    assert_eq!(
        run.id, restarted.id,
        "the replica writes into the run the clear started again"
    );
    let counts = store
        .endpoint_counts(run.id, TimeRange::all())
        .await
        .unwrap();
    let requests = |endpoint: &str| counts.get(endpoint).map_or(0, |c| c.tally.requests);
    assert_eq!(requests("GET /a-after/{id}"), 30, "{:?}", counts.keys());
    assert_eq!(requests("GET /b-after/{id}"), 30, "{:?}", counts.keys());
    assert_eq!(requests("GET /a/{id}") + requests("GET /b/{id}"), 0);
}
