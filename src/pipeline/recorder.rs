//! `serve --record FILE`: shadowed requests appended to a JSON-lines file by a background task, secrets redacted
//! as in the store. The proxy only offers each request to a bounded queue.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::analysis::grpc::is_protobuf_call;
use crate::exchange::RecordedRequest;
use crate::grpc::decode::Direction;
use crate::grpc::schema::Schemas;
use crate::pipeline::Draining;
use crate::pipeline::metrics::{DropReason, Queue, QueueMetrics};
use crate::redact::grpc::GrpcRedaction;
use crate::redact::{Redactor, UNDECODABLE};
use crate::seal::Sealer;
use crate::traffic::{TrafficRequest, jsonl};

/// A shadowed request and when it arrived.
pub struct Recording {
    pub time: SystemTime,
    pub request: RecordedRequest,
    /// The memory it holds until written, charged to `--memory-budget`.
    pub charge: crate::budget::Charge,
}

/// Opens (creating, or appending to) the record file.
pub async fn open(path: &Path) -> std::io::Result<BufWriter<tokio::fs::File>> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    // Recorded traffic is for its owner's eyes only, even redacted.
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(path).await?;
    Ok(BufWriter::new(file))
}

/// How recorded bodies are read to find their secrets.
#[derive(Clone, Debug, Default)]
pub struct BodyFormats {
    /// Largest body searched once its Content-Encoding is undone (`--max-decoded-body`).
    pub max_decoded_body: usize,
    /// The schemas gRPC calls' secret fields are found by.
    pub grpc: Schemas,
    /// Whether a gRPC call without a schema was said to be recorded unsearched.
    pub warned_no_schema: bool,
}

/// Writes recordings until `stop` is cancelled and the queue is drained, each line redacted by `redactor` and,
/// with a `sealer` (`--sample-recipient`), sealed on its own (`traffic::sealed`). Lines are flushed whenever
/// the queue runs empty, so the file is whole between bursts; a failed write is counted and logged, and the
/// next is tried.
pub async fn run(
    mut file: BufWriter<tokio::fs::File>,
    rx: mpsc::Receiver<Recording>,
    (redactor, sealer): (Redactor, Option<Arc<Sealer>>),
    mut formats: BodyFormats,
    metrics: QueueMetrics,
    stop: CancellationToken,
) {
    let mut recordings = Draining::new(rx, stop);
    let mut failing = false;
    while let Some(recording) = recordings.next().await {
        let mut line = jsonl::line(&redacted(recording, &redactor, &mut formats));
        if let Some(sealer) = &sealer {
            // Never written in clear: a line that cannot be sealed is dropped and counted.
            let Ok(sealed) = sealer.seal(line.as_bytes()) else {
                metrics.dropped(Queue::Recordings, DropReason::WriteFailed);
                continue;
            };
            line = crate::traffic::sealed::line(&sealed);
        }
        line.push('\n');
        let mut written = file.write_all(line.as_bytes()).await;
        if written.is_ok() && recordings.is_empty() {
            written = file.flush().await;
        }
        match written {
            Ok(()) => failing = false,
            Err(error) => {
                metrics.dropped(Queue::Recordings, DropReason::WriteFailed);
                if !failing {
                    tracing::error!(%error, "cannot write to the record file; recordings are dropped until it works again");
                }
                failing = true;
            }
        }
    }
    if let Err(error) = file.flush().await {
        tracing::error!(%error, "cannot flush the record file");
    }
}

