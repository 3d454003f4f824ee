//! Latency sketches tested: accuracy and merging, percentiles, the verdict, the stored form and legacy histograms.

use std::time::Instant;

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};

use super::*;

fn filled(primary_ms: u64, secondary_ms: u64, candidate_ms: u64, samples: u64) -> Latencies {
    let mut latencies = Latencies::default();
    for i in 0..samples {
        let jitter = i % 5;
        latencies.record(Target::Primary, Duration::from_millis(primary_ms + jitter));
        latencies.record(
            Target::Secondary,
            Duration::from_millis(secondary_ms + jitter),
        );
        latencies.record(
            Target::Candidate,
            Duration::from_millis(candidate_ms + jitter),
        );
    }
    latencies
}

fn sketch_of(values: &[u64]) -> LatencySketch {
    let mut sketch = LatencySketch::default();
    for value in values {
        sketch.record(*value);
    }
    sketch
}

/// The exact value of nearest rank `ceil(q * len)` in sorted values.
fn at_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// Within the stated 1 %, plus 1 µs for rounding the representative to an integer.
fn assert_close(estimate: u64, exact: u64, what: &str) {
    let tolerance = exact as f64 * RELATIVE_ACCURACY + 1.0;
    assert!(
        (estimate as f64 - exact as f64).abs() <= tolerance,
        "{what}: estimate {estimate} vs exact {exact}"
    );
}

fn legacy_histogram(values: &[u64]) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).unwrap();
    for value in values {
        histogram.saturating_record(*value);
    }
    histogram
}

fn v2(histogram: &Histogram<u64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .unwrap();
    bytes
}

#[test]
fn percentiles_in_milliseconds() {
    let latencies = filled(10, 10, 10, 1000);
    let summary = latencies.summary(Target::Primary);
    assert_eq!(summary.samples, 1000);
    assert!((10.0..=15.0).contains(&summary.p50_ms), "{summary:?}");
    assert!(summary.p50_ms <= summary.p90_ms && summary.p90_ms <= summary.p99_ms);
}

#[test]
fn a_slow_candidate_is_a_latency_regression_only_beyond_noise() {
    assert!(filled(10, 11, 100, 200).regression(1.5));
    assert!(!filled(10, 11, 12, 200).regression(1.5));
    // Secondary just as slow: the slowness is the environment's, not the candidate's.
    assert!(!filled(10, 100, 100, 200).regression(1.5));
    // Too few samples to say.
    assert!(!filled(10, 11, 100, 99).regression(1.5));
}

#[test]
fn the_baseline_is_secondary_which_travels_the_candidates_path() {
    // Both shadows measured slower than primary (their threads yield to the callers'): the candidate is judged
    // against secondary alone.
    assert!(filled(2, 10, 100, 200).regression(1.5));
    assert!(!filled(2, 10, 12, 200).regression(1.5));
    // A fast primary does not make equal shadows look slow.
    assert!(!filled(1, 20, 20, 200).regression(1.5));
}

#[test]
fn histograms_round_trip_and_merge() {
    let latencies = filled(10, 10, 30, 150);
    let encoded = encode(latencies.histogram(Target::Candidate));
    let decoded = decode(&encoded).unwrap();
    assert_eq!(decoded.len(), 150);
    let mut merged = Latencies::default();
    merged.merge_target(Target::Candidate, &decoded);
    merged.merge_target(Target::Candidate, &decoded);
    assert_eq!(merged.histogram(Target::Candidate).len(), 300);
    assert!(decode(b"not a histogram").is_none());
}

#[test]
fn the_index_range_fits_the_stated_bounds() {
    assert_eq!(index_of(1), 0);
    assert_eq!(index_of(HIGHEST_MICROS), MAX_INDEX);
    assert_eq!(representative(0), 1);
    // Every bucket's representative is within 1 % of both of its ends.
    for index in 1..=MAX_INDEX {
        let (low, high) = (
            GAMMA.powi(i32::from(index) - 1),
            GAMMA.powi(i32::from(index)),
        );
        let value = representative(index) as f64;
        assert!(
            (value - low).abs() <= low * RELATIVE_ACCURACY + 0.5,
            "{index}"
        );
        assert!(
            (high - value).abs() <= high * RELATIVE_ACCURACY + 0.5,
            "{index}"
        );
    }
}

