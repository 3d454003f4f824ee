//! Many feature sketches added up for one question (a change's failing requests, or its endpoints' passing
//! ones): each feature's count between the sum of the sketches' lower bounds and the sum of their upper bounds,
//! worked out in one pass over the sketches' entries, however many there are. The sums are linear, so those of
//! some sketches are those of all less those of the others ([`FeatureTotals::upper_sums`]).

use std::collections::HashMap;

use crate::features::sketch::{FeatureCount, FeatureSketch};

/// The sketches added so far.
#[derive(Clone, Debug, Default)]
pub struct FeatureTotals {
    /// Requests the sketches counted.
    pub requests: u64,
    /// Over every sketch, the most a name it does not track can have: the sum of their name floors.
    name_floors: u64,
    names: HashMap<String, NameTotal>,
}

#[derive(Clone, Debug, Default)]
struct NameTotal {
    lower: u64,
    /// Its counts, in the sketches that track it.
    counted: u64,
    /// The name floors of the sketches that track it (their floor does not bound it there: its count does).
    floors_where_counted: u64,
    /// Where the name is tracked, the most an untracked value of it can have: the values' floor plus what the
    /// name saw before it was taken in.
    value_floors: u64,
    values: HashMap<String, ValueTotal>,
}

#[derive(Clone, Debug, Default)]
struct ValueTotal {
    lower: u64,
    /// Its counts less the values' floor of each sketch that tracks it (the floor is in `value_floors`).
    above_floor: u64,
}

impl FeatureTotals {
    /// Adds one sketch's requests and bounds.
    pub fn add(&mut self, sketch: &FeatureSketch) {
        self.requests = self.requests.saturating_add(sketch.requests);
        let name_floor = sketch.name_floor();
        self.name_floors = self.name_floors.saturating_add(name_floor);
        for name in sketch.names() {
            let total = entry(&mut self.names, &name.item);
            total.lower = total.lower.saturating_add(name.lower());
            total.counted = total.counted.saturating_add(name.count);
            total.floors_where_counted = total.floors_where_counted.saturating_add(name_floor);
            let value_floor = sketch.value_floor(name);
            total.value_floors = total
                .value_floors
                .saturating_add(value_floor.saturating_add(name.error));
            for value in name.payload.counters() {
                let entry = entry(&mut total.values, &value.item);
                entry.lower = entry.lower.saturating_add(value.lower());
                entry.above_floor = entry
                    .above_floor
                    .saturating_add(value.count.saturating_sub(value_floor));
            }
        }
    }

    /// Every feature some sketch tracks, with its bounds over all of them.
    pub fn features(&self) -> impl Iterator<Item = FeatureCount<'_>> {
        self.names.iter().flat_map(move |(name, total)| {
            let presence = FeatureCount {
                name,
                value: None,
                lower: total.lower,
                upper: self.presence_upper(total),
            };
            let values = total
                .values
                .iter()
                .map(move |(value, counted)| FeatureCount {
                    name,
                    value: Some(value),
                    lower: counted.lower,
                    upper: self.value_upper(total, counted.above_floor),
                });
            std::iter::once(presence).chain(values)
        })
    }

    /// The most requests that can have had `name` (with `value`, if given).
    pub fn upper(&self, name: &str, value: Option<&str>) -> u64 {
        let (presence, valued) = self.upper_sums(name, value);
        presence.min(valued).min(self.requests)
    }

    /// The sums of the sketches' upper bounds for `name`'s presence and for `name` with `value` (its presence
    /// again without one). Sums, not yet limited by each other: the sums of some sketches are those of all less
    /// those of the others.
    pub fn upper_sums(&self, name: &str, value: Option<&str>) -> (u64, u64) {
        let Some(total) = self.names.get(name) else {
            return (self.name_floors, self.name_floors);
        };
        let presence = self.presence_upper(total);
        let valued = match value {
            None => presence,
            Some(value) => {
                let above = total.values.get(value).map_or(0, |v| v.above_floor);
                self.value_upper(total, above)
            }
        };
        (presence, valued)
    }

    fn presence_upper(&self, total: &NameTotal) -> u64 {
        total
            .counted
            .saturating_add(self.name_floors.saturating_sub(total.floors_where_counted))
    }

    fn value_upper(&self, total: &NameTotal, above_floor: u64) -> u64 {
        total
            .value_floors
            .saturating_add(above_floor)
            .saturating_add(self.name_floors.saturating_sub(total.floors_where_counted))
    }
}

/// The entry of `key`, made only when it is new (no copy of the key for one that is there).
fn entry<'a, T: Default>(map: &'a mut HashMap<String, T>, key: &str) -> &'a mut T {
    if !map.contains_key(key) {
        map.insert(key.to_string(), T::default());
    }
    map.get_mut(key).expect("just made")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Features;

    fn request(pairs: &[(&str, &str)]) -> Features {
        Features {
            list: pairs
                .iter()
                .map(|(name, value)| (name.to_string(), Some(value.to_string())))
                .collect(),
            dropped: 0,
        }
    }

    #[test]
    fn totals_of_exact_sketches_are_exact() {
        let mut a = FeatureSketch::default();
        let mut b = FeatureSketch::default();
        for n in 0..30 {
            let currency = ["EUR", "USD", "GBP"][n % 3];
            let target = if n < 10 { &mut a } else { &mut b };
            target.add(&request(&[("query currency", currency), ("method", "GET")]));
        }
        let mut totals = FeatureTotals::default();
        totals.add(&a);
        totals.add(&b);
        assert_eq!(totals.requests, 30);
        let mut only_a = FeatureTotals::default();
        only_a.add(&a);
        let less = |all: (u64, u64), part: (u64, u64)| (all.0 - part.0, all.1 - part.1);
        let eur = |totals: &FeatureTotals| totals.upper_sums("query currency", Some("EUR"));
        assert_eq!(
            less(eur(&totals), eur(&only_a)),
            (20, 6),
            "b's: 20 with a currency, 6 in euros"
        );
        assert_eq!(totals.upper("query currency", Some("EUR")), 10);
        assert_eq!(totals.upper("query currency", Some("CHF")), 0);
        assert_eq!(totals.upper("header x-client", None), 0);
        let eur = totals.features().find(|f| f.value == Some("EUR")).unwrap();
        assert_eq!((eur.lower, eur.upper), (10, 10));
    }

    #[test]
    fn totals_bound_what_full_sketches_saw() {
        let mut sketches = Vec::new();
        let mut truth: HashMap<String, u64> = HashMap::new();
        for part in 0..4u64 {
            let mut sketch = FeatureSketch::default();
            for n in 0..500u64 {
                let value = format!("v{}", (n * 7 + part) % 40);
                *truth.entry(value.clone()).or_default() += 1;
                sketch.add(&request(&[("query id", &value)]));
            }
            sketches.push(sketch);
        }
        let mut totals = FeatureTotals::default();
        for sketch in &sketches {
            totals.add(sketch);
        }
        for (value, count) in &truth {
            assert!(totals.upper("query id", Some(value)) >= *count, "{value}");
        }
        for feature in totals.features().filter(|f| f.value.is_some()) {
            let count = truth[feature.value.unwrap()];
            assert!(
                feature.lower <= count && count <= feature.upper,
                "{feature:?} vs {count}"
            );
        }
    }
}
