//! Path and endpoint patterns: `/`-separated globs (`*`, `**`, `{key}`) and the endpoints a rule applies to.

/// A glob over `/`-separated segments: `*` one segment, `**` any number, `*` inside a segment any characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    segments: Vec<String>,
}

impl Glob {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_start_matches('/');
        if text.is_empty() {
            return Err("the pattern is empty".to_string());
        }
        let mut segments: Vec<String> = Vec::new();
        for segment in text.split('/') {
            // `**/**` means no more than `**`, and would only slow matching down.
            if segment == "**" && segments.last().is_some_and(|last| last == "**") {
                continue;
            }
            segments.push(segment.to_string());
        }
        Ok(Self { segments })
    }

    /// Whether the pattern matches the whole path.
    pub fn matches(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        *self.prefix_matches(&segments).last().unwrap_or(&false)
    }

    /// Whether the pattern matches the path or one of its ancestors (`body/meta` covers `body/meta/id`).
    pub fn covers(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.prefix_matches(&segments)
            .iter()
            .skip(1)
            .any(|matched| *matched)
    }

    /// For each prefix length of `path` (0 to all of it), whether the pattern matches that prefix: one pass of
    /// dynamic programming over pattern segments, linear in both (no backtracking on `**`).
    fn prefix_matches(&self, path: &[&str]) -> Vec<bool> {
        let mut reachable = vec![false; path.len() + 1];
        reachable[0] = true;
        for pattern in &self.segments {
            let mut next = vec![false; path.len() + 1];
            if pattern == "**" {
                let mut any = false;
                for (length, slot) in next.iter_mut().enumerate() {
                    any |= reachable[length];
                    *slot = any;
                }
            } else {
                for (length, segment) in path.iter().enumerate() {
                    if reachable[length] && segment_matches(pattern, segment) {
                        next[length + 1] = true;
                    }
                }
            }
            reachable = next;
        }
        reachable
    }
}

/// `*` inside a segment matches any run of characters (`x-request-*` matches `x-request-id`). `{key}` matches
/// any object key, so that a rule naming a map's position applies before the position is learned as `{key}`
/// (and to an identifier-like key, `{id}`), but not an array element (`*`).
fn segment_matches(pattern: &str, segment: &str) -> bool {
    if pattern == crate::analysis::keys::KEY {
        return segment != "*";
    }
    if !pattern.contains('*') {
        return pattern == segment;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !segment.starts_with(first)
        || segment.len() < first.len() + last.len()
        || !segment.ends_with(last)
    {
        return false;
    }
    let mut rest = &segment[first.len()..segment.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Which endpoints a rule applies to: `GET /users/{id}`, `* /users/**`, `/users/*` (any method), or all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointGlob {
    method: Option<String>,
    path: Option<Glob>,
}

impl EndpointGlob {
    pub fn any() -> Self {
        Self {
            method: None,
            path: None,
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text == "*" || text == "**" {
            return Ok(Self::any());
        }
        let (method, path) = match text.split_once(' ') {
            Some((method, path)) => (Some(method.trim()), path.trim()),
            None if text.starts_with('/') => (None, text),
            None => {
                return Err(format!(
                    "`{text}` is not an endpoint pattern; expected e.g. `GET /users/{{id}}`"
                ));
            }
        };
        let method = method
            .filter(|m| *m != "*")
            .map(|m| {
                if m.eq_ignore_ascii_case("grpc") {
                    // gRPC methods are endpoints named `gRPC pkg.Service/Method`.
                    Ok("gRPC".to_string())
                } else if m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Ok(m.to_ascii_uppercase())
                } else {
                    Err(format!("`{m}` is not an HTTP method"))
                }
            })
            .transpose()?;
        Ok(Self {
            method,
            path: Some(Glob::parse(path)?),
        })
    }

    /// A pattern written as an endpoint template or a glob: a template's `{name}` segments match any one
    /// segment (`POST /oauth/{provider}/token`).
    pub fn parse_template(text: &str) -> Result<Self, String> {
        let generalised: Vec<&str> = text
            .trim()
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') && segment.ends_with('}') {
                    "*"
                } else {
                    segment
                }
            })
            .collect();
        Self::parse(&generalised.join("/"))
    }

    pub fn matches(&self, endpoint: &str) -> bool {
        let (method, path) = endpoint.split_once(' ').unwrap_or(("", endpoint));
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_ref().is_none_or(|glob| glob.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_segments_and_depths() {
        let glob = Glob::parse("body/items/*/price").unwrap();
        assert!(glob.matches("body/items/*/price"));
        assert!(glob.matches("body/items/3/price"));
        assert!(!glob.matches("body/items/*/price/cents"));
        assert!(glob.covers("body/items/*/price/cents"));
        let deep = Glob::parse("body/**/updated_at").unwrap();
        assert!(deep.matches("body/updated_at"));
        assert!(deep.matches("body/a/b/c/updated_at"));
        assert!(!deep.matches("body/a/created_at"));
        let many = Glob::parse("body/**/**/**/**/**/zz").unwrap();
        assert_eq!(many.segments.len(), 3);
        let deep_path = format!("body/{}zz", "a/".repeat(120));
        assert!(many.matches(&deep_path));
        assert!(!many.matches(&format!("body/{}zy", "a/".repeat(120))));
        let header = Glob::parse("header/x-request-*").unwrap();
        assert!(header.matches("header/x-request-id"));
        assert!(!header.matches("header/x-trace-id"));
        assert!(segment_matches("a*b*c", "a-x-b-y-c"));
        assert!(!segment_matches("a*b*c", "a-x-c"));
        assert!(!segment_matches("ab*ba", "aba"));
    }

    #[test]
    fn endpoint_globs() {
        let exact = EndpointGlob::parse("GET /users/{id}").unwrap();
        assert!(exact.matches("GET /users/{id}"));
        assert!(!exact.matches("POST /users/{id}"));
        let any_method = EndpointGlob::parse("/users/**").unwrap();
        assert!(any_method.matches("DELETE /users/{id}/orders"));
        let star = EndpointGlob::parse("* /users/*").unwrap();
        assert!(star.matches("PUT /users/{id}"));
        assert!(EndpointGlob::parse("*").unwrap().matches("GET /"));
        assert!(EndpointGlob::parse("users").is_err());
    }

    #[test]
    fn grpc_endpoints_are_matched_by_service_and_method() {
        let method = EndpointGlob::parse("gRPC shop.v1.Orders/GetOrder").unwrap();
        assert!(method.matches("gRPC shop.v1.Orders/GetOrder"));
        assert!(!method.matches("gRPC shop.v1.Orders/Watch"));
        assert!(!method.matches("POST /shop.v1.Orders/GetOrder"));
        let service = EndpointGlob::parse("grpc shop.v1.Orders/*").unwrap();
        assert!(service.matches("gRPC shop.v1.Orders/Watch"));
    }
}
