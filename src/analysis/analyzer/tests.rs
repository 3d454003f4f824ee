//! The `Analyzer` tested on whole exchanges: gRPC calls, the memory budget, bodies equal once decoded.

use super::*;
use crate::analysis::compat::Compat;
use std::io::Write;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};

use crate::exchange::RecordedRequest;

fn gzip(body: &[u8], level: flate2::Compression) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(body).unwrap();
    Bytes::from(encoder.finish().unwrap())
}

fn outcome(body: Bytes, encoding: Option<&'static str>) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(encoding) = encoding {
        headers.insert("content-encoding", HeaderValue::from_static(encoding));
    }
    Outcome {
        elapsed: Duration::from_millis(1),
        result: Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: CapturedBody::Complete(body),
        }),
    }
}

fn exchange(primary: Outcome, secondary: Outcome, candidate: Outcome) -> Exchange {
    Exchange {
        id: uuid::Uuid::now_v7(),
        started_at: SystemTime::now(),
        endpoint: "GET /deep".to_string(),
        request: RecordedRequest {
            method: Method::GET,
            uri: Uri::from_static("/deep"),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        },
        primary,
        secondary,
        candidate,
        charge: Default::default(),
    }
}

/// A gRPC answer: `messages` framed, its status in the trailers (kept with the headers).
fn grpc_outcome(messages: &[&[u8]], status: &str, message: &str) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_str(status).unwrap());
    headers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
    let body: Vec<u8> = messages
        .iter()
        .flat_map(|m| crate::grpc::frame::frame(m))
        .collect();
    Outcome {
        elapsed: Duration::from_millis(1),
        result: Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: CapturedBody::Complete(Bytes::from(body)),
        }),
    }
}

fn grpc_exchange(primary: Outcome, secondary: Outcome, candidate: Outcome) -> Exchange {
    let mut exchange = exchange(primary, secondary, candidate);
    exchange.request.method = Method::POST;
    exchange.request.uri = Uri::from_static("/shop.v1.Orders/GetOrder");
    exchange
        .request
        .headers
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    exchange
}

#[test]
fn a_grpc_calls_status_is_its_grpc_status_and_a_changed_code_breaks() {
    // Without a schema: field 1 (a string), by number.
    let order: &[u8] = &[0x0a, 2, b'o', b'1'];
    let analysis = Analyzer::default().analyse(grpc_exchange(
        grpc_outcome(&[order], "0", ""),
        grpc_outcome(&[order], "0", ""),
        grpc_outcome(&[], "5", "no order o1"),
    ));
    let compared = analysis.compared().unwrap();
    let status = compared
        .candidate
        .iter()
        .find(|d| d.path == "status")
        .expect("a status difference");
    assert_eq!(
        (status.primary.as_deref(), status.other.as_deref()),
        (Some("OK"), Some("NOT_FOUND"))
    );
    assert_eq!(status.compat, Compat::Breaking);
    assert!(
        compared
            .candidate
            .iter()
            .all(|d| d.path != "header/grpc-status"),
        "the code is compared once, as the status: {:?}",
        compared.candidate
    );
    assert!(
        compared
            .candidate
            .iter()
            .any(|d| d.path == "header/grpc-message")
    );
    // The messages, decoded, are what was compared: the candidate sent none.
    assert!(
        compared
            .candidate
            .iter()
            .any(|d| d.path == "body" && d.kind == DiffKind::ArrayLength),
        "{:?}",
        compared.candidate
    );
    assert!(compared.noise.is_empty(), "{:?}", compared.noise);
}

#[test]
fn decoding_a_grpc_body_is_charged_and_skipped_past_the_budget() {
    // A packed run of 4 000 varints: 4 KB on the wire, tens of bytes each once decoded.
    let mut message = vec![0x0a];
    prost::encoding::encode_varint(4000, &mut message);
    message.extend(std::iter::repeat_n(1u8, 4000));
    let call = || {
        grpc_exchange(
            grpc_outcome(&[&message], "0", ""),
            grpc_outcome(&[&message], "0", ""),
            grpc_outcome(&[&message], "0", ""),
        )
    };
    let budget = crate::budget::MemoryBudget::new(64 << 10);
    let mut scratch = budget.empty(crate::budget::Stage::Analysis);
    let analysis = Analyzer::default().analyse_within(call(), &mut scratch);
    assert_eq!(
        analysis.compared().unwrap().body_skipped,
        [(Target::Primary, BodySkip::MemoryBudget)],
        "64 bytes per wire byte do not fit in 64 KiB"
    );
    assert_eq!(budget.used(), 0, "what decoding took is given back");
    let budget = crate::budget::MemoryBudget::new(4 << 20);
    let mut scratch = budget.empty(crate::budget::Stage::Analysis);
    let analysis = Analyzer::default().analyse_within(call(), &mut scratch);
    assert!(analysis.compared().unwrap().body_skipped.is_empty());
}

#[test]
fn bodies_that_decode_to_the_same_bytes_are_equal_unparsed() {
    // Nested deeper than the parser goes: had it been parsed, primary's body would be `json_too_deep`.
    let items: Vec<String> = (0..2_000).map(|i| (i * 7919 % 1000).to_string()).collect();
    let body = format!(
        "{}[{}]{}",
        "[".repeat(200),
        items.join(","),
        "]".repeat(200)
    );
    let fast = gzip(body.as_bytes(), flate2::Compression::fast());
    let best = gzip(body.as_bytes(), flate2::Compression::best());
    assert_ne!(fast, best, "the two encodings differ as bytes");
    let analysis = Analyzer::default().analyse(exchange(
        outcome(fast.clone(), Some("gzip")),
        outcome(best, Some("gzip")),
        outcome(Bytes::from(body), None),
    ));
    let compared = analysis.compared().unwrap();
    assert_eq!(compared.body_skipped, Vec::new());
    assert_eq!(compared.noise, Vec::new());
    let paths: Vec<&str> = compared.candidate.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, vec!["header/content-encoding"]);

    // The same bodies declared as different media types are still compared.
    let mut text = outcome(fast.clone(), Some("gzip"));
    if let Ok(response) = &mut text.result {
        response
            .headers
            .insert("content-type", HeaderValue::from_static("text/plain"));
    }
    let analysis = Analyzer::default().analyse(exchange(
        outcome(fast.clone(), Some("gzip")),
        outcome(fast, Some("gzip")),
        text,
    ));
    assert_eq!(
        analysis.compared().unwrap().body_skipped,
        vec![(Target::Primary, BodySkip::JsonTooDeep)]
    );
}
