//! HAR 1.2 (HTTP Archive), as browsers and proxies export it: each entry's request, with the line it starts on
//! for error messages.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Skipped, Traffic, TrafficRequest};

#[derive(Deserialize)]
struct Archive<'a> {
    #[serde(borrow)]
    log: Log<'a>,
}

#[derive(Deserialize)]
struct Log<'a> {
    #[serde(borrow)]
    entries: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "startedDateTime", default)]
    started: Option<String>,
    request: Request,
}

#[derive(Deserialize)]
struct Request {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<NameValue>,
    #[serde(rename = "postData", default)]
    post_data: Option<PostData>,
}

#[derive(Deserialize)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize)]
struct PostData {
    #[serde(default)]
    text: Option<String>,
    /// Not in HAR 1.2, but written by some exporters for binary bodies.
    #[serde(default)]
    encoding: Option<String>,
}

/// Every entry's request; an entry that is not a usable request is skipped with the line it starts on. A file
/// that is not a HAR at all is an error.
pub fn parse(bytes: &[u8]) -> Result<Traffic, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|error| format!("not a HAR file: not UTF-8 ({error})"))?;
    let archive: Archive<'_> =
        serde_json::from_str(text).map_err(|error| format!("not a HAR file: {error}"))?;
    let mut traffic = Traffic::default();
    let mut lines = LineCounter::new(text);
    for (index, raw) in archive.log.entries.iter().enumerate() {
        let line = lines.line_at(raw.get().as_ptr() as usize - text.as_ptr() as usize);
        match entry(raw.get()) {
            Ok(request) => traffic.requests.push(request),
            Err(reason) => traffic.skipped.push(Skipped {
                line,
                reason: format!("entry {}: {reason}", index + 1),
            }),
        }
    }
    Ok(traffic)
}

fn entry(raw: &str) -> Result<TrafficRequest, String> {
    let entry: Entry =
        serde_json::from_str(raw).map_err(|error| format!("not a HAR entry: {error}"))?;
    let request = entry.request;
    let mut headers = Vec::new();
    for header in &request.headers {
        if let Some(pair) = super::header(&header.name, &header.value)? {
            headers.push(pair);
        }
    }
    let body = match request.post_data {
        Some(PostData {
            text: Some(text),
            encoding,
        }) => match encoding.as_deref() {
            Some("base64") => STANDARD
                .decode(text.trim())
                .map(Bytes::from)
                .map_err(|error| format!("postData.text is not base64: {error}"))?,
            _ => Bytes::from(text),
        },
        _ => Bytes::new(),
    };
    let time = match entry.started.as_deref() {
        Some(started) => Some(
            parse_offset_time(started)
                .or_else(|()| humantime::parse_rfc3339_weak(started))
                .map_err(|_| format!("bad startedDateTime `{started}`"))?,
        ),
        None => None,
    };
    Ok(TrafficRequest {
        time,
        method: super::method(&request.method)?,
        uri: super::origin_form(&request.url)?,
        headers,
        body,
    })
}

