//! Store benchmarks: sustained ingest of analysed exchanges through the writer into each backend, and the
//! overview query of a run of one million exchanges over fifty endpoints. Run with `scripts/bench-store.sh`
//! (which starts a throwaway PostgreSQL); without `DATABASE_URL` only SQLite is measured.

use shadowdiff::report::Reports;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use serde_json::json;
use shadowdiff::analysis::aggregate::{Tally, VerdictSettings};
use shadowdiff::analysis::latency::Latencies;
use shadowdiff::analysis::rules::RuleSet;
use shadowdiff::analysis::{Analysis, Analyzer};
use shadowdiff::clock::now_ms;
use shadowdiff::exchange::{
    CapturedBody, Exchange, Outcome, RecordedRequest, Target, UpstreamResponse,
};
use shadowdiff::metrics::Metrics;
use shadowdiff::redact::Redactor;
use shadowdiff::store::Store;
use shadowdiff::store::queries::TimeRange;
use shadowdiff::store::sample::SampleLimits;
use shadowdiff::store::write::FlushBatch;
use shadowdiff::store::writer::{Writer, WriterConfig};
use sqlx::Connection;

const ENDPOINTS: usize = 50;

fn outcome(body: serde_json::Value, millis: u64) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Outcome {
        elapsed: Duration::from_millis(millis),
        result: Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: CapturedBody::Complete(Bytes::from(body.to_string())),
        }),
    }
}

/// A few thousand realistic analysed exchanges (noise everywhere, a regression on some endpoints), reused in
/// a loop: the writer's cost does not depend on which exchange it folds.
fn analyses(count: usize) -> Vec<Analysis> {
    let analyzer = Analyzer::default();
    let mut rng = fastrand::Rng::with_seed(1);
    (0..count)
        .map(|i| {
            let endpoint = i % ENDPOINTS;
            let side = |rng: &mut fastrand::Rng, candidate: bool| {
                json!({
                    "id": i,
                    "updated_at": rng.u64(..),
                    "items": [{"sku": "a", "price": 5}, {"sku": "b", "price": if candidate && endpoint.is_multiple_of(5) { 7 } else { 6 }}],
                    "name": "ada",
                })
            };
            let exchange = Exchange {
                id: uuid::Uuid::now_v7(),
                started_at: SystemTime::now(),
                endpoint: format!("GET /resource{endpoint}/{{id}}"),
                request: RecordedRequest {
                    method: Method::GET,
                    uri: Uri::from_static("/resource/1"),
                    version: Version::HTTP_11,
                    headers: HeaderMap::new(),
                    body: Bytes::new(),
                },
                primary: outcome(side(&mut rng, false), 5 + rng.u64(..5)),
                secondary: outcome(side(&mut rng, false), 5 + rng.u64(..5)),
                candidate: outcome(side(&mut rng, true), 6 + rng.u64(..8)),
                charge: Default::default(),
            };
            analyzer.analyse(exchange)
        })
        .collect()
}

/// Exchanges per second folded and written by one writer (flushing every second or 5000 rows), for `seconds`.
async fn ingest(store: &Store, seconds: u64) -> (f64, u64) {
    let run_id = store
        .ensure_run(&format!("ingest-{}", now_ms()), ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let mut writer = Writer::new(
        store.clone(),
        WriterConfig {
            run_id,
            run_label: "ingest".to_string(),
            run_urls: ["p", "s", "c"].map(String::from),
            writer_id: "bench".to_string(),
            flush_interval: Duration::from_secs(1),
            batch_rows: 5_000,
            max_pending_rows: 1_000_000,
            samples_per_path: 5,
            sample_limits: SampleLimits::new(1 << 20, SampleLimits::DEFAULT_BODY_LIMIT),
            retention: None,
            sealer: None,
            sample_retention: None,
        },
        Redactor::new(b"bench".to_vec(), &[]),
        Metrics::new().store,
    );
    let pool = analyses(5_000);
    let started = Instant::now();
    let mut last_flush = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for analysis in &pool {
            writer.add(analysis.clone());
            count += 1;
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            writer.flush_now().await.unwrap();
            last_flush = Instant::now();
        }
    }
    writer.flush_now().await.unwrap();
    (count as f64 / started.elapsed().as_secs_f64(), count)
}

