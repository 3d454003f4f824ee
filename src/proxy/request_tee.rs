//! A caller's request body streamed to the answering upstream as it arrives (a gRPC call's messages, which a
//! bidirectional stream sends while it reads the answers), copied on the way for the shadows: the copy never
//! holds the caller back, and one that would grow past `--max-body` or the memory budget is dropped.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
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
    /// The caller's body failed mid-way.
    Unreadable,
}

/// The caller's body on its way to the answering upstream, every frame passed through as it comes.
pub struct RequestTee {
    inner: Incoming,
    copy: Option<(BodyCapture, Handoff<RequestCopy>)>,
    /// Told (on the caller's thread) when the body has ended or the tee is dropped: the responder's answer is
    /// waited for without a limit until then.
    ended: Option<oneshot::Sender<()>>,
}

impl RequestTee {
    /// Copies `inner` up to `limit` bytes, charged to `charge`; the copy goes to `report` when the body ends.
    pub fn new(
        inner: Incoming,
        limit: usize,
        charge: Charge,
        report: Handoff<RequestCopy>,
    ) -> Self {
        let capture = BodyCapture::new(limit, charge, inner.size_hint().exact());
        let mut tee = Self {
            inner,
            copy: Some((capture, report)),
            ended: None,
        };
        if tee.inner.is_end_stream() {
            tee.finish(false);
        } else {
            tee.give_up_if_stopped();
        }
        tee
    }

    /// Tells `ended` when the body has ended (or was dropped before its end).
    pub fn on_end(mut self, ended: oneshot::Sender<()>) -> Self {
        if self.inner.is_end_stream() {
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
        let copy = match capture.finish() {
            (CapturedBody::Complete(bytes), charge) => RequestCopy::Complete(bytes, charge),
            (CapturedBody::TooLarge { .. }, _) => RequestCopy::TooLarge,
            (CapturedBody::OverBudget, _) => RequestCopy::OverBudget,
        };
        report.send(copy);
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
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some((capture, _))) = (frame.data_ref(), this.copy.as_mut()) {
                    capture.push(data);
                }
                if this.inner.is_end_stream() {
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestTee {
    fn drop(&mut self) {
        // Dropped before its end, the upstream having answered without waiting for the end of the stream (a
        // gRPC server answers a unary call once it has its message, and may stop reading): the shadows get what
        // it read. A call cut short by the caller is given up by the exchange, whose answer is abandoned too.
        self.finish(false);
    }
}
