//! Response bodies made comparable: decoded from their Content-Encoding (gzip, deflate, br) under a size cap,
//! and classified as JSON, HTML, text or binary.

use std::borrow::Cow;
use std::io::Read;

use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

use crate::analysis::BodySkip;

/// What a body holds, for choosing how to compare it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ContentKind {
    Empty,
    Json,
    /// `application/xml`, `text/xml` and `*+xml` (SOAP's included): compared as a tree of elements.
    Xml,
    /// `text/csv`: compared as rows of named columns.
    Csv,
    /// `application/x-ndjson`, `application/jsonl`, `application/json-seq`: compared as an array of values.
    Ndjson,
    Html,
    Text,
    Binary,
}

impl ContentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Empty => "empty",
            ContentKind::Json => "json",
            ContentKind::Xml => "xml",
            ContentKind::Csv => "csv",
            ContentKind::Ndjson => "ndjson",
            ContentKind::Html => "html",
            ContentKind::Text => "text",
            ContentKind::Binary => "binary",
        }
    }
}

/// Why a body could not be decoded; the body is then not compared, and the reason counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("decoded body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported content-encoding `{0}`")]
    Unsupported(String),
    #[error("corrupt {encoding} body: {detail}")]
    Corrupt {
        encoding: &'static str,
        detail: String,
    },
    /// The memory decoding needed was refused (the memory budget).
    #[error("decoding needs more memory than the budget has")]
    OverBudget,
}

impl DecodeError {
    /// Why the body is not compared.
    pub fn reason(&self) -> BodySkip {
        match self {
            DecodeError::TooLarge { .. } => BodySkip::DecodedTooLarge,
            DecodeError::Unsupported(_) => BodySkip::UnsupportedEncoding,
            DecodeError::Corrupt { .. } => BodySkip::CorruptEncoding,
            DecodeError::OverBudget => BodySkip::MemoryBudget,
        }
    }
}

/// The body with every Content-Encoding undone (last applied, first undone), at most `limit` bytes.
pub fn decode<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    decode_within(headers, body, limit, &mut |_| true)
}

/// Like [`decode`], asking `room` for every buffer it grows by (in bytes) before allocating it; when `room`
/// says no, decoding stops with [`DecodeError::OverBudget`]. The body itself is never copied: a body without
/// encoding comes back borrowed.
pub fn decode_within<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    // No body at all (HEAD, 204, 304) is no body under any encoding.
    if body.is_empty() {
        return Ok(Cow::Borrowed(body));
    }
    let encodings = encodings(headers);
    let mut current: Cow<'a, [u8]> = Cow::Borrowed(body);
    for coding in encodings.iter().rev() {
        let input = &current[..];
        let decoded = match coding.as_str() {
            "gzip" | "x-gzip" => read_within(
                "gzip",
                flate2::read::MultiGzDecoder::new(input),
                limit,
                room,
            )?,
            "deflate" => match read_within(
                "deflate",
                flate2::read::ZlibDecoder::new(input),
                limit,
                room,
            ) {
                // Some servers send raw deflate under this name, without the zlib wrapper.
                Err(DecodeError::Corrupt { .. }) => read_within(
                    "deflate",
                    flate2::read::DeflateDecoder::new(input),
                    limit,
                    room,
                )?,
                other => other?,
            },
            "br" => read_within("br", brotli::Decompressor::new(input, 4096), limit, room)?,
            other => return Err(DecodeError::Unsupported(other.to_string())),
        };
        current = Cow::Owned(decoded);
    }
    Ok(current)
}

/// The first `limit` bytes of the body with every Content-Encoding undone, and whether that is all of it: for
/// showing a body, where its beginning will do. Costs at most `limit` bytes per encoding, whatever the body
/// decodes to.
pub fn decode_prefix<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limit: usize,
) -> Result<(Cow<'a, [u8]>, bool), DecodeError> {
    let encodings = encodings(headers);
    let mut current: Cow<'a, [u8]> = Cow::Borrowed(body);
    let mut complete = true;
    if encodings.is_empty() || body.is_empty() {
        complete = body.len() <= limit;
        return Ok((Cow::Borrowed(&body[..body.len().min(limit)]), complete));
    }
    for coding in encodings.iter().rev() {
        let input = &current[..];
        let mut reader: Box<dyn Read + '_> = match coding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
            // Some servers send raw deflate under this name, without the zlib wrapper (its first byte says).
            "deflate" if input.first().is_some_and(|b| b & 0x0f == 8) => {
                Box::new(flate2::read::ZlibDecoder::new(input))
            }
            "deflate" => Box::new(flate2::read::DeflateDecoder::new(input)),
            "br" => Box::new(brotli::Decompressor::new(input, 4096)),
            other => return Err(DecodeError::Unsupported(other.to_string())),
        };
        let mut out = Vec::new();
        let read = (&mut reader).take(limit as u64 + 1).read_to_end(&mut out);
        drop(reader);
        match read {
            // A stream cut short by an earlier stage ends early: what came out is still its beginning.
            Err(_) if !complete => {}
            Err(error) => {
                return Err(DecodeError::Corrupt {
                    encoding: "body",
                    detail: error.to_string(),
                });
            }
            Ok(_) => {}
        }
        if out.len() > limit {
            out.truncate(limit);
            complete = false;
        }
        current = Cow::Owned(out);
    }
    Ok((current, complete))
}

