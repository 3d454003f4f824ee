//! The typed difference: a path in the project's scheme, a kind, a compatibility class and both values.
//!
//! Paths: `status`, `error`, `header/<lowercase-name>`, `body` followed by an RFC 6901 JSON Pointer
//! (`body/user/name`), or `body/line/<n>` for text bodies. Each difference keeps its concrete path (array
//! indices as they are) and its generalised path (indices as `*`), which is what aggregates count.

use serde::{Deserialize, Serialize};

use crate::analysis::compat::Compat;
pub use crate::analysis::kind::DiffKind;

/// Longest rendering of a value kept with a difference.
pub const MAX_VALUE_LEN: usize = 256;

/// One difference between primary and another upstream's response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Concrete path, array indices kept (`body/items/3/price`).
    pub path: String,
    /// Generalised path, array indices as `*` (`body/items/*/price`).
    pub generalised: String,
    pub kind: DiffKind,
    pub compat: Compat,
    /// Primary's value, rendered and truncated; `None` when absent.
    pub primary: Option<String>,
    /// The other side's value, rendered and truncated; `None` when absent.
    pub other: Option<String>,
}

impl Difference {
    /// A difference whose generalised path is its concrete path (status, headers, text lines).
    pub fn at(
        path: impl Into<String>,
        kind: DiffKind,
        primary: Option<String>,
        other: Option<String>,
    ) -> Self {
        let path = path.into();
        let compat = Compat::classify(kind, &path, primary.as_deref(), other.as_deref());
        Self {
            generalised: path.clone(),
            path,
            kind,
            compat,
            primary: primary.map(truncate),
            other: other.map(truncate),
        }
    }
}

/// Cuts a rendering to [`MAX_VALUE_LEN`] bytes (on a character boundary), marking the cut with `…`.
pub fn truncate(mut text: String) -> String {
    if text.len() > MAX_VALUE_LEN {
        let mut cut = MAX_VALUE_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A JSON value rendered compactly for storage, at most [`MAX_VALUE_LEN`] bytes: rendering stops there, so a
/// huge value costs no more than a small one.
pub fn render_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut writer = Bounded {
        bytes: Vec::with_capacity(64),
        limit: MAX_VALUE_LEN + 4,
    };
    // Stopping early is reported as an error; what was written up to then is what is kept.
    let _ = serde_json::to_writer(&mut writer, value);
    truncate(String::from_utf8_lossy(&writer.bytes).into_owned())
}

/// A writer that accepts bytes up to a limit and fails past it.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.bytes.len());
        if room == 0 {
            return Err(std::io::Error::other("rendering limit reached"));
        }
        let taken = buf.len().min(room);
        self.bytes.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(300));
        assert!(cut.len() <= MAX_VALUE_LEN + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".into()), "short");
    }

    #[test]
    fn huge_values_render_to_the_limit() {
        let huge = Value::Array((0..100_000).map(Value::from).collect());
        let rendered = render_json(&huge);
        assert!(rendered.starts_with("[0,1,2,3"));
        assert!(rendered.ends_with('…'));
        assert!(rendered.len() <= MAX_VALUE_LEN + '…'.len_utf8());
        assert_eq!(render_json(&serde_json::json!({"a": "é"})), r#"{"a":"é"}"#);
    }

    #[test]
    fn kinds_round_trip_and_mirror() {
        for kind in DiffKind::ALL {
            assert_eq!(DiffKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.mirrored().mirrored(), kind);
        }
        assert_eq!(DiffKind::Missing.mirrored(), DiffKind::Extra);
    }
}
