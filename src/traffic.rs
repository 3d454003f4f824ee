//! Recorded traffic: the requests `serve --record` writes and `replay` reads, in shadowdiff's JSON lines, HAR 1.2
//! or GoReplay's format, read record by record.

pub mod gor;
pub mod har;
pub mod hosts;
pub mod jsonl;
pub mod reader;
pub mod sealed;

use std::fmt;
use std::io::BufRead;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderName, HeaderValue, Method, Uri};

use crate::seal::Opener;

/// The most one record may take (a JSON line, a HAR entry's request, a GoReplay record): a larger one is skipped
/// (or, in a HAR file, ends the reading), so that reading never holds more than this for one record.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// One recorded request, ready to send again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficRequest {
    /// When it was recorded, if the file says.
    pub time: Option<SystemTime>,
    pub method: Method,
    /// Path and query (origin form).
    pub uri: PathAndQuery,
    /// In recorded order, repeats kept.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The host it was sent to, when the file says (an absolute URL, a Host or `:authority` header).
    pub authority: Option<Authority>,
}

impl TrafficRequest {
    /// A request from its method and target as a record writes them (the target in origin form or as an
    /// absolute URL); a bad method is reported before a bad target.
    pub fn recorded(
        time: Option<SystemTime>,
        method: &str,
        target: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        authority: Option<Authority>,
    ) -> Result<Self, String> {
        Ok(Self {
            time,
            method: self::method(method)?,
            uri: origin_form(target)?,
            headers,
            body,
            authority,
        })
    }

    /// Bytes it holds, for the reading queue's bound.
    pub fn size(&self) -> usize {
        self.uri.as_str().len()
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum::<usize>()
    }
}

/// One thing a traffic file holds, in file order.
#[derive(Debug)]
pub enum Record {
    Request(TrafficRequest),
    /// A record that could not be used.
    Skipped(Skipped),
    /// A record deliberately left out (a GoReplay response), not an error.
    Ignored,
}

impl Record {
    fn size(&self) -> usize {
        match self {
            Record::Request(request) => request.size(),
            Record::Skipped(skipped) => skipped.reason.len(),
            Record::Ignored => 0,
        }
    }
}

/// Where a reader hands each record; `Break` stops the reading.
pub type Sink<'a> = dyn FnMut(Record) -> ControlFlow<()> + 'a;

/// The formats `replay --format` reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TrafficFormat {
    /// shadowdiff's JSON lines (what `serve --record` writes).
    Jsonl,
    /// HAR 1.2, as browsers and proxies export it.
    Har,
    /// GoReplay's `.gor` files (request records only).
    Gor,
}

impl TrafficFormat {
    /// The format a file name suggests: `.har`, `.gor`, and JSON lines for anything else.
    pub fn from_path(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("har") => TrafficFormat::Har,
            Some("gor") => TrafficFormat::Gor,
            _ => TrafficFormat::Jsonl,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficFormat::Jsonl => "jsonl",
            TrafficFormat::Har => "har",
            TrafficFormat::Gor => "gor",
        }
    }
}

/// A record that could not be used, and why; the rest of the file still is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The line the record starts on (1-based).
    pub line: usize,
    pub reason: String,
}

/// What a traffic file held, collected (for tests; `replay` reads record by record).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: Vec<TrafficRequest>,
    pub skipped: Vec<Skipped>,
    /// Records deliberately left out (GoReplay responses), not errors.
    pub ignored: usize,
}

/// A traffic file that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Reads `reader` in `format`, handing each record to `sink` as it is read, until the input ends or `sink`
/// says stop. Malformed records are handed on as skipped; the error is for input that is not the format at all,
/// or stops being it (a HAR file cut short), and says where.
pub fn read_records(
    reader: impl BufRead,
    format: TrafficFormat,
    sink: &mut Sink<'_>,
    opener: Option<&Opener>,
) -> Result<(), String> {
    match format {
        TrafficFormat::Jsonl => jsonl::read(reader, sink, opener),
        TrafficFormat::Har => har::read(reader, sink),
        TrafficFormat::Gor => gor::read(reader, sink),
    }
}

/// Every record of `bytes`, collected.
#[cfg(test)]
pub fn collect(bytes: &[u8], format: TrafficFormat) -> Result<Traffic, String> {
    let mut traffic = Traffic::default();
    read_records(
        bytes,
        format,
        &mut |record| {
            match record {
                Record::Request(request) => traffic.requests.push(request),
                Record::Skipped(skipped) => traffic.skipped.push(skipped),
                Record::Ignored => traffic.ignored += 1,
            }
            ControlFlow::Continue(())
        },
        None,
    )?;
    Ok(traffic)
}

