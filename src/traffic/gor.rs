//! GoReplay's file format: records separated by a `🐵🙈🙉` line, each a meta line (`1 <id> <nanoseconds>` for a
//! request) and the raw HTTP message; only request records are used.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use std::io::BufRead;

use super::{LineRead, MAX_RECORD_BYTES, Record, Sink, Skipped, TrafficRequest};
use crate::values::ByteSize;

/// The line between records.
const SEPARATOR: &[u8] = "🐵🙈🙉".as_bytes();
const MAX_HEADERS: usize = 256;

/// Every request record, handed on as it is read; responses are handed on as ignored, malformed or oversized
/// records as skipped with the line they start on. Only a failing read is an error.
pub fn read(reader: impl BufRead, sink: &mut Sink<'_>) -> Result<(), String> {
    read_bounded(reader, sink, MAX_RECORD_BYTES)
}

/// [`read`], with records larger than `max` skipped.
fn read_bounded(mut reader: impl BufRead, sink: &mut Sink<'_>, max: usize) -> Result<(), String> {
    let mut record = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    let mut start = 1;
    let mut oversized = false;
    loop {
        number += 1;
        let room = max.saturating_sub(record.len());
        let read = super::read_line(&mut reader, &mut line, room)
            .map_err(|error| format!("cannot read line {number}: {error}"))?;
        let ended = read == LineRead::End;
        let separator = matches!(read, LineRead::Line { .. }) && line.as_slice() == SEPARATOR;
        if !ended && !separator {
            match read {
                LineRead::Line { newline } if !oversized => {
                    record.extend_from_slice(&line);
                    if newline {
                        record.push(b'\n');
                    }
                }
                _ => {
                    oversized = true;
                    record.clear();
                }
            }
            continue;
        }
        // The separator's line break belongs to it, not to the record before it.
        if separator && record.last() == Some(&b'\n') {
            record.pop();
        }
        let handed = if oversized {
            Some(Record::Skipped(Skipped {
                line: start,
                reason: format!("a record larger than {}", ByteSize(max as u64)),
            }))
        } else if record.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(match request(&record) {
                Ok(Some(request)) => Record::Request(request),
                Ok(None) => Record::Ignored,
                Err(reason) => Record::Skipped(Skipped {
                    line: start,
                    reason,
                }),
            })
        };
        if let Some(handed) = handed
            && sink(handed).is_break()
        {
            return Ok(());
        }
        if ended {
            return Ok(());
        }
        record.clear();
        oversized = false;
        start = number + 1;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `None` for records that are not requests (responses, replayed responses).
fn request(record: &[u8]) -> Result<Option<TrafficRequest>, String> {
    let meta_end = record
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or("a record without a meta line")?;
    let meta = std::str::from_utf8(&record[..meta_end]).map_err(|_| "the meta line is not text")?;
    let mut fields = meta.split_ascii_whitespace();
    match fields.next() {
        Some("1") => {}
        Some("2" | "3") => return Ok(None),
        _ => {
            return Err(format!(
                "`{}` is not a GoReplay meta line (`1 <id> <timestamp>`)",
                meta.chars().take(60).collect::<String>()
            ));
        }
    }
    let time = fields
        .nth(1)
        .and_then(|nanos| nanos.parse::<u64>().ok())
        .map(|nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos));
    let message = &record[meta_end + 1..];
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let head_len = match parsed.parse(message) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("the request head is incomplete".into()),
        Err(error) => return Err(format!("not an HTTP request: {error}")),
    };
    let method = super::method(parsed.method.unwrap_or_default())?;
    let uri = super::origin_form(parsed.path.unwrap_or_default())?;
    let authority = super::recorded_authority(
        "/",
        parsed
            .headers
            .iter()
            .filter_map(|h| Some((h.name, std::str::from_utf8(h.value).ok()?))),
    );
    let mut headers = Vec::new();
    let mut chunked = false;
    let mut length = None;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| format!("header `{}` is not text", header.name))?;
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= value.to_ascii_lowercase().contains("chunked");
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length `{value}`"))?,
            );
        }
        if let Some(pair) = super::header(header.name, value)? {
            headers.push(pair);
        }
    }
    let rest = &message[head_len..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(length) if rest.len() < length => {
                return Err(format!(
                    "the body has {} of its {length} bytes (truncated capture)",
                    rest.len()
                ));
            }
            Some(length) => rest[..length].to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Some(TrafficRequest {
        time,
        method,
        uri,
        headers,
        body: Bytes::from(body),
        authority,
    }))
}

