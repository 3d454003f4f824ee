//! HAR 1.2 (HTTP Archive), as browsers and proxies export it, read as a stream: each entry's request, with the
//! line it starts on for error messages.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, Read};
use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{MAX_RECORD_BYTES, Record, Sink, Skipped, TrafficRequest};
use crate::values::ByteSize;

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

/// Every entry's request, handed on as it is read; an entry that is not a usable request is skipped with the
/// line it starts on. The file is read as a stream: only the entry being read is held, and of it only its
/// `request` and `startedDateTime` (a response body, however large, is passed over). Input that is not a HAR
/// file, stops being JSON, or has one entry's request larger than [`MAX_RECORD_BYTES`] is an error that says
/// where; the entries before it were handed on.
pub fn read(reader: impl BufRead, sink: &mut Sink<'_>) -> Result<(), String> {
    read_bounded(reader, sink, MAX_RECORD_BYTES)
}

/// [`read`], with `max` the bound on one entry's request.
fn read_bounded(reader: impl BufRead, sink: &mut Sink<'_>, max: usize) -> Result<(), String> {
    let tracking = Rc::new(Tracking {
        bound: max as u64,
        ..Tracking::default()
    });
    let mut deserializer = serde_json::Deserializer::from_reader(Tracked {
        inner: reader,
        tracking: tracking.clone(),
    });
    let mut walk = Walk {
        sink,
        tracking: tracking.clone(),
        entries: 0,
        found_entries: false,
        stopped: false,
        oversized_entry: None,
    };
    let result = LevelSeed {
        walk: &mut walk,
        level: Level::Archive,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    if walk.stopped {
        return Ok(());
    }
    match result {
        Err(_) if let Some((entry, line)) = walk.oversized_entry => Err(format!(
            "entry {entry} (line {line}) has a request larger than {}; the rest of the file is not read",
            ByteSize(max as u64)
        )),
        Err(error) if walk.entries == 0 => Err(format!("not a HAR file: {error}")),
        Err(error) => Err(format!(
            "not JSON past entry {} ({error}); the rest of the file is not read",
            walk.entries
        )),
        Ok(()) if !walk.found_entries => Err("not a HAR file: it has no log.entries".to_string()),
        Ok(()) => Ok(()),
    }
}

/// The bytes the parser has taken, the lines they hold, and the bound on one kept value.
#[derive(Default)]
struct Tracking {
    position: Cell<u64>,
    newlines: Cell<u64>,
    /// The position past which reading fails, while a kept value (or key) is read.
    limit: Cell<Option<u64>>,
    /// How much one kept value may take.
    bound: u64,
}

impl Tracking {
    /// The line of the last byte taken (1-based).
    fn line(&self) -> usize {
        usize::try_from(self.newlines.get()).unwrap_or(usize::MAX) + 1
    }

    /// What is read from now on is kept: at most `bound` of it.
    fn keep_from_here(&self) {
        self.limit.set(Some(self.position.get() + self.bound));
    }

    /// What is read from now on is passed over, so not bounded.
    fn pass_over(&self) {
        self.limit.set(None);
    }
}

/// The input as the JSON parser reads it (a byte at a time, from a buffered reader), counted.
struct Tracked<R> {
    inner: R,
    tracking: Rc<Tracking>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let tracking = &self.tracking;
        if tracking
            .limit
            .get()
            .is_some_and(|limit| tracking.position.get() >= limit)
        {
            return Err(std::io::Error::other(OVERSIZED));
        }
        let read = self.inner.read(buf)?;
        tracking.position.set(tracking.position.get() + read as u64);
        let newlines = buf[..read].iter().filter(|byte| **byte == b'\n').count();
        tracking
            .newlines
            .set(tracking.newlines.get() + newlines as u64);
        Ok(read)
    }
}

const OVERSIZED: &str = "a HAR value larger than the bound on one record";
const STOPPED: &str = "reading stopped";

/// The walk over the archive: where entries go and what was seen.
struct Walk<'s, 'a> {
    sink: &'s mut Sink<'a>,
    tracking: Rc<Tracking>,
    entries: usize,
    found_entries: bool,
    stopped: bool,
    /// The entry (number, line) whose request ran over the bound.
    oversized_entry: Option<(usize, usize)>,
}

/// An object on the way down to the entries (`{"log": {"entries": [...]}}`): the key that leads on is
/// followed, other keys (pages, creator) passed over.
struct LevelSeed<'w, 's, 'a> {
    walk: &'w mut Walk<'s, 'a>,
    level: Level,
}

#[derive(Clone, Copy)]
enum Level {
    /// The archive, holding `log`.
    Archive,
    /// The log, holding `entries`.
    Log,
}

