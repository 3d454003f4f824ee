//! Copies of response bodies kept for comparison, up to `--max-body` and within the memory budget: a tee for
//! the body streaming to the caller, and a capped reader for the shadows.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::budget::Charge;
use crate::exchange::{CapturedBody, Outcome, UpstreamError, UpstreamResponse};
use crate::lane::Handoff;
use crate::proxy::upstream::classify_body_error;

/// Why a capture stopped keeping the body.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stopped {
    TooLarge,
    OverBudget,
}

/// The most of a body read without keeping it (over the budget) to keep its connection: past this, reading on
/// costs more than opening another connection.
pub const DRAIN_LIMIT: usize = 256 << 10;

/// The smallest buffer a capture of unknown length starts with.
const FIRST_CAPACITY: usize = 8 << 10;

/// A copy of a body, up to a limit, in a buffer of its own whose capacity is charged to the memory budget
/// before it is allocated. Copying (rather than keeping the connection's chunks) is what keeps the charge
/// exact: a kept chunk holds its connection's whole read buffer, and the connection must then allocate another.
#[derive(Debug)]
pub struct BodyCapture {
    buffer: Vec<u8>,
    limit: usize,
    stopped: Option<Stopped>,
    charge: Charge,
}

impl BodyCapture {
    /// `expected` is the announced length, if any: the buffer is then allocated once, at that size.
    pub fn new(limit: usize, charge: Charge, expected: Option<u64>) -> Self {
        let mut capture = Self {
            buffer: Vec::new(),
            limit,
            stopped: None,
            charge,
        };
        match expected {
            Some(length) if length > limit as u64 => capture.stop(Stopped::TooLarge),
            Some(length) => capture.reserve(length as usize),
            None => {}
        }
        capture
    }

    /// Makes room for `total` bytes in all, charging the new capacity first.
    fn reserve(&mut self, total: usize) {
        if total <= self.buffer.capacity() {
            return;
        }
        if !self.charge.try_grow(total - self.buffer.capacity()) {
            self.stop(Stopped::OverBudget);
            return;
        }
        self.buffer.reserve_exact(total - self.buffer.len());
    }

    fn stop(&mut self, why: Stopped) {
        self.stopped = Some(why);
        self.buffer = Vec::new();
        self.charge.shrink_to(0);
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.stopped.is_some() {
            return;
        }
        let needed = self.buffer.len() + data.len();
        if needed > self.limit {
            self.stop(Stopped::TooLarge);
            return;
        }
        if needed > self.buffer.capacity() {
            // Unknown length: grow by doubling (never past the limit), so that copies stay few.
            let doubled = (2 * self.buffer.capacity()).max(FIRST_CAPACITY);
            self.reserve(needed.max(doubled.min(self.limit)));
            if self.stopped.is_some() {
                return;
            }
        }
        self.buffer.extend_from_slice(data);
    }

    /// Whether the capture has stopped keeping the body (too large, or over the budget).
    pub fn has_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// Whether the rest of the body is worth reading without keeping it (up to [`DRAIN_LIMIT`]), so that its
    /// connection can serve the next request: a body that did not fit the budget may be small, and a new
    /// connection costs more than reading a little; one over the limit is large.
    fn drains(&self) -> bool {
        self.stopped == Some(Stopped::OverBudget)
    }

    /// The body kept (done off the caller's path); the charge holds its memory.
    pub fn finish(self) -> (CapturedBody, Charge) {
        let body = match self.stopped {
            Some(Stopped::TooLarge) => CapturedBody::TooLarge {
                limit: self.limit as u64,
            },
            Some(Stopped::OverBudget) => CapturedBody::OverBudget,
            None => CapturedBody::Complete(Bytes::from(self.buffer)),
        };
        (body, self.charge)
    }
}

/// What the responder's tee reports once its body has ended (or failed, or been abandoned). The chunks are
/// joined by whoever receives it, so the caller's path never copies a body.
#[derive(Debug)]
pub struct TeeReport {
    /// Time until the response head arrived (or the failure).
    pub elapsed: Duration,
    pub result: Result<TeeCapture, UpstreamError>,
}

/// The responder's response as the tee saw it.
#[derive(Debug)]
pub struct TeeCapture {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyCapture,
}

