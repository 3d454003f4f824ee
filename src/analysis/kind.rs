//! The kinds of difference, by the names the store, the API and the gate use.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of difference.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Same type, another value.
    ValueChanged,
    /// Another JSON type (a number became a string), or another kind of body or outcome.
    TypeChanged,
    /// Present in primary, absent from the other side.
    Missing,
    /// Absent from primary, present on the other side.
    Extra,
    /// An array of another length (its elements are compared too).
    ArrayLength,
    /// The same elements in another order.
    ArrayOrder,
    /// The candidate answers slower (a latency regression): the kind of the place `latency`, which the
    /// verdicts name and accept rules match; no comparison of bodies emits it.
    Slower,
}

impl DiffKind {
    pub const ALL: [DiffKind; 7] = [
        DiffKind::ValueChanged,
        DiffKind::TypeChanged,
        DiffKind::Missing,
        DiffKind::Extra,
        DiffKind::ArrayLength,
        DiffKind::ArrayOrder,
        DiffKind::Slower,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::ValueChanged => "value_changed",
            DiffKind::TypeChanged => "type_changed",
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::ArrayLength => "array_length",
            DiffKind::ArrayOrder => "array_order",
            DiffKind::Slower => "slower",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The kind seen from the other side (primary and the other swapped).
    pub fn mirrored(self) -> Self {
        match self {
            DiffKind::Missing => DiffKind::Extra,
            DiffKind::Extra => DiffKind::Missing,
            other => other,
        }
    }
}

impl fmt::Display for DiffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Readable name of a kind, for pages and the gate's output: `value changed`.
pub fn kind_label(kind: DiffKind) -> String {
    kind.as_str().replace('_', " ")
}
