//! From places to causes, timed: grouping the failing places of a run with 500 endpoints and 50 places each
//! into changes, filling their predictors from feature sketches, and what counting one request's features
//! costs the writer.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use shadowdiff::analysis::PathKey;
use shadowdiff::analysis::aggregate::{EndpointReport, RegressionReport, Tally, TargetLatency};
use shadowdiff::analysis::compat::Compat;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::features::{self, FeatureSketch, RequestParts};
use shadowdiff::redact::Redactor;
use shadowdiff::report::changes::{self, EndpointInput};
use shadowdiff::report::predictors;
use shadowdiff::store::rows::signature_row;
use shadowdiff::store::sketches::FeatureSketches;

const ENDPOINTS: usize = 500;
const REQUESTS: u64 = 1_000;

/// One endpoint's 50 failing places and the signatures they fail in: a header dropped on every request, 20
/// fields missing together on 40 % of them, a 500 on 2 % with 5 places trailing it, and 23 places failing
/// on their own in 1 % each.
fn endpoint(index: usize) -> (EndpointReport, Tally) {
    let key = |path: &str, kind| (path.to_string(), kind);
    let vary = key("header/vary", DiffKind::Missing);
    let fields: Vec<PathKey> = (0..20)
        .map(|n| key(&format!("body/user/f{n}"), DiffKind::Missing))
        .collect();
    let status = key("status", DiffKind::ValueChanged);
    let trailing: Vec<PathKey> = (0..5)
        .map(|n| key(&format!("body/error/e{n}"), DiffKind::Extra))
        .collect();
    let alone: Vec<PathKey> = (0..23)
        .map(|n| key(&format!("body/misc{n}"), DiffKind::ValueChanged))
        .collect();
    let mut tally = Tally {
        requests: REQUESTS,
        compared: REQUESTS,
        ..Tally::default()
    };
    let mut add = |places: Vec<PathKey>, count: u64| {
        let mut signature = places;
        signature.sort();
        *tally.signatures.entry(signature).or_default() += count;
    };
    add(vec![vary.clone()], 350);
    add([vec![vary.clone()], fields.clone()].concat(), 400);
    add(
        [vec![vary.clone(), status.clone()], trailing.clone()].concat(),
        20,
    );
    for place in &alone {
        add(vec![vary.clone(), place.clone()], 10);
    }
    let mut failing: BTreeMap<PathKey, u64> = BTreeMap::new();
    for (signature, count) in &tally.signatures {
        for place in signature {
            *failing.entry(place.clone()).or_default() += count;
        }
    }
    let regressions = failing
        .iter()
        .map(|((path, kind), count)| RegressionReport {
            path: path.clone(),
            kind: *kind,
            compat: Compat::classify(*kind, path, None, None),
            raw: *count,
            noise: 0,
            rate: *count as f64 / REQUESTS as f64,
            sample: None,
        })
        .collect();
    let report = EndpointReport {
        endpoint: format!("GET /resource{index}/{{id}}"),
        requests: REQUESTS,
        diff_rate: 1.0,
        noise_rate: 0.0,
        latency: TargetLatency::default(),
        latency_regression: false,
        regressions,
        accepted: Vec::new(),
        noise: Vec::new(),
        redacted_requests: 0,
        failing: REQUESTS,
        noisy: 0,
        failing_breaking: REQUESTS,
    };
    (report, tally)
}

/// A request with a numeric id, three query parameters and a dozen headers, as a caller sends it.
fn request_parts() -> (String, Vec<(String, String)>) {
    let target = "/resource7/10047?currency=EUR&page=3&sort=price".to_string();
    let headers = [
        ("host", "shop.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, br"),
        ("x-client", "ios/5.2"),
        ("x-request-id", "7f3c2b1a-9d8e-4c6b-a5f4-3e2d1c0b9a87"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("cookie", "session=abc"),
        ("authorization", "Bearer token"),
        ("x-forwarded-for", "203.0.113.7"),
        ("connection", "keep-alive"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    (target, headers)
}

/// A GET of `target` with `headers`, as extraction reads it.
fn parts_of<'a>(target: &'a str, headers: &'a [(String, String)]) -> RequestParts<'a> {
    RequestParts {
        method: "GET",
        target,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
        body: b"",
    }
}

fn benches(c: &mut Criterion) {
    let data: Vec<(EndpointReport, Tally)> = (0..ENDPOINTS).map(endpoint).collect();
    let shapes = BTreeMap::new();
    let inputs: Vec<EndpointInput<'_>> = data
        .iter()
        .map(|(report, tally)| EndpointInput {
            report,
            tally,
            shapes: &shapes,
        })
        .collect();
    let grouped = changes::group(&inputs);
    // The header, the 20 fields, the 500 with what trails it, and each of the 23 places failing alone: the
    // same 26 changes on every endpoint, so 26 in all.
    assert_eq!(grouped.len(), 26, "{}", grouped.len());
    c.bench_function("changes/group 500 endpoints x 50 places", |b| {
        b.iter(|| black_box(changes::group(black_box(&inputs))))
    });

    // Every signature's sketch, of requests like the one above with ids and currencies varying.
    let redactor = Redactor::new(b"bench".to_vec(), &[]);
    let (target, headers) = request_parts();
    let mut sketches = FeatureSketches::new();
    for (report, tally) in &data {
        for signature in tally.signatures.keys().chain(std::iter::once(&Vec::new())) {
            let mut sketch = FeatureSketch::default();
            for n in 0..50u64 {
                let target = target.replace("10047", &(10_000 + n).to_string());
                let parts = parts_of(&target, &headers);
                sketch.add(&features::extract(&report.endpoint, &parts, &redactor));
            }
            sketches.insert(
                (report.endpoint.clone(), signature_row(signature).0),
                sketch,
            );
        }
    }
    let tallies: BTreeMap<String, Tally> = data
        .iter()
        .map(|(report, tally)| (report.endpoint.clone(), tally.clone()))
        .collect();
    c.bench_function("changes/predictors of every change", |b| {
        b.iter_batched(
            || grouped.clone(),
            |mut changes| {
                predictors::fill(&mut changes, &tallies, &sketches);
                black_box(changes)
            },
            criterion::BatchSize::LargeInput,
        )
    });

    let parts = parts_of(&target, &headers);
    c.bench_function("changes/extract one request's features", |b| {
        b.iter(|| {
            black_box(features::extract(
                "GET /resource7/{id}",
                black_box(&parts),
                &redactor,
            ))
        })
    });
    let found = features::extract("GET /resource7/{id}", &parts, &redactor);
    let mut sketch = FeatureSketch::default();
    c.bench_function("changes/count one request's features", |b| {
        b.iter(|| sketch.add(black_box(&found)))
    });
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
