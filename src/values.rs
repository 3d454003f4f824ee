//! The values settings take, with their text forms: upstream URLs, byte sizes, durations, method lists and rates.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};

/// The base URL of an upstream: `http` or `https`, a host, and an optional path prefix that every forwarded
/// path is appended to (`http://10.0.0.5:8080/api` sends `/users/1` to `/api/users/1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    scheme: Scheme,
    authority: Authority,
    /// The path prefix without a trailing slash; empty when the URL has no path.
    prefix: String,
}

impl UpstreamUrl {
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The absolute URI of `path_and_query` on this upstream, with the prefix in front; `None` when the result
    /// is not a valid URI (longer than a URI may be).
    /// Dot segments (`.`, `..`, also percent-encoded) are resolved first, so that no request climbs above
    /// the prefix.
    pub fn join(&self, path_and_query: &str) -> Option<Uri> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let path = resolve_dot_segments(path);
        let mut joined = String::with_capacity(self.prefix.len() + path_and_query.len() + 1);
        joined.push_str(&self.prefix);
        if !path.starts_with('/') {
            joined.push('/');
        }
        joined.push_str(&path);
        if let Some(query) = query {
            joined.push('?');
            joined.push_str(query);
        }
        let path_and_query = PathAndQuery::from_maybe_shared(joined).ok()?;
        self.with_path_and_query(path_and_query)
    }

    /// As [`UpstreamUrl::join`] with a request's URI. Without a prefix, a path with no dot segments is forwarded
    /// as it came, so its (already parsed) path and query are reused rather than written out and parsed again.
    pub fn join_uri(&self, uri: &Uri) -> Option<Uri> {
        if let Some(path_and_query) = uri.path_and_query()
            && self.prefix.is_empty()
            && path_and_query.path().starts_with('/')
            && matches!(
                resolve_dot_segments(path_and_query.path()),
                std::borrow::Cow::Borrowed(_)
            )
        {
            return self.with_path_and_query(path_and_query.clone());
        }
        self.join(uri.path_and_query().map_or("/", PathAndQuery::as_str))
    }

    /// The upstream's scheme and authority, with the root path: where its connections go.
    pub fn origin(&self) -> Uri {
        self.with_path_and_query(PathAndQuery::from_static("/"))
            .expect("an upstream URL's scheme and authority make a URI")
    }

    fn with_path_and_query(&self, path_and_query: PathAndQuery) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok()
    }
}

/// A path with its `.` and `..` segments resolved (RFC 3986 §5.2.4), counting percent-encoded dots too
/// (servers decode `%2e%2e` into `..`); a `..` at the root stays at the root.
pub fn resolve_dot_segments(path: &str) -> std::borrow::Cow<'_, str> {
    // Each segment of every forwarded path is looked at: this allocates nothing unless a dot segment is found.
    fn dots(segment: &str) -> Option<usize> {
        let mut rest = segment.as_bytes();
        let mut count = 0;
        while !rest.is_empty() && count < 3 {
            if let Some(after) = rest.strip_prefix(b".") {
                rest = after;
            } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
                rest = &rest[3..];
            } else {
                return None;
            }
            count += 1;
        }
        (rest.is_empty() && (1..=2).contains(&count)).then_some(count)
    }
    if !path.split('/').any(|segment| dots(segment).is_some()) {
        return std::borrow::Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (at, segment) in segments.iter().enumerate().skip(1) {
        match dots(segment) {
            Some(count) => {
                if count == 2 {
                    kept.pop();
                }
                // A path ending in a dot segment names a directory: keep its trailing slash.
                if at == last {
                    kept.push("");
                }
            }
            None => kept.push(segment),
        }
    }
    std::borrow::Cow::Owned(format!("/{}", kept.join("/")))
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected e.g. http://10.0.0.5:8080"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| "missing scheme; expected http:// or https://".to_string())?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!(
                "unsupported scheme `{scheme}`; expected http or https"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "missing host".to_string())?;
        if authority.host().is_empty() {
            return Err("missing host".to_string());
        }
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".to_string());
        }
        if uri.query().is_some() {
            return Err("a query string is not allowed in an upstream URL".to_string());
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// A size in bytes written as `8MiB`, `512KiB`, `1GiB`, `64kB` or a bare number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| {
            format!("`{text}` is not a size; expected e.g. 8MiB, 512KiB or 1048576")
        })?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "kb" => 1_000,
            "m" | "mib" => 1 << 20,
            "mb" => 1_000_000,
            "g" | "gib" => 1 << 30,
            "gb" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit `{other}`; use B, KiB, MiB or GiB"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration written as `5s`, `250ms`, `2m` or `7d`; its text form reads back as the same duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The largest unit that divides it exactly, as people write it in flags: `7d`, `30s`, `100ms`.
        const UNITS: [(u128, &str); 5] = [
            (86_400_000_000_000, "d"),
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
        ];
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        match UNITS.iter().find(|(size, _)| nanos.is_multiple_of(*size)) {
            Some((size, unit)) => write!(f, "{}{unit}", nanos / size),
            None => write!(f, "{}", humantime::format_duration(self.0)),
        }
    }
}

