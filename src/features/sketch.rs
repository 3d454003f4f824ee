//! The requests of one group (an endpoint's requests with one signature) summed up by their features, in a
//! fixed size whatever the traffic: the most frequent feature names, and for each the most frequent values.

use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::features::topk::{Counter, Payload, TopK};

/// Feature names tracked per sketch: more than a request has (a method, a few path and query parameters with
/// their classes, a dozen headers), so that names present in most requests are never pushed out.
pub const MAX_NAMES: usize = 40;
/// Values tracked per name: the ten last digits and the parities fit exactly, and any value in more than a
/// sixteenth of the requests is kept.
pub const MAX_VALUES: usize = 16;
/// Longest stored sketch text read back; anything longer was not written by this version.
const MAX_ENCODED: usize = 1 << 20;

/// A feature's values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Values(TopK<()>);

impl Values {
    pub fn counters(&self) -> &[Counter<()>] {
        self.0.counters()
    }
}

impl Payload for Values {
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0, MAX_VALUES);
    }

    fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

/// Requests counted by their features. Counts are bounds: a feature's true count is never above its upper
/// bound nor under its lower bound, whatever was pushed out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureSketch {
    /// Requests counted.
    #[serde(rename = "r")]
    pub requests: u64,
    /// Features left out of requests that had more than the per-request caps.
    #[serde(rename = "d", default)]
    pub dropped: u64,
    #[serde(rename = "f", default)]
    names: TopK<Values>,
}

/// One feature value (or a feature's presence, without a value) with bounds on how many requests had it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureCount<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
    pub lower: u64,
    pub upper: u64,
}

impl FeatureSketch {
    /// Counts one request's features.
    pub fn add(&mut self, features: &Features) {
        self.requests = self.requests.saturating_add(1);
        self.dropped = self.dropped.saturating_add(u64::from(features.dropped));
        for (name, value) in &features.list {
            let counter = self.names.add(name, MAX_NAMES);
            if let Some(value) = value {
                counter.payload.0.add(value, MAX_VALUES);
            }
        }
    }

    /// Adds another sketch (another flush, another replica, another signature).
    pub fn merge(&mut self, other: &FeatureSketch) {
        self.requests = self.requests.saturating_add(other.requests);
        self.dropped = self.dropped.saturating_add(other.dropped);
        self.names.merge(&other.names, MAX_NAMES);
    }

    /// Every tracked feature: each name's presence, then each of its values.
    pub fn features(&self) -> impl Iterator<Item = FeatureCount<'_>> {
        self.names.counters().iter().flat_map(|name| {
            let presence = FeatureCount {
                name: &name.item,
                value: None,
                lower: name.lower(),
                upper: name.count,
            };
            let values = name
                .payload
                .0
                .counters()
                .iter()
                .map(move |value| FeatureCount {
                    name: &name.item,
                    value: Some(&value.item),
                    lower: value.lower(),
                    upper: value_upper(name, Some(value)),
                });
            std::iter::once(presence).chain(values)
        })
    }

    /// The tracked feature names, each with its values.
    pub fn names(&self) -> &[Counter<Values>] {
        self.names.counters()
    }

    /// The most requests an untracked name can have had.
    pub fn name_floor(&self) -> u64 {
        self.names.floor(MAX_NAMES)
    }

    /// The most requests an untracked value of a tracked name can have had since the name was taken in.
    pub fn value_floor(&self, name: &Counter<Values>) -> u64 {
        name.payload.0.floor(MAX_VALUES)
    }

    /// The most requests that can have had `name` (with `value`, if given).
    pub fn upper(&self, name: &str, value: Option<&str>) -> u64 {
        let Some(counter) = self.names.get(name) else {
            return self.names.floor(MAX_NAMES);
        };
        match value {
            None => counter.count,
            Some(value) => value_upper(counter, counter.payload.0.get(value)).min(counter.count),
        }
    }

    /// The memory it holds, roughly.
    pub fn heap_bytes(&self) -> usize {
        64 + self.names.heap_bytes()
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        // Plain data always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored sketch back, cut to this version's sizes; `None` if the text is not one.
    pub fn decode(text: &str) -> Option<FeatureSketch> {
        if text.len() > MAX_ENCODED {
            return None;
        }
        let mut sketch: FeatureSketch = serde_json::from_str(text).ok()?;
        if sketch.names.len() > MAX_NAMES {
            sketch.names.keep(MAX_NAMES);
        }
        for name in sketch.names.counters_mut() {
            if name.payload.0.len() > MAX_VALUES {
                name.payload.0.keep(MAX_VALUES);
            }
        }
        Some(sketch)
    }
}

/// The most requests that can have had a value: its count (or, untracked, the floor of the name's values), plus
/// what the name saw before it was last taken into the sketch (its error), when its values were not counted.
fn value_upper(name: &Counter<Values>, value: Option<&Counter<()>>) -> u64 {
    let counted = value.map_or_else(|| name.payload.0.floor(MAX_VALUES), |value| value.count);
    counted.saturating_add(name.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, Option<&str>)]) -> Features {
        Features {
            list: pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.map(str::to_string)))
                .collect(),
            dropped: 0,
        }
    }

    #[test]
    fn counts_names_and_values_and_reads_back() {
        let mut sketch = FeatureSketch::default();
        for n in 0..20 {
            let currency = ["EUR", "USD", "GBP", "JPY"][n % 4];
            sketch.add(&request(&[
                ("method", Some("GET")),
                ("query currency", Some(currency)),
                ("body field coupon", None),
            ]));
        }
        assert_eq!(sketch.requests, 20);
        assert_eq!(sketch.upper("query currency", Some("EUR")), 5);
        assert_eq!(sketch.upper("query currency", Some("CHF")), 0);
        assert_eq!(sketch.upper("header x-client", None), 0);
        let eur = sketch
            .features()
            .find(|f| f.value == Some("EUR"))
            .expect("tracked");
        assert_eq!((eur.lower, eur.upper), (5, 5));
        let back = FeatureSketch::decode(&sketch.encode()).unwrap();
        assert_eq!(back, sketch);
        assert!(FeatureSketch::decode("{not json").is_none());
    }

    #[test]
    fn stays_bounded_under_endless_distinct_names_and_values() {
        let mut sketch = FeatureSketch::default();
        for n in 0..5_000 {
            let name = format!("query junk{n}");
            let value = format!("{n:064}");
            sketch.add(&request(&[
                ("method", Some("GET")),
                (name.as_str(), Some(value.as_str())),
                ("header x-id", Some(value.as_str())),
            ]));
        }
        let bytes = sketch.heap_bytes();
        assert!(bytes < MAX_NAMES * (200 + MAX_VALUES * 120), "{bytes}");
        // The features every request had are still there, counted exactly.
        assert_eq!(sketch.upper("method", Some("GET")), 5_000);
        let method = sketch.features().find(|f| f.name == "method").unwrap();
        assert_eq!(method.lower, 5_000);
        // Any one junk value is said to be rare.
        assert!(sketch.upper("header x-id", Some("nothing like it")) < 5_000 / 8);
    }

    #[test]
    fn merged_sketches_bound_the_true_counts() {
        let mut a = FeatureSketch::default();
        let mut b = FeatureSketch::default();
        for n in 0..100u32 {
            let digit = (n % 10).to_string();
            let target = if n % 3 == 0 { &mut a } else { &mut b };
            target.add(&request(&[("path /orders/{id} last digit", Some(&digit))]));
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.requests, 100);
        assert_eq!(merged.upper("path /orders/{id} last digit", Some("7")), 10);
    }
}
