//! Recorded traffic: the requests `serve --record` writes and `replay` reads, in shadowdiff's JSON lines, HAR 1.2
//! or GoReplay's format.

pub mod gor;
pub mod har;
pub mod jsonl;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Uri};

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
}

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

/// What a traffic file held.
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

/// Reads a whole traffic file. Malformed records are skipped and listed; only an unreadable file, or one that is
/// not the format at all, is an error.
pub fn read(path: &Path, format: TrafficFormat) -> Result<Traffic, TrafficError> {
    let bytes = std::fs::read(path).map_err(|source| TrafficError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = match format {
        TrafficFormat::Jsonl => Ok(jsonl::parse(&bytes)),
        TrafficFormat::Har => har::parse(&bytes),
        TrafficFormat::Gor => Ok(gor::parse(&bytes)),
    };
    parsed.map_err(|reason| TrafficError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
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
        assert_eq!(
            TrafficFormat::from_path(Path::new("a/b.HAR")),
            TrafficFormat::Har
        );
        assert_eq!(
            TrafficFormat::from_path(Path::new("x.gor")),
            TrafficFormat::Gor
        );
        assert_eq!(
            TrafficFormat::from_path(Path::new("x.jsonl")),
            TrafficFormat::Jsonl
        );
        assert_eq!(
            TrafficFormat::from_path(Path::new("traffic")),
            TrafficFormat::Jsonl
        );
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
}
