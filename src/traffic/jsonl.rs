//! shadowdiff's traffic format: one JSON object per line with `time`, `method`, `uri`, `headers` (name and value
//! pairs) and `body_base64`.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use std::io::BufRead;

use super::sealed::{self, Opened};
use super::{LineRead, MAX_RECORD_BYTES, Record, Sink, Skipped, TrafficRequest};
use crate::seal::Opener;
use crate::values::ByteSize;

/// A line as written. Reading also takes headers as an object and a plain-text `body`, for hand-written files.
#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    method: String,
    uri: String,
    #[serde(default)]
    headers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    #[serde(default, skip_serializing)]
    body: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Headers {
    Pairs(Vec<(String, String)>),
    Object(serde_json::Map<String, serde_json::Value>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::Pairs(Vec::new())
    }
}

/// One line (without its newline) for a request.
pub fn line(request: &TrafficRequest) -> String {
    let line = Line {
        time: request
            .time
            .map(|time| humantime::format_rfc3339_millis(time).to_string()),
        method: request.method.to_string(),
        uri: request.uri.to_string(),
        headers: Headers::Pairs(
            request
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        ),
        body_base64: (!request.body.is_empty()).then(|| STANDARD.encode(&request.body)),
        body: None,
    };
    // A struct of strings always serializes.
    serde_json::to_string(&line).unwrap_or_default()
}

/// Every line of the input, handed on as it is read: blank lines pass, malformed or oversized ones are skipped
/// with their line number; sealed ones are opened with `opener`. A failing read, or a sealed line there is no
/// identity for, is an error.
pub fn read(
    reader: impl BufRead,
    sink: &mut Sink<'_>,
    opener: Option<&Opener>,
) -> Result<(), String> {
    read_bounded(reader, sink, MAX_RECORD_BYTES, opener)
}

/// [`read`], with lines longer than `max` skipped (sealed ones, longer by their base64, only when they can be
/// opened).
fn read_bounded(
    mut reader: impl BufRead,
    sink: &mut Sink<'_>,
    max: usize,
    opener: Option<&Opener>,
) -> Result<(), String> {
    let longest = if opener.is_some() {
        max.max(sealed::MAX_SEALED_LINE)
    } else {
        max
    };
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        number += 1;
        let record = match super::read_line(&mut reader, &mut buffer, longest)
            .map_err(|error| format!("cannot read line {number}: {error}"))?
        {
            LineRead::End => return Ok(()),
            LineRead::TooLong => Record::Skipped(Skipped {
                line: number,
                reason: format!("a line longer than {}", ByteSize(max as u64)),
            }),
            LineRead::Line { .. } => {
                let raw = buffer.strip_suffix(b"\r").unwrap_or(&buffer);
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed = match sealed::ciphertext(raw) {
                    Some(ciphertext) => match sealed::open(&ciphertext, opener)
                        .map_err(|reason| format!("line {number}: {reason}"))?
                    {
                        Opened::Line(plain) => request(&plain),
                        Opened::Skipped(reason) => Err(reason),
                    },
                    None if raw.len() > max => {
                        Err(format!("a line longer than {}", ByteSize(max as u64)))
                    }
                    None => request(raw),
                };
                match parsed {
                    Ok(request) => Record::Request(request),
                    Err(reason) => Record::Skipped(Skipped {
                        line: number,
                        reason,
                    }),
                }
            }
        };
        if sink(record).is_break() {
            return Ok(());
        }
    }
}

fn request(raw: &[u8]) -> Result<TrafficRequest, String> {
    let line: Line =
        serde_json::from_slice(raw).map_err(|error| format!("not a request record: {error}"))?;
    let time = match &line.time {
        Some(text) => Some(parse_time(text)?),
        None => None,
    };
    let authority = super::recorded_authority(&line.uri, header_texts(&line.headers));
    let mut headers = Vec::new();
    let mut add = |name: &str, value: &str| -> Result<(), String> {
        if let Some(pair) = super::header(name, value)? {
            headers.push(pair);
        }
        Ok(())
    };
    match &line.headers {
        Headers::Pairs(pairs) => {
            for (name, value) in pairs {
                add(name, value)?;
            }
        }
        Headers::Object(map) => {
            for (name, value) in map {
                match value {
                    serde_json::Value::String(text) => add(name, text)?,
                    serde_json::Value::Array(items) => {
                        for item in items {
                            let text = item.as_str().ok_or_else(|| {
                                format!("header `{name}` has a value that is not a string")
                            })?;
                            add(name, text)?;
                        }
                    }
                    _ => return Err(format!("header `{name}` has a value that is not a string")),
                }
            }
        }
    }
    let body = match (&line.body_base64, &line.body) {
        (Some(encoded), _) => STANDARD
            .decode(encoded.trim())
            .map(Bytes::from)
            .map_err(|error| format!("body_base64 is not base64: {error}"))?,
        (None, Some(text)) => Bytes::from(text.clone()),
        (None, None) => Bytes::new(),
    };
    TrafficRequest::recorded(time, &line.method, &line.uri, headers, body, authority)
}

