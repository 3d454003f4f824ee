//! XML analysis throughput: MB/s of the three SOAP response bodies of an exchange, 1 KB and 64 KB, the whole
//! analysis against reading the same bytes with quick-xml alone and against building the pair's trees.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use shadowdiff::analysis::Analyzer;
use shadowdiff::analysis::structured::xml;
use shadowdiff::budget::Charge;
use shadowdiff::exchange::{CapturedBody, Exchange, Outcome, RecordedRequest, UpstreamResponse};

/// A SOAP answer listing orders, `size` bytes or a little more; `stamp` is the time it was served (it differs on every
/// upstream: noise), and `changed` changes the total of the middle order (the one difference of the candidate).
fn envelope(size: usize, stamp: u64, changed: bool) -> Bytes {
    let order = |id: usize, total: &str| {
        format!(
            r#"
      <m:order id="{id}" status="paid">
        <m:customer tier="gold"><m:name>Ada Lovelace</m:name><m:email>ada@example.com</m:email></m:customer>
        <m:item sku="A-1"><m:qty>2</m:qty><m:price currency="EUR">9.99</m:price></m:item>
        <m:item sku="B-7"><m:qty>1</m:qty><m:price currency="EUR">24.50</m:price></m:item>
        <m:total currency="EUR">{total}</m:total>
      </m:order>"#
        )
    };
    let head = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Header><t:servedAt xmlns:t="urn:example:trace">{stamp}</t:servedAt></soap:Header>
  <soap:Body>
    <m:GetOrdersResponse xmlns:m="urn:example:shop">"#
    );
    let tail = "\n    </m:GetOrdersResponse>\n  </soap:Body>\n</soap:Envelope>\n";
    // At least `size` bytes, as the JSON bench's documents are.
    let count = size
        .saturating_sub(head.len() + tail.len())
        .div_ceil(order(0, "44.48").len())
        .max(1);
    let mut body = head;
    for id in 0..count {
        let total = if changed && id == count / 2 {
            "44.49"
        } else {
            "44.48"
        };
        body.push_str(&order(id, total));
    }
    body.push_str(tail);
    Bytes::from(body)
}

fn outcome(body: Bytes) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    Outcome {
        elapsed: Duration::from_millis(3),
        result: Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: CapturedBody::Complete(body),
        }),
    }
}

fn exchange(size: usize) -> (Exchange, [Bytes; 3]) {
    let bodies = [
        envelope(size, 1_000, false),
        envelope(size, 2_000, false),
        envelope(size, 3_000, true),
    ];
    let exchange = Exchange {
        id: uuid::Uuid::now_v7(),
        started_at: SystemTime::now(),
        endpoint: "POST /soap/orders".to_string(),
        request: RecordedRequest {
            method: Method::POST,
            uri: Uri::from_static("/soap/orders"),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        },
        primary: outcome(bodies[0].clone()),
        secondary: outcome(bodies[1].clone()),
        candidate: outcome(bodies[2].clone()),
        charge: Default::default(),
    };
    (exchange, bodies)
}

/// Every event of a document, read and dropped: the floor any tree built from quick-xml stands on.
fn read_events(body: &[u8]) -> usize {
    let mut reader = quick_xml::Reader::from_str(std::str::from_utf8(body).unwrap());
    let mut events = 0;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => return events,
            event => {
                black_box(event);
                events += 1;
            }
        }
    }
}

fn xml_throughput(c: &mut Criterion) {
    let analyzer = Analyzer::default();
    let mut group = c.benchmark_group("xml");
    for (label, size) in [("1KB", 1 << 10), ("64KB", 64 << 10)] {
        let (exchange, [primary, secondary, candidate]) = exchange(size);
        // What is measured finds what it should: the candidate's one change, and the served time that differs
        // on every side (noise, which secondary shows too).
        let analysis = analyzer.analyse(exchange.clone());
        let compared = analysis.compared().expect("compared");
        let paths: Vec<&str> = compared.candidate.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{paths:?}");
        assert!(
            paths.iter().any(|path| path.ends_with("/total/#text")),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"body/Envelope/Header/servedAt"),
            "{paths:?}"
        );
        assert_eq!(compared.noise.len(), 1, "{:?}", compared.noise);
        let total = (primary.len() + secondary.len() + candidate.len()) as u64;
        group.throughput(Throughput::Bytes(total));
        group.bench_with_input(BenchmarkId::new("events_only", label), &size, |b, _| {
            b.iter(|| {
                for body in [&primary, &secondary, &candidate] {
                    black_box(read_events(body));
                }
            })
        });
        // The trees the analysis reads: primary's pair with each other side, as `analyse` builds them.
        group.bench_with_input(BenchmarkId::new("trees", label), &size, |b, _| {
            b.iter(|| {
                for other in [&candidate, &secondary] {
                    black_box(xml::parse_pair(&primary, other, &mut Charge::none()).unwrap());
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("analyse", label), &size, |b, _| {
            // The copy `analyse` consumes is made outside the measured time, as in the JSON bench.
            b.iter_batched(
                || exchange.clone(),
                |exchange| analyzer.analyse(exchange),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, xml_throughput);
criterion_main!(benches);