/// Writes what a run of `exchanges` over `ENDPOINTS` endpoints and `minutes` minutes leaves in the store.
async fn populate(store: &Store, exchanges: u64, minutes: i64) -> i64 {
    let run_id = store
        .ensure_run("overview-1m", ["p", "s", "c"], now_ms())
        .await
        .unwrap();
    let per_cell = exchanges / (ENDPOINTS as u64 * minutes as u64);
    let first_minute = now_ms().div_euclid(60_000) - minutes;
    let template = {
        // One minute of one endpoint, from real analyses, scaled to `per_cell` requests.
        let mut counts = Tally::default();
        for analysis in analyses(ENDPOINTS * 20).iter().step_by(ENDPOINTS) {
            counts.record(analysis);
        }
        let scale = per_cell / counts.requests.max(1);
        counts.requests *= scale;
        counts.compared *= scale;
        counts.noisy *= scale;
        for place in counts.paths.values_mut() {
            place.raw.iter_mut().for_each(|n| *n *= scale);
            place.noise *= scale;
        }
        counts.signatures.values_mut().for_each(|n| *n *= scale);
        counts
    };
    let mut rng = fastrand::Rng::with_seed(3);
    for minute in 0..minutes {
        let mut batch = FlushBatch {
            id: minute + 1,
            ..FlushBatch::default()
        };
        for endpoint in 0..ENDPOINTS {
            let name = format!("GET /resource{endpoint}/{{id}}");
            batch
                .counts
                .push((name.clone(), first_minute + minute, template.clone()));
            let mut latency = Latencies::default();
            for _ in 0..per_cell {
                for target in Target::ALL {
                    latency.record(target, Duration::from_micros(4_000 + rng.u64(..8_000)));
                }
            }
            // The writer adds each batch's latency to the minute and to the whole run.
            batch
                .latency
                .push((name.clone(), first_minute + minute, latency.clone()));
            batch.latency.push((name, -1, latency));
        }
        store
            .write_batch(run_id, "bench", &batch, now_ms(), false)
            .await
            .unwrap();
    }
    run_id
}

/// Median of `rounds` runs of the overview query (the whole run, or its last ten minutes).
async fn overview(store: &Store, range: TimeRange, rounds: usize) -> (Duration, u64) {
    let run = store.run("overview-1m").await.unwrap().unwrap();
    let settings = VerdictSettings::default();
    let mut times = Vec::with_capacity(rounds);
    let mut requests = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let reports = Reports::new(
            store.clone(),
            Arc::new(RuleSet::default()),
            settings.clone(),
        );
        let report = reports.judge(run.clone(), range).await.unwrap();
        times.push(started.elapsed());
        requests = report.requests;
        assert_eq!(report.endpoints.len(), ENDPOINTS);
    }
    times.sort();
    (times[rounds / 2], requests)
}

async fn fresh_postgres(base: &str) -> String {
    let name = format!("shadowdiff_bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

/// What the writer holds per (endpoint, minute) for latency, before (three HDR histograms, 1 µs to 1 h at three
/// significant digits, allocated whole, in the pending counts and again in the minute's and the run's
/// histograms) and now (a delta sketch for the minute and for the run, sized to what it holds), for a few
/// request rates; and the additive counts beside them.
fn memory_per_endpoint_minute() {
    let hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let hdr_bytes = hdr.distinct_values() * std::mem::size_of::<u64>();
    println!(
        "| requests per endpoint-minute | before: latency (3 x 3 HDR) | now: latency (minute + run deltas) | now: counts (tally) |"
    );
    println!("|---|---|---|---|");
    let mut rng = fastrand::Rng::with_seed(7);
    let pool = analyses(200);
    for requests in [1usize, 10, 100, 1_000, 10_000] {
        let mut minute = Latencies::default();
        let mut tally = Tally::default();
        for i in 0..requests {
            for target in Target::ALL {
                // A realistic spread: 2 to 40 ms, a tail to 400 ms.
                let micros = if rng.u8(..100) == 0 {
                    40_000 + rng.u64(..360_000)
                } else {
                    2_000 + rng.u64(..38_000)
                };
                minute.record(target, Duration::from_micros(micros));
            }
            tally.record(&pool[i % pool.len()]);
        }
        println!(
            "| {requests} | {} KiB | {:.1} KiB | {:.1} KiB |",
            3 * 3 * hdr_bytes / 1024,
            (2 * minute.heap_bytes()) as f64 / 1024.0,
            tally.heap_bytes() as f64 / 1024.0
        );
    }
    println!();
}

#[tokio::main]
async fn main() {
    memory_per_endpoint_minute();
    // `cargo bench` passes `--bench`; under `cargo test` this only checks that the benchmark works, briefly.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let default_seconds = if benchmarking { 10 } else { 1 };
    let seconds: u64 = std::env::var("INGEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seconds);
    let (exchanges, rounds) = if benchmarking {
        (1_000_000, 15)
    } else {
        (50_000, 1)
    };
    let directory = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", directory.path().join("bench.db").display());
    let mut backends = vec![("sqlite", sqlite_url)];
    match std::env::var("DATABASE_URL") {
        Ok(base) => backends.push(("postgres", fresh_postgres(&base).await)),
        Err(_) => eprintln!(
            "DATABASE_URL not set: PostgreSQL not measured (scripts/bench-store.sh starts one)"
        ),
    }
    println!(
        "| backend | ingest (analysed exchanges/s, {seconds} s) | overview, whole run | overview, last 10 min |"
    );
    println!("|---|---|---|---|");
    for (name, url) in backends {
        let store = Store::connect(&url, 8).await.unwrap();
        store.migrate().await.unwrap();
        let (rate, count) = ingest(&store, seconds).await;
        let minutes = 50;
        populate(&store, exchanges, minutes).await;
        let (whole, requests) = overview(&store, TimeRange::all(), rounds).await;
        let last = now_ms() - 10 * 60_000;
        let (recent, _) = overview(&store, TimeRange::between_ms(Some(last), None), rounds).await;
        println!(
            "| {name} | {rate:.0} ({count} in all) | {:.1} ms ({requests} requests) | {:.1} ms |",
            whole.as_secs_f64() * 1000.0,
            recent.as_secs_f64() * 1000.0
        );
    }
}