/// The headers' names and text values, as recorded (repeats kept).
fn header_texts(headers: &Headers) -> impl Iterator<Item = (&str, &str)> {
    let (pairs, object) = match headers {
        Headers::Pairs(pairs) => (Some(pairs), None),
        Headers::Object(map) => (None, Some(map)),
    };
    let pairs = pairs
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let object = object.into_iter().flatten().flat_map(|(name, value)| {
        let values: Vec<&str> = match value {
            serde_json::Value::String(text) => vec![text.as_str()],
            serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        values.into_iter().map(move |value| (name.as_str(), value))
    });
    pairs.chain(object)
}

/// RFC 3339 (`2026-11-23T10:15:00.123Z`), or milliseconds since the epoch.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(millis) = text.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis));
    }
    humantime::parse_rfc3339_weak(text).map_err(|error| format!("bad time `{text}`: {error}"))
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue, Method};

    use super::*;
    use crate::traffic::{Traffic, TrafficFormat};

    fn parse(bytes: &[u8]) -> Traffic {
        crate::traffic::collect(bytes, TrafficFormat::Jsonl).unwrap()
    }

    fn sample() -> TrafficRequest {
        TrafficRequest {
            time: Some(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            ),
            method: Method::POST,
            uri: "/orders?x=1".parse().unwrap(),
            headers: vec![
                (
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static("x-tag"),
                    HeaderValue::from_static("a"),
                ),
                (
                    HeaderName::from_static("x-tag"),
                    HeaderValue::from_static("b"),
                ),
            ],
            body: Bytes::from_static(b"{\"item\":\"\xff\"}"),
            authority: None,
        }
    }

    #[test]
    fn a_written_line_reads_back_the_same() {
        let request = sample();
        let text = line(&request);
        assert!(
            text.contains("\"time\":\"2023-11-14T22:13:20.123Z\""),
            "{text}"
        );
        let traffic = parse(format!("{text}\n\n{text}\r\n").as_bytes());
        assert!(traffic.skipped.is_empty(), "{:?}", traffic.skipped);
        assert_eq!(traffic.requests, vec![request.clone(), request]);
    }

    #[test]
    fn hand_written_lines_may_use_an_object_and_a_text_body() {
        let traffic = parse(
            br#"{"method":"PUT","uri":"https://api.example.com/a","headers":{"accept":"*/*","x-many":["1","2"]},"body":"hello"}"#,
        );
        let request = &traffic.requests[0];
        assert_eq!(request.uri.as_str(), "/a");
        assert_eq!(request.headers.len(), 3);
        assert_eq!(request.body, Bytes::from_static(b"hello"));
        assert_eq!(request.time, None);
    }

    #[test]
    fn malformed_lines_are_skipped_with_their_number() {
        let good = line(&sample());
        let text = format!(
            "{good}\nnot json\n{{\"method\":\"GET\"}}\n{{\"method\":\"G ET\",\"uri\":\"/\"}}\n{{\"method\":\"GET\",\"uri\":\"/\",\"body_base64\":\"***\"}}\n{good}\n"
        );
        let traffic = parse(text.as_bytes());
        assert_eq!(traffic.requests.len(), 2);
        let lines: Vec<usize> = traffic.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(
            traffic.skipped[1].reason.contains("uri"),
            "{:?}",
            traffic.skipped[1]
        );
        assert!(traffic.skipped[2].reason.contains("bad method"));
        assert!(traffic.skipped[3].reason.contains("base64"));
    }

    #[test]
    fn a_line_longer_than_the_bound_is_skipped_and_the_next_one_read() {
        let long = format!(
            r#"{{"method":"GET","uri":"/long","body":"{}"}}"#,
            "x".repeat(5_000)
        );
        let text = format!("{}\n{long}\n{}", line(&sample()), line(&sample()));
        let (records, result) =
            crate::traffic::records_of(|sink| read_bounded(text.as_bytes(), sink, 1_000, None));
        result.unwrap();
        assert_eq!(records.len(), 3);
        assert!(
            matches!(&records[1], Record::Skipped(s) if s.line == 2 && s.reason.contains("longer than")),
            "{:?}",
            records[1]
        );
        assert!(matches!(&records[2], Record::Request(_)));
    }

    #[test]
    fn the_host_comes_from_an_absolute_uri_or_the_host_header() {
        let traffic = parse(
            br#"{"method":"GET","uri":"https://api.example.com/a","headers":[["host","other"]]}
{"method":"GET","uri":"/b","headers":{"Host":"shop.example.com:8080"}}
{"method":"GET","uri":"/c"}"#,
        );
        let hosts: Vec<Option<String>> = traffic
            .requests
            .iter()
            .map(|r| r.authority.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(
            hosts,
            [
                Some("api.example.com".to_string()),
                Some("shop.example.com:8080".to_string()),
                None
            ]
        );
    }
}