impl TeeReport {
    /// The responder failed before a response head arrived.
    pub fn failed(elapsed: Duration, error: UpstreamError) -> Self {
        Self {
            elapsed,
            result: Err(error),
        }
    }

    /// The outcome, and the charge that holds its body.
    pub fn into_outcome(self) -> (Outcome, Charge) {
        let mut charge = Charge::none();
        let result = self.result.map(|capture| {
            let (body, held) = capture.body.finish();
            charge = held;
            UpstreamResponse {
                status: capture.status,
                headers: capture.headers,
                body,
            }
        });
        let outcome = Outcome {
            elapsed: self.elapsed,
            result,
        };
        (outcome, charge)
    }
}

struct TeeState {
    capture: BodyCapture,
    status: StatusCode,
    headers: HeaderMap,
    elapsed: Duration,
    report: Handoff<TeeReport>,
}

/// The responder's body on its way to the caller: every frame passes straight through, and a reference to each
/// data chunk is kept for the comparison.
pub struct TeeBody {
    inner: Incoming,
    state: Option<TeeState>,
    /// A response that cannot have a body (to HEAD, or 1xx, 204, 304): complete as soon as it is sent.
    bodiless: bool,
    /// The length the upstream announced, and what has passed so far: the server may drop a body that has
    /// reached its announced length without polling it again.
    announced: Option<u64>,
    passed: u64,
}

impl TeeBody {
    /// `headers` are the upstream's response headers as received (before hop-by-hop removal), for comparison,
    /// with whether the caller reads trailers (HTTP/2); `elapsed` is the time the head took; the copy's memory
    /// is charged to `charge`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Incoming,
        limit: usize,
        charge: Charge,
        bodiless: bool,
        status: StatusCode,
        (headers, trailers_follow): (HeaderMap, bool),
        elapsed: Duration,
        report: Handoff<TeeReport>,
    ) -> Self {
        let announced = inner.size_hint().exact();
        // A body that cannot be there is announced as empty, whatever the headers say.
        let expected = if bodiless { Some(0) } else { announced };
        // A gRPC answer to an HTTP/2 caller ends with its trailers (its status), after the announced length:
        // the caller's connection reads on to them, so the body is complete only at its end.
        let announced = announced.filter(|_| !(trailers_follow && crate::grpc::is_grpc(&headers)));
        Self {
            inner,
            state: Some(TeeState {
                capture: BodyCapture::new(limit, charge, expected),
                status,
                headers,
                elapsed,
                report,
            }),
            bodiless,
            announced,
            passed: 0,
        }
    }

    fn finish(&mut self, failure: Option<UpstreamError>) {
        if let Some(state) = self.state.take() {
            let result = match failure {
                None => Ok(TeeCapture {
                    status: state.status,
                    headers: state.headers,
                    body: state.capture,
                }),
                Some(error) => Err(error),
            };
            // The receiver is gone only if the exchange was given up; nothing to report then.
            state.report.send(TeeReport {
                elapsed: state.elapsed,
                result,
            });
        }
    }

    /// Whether everything the caller will get has passed.
    fn complete(&self) -> bool {
        self.bodiless || self.inner.is_end_stream() || self.announced == Some(self.passed)
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(state) = this.state.as_mut()
                {
                    keep_trailers(&mut state.headers, trailers);
                }
                if let Some(data) = frame.data_ref() {
                    this.passed += data.len() as u64;
                    if let Some(state) = this.state.as_mut() {
                        if state.report.is_closed() {
                            // The exchange was given up (its deadline passed): stop keeping a copy.
                            this.state = None;
                        } else {
                            state.capture.push(data);
                        }
                    }
                }
                // Trailers come last.
                if frame.is_trailers() || this.complete() {
                    this.finish(None);
                }
            }
            Some(Err(error)) => this.finish(Some(classify_body_error(error))),
            None => this.finish(None),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // Dropped before its end: the caller went away mid-body, so the copy is incomplete.
        if self.complete() {
            self.finish(None);
        } else {
            self.finish(Some(UpstreamError::Abandoned));
        }
    }
}

