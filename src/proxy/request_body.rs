//! The caller's request body, read once into shared bytes up to `--max-body`; a larger body is handed on as a
//! stream for primary alone.

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::budget::Charge;
use crate::proxy::capture::concat;
use crate::proxy::upstream::{UpstreamBody, prefixed};

/// What reading the caller's body gave.
pub enum RequestBody {
    /// The whole body, shared by the three upstream requests.
    Buffered(Bytes),
    /// Larger than the cap: what was read so far and the rest, to be streamed to primary only.
    TooLarge(UpstreamBody),
    /// Holding it would have gone over the memory budget: what was read so far and the rest, to be streamed to
    /// primary only.
    OverBudget(UpstreamBody),
    /// The caller's body failed mid-way (the caller went away or sent a malformed chunk).
    Unreadable(hyper::Error),
}

/// Reads `body` up to `limit` bytes, each chunk charged to `charge` before it is kept. A declared
/// Content-Length over the limit is not read at all.
pub async fn read_capped(mut body: Incoming, limit: usize, charge: &mut Charge) -> RequestBody {
    if body.is_end_stream() {
        return RequestBody::Buffered(Bytes::new());
    }
    if body
        .size_hint()
        .exact()
        .is_some_and(|len| len > limit as u64)
    {
        return RequestBody::TooLarge(prefixed(Vec::new(), body));
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return RequestBody::Unreadable(error),
        };
        // Request trailers are rare and not compared; they are dropped along with the frame.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read <= limit && !charge.try_grow(data.len()) {
            charge.shrink_to(0);
            chunks.push(data);
            return RequestBody::OverBudget(prefixed(chunks, body));
        }
        chunks.push(data);
        if read > limit {
            charge.shrink_to(0);
            return RequestBody::TooLarge(prefixed(chunks, body));
        }
    }
    RequestBody::Buffered(concat(chunks, read))
}