impl Level {
    /// The key that leads on, and what the object is called when it is not one.
    fn key_and_name(self) -> (&'static str, &'static str) {
        match self {
            Level::Archive => ("log", "a HAR archive (an object with `log`)"),
            Level::Log => ("entries", "a HAR log (an object with `entries`)"),
        }
    }
}

impl<'de> DeserializeSeed<'de> for LevelSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LevelSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.level.key_and_name().1)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.walk;
        let (leads_on, _) = self.level.key_and_name();
        while let Some(key) = next_key(&walk.tracking, &mut map)? {
            if key != leads_on {
                pass_over(&walk.tracking, &mut map)?;
                continue;
            }
            match self.level {
                Level::Archive => map.next_value_seed(LevelSeed {
                    walk: &mut *walk,
                    level: Level::Log,
                })?,
                Level::Log => {
                    walk.found_entries = true;
                    map.next_value_seed(EntriesSeed(&mut *walk))?;
                }
            }
        }
        Ok(())
    }
}

/// The entries, each handed on as soon as it is read.
struct EntriesSeed<'w, 's, 'a>(&'w mut Walk<'s, 'a>);

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of HAR entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.0;
        loop {
            let number = walk.entries + 1;
            let tracking = walk.tracking.clone();
            let parts = match seq.next_element_seed(EntrySeed(&tracking)) {
                Ok(Some(parts)) => parts,
                Ok(None) => return Ok(()),
                Err(error) => {
                    if error.to_string().contains(OVERSIZED) {
                        walk.oversized_entry = Some((number, tracking.line()));
                    }
                    return Err(error);
                }
            };
            walk.entries = number;
            let record = match parts.request() {
                Ok(request) => Record::Request(request),
                Err(reason) => Record::Skipped(Skipped {
                    line: parts.line,
                    reason: format!("entry {number}: {reason}"),
                }),
            };
            if (walk.sink)(record).is_break() {
                walk.stopped = true;
                return Err(de::Error::custom(STOPPED));
            }
        }
    }
}

/// A key, bounded like a kept value.
fn next_key<'de, A: MapAccess<'de>>(
    tracking: &Tracking,
    map: &mut A,
) -> Result<Option<String>, A::Error> {
    tracking.keep_from_here();
    let key = map.next_key::<String>();
    tracking.pass_over();
    key
}

