//! Fuzz target: arbitrary bytes as three response bodies, under arbitrary encodings and content types, through
//! decoding and every kind of diff. Nothing may panic, whatever the bytes.
#![no_main]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use shadowdiff::analysis::{AnalysisConfig, Analyzer};
use shadowdiff::exchange::{CapturedBody, Exchange, Outcome, RecordedRequest, UpstreamResponse};

#[derive(Arbitrary, Debug)]
struct Side {
    body: Vec<u8>,
    /// Picks a Content-Encoding header (none, gzip, deflate, br, two of them, an unknown one).
    encoding: u8,
    /// Picks a Content-Type header.
    content_type: u8,
    status: u16,
}

#[derive(Arbitrary, Debug)]
struct Input {
    primary: Side,
    secondary: Side,
    candidate: Side,
}

fn outcome(side: &Side) -> Outcome {
    let mut headers = HeaderMap::new();
    let encoding = match side.encoding % 7 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("deflate"),
        3 => Some("br"),
        4 => Some("gzip, br"),
        5 => Some("identity"),
        _ => Some("zstd"),
    };
    if let Some(encoding) = encoding {
        headers.insert("content-encoding", HeaderValue::from_static(encoding));
    }
    let content_type = match side.content_type % 6 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("text/html; charset=utf-8"),
        3 => Some("text/plain"),
        4 => Some("application/octet-stream"),
        _ => Some("image/png"),
    };
    if let Some(content_type) = content_type {
        headers.insert("content-type", HeaderValue::from_static(content_type));
    }
    Outcome {
        elapsed: Duration::from_millis(1),
        result: Ok(UpstreamResponse {
            status: StatusCode::from_u16(100 + side.status % 500).unwrap_or(StatusCode::OK),
            headers,
            body: CapturedBody::Complete(Bytes::copy_from_slice(&side.body)),
        }),
    }
}

fuzz_target!(|input: Input| {
    let analyzer = Analyzer::new(AnalysisConfig {
        max_decoded_body: 1 << 20,
        text_timeout: Duration::from_millis(20),
        ..AnalysisConfig::default()
    });
    let exchange = Exchange {
        id: uuid::Uuid::nil(),
        started_at: SystemTime::UNIX_EPOCH,
        endpoint: "GET /fuzz".to_string(),
        request: RecordedRequest {
            method: Method::GET,
            uri: Uri::from_static("/fuzz"),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        },
        primary: outcome(&input.primary),
        secondary: outcome(&input.secondary),
        candidate: outcome(&input.candidate),
        charge: Default::default(),
    };
    let analysis = analyzer.analyse(exchange);
    if let Ok(compared) = &analysis.result {
        // The per-request summary must hold together for any input.
        let _ = compared.signature();
        let _ = compared.candidate_keys();
        let _ = compared.noise_keys();
    }
});
