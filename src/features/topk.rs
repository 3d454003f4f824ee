//! A heavy-hitter counter of fixed size (Space-Saving, mergeable): the most frequent items with counts that are
//! never too low and errors that say how much too high they may be. Counts read back from storage are not
//! trusted to be sane: every sum saturates.

use serde::{Deserialize, Serialize};

/// What an item's counter carries besides its count: nothing, or a sketch of its own (a feature's values).
pub trait Payload: Clone + Default + PartialEq {
    /// Adds another summary's payload of the same item.
    fn merge(&mut self, other: &Self);
    /// The memory it holds besides its own size, roughly.
    fn heap_bytes(&self) -> usize;
}

impl Payload for () {
    fn merge(&mut self, _: &Self) {}
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// One tracked item. Its true count lies between `count - error` and `count`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "P: Serialize + Default + PartialEq",
    deserialize = "P: Deserialize<'de> + Default"
))]
pub struct Counter<P> {
    #[serde(rename = "i")]
    pub item: String,
    #[serde(rename = "n")]
    pub count: u64,
    #[serde(rename = "e", default, skip_serializing_if = "is_zero")]
    pub error: u64,
    #[serde(rename = "p", default, skip_serializing_if = "is_default")]
    pub payload: P,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_default<P: Default + PartialEq>(payload: &P) -> bool {
    *payload == P::default()
}

impl<P: Payload> Counter<P> {
    /// The fewest times the item can have been seen.
    pub fn lower(&self) -> u64 {
        self.count.saturating_sub(self.error)
    }
}

/// At most `capacity` counters (the owner says how many). An item seen more than `n / capacity` times in `n`
/// additions is always among them; an item not among them was seen at most [`TopK::floor`] times.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    transparent,
    bound(
        serialize = "P: Serialize + Default + PartialEq",
        deserialize = "P: Deserialize<'de> + Default"
    )
)]
pub struct TopK<P> {
    counters: Vec<Counter<P>>,
}

/// What one counter costs besides its item's text and payload.
const COUNTER_BYTES: usize = 48;

impl<P: Payload> TopK<P> {
    pub fn counters(&self) -> &[Counter<P>] {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut [Counter<P>] {
        &mut self.counters
    }

    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    pub fn get(&self, item: &str) -> Option<&Counter<P>> {
        self.counters.iter().find(|counter| counter.item == item)
    }

    /// The most an item not tracked can have been seen: the smallest count once every counter is taken.
    pub fn floor(&self, capacity: usize) -> u64 {
        if self.counters.len() < capacity {
            0
        } else {
            self.counters.iter().map(|c| c.count).min().unwrap_or(0)
        }
    }

    /// The most `item` can have been seen.
    pub fn upper(&self, item: &str, capacity: usize) -> u64 {
        self.get(item)
            .map_or_else(|| self.floor(capacity), |counter| counter.count)
    }

    /// Counts `item` once; returns its counter. A new item past `capacity` takes the place of the least
    /// counted one, inheriting its count as error (and starting with an empty payload).
    pub fn add(&mut self, item: &str, capacity: usize) -> &mut Counter<P> {
        if let Some(at) = self.counters.iter().position(|c| c.item == item) {
            self.counters[at].count = self.counters[at].count.saturating_add(1);
            return &mut self.counters[at];
        }
        if self.counters.len() < capacity {
            self.counters.push(Counter {
                item: item.to_string(),
                count: 1,
                error: 0,
                payload: P::default(),
            });
            return self.counters.last_mut().expect("just pushed");
        }
        // The first of the least counted, so that the same additions always evict the same counter.
        let at = self
            .counters
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.count)
            .map(|(at, _)| at)
            .expect("capacity is more than zero here");
        let least = &mut self.counters[at];
        least.item.clear();
        least.item.push_str(item);
        least.error = least.count;
        least.count = least.count.saturating_add(1);
        least.payload = P::default();
        least
    }