/// A value not needed, read past without being held.
fn pass_over<'de, A: MapAccess<'de>>(tracking: &Tracking, map: &mut A) -> Result<(), A::Error> {
    tracking.pass_over();
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// What is kept of one entry, and the line it starts on.
struct EntryParts {
    line: usize,
    /// `None` when the entry is not an object at all.
    fields: Option<KeptFields>,
}

/// An entry's `startedDateTime` and `request`, as written.
struct KeptFields {
    started: Option<Box<RawValue>>,
    request: Option<Box<RawValue>>,
}

impl EntryParts {
    fn request(&self) -> Result<TrafficRequest, String> {
        match &self.fields {
            None => Err("not a HAR entry: not an object".to_string()),
            Some(KeptFields { request: None, .. }) => {
                Err("not a HAR entry: missing field `request`".to_string())
            }
            Some(KeptFields {
                started,
                request: Some(request),
            }) => entry(started.as_deref(), request),
        }
    }
}

/// One entry: its `startedDateTime` and `request` kept (bounded), the rest passed over.
struct EntrySeed<'t>(&'t Tracking);

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = EntryParts;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<EntryParts, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = EntryParts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a HAR entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryParts, A::Error> {
        // The parser has taken the entry's `{`: its line is the entry's.
        let line = self.0.line();
        let (mut started, mut request) = (None, None);
        while let Some(key) = next_key(self.0, &mut map)? {
            match key.as_str() {
                "startedDateTime" | "request" => {
                    self.0.keep_from_here();
                    let value = map.next_value::<Box<RawValue>>();
                    self.0.pass_over();
                    let slot = if key == "request" {
                        &mut request
                    } else {
                        &mut started
                    };
                    *slot = Some(value?);
                }
                _ => pass_over(self.0, &mut map)?,
            }
        }
        Ok(EntryParts {
            line,
            fields: Some(KeptFields { started, request }),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EntryParts, A::Error> {
        let line = self.0.line();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.not_an_object(line))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<EntryParts, E> {
        Ok(self.not_an_object(self.0.line()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<EntryParts, E> {
        Ok(self.not_an_object(self.0.line()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<EntryParts, E> {
        Ok(self.not_an_object(self.0.line()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<EntryParts, E> {
        Ok(self.not_an_object(self.0.line()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<EntryParts, E> {
        Ok(self.not_an_object(self.0.line()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<EntryParts, E> {
        Ok(self.not_an_object(self.0.line()))
    }
}

impl EntrySeed<'_> {
    fn not_an_object(&self, line: usize) -> EntryParts {
        EntryParts { line, fields: None }
    }
}

fn entry(started: Option<&RawValue>, request: &RawValue) -> Result<TrafficRequest, String> {
    let request: Request =
        serde_json::from_str(request.get()).map_err(|error| format!("not a HAR entry: {error}"))?;
    let started: Option<String> = match started {
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|error| format!("not a HAR entry: startedDateTime: {error}"))?,
        None => None,
    };
    let mut headers = Vec::new();
    for header in &request.headers {
        if let Some(pair) = super::header(&header.name, &header.value)? {
            headers.push(pair);
        }
    }
    let authority = super::recorded_authority(
        &request.url,
        request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
    );
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
    let time = match started.as_deref() {
        Some(started) => Some(
            parse_offset_time(started)
                .or_else(|()| humantime::parse_rfc3339_weak(started))
                .map_err(|_| format!("bad startedDateTime `{started}`"))?,
        ),
        None => None,
    };
    TrafficRequest::recorded(
        time,
        &request.method,
        &request.url,
        headers,
        body,
        authority,
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::ControlFlow;

    use crate::traffic::{Traffic, TrafficFormat};

    fn parse(bytes: &[u8]) -> Result<Traffic, String> {
        crate::traffic::collect(bytes, TrafficFormat::Har)
    }

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
        assert!(parse(b"\xff").unwrap_err().contains("not a HAR file"));
    }

    /// Records of `text` read with a bound of `max` on one request, and the error if the reading stopped.
    fn read_with(text: &str, max: usize) -> (Vec<Record>, Result<(), String>) {
        crate::traffic::records_of(|sink| read_bounded(text.as_bytes(), sink, max))
    }

    fn get(url: &str) -> String {
        format!(r#"{{"request":{{"method":"GET","url":"{url}","headers":[]}}}}"#)
    }

    #[test]
    fn a_response_larger_than_the_bound_is_passed_over_and_a_request_that_large_stops_the_reading()
    {
        let body = "x".repeat(10_000);
        let big_response = format!(
            r#"{{"response":{{"content":{{"text":"{body}"}}}},"request":{{"method":"GET","url":"/a"}},"cache":{{}}}}"#
        );
        let big_request = format!(
            r#"{{"request":{{"method":"POST","url":"/b","postData":{{"text":"{body}"}}}}}}"#
        );
        let text = format!(
            "{{\"log\":{{\"pages\":[{{\"title\":\"{body}\"}}],\"entries\":[\n{big_response},\n{},\n{big_request},\n{}]}}}}",
            get("/c"),
            get("/d")
        );
        let (records, result) = read_with(&text, 1_000);
        let paths: Vec<String> = records
            .iter()
            .map(|record| match record {
                Record::Request(request) => request.uri.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(paths, ["/a", "/c"]);
        let error = result.unwrap_err();
        assert!(
            error.contains("entry 3 (line 4)") && error.contains("larger than"),
            "{error}"
        );
    }

    #[test]
    fn a_file_cut_short_keeps_the_entries_before_the_cut() {
        let text = format!(
            r#"{{"log":{{"entries":[{},{},{{"request":{{"meth"#,
            get("/a"),
            get("/b")
        );
        let (records, result) = read_with(&text, 1 << 20);
        assert_eq!(records.len(), 2);
        let error = result.unwrap_err();
        assert!(error.contains("not JSON past entry 2"), "{error}");
    }

    #[test]
    fn entries_that_are_not_objects_are_skipped_and_hosts_recorded() {
        let text = format!(
            r#"{{"log":{{"entries":[5,"x",[1,[2]],null,{},{{"request":{{"method":"GET","url":"/p","headers":[{{"name":":authority","value":"api.example.com"}}]}}}}]}}}}"#,
            get("https://cdn.example.net/font.woff")
        );
        let (records, result) = read_with(&text, 1 << 20);
        result.unwrap();
        let mut skipped = 0;
        let mut hosts = Vec::new();
        for record in &records {
            match record {
                Record::Skipped(s) => {
                    assert!(s.reason.contains("not an object"), "{s}");
                    skipped += 1;
                }
                Record::Request(request) => {
                    hosts.push(request.authority.as_ref().unwrap().to_string())
                }
                Record::Ignored => panic!("nothing is ignored in a HAR"),
            }
        }
        assert_eq!(skipped, 4);
        assert_eq!(hosts, ["cdn.example.net", "api.example.com"]);
    }

    #[test]
    fn the_sink_stops_the_reading() {
        let text = format!(
            r#"{{"log":{{"entries":[{},{},{}]}}}}"#,
            get("/a"),
            get("/b"),
            get("/c")
        );
        let mut seen = 0;
        let result = read(text.as_bytes(), &mut |_| {
            seen += 1;
            ControlFlow::Break(())
        });
        assert_eq!((seen, result), (1, Ok(())));
    }
}