/// Browsers write local times with an offset (`2026-11-23T10:15:00.123+01:00`), which humantime does not
/// apply: shift to UTC by hand.
fn parse_offset_time(text: &str) -> Result<std::time::SystemTime, ()> {
    let (local, sign, offset) = match text.rfind(['+', '-']) {
        Some(at) if at > 10 => (&text[..at], &text[at..at + 1], &text[at + 1..]),
        _ => return Err(()),
    };
    let (hours, minutes) = offset.split_once(':').ok_or(())?;
    let hours: u64 = hours.parse().map_err(|_| ())?;
    let minutes: u64 = minutes.parse().map_err(|_| ())?;
    // RFC 3339 offsets are at most 23:59; anything larger is not a time (and could overflow the clock).
    if hours > 23 || minutes > 59 {
        return Err(());
    }
    let shift = std::time::Duration::from_secs(hours * 3600 + minutes * 60);
    let local = humantime::parse_rfc3339_weak(local).map_err(|_| ())?;
    if sign == "+" {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
    .ok_or(())
}

/// Line numbers of byte offsets, asked in increasing order.
struct LineCounter<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            offset: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, offset: usize) -> usize {
        if offset >= self.offset {
            self.line += self.text.as_bytes()[self.offset..offset]
                .iter()
                .filter(|byte| **byte == b'\n')
                .count();
            self.offset = offset;
        }
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_out_of_range_is_a_skipped_entry_not_a_panic() {
        let har = r#"{"log":{"entries":[
          {"startedDateTime":"2026-11-23T10:15:00.123+3000000000000000:00",
           "request":{"method":"GET","url":"https://x.example/a","headers":[]}},
          {"startedDateTime":"2026-11-23T10:15:00.123+01:00",
           "request":{"method":"GET","url":"https://x.example/b","headers":[]}}
        ]}}"#;
        let traffic = parse(har.as_bytes()).unwrap();
        assert_eq!(traffic.requests.len(), 1);
        assert_eq!(traffic.skipped.len(), 1);
        assert!(
            traffic.skipped[0].to_string().contains("startedDateTime"),
            "{}",
            traffic.skipped[0]
        );
        assert!(parse_offset_time("2026-11-23T10:15:00+24:00").is_err());
        assert!(parse_offset_time("2026-11-23T10:15:00-00:60").is_err());
    }

    const HAR: &str = r#"{
  "log": {
    "version": "1.2",
    "creator": {"name": "WebInspector", "version": "537.36"},
    "entries": [
      {
        "startedDateTime": "2026-11-23T10:15:00.123+01:00",
        "request": {
          "method": "GET",
          "url": "https://shop.example.com/products/7?view=full",
          "httpVersion": "http/2.0",
          "headers": [
            {"name": ":authority", "value": "shop.example.com"},
            {"name": "accept", "value": "application/json"}
          ],
          "queryString": [{"name": "view", "value": "full"}],
          "cookies": [],
          "headersSize": -1,
          "bodySize": 0
        },
        "response": {"status": 200}
      },
      {
        "startedDateTime": "2026-11-23T09:15:01.000Z",
        "request": {"method": "POST", "url": "https://shop.example.com/cart",
          "headers": [{"name": "Content-Type", "value": "application/json"}],
          "postData": {"mimeType": "application/json", "text": "{\"sku\":7}"}}
      },
      {
        "request": {"method": "GET"}
      },
      {
        "request": {"method": "PUT", "url": "/raw", "postData": {"text": "AAEC", "encoding": "base64"}}
      }
    ]
  }
}"#;

    #[test]
    fn entries_become_requests_and_bad_ones_name_their_line() {
        let traffic = parse(HAR.as_bytes()).unwrap();
        assert_eq!(traffic.requests.len(), 3);
        let first = &traffic.requests[0];
        assert_eq!(first.uri.as_str(), "/products/7?view=full");
        assert_eq!(first.headers.len(), 1, "the pseudo-header is left out");
        assert_eq!(
            first.time,
            traffic.requests[1]
                .time
                .map(|t| t - std::time::Duration::from_millis(877))
        );
        assert_eq!(traffic.requests[1].body, Bytes::from_static(b"{\"sku\":7}"));
        assert_eq!(traffic.requests[2].body, Bytes::from_static(&[0, 1, 2]));
        assert_eq!(traffic.skipped.len(), 1);
        let skipped = &traffic.skipped[0];
        assert_eq!(skipped.line, 29, "{skipped:?}");
        assert!(
            skipped.reason.starts_with("entry 3:") && skipped.reason.contains("url"),
            "{skipped:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_har_is_an_error() {
        assert!(
            parse(b"{\"log\": {}}")
                .unwrap_err()
                .contains("not a HAR file")
        );
        assert!(parse(b"\xff").unwrap_err().contains("UTF-8"));
    }
}
