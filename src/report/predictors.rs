//! The request features that predict a change: those far more common among its failing requests than among
//! the passing requests of the same endpoints, told from the feature sketches kept per signature.
//!
//! A feature value is a predictor when all of these hold, on the sketches' bounds (the failing count at its
//! lowest, the passing count at its highest, so that an approximate sketch can only hide a predictor, never
//! make one up):
//! - at least [`MIN_SUPPORT`] failing requests have it, and at least [`MIN_FAILING_SHARE`] of them;
//! - its share among failing requests is at least [`MIN_LIFT`] times its share among passing ones;
//! - a χ² test of independence on the 2×2 table (feature or not, failing or not) gives p < 0.001
//!   (χ² ≥ [`MIN_CHI_SQUARE`], one degree of freedom), so that a handful of requests cannot make one.
//!
//! A feature in every failing request and about 5 % of passing ones (the demo's order ids ending in 7) passes
//! all three; a change that fails on every request has no passing ones and so no predictor.

use std::collections::BTreeMap;

use crate::analysis::PathKey;
use crate::analysis::aggregate::Tally;
use crate::features::FeatureSketch;
use crate::features::totals::FeatureTotals;
use crate::report::changes::{Change, Predictor};
use crate::store::rows::signature_row;
use crate::store::sketches::FeatureSketches;

/// Fewest failing requests with the feature.
pub const MIN_SUPPORT: u64 = 5;
/// Least share of the failing requests with the feature.
pub const MIN_FAILING_SHARE: f64 = 0.5;
/// Least ratio of its failing share to its passing share.
pub const MIN_LIFT: f64 = 4.0;
/// χ² for p = 0.001 at one degree of freedom.
pub const MIN_CHI_SQUARE: f64 = 10.83;
/// Predictors reported per change at most, the most discriminating first.
pub const MAX_PREDICTORS: usize = 3;

/// Fills in each change's predictors from the endpoints' counts and the run's feature sketches.
pub fn fill(changes: &mut [Change], tallies: &BTreeMap<String, Tally>, sketches: &FeatureSketches) {
    // Each endpoint's signatures with their stored hashes, and the totals of all its sketches: worked out once
    // for every change that reads them (a change's passing requests are its endpoints' all less its failing).
    let mut endpoints: BTreeMap<&str, EndpointSketches<'_>> = BTreeMap::new();
    for (endpoint, tally) in tallies {
        let mut all = FeatureTotals::default();
        let mut signatures = Vec::with_capacity(tally.signatures.len());
        let mut add = |hash: i64| {
            let sketch = sketches.get(&(endpoint.clone(), hash));
            if let Some(sketch) = sketch {
                all.add(sketch);
            }
            sketch
        };
        add(signature_row(&[]).0);
        for signature in tally.signatures.keys() {
            if let Some(sketch) = add(signature_row(signature).0) {
                signatures.push((signature.as_slice(), sketch));
            }
        }
        endpoints.insert(endpoint, EndpointSketches { all, signatures });
    }
    for change in changes {
        change.predictors = predictors(change, &endpoints);
    }
}

/// One endpoint's sketches: every signature's, and their totals.
struct EndpointSketches<'a> {
    all: FeatureTotals,
    signatures: Vec<(&'a [PathKey], &'a FeatureSketch)>,
}

