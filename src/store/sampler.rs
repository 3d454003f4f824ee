//! Which exchanges are kept as samples: per (endpoint, place), the first few, then a reservoir of later ones, so
//! that samples are spread over the whole run instead of its first minutes. Bounded in the places it follows.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// A place: endpoint, path and kind (`("", "")` for an exchange without differences).
pub type SamplePlace = (String, String);

/// What the sampler wants of one exchange at one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Take {
    /// One of the first samples of the place.
    First,
    /// A reservoir slot; the sample it replaces, if the slot was taken.
    Reservoir { replaces: Option<String> },
}

#[derive(Debug, Default)]
struct PlaceSamples {
    /// Samples taken among the first.
    first: usize,
    /// Exchanges seen at the place after the first samples were taken.
    later: u64,
    /// Ids in the reservoir.
    kept: Vec<String>,
}

/// Per-place sample quotas of one writer, for one run.
#[derive(Debug)]
pub struct Sampler {
    first: usize,
    reservoir: usize,
    max_places: usize,
    /// Quotas by a hash of (endpoint, path, kind): no key to allocate per exchange, and two places whose hashes
    /// collide (one chance in 2^64 per pair) would only share a quota.
    places: HashMap<u64, PlaceSamples>,
    hasher: RandomState,
    rng: fastrand::Rng,
    bytes: usize,
}

impl Sampler {
    /// Keeps `per_place` samples per place: half the first ones (rounded up), half a reservoir over the rest of
    /// the run. Follows at most `max_places` places; samples for further ones are not taken.
    pub fn new(per_place: usize, max_places: usize) -> Self {
        let first = per_place.div_ceil(2);
        Self {
            first,
            reservoir: per_place - first,
            max_places,
            places: HashMap::new(),
            hasher: RandomState::new(),
            rng: fastrand::Rng::new(),
            bytes: 0,
        }
    }

    /// The places where exchange `id` of `endpoint`, showing `places`, becomes a sample (empty: none).
    pub fn decide(
        &mut self,
        endpoint: &str,
        places: &[SamplePlace],
        id: &str,
    ) -> Vec<(SamplePlace, Take)> {
        let mut taken = Vec::new();
        for (path, kind) in places {
            let key = self.hasher.hash_one((endpoint, path, kind));
            if !self.places.contains_key(&key) {
                if self.places.len() >= self.max_places {
                    continue;
                }
                self.bytes += 96;
            }
            let place = self.places.entry(key).or_default();
            let take = if place.first < self.first {
                place.first += 1;
                Some(Take::First)
            } else if self.reservoir == 0 {
                None
            } else {
                // Algorithm R: the n-th later exchange is in the reservoir with probability reservoir / n.
                place.later += 1;
                if place.kept.len() < self.reservoir {
                    place.kept.push(id.to_string());
                    self.bytes += id.len() + 24;
                    Some(Take::Reservoir { replaces: None })
                } else {
                    let slot = self.rng.u64(..place.later);
                    (slot < self.reservoir as u64).then(|| {
                        let old = std::mem::replace(&mut place.kept[slot as usize], id.to_string());
                        Take::Reservoir {
                            replaces: Some(old),
                        }
                    })
                }
            };
            if let Some(take) = take {
                taken.push(((path.clone(), kind.clone()), take));
            }
        }
        taken
    }

    /// Gives back the quota a sample took at a place, when the sample could not be kept after all (no room
    /// to build it): the next exchange there may be taken instead.
    pub fn release(&mut self, endpoint: &str, place: &SamplePlace, take: &Take, id: &str) {
        let key = self.hasher.hash_one((endpoint, &place.0, &place.1));
        let Some(samples) = self.places.get_mut(&key) else {
            return;
        };
        match take {
            Take::First => samples.first = samples.first.saturating_sub(1),
            Take::Reservoir { .. } => {
                if let Some(at) = samples.kept.iter().position(|kept| kept == id) {
                    samples.kept.remove(at);
                }
            }
        }
    }

    /// Memory the quotas hold, roughly.
    pub fn heap_bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every quota: a new run samples afresh.
    pub fn reset(&mut self) {
        self.places.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(path: &str) -> SamplePlace {
        (path.to_string(), "value_changed".to_string())
    }

    #[test]
    fn the_first_then_a_reservoir_spread_over_the_run() {
        let mut sampler = Sampler::new(4, 100);
        let mut kept: Vec<usize> = Vec::new();
        let mut reservoir: Vec<usize> = Vec::new();
        for n in 0..10_000 {
            for (_, take) in sampler.decide("GET /a", &[place("body/x")], &n.to_string()) {
                match take {
                    Take::First => kept.push(n),
                    Take::Reservoir { replaces } => {
                        if let Some(old) = replaces {
                            reservoir.retain(|id| id.to_string() != old);
                        }
                        reservoir.push(n);
                    }
                }
            }
        }
        assert_eq!(kept, vec![0, 1]);
        assert_eq!(reservoir.len(), 2);
        // Kept samples come from the whole run, not its start: with 10 000 exchanges, both reservoir samples
        // sitting in the first 100 has a chance of about one in ten thousand.
        assert!(reservoir.iter().any(|n| *n > 100), "{reservoir:?}");
    }

    #[test]
    fn places_are_bounded_and_quotas_reset() {
        let mut sampler = Sampler::new(1, 2);
        assert_eq!(
            sampler
                .decide("GET /a", &[place("a"), place("b"), place("c")], "1")
                .len(),
            2
        );
        assert!(sampler.decide("GET /a", &[place("c")], "2").is_empty());
        assert!(sampler.decide("GET /a", &[place("a")], "3").is_empty());
        sampler.reset();
        assert_eq!(sampler.heap_bytes(), 0);
        assert_eq!(sampler.decide("GET /a", &[place("c")], "4").len(), 1);
    }

    #[test]
    fn a_released_quota_is_taken_again() {
        let mut sampler = Sampler::new(1, 10);
        let taken = sampler.decide("GET /a", &[place("a")], "1");
        assert_eq!(taken.len(), 1);
        sampler.release("GET /a", &taken[0].0, &taken[0].1, "1");
        assert_eq!(sampler.decide("GET /a", &[place("a")], "2").len(), 1);
    }
}