#[test]
fn quantiles_are_within_one_percent_of_the_exact_values() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let log_max = (10_000_000f64).ln();
    let distributions: [(&str, Vec<u64>); 4] = [
        (
            "uniform 1 µs..10 s",
            (0..5000).map(|_| rng.u64(1..=10_000_000)).collect(),
        ),
        (
            "log-uniform 1 µs..10 s",
            (0..5000)
                .map(|_| (rng.f64() * log_max).exp().round() as u64)
                .collect(),
        ),
        (
            "cluster around 20 ms",
            (0..3000).map(|_| 20_000 + rng.u64(0..200)).collect(),
        ),
        (
            "bimodal 2 ms / 200 ms",
            (0..4000)
                .map(|i| {
                    if i % 3 == 0 {
                        200_000 + rng.u64(0..50_000)
                    } else {
                        2_000 + rng.u64(0..500)
                    }
                })
                .collect(),
        ),
    ];
    for (name, mut values) in distributions {
        let sketch = sketch_of(&values);
        assert_eq!(sketch.len(), values.len() as u64);
        values.sort_unstable();
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            let exact = at_rank(&values, q);
            assert_close(sketch.value_at_quantile(q), exact, &format!("{name} q={q}"));
        }
    }
}

#[test]
fn quantiles_use_the_nearest_rank() {
    // 150 samples a millisecond apart: p99 is the 149th (ceil(148.5)), p50 the 75th, as HDR reported them.
    let values: Vec<u64> = (1..=150).map(|ms| ms * 1000).collect();
    let sketch = sketch_of(&values);
    assert_close(sketch.value_at_quantile(0.99), 149_000, "p99");
    assert_close(sketch.value_at_quantile(0.5), 75_000, "p50");
    assert_close(sketch.value_at_quantile(0.0), 1_000, "p0");
    assert_close(sketch.value_at_quantile(1.0), 150_000, "p100");
}

#[test]
fn quantiles_of_edge_cases() {
    assert_eq!(LatencySketch::default().value_at_quantile(0.5), 0);
    let sketch = sketch_of(&[1000, 2000, 3000]);
    assert_close(sketch.value_at_quantile(-1.0), 1000, "below 0");
    assert_close(sketch.value_at_quantile(f64::NAN), 1000, "NaN");
    assert_close(sketch.value_at_quantile(0.5), 2000, "median");
    assert_close(sketch.value_at_quantile(7.0), 3000, "above 1");
}

#[test]
fn merging_equals_recording_everything_in_any_order() {
    let mut rng = fastrand::Rng::with_seed(7);
    let a: Vec<u64> = (0..2000).map(|_| 1_000 + rng.u64(0..40_000)).collect();
    let b: Vec<u64> = (0..1500).map(|_| 30_000 + rng.u64(0..900_000)).collect();
    let all: Vec<u64> = a.iter().chain(&b).copied().collect();
    let (sketch_a, sketch_b) = (sketch_of(&a), sketch_of(&b));

    let mut ab = sketch_a.clone();
    ab.add(&sketch_b);
    let mut ba = sketch_b.clone();
    ba.add(&sketch_a);
    assert_eq!(ab, sketch_of(&all));
    assert_eq!(ab, ba);

    // Merging buckets that are all present already takes the in-place path.
    let mut twice = sketch_a.clone();
    twice.add(&sketch_a);
    let doubled: Vec<u64> = a.iter().chain(&a).copied().collect();
    assert_eq!(twice, sketch_of(&doubled));

    let mut empty = LatencySketch::default();
    empty.add(&LatencySketch::default());
    assert_eq!(empty.heap_bytes(), 0);
    empty.add(&sketch_a);
    assert_eq!(empty, sketch_a);
}

#[test]
fn encoding_round_trips() {
    let mut rng = fastrand::Rng::with_seed(11);
    let values: Vec<u64> = (0..3000).map(|_| rng.u64(0..u64::MAX >> 20)).collect();
    let mut sketch = sketch_of(&values);
    sketch.record_n(5, u64::MAX / 2);
    for sketch in [sketch, LatencySketch::default(), sketch_of(&[1])] {
        let encoded = encode(&sketch);
        assert!(encoded.starts_with(MAGIC));
        assert_eq!(decode(&encoded), Some(sketch));
    }
}