/// The features that tell `change`'s failing requests from the passing requests of its endpoints.
fn predictors(change: &Change, endpoints: &BTreeMap<&str, EndpointSketches<'_>>) -> Vec<Predictor> {
    if change.is_latency() {
        return Vec::new();
    }
    // A change that fails on every compared request of its endpoints has no passing one to tell it from.
    let passing_compared: u64 = change
        .rates
        .iter()
        .map(|share| share.requests.saturating_sub(share.failing))
        .sum();
    if passing_compared == 0 {
        return Vec::new();
    }
    let mut failing = FeatureTotals::default();
    let mut sketched: Vec<&FeatureTotals> = Vec::with_capacity(change.endpoints.len());
    for endpoint in &change.endpoints {
        let Some(endpoint_sketches) = endpoints.get(endpoint.as_str()) else {
            continue;
        };
        sketched.push(&endpoint_sketches.all);
        let keys = change.keys_on(endpoint);
        for (signature, sketch) in &endpoint_sketches.signatures {
            let fails = signature
                .iter()
                .any(|(path, kind)| keys.contains(&(path.as_str(), *kind)));
            if fails {
                failing.add(sketch);
            }
        }
    }
    // The passing requests are the endpoints' all less the failing ones, in requests and in bounds.
    let all_requests = sketched
        .iter()
        .fold(0u64, |sum, all| sum.saturating_add(all.requests));
    let passing_requests = all_requests.saturating_sub(failing.requests);
    if failing.requests < MIN_SUPPORT || passing_requests == 0 {
        return Vec::new();
    }
    let passing_upper = |name: &str, value: Option<&str>| {
        let (mut presence, mut valued) = (0u64, 0u64);
        for all in &sketched {
            let (p, v) = all.upper_sums(name, value);
            presence = presence.saturating_add(p);
            valued = valued.saturating_add(v);
        }
        let (p, v) = failing.upper_sums(name, value);
        presence
            .saturating_sub(p)
            .min(valued.saturating_sub(v))
            .min(passing_requests)
    };
    let mut found: Vec<Predictor> = failing
        .features()
        .filter(|feature| feature.value.is_some() || presence_tells(feature.name))
        .filter_map(|feature| {
            let with = feature.lower.min(failing.requests);
            // Most features fail the failing-side tests; only the others are looked up on every endpoint.
            if !could_discriminate(with, failing.requests) {
                return None;
            }
            let passing_with = passing_upper(feature.name, feature.value);
            discriminates(with, failing.requests, passing_with, passing_requests).then(|| {
                Predictor {
                    feature: feature.name.to_string(),
                    value: feature.value.map(str::to_string),
                    failing_share: with as f64 / failing.requests as f64,
                    passing_share: passing_with as f64 / passing_requests as f64,
                }
            })
        })
        .collect();
    found.sort_by(|a, b| {
        let gap = |p: &Predictor| p.failing_share - p.passing_share;
        gap(b)
            .total_cmp(&gap(a))
            .then_with(|| b.failing_share.total_cmp(&a.failing_share))
            .then_with(|| (&a.feature, &a.value).cmp(&(&b.feature, &b.value)))
    });
    found.truncate(MAX_PREDICTORS);
    found
}

/// Whether a feature's mere presence can say anything: not for the method or a path segment (every request of
/// the endpoint has them) nor for a number's classes (present exactly when the number is).
fn presence_tells(name: &str) -> bool {
    !(name == "method"
        || name.starts_with("path ")
        || name.ends_with(" last digit")
        || name.ends_with(" parity")
        || name.ends_with(" magnitude"))
}

/// The failing side of the tests: enough failing requests have the feature.
fn could_discriminate(with: u64, failing: u64) -> bool {
    with >= MIN_SUPPORT && failing > 0 && with as f64 / failing as f64 >= MIN_FAILING_SHARE
}

/// The three tests of the module's documentation.
pub fn discriminates(with: u64, failing: u64, passing_with: u64, passing: u64) -> bool {
    if !could_discriminate(with, failing) || passing == 0 {
        return false;
    }
    let failing_share = with as f64 / failing as f64;
    let passing_share = passing_with as f64 / passing as f64;
    failing_share >= MIN_FAILING_SHARE
        && failing_share >= MIN_LIFT * passing_share
        && chi_square(with, failing - with, passing_with, passing - passing_with) >= MIN_CHI_SQUARE
}

/// Pearson's χ² of the 2×2 table [[a, b], [c, d]].
fn chi_square(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let (a, b, c, d) = (a as f64, b as f64, c as f64, d as f64);
    let denominator = (a + b) * (c + d) * (a + c) * (b + d);
    if denominator == 0.0 {
        return 0.0;
    }
    let n = a + b + c + d;
    n * (a * d - b * c).powi(2) / denominator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_feature_of_every_failing_request_and_few_passing_ones() {
        // The demo's orders: 10 failing, all ending in 7; 10 of the 190 passing end in 7 too.
        assert!(discriminates(10, 10, 10, 190));
        // Odd ids: every failing order, but half the passing ones.
        assert!(!discriminates(10, 10, 95, 190));
        // A feature of every request, failing or not.
        assert!(!discriminates(10, 10, 190, 190));
        // Too few failing requests to say anything.
        assert!(!discriminates(3, 3, 0, 190));
        // Half the failing requests, none of the passing: a predictor of half the change.
        assert!(discriminates(50, 100, 0, 900));
        assert!(!discriminates(40, 100, 0, 900));
    }

    #[test]
    fn the_chi_square_of_independent_features_is_small() {
        assert!(chi_square(25, 75, 250, 750) < 1e-9);
        assert!(chi_square(10, 0, 10, 180) > 90.0);
        assert_eq!(chi_square(0, 0, 5, 5), 0.0);
    }
}
