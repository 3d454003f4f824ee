//! A caller's request body streamed to the answering upstream as it arrives (a gRPC call's messages, which a
//! bidirectional stream sends while it reads the answers), copied on the way for the shadows: the copy never
//! holds the caller back, and one that would grow past `--max-body` or the memory budget is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::budget::Charge;
use crate::exchange::CapturedBody;
use crate::lane::Handoff;
use crate::proxy::capture::BodyCapture;
use crate::proxy::upstream::BoxError;

/// What became of the copy of a streamed request body.
#[derive(Debug)]
pub enum RequestCopy {
    /// The whole body, and the charge that holds it.
    Complete(Bytes, Charge),
    /// It grew past `--max-body`.
    TooLarge,
    /// Holding it would have gone over `--memory-budget`.
    OverBudget,
    /// The caller's body failed mid-way, or did not end within the deadline once the upstream stopped reading.
    Unreadable,
}

impl RequestCopy {
    /// What a capture kept of a body that was read to its end.
    fn of(capture: BodyCapture) -> Self {
        match capture.finish() {
            (CapturedBody::Complete(bytes), charge) => Self::Complete(bytes, charge),
            (CapturedBody::TooLarge { .. }, _) => Self::TooLarge,
            (CapturedBody::OverBudget, _) => Self::OverBudget,
        }
    }
}

/// The caller's body on its way to the answering upstream, every frame passed through as it comes.
pub struct RequestTee {
    /// Taken by [`Drop`] when the rest of the body is still to be read for the copy.
    inner: Option<Incoming>,
    copy: Option<(BodyCapture, Handoff<RequestCopy>)>,
    /// Longest the rest of the body is read for the copy once the upstream has stopped reading it.
    deadline: Duration,
    /// Told (on the caller's thread) when the body has ended or the tee is dropped: the responder's answer is
    /// waited for without a limit until then.
    ended: Option<oneshot::Sender<()>>,
}

impl RequestTee {
    /// Copies `inner` up to `limit` bytes, charged to `charge`; the copy goes to `report` when the body ends.
    /// Should the upstream stop reading it first, the rest is read for the copy for at most `deadline`.
    pub fn new(
        inner: Incoming,
        (limit, charge): (usize, Charge),
        report: Handoff<RequestCopy>,
        deadline: Duration,
    ) -> Self {
        let capture = BodyCapture::new(limit, charge, inner.size_hint().exact());
        let mut tee = Self {
            inner: Some(inner),
            copy: Some((capture, report)),
            deadline,
            ended: None,
        };
        if tee.is_end_stream() {
            tee.finish(false);
        } else {
            tee.give_up_if_stopped();
        }
        tee
    }

    /// `inner` passed through without a copy, to tell its end ([`RequestTee::on_end`]).
    pub fn passthrough(inner: Incoming) -> Self {
        Self {
            inner: Some(inner),
            copy: None,
            deadline: Duration::ZERO,
            ended: None,
        }
    }

    /// Tells `ended` when the body has ended (or was dropped before its end).
    pub fn on_end(mut self, ended: oneshot::Sender<()>) -> Self {
        if self.is_end_stream() {
            let _ = ended.send(());
        } else {
            self.ended = Some(ended);
        }
        self
    }

    fn tell_ended(&mut self) {
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }

    /// Sends the copy (or why there is none) and stops copying.
    fn finish(&mut self, failed: bool) {
        let Some((capture, report)) = self.copy.take() else {
            return;
        };
        if failed {
            report.send(RequestCopy::Unreadable);
            return;
        }
        report.send(RequestCopy::of(capture));
    }

    /// A copy that stopped keeping the body is of no use to the shadows: they are told at once, rather than
    /// when a long stream ends.
    fn give_up_if_stopped(&mut self) {
        if self
            .copy
            .as_ref()
            .is_some_and(|(capture, report)| capture.has_stopped() || report.is_closed())
        {
            self.finish(false);
        }
    }
}

impl Body for RequestTee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(polled) => polled,
            Poll::Pending => {
                // An open stream that waits: once the exchange has stopped waiting for the copy, it is let go
                // now rather than at the next frame, which may be long in coming.
                if let Some((_, report)) = this.copy.as_mut()
                    && report.poll_closed(cx).is_ready()
                {
                    this.finish(false);
                }
                return Poll::Pending;
            }
        };
        let ended = inner.is_end_stream();
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some((capture, _))) = (frame.data_ref(), this.copy.as_mut()) {
                    capture.push(data);
                }
                if ended {
                    this.finish(false);
                    this.tell_ended();
                } else {
                    this.give_up_if_stopped();
                }
            }
            Some(Err(_)) => {
                this.finish(true);
                this.tell_ended();
            }
            None => {
                this.finish(false);
                this.tell_ended();
            }
        }
        Poll::Ready(polled.map(|frame| frame.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestTee {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.finish(false);
            return;
        }
        // Dropped before its end: the upstream answered without reading it all (a gRPC server answers a unary
        // call once it has its message, or refuses a call before reading it). The shadows are sent what the
        // caller sent, so the rest is read for the copy, on the caller's thread, as the tee would have.
        let (Some(inner), Some((capture, report))) = (self.inner.take(), self.copy.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(read_the_rest(inner, capture, report, self.deadline));
            }
            Err(_) => report.send(RequestCopy::Unreadable),
        }
    }
}

/// Reads what is left of a body into its copy, for at most `deadline`, and sends the copy.
async fn read_the_rest(
    mut inner: Incoming,
    mut capture: BodyCapture,
    report: Handoff<RequestCopy>,
    deadline: Duration,
) {
    let read = async {
        while let Some(frame) = inner.frame().await {
            let frame = frame.map_err(|_| ())?;
            if let Some(data) = frame.data_ref() {
                capture.push(data);
            }
            if capture.has_stopped() || report.is_closed() {
                break;
            }
        }
        Ok::<(), ()>(())
    };
    let copy = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(())) => RequestCopy::of(capture),
        _ => RequestCopy::Unreadable,
    };
    report.send(copy);
}
