//! Per-target request rewrites from the rules file (`[[rewrite]]`): what the secondary or the candidate is sent
//! instead of the caller's request (another path, an added or removed header or query parameter), so that
//! versions that take a request in different words are compared as if asked the same thing.

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use regex::Regex;
use serde::Deserialize;

use crate::encoding::percent_encode;
use crate::exchange::Target;

/// A `[[rewrite]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSpec {
    /// `candidate` or `secondary`.
    pub target: String,
    /// Requests whose path starts with `from` have it replaced by `to`.
    #[serde(default)]
    pub path_prefix: Option<PrefixSpec>,
    /// Requests whose path matches `pattern` have it replaced by `replace` (`$1` for a capture).
    #[serde(default)]
    pub path_regex: Option<RegexSpec>,
    #[serde(default)]
    pub set_header: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove_header: Vec<String>,
    #[serde(default)]
    pub set_query: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove_query: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixSpec {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexSpec {
    pub pattern: String,
    pub replace: String,
}

/// How a matching request's path changes.
#[derive(Clone, Debug)]
enum PathChange {
    Prefix { from: String, to: String },
    Regex { pattern: Regex, replace: String },
}

/// One rewrite, checked. It applies to requests whose path its path change matches (every request when it
/// changes no path).
#[derive(Clone, Debug)]
pub struct Rewrite {
    target: Target,
    path: Option<PathChange>,
    set_headers: Vec<(HeaderName, HeaderValue)>,
    remove_headers: Vec<HeaderName>,
    set_query: Vec<(String, String)>,
    remove_query: Vec<String>,
}

impl Rewrite {
    pub fn new(spec: RewriteSpec) -> Result<Self, String> {
        let target = match spec.target.as_str() {
            "candidate" => Target::Candidate,
            "secondary" => Target::Secondary,
            other => {
                return Err(format!(
                    "rewrite target `{other}`: only `candidate` or `secondary` are rewritten (primary is the \
                     request as the caller sent it)"
                ));
            }
        };
        let path = match (spec.path_prefix, spec.path_regex) {
            (Some(_), Some(_)) => {
                return Err("a rewrite takes path_prefix or path_regex, not both".into());
            }
            (Some(prefix), None) => {
                if !prefix.from.starts_with('/') || !prefix.to.starts_with('/') {
                    return Err("path_prefix's `from` and `to` start with `/`".into());
                }
                Some(PathChange::Prefix {
                    from: prefix.from,
                    to: prefix.to,
                })
            }
            (None, Some(regex)) => Some(PathChange::Regex {
                pattern: Regex::new(&regex.pattern)
                    .map_err(|error| format!("path_regex `{}`: {error}", regex.pattern))?,
                replace: regex.replace,
            }),
            (None, None) => None,
        };
        let header_name = |name: &str| {
            HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))
        };
        let mut set_headers = Vec::new();
        for (name, value) in &spec.set_header {
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header `{name}` is not a valid header value"))?;
            set_headers.push((header_name(name)?, value));
        }
        let remove_headers = spec
            .remove_header
            .iter()
            .map(|name| header_name(name))
            .collect::<Result<_, _>>()?;
        if path.is_none()
            && set_headers.is_empty()
            && spec.remove_header.is_empty()
            && spec.set_query.is_empty()
            && spec.remove_query.is_empty()
        {
            return Err(
                "a rewrite changes something: a path, a header or a query parameter".into(),
            );
        }
        Ok(Self {
            target,
            path,
            set_headers,
            remove_headers,
            set_query: spec.set_query.into_iter().collect(),
            remove_query: spec.remove_query,
        })
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// The path this rewrite gives `path`, or `None` when it does not apply to it.
    fn new_path(&self, path: &str) -> Option<String> {
        match &self.path {
            None => Some(path.to_string()),
            Some(PathChange::Prefix { from, to }) => path
                .strip_prefix(from.as_str())
                .map(|rest| format!("{to}{rest}")),
            Some(PathChange::Regex { pattern, replace }) => pattern
                .is_match(path)
                .then(|| pattern.replace(path, replace.as_str()).into_owned()),
        }
    }
}

/// The rewrites of the rules file, by target.
#[derive(Clone, Debug, Default)]
pub struct Rewrites {
    rewrites: Vec<Rewrite>,
}

impl Rewrites {
    pub fn new(rewrites: Vec<Rewrite>) -> Self {
        Self { rewrites }
    }

    pub fn is_empty(&self) -> bool {
        self.rewrites.is_empty()
    }

    /// Whether any rewrite is for `target`.
    pub fn has(&self, target: Target) -> bool {
        self.rewrites.iter().any(|rewrite| rewrite.target == target)
    }

