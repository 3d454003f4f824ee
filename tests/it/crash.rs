//! `kill -9` in the middle of a loaded run, then a restart under the same `--run`: the database is intact, the
//! run goes on, and nothing is counted twice or lost beyond what the killed process held in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::Connection;
use tokio::process::Command;

use crate::bounded::stored_requests;
use crate::support::client;
use crate::support::db::TestDb;
use crate::support::process::{Serving, spawn_serving};
use crate::support::stub::Stub;
use crate::support::wait_for;

crate::support::on_both_backends!(a_process_killed_under_load_restarts_into_its_run);

const STORED: &str = "shadowdiff_exchanges_stored_total";

/// Sends GETs through `serving` at a steady pace (one every 4 ms, up to 4 at once) until `stop`, counting
/// those begun: a loaded run, not a saturated one, in which shadow work (and the writer) would yield to
/// callers until nothing is written. Answers after the kill are errors, as a caller of a killed proxy sees.
fn load(
    serving: &Serving,
    begun: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let proxy = serving.url("");
    tokio::spawn(async move {
        let http = client();
        let mut pace = tokio::time::interval(Duration::from_millis(4));
        let callers = Arc::new(tokio::sync::Semaphore::new(4));
        let mut requests = tokio::task::JoinSet::new();
        for i in 0.. {
            pace.tick().await;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let caller = callers.clone().acquire_owned().await.unwrap();
            let (http, begun, url) = (http.clone(), begun.clone(), format!("{proxy}/items/{i}"));
            requests.spawn(async move {
                begun.fetch_add(1, Ordering::SeqCst);
                if let Ok(response) = http.get(url).send().await {
                    let _ = response.bytes().await;
                }
                drop(caller);
            });
        }
        requests.join_all().await;
    })
}

async fn sqlite_is_intact(db: &TestDb) {
    if db.is_postgres() {
        return;
    }
    let mut connection = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(verdict, "ok");
}

async fn a_process_killed_under_load_restarts_into_its_run(db: TestDb) {
    let body = r#"{"items":[1,2,3]}"#;
    let (primary, secondary, candidate) = (
        Stub::json(body).await,
        Stub::json(body).await,
        Stub::json(body).await,
    );
    let envs = [
        ("SHADOWDIFF_DATABASE_URL", db.url().to_string()),
        ("SHADOWDIFF_PRIMARY", primary.url()),
        ("SHADOWDIFF_SECONDARY", secondary.url()),
        ("SHADOWDIFF_CANDIDATE", candidate.url()),
    ];
    let flags = ["--run", "crash", "--store-flush-interval", "50ms"];
    let first = spawn_serving(&flags, &envs).await;
    let (begun, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sender = load(&first, begun.clone(), stop.clone());
    wait_for("several batches to be written under load", || {
        let metrics = first.metrics();
        async move { metrics.await.value(STORED) >= 300.0 }
    })
    .await;

    // What the process said it had committed just before it is killed is in the database after.
    let committed = first.metrics().await.value(STORED) as u64;
    let killed = Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    let sent_before = begun.load(Ordering::SeqCst) as u64;
    drop(first);

    sqlite_is_intact(&db).await;
    let store = db.store().await;
    let run_before = store.run("crash").await.unwrap().expect("the run");
    let stored_before = stored_requests(&store, "crash").await.unwrap();
    assert!(
        committed <= stored_before && stored_before <= sent_before,
        "committed {committed}, stored {stored_before}, sent {sent_before}"
    );

    // Started again under the same label, it goes on with that run; what it is sent now is stored once.
    let second = spawn_serving(&flags, &envs).await;
    for i in 0..50 {
        let response = client()
            .get(second.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!(second.terminate().await.code(), Some(0));
    sqlite_is_intact(&db).await;
    let run_after = store.run("crash").await.unwrap().expect("the run");
    assert_eq!(
        run_after.id, run_before.id,
        "the run continues under its label"
    );
    assert_eq!(store.runs().await.unwrap().len(), 1);
    assert_eq!(
        stored_requests(&store, "crash").await,
        Some(stored_before + 50),
        "nothing stored twice, nothing lost after the restart"
    );
}