#[test]
fn malformed_encodings_are_rejected() {
    let valid = encode(&sketch_of(&[1000, 1000, 5000, 80_000]));
    for end in 0..valid.len() {
        assert_eq!(decode(&valid[..end]), None, "truncated to {end}");
    }
    let with_trailing = [valid.as_slice(), &[0]].concat();
    let cases: [(&str, &[u8]); 9] = [
        ("garbage", b"not a histogram"),
        ("trailing byte", &with_trailing),
        (
            "overlong varint",
            b"SDL1\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
        ),
        (
            "overflowing varint",
            b"SDL1\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02\x01",
        ),
        ("non-minimal varint", b"SDL1\x01\x85\x00\x01"),
        ("non-increasing", b"SDL1\x02\x05\x01\x00\x01"),
        ("zero count", b"SDL1\x01\x05\x00"),
        ("index out of range", b"SDL1\x01\xce\x08\x01"),
        ("more buckets than bytes", b"SDL1\x03\x05\x01\x01\x01"),
    ];
    for (what, bytes) in cases {
        assert_eq!(decode(bytes), None, "{what}");
    }
    // The largest index is accepted; one beyond it (0x44e = 1102, above) is not.
    let mut top = b"SDL1\x01".to_vec();
    write_varint(&mut top, u64::from(MAX_INDEX));
    top.push(1);
    assert_eq!(decode(&top).map(|sketch| sketch.len()), Some(1));
}