/// The encodings a body carries, in the order they were applied (`identity` left out).
fn encodings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty() && coding != "identity")
        .collect()
}

/// Reads a decoder to its end, stopping one byte past the limit (a decompression bomb costs at most `limit`),
/// asking `room` before each growth of its buffer.
fn read_within(
    encoding: &'static str,
    mut reader: impl Read,
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u8>, DecodeError> {
    /// The first buffer; each next one doubles it.
    const FIRST: usize = 16 << 10;
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() == out.capacity() {
            let grow = out.capacity().max(FIRST).min(limit + 1 - out.len());
            if !room(grow) {
                return Err(DecodeError::OverBudget);
            }
            out.reserve_exact(grow);
        }
        let start = out.len();
        out.resize(out.capacity(), 0);
        let read = match reader.read(&mut out[start..]) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {
                out.truncate(start);
                continue;
            }
            Err(error) => {
                return Err(DecodeError::Corrupt {
                    encoding,
                    detail: error.to_string(),
                });
            }
        };
        out.truncate(start + read);
        if out.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if read == 0 {
            return Ok(out);
        }
    }
}

/// The media type of a Content-Type value: `application/json` for `application/json; charset=utf-8`.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The kind of a decoded body: from its Content-Type, and by sniffing when the type is missing or generic.
pub fn content_kind(headers: &HeaderMap, body: &[u8]) -> ContentKind {
    if body.is_empty() {
        return ContentKind::Empty;
    }
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(media_type)
        .unwrap_or_default();
    if media_type == "application/json"
        || media_type.ends_with("+json")
        || media_type == "text/json"
    {
        return ContentKind::Json;
    }
    if media_type == "text/html" || media_type == "application/xhtml+xml" {
        return ContentKind::Html;
    }
    if let Some(kind) = structured_kind(&media_type) {
        return kind;
    }
    if media_type.starts_with("image/")
        || media_type.starts_with("audio/")
        || media_type.starts_with("video/")
    {
        return ContentKind::Binary;
    }
    sniff(body, &media_type)
}

/// The structured kind other than JSON a media type (as [`media_type`] gives it) names: XML (SOAP's and other
/// `+xml` types included), CSV, or NDJSON (JSON Lines and JSON text sequences too).
pub fn structured_kind(media_type: &str) -> Option<ContentKind> {
    match media_type {
        "application/xml" | "text/xml" => Some(ContentKind::Xml),
        xml if xml.ends_with("+xml") && xml != "application/xhtml+xml" => Some(ContentKind::Xml),
        "text/csv" => Some(ContentKind::Csv),
        "application/x-ndjson"
        | "application/jsonl"
        | "application/json-seq"
        | "application/x-jsonlines" => Some(ContentKind::Ndjson),
        _ => None,
    }
}

