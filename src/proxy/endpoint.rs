//! Endpoint names (`GET /users/{id}`): a `Canonical-Resource` header wins, then `--endpoint` templates, then
//! the path with identifier-like segments collapsed to `{id}`.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, Method};

use crate::identifier::is_identifier;

/// The request header a caller can set to name the endpoint itself (Diffy's convention).
pub const CANONICAL_RESOURCE: HeaderName = HeaderName::from_static("canonical-resource");

/// Longest endpoint name kept; longer names are cut, so one odd request cannot make a huge key.
const MAX_ENDPOINT_LEN: usize = 256;

/// Segments of a path template: a literal, or a `{name}` placeholder that matches any one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    Placeholder,
    /// `{name*}` or `*` at the end: matches the rest of the path, one segment or more.
    Rest,
}

/// A user template from `--endpoint`, such as `/users/{id}/orders` or `GET /search/{term}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPattern {
    method: Option<Method>,
    template: String,
    segments: Vec<PatternSegment>,
}

impl EndpointPattern {
    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let mut segments = path_segments(path);
        for (position, expected) in self.segments.iter().enumerate() {
            match expected {
                PatternSegment::Rest => return segments.next().is_some(),
                PatternSegment::Placeholder => {
                    if segments.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                PatternSegment::Literal(literal) => {
                    if segments.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
            // A trailing slash is its own empty segment; it is allowed only where the template ends.
            if position + 1 == self.segments.len() {
                return segments.all(str::is_empty);
            }
        }
        segments.next().is_none()
    }
}

impl FromStr for EndpointPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (method, template) = match text.split_once(' ') {
            Some((method, template)) => {
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("`{method}` is not an HTTP method"))?;
                (Some(method), template.trim())
            }
            None => (None, text),
        };
        if !template.starts_with('/') {
            return Err(format!("endpoint template `{template}` must start with /"));
        }
        let raw_segments: Vec<&str> = path_segments(template).collect();
        let mut segments = Vec::with_capacity(raw_segments.len());
        for (position, segment) in raw_segments.iter().enumerate() {
            let last = position + 1 == raw_segments.len();
            let parsed = if *segment == "*" || (segment.starts_with('{') && segment.ends_with("*}"))
            {
                if !last {
                    return Err(format!(
                        "in `{template}`, a rest placeholder must come last"
                    ));
                }
                PatternSegment::Rest
            } else if segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2 {
                PatternSegment::Placeholder
            } else if segment.contains(['{', '}']) {
                return Err(format!(
                    "in `{template}`, `{segment}` is neither a literal nor a {{name}} placeholder"
                ));
            } else {
                PatternSegment::Literal((*segment).to_string())
            };
            segments.push(parsed);
        }
        Ok(Self {
            method,
            template: template.to_string(),
            segments,
        })
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.method {
            Some(method) => write!(f, "{method} {}", self.template),
            None => f.write_str(&self.template),
        }
    }
}

/// Names requests by endpoint.
#[derive(Clone, Debug, Default)]
pub struct EndpointNamer {
    patterns: Vec<EndpointPattern>,
}

impl EndpointNamer {
    pub fn new(patterns: Vec<EndpointPattern>) -> Self {
        Self { patterns }
    }

