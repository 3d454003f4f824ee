//! Bounded by construction: endpoint names that cannot grow with the shape of traffic (learned templates, a cap
//! per run), a memory budget that sheds and counts, samples that cannot balloon, and a store that keeps working
//! whatever the dashboard (or retention) does to the run being written.

use shadowdiff::analysis::SkipReason;
use shadowdiff::app::AppSettings;
use shadowdiff::pipeline::metrics::Analysed;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use serde_json::json;
use shadowdiff::analysis::Analyzer;
use shadowdiff::analysis::aggregate::Tally;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::clock::now_ms;
use shadowdiff::metrics::Metrics;
use shadowdiff::proxy::metrics::UnshadowedReason;
use shadowdiff::redact::Redactor;
use shadowdiff::store::Store;
use shadowdiff::store::queries::TimeRange;
use shadowdiff::store::sample::{SampleLimits, StoredBody};
use shadowdiff::store::write::FlushBatch;
use shadowdiff::store::writer::{Writer, WriterConfig};

use crate::support::db::TestDb;
use crate::support::stub::{Stub, json_response};
use crate::support::{TestApp, client, get_json, get_text, wait_for};
use crate::verdicts::{exchange_of, json_response as json_outcome};

crate::support::on_both_backends!(
    ten_thousand_requests_over_five_thousand_slugs_are_one_endpoint,
    past_the_cap_new_names_are_other_and_counted,
    an_idle_live_run_outlives_retention,
    a_body_that_decodes_to_32_mib_is_a_truncated_sample,
    rows_the_database_refuses_are_left_out_not_the_batch,
    a_batch_sent_twice_is_counted_once,
    a_nul_in_a_json_key_is_stored_as_a_replacement_character,
    a_store_that_refuses_writes_shows_on_the_dashboard_not_in_readiness,
);