/// The data of a chunked body.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or("a chunk size line without its end")?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| "a chunk size that is not text")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size {
            return Err("a chunk longer than the capture (truncated)".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest[size..]
            .strip_prefix(b"\r\n")
            .ok_or("a chunk without its line end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Traffic, TrafficFormat};

    fn parse(bytes: &[u8]) -> Traffic {
        crate::traffic::collect(bytes, TrafficFormat::Gor).unwrap()
    }

    fn file(records: &[&str]) -> Vec<u8> {
        let mut out = String::new();
        for record in records {
            out.push_str(record);
            out.push_str("\n🐵🙈🙉\n");
        }
        out.into_bytes()
    }

    #[test]
    fn requests_are_read_and_responses_ignored() {
        let bytes = file(&[
            "1 a1b2 1700000000123456789 0\nGET /users/1?x=2 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n",
            "2 a1b2 1700000000223456789 1000\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            "1 c3d4 1700000001000000000 0\nPOST /orders HTTP/1.1\r\nHost: api\r\nContent-Length: 9\r\n\r\n{\"n\":1}\n\n",
            "1 e5f6 1700000002000000000 0\nPUT /chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n",
        ]);
        let traffic = parse(&bytes);
        assert!(traffic.skipped.is_empty(), "{:?}", traffic.skipped);
        assert_eq!(traffic.ignored, 1);
        assert_eq!(traffic.requests.len(), 3);
        let get = &traffic.requests[0];
        assert_eq!(get.uri.as_str(), "/users/1?x=2");
        assert_eq!(get.headers.len(), 2);
        assert_eq!(
            get.time,
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789))
        );
        assert_eq!(
            traffic.requests[1].body,
            Bytes::from_static(b"{\"n\":1}\n\n")
        );
        assert_eq!(traffic.requests[2].body, Bytes::from_static(b"Wikipedia"));
    }

    #[test]
    fn malformed_records_are_skipped_with_the_line_they_start_on() {
        let bytes = file(&[
            "1 a 1 0\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n",
            "garbage without meta",
            "1 b 1 0\nNOT HTTP AT ALL\r\n\r\n",
            "1 c 1 0\nPOST /short HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
            "1 d 1 0\nGET /fine HTTP/1.1\r\n\r\n",
        ]);
        let traffic = parse(&bytes);
        assert_eq!(traffic.requests.len(), 2);
        let lines: Vec<usize> = traffic.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![7, 9, 14], "{:?}", traffic.skipped);
        assert!(traffic.skipped[2].reason.contains("truncated"));
    }

    #[test]
    fn a_record_larger_than_the_bound_is_skipped_and_the_next_one_read() {
        let big = format!("1 b 1 0\nPOST /big HTTP/1.1\r\n\r\n{}", "x\n".repeat(600));
        let bytes = file(&[
            "1 a 1 0\nGET /before HTTP/1.1\r\n\r\n",
            &big,
            "1 c 1 0\nGET /after HTTP/1.1\r\n\r\n",
        ]);
        let (records, result) =
            crate::traffic::records_of(|sink| read_bounded(&bytes[..], sink, 1_000));
        result.unwrap();
        assert_eq!(records.len(), 3);
        assert!(matches!(&records[0], Record::Request(r) if r.uri == "/before"));
        assert!(
            matches!(&records[1], Record::Skipped(s) if s.line == 6 && s.reason.contains("larger than")),
            "{:?}",
            records[1]
        );
        assert!(matches!(&records[2], Record::Request(r) if r.uri == "/after"));
    }
}
