//! A GraphQL answer compared as its clients read it: `data` as JSON, each error by its message, path and
//! `extensions.code`, where it was found in the document (`locations`) and what else a server adds to an error's
//! extensions (traces, timings) set aside.

use crate::analysis::diff::Difference;

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
