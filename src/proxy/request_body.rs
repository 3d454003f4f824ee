//! The caller's request body, read once into shared bytes up to `--max-body` (and within the memory budget); a
//! larger body is handed on as a stream for primary alone.

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::budget::Charge;
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

/// Reads `body` up to `limit` bytes into a buffer of its own, whose capacity is charged to `charge` before it is
/// allocated (the announced length at once, when there is one). A declared Content-Length over the limit is not
/// read at all.
pub async fn read_capped(mut body: Incoming, limit: usize, charge: &mut Charge) -> RequestBody {
    if body.is_end_stream() {
        return RequestBody::Buffered(Bytes::new());
    }
    let announced = body.size_hint().exact();
    if announced.is_some_and(|len| len > limit as u64) {
        return RequestBody::TooLarge(prefixed(Vec::new(), body));
    }
    let mut buffer: Vec<u8> = Vec::new();
    if let Some(len) = announced {
        if !charge.try_grow(len as usize) {
            return RequestBody::OverBudget(prefixed(Vec::new(), body));
        }
        buffer.reserve_exact(len as usize);
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return RequestBody::Unreadable(error),
        };
        // Request trailers are rare and not compared; they are dropped along with the frame.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let needed = buffer.len() + data.len();
        if needed > limit {
            charge.shrink_to(0);
            return RequestBody::TooLarge(prefixed(vec![Bytes::from(buffer), data], body));
        }
        if needed > buffer.capacity() {
            // No (or a wrong) announced length: grow by doubling, never past the limit.
            let target = needed.max((2 * buffer.capacity()).max(FIRST_CAPACITY).min(limit));
            if !charge.try_grow(target - buffer.capacity()) {
                charge.shrink_to(0);
                return RequestBody::OverBudget(prefixed(vec![Bytes::from(buffer), data], body));
            }
            buffer.reserve_exact(target - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    RequestBody::Buffered(Bytes::from(buffer))
}

/// The smallest buffer a body of unknown length starts with.
const FIRST_CAPACITY: usize = 8 << 10;
