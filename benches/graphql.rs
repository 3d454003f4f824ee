//! What reading a request as GraphQL costs on the caller's path: a typical query's JSON body (one named query
//! with variables and a fragment, about 600 bytes) read and its operation classified, against `serde_json`
//! parsing the same body alone, and a 64-operation batch.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use shadowdiff::graphql::GraphqlSettings;
use shadowdiff::graphql::persisted::PersistedQueries;

const QUERY: &str = "query ProductPage($id: ID!, $first: Int = 10) { product(id: $id) { id name price { amount currency } \
    ...Reviews } recommendations(productId: $id, first: $first) { edges { node { id name } } } } \
    fragment Reviews on Product { reviews(first: 5) { edges { node { id rating body author { name } } } } }";

fn body() -> String {
    serde_json::json!({"query": QUERY, "operationName": "ProductPage", "variables": {"id": "p-42", "first": 4}})
        .to_string()
}

fn reading(c: &mut Criterion) {
    let settings = GraphqlSettings::default();
    let persisted = PersistedQueries::default();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let one = body();
    let batch = format!("[{}]", [one.as_str(); 64].join(","));
    let mut group = c.benchmark_group("graphql");
    for (name, text) in [("one query", &one), ("batch of 64", &batch)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("{name}: read and classified"), |b| {
            b.iter(|| {
                settings.read(
                    &Method::POST,
                    "/graphql",
                    None,
                    &headers,
                    black_box(text.as_bytes()),
                    &persisted,
                )
            })
        });
        group.bench_function(format!("{name}: serde_json alone"), |b| {
            b.iter(|| {
                serde_json::from_slice::<serde_json::Value>(black_box(text.as_bytes())).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reading);
criterion_main!(benches);