/// Every record a reader hands on, and how the reading ended (for tests of one format's reader).
#[cfg(test)]
pub fn records_of(
    read: impl FnOnce(&mut Sink<'_>) -> Result<(), String>,
) -> (Vec<Record>, Result<(), String>) {
    let mut records = Vec::new();
    let result = read(&mut |record| {
        records.push(record);
        ControlFlow::Continue(())
    });
    (records, result)
}

/// How a bounded line read ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// A line is in the buffer (without its `\n`); `newline` says whether it had one (the last line may not).
    Line { newline: bool },
    /// The line was longer than allowed: it was read past, and the buffer is empty.
    TooLong,
    /// The input has ended.
    End,
}

/// Reads one line into `line`, holding at most `max` bytes of it: a longer line is consumed to its end
/// without being kept.
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => LineRead::End,
                (true, true) => LineRead::TooLong,
                (true, false) => LineRead::Line { newline: false },
            });
        }
        any = true;
        let end = memchr::memchr(b'\n', available);
        let chunk = &available[..end.unwrap_or(available.len())];
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = end.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if end.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line { newline: true }
            });
        }
    }
}

/// The host a request was sent to: the absolute URL's, else the `Host` header's, else HTTP/2's `:authority`.
pub fn recorded_authority<'a>(
    target: &str,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<Authority> {
    if !target.starts_with('/')
        && let Ok(uri) = target.parse::<Uri>()
        && let Some(authority) = uri.authority()
    {
        return Some(authority.clone());
    }
    let mut pseudo = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            if let Ok(authority) = value.trim().parse() {
                return Some(authority);
            }
        } else if name == ":authority" && pseudo.is_none() {
            pseudo = value.trim().parse().ok();
        }
    }
    pseudo
}

/// A request target as recorded: origin form (`/path?q`) as it is, an absolute URL reduced to its path and query.
pub fn origin_form(target: &str) -> Result<PathAndQuery, String> {
    if target.starts_with('/') {
        return target
            .parse::<PathAndQuery>()
            .map_err(|error| format!("bad request target `{}`: {error}", shorten(target)));
    }
    let uri: Uri = target
        .parse()
        .map_err(|error| format!("bad request target `{}`: {error}", shorten(target)))?;
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_some() => Ok(pq.clone()),
        _ if uri.scheme().is_some() => Ok(PathAndQuery::from_static("/")),
        _ => Err(format!(
            "bad request target `{}`: neither a path nor an absolute URL",
            shorten(target)
        )),
    }
}

/// A method name as recorded.
pub fn method(name: &str) -> Result<Method, String> {
    Method::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("bad method `{}`", shorten(name)))
}

/// A header as recorded; pseudo-headers of HTTP/2 exports (`:authority`) are not headers and give `None`.
pub fn header(name: &str, value: &str) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    if name.starts_with(':') {
        return Ok(None);
    }
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("bad header name `{}`", shorten(name)))?;
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("bad value for header `{name}`"))?;
    Ok(Some((name, value)))
}

/// At most 60 characters of a bad value, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_extension() {
        for (path, format) in [
            ("a/b.HAR", TrafficFormat::Har),
            ("x.gor", TrafficFormat::Gor),
            ("x.jsonl", TrafficFormat::Jsonl),
            ("traffic", TrafficFormat::Jsonl),
        ] {
            assert_eq!(TrafficFormat::from_path(Path::new(path)), format, "{path}");
        }
    }

    #[test]
    fn request_targets_become_origin_form() {
        assert_eq!(origin_form("/a/b?c=1").unwrap().as_str(), "/a/b?c=1");
        assert_eq!(
            origin_form("https://example.com/users/1?x=y")
                .unwrap()
                .as_str(),
            "/users/1?x=y"
        );
        assert_eq!(origin_form("http://example.com").unwrap().as_str(), "/");
        assert!(origin_form("users/1").is_err());
        assert!(origin_form("/bad path").is_err());
    }

    #[test]
    fn pseudo_headers_are_left_out_and_bad_ones_named() {
        assert_eq!(header(":authority", "example.com").unwrap(), None);
        assert!(
            header("bad name", "x")
                .unwrap_err()
                .contains("bad header name")
        );
        assert!(header("x-ok", "line\nbreak").unwrap_err().contains("x-ok"));
    }

    #[test]
    fn a_bounded_line_read_keeps_short_lines_and_passes_over_long_ones() {
        let mut input: &[u8] = b"short\nthis one is too long\n\nlast";
        let mut line = Vec::new();
        let mut read = || {
            let read = read_line(&mut input, &mut line, 8).unwrap();
            (read, String::from_utf8(line.clone()).unwrap())
        };
        assert_eq!(read(), (LineRead::Line { newline: true }, "short".into()));
        assert_eq!(read(), (LineRead::TooLong, String::new()));
        assert_eq!(read(), (LineRead::Line { newline: true }, String::new()));
        assert_eq!(read(), (LineRead::Line { newline: false }, "last".into()));
        assert_eq!(read(), (LineRead::End, String::new()));
    }
}
