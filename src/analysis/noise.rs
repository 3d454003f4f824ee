//! Noise: the per-request cancellation of candidate differences that secondary shares, and the aggregated test
//! (Diffy's) that calls a path a regression only when the candidate differs there clearly more than noise does.

use serde::{Deserialize, Serialize};

/// The two thresholds of the aggregated test, as fractions.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// `|raw - noise| / (raw + noise)` must exceed this (`--threshold-relative`, given in percent).
    pub relative: f64,
    /// `|raw - noise| / requests` must exceed this (`--threshold-absolute`, given in percent).
    pub absolute: f64,
}

impl Thresholds {
    /// The relative threshold, in percent.
    pub const DEFAULT_RELATIVE_PERCENT: f64 = 20.0;
    /// The absolute threshold, in percent.
    pub const DEFAULT_ABSOLUTE_PERCENT: f64 = 0.03;

    /// From the flags' percentages.
    pub fn from_percent(relative: f64, absolute: f64) -> Self {
        Self {
            relative: relative / 100.0,
            absolute: absolute / 100.0,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self::from_percent(
            Self::DEFAULT_RELATIVE_PERCENT,
            Self::DEFAULT_ABSOLUTE_PERCENT,
        )
    }
}

/// What a path's counts say.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The candidate differs here clearly more often than primary and secondary do.
    Regression,
    /// Differences here are explained by noise.
    Noise,
}

/// The aggregated test for one path: `raw` requests where the candidate differed, `noise` requests where
/// secondary differed, out of `requests`.
pub fn verdict(raw: u64, noise: u64, requests: u64, thresholds: Thresholds) -> Verdict {
    if raw <= noise || requests == 0 {
        return Verdict::Noise;
    }
    let delta = (raw - noise) as f64;
    let relative = delta / (raw + noise) as f64;
    let absolute = delta / requests as f64;
    if relative > thresholds.relative && absolute > thresholds.absolute {
        Verdict::Regression
    } else {
        Verdict::Noise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregated_test() {
        let t = Thresholds::default();
        assert_eq!(verdict(100, 0, 100, t), Verdict::Regression);
        assert_eq!(verdict(100, 100, 100, t), Verdict::Noise);
        assert_eq!(verdict(100, 10, 100, t), Verdict::Regression);
        // Relative difference 10/190 < 20%.
        assert_eq!(verdict(100, 90, 100, t), Verdict::Noise);
        // One in ten thousand: 0.01% is not above the absolute 0.03%.
        assert_eq!(verdict(1, 0, 10_000, t), Verdict::Noise);
        assert_eq!(verdict(10, 0, 1_000, t), Verdict::Regression);
        assert_eq!(verdict(0, 0, 0, t), Verdict::Noise);
    }

    #[test]
    fn thresholds_are_given_in_percent() {
        let t = Thresholds::from_percent(20.0, 0.03);
        assert!((t.relative - 0.2).abs() < 1e-12);
        assert!((t.absolute - 0.0003).abs() < 1e-12);
    }
}
