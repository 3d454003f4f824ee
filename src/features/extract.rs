//! A request's features, the things a change can depend on: its method, each templated path segment's value,
//! each query parameter's presence and value, header values, a JSON body's top-level fields; numbers also by
//! their last digit, parity and magnitude. Capped per request, values cut, secrets redacted or left out.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use crate::encoding::{REDACTED_MARK, percent_decode};
use crate::features::Features;
use crate::redact::Redactor;

/// Longest feature name or value kept, in bytes (cut at a character boundary).
pub const MAX_TEXT: usize = 64;
/// Per request at most: path parameters, query parameters, headers and body fields counted; the rest of each
/// is counted as dropped.
pub const MAX_PATH_PARAMS: usize = 8;
pub const MAX_QUERY_PARAMS: usize = 16;
pub const MAX_HEADERS: usize = 32;
pub const MAX_BODY_FIELDS: usize = 16;
/// Largest JSON body whose top-level fields are read: a bigger one is not worth its parse on the shadow lane.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// What a request looks like to extraction: stored or live, it has the same parts.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Path and query, as received.
    pub target: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
}

/// How values are protected before they are counted or compared with counted ones.
pub trait Redaction {
    /// Whether a header's value is a secret, left out altogether.
    fn is_secret_header(&self, name: &str) -> bool;
    /// A query parameter's value as stored (`raw` percent-encoded as it came): a secret one redacted.
    fn query_value<'a>(&self, name: &str, raw: &'a str) -> Cow<'a, str>;
    /// A header's value as stored: a URL's secret query parameters redacted.
    fn header_value(&self, name: &str, value: &[u8]) -> String;
    /// Any other text as stored (a path segment's value, a body field's name): its personal data redacted.
    fn text<'a>(&self, text: &'a str) -> Cow<'a, str>;
    /// A value as counted (a path parameter's, a query parameter's or a header's, after the above): itself,
    /// unless samples are sealed ([`Tokens`]).
    fn counted<'a>(&self, value: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(value)
    }
}

/// With sealed samples (`--sample-recipient`), values are counted as their keyed hash (`redacted:<hex>`), so
/// that the run's sketches hold no value in clear while equal values still count together and a predictor
/// still names one; a number's classes (last digit, parity, magnitude) are counted as they are. A value that
/// already is a hash is counted as it is.
pub struct Tokens<'a, R> {
    pub inner: &'a R,
    pub redactor: &'a Redactor,
}

impl<R: Redaction> Redaction for Tokens<'_, R> {
    fn is_secret_header(&self, name: &str) -> bool {
        self.inner.is_secret_header(name)
    }

    fn query_value<'a>(&self, name: &str, raw: &'a str) -> Cow<'a, str> {
        self.inner.query_value(name, raw)
    }

    fn header_value(&self, name: &str, value: &[u8]) -> String {
        self.inner.header_value(name, value)
    }

    fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.inner.text(text)
    }

    fn counted<'a>(&self, value: &'a str) -> Cow<'a, str> {
        if value.starts_with(REDACTED_MARK) {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(self.redactor.token(value.as_bytes()))
        }
    }
}

impl Redaction for Redactor {
    fn is_secret_header(&self, name: &str) -> bool {
        Redactor::is_secret_header(self, name)
    }

    fn query_value<'a>(&self, name: &str, raw: &'a str) -> Cow<'a, str> {
        if self.is_secret_query_param(name) {
            Cow::Owned(self.token(raw.as_bytes()))
        } else {
            Cow::Owned(self.text_values(&percent_decode(raw)).into_owned())
        }
    }

    fn header_value(&self, name: &str, value: &[u8]) -> String {
        Redactor::header_value(self, name, value)
    }

    fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.text_values(text)
    }
}

/// A request stored in a sample, redacted already: its secret query values hold their keyed hash (letters,
/// digits and a colon, which decoding leaves as they are), which is what the features counted from the live
/// request hold too. A secret header's stored value is its keyed hash, which the live side left out: a header
/// holding one is left out here too, whichever list named it secret.
pub struct AlreadyRedacted<'a> {
    pub headers: &'a [(String, String)],
}

