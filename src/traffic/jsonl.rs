//! shadowdiff's traffic format: one JSON object per line with `time`, `method`, `uri`, `headers` (name and value
//! pairs) and `body_base64`.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Skipped, Traffic, TrafficRequest};

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

/// Every line of a file: blank lines pass, malformed ones are skipped with their line number.
pub fn parse(bytes: &[u8]) -> Traffic {
    let mut traffic = Traffic::default();
    for (index, raw) in bytes.split(|byte| *byte == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match request(raw) {
            Ok(request) => traffic.requests.push(request),
            Err(reason) => traffic.skipped.push(Skipped {
                line: index + 1,
                reason,
            }),
        }
    }
    traffic
}

fn request(raw: &[u8]) -> Result<TrafficRequest, String> {
    let line: Line =
        serde_json::from_slice(raw).map_err(|error| format!("not a request record: {error}"))?;
    let time = match &line.time {
        Some(text) => Some(parse_time(text)?),
        None => None,
    };
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
    Ok(TrafficRequest {
        time,
        method: super::method(&line.method)?,
        uri: super::origin_form(&line.uri)?,
        headers,
        body,
    })
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
}