    /// The rewrite of the caller's `uri` (origin form: path and query) for `target`: the first rewrite for
    /// the target that applies to its path, and the URI it makes. `None` when none applies, or when the
    /// result would not be a valid URI (the request is then sent as the caller sent it).
    pub fn request(&self, target: Target, uri: &Uri) -> Option<(RewriteId, Uri)> {
        let path = uri.path();
        let (index, rewrite, new_path) = self
            .rewrites
            .iter()
            .enumerate()
            .filter(|(_, rewrite)| rewrite.target == target)
            .find_map(|(index, rewrite)| Some((index, rewrite, rewrite.new_path(path)?)))?;
        let query = rewritten_query(uri.query(), rewrite);
        let path_and_query = match query {
            Some(query) if !query.is_empty() => format!("{new_path}?{query}"),
            _ => new_path,
        };
        let path_and_query = path_and_query.parse::<PathAndQuery>().ok()?;
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        Some((RewriteId(index), Uri::from_parts(parts).ok()?))
    }

    /// The header changes of a rewrite [`Rewrites::request`] chose.
    pub fn headers(&self, id: RewriteId, headers: &mut HeaderMap) {
        let Some(rewrite) = self.rewrites.get(id.0) else {
            return;
        };
        for name in &rewrite.remove_headers {
            headers.remove(name);
        }
        for (name, value) in &rewrite.set_headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Rewrites `uri` and `headers` as `target` is sent them; whether a rewrite applied.
    pub fn apply(&self, target: Target, uri: &mut Uri, headers: &mut HeaderMap) -> bool {
        let Some((id, rewritten)) = self.request(target, uri) else {
            return false;
        };
        *uri = rewritten;
        self.headers(id, headers);
        true
    }
}

/// Which rewrite applied to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewriteId(usize);

/// The query with the rewrite's parameters removed and set (set ones replace any of the same name).
fn rewritten_query(query: Option<&str>, rewrite: &Rewrite) -> Option<String> {
    if rewrite.set_query.is_empty() && rewrite.remove_query.is_empty() {
        return query.map(str::to_string);
    }
    let name_of = |pair: &str| pair.split('=').next().unwrap_or_default().to_string();
    let mut pairs: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = crate::encoding::percent_decode(&name_of(pair));
            !rewrite.remove_query.contains(&name)
                && !rewrite.set_query.iter().any(|(set, _)| *set == name)
        })
        .map(str::to_string)
        .collect();
    for (name, value) in &rewrite.set_query {
        pairs.push(format!(
            "{}={}",
            percent_encode(name, &[]),
            percent_encode(value, &[])
        ));
    }
    Some(pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(toml_text: &str) -> Result<Rewrite, String> {
        Rewrite::new(toml::from_str(toml_text).map_err(|e| e.to_string())?)
    }

    fn applied(rewrites: &Rewrites, target: Target, uri: &str) -> (bool, String, HeaderMap) {
        let mut uri: Uri = uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-legacy", HeaderValue::from_static("1"));
        let changed = rewrites.apply(target, &mut uri, &mut headers);
        (changed, uri.to_string(), headers)
    }

    #[test]
    fn paths_headers_and_query_are_rewritten_for_their_target_only() {
        let rewrites = Rewrites::new(vec![
            rewrite(
                r#"target = "candidate"
                   path_prefix = { from = "/api/v4/", to = "/api/v5/" }
                   set_header = { "X-Feature" = "new" }
                   remove_header = ["X-Legacy"]
                   set_query = { flag = "on" }
                   remove_query = ["debug"]"#,
            )
            .unwrap(),
            rewrite(
                r#"target = "candidate"
                   path_regex = { pattern = "^/users/(\\d+)$", replace = "/v2/users/$1" }"#,
            )
            .unwrap(),
        ]);
        let (changed, uri, headers) = applied(
            &rewrites,
            Target::Candidate,
            "http://up:8080/api/v4/orders?debug=1&page=2&flag=off",
        );
        assert!(changed);
        assert_eq!(uri, "http://up:8080/api/v5/orders?page=2&flag=on");
        assert_eq!(headers["x-feature"], "new");
        assert!(headers.get("x-legacy").is_none());
        let (changed, uri, _) = applied(&rewrites, Target::Candidate, "http://up/users/42");
        assert!(changed);
        assert_eq!(uri, "http://up/v2/users/42");
        let (changed, uri, headers) =
            applied(&rewrites, Target::Secondary, "http://up/api/v4/orders");
        assert!(!changed, "secondary is sent the caller's request");
        assert_eq!(uri, "http://up/api/v4/orders");
        assert!(headers.get("x-legacy").is_some());
        let (changed, uri, _) = applied(&rewrites, Target::Candidate, "http://up/other?x=1");
        assert!(!changed, "a path the rewrite does not match is left alone");
        assert_eq!(uri, "http://up/other?x=1");
    }

    #[test]
    fn bad_rewrites_are_refused_with_a_reason() {
        for (text, expected) in [
            (
                r#"target = "primary"
                set_query = { a = "b" }"#,
                "only `candidate` or `secondary`",
            ),
            (r#"target = "candidate""#, "changes something"),
            (
                r#"target = "candidate"
                path_regex = { pattern = "(", replace = "x" }"#,
                "path_regex `(`",
            ),
            (
                r#"target = "candidate"
                path_prefix = { from = "api", to = "/v2" }"#,
                "start with `/`",
            ),
            (
                r#"target = "candidate"
                set_header = { "bad header" = "x" }"#,
                "not a header name",
            ),
        ] {
            let error = rewrite(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