impl Redaction for AlreadyRedacted<'_> {
    fn is_secret_header(&self, name: &str) -> bool {
        crate::redact::SECRET_HEADERS.contains(&name)
            || self.headers.iter().any(|(stored, value)| {
                stored.eq_ignore_ascii_case(name) && value.starts_with(REDACTED_MARK)
            })
    }

    fn query_value<'a>(&self, _: &str, raw: &'a str) -> Cow<'a, str> {
        Cow::Owned(percent_decode(raw))
    }

    fn header_value(&self, _: &str, value: &[u8]) -> String {
        String::from_utf8_lossy(value).into_owned()
    }

    fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(text)
    }
}

/// The features of one request to `endpoint` (its name, `GET /orders/{id}`: the template says which path
/// segments are parameters).
pub fn extract(endpoint: &str, request: &RequestParts<'_>, redaction: &impl Redaction) -> Features {
    let mut features = Features::default();
    features.push("method", Some(cut(request.method)));
    // An absolute-form target (as a stored URI may be) counts from its path, as the live one does.
    let target = match request.target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => request.target,
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    path_parameters(&mut features, endpoint, path, redaction);
    if let Some(query) = query {
        query_parameters(&mut features, query, redaction);
    }
    let mut headers = 0;
    for (name, value) in &request.headers {
        if redaction.is_secret_header(name) {
            continue;
        }
        if headers == MAX_HEADERS {
            features.dropped += 1;
            continue;
        }
        headers += 1;
        let value = redaction.header_value(name, value);
        features.push(
            format!("header {}", cut(&name.to_ascii_lowercase())),
            Some(cut(&redaction.counted(&value))),
        );
    }
    body_fields(&mut features, &request.headers, request.body, redaction);
    features.dedup();
    features
}

/// The values of the segments the endpoint's template makes parameters, named by the template up to them
/// (`path /orders/{id}`).
fn path_parameters(
    features: &mut Features,
    endpoint: &str,
    path: &str,
    redaction: &impl Redaction,
) {
    let Some(template) = endpoint
        .split_once(' ')
        .map(|(_, template)| template)
        .filter(|template| template.starts_with('/'))
    else {
        return;
    };
    let mut taken = 0;
    let mut prefix = String::new();
    for (pattern, segment) in template.split('/').zip(path.split('/')).skip(1) {
        prefix.push('/');
        prefix.push_str(pattern);
        if !(pattern.starts_with('{') && pattern.ends_with('}')) {
            continue;
        }
        if taken == MAX_PATH_PARAMS {
            features.dropped += 1;
            continue;
        }
        taken += 1;
        let name = format!("path {}", cut(&prefix));
        with_classes(
            features,
            &name,
            &redaction.text(&percent_decode(segment)),
            redaction,
        );
    }
}

fn query_parameters(features: &mut Features, query: &str, redaction: &impl Redaction) {
    let mut taken = 0;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if taken == MAX_QUERY_PARAMS {
            features.dropped += 1;
            continue;
        }
        taken += 1;
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = format!("query {}", cut(&percent_decode(raw_name)));
        let value = redaction.query_value(raw_name, raw_value);
        with_classes(features, &name, &value, redaction);
    }
}

/// `name = value`, and for a whole number its last digit, parity and magnitude, so that "ends in 7" is seen
/// among thousands of distinct ids.
fn with_classes(features: &mut Features, name: &str, value: &str, redaction: &impl Redaction) {
    features.push(name.to_string(), Some(cut(&redaction.counted(value))));
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return;
    }
    let last = &digits[digits.len() - 1..];
    let parity = if (digits.as_bytes()[digits.len() - 1] - b'0').is_multiple_of(2) {
        "even"
    } else {
        "odd"
    };
    let significant = digits.trim_start_matches('0').len().max(1);
    features.push(format!("{name} last digit"), Some(last.to_string()));
    features.push(format!("{name} parity"), Some(parity.to_string()));
    features.push(
        format!("{name} magnitude"),
        Some(format!("10^{}", significant - 1)),
    );
}