    /// Adds another summary (another time, another replica) made with the same `capacity`: counts of items in
    /// both add up; an item missing from one side may have been seen up to that side's floor there, which is
    /// added to its count and its error. The `capacity` largest are kept (ties by item, so any order of merges
    /// of the same summaries keeps the same items).
    pub fn merge(&mut self, other: &TopK<P>, capacity: usize) {
        let mine_floor = self.floor(capacity);
        let other_floor = other.floor(capacity);
        for counter in &mut self.counters {
            match other.get(&counter.item) {
                Some(theirs) => {
                    counter.count = counter.count.saturating_add(theirs.count);
                    counter.error = counter.error.saturating_add(theirs.error);
                    counter.payload.merge(&theirs.payload);
                }
                None => {
                    counter.count = counter.count.saturating_add(other_floor);
                    counter.error = counter.error.saturating_add(other_floor);
                }
            }
        }
        for theirs in &other.counters {
            if self.counters.iter().any(|c| c.item == theirs.item) {
                continue;
            }
            self.counters.push(Counter {
                item: theirs.item.clone(),
                count: theirs.count.saturating_add(mine_floor),
                error: theirs.error.saturating_add(mine_floor),
                payload: theirs.payload.clone(),
            });
        }
        self.keep(capacity);
    }

    /// Keeps the `capacity` largest counters, in a fixed order (largest first, ties by item).
    pub fn keep(&mut self, capacity: usize) {
        self.counters
            .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.item.cmp(&b.item)));
        self.counters.truncate(capacity);
    }

    /// The memory it holds, roughly.
    pub fn heap_bytes(&self) -> usize {
        self.counters
            .iter()
            .map(|c| COUNTER_BYTES + c.item.len() + c.payload.heap_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(top: &TopK<()>) -> Vec<(String, u64, u64)> {
        let mut all: Vec<_> = top
            .counters()
            .iter()
            .map(|c| (c.item.clone(), c.count, c.error))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn counts_are_exact_while_the_items_fit() {
        let mut top = TopK::<()>::default();
        for item in ["a", "b", "a", "c", "a"] {
            top.add(item, 4);
        }
        assert_eq!(
            counts(&top),
            vec![("a".into(), 3, 0), ("b".into(), 1, 0), ("c".into(), 1, 0)]
        );
        assert_eq!(top.floor(4), 0);
        assert_eq!(top.upper("z", 4), 0);
    }

    #[test]
    fn a_frequent_item_survives_a_stream_of_distinct_ones() {
        let mut top = TopK::<()>::default();
        for n in 0..10_000 {
            top.add(&format!("noise {n}"), 8);
            if n % 2 == 0 {
                top.add("frequent", 8);
            }
        }
        let frequent = top.get("frequent").expect("kept");
        assert!(frequent.lower() <= 5_000 && frequent.count >= 5_000);
        assert_eq!(top.len(), 8);
        // Nothing unseen can claim more than the floor, and the floor bounds every noise item's true count.
        assert!(top.floor(8) >= 1);
        assert!(top.heap_bytes() < 8 * (COUNTER_BYTES + 16));
    }

    #[test]
    fn merging_keeps_true_counts_within_bounds_in_any_order() {
        let stream_a: Vec<String> = (0..300).map(|n| format!("v{}", n % 13)).collect();
        let stream_b: Vec<String> = (0..200).map(|n| format!("v{}", n % 3)).collect();
        let sketch = |stream: &[String]| {
            let mut top = TopK::<()>::default();
            for item in stream {
                top.add(item, 6);
            }
            top
        };
        let (a, b) = (sketch(&stream_a), sketch(&stream_b));
        let mut ab = a.clone();
        ab.merge(&b, 6);
        let mut ba = b.clone();
        ba.merge(&a, 6);
        assert_eq!(counts(&ab), counts(&ba), "the same summary either way");
        for counter in ab.counters() {
            let truth = stream_a
                .iter()
                .chain(&stream_b)
                .filter(|s| **s == counter.item)
                .count() as u64;
            assert!(
                counter.lower() <= truth && truth <= counter.count,
                "{counter:?} vs {truth}"
            );
        }
        for n in 0..13 {
            let item = format!("v{n}");
            let truth = stream_a
                .iter()
                .chain(&stream_b)
                .filter(|s| **s == item)
                .count() as u64;
            assert!(truth <= ab.upper(&item, 6), "{item}: {truth}");
        }
    }
}