/// An answer's trailers are kept with its headers, where they are compared (gRPC's outcome, `grpc-status`, is
/// in them).
pub fn keep_trailers(headers: &mut HeaderMap, trailers: &HeaderMap) {
    for (name, value) in trailers {
        headers.append(name.clone(), value.clone());
    }
}

/// Reads a shadow's body, keeping at most `limit` bytes (charged to `charge`) and adding its trailers to
/// `headers`. Past the limit it stops reading (the connection is then closed rather than drained); past the
/// budget it reads the rest without keeping it, up to [`DRAIN_LIMIT`], so that the connection goes back to its
/// pool.
pub async fn read_capped(
    mut body: Incoming,
    limit: usize,
    charge: Charge,
    headers: &mut HeaderMap,
) -> Result<(CapturedBody, Charge), UpstreamError> {
    let mut capture = BodyCapture::new(limit, charge, body.size_hint().exact());
    let mut drained = 0;
    while !capture.has_stopped() || capture.drains() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = match frame {
            Ok(frame) => frame,
            // What was being drained is not needed: the capture's own outcome stands.
            Err(_) if capture.has_stopped() => break,
            Err(error) => return Err(classify_body_error(&error)),
        };
        if let Some(trailers) = frame.trailers_ref() {
            keep_trailers(headers, trailers);
        }
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if capture.has_stopped() {
            drained += data.len();
            if drained > limit.min(DRAIN_LIMIT) {
                break;
            }
        } else {
            capture.push(data);
        }
    }
    Ok(capture.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_joins_chunks_and_marks_overflow() {
        let mut capture = BodyCapture::new(10, Charge::none(), None);
        capture.push(&Bytes::from_static(b"hello "));
        capture.push(&Bytes::from_static(b"you"));
        assert_eq!(
            capture.finish().0,
            CapturedBody::Complete(Bytes::from_static(b"hello you"))
        );

        let mut over = BodyCapture::new(10, Charge::none(), None);
        over.push(&Bytes::from_static(b"hello "));
        over.push(&Bytes::from_static(b"world!"));
        over.push(&Bytes::from_static(b"!"));
        assert!(over.has_stopped());
        assert_eq!(over.finish().0, CapturedBody::TooLarge { limit: 10 });
    }

    #[test]
    fn capture_at_exactly_the_limit_is_complete() {
        let mut capture = BodyCapture::new(4, Charge::none(), Some(4));
        capture.push(&Bytes::from_static(b"abcd"));
        assert_eq!(
            capture.finish().0,
            CapturedBody::Complete(Bytes::from_static(b"abcd"))
        );
        assert_eq!(
            BodyCapture::new(0, Charge::none(), None).finish().0,
            CapturedBody::Complete(Bytes::new())
        );
    }

    #[test]
    fn a_capture_past_the_budget_keeps_nothing_and_holds_nothing() {
        let budget = crate::budget::MemoryBudget::new(8);
        let mut capture =
            BodyCapture::new(100, budget.empty(crate::budget::Stage::InFlight), Some(6));
        capture.push(b"hello ");
        assert_eq!(budget.used(), 6);
        capture.push(b"world");
        assert!(capture.has_stopped());
        assert_eq!(budget.used(), 0);
        let (body, charge) = capture.finish();
        assert_eq!(body, CapturedBody::OverBudget);
        assert_eq!(charge.bytes(), 0);
        // An announced length past the budget is refused before anything is read.
        let refused = BodyCapture::new(100, budget.empty(crate::budget::Stage::InFlight), Some(9));
        assert!(refused.has_stopped());
        assert_eq!(refused.finish().0, CapturedBody::OverBudget);
    }

    #[test]
    fn a_capture_of_unknown_length_charges_what_it_allocates() {
        let budget = crate::budget::MemoryBudget::new(1 << 20);
        let mut capture =
            BodyCapture::new(100_000, budget.empty(crate::budget::Stage::InFlight), None);
        for _ in 0..100 {
            capture.push(&[b'x'; 1000]);
        }
        assert!(budget.used() >= 100_000 && budget.used() <= 100_000);
        let (body, charge) = capture.finish();
        assert_eq!(body.bytes().map(|b| b.len()), Some(100_000));
        assert_eq!(charge.bytes(), budget.used());
    }
}