/// A word-like slug per number: letters only, so that it is never taken for an identifier.
fn slug(n: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let (mut n, mut word) = (n, String::new());
    loop {
        word.push(letters[n % 26] as char);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    format!("how-to-{word}-well")
}

/// Exchanges a test sender lets the shadow work fall behind by.
const SENDER_HIGH_WATER: usize = 64;

/// Sends GETs to `paths` through the proxy, `concurrency` at a time; every caller must get 200.
pub(crate) async fn get_all(
    app: &TestApp,
    requests: Vec<(String, Option<String>)>,
    concurrency: usize,
) {
    let client = client();
    futures_util::stream::iter(requests)
        .map(|(path, resource)| {
            let mut request = client.get(app.url(&path));
            if let Some(resource) = resource {
                request = request.header("canonical-resource", resource);
            }
            let backlog = app.backlog.clone();
            async move {
                // Shadow work yields to callers and is shed when it falls behind; a sender that must not lose
                // any waits for it, as replay does.
                while backlog() > SENDER_HIGH_WATER {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

async fn three(body: &'static str) -> [Stub; 3] {
    [
        Stub::json(body).await,
        Stub::json(body).await,
        Stub::json(body).await,
    ]
}

/// An instance storing into `db`, in front of three upstreams that all answer `body` (kept alive with it).
pub(crate) async fn stored_app(
    db: &TestDb,
    body: &'static str,
    change: impl FnOnce(&mut AppSettings),
) -> (TestApp, [Stub; 3]) {
    let stubs = three(body).await;
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        change,
        db.url(),
    )
    .await;
    (app, stubs)
}

pub(crate) async fn stored_requests(store: &Store, label: &str) -> Option<u64> {
    let run = store.run(label).await.ok()??;
    let counts = store.endpoint_counts(run.id, TimeRange::all()).await.ok()?;
    Some(counts.values().map(|c| c.tally.requests).sum())
}

async fn ten_thousand_requests_over_five_thousand_slugs_are_one_endpoint(db: TestDb) {
    let (app, _upstreams) = stored_app(&db, r#"{"ok":true}"#, |s| {
        s.writer.run = Some("slugs".into());
        s.writer.flush_interval = Duration::from_millis(100);
    })
    .await;
    let requests = (0..10_000)
        .map(|i| (format!("/articles/{}", slug(i % 5_000)), None))
        .collect();
    get_all(&app, requests, 32).await;

    // The dashboard shows the learned template, and which segment it generalised.
    let api = app.admin_url("/api/v1/runs/slugs/templates");
    wait_for("the template to be stored", || {
        let api = api.clone();
        async move {
            let templates: serde_json::Value = get_json(&api).await;
            templates.as_array().is_some_and(|t| !t.is_empty())
        }
    })
    .await;
    let templates: serde_json::Value = get_json(&api).await;
    assert_eq!(
        templates,
        json!([{"template": "GET /articles/{param}", "method": "GET", "segments": 2,
                "prefix": "/articles", "position": 1}])
    );
    let page = get_text(&app.admin_url("/runs/slugs")).await;
    assert!(page.contains("Learned endpoint templates"), "{page}");
    assert!(
        page.contains("GET /articles/<mark>{param}</mark>"),
        "{page}"
    );

    let metrics = app.metrics.clone();
    app.stop().await;
    assert_eq!(metrics.analysis.analysed_count(Analysed::Compared), 10_000);
    let store = db.store().await;
    let run = store.run("slugs").await.unwrap().unwrap();
    let counts = store
        .endpoint_counts(run.id, TimeRange::all())
        .await
        .unwrap();
    // The names given before the template was learned are merged into it: nothing is lost to the learning.
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        vec!["GET /articles/{param}"]
    );
    assert_eq!(counts["GET /articles/{param}"].tally.requests, 10_000);
    assert_eq!(
        counts["GET /articles/{param}"]
            .latency
            .summary(shadowdiff::exchange::Target::Primary)
            .samples,
        10_000
    );
    // The literal values were counted as keyed hashes: what is stored of the learning is the template alone.
    let learned = store.templates(run.id).await.unwrap();
    assert_eq!(learned.len(), 1);
    assert_eq!(learned[0].prefix, "/articles");
    // Samples of the names made before the learning are listed under the template.
    let samples = store
        .samples(run.id, "GET /articles/{param}", None, 50)
        .await
        .unwrap();
    assert!(!samples.is_empty());
}

async fn past_the_cap_new_names_are_other_and_counted(db: TestDb) {
    let (app, _upstreams) = stored_app(&db, "{}", |s| {
        s.writer.run = Some("capped".into());
        s.naming.max_endpoints = 5;
    })
    .await;
    let requests = (0..20)
        .map(|i| ("/".to_string(), Some(format!("resource-{}", slug(i)))))
        .chain((0..4).map(|i| (format!("/plain/{i}"), None)))
        .collect();
    get_all(&app, requests, 1).await;
    let metrics = app.metrics.clone();
    app.stop().await;
    assert_eq!(metrics.endpoints_overflowed.get(), 19);
    assert!(
        metrics
            .render()
            .contains("shadowdiff_endpoints_overflowed_total 19")
    );
    let store = db.store().await;
    let run = store.run("capped").await.unwrap().unwrap();
    let counts = store
        .endpoint_counts(run.id, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(counts.len(), 6, "{:?}", counts.keys().collect::<Vec<_>>());
    assert_eq!(counts["GET {other}"].tally.requests, 19);
    assert_eq!(counts.values().map(|c| c.tally.requests).sum::<u64>(), 24);
}

async fn an_idle_live_run_outlives_retention(db: TestDb) {
    let (app, _upstreams) = stored_app(&db, "{}", |s| {
        s.writer.run = Some("idle".into());
        s.writer.flush_interval = Duration::from_millis(20);
        s.writer.retention = Duration::from_secs(3600);
    })
    .await;
    let store = db.store().await;
    get_all(&app, (0..3).map(|i| (format!("/a/{i}"), None)).collect(), 1).await;
    wait_for("the traffic to be stored", || {
        let store = store.clone();
        async move { stored_requests(&store, "idle").await == Some(3) }
    })
    .await;
    // The process has been idle for two hours: its run was last seen, and last beat, long ago.
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    db.execute(&format!(
        "UPDATE runs SET started_at = {two_hours_ago}, last_seen_at = {two_hours_ago}, \
         heartbeat_at = {two_hours_ago} WHERE label = 'idle'"
    ))
    .await;
    // Without traffic, the writer's heartbeat says the run is alive...
    wait_for("a heartbeat", || {
        let store = store.clone();
        async move {
            store
                .run("idle")
                .await
                .unwrap()
                .is_some_and(|run| run.heartbeat_at_ms > two_hours_ago)
        }
    })
    .await;
    // ...so retention (this replica's, or any other's) spares it.
    let run = store.run("idle").await.unwrap().unwrap();
    store.delete_older_than(now_ms() - 3_600_000).await.unwrap();
    let kept = store
        .run("idle")
        .await
        .unwrap()
        .expect("the live run is kept");
    assert_eq!(kept.id, run.id);
    get_all(&app, (3..5).map(|i| (format!("/a/{i}"), None)).collect(), 1).await;
    app.stop().await;
    assert_eq!(store.run("idle").await.unwrap().unwrap().id, run.id);

    // A run whose writer is gone is not spared.
    db.execute(&format!(
        "UPDATE runs SET last_seen_at = {two_hours_ago}, heartbeat_at = {two_hours_ago}"
    ))
    .await;
    store.delete_older_than(now_ms() - 3_600_000).await.unwrap();
    assert!(store.run("idle").await.unwrap().is_none());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn a_body_that_decodes_to_32_mib_is_a_truncated_sample(db: TestDb) {
    // Every upstream answers 200 KiB of JSON, over the 64 KiB a sample keeps of a body.
    let big = Arc::new(json!({"items": vec!["an item of the answer"; 9_000]}).to_string());
    let upstream = |big: Arc<String>| {
        Stub::start(move |_| {
            let big = big.clone();
            async move { json_response(StatusCode::OK, &big) }
        })
    };
    let (primary, secondary, candidate) = (
        upstream(big.clone()).await,
        upstream(big.clone()).await,
        upstream(big.clone()).await,
    );
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.writer.run = Some("bodies".into());
            s.proxy.shadow.allow_side_effects = true;
        },
        db.url(),
    )
    .await;
    let decoded = format!("{{\"data\":\"{}\"}}", "x".repeat(32 << 20));
    let body = gzip(decoded.as_bytes());
    let response = client()
        .post(app.url("/upload"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap().len(), big.len());
    app.stop().await;

    let store = db.store().await;
    let run = store.run("bodies").await.unwrap().unwrap();
    let samples = store
        .samples(run.id, "POST /upload", None, 10)
        .await
        .unwrap();
    assert_eq!(samples.len(), 1);
    let document = store.exchange(&samples[0].id).await.unwrap().unwrap();
    let limit = SampleLimits::DEFAULT_BODY_LIMIT;
    let StoredBody::Text { text, truncated } = &document.request.body else {
        panic!("the request body is text: {:?}", document.request.body)
    };
    assert!(*truncated);
    assert!(text.len() <= limit && text.starts_with("{\"data\":\"xxx"));
    for outcome in [&document.primary, &document.secondary, &document.candidate] {
        let body = outcome.body.as_ref().unwrap();
        assert!(body.is_truncated());
        assert!(body.text().unwrap().len() <= limit);
    }
    // The row is a few bodies' worth of kilobytes, not 32 MiB.
    let row = serde_json::to_string(&document).unwrap();
    assert!(row.len() < 5 * limit, "{} bytes", row.len());
    // The exchange page says so.
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| s.writer.run = Some("bodies".into()),
        db.url(),
    )
    .await;
    let page = get_text(&app.admin_url(&format!("/exchanges/{}", samples[0].id))).await;
    assert!(
        page.contains("only the beginning of this body is kept"),
        "{page}"
    );
    app.stop().await;
}

fn writer(store: &Store, run_id: i64, metrics: Arc<Metrics>) -> Writer {
    Writer::new(
        store.clone(),
        WriterConfig {
            run_id,
            run_label: "refused".to_string(),
            run_urls: ["p", "s", "c"].map(String::from),
            writer_id: uuid::Uuid::now_v7().to_string(),
            flush_interval: Duration::from_secs(1),
            batch_rows: 100_000,
            max_pending_rows: 1_000_000,
            samples_per_path: 5,
            sample_limits: SampleLimits::default(),
            retention: None,
            sealer: None,
            sample_retention: None,
        },
        Redactor::new(b"test".to_vec(), &[]),
        metrics.store.clone(),
    )
}

async fn rows_the_database_refuses_are_left_out_not_the_batch(db: TestDb) {
    let store = db.store().await;
    let run_id = store
        .ensure_run("refused", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    // The database refuses one place's rows (as it might a value it cannot hold).
    if db.is_postgres() {
        db.execute(
            "CREATE FUNCTION refuse_bad() RETURNS trigger AS $$ BEGIN \
               IF NEW.path = 'body/bad' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_bad BEFORE INSERT ON path_counts FOR EACH ROW EXECUTE FUNCTION refuse_bad();",
        )
        .await;
    } else {
        db.execute(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON path_counts WHEN NEW.path = 'body/bad' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .await;
    }
    let metrics = Arc::new(Metrics::new());
    let mut writer = writer(&store, run_id, metrics.clone());
    let analyzer = Analyzer::default();
    for i in 0..10 {
        let primary = json_outcome(&json!({"good": 1, "bad": 1, "i": i}));
        let secondary = json_outcome(&json!({"good": 1, "bad": 1, "i": i}));
        let candidate = json_outcome(&json!({"good": 2, "bad": 2, "i": i}));
        writer.add(analyzer.analyse(exchange_of("GET /mixed", primary, secondary, candidate)));
    }
    writer
        .flush_now()
        .await
        .expect("the batch is written without the refused rows");
    assert_eq!(metrics.store.rejected_count("path_counts"), 1);
    let counts = store
        .endpoint_counts(run_id, TimeRange::all())
        .await
        .unwrap();
    let mixed = &counts["GET /mixed"];
    assert_eq!(mixed.tally.requests, 10);
    let good = ("body/good".to_string(), DiffKind::ValueChanged);
    let bad = ("body/bad".to_string(), DiffKind::ValueChanged);
    assert_eq!(mixed.tally.paths[&good].raw_total(), 10);
    assert!(!mixed.tally.paths.contains_key(&bad));
}

async fn a_batch_sent_twice_is_counted_once(db: TestDb) {
    let store = db.store().await;
    let run_id = store
        .ensure_run("twice", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let analyzer = Analyzer::default();
    let mut tally = Tally::default();
    for _ in 0..7 {
        tally.record(&analyzer.analyse(exchange_of(
            "GET /twice",
            json_outcome(&json!({"a": 1})),
            json_outcome(&json!({"a": 1})),
            json_outcome(&json!({"a": 2})),
        )));
    }
    let minute = now_ms().div_euclid(60_000);
    let batch = FlushBatch {
        id: 41,
        counts: vec![("GET /twice".to_string(), minute, tally)],
        ..FlushBatch::default()
    };
    // The first commit happened, but its answer was lost: the writer sends the same batch again.
    let first = store
        .write_batch(run_id, "w1", &batch, now_ms(), false)
        .await
        .unwrap();
    assert!(!first.already);
    let again = store
        .write_batch(run_id, "w1", &batch, now_ms(), false)
        .await
        .unwrap();
    assert!(again.already);
    // Another writer's batch of the same number is its own.
    let other = store
        .write_batch(run_id, "w2", &batch, now_ms(), false)
        .await
        .unwrap();
    assert!(!other.already);
    assert_eq!(stored_requests(&store, "twice").await, Some(14));
}

async fn a_nul_in_a_json_key_is_stored_as_a_replacement_character(db: TestDb) {
    let store = db.store().await;
    let run_id = store
        .ensure_run("refused", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut writer = writer(&store, run_id, metrics.clone());
    let analyzer = Analyzer::default();
    for _ in 0..3 {
        writer.add(analyzer.analyse(exchange_of(
            "GET /nul",
            json_outcome(&json!({})),
            json_outcome(&json!({})),
            json_outcome(&json!({"a\u{0}b": 1})),
        )));
    }
    writer.flush_now().await.expect("stored");
    assert_eq!(metrics.store.rejected_count("path_counts"), 0);
    let counts = store
        .endpoint_counts(run_id, TimeRange::all())
        .await
        .unwrap();
    let place = ("body/a\u{FFFD}b".to_string(), DiffKind::Extra);
    assert_eq!(counts["GET /nul"].tally.paths[&place].raw_total(), 3);
    // The diff rate still finds the place: signatures were cleaned the same way.
    let report = shadowdiff::analysis::aggregate::report(
        "GET /nul",
        &counts["GET /nul"],
        &Default::default(),
        &Default::default(),
    );
    assert_eq!(report.diff_rate, 1.0);
}

async fn a_store_that_refuses_writes_shows_on_the_dashboard_not_in_readiness(db: TestDb) {
    let (app, _upstreams) = stored_app(&db, "{}", |s| {
        s.writer.run = Some("refusing".into());
        s.writer.flush_interval = Duration::from_millis(50);
    })
    .await;
    let store = db.store().await;
    get_all(&app, vec![("/a".to_string(), None)], 1).await;
    wait_for("the first request to be stored", || {
        let store = store.clone();
        async move { stored_requests(&store, "refusing").await == Some(1) }
    })
    .await;
    // The database still answers reads but refuses the writer's writes (as a full disk or a revoked grant
    // would).
    if db.is_postgres() {
        db.execute(
            "CREATE FUNCTION refuse_writes() RETURNS trigger AS $$ BEGIN \
               RAISE EXCEPTION 'writes refused by the test'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_writes BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION refuse_writes();",
        )
        .await;
    } else {
        db.execute(
            "CREATE TRIGGER refuse_writes BEFORE UPDATE ON runs \
             BEGIN SELECT RAISE(ABORT, 'writes refused by the test'); END;",
        )
        .await;
    }
    get_all(&app, vec![("/b".to_string(), None)], 1).await;
    let store_ready = app.admin_url("/readyz/store");
    wait_for("the store's readiness to say it is not written", || {
        let url = store_ready.clone();
        async move { client().get(&url).send().await.unwrap().status() == 503 }
    })
    .await;
    let said = client()
        .get(&store_ready)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        said.starts_with("store not written: ") && said.contains("writes refused by the test"),
        "{said}"
    );
    let ready = client().get(app.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "the caller's path is fine");
    assert!(app.metrics.render().contains("shadowdiff_store_up 0"));
    let page = get_text(&app.admin_url("/runs/refusing")).await;
    assert!(page.contains("The store cannot be written since"), "{page}");
    assert!(page.contains("writes refused by the test"), "{page}");

    db.execute(if db.is_postgres() {
        "DROP TRIGGER refuse_writes ON runs"
    } else {
        "DROP TRIGGER refuse_writes"
    })
    .await;
    get_all(&app, vec![("/c".to_string(), None)], 1).await;
    wait_for("the store to be written again", || {
        let url = store_ready.clone();
        async move { client().get(&url).send().await.unwrap().status() == 200 }
    })
    .await;
    let page = get_text(&app.admin_url("/runs/refusing")).await;
    assert!(!page.contains("The store cannot be written"), "{page}");
    assert!(app.metrics.render().contains("shadowdiff_store_up 1"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_memory_budget_sheds_and_counts_and_callers_never_notice() {
    // 100 KiB answers, and a budget that holds about five exchanges (three bodies each, and their requests' state).
    let big = Arc::new(json!({"items": vec!["x".repeat(100); 1_000]}).to_string());
    let upstream = |big: Arc<String>| {
        Stub::start(move |seen| {
            let big = big.clone();
            async move {
                if seen.method == http::Method::POST {
                    json_response(
                        StatusCode::OK,
                        &format!("{{\"received\":{}}}", seen.body.len()),
                    )
                } else {
                    json_response(StatusCode::OK, &big)
                }
            }
        })
    };
    let (primary, secondary, candidate) = (
        upstream(big.clone()).await,
        upstream(big.clone()).await,
        upstream(big.clone()).await,
    );
    let app = TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |s| {
        s.memory_budget = 2 << 20;
        s.proxy.shadow.allow_side_effects = true;
    })
    .await;
    let client = client();
    let gets = futures_util::stream::iter(0..60)
        .map(|i| {
            let request = client.get(app.url(&format!("/big/{i}")));
            let big = big.clone();
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(
                    response.text().await.unwrap(),
                    *big,
                    "the caller's answer is whole"
                );
            }
        })
        .buffer_unordered(24)
        .collect::<Vec<()>>();
    let posts = futures_util::stream::iter(0..20)
        .map(|_| {
            let request = client
                .post(app.url("/upload"))
                .body(Bytes::from(vec![b'p'; 300 << 10]));
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                // Primary received the whole body, shadowed or not.
                assert_eq!(
                    response.text().await.unwrap(),
                    format!("{{\"received\":{}}}", 300 << 10)
                );
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>();
    tokio::join!(gets, posts);
    let metrics = app.metrics.clone();
    let mut app = app;
    // Every exchange that was shadowed comes out of analysis, compared or shed for the budget.
    let shadowed = 80
        - metrics
            .proxy
            .unshadowed_count(UnshadowedReason::MemoryBudget);
    let mut analysed = 0;
    while analysed < shadowed {
        app.next_analysis().await;
        analysed += 1;
    }
    let shed = metrics
        .proxy
        .unshadowed_count(UnshadowedReason::MemoryBudget)
        + metrics
            .analysis
            .analysed_count(Analysed::Skipped(SkipReason::MemoryBudget));
    assert!(shed > 0, "a budget this small sheds");
    // In the burst, in-flight exchanges can shed one another until few or none complete; once it is over,
    // the budget is whole again and an exchange that fits is compared.
    let response = client.get(app.url("/big/after")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), *big);
    let after = app.next_analysis().await;
    assert!(after.compared().is_some(), "{:?}", after.result.err());
    drop(after);
    assert!(
        metrics.analysis.analysed_count(Analysed::Compared) > 0,
        "and still compares what fits"
    );
    let text = metrics.render();
    assert!(
        text.contains("shadowdiff_memory_budget_bytes 2097152"),
        "{text}"
    );
    for stage in [
        "request",
        "in_flight",
        "exchange_queue",
        "analysis",
        "analysis_queue",
    ] {
        assert!(
            text.contains(&format!("shadowdiff_memory_bytes{{stage=\"{stage}\"}} 0")),
            "{stage} holds nothing once the exchanges are let go: {text}"
        );
    }
    assert!(text.contains("shadowdiff_memory_shed_total"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_shadow_body_over_the_budget_is_read_through_and_its_connection_kept() {
    // The candidate's answer fits `--max-body` but not the budget: it is not kept, yet read to its end, so that
    // the next shadow request reuses the connection instead of opening one.
    // About 210 KiB: within the drain limit, over what the budget leaves once the exchange is admitted.
    let big = Arc::new(json!({"items": vec!["x".repeat(100); 2_000]}).to_string());
    assert!(big.len() < shadowdiff::proxy::capture::DRAIN_LIMIT);
    let primary = Stub::json(r#"{"items":[]}"#).await;
    let secondary = Stub::json(r#"{"items":[]}"#).await;
    let candidate = Stub::start(move |_| {
        let big = big.clone();
        async move { json_response(StatusCode::OK, &big) }
    })
    .await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |s| {
            s.memory_budget = 128 << 10;
            // One pool of shadow connections, so that a reused connection is seen as one.
            s.lane.threads = Some(1);
        })
        .await;
    let requests = 6;
    for i in 0..requests {
        let response = client()
            .get(app.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), r#"{"items":[]}"#);
        let analysis = app.next_analysis().await;
        assert_eq!(analysis.result.unwrap_err(), SkipReason::MemoryBudget);
    }
    assert_eq!(candidate.hits(), requests);
    // Closed after each answer, the candidate would have seen one connection per request; a connection may
    // still be on its way back to the pool when the next request looks for one, hence not exactly one.
    assert!(
        candidate.connections() <= requests / 2,
        "{} connections for {requests} requests",
        candidate.connections()
    );
}

/// The charge taken for a JSON body's parse tree before it is parsed covers what the parse allocates at its
/// peak, whatever the document's shape: the worst cases are many tiny values (two bytes of text each), keys and
/// strings with escapes (copied out of the body through the parser's scratch buffer), and deep nesting.
#[test]
fn a_json_parse_allocates_no_more_than_its_charge() {
    use shadowdiff::analysis::json::tree_bytes;
    use shadowdiff::analysis::tree;

    let many = |item: &str, count: usize, open: &str, close: &str| {
        let items: Vec<String> = (0..count)
            .map(|i| item.replace('#', &i.to_string()))
            .collect();
        format!("{open}{}{close}", items.join(","))
    };
    let documents = [
        many("0", 50_000, "[", "]"),
        many("[]", 20_000, "[", "]"),
        many("{}", 20_000, "[", "]"),
        many(r#""k#":0"#, 20_000, "{", "}"),
        many(r#""k\n#":"v\t#""#, 20_000, "{", "}"),
        many(
            r#"{"id":#,"total":1.5,"tags":["a","b"],"note":null}"#,
            5_000,
            "[",
            "]",
        ),
        format!("{}1{}", "[".repeat(127), "]".repeat(127)),
        format!(r#""{}""#, r"\u00e9".repeat(10_000)),
        format!(r#""{}""#, "é".repeat(10_000)),
        format!(r#"["\n{}"]"#, "a".repeat(100_000)),
        "1".to_string(),
    ];
    for text in &documents {
        let bytes = text.as_bytes();
        let (peak, parsed) =
            crate::support::heap::peak_of(|| tree::parse(bytes).map(|node| node.is_array()));
        assert!(parsed.is_ok(), "{}", &text[..text.len().min(60)]);
        let charge = tree_bytes(bytes);
        assert!(
            peak <= charge,
            "peak {peak} bytes over the charge of {charge} for {}",
            &text[..text.len().min(60)]
        );
    }
}
