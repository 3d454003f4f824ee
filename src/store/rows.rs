//! How a [`Tally`] maps to table rows and back: counter names, place rows and signature keys; and text made fit
//! for both databases.

use std::borrow::Cow;

use crate::analysis::aggregate::Tally;
use crate::analysis::diff::DiffKind;
use crate::analysis::{BodySkip, PathKey, SkipReason};
use crate::exchange::{ErrorKind, Target};

/// The counters of one endpoint as (name, value) rows.
pub fn counter_rows(counts: &Tally) -> Vec<(String, i64)> {
    let mut rows = vec![
        ("requests".to_string(), counts.requests as i64),
        ("compared".to_string(), counts.compared as i64),
        ("noisy".to_string(), counts.noisy as i64),
        ("redacted".to_string(), counts.redacted as i64),
    ];
    for (reason, count) in &counts.skipped {
        rows.push((format!("skipped:{}", reason.as_str()), *count as i64));
    }
    for ((target, kind), count) in &counts.errors {
        rows.push((format!("error:{target}:{kind}"), *count as i64));
    }
    for ((target, reason), count) in &counts.body_skipped {
        rows.push((format!("body_skipped:{target}:{reason}"), *count as i64));
    }
    rows.retain(|(_, value)| *value != 0);
    rows
}

/// Adds one counter row back into counts; unknown names (from a newer version) are ignored.
pub fn apply_counter(counts: &mut Tally, name: &str, value: i64) {
    let value = u64::try_from(value).unwrap_or(0);
    let mut parts = name.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("requests"), None, _) => counts.requests += value,
        (Some("compared"), None, _) => counts.compared += value,
        (Some("noisy"), None, _) => counts.noisy += value,
        (Some("redacted"), None, _) => counts.redacted += value,
        (Some("skipped"), Some(reason), None) => {
            if let Some(reason) = SkipReason::parse(reason) {
                *counts.skipped.entry(reason).or_default() += value;
            }
        }
        (Some("error"), Some(target), Some(kind)) => {
            if let (Some(target), Some(kind)) = (parse_target(target), ErrorKind::parse(kind)) {
                *counts.errors.entry((target, kind)).or_default() += value;
            }
        }
        (Some("body_skipped"), Some(target), Some(reason)) => {
            if let (Some(target), Some(reason)) = (parse_target(target), BodySkip::parse(reason)) {
                *counts.body_skipped.entry((target, reason)).or_default() += value;
            }
        }
        _ => {}
    }
}

pub fn parse_target(text: &str) -> Option<Target> {
    Target::ALL
        .into_iter()
        .find(|target| target.as_str() == text)
}

/// Longest difference path stored; longer ones are cut (PostgreSQL cannot index a key of a few KiB).
pub const MAX_STORED_PATH: usize = 1024;

/// Text as both databases take it: PostgreSQL's text refuses NUL, which becomes U+FFFD.
pub fn clean_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A difference path as stored: clean text, cut to [`MAX_STORED_PATH`] bytes (ending in `…` when cut).
pub fn clean_path(path: &str) -> Cow<'_, str> {
    let cleaned = clean_text(path);
    if cleaned.len() <= MAX_STORED_PATH {
        return cleaned;
    }
    let mut cut = MAX_STORED_PATH - '…'.len_utf8();
    while !cleaned.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}…", &cleaned[..cut]))
}

/// A signature as stored: its JSON text and a stable 64-bit key for it. Paths are stored as [`clean_path`]
/// makes them, so that they match their place rows.
pub fn signature_row(signature: &[PathKey]) -> (i64, String) {
    let encoded: Vec<(Cow<'_, str>, &str)> = signature
        .iter()
        .map(|(path, kind)| (clean_path(path), kind.as_str()))
        .collect();
    let text = serde_json::to_string(&encoded).unwrap_or_default();
    // A hash fixed by its definition, so every replica computes the same key for the same set.
    (crate::encoding::fnv1a(text.as_bytes()) as i64, text)
}

/// A stored signature back into places; `None` if the text is not one.
pub fn parse_signature(text: &str) -> Option<Vec<PathKey>> {
    let encoded: Vec<(String, String)> = serde_json::from_str(text).ok()?;
    encoded
        .into_iter()
        .map(|(path, kind)| Some((path, DiffKind::parse(&kind)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip() {
        let mut counts = Tally {
            requests: 10,
            compared: 8,
            noisy: 3,
            ..Default::default()
        };
        counts.skipped.insert(SkipReason::CandidateShed, 2);
        counts
            .errors
            .insert((Target::Candidate, ErrorKind::Timeout), 4);
        counts
            .body_skipped
            .insert((Target::Primary, BodySkip::JsonTooDeep), 1);
        let mut back = Tally::default();
        for (name, value) in counter_rows(&counts) {
            apply_counter(&mut back, &name, value);
        }
        assert_eq!(back.requests, 10);
        assert_eq!(back.compared, 8);
        assert_eq!(back.noisy, 3);
        assert_eq!(back.skipped, counts.skipped);
        assert_eq!(back.errors, counts.errors);
        assert_eq!(back.body_skipped, counts.body_skipped);
        apply_counter(&mut back, "from:a:newer:version", 5);
    }

    #[test]
    fn signatures_round_trip_with_stable_keys() {
        let signature = vec![
            ("body/a b".to_string(), DiffKind::Missing),
            ("status".to_string(), DiffKind::ValueChanged),
        ];
        let (hash, text) = signature_row(&signature);
        assert_eq!(parse_signature(&text), Some(signature.clone()));
        assert_eq!(signature_row(&signature).0, hash);
        assert_ne!(signature_row(&signature[..1]).0, hash);
        assert!(parse_signature("nonsense").is_none());
    }

    #[test]
    fn text_is_made_fit_for_both_databases() {
        assert_eq!(clean_text("body/a\0b"), "body/a\u{FFFD}b");
        assert!(matches!(clean_text("body/ab"), Cow::Borrowed(_)));
        let long = format!("body/{}", "é".repeat(2000));
        let cut = clean_path(&long);
        assert!(cut.len() <= MAX_STORED_PATH && cut.ends_with('…'));
        let (_, text) = signature_row(&[("body/a\0b".to_string(), DiffKind::Missing)]);
        assert!(text.contains('\u{FFFD}'), "{text}");
    }
}
