//! The cap on places per endpoint in a run: past `--max-places-per-endpoint` distinct places (path and kind)
//! an endpoint's new places are counted together under `{other}`, so that stored rows and every later view of
//! the run stay bounded whatever the bodies hold, and a regression past the cap still shows.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use crate::analysis::Analysis;
use crate::analysis::diff::DiffKind;
use crate::store::metrics::StoreMetrics;

/// The path a place past the cap is counted under, with its kind.
pub const OVERFLOW: &str = "{other}";

/// Places followed by one writer over every endpoint: each costs a hash and its share of a set.
const MAX_TRACKED: usize = 200_000;
/// What one followed place holds, roughly: its hash and its share of the set's table.
const PLACE_BYTES: usize = 16;
/// What one followed endpoint holds besides its name and places.
const ENDPOINT_BYTES: usize = 96;

/// Which cap a place was past.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PlaceOverflow {
    /// Its endpoint had `--max-places-per-endpoint` places.
    EndpointCap,
    /// The writer followed as many places as it may over every endpoint.
    WriterCap,
}

impl PlaceOverflow {
    pub const ALL: [PlaceOverflow; 2] = [PlaceOverflow::EndpointCap, PlaceOverflow::WriterCap];

    pub fn as_str(self) -> &'static str {
        match self {
            PlaceOverflow::EndpointCap => "endpoint_cap",
            PlaceOverflow::WriterCap => "writer_cap",
        }
    }
}

/// The places of each endpoint this writer counted in the run, as hashes, up to the cap.
#[derive(Debug)]
pub struct PlaceCap {
    per_endpoint: usize,
    hasher: RandomState,
    endpoints: HashMap<String, HashSet<u64>>,
    tracked: usize,
}

impl PlaceCap {
    pub fn new(per_endpoint: usize) -> Self {
        Self {
            per_endpoint: per_endpoint.max(1),
            hasher: RandomState::new(),
            endpoints: HashMap::new(),
            tracked: 0,
        }
    }

    /// Moves the exchange's differences at places past the cap to `{other}` (the same place the same way on
    /// both sides, so that noise still cancels); returns how many were moved, by cap.
    pub fn admit(&mut self, analysis: &mut Analysis) -> [(PlaceOverflow, u64); 2] {
        let mut moved = PlaceOverflow::ALL.map(|cap| (cap, 0));
        let endpoint = &analysis.exchange.endpoint;
        let Ok(compared) = &mut analysis.result else {
            return moved;
        };
        for difference in compared
            .candidate
            .iter_mut()
            .chain(compared.noise.iter_mut())
        {
            if difference.generalised == OVERFLOW {
                continue;
            }
            if let Some(cap) = self.place(endpoint, &difference.generalised, difference.kind) {
                difference.generalised = OVERFLOW.to_string();
                moved[cap as usize].1 += 1;
            }
        }
        moved
    }

    /// [`PlaceCap::admit`], with what was moved counted in the writer's metrics.
    pub fn admit_counted(&mut self, analysis: &mut Analysis, metrics: &StoreMetrics) {
        for (cap, moved) in self.admit(analysis) {
            if moved > 0 {
                metrics.places_overflowed(cap, moved);
            }
        }
    }

    /// Follows a place; the cap it is past, if it is.
    fn place(&mut self, endpoint: &str, path: &str, kind: DiffKind) -> Option<PlaceOverflow> {
        let hash = self.hasher.hash_one((path, kind.as_str()));
        if let Some(places) = self.endpoints.get(endpoint) {
            if places.contains(&hash) {
                return None;
            }
            if places.len() >= self.per_endpoint {
                return Some(PlaceOverflow::EndpointCap);
            }
        }
        if self.tracked >= MAX_TRACKED {
            return Some(PlaceOverflow::WriterCap);
        }
        self.tracked += 1;
        self.endpoints
            .entry(endpoint.to_string())
            .or_default()
            .insert(hash);
        None
    }

    /// Takes the places the run already has (stored by an earlier start or another replica), so that a
    /// restart does not make room for another cap's worth.
    pub fn adopt(&mut self, places: Vec<(String, String, DiffKind)>) {
        for (endpoint, path, kind) in places {
            let _ = self.place(&endpoint, &path, kind);
        }
    }

    /// The memory this holds, roughly.
    pub fn heap_bytes(&self) -> usize {
        self.tracked * PLACE_BYTES
            + self
                .endpoints
                .keys()
                .map(|name| name.len() + ENDPOINT_BYTES)
                .sum::<usize>()
    }

    /// Forgets the run.
    pub fn reset(&mut self) {
        self.endpoints.clear();
        self.tracked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_past_the_cap_are_other_and_known_ones_stay() {
        let mut cap = PlaceCap::new(2);
        assert_eq!(cap.place("GET /a", "body/x", DiffKind::ValueChanged), None);
        assert_eq!(cap.place("GET /a", "body/y", DiffKind::ValueChanged), None);
        assert_eq!(
            cap.place("GET /a", "body/z", DiffKind::ValueChanged),
            Some(PlaceOverflow::EndpointCap)
        );
        assert_eq!(
            cap.place("GET /a", "body/x", DiffKind::Missing),
            Some(PlaceOverflow::EndpointCap),
            "another kind is another place"
        );
        assert_eq!(cap.place("GET /a", "body/x", DiffKind::ValueChanged), None);
        assert_eq!(cap.place("GET /b", "body/z", DiffKind::ValueChanged), None);
        assert!(cap.heap_bytes() > 0);
        cap.reset();
        assert_eq!(cap.place("GET /a", "body/z", DiffKind::ValueChanged), None);
    }
}
