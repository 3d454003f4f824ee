//! Analysis throughput: MB/s of the three response bodies of an exchange, against parsing the same bytes with
//! `serde_json::from_slice` alone, for 1 KB, 64 KB and 1 MB bodies. The exchange `analyse` consumes is cloned
//! in criterion's setup, which is not timed. And what learning maps' keys (`{key}`) costs: counting the keys of
//! one exchange's differences, and the analysis of a map keyed by user before and after its position is learned.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use serde_json::{Value, json};
use shadowdiff::analysis::Analyzer;
use shadowdiff::analysis::keys::{KeyPosition, KeyPositions, KeySettings};
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
    exchange_of(primary, secondary, candidate)
}

/// Ten users keyed by name (about 1 KB); the candidate changes the first one's name.
fn team(candidate: bool) -> Bytes {
    let users: serde_json::Map<String, Value> = (0..10)
        .map(|index| {
            let name = if candidate && index == 0 {
                "CHANGED".to_string()
            } else {
                format!("name {index}")
            };
            (
                format!("user-7-{index}"),
                json!({"name": name, "role": "dev", "team": "core", "since": 2020 + index}),
            )
        })
        .collect();
    Bytes::from(serde_json::to_vec(&json!({"team": 7, "users": users})).unwrap())
}

fn exchange_of(primary: Bytes, secondary: Bytes, candidate: Bytes) -> (Exchange, u64) {
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

fn map_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    // What the hook adds to every exchange with body differences: counting the literal keys on their paths (here
    // the 1 KB orders exchange's, whose positions see the same few keys and are never learned).
    let (orders, _) = exchange(1 << 10);
    let compared = Analyzer::default().analyse(orders.clone());
    let compared = compared.compared().unwrap();
    let differences = (compared.candidate.clone(), compared.noise.clone());
    let keys = KeyPositions::default();
    group.bench_function("settle/orders_1KB", |b| {
        b.iter_batched(
            || differences.clone(),
            |(mut candidate, mut noise)| {
                keys.settle("GET /orders", [&mut candidate, &mut noise]);
                (candidate, noise)
            },
            BatchSize::SmallInput,
        )
    });
    let (map, total) = exchange_of(team(false), team(false), team(true));
    group.throughput(Throughput::Bytes(total));
    // Never learned (the threshold is out of reach): each exchange counts its keys.
    let counting = Analyzer::default().with_keys(std::sync::Arc::new(KeyPositions::new(
        &KeySettings {
            threshold: usize::MAX,
        },
        Default::default(),
    )));
    group.bench_function("analyse/map_counting", |b| {
        b.iter_batched(
            || map.clone(),
            |exchange| counting.analyse(exchange),
            BatchSize::SmallInput,
        )
    });
    // Learned: the walk writes `{key}` under the position.
    let learned = std::sync::Arc::new(KeyPositions::default());
    learned.adopt(vec![KeyPosition {
        endpoint: "GET /orders".into(),
        position: "body/users".into(),
    }]);
    let folding = Analyzer::default().with_keys(learned);
    group.bench_function("analyse/map_learned", |b| {
        b.iter_batched(
            || map.clone(),
            |exchange| folding.analyse(exchange),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = analysis_throughput, map_keys
}
criterion_main!(benches);
