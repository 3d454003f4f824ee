//! The Exchange: one request and what primary, secondary and candidate made of it, handed to analysis.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use uuid::Uuid;

use crate::budget::Charge;

/// One of the three upstreams.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The current version.
    Primary,
    /// A second instance of the current version; its differences from primary are noise.
    Secondary,
    /// The new version under test.
    Candidate,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Primary, Target::Secondary, Target::Candidate];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Primary => "primary",
            Target::Secondary => "secondary",
            Target::Candidate => "candidate",
        }
    }

    /// Position in [`Target::ALL`], for per-target arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request as the caller sent it (before header hygiene), with its body.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query as received.
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RecordedRequest {
    /// Copies what still points into the caller's connection (header values and the URI are slices of its
    /// read buffer, which a slice keeps whole), so that keeping the request keeps only its own bytes.
    pub fn detach(&mut self) {
        self.headers = detached(&self.headers);
        if let Ok(uri) = Uri::try_from(self.uri.to_string()) {
            self.uri = uri;
        }
    }
}

/// A copy of a header map whose values own their bytes. Header values parsed off a connection are slices of
/// its read buffer: kept for long (queued for analysis, held as a sample), each would keep the whole buffer
/// alive, tens of KiB for a few bytes.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), owned);
    }
    copy
}

/// A body kept for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapturedBody {
    /// The whole body.
    Complete(Bytes),
    /// The body was larger than `--max-body`: it reached its destination, but was not kept.
    TooLarge {
        /// The cap that was exceeded, in bytes.
        limit: u64,
    },
    /// Keeping the body would have gone over `--memory-budget`: it reached its destination, but was not kept.
    OverBudget,
}

impl CapturedBody {
    /// The bytes, when the whole body was kept.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            CapturedBody::Complete(bytes) => Some(bytes),
            CapturedBody::TooLarge { .. } | CapturedBody::OverBudget => None,
        }
    }

    pub fn is_too_large(&self) -> bool {
        matches!(self, CapturedBody::TooLarge { .. })
    }

    pub fn is_over_budget(&self) -> bool {
        matches!(self, CapturedBody::OverBudget)
    }
}

/// What an upstream answered.
#[derive(Clone, Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: CapturedBody,
}

/// Why an upstream gave no usable response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (refused, unreachable, TLS handshake failed, connect timeout).
    #[error("connection failed: {0}")]
    Connect(String),
    /// No complete answer within the allowed time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The connection closed or reset before the response was complete.
    #[error("connection reset: {0}")]
    Reset(String),
    /// The upstream answered something that is not valid HTTP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Not sent: the upstream already had `--max-shadow-inflight` shadow requests in flight.
    #[error("shed: too many shadow requests in flight")]
    Shed,
    /// The caller went away before the response body was read to its end (or did not read it within the
    /// capture deadline), so the copy is incomplete.
    #[error("caller went away before the body was complete")]
    Abandoned,
}

/// The kind of an upstream failure, by a stable name: a metric label, a stored counter, a sample's field.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Protocol,
    Shed,
    Abandoned,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
        ErrorKind::Shed,
        ErrorKind::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Shed => "shed",
            ErrorKind::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl UpstreamError {
    /// Whether the upstream is to blame (shed and abandoned are not the upstream's doing).
    pub fn is_upstream_fault(&self) -> bool {
        !matches!(self, UpstreamError::Shed | UpstreamError::Abandoned)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            UpstreamError::Connect(_) => ErrorKind::Connect,
            UpstreamError::Timeout(_) => ErrorKind::Timeout,
            UpstreamError::Reset(_) => ErrorKind::Reset,
            UpstreamError::Protocol(_) => ErrorKind::Protocol,
            UpstreamError::Shed => ErrorKind::Shed,
            UpstreamError::Abandoned => ErrorKind::Abandoned,
        }
    }
}

/// The result of sending the request to one upstream.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// From sending the request until the response head arrived (or the failure). Measured the same way for
    /// all three upstreams: how fast the caller reads the body does not count.
    pub elapsed: Duration,
    pub result: Result<UpstreamResponse, UpstreamError>,
}

impl Outcome {
    pub fn response(&self) -> Option<&UpstreamResponse> {
        self.result.as_ref().ok()
    }

    pub fn error(&self) -> Option<&UpstreamError> {
        self.result.as_ref().err()
    }

    pub fn failed(error: UpstreamError, elapsed: Duration) -> Self {
        Self {
            elapsed,
            result: Err(error),
        }
    }
}

/// One request and its three outcomes.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Time-ordered unique id (UUIDv7), unique across proxy replicas.
    pub id: Uuid,
    pub started_at: SystemTime,
    /// `METHOD /path/template`, see [`crate::endpoint`].
    pub endpoint: String,
    pub request: RecordedRequest,
    pub primary: Outcome,
    pub secondary: Outcome,
    pub candidate: Outcome,
    /// The memory it holds (request and bodies), charged to `--memory-budget` until it is let go.
    pub charge: Charge,
}

/// A new exchange's id: a UUIDv7 of the time in milliseconds and 74 random bits drawn from the thread's own
/// generator, seeded once. `Uuid::now_v7` asks the kernel for its random bits on every call (a `getrandom`
/// system call per request on the caller's path); ids need to be unique across replicas and ordered by their
/// millisecond, not unpredictable.
pub fn new_id() -> Uuid {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let mut random = [0u8; 10];
    fastrand::fill(&mut random);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

impl Exchange {
    /// Copies the request's and the responses' heads out of the connections they were read from (see
    /// [`detached`]), so that the exchange holds only its own bytes while it waits for analysis.
    pub fn detach(&mut self) {
        self.request.detach();
        for outcome in [&mut self.primary, &mut self.secondary, &mut self.candidate] {
            if let Ok(response) = &mut outcome.result {
                response.headers = detached(&response.headers);
            }
        }
    }

    /// What the exchange's heads hold, roughly (its bodies are charged apart).
    pub fn head_bytes(&self) -> usize {
        let responses: usize = [&self.primary, &self.secondary, &self.candidate]
            .iter()
            .filter_map(|outcome| outcome.response())
            .map(|response| crate::budget::header_bytes(&response.headers))
            .sum();
        crate::budget::header_bytes(&self.request.headers)
            + self.request.uri.to_string().len()
            + responses
    }

    /// Whether keeping one of its bodies would have gone over the memory budget.
    pub fn over_budget(&self) -> bool {
        Target::ALL.into_iter().any(|target| {
            self.outcome(target)
                .response()
                .is_some_and(|response| response.body.is_over_budget())
        })
    }

    pub fn outcome(&self, target: Target) -> &Outcome {
        match target {
            Target::Primary => &self.primary,
            Target::Secondary => &self.secondary,
            Target::Candidate => &self.candidate,
        }
    }

    pub fn outcome_mut(&mut self, target: Target) -> &mut Outcome {
        match target {
            Target::Primary => &mut self.primary,
            Target::Secondary => &mut self.secondary,
            Target::Candidate => &mut self.candidate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn new_ids_are_version_7_of_the_current_millisecond_and_distinct_across_threads() {
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let drawn: Vec<Vec<Uuid>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..10_000).map(|_| new_id()).collect::<Vec<_>>()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let after = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let all: HashSet<Uuid> = drawn.iter().flatten().copied().collect();
        assert_eq!(all.len(), 40_000);
        for id in &all {
            assert_eq!(id.get_version_num(), 7);
            let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = seconds * 1000 + u64::from(nanos) / 1_000_000;
            assert!(
                (before..=after).contains(&millis),
                "{millis} in {before}..={after}"
            );
        }
    }
}
