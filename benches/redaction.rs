//! Personal data by value, timed per KiB: one 64 KiB JSON body searched as text with none in it and with some
//! every few hundred bytes, and what a sample body's redaction (parse, secret fields, values, write back)
//! costs with the search and without it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shadowdiff::redact::Redactor;
use shadowdiff::redact::values::{ValueKind, ValuePatterns};

const BODY_BYTES: usize = 64 << 10;

/// A JSON array of orders, about `BODY_BYTES` long; every order holds personal data when `personal` says so.
fn body(personal: bool) -> Vec<u8> {
    let mut orders = Vec::new();
    let mut length = 2;
    let mut n = 0u64;
    while length < BODY_BYTES {
        let order = if personal {
            serde_json::json!({"id": n, "sku": format!("SKU-{n:06}"), "status": "shipped",
                "email": format!("user{n}@example.com"), "card": "4111 1111 1111 1111",
                "note": "left at the door, signed by the customer", "price_cents": 1999 + n})
        } else {
            serde_json::json!({"id": n, "sku": format!("SKU-{n:06}"), "status": "shipped",
                "email_verified": true, "card_brand": "visa",
                "note": "left at the door, signed by the customer", "price_cents": 1999 + n})
        };
        length += order.to_string().len() + 1;
        orders.push(order);
        n += 1;
    }
    serde_json::to_vec(&orders).unwrap()
}

fn redaction(c: &mut Criterion) {
    let plain = Redactor::new(b"bench key".to_vec(), &[]);
    let pii = plain
        .clone()
        .with_values(ValuePatterns::new(&ValueKind::ALL, &[]).unwrap());
    let mut group = c.benchmark_group("redact_values");
    for (name, personal) in [("none_found", false), ("every_order", true)] {
        let body = body(personal);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("text_search/{name}"), |b| {
            b.iter(|| black_box(pii.bytes_values(black_box(&body))))
        });
        group.bench_function(format!("sample_body_with_values/{name}"), |b| {
            b.iter(|| black_box(pii.json_body(black_box(&body))))
        });
        group.bench_function(format!("sample_body_without_values/{name}"), |b| {
            b.iter(|| black_box(plain.json_body(black_box(&body))))
        });
    }
    group.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = redaction
}
criterion_main!(group);
