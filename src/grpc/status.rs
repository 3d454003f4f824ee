//! A call's outcome: `grpc-status` (with `grpc-message`, percent-encoded on the wire) from the trailers, or from
//! the headers of a trailers-only answer.

use http::HeaderMap;

/// A gRPC status: its code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl Status {
    /// The status the trailers (or, for a trailers-only answer, the headers) carry; `None` when neither does.
    pub fn of(trailers: Option<&HeaderMap>, headers: &HeaderMap) -> Option<Self> {
        let from = |map: &HeaderMap| {
            let code = map.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
            let message = map
                .get("grpc-message")
                .map(|value| percent_decode(value.as_bytes()))
                .unwrap_or_default();
            Some(Status { code, message })
        };
        trailers.and_then(from).or_else(|| from(headers))
    }

    /// The code's name (`OK`, `NOT_FOUND`, ...), or its number for one gRPC does not define.
    pub fn name(&self) -> String {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        usize::try_from(self.code)
            .ok()
            .and_then(|code| NAMES.get(code))
            .map_or_else(|| self.code.to_string(), |name| (*name).to_string())
    }
}

/// `grpc-message` is percent-encoded (RFC 3986 style, UTF-8); a bad escape is kept as written.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn the_status_comes_from_the_trailers_or_a_trailers_only_answer() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("order%20o-1%20not%20found%2"),
        );
        let status = Status::of(Some(&trailers), &HeaderMap::new()).unwrap();
        assert_eq!(status.code, 5);
        assert_eq!(status.message, "order o-1 not found%2");
        assert_eq!(status.name(), "NOT_FOUND");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(Status::of(None, &headers).unwrap().name(), "OK");
        assert_eq!(
            Status::of(Some(&HeaderMap::new()), &headers).unwrap().code,
            0
        );
        assert_eq!(Status::of(None, &HeaderMap::new()), None);
        let odd = Status {
            code: 99,
            message: String::new(),
        };
        assert_eq!(odd.name(), "99");
    }
}
