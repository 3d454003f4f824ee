//! Compatibility class of a difference, for rewrites: would it break clients, add to what they get, or only
//! change a value?

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::analysis::decode::media_type;
use crate::analysis::kind::DiffKind;

/// Ordered from mildest to worst, so that `max` picks the worst of several.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// Same type, another value: clients still parse it.
    Changed,
    /// Something new (an extra field or header): clients that ignore unknown fields are unaffected.
    Additive,
    /// A field missing, a type changed, the status class or content type changed, no response at all.
    Breaking,
}

/// Places of a body that say how a request ended, besides its status: a GraphQL (or JSON:API) answer's error
/// list and a SOAP Fault. One appearing or disappearing is breaking, like a change of status class, and the
/// grouping of places into changes takes it for the status: what differs under it is its consequence.
pub const OUTCOME_PLACES: [&str; 2] = ["body/errors", "body/Envelope/Body/Fault"];

/// Whether a difference of `kind` at `path` is a change of outcome: the status, or an outcome place appearing
/// or disappearing.
pub fn is_outcome(path: &str, kind: DiffKind) -> bool {
    path == "status"
        || (matches!(kind, DiffKind::Missing | DiffKind::Extra) && OUTCOME_PLACES.contains(&path))
}

impl Compat {
    pub fn as_str(self) -> &'static str {
        match self {
            Compat::Changed => "changed",
            Compat::Additive => "additive",
            Compat::Breaking => "breaking",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Compat::Changed, Compat::Additive, Compat::Breaking]
            .into_iter()
            .find(|compat| compat.as_str() == text)
    }

    /// The class of a difference of `kind` at `path` between the rendered values.
    pub fn classify(
        kind: DiffKind,
        path: &str,
        primary: Option<&str>,
        other: Option<&str>,
    ) -> Compat {
        match kind {
            DiffKind::Missing | DiffKind::TypeChanged => Compat::Breaking,
            DiffKind::Extra if OUTCOME_PLACES.contains(&path) => Compat::Breaking,
            DiffKind::Extra => Compat::Additive,
            DiffKind::ArrayLength | DiffKind::ArrayOrder | DiffKind::Slower => Compat::Changed,
            DiffKind::ValueChanged => match path {
                // No response where primary answered (or the other way round).
                "error" => Compat::Breaking,
                "status" if status_breaks(primary, other) => Compat::Breaking,
                "header/content-type" if primary.map(media_type) != other.map(media_type) => {
                    Compat::Breaking
                }
                _ => Compat::Changed,
            },
        }
    }
}

impl fmt::Display for Compat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a status change breaks clients: another HTTP status class (`2` for `"204"`), or any change of a gRPC
/// call's status code (`OK` to `NOT_FOUND`), whose codes have no classes.
fn status_breaks(primary: Option<&str>, other: Option<&str>) -> bool {
    let http_class = |status: Option<&str>| {
        status
            .map(str::trim)
            .filter(|status| status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()))
            .map(|status| status.as_bytes()[0])
    };
    match (http_class(primary), http_class(other)) {
        (Some(primary), Some(other)) => primary != other,
        _ => primary != other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_changes_break_clients_and_additions_do_not() {
        assert_eq!(
            Compat::classify(DiffKind::Missing, "body/name", Some("\"a\""), None),
            Compat::Breaking
        );
        assert_eq!(
            Compat::classify(DiffKind::TypeChanged, "body/id", Some("1"), Some("\"1\"")),
            Compat::Breaking
        );
        assert_eq!(
            Compat::classify(DiffKind::Extra, "body/nickname", None, Some("\"b\"")),
            Compat::Additive
        );
        assert_eq!(
            Compat::classify(
                DiffKind::ValueChanged,
                "body/name",
                Some("\"a\""),
                Some("\"b\"")
            ),
            Compat::Changed
        );
        assert_eq!(
            Compat::classify(DiffKind::ArrayOrder, "body/tags", None, None),
            Compat::Changed
        );
    }

    #[test]
    fn status_class_and_media_type_changes_break_clients() {
        let status = |a, b| Compat::classify(DiffKind::ValueChanged, "status", Some(a), Some(b));
        assert_eq!(status("200", "500"), Compat::Breaking);
        assert_eq!(status("200", "201"), Compat::Changed);
        let content_type = |a, b| {
            Compat::classify(
                DiffKind::ValueChanged,
                "header/content-type",
                Some(a),
                Some(b),
            )
        };
        assert_eq!(
            content_type("application/json", "text/html; charset=utf-8"),
            Compat::Breaking
        );
        assert_eq!(
            content_type("application/json", "application/json; charset=utf-8"),
            Compat::Changed
        );
        assert_eq!(
            Compat::classify(
                DiffKind::ValueChanged,
                "error",
                Some("response"),
                Some("timeout")
            ),
            Compat::Breaking
        );
    }

    #[test]
    fn an_error_list_or_a_soap_fault_appearing_breaks_clients_as_a_status_change_does() {
        for path in OUTCOME_PLACES {
            assert_eq!(
                Compat::classify(DiffKind::Extra, path, None, Some("[]")),
                Compat::Breaking
            );
            assert_eq!(
                Compat::classify(DiffKind::Missing, path, Some("[]"), None),
                Compat::Breaking
            );
            assert!(is_outcome(path, DiffKind::Extra));
            assert!(!is_outcome(path, DiffKind::ArrayLength));
        }
        assert!(is_outcome("status", DiffKind::ValueChanged));
        assert_eq!(
            Compat::classify(DiffKind::Extra, "body/data/errors", None, Some("[]")),
            Compat::Additive
        );
        assert!(!is_outcome("body/data/errors", DiffKind::Extra));
    }

    #[test]
    fn worst_class_is_the_maximum() {
        assert_eq!(
            [Compat::Changed, Compat::Breaking, Compat::Additive]
                .into_iter()
                .max(),
            Some(Compat::Breaking)
        );
    }
}
