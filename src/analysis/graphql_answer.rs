//! A GraphQL answer compared as its clients read it: `data` as JSON, each error by its message, path and
//! `extensions.code`, where it was found in the document (`locations`) and what else a server adds to an error's
//! extensions (traces, timings) set aside; and a schema's differences classed by what they do to clients.

use crate::analysis::compat::Compat;
use crate::analysis::diff::{DiffKind, Difference};

/// Whether a difference in the answer to a GraphQL operation is one its clients see. Batches answer an array
/// of answers, so an error list is `body/errors` or `body/<n>/errors`.
pub fn is_compared(difference: &Difference) -> bool {
    let path = difference.path.as_str();
    let Some(rest) = path
        .strip_prefix("body/errors/")
        .or_else(|| batch_errors(path))
    else {
        return true;
    };
    // `<index>/<field>/<below>`
    let mut parts = rest.splitn(3, '/');
    let _index = parts.next();
    match (parts.next(), parts.next()) {
        (Some("locations"), _) => false,
        (Some("extensions"), Some(below)) => below == "code" || below.starts_with("code/"),
        // The whole extensions object on one side only: seen when it held a code.
        (Some("extensions"), None) => [&difference.primary, &difference.other]
            .into_iter()
            .flatten()
            .any(|value| value.contains("\"code\"")),
        _ => true,
    }
}

/// The class of a difference between two schemas (as `graphql::schema::comparable` writes them), where it is
/// not the kind's own: a field's type changed breaks clients unless it only became non-null; an argument's or
/// input field's unless it only became nullable; one added breaks them when it is required; a kind changed
/// breaks them. `None`: the kind's own class (a removal breaking, an addition additive).
pub fn schema_compat(difference: &Difference) -> Option<Compat> {
    let parts: Vec<&str> = difference.path.split('/').collect();
    let unquoted = |value: &Option<String>| {
        value
            .as_deref()
            .map(|value| value.trim_matches('"').to_string())
    };
    // body/types/<T>/...
    let below = parts.get(3..).unwrap_or_default();
    match (difference.kind, below) {
        (DiffKind::ValueChanged, ["kind"]) => Some(Compat::Breaking),
        (DiffKind::ValueChanged, ["fields", _, "type"]) => {
            let (was, now) = (unquoted(&difference.primary)?, unquoted(&difference.other)?);
            Some(if now == format!("{was}!") {
                Compat::Changed
            } else {
                Compat::Breaking
            })
        }
        (DiffKind::ValueChanged, ["fields", _, "args", _, "type"] | ["inputFields", _, "type"]) => {
            let (was, now) = (unquoted(&difference.primary)?, unquoted(&difference.other)?);
            Some(if was == format!("{now}!") {
                Compat::Changed
            } else {
                Compat::Breaking
            })
        }
        (DiffKind::Extra, ["fields", _, "args", _] | ["inputFields", _]) => {
            let added = difference.other.as_deref().unwrap_or_default();
            let required = added.contains("!\"") && !added.contains("\"default\"");
            required.then_some(Compat::Breaking)
        }
        _ => None,
    }
}

/// What follows `body/<n>/errors/` in a batch's answer.
fn batch_errors(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("body/")?;
    let (index, rest) = rest.split_once('/')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.strip_prefix("errors/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diff::DiffKind;

    fn at(path: &str) -> Difference {
        Difference::at(
            path,
            DiffKind::ValueChanged,
            Some("1".into()),
            Some("2".into()),
        )
    }

    #[test]
    fn errors_are_compared_by_message_path_and_code_only() {
        for compared in [
            "body/errors",
            "body/errors/0/message",
            "body/errors/0/path/1",
            "body/errors/1/extensions/code",
            "body/data/post/title",
            "body/2/errors/0/message",
            "status",
        ] {
            assert!(is_compared(&at(compared)), "{compared}");
        }
        for ignored in [
            "body/errors/0/locations",
            "body/errors/0/locations/0/line",
            "body/errors/3/extensions/tracing/duration",
            "body/1/errors/0/locations/0/column",
        ] {
            assert!(!is_compared(&at(ignored)), "{ignored}");
        }
    }

    #[test]
    fn schema_changes_are_classed_by_what_they_do_to_clients() {
        let changed = |path: &str, was: &str, now: &str| {
            schema_compat(&Difference::at(
                path,
                DiffKind::ValueChanged,
                Some(format!("\"{was}\"")),
                Some(format!("\"{now}\"")),
            ))
        };
        let field = "body/types/Post/fields/title/type";
        assert_eq!(changed(field, "String", "String!"), Some(Compat::Changed));
        assert_eq!(changed(field, "String!", "String"), Some(Compat::Breaking));
        assert_eq!(changed(field, "String", "Int"), Some(Compat::Breaking));
        let argument = "body/types/Query/fields/post/args/id/type";
        assert_eq!(changed(argument, "ID", "ID!"), Some(Compat::Breaking));
        assert_eq!(changed(argument, "ID!", "ID"), Some(Compat::Changed));
        assert_eq!(
            changed("body/types/Post/kind", "OBJECT", "INTERFACE"),
            Some(Compat::Breaking)
        );
        let added = |value: &str| {
            schema_compat(&Difference::at(
                "body/types/Query/fields/post/args/first",
                DiffKind::Extra,
                None,
                Some(value.to_string()),
            ))
        };
        assert_eq!(added(r#"{"type":"Int!"}"#), Some(Compat::Breaking));
        assert_eq!(added(r#"{"default":"10","type":"Int!"}"#), None);
        assert_eq!(added(r#"{"type":"Int"}"#), None);
        let removed = Difference::at(
            "body/types/Post/fields/legacyId",
            DiffKind::Missing,
            Some("{}".into()),
            None,
        );
        assert_eq!(schema_compat(&removed), None);
        assert_eq!(removed.compat, Compat::Breaking);
    }

    #[test]
    fn an_extensions_object_on_one_side_only_counts_when_it_holds_a_code() {
        let extensions = |value: &str| {
            Difference::at(
                "body/errors/0/extensions",
                DiffKind::Extra,
                None,
                Some(value.to_string()),
            )
        };
        assert!(is_compared(&extensions(r#"{"code":"FORBIDDEN"}"#)));
        assert!(!is_compared(&extensions(r#"{"timing":3}"#)));
    }
}
