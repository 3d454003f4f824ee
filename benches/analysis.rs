//! Analysis throughput: MB/s of the three response bodies of an exchange, against parsing the same bytes with
//! `serde_json::from_slice` alone, for 1 KB, 64 KB and 1 MB bodies. The exchange `analyse` consumes is cloned
//! in criterion's setup, which is not timed.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use serde_json::{Value, json};
use shadowdiff::analysis::Analyzer;
use shadowdiff::analysis::tree;
use shadowdiff::exchange::{CapturedBody, Exchange, Outcome, RecordedRequest, UpstreamResponse};

/// A list of orders of about `size` bytes; `stamp` varies a timestamp (noise) and `changed` one price in ten.
fn document(size: usize, stamp: u64, changed: bool) -> Bytes {
    let mut orders = Vec::new();
    let mut length = 0;
    let mut id = 0u64;
    while length < size {
        let order = json!({
            "id": id,
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
            "items": [{"sku": "A-1", "qty": 2, "price": 9.99}, {"sku": "B-7", "qty": 1, "price": 24.5}],
            "total": if changed && id.is_multiple_of(10) { 44.49 } else { 44.48 },
            "updated_at": stamp + id,
        });
        length += order.to_string().len() + 1;
        orders.push(order);
        id += 1;
    }
    Bytes::from(serde_json::to_vec(&json!({"orders": orders, "count": id})).unwrap())
}

fn outcome(body: Bytes) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Outcome {
        elapsed: Duration::from_millis(3),
        result: Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: CapturedBody::Complete(body),
        }),
    }
}

fn exchange(size: usize) -> (Exchange, u64) {
    let primary = document(size, 1_000, false);
    let secondary = document(size, 2_000, false);
    let candidate = document(size, 3_000, true);
    let total = (primary.len() + secondary.len() + candidate.len()) as u64;
    let exchange = Exchange {
        id: uuid::Uuid::now_v7(),
        started_at: SystemTime::now(),
        endpoint: "GET /orders".to_string(),
        request: RecordedRequest {
            method: Method::GET,
            uri: Uri::from_static("/orders"),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        },
        primary: outcome(primary),
        secondary: outcome(secondary),
        candidate: outcome(candidate),
        charge: Default::default(),
    };
    (exchange, total)
}

fn bodies(exchange: &Exchange) -> [Bytes; 3] {
    [&exchange.primary, &exchange.secondary, &exchange.candidate].map(|outcome| {
        outcome
            .response()
            .and_then(|r| r.body.bytes().cloned())
            .unwrap_or_default()
    })
}

fn analysis_throughput(c: &mut Criterion) {
    let analyzer = Analyzer::default();
    let mut group = c.benchmark_group("exchange");
    for (label, size) in [("1KB", 1 << 10), ("64KB", 64 << 10), ("1MB", 1 << 20)] {
        let (exchange, total) = exchange(size);
        group.throughput(Throughput::Bytes(total));
        let [primary, secondary, candidate] = bodies(&exchange);
        group.bench_with_input(BenchmarkId::new("parse_only", label), &size, |b, _| {
            b.iter(|| {
                for body in [&primary, &secondary, &candidate] {
                    black_box(serde_json::from_slice::<Value>(body).unwrap());
                }
            })
        });
        // The tree the analysis parses into, for reference: what is left of `analyse` after it is the diff.
        group.bench_with_input(BenchmarkId::new("parse_tree", label), &size, |b, _| {
            b.iter(|| {
                for body in [&primary, &secondary, &candidate] {
                    black_box(tree::parse(body).unwrap());
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("analyse", label), &size, |b, _| {
            // `analyse` takes the exchange by value: the copy is made outside the measured time, as the proxy
            // hands each exchange over without one.
            b.iter_batched(
                || exchange.clone(),
                |exchange| analyzer.analyse(exchange),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = analysis_throughput
}
criterion_main!(benches);