/// Undeclared, generic or textual types: JSON if it looks like JSON, text if it is UTF-8, binary otherwise.
fn sniff(body: &[u8], media_type: &str) -> ContentKind {
    let Ok(text) = std::str::from_utf8(body) else {
        return ContentKind::Binary;
    };
    if text.contains('\0') {
        return ContentKind::Binary;
    }
    let start = text.trim_start();
    if matches!(start.bytes().next(), Some(b'{' | b'[')) {
        return ContentKind::Json;
    }
    let doctype = start
        .get(..14)
        .is_some_and(|head| head.eq_ignore_ascii_case("<!doctype html"));
    if media_type.is_empty() && doctype {
        return ContentKind::Html;
    }
    ContentKind::Text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;
    use std::io::Write;

    /// A header map of these names and values, in order (a name may repeat).
    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_deflate_and_brotli_are_undone() {
        let json = br#"{"a":1}"#;
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(json).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(json).unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(json)
            .unwrap();
        for (encoding, body) in [
            ("gzip", gzip(json)),
            ("deflate", zlib.finish().unwrap()),
            ("deflate", raw.finish().unwrap()),
            ("br", br),
        ] {
            assert_eq!(
                &*decode(&headers(&[("content-encoding", encoding)]), &body, 1024).unwrap(),
                json,
                "{encoding}"
            );
        }
    }

    #[test]
    fn stacked_encodings_are_undone_in_reverse_order() {
        let json = br#"{"stacked":true}"#;
        let twice = gzip(&gzip(json));
        assert_eq!(
            &*decode(
                &headers(&[("content-encoding", "gzip, gzip")]),
                &twice,
                1024
            )
            .unwrap(),
            json
        );
        assert_eq!(
            &*decode(&headers(&[("content-encoding", "identity")]), json, 1024).unwrap(),
            json
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
        let error = decode(&headers(&[("content-encoding", "gzip")]), &bomb, 1 << 20).unwrap_err();
        assert_eq!(error, DecodeError::TooLarge { limit: 1 << 20 });
        assert_eq!(error.reason().as_str(), "decoded_too_large");
    }

    #[test]
    fn a_prefix_of_a_large_body_costs_only_the_prefix() {
        let large = vec![b'x'; 1 << 20];
        let packed = gzip(&large);
        let (prefix, complete) =
            decode_prefix(&headers(&[("content-encoding", "gzip")]), &packed, 1000).unwrap();
        assert_eq!(prefix.len(), 1000);
        assert!(!complete);
        let small = gzip(b"small");
        let (whole, complete) =
            decode_prefix(&headers(&[("content-encoding", "gzip")]), &small, 1000).unwrap();
        assert_eq!(&whole[..], b"small");
        assert!(complete);
        let (plain, complete) = decode_prefix(&HeaderMap::new(), b"abcdef", 3).unwrap();
        assert_eq!((&plain[..], complete), (&b"abc"[..], false));
        // Two encodings, the inner one cut short: the outer one still gives its beginning.
        let twice = gzip(&gzip(&large));
        let (prefix, complete) =
            decode_prefix(&headers(&[("content-encoding", "gzip, gzip")]), &twice, 100).unwrap();
        assert!(!complete);
        assert!(prefix.iter().all(|b| *b == b'x'), "{prefix:?}");
        assert!(
            decode_prefix(&headers(&[("content-encoding", "gzip")]), b"not gzip", 100).is_err()
        );
    }

    #[test]
    fn an_empty_body_needs_no_decoding() {
        for encoding in ["gzip", "deflate", "br", "zstd"] {
            let header = headers(&[("content-encoding", encoding)]);
            assert_eq!(&*decode(&header, b"", 1024).unwrap(), b"", "{encoding}");
        }
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_errors() {
        let error =
            decode(&headers(&[("content-encoding", "gzip")]), b"not gzip", 1024).unwrap_err();
        assert_eq!(error.reason().as_str(), "corrupt_encoding");
        let error = decode(&headers(&[("content-encoding", "zstd")]), b"x", 1024).unwrap_err();
        assert_eq!(error, DecodeError::Unsupported("zstd".into()));
    }

    #[test]
    fn kinds_from_the_header_or_by_sniffing() {
        assert_eq!(
            content_kind(&headers(&[("content-type", "application/json")]), b"{}"),
            ContentKind::Json
        );
        assert_eq!(
            content_kind(
                &headers(&[("content-type", "application/problem+json")]),
                b"{}"
            ),
            ContentKind::Json
        );
        assert_eq!(
            content_kind(
                &headers(&[("content-type", "text/html; charset=utf-8")]),
                b"<p>"
            ),
            ContentKind::Html
        );
        assert_eq!(
            content_kind(&headers(&[("content-type", "text/plain")]), br#"{"a":1}"#),
            ContentKind::Json
        );
        assert_eq!(
            content_kind(&HeaderMap::new(), b"  [1,2]"),
            ContentKind::Json
        );
        assert_eq!(
            content_kind(&HeaderMap::new(), b"plain words"),
            ContentKind::Text
        );
        assert_eq!(
            content_kind(&HeaderMap::new(), b"<!DOCTYPE html><html>"),
            ContentKind::Html
        );
        assert_eq!(
            content_kind(&HeaderMap::new(), &[0xff, 0xfe, 0x00]),
            ContentKind::Binary
        );
        assert_eq!(
            content_kind(&headers(&[("content-type", "image/png")]), b"{"),
            ContentKind::Binary
        );
        assert_eq!(content_kind(&HeaderMap::new(), b""), ContentKind::Empty);
    }
}