#[test]
fn a_huge_bucket_count_is_rejected_without_allocating() {
    let mut bytes = MAGIC.to_vec();
    write_varint(&mut bytes, 1 << 60);
    bytes.push(1);
    let start = Instant::now();
    assert_eq!(decode(&bytes), None);
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[test]
fn random_bytes_never_panic_and_decode_canonically() {
    let mut rng = fastrand::Rng::with_seed(3);
    let valid = encode(&sketch_of(&[1, 10, 100, 1000, 10_000, 3_600_000_000]));
    let legacy = v2(&legacy_histogram(&[1, 10, 100, 1000, 10_000]));
    for round in 0..20_000 {
        let mut bytes = match round % 3 {
            0 => valid.clone(),
            1 => legacy.clone(),
            _ => (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect(),
        };
        for _ in 0..rng.usize(1..4) {
            if !bytes.is_empty() {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
        }
        if let Some(sketch) = decode(&bytes)
            && bytes.starts_with(MAGIC)
        {
            assert_eq!(encode(&sketch), bytes);
        }
    }
}

#[test]
fn legacy_hdr_histograms_decode_into_sketches() {
    let mut rng = fastrand::Rng::with_seed(42);
    let values: Vec<u64> = (0..5000)
        .map(|i| {
            if i % 10 == 0 {
                rng.u64(50_000..2_000_000)
            } else {
                rng.u64(1_000..50_000)
            }
        })
        .collect();
    let histogram = legacy_histogram(&values);
    let sketch = decode(&v2(&histogram)).unwrap();
    assert_eq!(sketch.len(), histogram.len());
    for q in [0.5, 0.9, 0.99] {
        assert_close(
            sketch.value_at_quantile(q),
            histogram.value_at_quantile(q),
            &format!("q={q}"),
        );
    }
    assert_eq!(
        decode(&v2(&legacy_histogram(&[]))),
        Some(LatencySketch::default())
    );
}

#[test]
fn a_stored_legacy_blob_reads_back() {
    // The candidate histogram of `GET /search` in tests/fixtures/schema-v1/postgres.sql.
    let hex = "1c8493130000006c0000000000000003000000000000000100000000d693a4003ff0000000000000a368\
               02020302040402060206040002040404000802040202000202040604000202060402040404050408040604\
               020802020200020202000402000204090207020b020200040600020b020200020207020002000202020200\
               020d02020407020502020302170202020b023902";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect();
    let histogram: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
    let mut values = Vec::new();
    for value in histogram.iter_recorded() {
        values.extend(std::iter::repeat_n(
            value.value_iterated_to(),
            value.count_at_value() as usize,
        ));
    }
    let sketch = decode(&bytes).unwrap();
    assert_eq!(sketch.len(), histogram.len());
    assert!(sketch.len() >= MIN_SAMPLES);
    for q in [0.5, 0.9, 0.99] {
        let exact = at_rank(&values, q);
        assert_close(sketch.value_at_quantile(q), exact, &format!("q={q}"));
    }
    // What the first version reported for it (tests/fixtures/schema-v1/gate.json), within the 2 % the
    // upgrade test allows.
    let mut latencies = Latencies::default();
    latencies.merge_target(Target::Candidate, &sketch);
    let summary = latencies.summary(Target::Candidate);
    for (actual, reported) in [(summary.p50_ms, 51.103), (summary.p99_ms, 54.687)] {
        assert!(
            (actual - reported).abs() <= reported * 0.02 + 0.001,
            "{summary:?}"
        );
    }
}

#[test]
fn hostile_legacy_headers_are_rejected() {
    let blob = v2(&legacy_histogram(&[1000, 2000]));
    let with = |at: usize, field: &[u8]| {
        let mut bytes = blob.clone();
        bytes[at..at + field.len()].copy_from_slice(field);
        bytes
    };
    // A payload length beyond the bytes (the deserializer would allocate it up front).
    assert_eq!(decode(&with(4, &u32::MAX.to_be_bytes())), None);
    // The largest header accepted allocates 32 Ki counters; bounds beyond it would allocate far more.
    let largest = Histogram::<u64>::new_with_bounds(1, LEGACY_HIGHEST_CAP, 3).unwrap();
    assert_eq!(largest.distinct_values(), 32 * 1024);
    assert_eq!(decode(&with(12, &5u32.to_be_bytes())), None);
    assert_eq!(decode(&with(24, &u64::MAX.to_be_bytes())), None);
    assert_eq!(decode(&with(16, &0u64.to_be_bytes())), None);
    // A zero run of i64::MIN, which overflows the deserializer's negation.
    let mut overflow = blob[..LEGACY_HEADER_LEN].to_vec();
    overflow[4..8].copy_from_slice(&9u32.to_be_bytes());
    overflow.extend_from_slice(&[0xff; 9]);
    assert_eq!(decode(&overflow), None);
    // Trailing bytes after the payload.
    assert_eq!(decode(&[blob.as_slice(), &[0]].concat()), None);
    // DEFLATE-compressed V2 was never stored; its inflated size is unbounded, so it is refused.
    let mut deflated = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&legacy_histogram(&[1000]), &mut deflated)
        .unwrap();
    assert_eq!(decode(&deflated), None);
    assert_eq!(decode(&blob).map(|sketch| sketch.len()), Some(2));
}

#[test]
fn memory_grows_with_buckets_not_values() {
    assert_eq!(LatencySketch::default().heap_bytes(), 0);
    assert_eq!(Latencies::default().heap_bytes(), 0);

    let mut sketch = LatencySketch::default();
    for i in 0..100_000u64 {
        sketch.record(1_000 << (i % 10));
    }
    assert_eq!(sketch.indices.len(), 10);
    assert_eq!(sketch.len(), 100_000);
    assert!(sketch.heap_bytes() < 1024, "{}", sketch.heap_bytes());

    let mut latencies = Latencies::default();
    for target in Target::ALL {
        latencies.record(target, Duration::from_millis(12));
    }
    assert!(latencies.heap_bytes() < 256, "{}", latencies.heap_bytes());

    // A realistic spread: a thousand values of 1 to 50 ms.
    let mut rng = fastrand::Rng::with_seed(1);
    let typical = sketch_of(
        &(0..1000)
            .map(|_| rng.u64(1_000..=50_000))
            .collect::<Vec<_>>(),
    );
    assert!(typical.heap_bytes() < 4096, "{}", typical.heap_bytes());
}

#[test]
fn values_outside_the_range_are_clamped() {
    assert_eq!(sketch_of(&[0]), sketch_of(&[1]));
    assert_eq!(sketch_of(&[u64::MAX]), sketch_of(&[HIGHEST_MICROS]));
    assert_close(
        sketch_of(&[u64::MAX]).value_at_quantile(1.0),
        HIGHEST_MICROS,
        "one hour",
    );
    let mut latencies = Latencies::default();
    latencies.record(Target::Primary, Duration::ZERO);
    latencies.record(Target::Primary, Duration::MAX);
    assert_eq!(
        latencies.histogram(Target::Primary),
        &sketch_of(&[1, HIGHEST_MICROS])
    );
    let mut counted = LatencySketch::default();
    counted.record_n(1000, 0);
    assert_eq!(counted, LatencySketch::default());
    counted.record_n(1000, u64::MAX);
    counted.record_n(1000, 5);
    assert_eq!(counted.len(), u64::MAX);
}
