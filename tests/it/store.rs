//! The store on both backends (a real SQLite file, a real PostgreSQL): what is written reads back as the same
//! counts and verdicts, samples are capped, secrets never reach the database, old data goes.

use shadowdiff::report::Reports;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;
use shadowdiff::analysis::aggregate::{self, EndpointCounts, VerdictSettings};
use shadowdiff::analysis::rules::{ActionKind, RuleSet, RuleSpec};
use shadowdiff::analysis::{Analysis, Analyzer};
use shadowdiff::clock::now_ms;
use shadowdiff::exchange::Target;
use shadowdiff::metrics::Metrics;
use shadowdiff::redact::Redactor;
use shadowdiff::store::Store;
use shadowdiff::store::queries::TimeRange;
use shadowdiff::store::sample::SampleLimits;
use shadowdiff::store::writer::{Writer, WriterConfig};

use crate::support::db::{TestDb, pg_dump};
use crate::verdicts::{exchange_of, json_response};

crate::support::on_both_backends!(
    migrations_run_twice_and_by_command,
    counts_round_trip_through_the_store,
    samples_are_capped_per_place_and_readable,
    secrets_never_reach_the_database,
    retention_removes_what_is_old,
    runs_rules_and_timelines,
);

fn writer_config(run_id: i64, writer_id: &str) -> WriterConfig {
    WriterConfig {
        run_id,
        run_label: "test".to_string(),
        run_urls: ["p", "s", "c"].map(String::from),
        writer_id: writer_id.to_string(),
        flush_interval: Duration::from_secs(1),
        batch_rows: 100_000,
        max_pending_rows: 1_000_000,
        samples_per_path: 5,
        sample_limits: SampleLimits::new(1 << 20, SampleLimits::DEFAULT_BODY_LIMIT),
        retention: None,
        sealer: None,
        sample_retention: None,
    }
}

/// A writer of its own, as each process has: writers replace only their own histograms.
fn writer(store: &Store, run_id: i64) -> Writer {
    Writer::new(
        store.clone(),
        writer_config(run_id, &uuid::Uuid::now_v7().to_string()),
        Redactor::new(b"test".to_vec(), &[]),
        Metrics::new().store,
    )
}

/// Exchanges over two endpoints and three minutes, with noise and regressions.
fn analyses(count: usize) -> Vec<Analysis> {
    let analyzer = Analyzer::default();
    let mut rng = fastrand::Rng::with_seed(42);
    let start = now_ms() - 10 * 60_000;
    (0..count)
        .map(|i| {
            let side = |rng: &mut fastrand::Rng, candidate: bool| {
                json!({
                    "id": i,
                    "at": rng.u64(..),
                    "flag": rng.bool(),
                    "name": if candidate && i % 4 == 0 { "Ada" } else { "ada" },
                    "total": if candidate { json!("12") } else { json!(12) },
                })
            };
            let endpoint = if i % 3 == 0 {
                "GET /orders/{id}"
            } else {
                "GET /users/{id}"
            };
            let (p, s, c) = (
                side(&mut rng, false),
                side(&mut rng, false),
                side(&mut rng, true),
            );
            let mut exchange = exchange_of(
                endpoint,
                json_response(&p),
                json_response(&s),
                json_response(&c),
            );
            let minute = ((i / 2) % 3) as i64;
            exchange.started_at =
                SystemTime::UNIX_EPOCH + Duration::from_millis((start + minute * 60_000) as u64);
            analyzer.analyse(exchange)
        })
        .collect()
}

fn in_memory(analyses: &[Analysis]) -> BTreeMap<String, EndpointCounts> {
    let mut counts: BTreeMap<String, EndpointCounts> = BTreeMap::new();
    for analysis in analyses {
        counts
            .entry(analysis.exchange.endpoint.clone())
            .or_default()
            .record(analysis);
    }
    counts
}

async fn write_all(store: &Store, run_id: i64, analyses: Vec<Analysis>) {
    let mut writer = writer(store, run_id);
    for analysis in analyses {
        writer.add(analysis);
    }
    writer.flush_now().await.expect("flush");
}

