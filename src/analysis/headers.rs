//! Status and header comparison: names lowercased, repeated values joined, per-connection headers left out.

use std::collections::HashSet;

use http::{HeaderMap, HeaderName, StatusCode};

use crate::analysis::diff::{DiffKind, Difference};
use crate::analysis::rules::{EndpointRules, RuleAction};

/// Headers that describe one connection or one moment, not the resource: never compared.
pub const DEFAULT_IGNORED: [&str; 12] = [
    "date",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "via",
    "age",
    "x-shadowdiff-role",
];

/// Which headers are compared.
#[derive(Clone, Debug)]
pub struct HeaderOptions {
    /// `--exclude-all-headers` turns this off.
    compare: bool,
    ignored: HashSet<HeaderName>,
}

impl Default for HeaderOptions {
    fn default() -> Self {
        Self::new(false, &[])
    }
}

impl HeaderOptions {
    /// The default ignore list plus `excluded` (`--exclude-header`); nothing at all with `exclude_all`.
    pub fn new(exclude_all: bool, excluded: &[HeaderName]) -> Self {
        let mut ignored: HashSet<HeaderName> = DEFAULT_IGNORED
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect();
        ignored.extend(excluded.iter().cloned());
        Self {
            compare: !exclude_all,
            ignored,
        }
    }
}

/// The status as a difference at `status`, if it changed.
pub fn diff_status(
    primary: StatusCode,
    other: StatusCode,
    rules: &EndpointRules<'_>,
) -> Option<Difference> {
    if primary == other {
        return None;
    }
    diff_status_text(
        primary.as_u16().to_string(),
        other.as_u16().to_string(),
        rules,
    )
}

/// A status difference between two written statuses: HTTP codes, or a gRPC call's code names.
pub fn diff_status_text(
    primary: String,
    other: String,
    rules: &EndpointRules<'_>,
) -> Option<Difference> {
    if primary == other || (!rules.is_empty() && rules.ignores("status")) {
        return None;
    }
    Some(Difference::at(
        "status",
        DiffKind::ValueChanged,
        Some(primary),
        Some(other),
    ))
}

/// Header differences at `header/<name>`.
pub fn diff_headers(
    primary: &HeaderMap,
    other: &HeaderMap,
    options: &HeaderOptions,
    rules: &EndpointRules<'_>,
) -> Vec<Difference> {
    if !options.compare {
        return Vec::new();
    }
    let mut differences = Vec::new();
    let names = primary
        .keys()
        .chain(other.keys().filter(|name| !primary.contains_key(*name)));
    for name in names {
        if options.ignored.contains(name) {
            continue;
        }
        let path = format!("header/{}", name.as_str());
        let rule = if rules.is_empty() {
            None
        } else {
            rules.at(&path)
        };
        if matches!(rule, Some(RuleAction::Ignore)) || (!rules.is_empty() && rules.ignores(&path)) {
            continue;
        }
        let left = joined(primary, name);
        let right = joined(other, name);
        let (kind, left, right) = match (left, right) {
            (Some(l), Some(r)) if l == r => continue,
            (Some(l), Some(r)) => {
                if matches!(rule, Some(RuleAction::PresenceOnly | RuleAction::TypeOnly)) {
                    continue;
                }
                if matches!(rule, Some(RuleAction::Unordered))
                    && sorted_values(&l) == sorted_values(&r)
                {
                    continue;
                }
                (DiffKind::ValueChanged, Some(l), Some(r))
            }
            (Some(l), None) => (DiffKind::Missing, Some(l), None),
            (None, Some(r)) => (DiffKind::Extra, None, Some(r)),
            (None, None) => continue,
        };
        differences.push(Difference::at(path, kind, left, right));
    }
    differences
}

/// Every value of a header, joined with `, ` in order (values that are not UTF-8 shown lossily).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(
        values
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn sorted_values(joined: &str) -> Vec<&str> {
    let mut values: Vec<&str> = joined.split(',').map(str::trim).collect();
    values.sort_unstable();
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::decode::tests::headers as map;

    fn paths(found: &[Difference]) -> Vec<(String, DiffKind)> {
        let mut out: Vec<_> = found.iter().map(|d| (d.path.clone(), d.kind)).collect();
        out.sort();
        out
    }

    #[test]
    fn headers_compare_by_joined_value_and_skip_per_connection_ones() {
        let a = map(&[
            ("content-type", "application/json"),
            ("vary", "accept"),
            ("vary", "origin"),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("x-removed", "1"),
        ]);
        let b = map(&[
            ("content-type", "text/html"),
            ("vary", "accept, origin"),
            ("date", "Tue, 02 Jan 2024 00:00:00 GMT"),
            ("x-added", "1"),
        ]);
        let found = diff_headers(&a, &b, &HeaderOptions::default(), &EndpointRules::default());
        assert_eq!(
            paths(&found),
            vec![
                ("header/content-type".into(), DiffKind::ValueChanged),
                ("header/x-added".into(), DiffKind::Extra),
                ("header/x-removed".into(), DiffKind::Missing),
            ]
        );
        let content_type = found
            .iter()
            .find(|d| d.path == "header/content-type")
            .unwrap();
        assert_eq!(
            content_type.compat,
            crate::analysis::compat::Compat::Breaking
        );
    }

    #[test]
    fn excluded_headers_and_exclude_all() {
        let a = map(&[("x-request-id", "1"), ("etag", "a")]);
        let b = map(&[("x-request-id", "2"), ("etag", "b")]);
        let options = HeaderOptions::new(false, &[HeaderName::from_static("x-request-id")]);
        assert_eq!(
            paths(&diff_headers(&a, &b, &options, &EndpointRules::default())),
            vec![("header/etag".into(), DiffKind::ValueChanged)]
        );
        assert!(
            diff_headers(
                &a,
                &b,
                &HeaderOptions::new(true, &[]),
                &EndpointRules::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn status_changes_name_both_codes() {
        let found = diff_status(
            StatusCode::OK,
            StatusCode::INTERNAL_SERVER_ERROR,
            &EndpointRules::default(),
        )
        .unwrap();
        assert_eq!(
            (found.primary.as_deref(), found.other.as_deref()),
            (Some("200"), Some("500"))
        );
        assert_eq!(found.compat, crate::analysis::compat::Compat::Breaking);
        assert!(diff_status(StatusCode::OK, StatusCode::OK, &EndpointRules::default()).is_none());
    }
}