impl From<Span> for Duration {
    fn from(span: Span) -> Duration {
        span.0
    }
}

/// Parses a duration written as `5s`, `250ms`, `2m` or `7d`.
pub fn parse_span(text: &str) -> Result<Span, String> {
    parse_duration(text).map(Span)
}

/// Parses a period that paces something repeating (see [`parse_interval`]).
pub fn parse_interval_span(text: &str) -> Result<Span, String> {
    parse_interval(text).map(Span)
}

/// Parses a duration written as `5s`, `250ms`, `2m` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); expected e.g. 5s, 250ms or 2m"))?;
    // Timers and deadlines add durations to the clock: a value this large is a typo, and could overflow it.
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is too long; at most 10 years"));
    }
    Ok(duration)
}

/// Longest duration any setting takes.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration that paces something repeating: more than zero (a zero period would never let the task rest).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(duration)
}

/// A fraction in [0, 1], written as `0.25` or `25%`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Fraction(pub f64);

impl FromStr for Fraction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let value = match text.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => text.parse::<f64>(),
        }
        .map_err(|_| {
            format!("`{text}` is not a fraction; expected a number from 0 to 1, or a percentage")
        })?;
        if !(0.0..=1.0).contains(&value) {
            return Err(format!(
                "`{text}` is out of range; expected 0 to 1 (or 0% to 100%)"
            ));
        }
        Ok(Self(value))
    }
}

impl fmt::Display for Fraction {
    /// `0`, `1`, or a percentage (`1%`, `12.5%`) in between.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 <= 0.0 || self.0 >= 1.0 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}%", (self.0 * 100.0 * 1e6).round() / 1e6)
        }
    }
}

/// Networks whose callers' forwarded headers (`X-Forwarded-*`, `Forwarded`) are believed: load balancers and
/// proxies in front. Written as `CIDR,...` (`10.0.0.0/8,192.0.2.7`), or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Loopback and the private ranges, where load balancers in front of a service usually are.
    pub fn private_ranges() -> Self {
        Self(vec![
            (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
            (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
            (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
        ])
    }

    /// Nobody: every caller's forwarded headers are replaced.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 caller on an IPv6 socket arrives mapped (`::ffff:10.0.0.1`).
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.0
            .iter()
            .any(|(network, prefix)| match (network, address) {
                (IpAddr::V4(network), IpAddr::V4(address)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    u32::from(*network) & mask == u32::from(address) & mask
                }
                (IpAddr::V6(network), IpAddr::V6(address)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                    u128::from(*network) & mask == u128::from(address) & mask
                }
                _ => false,
            })
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(Self::none());
        }
        let mut networks = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (address, prefix) = match item.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (item, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("`{item}` is not an address or CIDR network"))?;
            let longest = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= longest)
                    .ok_or_else(|| format!("`{item}` has a prefix length out of range"))?,
                None => longest,
            };
            networks.push((address, prefix));
        }
        if networks.is_empty() {
            return Err("the list is empty; write `none` to trust no one".to_string());
        }
        Ok(Self(networks))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(address, prefix)| format!("{address}/{prefix}"))
            .collect();
        f.write_str(&items.join(","))
    }
}

/// A comma-separated list of HTTP methods, such as `GET,HEAD,OPTIONS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodList(pub Vec<Method>);

impl MethodList {
    pub fn contains(&self, method: &Method) -> bool {
        self.0.contains(method)
    }
}

impl FromStr for MethodList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut methods = Vec::new();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("`{name}` is not an HTTP method"))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if methods.is_empty() {
            return Err("the method list is empty".to_string());
        }
        Ok(Self(methods))
    }
}

impl fmt::Display for MethodList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(Method::as_str).collect();
        write!(f, "{}", names.join(","))
    }
}

