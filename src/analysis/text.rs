//! Non-JSON bodies: text by lines (with `similar`, under a time cap), HTML as text after whitespace
//! normalisation, binary by digest.

use std::collections::HashSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use similar::{Algorithm, DiffOp, TextDiff};

use crate::analysis::diff::{DiffKind, Difference};

/// Most changed regions kept per body; the rest are summed up (see [`limit_regions`]).
pub const MAX_TEXT_REGIONS: usize = 64;

/// Path of the summary of the regions past [`MAX_TEXT_REGIONS`].
pub const MORE_LINES: &str = "body/lines";
/// Path marking that some of those regions are not shared by the other comparison of the same request: it
/// cannot be cancelled by the summary on the other side.
pub const UNSHARED_LINES: &str = "body/lines/unshared";

/// Line differences between two texts, at `body/line/<n>` (`n`: the first changed line of primary, from 1),
/// every region. Past `timeout` the diff falls back to coarser regions rather than running on.
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
    let regions = diff
        .ops()
        .iter()
        .filter(|op| !matches!(op, DiffOp::Equal { .. }));
    regions
        .map(|op| {
            let old_range = op.old_range();
            let new_range = op.new_range();
            let kind = match op {
                DiffOp::Delete { .. } => DiffKind::Missing,
                DiffOp::Insert { .. } => DiffKind::Extra,
                _ => DiffKind::ValueChanged,
            };
            let lines = |slices: &[&str], range: std::ops::Range<usize>| {
                (!range.is_empty())
                    .then(|| slices[range].concat().trim_end_matches('\n').to_string())
            };
            Difference::at(
                format!("body/line/{}", old_range.start + 1),
                kind,
                lines(&old, old_range),
                lines(&new, new_range),
            )
        })
        .collect()
}

/// Keeps at most [`MAX_TEXT_REGIONS`] line regions on each side of a request (candidate and noise), summing the
/// rest up at [`MORE_LINES`]. A side whose summed-up regions include one the other side does not have (same
/// line, same kind) also gets [`UNSHARED_LINES`], so that a real change far down a noisy text is not hidden by
/// the summary the two sides share.
pub fn limit_regions(candidate: &mut Vec<Difference>, noise: &mut Vec<Difference>) {
    let keys = |differences: &[Difference]| -> HashSet<(String, DiffKind)> {
        differences
            .iter()
            .filter(|d| d.path.starts_with("body/line/"))
            .map(|d| (d.generalised.clone(), d.kind))
            .collect()
    };
    let (candidate_keys, noise_keys) = (keys(candidate), keys(noise));
    limit_side(candidate, &noise_keys);
    limit_side(noise, &candidate_keys);
}

fn limit_side(differences: &mut Vec<Difference>, other_side: &HashSet<(String, DiffKind)>) {
    let regions = differences
        .iter()
        .filter(|d| d.path.starts_with("body/line/"))
        .count();
    if regions <= MAX_TEXT_REGIONS {
        return;
    }
    let mut kept = 0;
    let mut overflow = 0;
    let mut unshared = false;
    differences.retain(|d| {
        if !d.path.starts_with("body/line/") {
            return true;
        }
        kept += 1;
        if kept <= MAX_TEXT_REGIONS {
            return true;
        }
        overflow += 1;
        unshared |= !other_side.contains(&(d.generalised.clone(), d.kind));
        false
    });
    differences.push(Difference::at(
        MORE_LINES,
        DiffKind::ValueChanged,
        None,
        Some(format!("{overflow} more changed regions")),
    ));
    if unshared {
        differences.push(Difference::at(
            UNSHARED_LINES,
            DiffKind::ValueChanged,
            None,
            Some("changed regions the other comparison of this request does not have".to_string()),
        ));
    }
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

    /// Every 50th line differs (noise); `changed` differs at one more line far down.
    fn noisy_text(noise_seed: usize, changed: Option<usize>) -> String {
        (0..10_000)
            .map(|i| match (i % 50, changed) {
                (0, _) => format!("token {i} {noise_seed}\n"),
                (_, Some(line)) if line == i => "CHANGED\n".to_string(),
                _ => format!("line {i}\n"),
            })
            .collect()
    }

    #[test]
    fn many_regions_are_summed_up_and_an_unshared_one_stays_visible() {
        let primary = noisy_text(1, None);
        let mut noise = diff_lines(&primary, &noisy_text(2, None), TIMEOUT);
        let mut candidate = diff_lines(&primary, &noisy_text(3, Some(9_025)), TIMEOUT);
        assert_eq!(noise.len(), 200);
        assert_eq!(candidate.len(), 201);
        limit_regions(&mut candidate, &mut noise);
        assert_eq!(noise.len(), MAX_TEXT_REGIONS + 1);
        assert_eq!(noise.last().unwrap().path, MORE_LINES);
        assert_eq!(candidate.len(), MAX_TEXT_REGIONS + 2);
        assert_eq!(candidate.last().unwrap().path, UNSHARED_LINES);
        assert_eq!(
            candidate[MAX_TEXT_REGIONS].other.as_deref(),
            Some("137 more changed regions")
        );

        // Only noise: the summaries match and nothing is unshared.
        let mut candidate = diff_lines(&primary, &noisy_text(4, None), TIMEOUT);
        let mut noise = diff_lines(&primary, &noisy_text(5, None), TIMEOUT);
        limit_regions(&mut candidate, &mut noise);
        assert!(candidate.iter().all(|d| d.path != UNSHARED_LINES));
        assert_eq!(candidate.len(), MAX_TEXT_REGIONS + 1);
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
