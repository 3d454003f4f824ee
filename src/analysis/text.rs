//! Non-JSON bodies: text by lines (with `similar`, under a time cap), HTML as text after whitespace
//! normalisation, binary by digest.

use std::time::Duration;

use sha2::{Digest, Sha256};
use similar::{Algorithm, DiffOp, TextDiff};

use crate::analysis::diff::{DiffKind, Difference};

/// Most changed regions reported per body; more are summed up in one last difference.
pub const MAX_TEXT_REGIONS: usize = 16;

/// Line differences between two texts, at `body/line/<n>` (`n`: the first changed line of primary, from 1).
/// Past `timeout` the diff falls back to coarser regions rather than running on.
pub fn diff_lines(primary: &str, other: &str, timeout: Duration) -> Vec<Difference> {
    if primary == other {
        return Vec::new();
    }
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .timeout(timeout)
        .diff_lines(primary, other);
    let old: Vec<&str> = diff.iter_old_slices().collect();
    let new: Vec<&str> = diff.iter_new_slices().collect();
    let regions: Vec<&DiffOp> = diff
        .ops()
        .iter()
        .filter(|op| !matches!(op, DiffOp::Equal { .. }))
        .collect();
    let mut differences = Vec::with_capacity(regions.len().min(MAX_TEXT_REGIONS + 1));
    for op in regions.iter().take(MAX_TEXT_REGIONS) {
        let old_range = op.old_range();
        let new_range = op.new_range();
        let kind = match op {
            DiffOp::Delete { .. } => DiffKind::Missing,
            DiffOp::Insert { .. } => DiffKind::Extra,
            _ => DiffKind::ValueChanged,
        };
        let lines = |slices: &[&str], range: std::ops::Range<usize>| {
            (!range.is_empty()).then(|| slices[range].concat().trim_end_matches('\n').to_string())
        };
        differences.push(Difference::at(
            format!("body/line/{}", old_range.start + 1),
            kind,
            lines(&old, old_range),
            lines(&new, new_range),
        ));
    }
    if regions.len() > MAX_TEXT_REGIONS {
        differences.push(Difference::at(
            "body/lines",
            DiffKind::ValueChanged,
            None,
            Some(format!(
                "{} more changed regions",
                regions.len() - MAX_TEXT_REGIONS
            )),
        ));
    }
    differences
}

/// HTML made comparable as text: one tag per line, whitespace runs collapsed, blank lines dropped.
pub fn normalise_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut chars = html.chars().peekable();
    let mut pending_space = false;
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if c == '<' && !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        } else if pending_space && !out.is_empty() && !out.ends_with('\n') {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
        if c == '>' {
            // Text after a tag starts its own line too, so that a changed word names its place.
            while chars.peek().is_some_and(|next| next.is_whitespace()) {
                chars.next();
            }
            out.push('\n');
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Binary bodies compare by content; a difference shows each side's digest and size.
pub fn diff_binary(primary: &[u8], other: &[u8]) -> Option<Difference> {
    (primary != other).then(|| {
        Difference::at(
            "body",
            DiffKind::ValueChanged,
            Some(digest(primary)),
            Some(digest(other)),
        )
    })
}

/// `sha256:<first 16 hex digits> (<n> bytes)`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex} ({} bytes)", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(100);

    #[test]
    fn changed_lines_are_reported_at_their_line_numbers() {
        let a = "alpha\nbeta\ngamma\ndelta\n";
        let b = "alpha\nBETA\ngamma\ndelta\nepsilon\n";
        let found = diff_lines(a, b, TIMEOUT);
        let summary: Vec<(&str, DiffKind)> =
            found.iter().map(|d| (d.path.as_str(), d.kind)).collect();
        assert_eq!(
            summary,
            vec![
                ("body/line/2", DiffKind::ValueChanged),
                ("body/line/5", DiffKind::Extra)
            ]
        );
        assert_eq!(found[0].primary.as_deref(), Some("beta"));
        assert_eq!(found[0].other.as_deref(), Some("BETA"));
        assert!(diff_lines(a, a, TIMEOUT).is_empty());
    }

    #[test]
    fn many_regions_are_capped() {
        let a: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let b: String = (0..100)
            .map(|i| {
                if i % 2 == 0 {
                    format!("LINE {i}\n")
                } else {
                    format!("line {i}\n")
                }
            })
            .collect();
        let found = diff_lines(&a, &b, TIMEOUT);
        assert_eq!(found.len(), MAX_TEXT_REGIONS + 1);
        assert_eq!(found.last().unwrap().path, "body/lines");
        assert_eq!(
            found.last().unwrap().other.as_deref(),
            Some("34 more changed regions")
        );
    }

    #[test]
    fn html_whitespace_does_not_matter_but_words_do() {
        let a = normalise_html("<html>\n  <body>\n    <p>Hello   world</p>\n  </body>\n</html>");
        let b = normalise_html("<html><body><p>Hello world</p></body></html>");
        assert_eq!(a, b);
        let c = normalise_html("<html><body><p>Hello there</p></body></html>");
        let found = diff_lines(&a, &c, TIMEOUT);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].primary.as_deref(), Some("Hello world"));
    }

    #[test]
    fn binary_bodies_compare_by_digest() {
        assert!(diff_binary(&[1, 2, 3], &[1, 2, 3]).is_none());
        let found = diff_binary(&[1, 2, 3], &[1, 2, 4]).unwrap();
        assert_eq!(found.path, "body");
        assert!(found.primary.unwrap().starts_with("sha256:"));
        assert!(found.other.unwrap().ends_with("(3 bytes)"));
    }
}
