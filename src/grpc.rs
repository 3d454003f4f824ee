//! gRPC messages as the engine compares them: the framing split (`frame`), the schemas that name a method's
//! types (`schema`: descriptor sets, `.proto` files compiled at start), and messages decoded to proto3 JSON, or
//! keyed by field number when no schema knows them (`decode`), and a call's status from its trailers (`status`).

pub mod decode;
pub mod frame;
pub mod reflection;
pub mod renamed;
pub mod schema;
pub mod status;

use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// Whether a request is a gRPC call: `application/grpc`, alone or with a `+codec` or parameters. gRPC-Web
/// (`application/grpc-web`) is not: it runs over HTTP/1.1 with its trailers in the body.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some(rest) = value
        .get(..PREFIX.len())
        .filter(|head| head.eq_ignore_ascii_case(PREFIX))
        .map(|_| &value[PREFIX.len()..])
    else {
        return false;
    };
    rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
}

const PREFIX: &str = "application/grpc";

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, value.parse().unwrap());
        headers
    }

    #[test]
    fn grpc_content_types_are_calls_and_grpc_web_is_not() {
        for value in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=x",
        ] {
            assert!(is_grpc(&with_type(value)), "{value}");
        }
        for value in [
            "application/grpc-web",
            "application/json",
            "application/grp",
            "text/plain",
        ] {
            assert!(!is_grpc(&with_type(value)), "{value}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