/// A count of threads or workers: as configured, or one per core (2 when the core count cannot be read).
pub fn one_per_core(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Checks the unit tests of every parser share.
#[cfg(test)]
pub(crate) mod parse_checks {
    use std::fmt::Display;
    use std::str::FromStr;

    /// Each text is refused.
    pub(crate) fn assert_rejected<T: FromStr>(texts: &[&str]) {
        for text in texts {
            assert!(text.parse::<T>().is_err(), "{text}");
        }
    }

    /// Each text is refused with an error that names the reason given beside it.
    pub(crate) fn assert_rejected_for<T: FromStr>(cases: &[(&str, &str)])
    where
        T::Err: Display,
    {
        for (text, reason) in cases {
            match text.parse::<T>() {
                Ok(_) => panic!("{text}: accepted"),
                Err(error) => assert!(error.to_string().contains(reason), "{text}: {error}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_checks::{assert_rejected, assert_rejected_for};
    use super::*;

    #[test]
    fn trusted_proxies_are_networks_or_none() {
        let private = TrustedProxies::private_ranges();
        for trusted in [
            "127.0.0.1",
            "10.2.3.4",
            "172.31.0.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(private.contains(trusted.parse().unwrap()), "{trusted}");
        }
        for outside in ["203.0.113.7", "172.32.0.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!private.contains(outside.parse().unwrap()), "{outside}");
        }
        let parsed: TrustedProxies = private.to_string().parse().unwrap();
        assert_eq!(parsed, private);
        let none: TrustedProxies = "none".parse().unwrap();
        assert!(!none.contains("127.0.0.1".parse().unwrap()));
        let one: TrustedProxies = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert_rejected::<TrustedProxies>(&["10.0.0.0/33", "", "example.com"]);
    }

    #[test]
    fn dot_segments_never_climb_above_an_upstream_prefix() {
        let url: UpstreamUrl = "http://10.0.0.5:8080/api".parse().unwrap();
        for (caller, sent) in [
            ("/../x", "/api/x"),
            ("/a/../../etc/passwd?q=..", "/api/etc/passwd?q=.."),
            ("/%2e%2E/secret", "/api/secret"),
            ("/a/./b/.", "/api/a/b/"),
            ("/a/b/..", "/api/a/"),
            ("/plain/path", "/api/plain/path"),
        ] {
            let joined = url.join(caller).unwrap();
            assert_eq!(joined.path_and_query().unwrap().as_str(), sent, "{caller}");
        }
    }

    #[test]
    fn a_request_uri_is_joined_as_its_text_would_be() {
        for base in [
            "http://10.0.0.5:8080",
            "http://10.0.0.5:8080/api",
            "https://a.example/",
        ] {
            let url: UpstreamUrl = base.parse().unwrap();
            for caller in [
                "/",
                "/users/42?expand=orders&x=%20",
                "/../x",
                "/a/./b/.",
                "/%2e%2E/secret?q=..",
                "http://caller.example/abs/path?q=1",
                "*",
            ] {
                let uri: Uri = caller.parse().unwrap();
                let text = uri.path_and_query().map_or("/", PathAndQuery::as_str);
                assert_eq!(url.join_uri(&uri), url.join(text), "{base} {caller}");
            }
        }
    }

    #[test]
    fn durations_and_fractions_read_back_as_written() {
        for text in ["0s", "7d", "2h", "5m", "30s", "100ms", "1500ms"] {
            let span = parse_span(text).unwrap();
            assert_eq!(span.to_string(), text);
        }
        assert_eq!(parse_span("90s").unwrap().to_string(), "90s");
        for text in ["0", "1", "1%", "12.5%"] {
            let fraction: Fraction = text.parse().unwrap();
            assert_eq!(fraction.to_string(), text);
            assert_eq!(fraction.to_string().parse::<Fraction>().unwrap(), fraction);
        }
    }

    #[test]
    fn upstream_url_keeps_a_path_prefix_and_joins_paths() {
        let url: UpstreamUrl = "http://10.0.0.5:8080/api/".parse().unwrap();
        assert_eq!(url.prefix(), "/api");
        assert_eq!(
            url.join("/users/1?x=2").unwrap().to_string(),
            "http://10.0.0.5:8080/api/users/1?x=2"
        );
        assert!(url.join(&format!("/{}", "a".repeat(70_000))).is_none());
        let bare: UpstreamUrl = "https://example.com".parse().unwrap();
        assert!(bare.is_https());
        assert_eq!(bare.prefix(), "");
        assert_eq!(bare.join("/").unwrap().to_string(), "https://example.com/");
    }

    #[test]
    fn upstream_url_rejects_what_it_cannot_forward_to() {
        assert_rejected_for::<UpstreamUrl>(&[
            ("localhost:8080", "scheme"),
            ("ftp://example.com", "unsupported scheme"),
            ("http://", "URL"),
            ("http://example.com/?q=1", "query"),
            ("http://user:pw@example.com", "credentials"),
            ("not a url", "URL"),
        ]);
    }

    #[test]
    fn byte_sizes_in_binary_and_decimal_units() {
        assert_eq!("8MiB".parse::<ByteSize>().unwrap(), ByteSize(8 << 20));
        assert_eq!("512kib".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert_eq!("64kB".parse::<ByteSize>().unwrap(), ByteSize(64_000));
        assert_eq!("1024".parse::<ByteSize>().unwrap(), ByteSize(1024));
        assert_rejected::<ByteSize>(&["8 parsecs", "99999999999999GiB"]);
        assert_eq!(ByteSize(8 << 20).to_string(), "8MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn fractions_accept_decimals_and_percentages() {
        assert_eq!("0.25".parse::<Fraction>().unwrap(), Fraction(0.25));
        assert_eq!("5%".parse::<Fraction>().unwrap(), Fraction(0.05));
        assert_rejected::<Fraction>(&["1.5", "-1", "half"]);
    }

    #[test]
    fn method_lists_are_case_insensitive_and_deduplicated() {
        let list: MethodList = "get, POST,get".parse().unwrap();
        assert_eq!(list.0, vec![Method::GET, Method::POST]);
        assert_rejected::<MethodList>(&[",", "GE T"]);
    }

    #[test]
    fn durations_in_human_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }
}