async fn migrations_run_twice_and_by_command(db: TestDb) {
    let store = db.store().await;
    store
        .migrate()
        .await
        .expect("migrating again changes nothing");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["migrate", "--database-url", db.url()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = if db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert!(String::from_utf8_lossy(&output.stdout).contains(expected));
}

async fn counts_round_trip_through_the_store(db: TestDb) {
    let store = db.store().await;
    let run_id = store
        .ensure_run("round-trip", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let analyses = analyses(600);
    let expected = in_memory(&analyses);
    let middle_minute = aggregate_minute(&analyses[1]);
    let expected_middle = in_memory(
        &analyses
            .iter()
            .filter(|a| aggregate_minute(a) == middle_minute)
            .cloned()
            .collect::<Vec<_>>(),
    );
    // Two flushes, the second adding to the first's rows.
    let (first, second) = analyses.split_at(250);
    write_all(&store, run_id, first.to_vec()).await;
    write_all(&store, run_id, second.to_vec()).await;

    let stored = store
        .endpoint_counts(run_id, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    let settings = VerdictSettings::default();
    for (endpoint, counts) in &expected {
        let read = &stored[endpoint];
        assert_eq!(read.tally.requests, counts.tally.requests);
        assert_eq!(read.tally.compared, counts.tally.compared);
        assert_eq!(read.tally.noisy, counts.tally.noisy);
        assert_eq!(read.tally.paths, counts.tally.paths, "{endpoint}");
        assert_eq!(read.tally.signatures, counts.tally.signatures, "{endpoint}");
        for target in Target::ALL {
            assert_eq!(
                read.latency.summary(target),
                counts.latency.summary(target),
                "{endpoint} {target}"
            );
        }
        let mut from_store = aggregate::report(endpoint, read, &settings, &RuleSet::default());
        let mut from_memory = aggregate::report(endpoint, counts, &settings, &RuleSet::default());
        for report in [&mut from_store, &mut from_memory] {
            report.regressions.iter_mut().for_each(|r| r.sample = None);
        }
        assert_eq!(from_store, from_memory);
        assert!(!from_store.regressions.is_empty());
    }

    // A time range reads only its minutes.
    let range = TimeRange {
        from_minute: Some(middle_minute),
        to_minute: Some(middle_minute),
    };
    let stored_middle = store.endpoint_counts(run_id, range).await.unwrap();
    for (endpoint, counts) in &expected_middle {
        assert_eq!(
            stored_middle[endpoint].tally.requests,
            counts.tally.requests
        );
        assert_eq!(stored_middle[endpoint].tally.paths, counts.tally.paths);
        assert_eq!(
            stored_middle[endpoint]
                .latency
                .summary(Target::Candidate)
                .samples,
            counts.latency.summary(Target::Candidate).samples
        );
    }

    // The run report ranks endpoints and totals them.
    let run = store.run("round-trip").await.unwrap().unwrap();
    let reports = Reports::new(
        store.clone(),
        Arc::new(RuleSet::default()),
        settings.clone(),
    );
    let report = reports.judge(run, TimeRange::all()).await.unwrap();
    assert_eq!(report.requests, 600);
    assert!(
        report
            .endpoints
            .windows(2)
            .all(|pair| pair[0].diff_rate >= pair[1].diff_rate)
    );
    assert!(
        report
            .endpoints
            .iter()
            .all(|e| e.regressions.iter().all(|r| r.sample.is_some()))
    );
}

fn aggregate_minute(analysis: &Analysis) -> i64 {
    shadowdiff::store::sample::started_at_ms(&analysis.exchange).div_euclid(60_000)
}

async fn samples_are_capped_per_place_and_readable(db: TestDb) {
    let store = db.store().await;
    let run_id = store
        .ensure_run("samples", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    write_all(&store, run_id, analyses(60)).await;
    let listed = store
        .samples(
            run_id,
            "GET /users/{id}",
            Some(("body/total", "type_changed")),
            100,
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 5, "--samples-per-path caps each place at 5");
    let document = store
        .exchange(&listed[0].id)
        .await
        .unwrap()
        .expect("stored exchange");
    assert_eq!(document.endpoint, "GET /users/{id}");
    assert_eq!(document.primary.status, Some(200));
    assert!(
        document
            .candidate
            .body
            .as_ref()
            .and_then(|b| b.text())
            .unwrap()
            .contains("\"total\":\"12\"")
    );
    let total = document
        .candidate_differences
        .iter()
        .find(|d| d.difference.path == "body/total")
        .unwrap();
    assert!(!total.cancelled);
    assert!(store.exchange("no-such-exchange").await.unwrap().is_none());
    let all = store
        .samples(run_id, "GET /users/{id}", None, 100)
        .await
        .unwrap();
    assert!(all.len() >= 5);
}

async fn secrets_never_reach_the_database(db: TestDb) {
    const SECRET_HEADER: &str = "Bearer tok-7f3a9c1e5b";
    const SECRET_FIELD: &str = "pw-2b8d4f6a0c";
    let store = db.store().await;
    let run_id = store
        .ensure_run("secrets", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let key = store.redaction_key(None).await.unwrap();
    assert_eq!(
        store.redaction_key(None).await.unwrap(),
        key,
        "one key, kept in the database"
    );
    let redactor = Redactor::new(key.into_bytes(), &["password".to_string()]);
    let analyzer = Analyzer::default();
    let mut writer = Writer::new(
        store.clone(),
        writer_config(run_id, "w"),
        redactor.clone(),
        Metrics::new().store,
    );
    for i in 0..10 {
        let body = |password: &str| json!({"user": {"id": i, "password": password, "name": "ada"}});
        let mut primary = json_response(&body(SECRET_FIELD));
        let secondary = json_response(&body(SECRET_FIELD));
        let candidate = json_response(&body(&format!("{SECRET_FIELD}-{i}")));
        if let Ok(response) = &mut primary.result {
            response.headers.insert(
                "set-cookie",
                HeaderValue::from_static("session=tok-7f3a9c1e5b"),
            );
        }
        let mut exchange = exchange_of("POST /login", primary, secondary, candidate);
        exchange
            .request
            .headers
            .insert("authorization", HeaderValue::from_static(SECRET_HEADER));
        exchange.request.body = Bytes::from(json!({"password": SECRET_FIELD}).to_string());
        writer.add(analyzer.analyse(exchange));
    }
    writer.flush_now().await.unwrap();

    let stored = match db.sqlite_path() {
        Some(path) => {
            // Everything SQLite holds: the database file and its write-ahead log.
            drop(store);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => pg_dump(db.url()),
    };
    for secret in ["tok-7f3a9c1e5b", SECRET_FIELD] {
        assert!(!stored.contains(secret), "{secret} reached the database");
    }
    assert!(
        stored.contains("redacted:"),
        "redacted values are stored in their place"
    );
    assert!(stored.contains(&redactor.token(SECRET_FIELD.as_bytes())));
}

async fn retention_removes_what_is_old(db: TestDb) {
    let store = db.store().await;
    let run_id = store
        .ensure_run("retention", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let mut analyses = analyses(30);
    let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
    for analysis in analyses.iter_mut().take(15) {
        analysis.exchange.started_at = ten_days_ago;
    }
    write_all(&store, run_id, analyses).await;
    let before = store
        .endpoint_counts(run_id, TimeRange::all())
        .await
        .unwrap();
    let requests = |counts: &BTreeMap<String, EndpointCounts>| {
        counts.values().map(|c| c.tally.requests).sum::<u64>()
    };
    assert_eq!(requests(&before), 30);
    let deleted = store
        .delete_older_than(now_ms() - 7 * 86_400_000)
        .await
        .unwrap();
    assert!(deleted > 0);
    let after = store
        .endpoint_counts(run_id, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(requests(&after), 15);
    assert!(
        store.run("retention").await.unwrap().is_some(),
        "a run seen recently stays"
    );
    let remaining = store
        .samples(run_id, "GET /users/{id}", None, 100)
        .await
        .unwrap();
    assert!(
        remaining
            .iter()
            .all(|s| s.created_at_ms > now_ms() - 7 * 86_400_000)
    );
}

async fn runs_rules_and_timelines(db: TestDb) {
    let store = db.store().await;
    let first = store
        .ensure_run("first", ["p", "s", "c"], now_ms() - 1_000)
        .await
        .unwrap();
    let again = store
        .ensure_run("first", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    assert_eq!(first, again);
    let second = store
        .ensure_run("second", ["p", "s", "c"], now_ms() + 1_000)
        .await
        .unwrap();
    write_all(&store, second, analyses(90)).await;
    assert_eq!(store.run("latest").await.unwrap().unwrap().label, "second");
    assert_eq!(store.runs().await.unwrap().len(), 2);

    let settings = VerdictSettings::default();
    let reports = Reports::new(
        store.clone(),
        Arc::new(RuleSet::default()),
        settings.clone(),
    );
    let timeline = reports
        .timeline("second", "GET /users/{id}", TimeRange::all())
        .await
        .unwrap();
    assert_eq!(timeline.len(), 3, "three minutes");
    assert_eq!(timeline.iter().map(|point| point.requests).sum::<u64>(), 60);
    assert!(timeline.iter().all(|point| point.diff_rate == 1.0));

    let spec = RuleSpec::new(
        Some("GET /users/*".into()),
        "body/total",
        ActionKind::Ignore,
    );
    let id = store.add_rule(&spec, now_ms()).await.unwrap();
    let bad = RuleSpec::new(None, "nowhere/x", ActionKind::Ignore);
    assert!(store.add_rule(&bad, now_ms()).await.is_err());
    // The stored rule is in force in every report.
    let run = store.run("second").await.unwrap().unwrap();
    let report = reports.judge(run, TimeRange::all()).await.unwrap();
    let users = report
        .endpoints
        .iter()
        .find(|e| e.endpoint == "GET /users/{id}")
        .unwrap();
    assert!(
        users.regressions.iter().all(|r| r.path != "body/total"),
        "{:?}",
        users.regressions
    );
    let orders = report
        .endpoints
        .iter()
        .find(|e| e.endpoint == "GET /orders/{id}")
        .unwrap();
    assert!(orders.regressions.iter().any(|r| r.path == "body/total"));
    assert!(store.delete_rule(id).await.unwrap());
    assert!(store.rules().await.unwrap().is_empty());

    assert!(store.delete_run(second).await.unwrap());
    assert!(
        store
            .endpoint_counts(second, TimeRange::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .samples(second, "GET /users/{id}", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
