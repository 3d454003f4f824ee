//! Path templates: `--endpoint` patterns given by the user (`/users/{id}/orders`), and a path with its
//! identifier-like segments collapsed to `{id}`.

use std::fmt;
use std::str::FromStr;

use http::Method;

use crate::identifier::is_identifier;

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
    /// The template as written, without its method.
    pub fn template(&self) -> &str {
        &self.template
    }

    pub fn matches(&self, method: &Method, path: &str) -> bool {
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

/// Segments of a path after the leading slash (`/a/b/` gives `a`, `b`, ``).
pub fn path_segments(path: &str) -> impl Iterator<Item = &str> {
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
        out.push_str(&templated_segment(segment));
    }
    out
}

/// One segment, `{id}` (keeping a file extension) when it looks like an identifier, as it is otherwise.
pub fn templated_segment(segment: &str) -> std::borrow::Cow<'_, str> {
    let (stem, extension) = split_extension(segment);
    if is_identifier(stem) {
        std::borrow::Cow::Owned(format!("{{id}}{extension}"))
    } else {
        std::borrow::Cow::Borrowed(segment)
    }
}

/// Whether a segment of a template is a placeholder (`{id}`, `{param}`, `{id}.json`, a user's `{name}`).
pub fn is_placeholder(segment: &str) -> bool {
    segment.starts_with('{')
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

    /// Each path's automatic template.
    fn assert_templated(expected: &[(&str, &str)]) {
        for (path, template) in expected {
            assert_eq!(templated_path(path), *template, "{path}");
        }
    }

    #[test]
    fn numeric_segments_collapse() {
        assert_templated(&[
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/0", "/users/{id}/orders/{id}"),
            ("/v2/users", "/v2/users"),
        ]);
    }

    #[test]
    fn uuid_segments_collapse_with_or_without_dashes() {
        assert_templated(&[
            (
                "/orders/3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b",
                "/orders/{id}",
            ),
            (
                "/orders/3F2B8C1E9D4A4E6B8F0A1C2D3E4F5A6B/items",
                "/orders/{id}/items",
            ),
            // 36 characters with dashes, but words: not a UUID.
            (
                "/a/what-is-the-uuid-format-anyway-v4",
                "/a/what-is-the-uuid-format-anyway-v4",
            ),
        ]);
    }

    #[test]
    fn long_hex_segments_collapse_but_hex_words_do_not() {
        assert_templated(&[
            ("/objects/507f1f77bcf86cd799439011", "/objects/{id}"),
            (
                "/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709",
                "/commits/{id}",
            ),
            ("/cafe/beef/deadbeef", "/cafe/beef/deadbeef"),
            ("/abcdefabcdefabcdef", "/abcdefabcdefabcdef"),
        ]);
    }

    #[test]
    fn mixed_segments_collapse_only_when_they_look_like_tokens() {
        assert_templated(&[
            ("/items/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/items/{id}"),
            ("/s/aZ3_kq9-LmX2pQ7rT8vW1y", "/s/{id}"),
            (
                "/docs/getting-started-with-v2-and-v3",
                "/docs/getting-started-with-v2-and-v3",
            ),
            ("/api/v1/user42", "/api/v1/user42"),
            ("/files/123.json", "/files/{id}.json"),
            ("/files/report.pdf", "/files/report.pdf"),
        ]);
    }

    #[test]
    fn root_empty_and_trailing_slash_paths() {
        assert_templated(&[("", "/"), ("/", "/"), ("/users/7/", "/users/{id}/")]);
    }

    #[test]
    fn bad_templates_are_rejected_with_the_reason() {
        crate::values::parse_checks::assert_rejected_for::<EndpointPattern>(&[
            ("users/{id}", "must start with /"),
            ("/a/*/b", "must come last"),
            ("/a/x{id}", "placeholder"),
            ("G@T /a", "not an HTTP method"),
        ]);
    }
}