    /// `METHOD /template` for a request.
    pub fn name(&self, method: &Method, path: &str, headers: &HeaderMap) -> String {
        let mut name = if let Some(canonical) = headers
            .get(CANONICAL_RESOURCE)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
        {
            format!("{method} {canonical}")
        } else if let Some(pattern) = self.patterns.iter().find(|p| p.matches(method, path)) {
            format!("{method} {}", pattern.template)
        } else {
            format!("{method} {}", templated_path(path))
        };
        if name.len() > MAX_ENDPOINT_LEN {
            let mut cut = MAX_ENDPOINT_LEN;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        name
    }
}

/// Segments of a path after the leading slash (`/a/b/` gives `a`, `b`, ``).
fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// The path with identifier-like segments replaced by `{id}`; a file extension after an identifier is kept
/// (`/files/123.json` gives `/files/{id}.json`).
pub fn templated_path(path: &str) -> String {
    if path.is_empty() || path == "/" {
        return "/".to_string();
    }
    let mut out = String::with_capacity(path.len());
    for segment in path_segments(path) {
        out.push('/');
        let (stem, extension) = split_extension(segment);
        if is_identifier(stem) {
            out.push_str("{id}");
            out.push_str(extension);
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// Splits `123.json` into `123` and `.json`; a segment without a short alphabetic extension is all stem.
fn split_extension(segment: &str) -> (&str, &str) {
    match segment.rfind('.') {
        Some(dot)
            if dot > 0
                && (2..=5).contains(&(segment.len() - dot))
                && segment[dot + 1..].bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            segment.split_at(dot)
        }
        _ => (segment, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn name(namer: &EndpointNamer, method: Method, path: &str) -> String {
        namer.name(&method, path, &HeaderMap::new())
    }

    #[test]
    fn numeric_segments_collapse() {
        assert_eq!(templated_path("/users/123"), "/users/{id}");
        assert_eq!(
            templated_path("/users/123/orders/0"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(templated_path("/v2/users"), "/v2/users");
    }

    #[test]
    fn uuid_segments_collapse_with_or_without_dashes() {
        assert_eq!(
            templated_path("/orders/3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"),
            "/orders/{id}"
        );
        assert_eq!(
            templated_path("/orders/3F2B8C1E9D4A4E6B8F0A1C2D3E4F5A6B/items"),
            "/orders/{id}/items"
        );
        // 36 characters with dashes, but words: not a UUID.
        assert_eq!(
            templated_path("/a/what-is-the-uuid-format-anyway-v4"),
            "/a/what-is-the-uuid-format-anyway-v4"
        );
    }

    #[test]
    fn long_hex_segments_collapse_but_hex_words_do_not() {
        assert_eq!(
            templated_path("/objects/507f1f77bcf86cd799439011"),
            "/objects/{id}"
        );
        assert_eq!(
            templated_path("/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            "/commits/{id}"
        );
        assert_eq!(templated_path("/cafe/beef/deadbeef"), "/cafe/beef/deadbeef");
        assert_eq!(templated_path("/abcdefabcdefabcdef"), "/abcdefabcdefabcdef");
    }

    #[test]
    fn mixed_segments_collapse_only_when_they_look_like_tokens() {
        assert_eq!(
            templated_path("/items/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            "/items/{id}"
        );
        assert_eq!(templated_path("/s/aZ3_kq9-LmX2pQ7rT8vW1y"), "/s/{id}");
        assert_eq!(
            templated_path("/docs/getting-started-with-v2-and-v3"),
            "/docs/getting-started-with-v2-and-v3"
        );
        assert_eq!(templated_path("/api/v1/user42"), "/api/v1/user42");
        assert_eq!(templated_path("/files/123.json"), "/files/{id}.json");
        assert_eq!(templated_path("/files/report.pdf"), "/files/report.pdf");
    }

    #[test]
    fn root_empty_and_trailing_slash_paths() {
        assert_eq!(templated_path(""), "/");
        assert_eq!(templated_path("/"), "/");
        assert_eq!(templated_path("/users/7/"), "/users/{id}/");
    }

    #[test]
    fn user_templates_win_over_automatic_names() {
        let namer = EndpointNamer::new(vec![
            "/users/{id}/orders".parse().unwrap(),
            "GET /search/{term}".parse().unwrap(),
            "/static/*".parse().unwrap(),
        ]);
        assert_eq!(
            name(&namer, Method::GET, "/users/alice/orders"),
            "GET /users/{id}/orders"
        );
        assert_eq!(
            name(&namer, Method::GET, "/search/red-shoes"),
            "GET /search/{term}"
        );
        // The method-specific template does not apply to POST.
        assert_eq!(
            name(&namer, Method::POST, "/search/red-shoes"),
            "POST /search/red-shoes"
        );
        assert_eq!(
            name(&namer, Method::GET, "/static/css/site.css"),
            "GET /static/*"
        );
        // Not matching: one segment too many.
        assert_eq!(
            name(&namer, Method::GET, "/users/alice/orders/9"),
            "GET /users/alice/orders/{id}"
        );
    }

    #[test]
    fn canonical_resource_header_wins_over_templates() {
        let namer = EndpointNamer::new(vec!["/users/{id}".parse().unwrap()]);
        let mut headers = HeaderMap::new();
        headers.insert(CANONICAL_RESOURCE, HeaderValue::from_static("user-profile"));
        assert_eq!(
            namer.name(&Method::GET, "/users/7", &headers),
            "GET user-profile"
        );
    }

    #[test]
    fn bad_templates_are_rejected_with_the_reason() {
        assert!(
            "users/{id}"
                .parse::<EndpointPattern>()
                .unwrap_err()
                .contains("must start with /")
        );
        assert!(
            "/a/*/b"
                .parse::<EndpointPattern>()
                .unwrap_err()
                .contains("must come last")
        );
        assert!(
            "/a/x{id}"
                .parse::<EndpointPattern>()
                .unwrap_err()
                .contains("placeholder")
        );
        assert!(
            "G@T /a"
                .parse::<EndpointPattern>()
                .unwrap_err()
                .contains("not an HTTP method")
        );
    }

    #[test]
    fn very_long_names_are_cut() {
        let path = format!("/{}", "é".repeat(400));
        let name = EndpointNamer::default().name(&Method::GET, &path, &HeaderMap::new());
        assert!(name.len() <= MAX_ENDPOINT_LEN);
    }
}
