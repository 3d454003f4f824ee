//! Copies of response bodies kept for comparison, up to `--max-body`: a tee for the body streaming to the
//! caller, and a capped reader for the shadows.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::budget::Charge;
use crate::exchange::{CapturedBody, Outcome, UpstreamError, UpstreamResponse};
use crate::proxy::upstream::classify_body_error;

/// Why a capture stopped keeping the body.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stopped {
    TooLarge,
    OverBudget,
}

/// Chunks of a body, kept by reference (no copy on the caller's path) until the limit is passed, each charged
/// to the memory budget before it is kept.
#[derive(Debug)]
pub struct BodyCapture {
    chunks: Vec<Bytes>,
    kept: usize,
    limit: usize,
    stopped: Option<Stopped>,
    charge: Charge,
}

impl BodyCapture {
    pub fn new(limit: usize, charge: Charge) -> Self {
        Self {
            chunks: Vec::new(),
            kept: 0,
            limit,
            stopped: None,
            charge,
        }
    }

    pub fn push(&mut self, data: &Bytes) {
        if self.stopped.is_some() {
            return;
        }
        let stop = if self.kept + data.len() > self.limit {
            Some(Stopped::TooLarge)
        } else if !self.charge.try_grow(data.len()) {
            Some(Stopped::OverBudget)
        } else {
            None
        };
        if let Some(stop) = stop {
            self.stopped = Some(stop);
            self.chunks = Vec::new();
            self.charge.shrink_to(0);
            return;
        }
        self.kept += data.len();
        self.chunks.push(data.clone());
    }

    /// Whether the capture has stopped keeping the body (too large, or over the budget).
    pub fn has_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// Joins the chunks (done off the caller's path); the charge holds the body's memory.
    pub fn finish(self) -> (CapturedBody, Charge) {
        let body = match self.stopped {
            Some(Stopped::TooLarge) => CapturedBody::TooLarge {
                limit: self.limit as u64,
            },
            Some(Stopped::OverBudget) => CapturedBody::OverBudget,
            None => CapturedBody::Complete(concat(self.chunks, self.kept)),
        };
        (body, self.charge)
    }
}

/// Joins chunks whose lengths add up to `len` into one buffer (no copy for zero or one chunk).
pub fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(len);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
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
    report: oneshot::Sender<TeeReport>,
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
    /// `headers` are the upstream's response headers as received (before hop-by-hop removal), for comparison;
    /// `elapsed` is the time the head took; the copy's memory is charged to `charge`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Incoming,
        limit: usize,
        charge: Charge,
        bodiless: bool,
        status: StatusCode,
        headers: HeaderMap,
        elapsed: Duration,
        report: oneshot::Sender<TeeReport>,
    ) -> Self {
        let announced = inner.size_hint().exact();
        Self {
            inner,
            state: Some(TeeState {
                capture: BodyCapture::new(limit, charge),
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
            let _ = state.report.send(TeeReport {
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

/// Reads a shadow's body, keeping at most `limit` bytes (charged to `charge`); past the limit, or the budget,
/// it stops reading (the connection is then closed rather than drained).
pub async fn read_capped(
    mut body: Incoming,
    limit: usize,
    charge: Charge,
) -> Result<(CapturedBody, Charge), UpstreamError> {
    let mut capture = BodyCapture::new(limit, charge);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| classify_body_error(&error))?;
        if let Some(data) = frame.data_ref() {
            capture.push(data);
            if capture.has_stopped() {
                break;
            }
        }
    }
    Ok(capture.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_joins_chunks_and_marks_overflow() {
        let mut capture = BodyCapture::new(10, Charge::none());
        capture.push(&Bytes::from_static(b"hello "));
        capture.push(&Bytes::from_static(b"you"));
        assert_eq!(
            capture.finish().0,
            CapturedBody::Complete(Bytes::from_static(b"hello you"))
        );

        let mut over = BodyCapture::new(10, Charge::none());
        over.push(&Bytes::from_static(b"hello "));
        over.push(&Bytes::from_static(b"world!"));
        over.push(&Bytes::from_static(b"!"));
        assert!(over.has_stopped());
        assert_eq!(over.finish().0, CapturedBody::TooLarge { limit: 10 });
    }

    #[test]
    fn capture_at_exactly_the_limit_is_complete() {
        let mut capture = BodyCapture::new(4, Charge::none());
        capture.push(&Bytes::from_static(b"abcd"));
        assert_eq!(
            capture.finish().0,
            CapturedBody::Complete(Bytes::from_static(b"abcd"))
        );
        assert_eq!(
            BodyCapture::new(0, Charge::none()).finish().0,
            CapturedBody::Complete(Bytes::new())
        );
    }

    #[test]
    fn a_capture_past_the_budget_keeps_nothing_and_holds_nothing() {
        let budget = crate::budget::MemoryBudget::new(8);
        let mut capture = BodyCapture::new(100, budget.empty(crate::budget::Stage::InFlight));
        capture.push(&Bytes::from_static(b"hello "));
        assert_eq!(budget.used(), 6);
        capture.push(&Bytes::from_static(b"world"));
        assert!(capture.has_stopped());
        assert_eq!(budget.used(), 0);
        let (body, charge) = capture.finish();
        assert_eq!(body, CapturedBody::OverBudget);
        assert_eq!(charge.bytes(), 0);
    }
}