/// The request as it goes into the file: secret headers and JSON fields replaced by their keyed hash. A body
/// under a Content-Encoding is stored decoded (and the header dropped) when fields must be redacted in it.
fn redacted(
    recording: Recording,
    redactor: &Redactor,
    formats: &mut BodyFormats,
) -> TrafficRequest {
    let max_decoded_body = formats.max_decoded_body;
    let Recording {
        time,
        request,
        mut charge,
    } = recording;
    let RecordedRequest {
        method,
        uri,
        headers,
        body,
        ..
    } = request;
    let mut body = body;
    let mut drop_encoding = false;
    if is_protobuf_call(&headers) {
        // Protobuf names no field on the wire: its secrets are found through the method's schema.
        let encoding = headers
            .get("grpc-encoding")
            .and_then(|value| value.to_str().ok());
        match redactor.grpc_body(
            &formats.grpc,
            uri.path(),
            Direction::Request,
            &body,
            encoding,
            (max_decoded_body, &mut charge),
        ) {
            GrpcRedaction::Unchanged => {}
            GrpcRedaction::NoSchema => {
                if !formats.warned_no_schema {
                    formats.warned_no_schema = true;
                    tracing::warn!(
                        path = uri.path(),
                        "a gRPC call is recorded as it came: no schema names its fields, so its secret fields \
                         cannot be found (give --grpc-proto or --grpc-descriptor-set); said once"
                    );
                }
            }
            GrpcRedaction::Redacted(clean) => body = clean.into(),
            GrpcRedaction::Unreadable => body = bytes::Bytes::from_static(UNDECODABLE),
        }
    } else if !body.is_empty() {
        let encoded = headers.contains_key(CONTENT_ENCODING);
        match crate::analysis::decode::decode(&headers, &body, max_decoded_body) {
            Ok(decoded) => match redactor.body(&headers, &decoded) {
                Some(clean) => {
                    body = clean.into();
                    drop_encoding = encoded;
                }
                None if encoded => {
                    body = decoded.into_owned().into();
                    drop_encoding = true;
                }
                None => {}
            },
            // It cannot be searched for secrets, so it is not recorded.
            Err(_) => {
                body = bytes::Bytes::from_static(UNDECODABLE);
                drop_encoding = encoded;
            }
        }
    }
    let headers: Vec<_> = stored_headers(&headers, redactor, drop_encoding);
    TrafficRequest {
        time: Some(time),
        method,
        uri: uri
            .path_and_query()
            .and_then(|pq| redactor.uri(pq.as_str()).parse().ok())
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers,
        body,
        authority: None,
    }
}

fn stored_headers(
    headers: &HeaderMap,
    redactor: &Redactor,
    drop_encoding: bool,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !(drop_encoding && (*name == CONTENT_ENCODING || *name == CONTENT_LENGTH))
        })
        .map(|(name, value)| {
            let stored = redactor.header_value(name.as_str(), value.as_bytes());
            let value = if stored.as_bytes() == value.as_bytes() {
                value.clone()
            } else {
                http::HeaderValue::from_str(&stored)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("redacted"))
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::Bytes;
    use http::{Method, Version};

    use super::*;

    fn recording(headers: &[(&str, &str)], body: &[u8]) -> Recording {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Recording {
            charge: crate::budget::Charge::none(),
            time: SystemTime::UNIX_EPOCH,
            request: RecordedRequest {
                method: Method::POST,
                uri: "/login?next=/".parse().unwrap(),
                version: Version::HTTP_11,
                headers: map,
                body: Bytes::copy_from_slice(body),
            },
        }
    }

    #[test]
    fn secrets_are_replaced_by_their_hash() {
        let redactor = Redactor::new(b"k".to_vec(), &["password".to_string()]);
        let request = redacted(
            recording(
                &[("authorization", "Bearer s3cret"), ("accept", "*/*")],
                br#"{"user":"ada","password":"hunter2"}"#,
            ),
            &redactor,
            &mut BodyFormats {
                max_decoded_body: 1 << 20,
                ..BodyFormats::default()
            },
        );
        let line = jsonl::line(&request);
        assert!(
            !line.contains("s3cret") && !line.contains("hunter2"),
            "{line}"
        );
        assert!(line.contains(&redactor.token(b"Bearer s3cret")));
        assert_eq!(request.uri.as_str(), "/login?next=/");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["password"], redactor.token(b"hunter2"));
        assert_eq!(body["user"], "ada");
    }

    #[test]
    fn a_compressed_body_with_secrets_is_stored_decoded() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(br#"{"password":"hunter2"}"#).unwrap();
        let gzipped = encoder.finish().unwrap();
        let redactor = Redactor::new(b"k".to_vec(), &["password".to_string()]);
        let request = redacted(
            recording(
                &[("content-encoding", "gzip"), ("content-length", "40")],
                &gzipped,
            ),
            &redactor,
            &mut BodyFormats {
                max_decoded_body: 1 << 20,
                ..BodyFormats::default()
            },
        );
        assert!(request.headers.is_empty(), "{:?}", request.headers);
        assert!(!String::from_utf8_lossy(&request.body).contains("hunter2"));
        assert!(String::from_utf8_lossy(&request.body).contains("redacted:"));
    }
}
