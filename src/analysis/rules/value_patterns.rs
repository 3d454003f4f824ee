//! The rules file's `[[redact_value]]` tables: named regular expressions whose matches are stored only as their
//! keyed hash, checked when the file is read (compiled within a size limit, never matching empty text).

use serde::Deserialize;

/// Most bytes one pattern may compile to: a pattern that blows up is refused, never compiled without bound.
pub const MAX_PATTERN_SIZE: usize = 1 << 20;

/// A `[[redact_value]]` table: `name = "order id"`, `pattern = "ORD-[0-9]{8}"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuePatternSpec {
    pub name: String,
    pub pattern: String,
}

impl ValuePatternSpec {
    /// The pattern compiled once to check it: a one-line reason naming it when it cannot be used.
    pub fn check(&self) -> Result<(), String> {
        let regex = regex::bytes::RegexBuilder::new(&self.pattern)
            .size_limit(MAX_PATTERN_SIZE)
            .build()
            .map_err(|error| {
                let reason = error.to_string();
                format!(
                    "redact_value \"{}\": {}",
                    self.name,
                    reason.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            })?;
        if self.name.trim().is_empty() {
            return Err(format!(
                "redact_value with pattern \"{}\" has no name",
                self.pattern
            ));
        }
        if regex.is_match(b"") {
            return Err(format!(
                "redact_value \"{}\": the pattern matches empty text, so it would redact nothing everywhere",
                self.name
            ));
        }
        Ok(())
    }
}
