//! Shadow work on threads of its own below the callers' priority, and latency judged on the path the shadows
//! share.

use std::fs;
use std::time::Duration;

use futures_util::StreamExt;
use hyper::StatusCode;
use serde_json::Value;
use shadowdiff::lane::{BLOCKING_THREAD_NAME, LaneSettings, THREAD_NAME};
use shadowdiff::proxy::callers::THREAD_NAME as CALLER_THREAD_NAME;

use crate::support::process::spawn_serving;
use crate::support::stub::{Stub, json_response};
use crate::support::{TestApp, client, get_json, temp_database, wait_for, wait_until};

/// SCHED_BATCH, as /proc reports a thread's policy.
const SCHED_BATCH: u32 = 3;
/// SCHED_IDLE, likewise.
const SCHED_IDLE: u32 = 5;

/// A thread of this process as /proc shows it.
struct ThreadView {
    name: String,
    nice: i32,
    policy: u32,
}

/// Every thread of this process: its name, nice value and scheduling policy.
fn threads() -> Vec<ThreadView> {
    threads_in("/proc/self/task")
}

/// Every thread under a `/proc/<pid>/task` directory (`proc_pid_stat(5)`: the fields after the parenthesised
/// name, nice being the 19th field and policy the 41st).
fn threads_in(tasks: &str) -> Vec<ThreadView> {
    let mut views = Vec::new();
    for entry in fs::read_dir(tasks).unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // The thread ended while we looked.
        };
        let Some(name_end) = stat.rfind(')') else {
            continue;
        };
        let name = stat[stat.find('(').unwrap() + 1..name_end].to_string();
        let fields: Vec<&str> = stat[name_end + 2..].split(' ').collect();
        // `fields[0]` is field 3 (state).
        views.push(ThreadView {
            name,
            nice: fields[19 - 3].parse().unwrap(),
            policy: fields[41 - 3].parse().unwrap(),
        });
    }
    views
}

/// Splits threads into the lane's (lane threads and their analysis workers) and all the others.
fn lane_and_others(all: Vec<ThreadView>) -> (Vec<ThreadView>, Vec<ThreadView>) {
    all.into_iter()
        .partition(|t| t.name.starts_with(THREAD_NAME) || t.name == BLOCKING_THREAD_NAME)
}

