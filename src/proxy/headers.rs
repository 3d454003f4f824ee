//! Header hygiene: hop-by-hop headers stay behind, X-Forwarded-* are set, Host is chosen per upstream.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
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
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

/// The standard `Forwarded` header (RFC 7239), which untrusted callers must not set either.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Removes the forwarded headers a caller that is not a trusted proxy sent (it could claim to be anyone, or
/// claim https); whether there were any.
pub fn drop_untrusted_forwarded(headers: &mut HeaderMap) -> bool {
    let mut dropped = false;
    for name in [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        FORWARDED,
    ] {
        dropped |= headers.remove(name).is_some();
    }
    dropped
}

/// Sets the X-Forwarded-* headers: the caller's address is appended to X-Forwarded-For; X-Forwarded-Proto and
/// X-Forwarded-Host are set unless a proxy in front already set them (untrusted callers' ones are dropped
/// first, see [`drop_untrusted_forwarded`]).
pub fn add_forwarded(headers: &mut HeaderMap, caller: IpAddr, original_host: Option<&HeaderValue>) {
    // Every X-Forwarded-For line counts, in order.
    let mut chain: Vec<String> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_string())
        .filter(|value| !value.is_empty())
        .collect();
    chain.push(caller.to_string());
    let forwarded_for = chain.join(", ");
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
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

/// Sets the Host header for one upstream.
pub fn set_host(headers: &mut HeaderMap, host: &str, shadow_suffix: bool) {
    let host = if shadow_suffix {
        shadow_host(host)
    } else {
        host.to_string()
    };
    if let Ok(value) = HeaderValue::from_str(&host) {
        headers.insert(HOST, value);
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
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(&HeaderValue::from_static("api.example")),
        );
        assert_eq!(headers[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "api.example");

        let mut behind_lb = HeaderMap::new();
        behind_lb.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        behind_lb.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        behind_lb.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(&mut behind_lb, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), None);
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
