//! Latency per target as HDR histograms (mergeable across time buckets and replicas), their percentiles, and
//! the latency-regression verdict with secondary as the noise baseline.

use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::exchange::Target;

/// Values are microseconds, from 1 µs to one hour, 3 significant digits.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Fewest samples per target for a latency verdict.
pub const MIN_SAMPLES: u64 = 100;

/// One histogram per target.
#[derive(Clone, Debug)]
pub struct Latencies {
    histograms: [Histogram<u64>; 3],
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            histograms: Target::ALL.map(|_| new_histogram()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds")
}

/// Percentiles of one target, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub samples: u64,
}

impl Latencies {
    pub fn record(&mut self, target: Target, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.histograms[target.index()].saturating_record(micros);
    }

    pub fn histogram(&self, target: Target) -> &Histogram<u64> {
        &self.histograms[target.index()]
    }

    pub fn merge(&mut self, other: &Latencies) {
        for target in Target::ALL {
            self.merge_target(target, other.histogram(target));
        }
    }

    pub fn merge_target(&mut self, target: Target, histogram: &Histogram<u64>) {
        // Same bounds on both sides, so adding cannot fail; a mismatched histogram is skipped.
        let _ = self.histograms[target.index()].add(histogram);
    }

    pub fn summary(&self, target: Target) -> LatencySummary {
        let histogram = self.histogram(target);
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        LatencySummary {
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            samples: histogram.len(),
        }
    }

    /// The candidate's p99 is more than `factor` times primary's and secondary's, while secondary's stays within
    /// `factor` times primary's, each with at least [`MIN_SAMPLES`] samples. Secondary is the noise baseline: a
    /// candidate no slower than `factor` times what the same code measured is not called slow.
    pub fn regression(&self, factor: f64) -> bool {
        if Target::ALL
            .iter()
            .any(|target| self.histogram(*target).len() < MIN_SAMPLES)
        {
            return false;
        }
        let p99 = |target: Target| self.histogram(target).value_at_quantile(0.99) as f64;
        let (primary, secondary) = (p99(Target::Primary), p99(Target::Secondary));
        secondary <= factor * primary && p99(Target::Candidate) > factor * primary.max(secondary)
    }

    pub fn is_empty(&self) -> bool {
        self.histograms.iter().all(|h| h.is_empty())
    }
}

/// The compact V2 encoding of a histogram, for storage.
pub fn encode(histogram: &Histogram<u64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot fail for a histogram built with valid bounds.
    let _ = V2Serializer::new().serialize(histogram, &mut bytes);
    bytes
}

/// Reads a stored histogram; `None` if the bytes are not one.
pub fn decode(bytes: &[u8]) -> Option<Histogram<u64>> {
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(primary_ms: u64, secondary_ms: u64, candidate_ms: u64, samples: u64) -> Latencies {
        let mut latencies = Latencies::default();
        for i in 0..samples {
            let jitter = i % 5;
            latencies.record(Target::Primary, Duration::from_millis(primary_ms + jitter));
            latencies.record(
                Target::Secondary,
                Duration::from_millis(secondary_ms + jitter),
            );
            latencies.record(
                Target::Candidate,
                Duration::from_millis(candidate_ms + jitter),
            );
        }
        latencies
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let latencies = filled(10, 10, 10, 1000);
        let summary = latencies.summary(Target::Primary);
        assert_eq!(summary.samples, 1000);
        assert!((10.0..=15.0).contains(&summary.p50_ms), "{summary:?}");
        assert!(summary.p50_ms <= summary.p90_ms && summary.p90_ms <= summary.p99_ms);
    }

    #[test]
    fn a_slow_candidate_is_a_latency_regression_only_beyond_noise() {
        assert!(filled(10, 11, 100, 200).regression(1.5));
        assert!(!filled(10, 11, 12, 200).regression(1.5));
        // Secondary just as slow: the slowness is the environment's, not the candidate's.
        assert!(!filled(10, 100, 100, 200).regression(1.5));
        // Too few samples to say.
        assert!(!filled(10, 11, 100, 99).regression(1.5));
    }

    #[test]
    fn histograms_round_trip_and_merge() {
        let latencies = filled(10, 10, 30, 150);
        let encoded = encode(latencies.histogram(Target::Candidate));
        let decoded = decode(&encoded).unwrap();
        assert_eq!(decoded.len(), 150);
        let mut merged = Latencies::default();
        merged.merge_target(Target::Candidate, &decoded);
        merged.merge_target(Target::Candidate, &decoded);
        assert_eq!(merged.histogram(Target::Candidate).len(), 300);
        assert!(decode(b"not a histogram").is_none());
    }
}