/// Stores one exchange through an app in this process (so that every kind of shadow thread has run), and
/// returns this process's threads, split by [`lane_and_others`].
async fn shadow_threads_after_one_exchange() -> (Vec<ThreadView>, Vec<ThreadView>) {
    let primary = Stub::json(r#"{"ok":true}"#).await;
    let secondary = Stub::json(r#"{"ok":true}"#).await;
    let candidate = Stub::json(r#"{"ok":true}"#).await;
    let (_dir, database) = temp_database();
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |_| {},
        &database,
    )
    .await;
    let response = client().get(app.url("/orders/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Once stored, the exchange has been shadowed, analysed and written: every kind of shadow thread has run.
    wait_until("the exchange to be stored", || {
        app.metrics.store.stored_count() >= 1
    })
    .await;
    let all = threads();
    app.stop().await;
    lane_and_others(all)
}

fn assert_every_kind_ran(lane: &[ThreadView], others: &[ThreadView]) {
    assert!(
        lane.iter().any(|t| t.name.starts_with(THREAD_NAME)),
        "no lane thread; the other threads: {:?}",
        others.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    assert!(
        lane.iter().any(|t| t.name == BLOCKING_THREAD_NAME),
        "the analysis ran on no shadow worker thread"
    );
}

#[tokio::test]
async fn shadow_threads_run_below_the_callers() {
    let (lane, others) = shadow_threads_after_one_exchange().await;
    let nice = LaneSettings::default().nice;
    assert!(nice > 0, "shadow threads must rank below the callers'");
    assert_every_kind_ran(&lane, &others);
    for thread in &lane {
        assert_eq!(thread.nice, nice, "{}", thread.name);
        assert_eq!(thread.policy, SCHED_BATCH, "{}", thread.name);
    }
    // The writer's SQLite connections were opened from a lane thread, whose priority their threads inherit.
    assert!(
        others.iter().any(|t| t.name.starts_with("sqlx-sqlite")
            && t.nice == nice
            && t.policy == SCHED_BATCH),
        "no SQLite connection thread at the shadow priority"
    );
    // The caller's path runs at the process's own priority, on the caller threads.
    assert_callers_at_normal_priority(&others);
}

/// The caller threads are there, in the normal class at nice 0.
fn assert_callers_at_normal_priority(others: &[ThreadView]) {
    let callers: Vec<&ThreadView> = others
        .iter()
        .filter(|t| t.name.starts_with(CALLER_THREAD_NAME))
        .collect();
    assert!(
        !callers.is_empty(),
        "no caller thread among {:?}",
        others.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    for caller in callers {
        assert_eq!((caller.policy, caller.nice), (0, 0), "{}", caller.name);
    }
}

/// A process of its own: the test process's other tests start lanes of the default class at the same time.
#[tokio::test]
async fn idle_scheduling_puts_every_shadow_thread_in_the_idle_class() {
    let primary = Stub::json(r#"{"ok":true}"#).await;
    let secondary = Stub::json(r#"{"ok":true}"#).await;
    let candidate = Stub::json(r#"{"ok":true}"#).await;
    let (_dir, database) = temp_database();
    let (primary_url, secondary_url, candidate_url) =
        (primary.url(), secondary.url(), candidate.url());
    let serving = spawn_serving(
        &[
            "--primary",
            &primary_url,
            "--secondary",
            &secondary_url,
            "--candidate",
            &candidate_url,
            "--database-url",
            &database,
            "--shadow-scheduling",
            "idle",
        ],
        &[],
    )
    .await;
    let response = client().get(serving.url("/orders/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    wait_for("the exchange to be stored", || {
        let serving = &serving;
        async move {
            serving
                .metrics()
                .await
                .value("shadowdiff_exchanges_stored_total")
                >= 1.0
        }
    })
    .await;

    let (lane, others) = lane_and_others(threads_in(&format!("/proc/{}/task", serving.pid())));
    assert_every_kind_ran(&lane, &others);
    for thread in &lane {
        assert_eq!(thread.policy, SCHED_IDLE, "{}", thread.name);
    }
    assert!(
        others
            .iter()
            .any(|t| t.name.starts_with("sqlx-sqlite") && t.policy == SCHED_IDLE),
        "no SQLite connection thread in the idle class"
    );
    // The callers' threads keep the normal class.
    assert_callers_at_normal_priority(&others);
    serving.terminate().await;
}

#[tokio::test]
async fn three_equal_upstreams_under_load_show_no_latency_regression() {
    // Each upstream takes 80 ms, as a real service does: a scheduling stall of a loaded test machine (tens of
    // milliseconds on one side's tail) is then noise against the service time, not a 2x slower p99.
    let serving = || {
        Stub::start(|_| async {
            tokio::time::sleep(Duration::from_millis(80)).await;
            json_response(StatusCode::OK, r#"{"items":[1,2,3]}"#)
        })
    };
    let primary = serving().await;
    let secondary = serving().await;
    let candidate = serving().await;
    let (_dir, database) = temp_database();
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.writer.run = Some("equal".into());
            s.writer.flush_interval = Duration::from_millis(100);
        },
        &database,
    )
    .await;
    // Enough samples for a verdict (at least 100 per target), sent many at a time so that the caller's path
    // and the shadow threads compete for the cores.
    let requests = 600;
    let http = client();
    futures_util::stream::iter(0..requests)
        .map(|i| {
            let request = http.get(app.url(&format!("/items/{i}")));
            let backlog = app.backlog.clone();
            async move {
                // Every exchange must be compared: the sender waits while shadow work is far behind.
                while backlog() > 128 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    wait_until("every exchange to be stored", || {
        app.metrics.store.stored_count() >= requests
    })
    .await;

    let run: Value = get_json(&app.admin_url("/api/v1/runs/equal")).await;
    let endpoints = run["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{run:#}");
    let endpoint = &endpoints[0];
    for target in ["primary", "secondary", "candidate"] {
        assert!(
            endpoint["latency"][target]["samples"].as_u64().unwrap_or(0) >= 100,
            "too few {target} samples for a verdict: {endpoint:#}"
        );
    }
    assert_eq!(endpoint["latency_regression"], false, "{endpoint:#}");
    app.stop().await;
}