/// The top-level field names of a JSON object body, as presence features.
fn body_fields(
    features: &mut Features,
    headers: &[(&str, &[u8])],
    body: &[u8],
    redaction: &impl Redaction,
) {
    if body.is_empty() || body.len() > MAX_BODY_BYTES {
        return;
    }
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| String::from_utf8_lossy(value).to_ascii_lowercase())
    };
    // A body still encoded cannot be read here; a body that is not JSON has no fields.
    if header("content-encoding").is_some_and(|encoding| encoding.trim() != "identity") {
        return;
    }
    let json = header("content-type").is_some_and(|kind| kind.contains("json"))
        || body.trim_ascii_start().first() == Some(&b'{');
    if !json {
        return;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let Ok(fields) = de::Deserializer::deserialize_any(&mut deserializer, TopLevelFields) else {
        return;
    };
    features.dropped += fields.dropped;
    for name in fields.names {
        features.push(format!("body field {}", cut(&redaction.text(&name))), None);
    }
}

/// The first [`MAX_BODY_FIELDS`] keys of a JSON object, the values skipped unread.
struct TopLevelFields;

struct FieldNames {
    names: Vec<String>,
    dropped: u32,
}

impl<'de> Visitor<'de> for TopLevelFields {
    type Value = FieldNames;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldNames, A::Error> {
        let mut fields = FieldNames {
            names: Vec::new(),
            dropped: 0,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            map.next_value::<IgnoredAny>()?;
            if fields.names.len() == MAX_BODY_FIELDS {
                fields.dropped += 1;
            } else if !fields.names.iter().any(|known| *known == key) {
                fields.names.push(key.into_owned());
            }
        }
        Ok(fields)
    }
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(b"key".to_vec(), &[])
    }

    fn features_of(endpoint: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Features {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_bytes()))
            .collect();
        let request = RequestParts {
            method: "GET",
            target,
            headers,
            body: body.as_bytes(),
        };
        extract(endpoint, &request, &redactor())
    }

    fn has(features: &Features, name: &str, value: Option<&str>) -> bool {
        features
            .list
            .iter()
            .any(|(n, v)| n == name && v.as_deref() == value)
    }

    #[test]
    fn names_the_parts_a_change_can_depend_on() {
        let features = features_of(
            "GET /orders/{id}",
            "/orders/1047?currency=EUR&page=2&token=s3cret",
            &[("X-Client", "ios/5.2"), ("authorization", "Bearer abc")],
            "",
        );
        assert!(has(&features, "method", Some("GET")));
        assert!(has(&features, "path /orders/{id}", Some("1047")));
        assert!(has(&features, "path /orders/{id} last digit", Some("7")));
        assert!(has(&features, "path /orders/{id} parity", Some("odd")));
        assert!(has(&features, "path /orders/{id} magnitude", Some("10^3")));
        assert!(has(&features, "query currency", Some("EUR")));
        assert!(has(&features, "query page last digit", Some("2")));
        assert!(has(&features, "header x-client", Some("ios/5.2")));
        let token = redactor().token(b"s3cret");
        assert!(has(&features, "query token", Some(token.as_str())));
        assert!(
            !features
                .list
                .iter()
                .any(|(n, _)| n == "header authorization"),
            "secret headers are left out"
        );
        assert!(
            !features
                .list
                .iter()
                .any(|(_, v)| v.as_deref() == Some("s3cret"))
        );
    }

    #[test]
    fn sealed_values_count_as_tokens_and_numbers_keep_their_classes() {
        let request = RequestParts {
            method: "GET",
            target: "/orders/1047?country=DE&token=s3cret",
            headers: vec![("x-client", b"ios/5.2".as_slice())],
            body: b"",
        };
        let redactor = redactor();
        let tokens = Tokens {
            inner: &redactor,
            redactor: &redactor,
        };
        let features = extract("GET /orders/{id}", &request, &tokens);
        let token = |value: &[u8]| redactor.token(value);
        assert!(has(&features, "method", Some("GET")));
        assert!(has(
            &features,
            "path /orders/{id}",
            Some(token(b"1047").as_str())
        ));
        assert!(has(&features, "path /orders/{id} last digit", Some("7")));
        assert!(has(&features, "query country", Some(token(b"DE").as_str())));
        assert!(has(
            &features,
            "query token",
            Some(token(b"s3cret").as_str())
        ));
        assert!(has(
            &features,
            "header x-client",
            Some(token(b"ios/5.2").as_str())
        ));
        for plain in ["1047", "DE", "ios/5.2"] {
            assert!(
                !features
                    .list
                    .iter()
                    .any(|(_, v)| v.as_deref() == Some(plain))
            );
        }
    }

    #[test]
    fn a_urls_secret_in_a_header_is_redacted_as_samples_have_it() {
        let features = features_of(
            "GET /a",
            "/a",
            &[("referer", "https://shop.example/?code=s3cret&x=1")],
            "",
        );
        let stored = redactor().header_value("referer", b"https://shop.example/?code=s3cret&x=1");
        assert!(
            has(&features, "header referer", Some(stored.as_str())),
            "{features:?}"
        );
        assert!(!stored.contains("s3cret"));
        // A stored sample's redacted header is left out, as the live secret one was.
        let headers = vec![("x-token".to_string(), redactor().token(b"t"))];
        let request = RequestParts {
            method: "GET",
            target: "/a",
            headers: vec![("x-token", headers[0].1.as_bytes())],
            body: b"",
        };
        let stored = extract("GET /a", &request, &AlreadyRedacted { headers: &headers });
        assert!(!stored.list.iter().any(|(n, _)| n == "header x-token"));
    }

    #[test]
    fn reads_a_json_bodys_top_level_fields_only() {
        let features = features_of(
            "POST /carts",
            "/carts",
            &[("content-type", "application/json")],
            r#"{"coupon": {"code": "X"}, "items": [1, 2], "coupon": 1}"#,
        );
        assert!(has(&features, "body field coupon", None));
        assert!(has(&features, "body field items", None));
        assert!(!features.list.iter().any(|(n, _)| n == "body field code"));
        let not_json = features_of("POST /carts", "/carts", &[], "coupon=1");
        assert!(!not_json.list.iter().any(|(n, _)| n.starts_with("body")));
        let broken = features_of("POST /carts", "/carts", &[], "{\"a\": ");
        assert!(!broken.list.iter().any(|(n, _)| n.starts_with("body")));
    }

    #[test]
    fn caps_what_one_request_can_add() {
        let query: Vec<String> = (0..1_000).map(|n| format!("p{n}=v")).collect();
        let long = "é".repeat(100);
        let target = format!("/search?{}&q={long}", query.join("&"));
        let features = features_of("GET /search", &target, &[], "");
        let query_names = features
            .list
            .iter()
            .filter(|(n, _)| n.starts_with("query "))
            .count();
        assert_eq!(query_names, MAX_QUERY_PARAMS);
        assert_eq!(features.dropped, 1_000 + 1 - MAX_QUERY_PARAMS as u32);
        let values_fit = features.list.iter().all(|(n, v)| {
            n.len() <= MAX_TEXT + 40 && v.as_ref().is_none_or(|v| v.len() <= MAX_TEXT)
        });
        assert!(values_fit);
    }

    #[test]
    fn stored_requests_give_the_features_live_ones_gave() {
        let live = features_of("GET /a", "/a?token=s3cret&x=1", &[], "");
        let stored_target = redactor().uri("/a?token=s3cret&x=1").into_owned();
        let request = RequestParts {
            method: "GET",
            target: &stored_target,
            headers: Vec::new(),
            body: b"",
        };
        let stored = extract("GET /a", &request, &AlreadyRedacted { headers: &[] });
        assert_eq!(live.list, stored.list);
    }
}
