//! Header hygiene: hop-by-hop headers stay behind, X-Forwarded-* are set, Host is chosen per upstream.

use std::net::IpAddr;

use http::header::{CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Tells secondary and candidate that a request is a shadow copy: `secondary` or `candidate`.
pub const ROLE_HEADER: HeaderName = HeaderName::from_static("x-shadowdiff-role");

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1): Connection and
/// every header it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade and every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_with(headers, |_| false);
}

/// As [`strip_hop_by_hop`], removing also the headers `also` picks. Each name is looked at once and only the
/// headers present are removed: on the caller's path this runs twice per request, and a removal by name hashes
/// it.
pub fn strip_with(headers: &mut HeaderMap, mut also: impl FnMut(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for name in headers.keys() {
        if name == CONNECTION {
            connection = true;
        }
        if is_hop_by_hop(name) || also(name) {
            doomed.push(name.clone());
        }
    }
    if connection {
        doomed.extend(
            headers
                .get_all(CONNECTION)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok()),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        CONNECTION,
        KEEP_ALIVE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ]
    .contains(name)
        || name.as_str().starts_with("proxy-")
}

/// The standard `Forwarded` header (RFC 7239), which untrusted callers must not set either.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The forwarded headers, which a caller that is not a trusted proxy must not set (it could claim to be anyone,
/// or claim https).
pub fn is_forwarded(name: &HeaderName) -> bool {
    [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        FORWARDED,
    ]
    .contains(name)
}

/// A caller's address as X-Forwarded-For writes it, made once per connection.
pub fn forwarded_for(caller: IpAddr) -> HeaderValue {
    HeaderValue::try_from(caller.to_string()).expect("an IP address is a valid header value")
}

/// Sets the X-Forwarded-* headers: the caller's address (from [`forwarded_for`]) is appended to
/// X-Forwarded-For; X-Forwarded-Proto and X-Forwarded-Host are set unless a proxy in front already set them
/// (an untrusted caller's ones are removed first, see [`is_forwarded`]).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    caller: &HeaderValue,
    original_host: Option<&HeaderValue>,
) {
    let value = if headers.contains_key(X_FORWARDED_FOR) {
        // Every X-Forwarded-For line counts, in order.
        let mut chain: Vec<String> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_string())
            .filter(|value| !value.is_empty())
            .collect();
        chain.push(String::from_utf8_lossy(caller.as_bytes()).into_owned());
        HeaderValue::from_str(&chain.join(", ")).ok()
    } else {
        Some(caller.clone())
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = original_host
        && !headers.contains_key(X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// The Host with Envoy's shadow suffix: `api.internal:8080` becomes `api.internal-shadow:8080`.
pub fn shadow_host(host: &str) -> String {
    // An IPv6 literal keeps its brackets; the suffix goes after the host part, before any port.
    let (name, port) = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => host.split_at(colon),
        _ => (host, ""),
    };
    format!("{name}-shadow{port}")
}

/// The Host header for one upstream (with the shadow suffix if asked); `None` if it cannot be a header value.
pub fn host_value(host: &str, shadow_suffix: bool) -> Option<HeaderValue> {
    if shadow_suffix {
        HeaderValue::try_from(shadow_host(host)).ok()
    } else {
        HeaderValue::from_str(host).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-session-hop"),
            ("x-session-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["accept", "authorization"]);
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_host_are_kept_when_set() {
        let mut headers = HeaderMap::new();
        add_forwarded(
            &mut headers,
            &forwarded_for(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(&HeaderValue::from_static("api.example")),
        );
        assert_eq!(headers[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "api.example");

        let mut behind_lb = HeaderMap::new();
        behind_lb.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        behind_lb.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        behind_lb.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(
            &mut behind_lb,
            &forwarded_for(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            None,
        );
        assert_eq!(
            behind_lb[X_FORWARDED_FOR],
            "198.51.100.1, 203.0.113.9, 10.0.0.2"
        );
        assert_eq!(behind_lb.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(behind_lb[X_FORWARDED_PROTO], "https");
        assert!(!behind_lb.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("api.internal"), "api.internal-shadow");
        assert_eq!(shadow_host("api.internal:8080"), "api.internal-shadow:8080");
        assert_eq!(shadow_host("[::1]:8080"), "[::1]-shadow:8080");
        assert_eq!(shadow_host("[::1]"), "[::1]-shadow");
    }
}
