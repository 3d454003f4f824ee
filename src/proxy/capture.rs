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

use crate::exchange::{CapturedBody, Outcome, UpstreamError, UpstreamResponse};
use crate::proxy::upstream::classify_body_error;

/// Chunks of a body, kept by reference (no copy on the caller's path) until the limit is passed.
#[derive(Debug)]
pub struct BodyCapture {
    chunks: Vec<Bytes>,
    kept: usize,
    limit: usize,
    too_large: bool,
}

impl BodyCapture {
    pub fn new(limit: usize) -> Self {
        Self {
            chunks: Vec::new(),
            kept: 0,
            limit,
            too_large: false,
        }
    }

    pub fn push(&mut self, data: &Bytes) {
        if self.too_large {
            return;
        }
        if self.kept + data.len() > self.limit {
            self.too_large = true;
            self.chunks = Vec::new();
            return;
        }
        self.kept += data.len();
        self.chunks.push(data.clone());
    }

    pub fn is_too_large(&self) -> bool {
        self.too_large
    }

    /// Joins the chunks; done off the caller's path.
    pub fn finish(self) -> CapturedBody {
        if self.too_large {
            return CapturedBody::TooLarge {
                limit: self.limit as u64,
            };
        }
        let bytes = concat(self.chunks, self.kept);
        CapturedBody::Complete(bytes)
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

    pub fn into_outcome(self) -> Outcome {
        let result = self.result.map(|capture| UpstreamResponse {
            status: capture.status,
            headers: capture.headers,
            body: capture.body.finish(),
        });
        Outcome {
            elapsed: self.elapsed,
            result,
        }
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
    /// `elapsed` is the time the head took.
    pub fn new(
        inner: Incoming,
        limit: usize,
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
                capture: BodyCapture::new(limit),
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

/// Reads a shadow's body, keeping at most `limit` bytes; past the limit it stops reading (the connection is
/// then closed rather than drained).
pub async fn read_capped(mut body: Incoming, limit: usize) -> Result<CapturedBody, UpstreamError> {
    let mut capture = BodyCapture::new(limit);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| classify_body_error(&error))?;
        if let Some(data) = frame.data_ref() {
            capture.push(data);
            if capture.is_too_large() {
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
        let mut capture = BodyCapture::new(10);
        capture.push(&Bytes::from_static(b"hello "));
        capture.push(&Bytes::from_static(b"you"));
        assert_eq!(
            capture.finish(),
            CapturedBody::Complete(Bytes::from_static(b"hello you"))
        );

        let mut over = BodyCapture::new(10);
        over.push(&Bytes::from_static(b"hello "));
        over.push(&Bytes::from_static(b"world!"));
        over.push(&Bytes::from_static(b"!"));
        assert!(over.is_too_large());
        assert_eq!(over.finish(), CapturedBody::TooLarge { limit: 10 });
    }

    #[test]
    fn capture_at_exactly_the_limit_is_complete() {
        let mut capture = BodyCapture::new(4);
        capture.push(&Bytes::from_static(b"abcd"));
        assert_eq!(
            capture.finish(),
            CapturedBody::Complete(Bytes::from_static(b"abcd"))
        );
        assert_eq!(
            BodyCapture::new(0).finish(),
            CapturedBody::Complete(Bytes::new())
        );
    }
}
