//! The gRPC length-prefixed framing: each message a compressed flag byte, a 4-byte big-endian length and the
//! bytes, compressed per message when `grpc-encoding` names a codec (gzip and identity are read).

use std::io::Read;

/// Why a body is not a well-formed sequence of gRPC messages: a counted skip, never a caller-visible error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message {index} is cut short: {have} of its {want} bytes")]
    Truncated {
        index: usize,
        have: usize,
        want: usize,
    },
    #[error("message {index}'s prefix is cut short ({have} of 5 bytes)")]
    ShortPrefix { index: usize, have: usize },
    #[error("message {index} has compressed flag {flag} (0 or 1 expected)")]
    BadFlag { index: usize, flag: u8 },
    #[error("message {index} is compressed but no grpc-encoding says how")]
    NoEncoding { index: usize },
    #[error(
        "message {index} is compressed with `{encoding}`, which is not read (gzip and identity are)"
    )]
    UnknownEncoding { index: usize, encoding: String },
    #[error("message {index} is not valid gzip: {reason}")]
    BadGzip { index: usize, reason: String },
    #[error("the messages are larger than {max} bytes together by message {index}")]
    TooLarge { index: usize, max: usize },
}

/// The messages of a body (request or response), decompressed, in order; at most `max_total` bytes all
/// together once decompressed (and each before), so that neither a length prefix nor gzip bombs, one or many,
/// can make it hold more.
pub fn split(
    body: &[u8],
    encoding: Option<&str>,
    max_total: usize,
) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut rest = body;
    while !rest.is_empty() {
        let max_message = max_total - total;
        let index = messages.len();
        if rest.len() < 5 {
            return Err(FrameError::ShortPrefix {
                index,
                have: rest.len(),
            });
        }
        let flag = rest[0];
        let want = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if want > max_message {
            return Err(FrameError::TooLarge {
                index,
                max: max_total,
            });
        }
        let data = &rest[5..];
        if data.len() < want {
            return Err(FrameError::Truncated {
                index,
                have: data.len(),
                want,
            });
        }
        let (message, after) = data.split_at(want);
        let message = match flag {
            0 => message.to_vec(),
            1 => {
                decompress(index, message, encoding, max_message).map_err(|error| match error {
                    FrameError::TooLarge { index, .. } => FrameError::TooLarge {
                        index,
                        max: max_total,
                    },
                    other => other,
                })?
            }
            flag => return Err(FrameError::BadFlag { index, flag }),
        };
        total += message.len();
        messages.push(message);
        rest = after;
    }
    Ok(messages)
}

fn decompress(
    index: usize,
    message: &[u8],
    encoding: Option<&str>,
    max_message: usize,
) -> Result<Vec<u8>, FrameError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None => Err(FrameError::NoEncoding { index }),
        Some("identity") => Ok(message.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(message)
                .take(max_message as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|error| FrameError::BadGzip {
                    index,
                    reason: error.to_string(),
                })?;
            if out.len() > max_message {
                return Err(FrameError::TooLarge {
                    index,
                    max: max_message,
                });
            }
            Ok(out)
        }
        Some(other) => Err(FrameError::UnknownEncoding {
            index,
            encoding: other.to_string(),
        }),
    }
}

/// One message framed, uncompressed (for tests and for replaying recorded calls).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::decode::tests::gzip;

    /// `message` gzipped and framed with the compressed flag set.
    fn gzip_frame(message: &[u8]) -> Vec<u8> {
        let mut framed = frame(&gzip(message));
        framed[0] = 1;
        framed
    }

    /// Split with a 64 KiB bound on what gzip gives, `body` stops as too large at message `index`.
    fn assert_too_large_at(body: &[u8], index: usize) {
        assert_eq!(
            split(body, Some("gzip"), 64 << 10),
            Err(FrameError::TooLarge {
                index,
                max: 64 << 10
            })
        );
    }

    #[test]
    fn messages_are_split_and_gzip_ones_decompressed() {
        let mut body = frame(b"first");
        body.extend_from_slice(&gzip_frame(b"second, compressed"));
        body.extend_from_slice(&frame(b""));
        let messages = split(&body, Some("gzip"), 1 << 20).unwrap();
        assert_eq!(
            messages,
            [
                b"first".to_vec(),
                b"second, compressed".to_vec(),
                Vec::new()
            ]
        );
        assert_eq!(split(&[], None, 10).unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn bad_framing_is_named_not_a_panic() {
        let body = frame(b"hello");
        assert_eq!(
            split(&body[..7], None, 100),
            Err(FrameError::Truncated {
                index: 0,
                have: 2,
                want: 5
            })
        );
        assert_eq!(
            split(&body[..3], None, 100),
            Err(FrameError::ShortPrefix { index: 0, have: 3 })
        );
        let mut wrong = body.clone();
        wrong[4] = 200;
        assert!(matches!(
            split(&wrong, None, 100),
            Err(FrameError::TooLarge { .. })
        ));
        let mut flagged = body.clone();
        flagged[0] = 7;
        assert_eq!(
            split(&flagged, None, 100),
            Err(FrameError::BadFlag { index: 0, flag: 7 })
        );
        flagged[0] = 1;
        assert_eq!(
            split(&flagged, None, 100),
            Err(FrameError::NoEncoding { index: 0 })
        );
        assert!(matches!(
            split(&flagged, Some("snappy"), 100),
            Err(FrameError::UnknownEncoding { .. })
        ));
        assert!(matches!(
            split(&flagged, Some("gzip"), 100),
            Err(FrameError::BadGzip { .. })
        ));
    }

    #[test]
    fn many_small_bombs_stop_at_the_bound_for_all_of_them() {
        let body = gzip_frame(&vec![0u8; 20 << 10]).repeat(100);
        assert_too_large_at(&body, 3);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        assert_too_large_at(&gzip_frame(&vec![0u8; 1 << 20]), 0);
    }
}
