//! Object keys that are data, not field names (a map keyed by user name or e-mail): an object position whose
//! differences show more than a threshold of distinct keys is learned, per endpoint, and its keys become
//! `{key}` (`body/users/{key}/name`), so that such a map makes a few places instead of one per key.
//!
//! Keys are learned from the differences an exchange gave (both sides': a key only the candidate has is an
//! `extra` there): a map that never differs makes no place, so it need not be learned. Keys are counted as
//! hashes keyed per process and never kept (they can be e-mail addresses). Learned positions are stored per
//! run (the writer takes [`KeyPositions::take_fresh`] into its batches) and adopted from the store by other
//! replicas and after a restart; readers fold the places stored before a position was learned with
//! [`LearnedKeys::fold`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::analysis::diff::Difference;
use crate::analysis::text::{MORE_LINES, UNSHARED_LINES};
use crate::identifier::is_identifier;

/// What a key at a learned position becomes in generalised paths.
pub const KEY: &str = "{key}";

/// Positions followed per endpoint at once, learned or being counted; past it, new positions of that endpoint
/// keep their keys (the writer's cap on places per endpoint bounds what they make).
const MAX_POSITIONS_PER_ENDPOINT: usize = 64;
/// Positions being counted at once over every endpoint: each holds up to threshold + 1 hashes of 8 bytes.
const MAX_COUNTING: usize = 4096;
/// Endpoints followed at once (the endpoint namer caps names per run well below this by default).
const MAX_ENDPOINTS: usize = 4096;
/// Longest position followed, in bytes: a path longer than this is left as it is.
const MAX_POSITION_LEN: usize = 512;

/// How object keys are learned.
#[derive(Clone, Debug)]
pub struct KeySettings {
    /// More distinct keys than this at one object position of an endpoint make it `{key}`.
    pub threshold: usize,
}

impl KeySettings {
    /// 64: above the fields of nearly every record at one level (a record whose fields all differ still keeps
    /// them by name), while a map keyed by user passes it within a few dozen differing exchanges, leaving at
    /// most that many places per position from before, which readers fold.
    pub const DEFAULT_THRESHOLD: usize = 64;
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            threshold: Self::DEFAULT_THRESHOLD,
        }
    }
}

/// Registers the counter of keys seen at positions that could not be followed (past the caps).
pub fn register_unfollowed_counter(
    registry: &mut prometheus_client::registry::Registry,
) -> Counter {
    let unfollowed = Counter::default();
    registry.register(
        "key_positions_unfollowed",
        "Object keys seen in differences at positions past the caps on positions followed (per endpoint, \
         overall, or too long): they stay as they are, bounded by --max-places-per-endpoint",
        unfollowed.clone(),
    );
    unfollowed
}

/// An object position of one endpoint learned as `{key}`: `position` is the generalised path of the object
/// (`body/users`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct KeyPosition {
    pub endpoint: String,
    pub position: String,
}

/// The positions learned for one endpoint: what the walk generalises by, and what readers fold by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LearnedKeys {
    positions: HashSet<String>,
}

impl LearnedKeys {
    pub fn new(positions: impl IntoIterator<Item = String>) -> Self {
        Self {
            positions: positions.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the object at this generalised path is a map whose keys are `{key}`.
    pub fn contains(&self, position: &str) -> bool {
        self.positions.contains(position)
    }

    pub fn insert(&mut self, position: String) -> bool {
        self.positions.insert(position)
    }

    /// The place a generalised path made before these positions were learned has now: each segment under a
    /// learned position becomes `{key}` (an `{id}` too: one map, one place), array elements (`*`) excepted.
    /// Only JSON body paths are folded; a text diff's line paths never are.
    pub fn fold<'a>(&self, path: &'a str) -> Cow<'a, str> {
        if self.is_empty()
            || !path.starts_with("body/")
            || path.starts_with("body/line/")
            || path == MORE_LINES
            || path == UNSHARED_LINES
        {
            return Cow::Borrowed(path);
        }
        let mut folded = String::with_capacity(path.len());
        let mut changed = false;
        for (index, segment) in path.split('/').enumerate() {
            if index > 0 {
                let learned = segment != "*" && self.contains(&folded);
                folded.push('/');
                if learned {
                    folded.push_str(KEY);
                    changed |= segment != KEY;
                    continue;
                }
            }
            folded.push_str(segment);
        }
        if changed {
            Cow::Owned(folded)
        } else {
            Cow::Borrowed(path)
        }
    }
}

/// Per endpoint: its learned positions (shared with the walks that read them) and the keys of the positions
/// still being counted.
#[derive(Debug, Default)]
struct EndpointKeys {
    learned: Arc<LearnedKeys>,
    /// Distinct key hashes per position, sorted, at most threshold + 1.
    counting: HashMap<String, Vec<u64>>,
}

#[derive(Debug, Default)]
struct State {
    endpoints: HashMap<String, EndpointKeys>,
    /// Positions being counted, over every endpoint.
    counting: usize,
    /// Learned here and not yet stored.
    fresh: Vec<KeyPosition>,
}

/// The object positions learned in this run, shared by the analysis workers (which read and teach them) and
/// the writer (which stores what is learned here and adopts what other replicas learned). Reads take one short
/// lock per exchange and clone an `Arc`; counting takes it once per exchange with keys in its differences.
#[derive(Debug)]
pub struct KeyPositions {
    threshold: usize,
    /// Keys the key hashes (SipHash with a random key of this process): equal keys hash equal here only.
    hasher: RandomState,
    state: Mutex<State>,
    unfollowed: Counter,
}

impl Default for KeyPositions {
    fn default() -> Self {
        Self::new(&KeySettings::default(), Counter::default())
    }
}

impl KeyPositions {
    pub fn new(settings: &KeySettings, unfollowed: Counter) -> Self {
        Self {
            threshold: settings.threshold.max(1),
            hasher: RandomState::new(),
            state: Mutex::new(State::default()),
            unfollowed,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The positions learned for `endpoint`, if any.
    pub fn learned(&self, endpoint: &str) -> Option<Arc<LearnedKeys>> {
        let state = self.state();
        let keys = state.endpoints.get(endpoint)?;
        (!keys.learned.is_empty()).then(|| keys.learned.clone())
    }

    /// Counts the literal keys on the paths of one exchange's differences (both sides'), learning the positions
    /// that pass the threshold, then folds every difference's generalised path by what the endpoint has learned
    /// (a position learned by this very exchange, or by another worker meanwhile, included).
    pub fn settle(&self, endpoint: &str, sides: [&mut Vec<Difference>; 2]) {
        let has_keys = sides
            .iter()
            .any(|differences| differences.iter().any(|d| d.path.starts_with("body/")));
        if !has_keys {
            return;
        }
        let learned = {
            let mut state = self.state();
            let mut position = String::new();
            // Differences at the same generalised path have the same literal keys on it: counted once.
            let mut observed: HashSet<&str> = HashSet::new();
            for differences in &sides {
                for difference in differences.iter() {
                    if observed.insert(difference.generalised.as_str()) {
                        self.observe(&mut state, endpoint, difference, &mut position);
                    }
                }
            }
            match state.endpoints.get(endpoint) {
                Some(keys) if !keys.learned.is_empty() => keys.learned.clone(),
                _ => return,
            }
        };
        for differences in sides {
            for difference in differences.iter_mut() {
                if let Cow::Owned(folded) = learned.fold(&difference.generalised) {
                    difference.generalised = folded;
                }
            }
        }
    }

    /// Counts the keys along one difference's path, shallowest first, so that a position under a key just
    /// learned is counted as the `{key}` one.
    /// `position` is a buffer, so that counting allocates only for a position or an endpoint seen first.
    fn observe(
        &self,
        state: &mut State,
        endpoint: &str,
        difference: &Difference,
        position: &mut String,
    ) {
        let (path, generalised) = (&difference.path, &difference.generalised);
        if !generalised.starts_with("body/")
            || generalised.starts_with("body/line/")
            || generalised.starts_with(MORE_LINES)
        {
            return;
        }
        position.clear();
        for (index, (concrete, general)) in path.split('/').zip(generalised.split('/')).enumerate()
        {
            if index == 0 {
                position.push_str(general);
                continue;
            }
            // A literal key is the same in both paths; an index is `*`, an identifier `{id}`, a learned key
            // `{key}` in the generalised one.
            let literal = concrete == general && !is_identifier(general);
            let learned = match literal {
                true if position.len() <= MAX_POSITION_LEN => {
                    self.count(state, endpoint, position, general)
                }
                true => {
                    self.unfollowed.inc();
                    false
                }
                false => false,
            };
            position.push('/');
            position.push_str(if learned { KEY } else { general });
        }
    }

    /// Counts one key at a position; whether the position is (now) learned.
    fn count(&self, state: &mut State, endpoint: &str, position: &str, key: &str) -> bool {
        if !state.endpoints.contains_key(endpoint) {
            if state.endpoints.len() >= MAX_ENDPOINTS {
                self.unfollowed.inc();
                return false;
            }
            state
                .endpoints
                .insert(endpoint.to_string(), EndpointKeys::default());
        }
        let full = state.counting >= MAX_COUNTING;
        let Some(keys) = state.endpoints.get_mut(endpoint) else {
            return false;
        };
        if keys.learned.contains(position) {
            return true;
        }
        let seen = match keys.counting.get_mut(position) {
            Some(seen) => seen,
            None => {
                if full || keys.counting.len() + keys.learned.len() >= MAX_POSITIONS_PER_ENDPOINT {
                    self.unfollowed.inc();
                    return false;
                }
                state.counting += 1;
                keys.counting.entry(position.to_string()).or_default()
            }
        };
        let hash = self.hasher.hash_one(key);
        if let Err(at) = seen.binary_search(&hash) {
            seen.insert(at, hash);
        }
        if seen.len() <= self.threshold {
            return false;
        }
        let learned = KeyPosition {
            endpoint: endpoint.to_string(),
            position: position.to_string(),
        };
        Self::learn(state, &learned);
        state.fresh.push(learned);
        true
    }

    /// Makes a position learned: its counting ends, and so does the counting of positions under its keys,
    /// which now read `{key}`.
    fn learn(state: &mut State, learned: &KeyPosition) {
        let keys = state.endpoints.entry(learned.endpoint.clone()).or_default();
        if keys.learned.contains(&learned.position) {
            return;
        }
        let under = format!("{}/", learned.position);
        let before = keys.counting.len();
        keys.counting
            .retain(|position, _| position != &learned.position && !position.starts_with(&under));
        state.counting -= before - keys.counting.len();
        let mut positions = LearnedKeys::clone(&keys.learned);
        positions.insert(learned.position.clone());
        keys.learned = Arc::new(positions);
    }

    /// Positions learned here and not yet stored.
    pub fn take_fresh(&self) -> Vec<KeyPosition> {
        std::mem::take(&mut self.state().fresh)
    }

    /// Takes the positions the run already has (stored by an earlier start or another replica).
    pub fn adopt(&self, positions: Vec<KeyPosition>) {
        let mut state = self.state();
        for position in positions {
            if position.position.len() > MAX_POSITION_LEN {
                continue;
            }
            let known = state.endpoints.contains_key(&position.endpoint);
            if !known && state.endpoints.len() >= MAX_ENDPOINTS {
                continue;
            }
            Self::learn(&mut state, &position);
        }
    }

    /// Every position learned in this run, sorted.
    pub fn positions(&self) -> Vec<KeyPosition> {
        let state = self.state();
        let mut all: Vec<KeyPosition> = state
            .endpoints
            .iter()
            .flat_map(|(endpoint, keys)| {
                keys.learned.positions.iter().map(|position| KeyPosition {
                    endpoint: endpoint.clone(),
                    position: position.clone(),
                })
            })
            .collect();
        all.sort();
        all
    }

    /// Forgets the run: what was learned and counted starts again.
    pub fn reset(&self) {
        *self.state() = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diff::DiffKind;

    fn changed(path: &str) -> Difference {
        Difference {
            path: path.to_string(),
            generalised: path.to_string(),
            kind: DiffKind::ValueChanged,
            compat: crate::analysis::compat::Compat::Changed,
            primary: Some("1".into()),
            other: Some("2".into()),
        }
    }

    #[test]
    fn a_position_past_the_threshold_is_learned_and_folds_its_keys() {
        let keys = KeyPositions::new(&KeySettings { threshold: 3 }, Counter::default());
        for user in ["alice", "bob", "carol"] {
            let mut candidate = vec![changed(&format!("body/users/{user}/name"))];
            keys.settle("GET /team", [&mut candidate, &mut Vec::new()]);
            assert_eq!(candidate[0].generalised, format!("body/users/{user}/name"));
        }
        assert!(keys.learned("GET /team").is_none());
        let mut candidate = vec![changed("body/users/dave/name")];
        let mut noise = vec![changed("body/users/erin/name")];
        keys.settle("GET /team", [&mut candidate, &mut noise]);
        assert_eq!(candidate[0].generalised, "body/users/{key}/name");
        assert_eq!(
            candidate[0].path, "body/users/dave/name",
            "the concrete path stays"
        );
        assert_eq!(noise[0].generalised, "body/users/{key}/name");
        assert_eq!(
            keys.take_fresh(),
            vec![KeyPosition {
                endpoint: "GET /team".into(),
                position: "body/users".into()
            }]
        );
        // Learned per endpoint: another endpoint's `users` are still fields.
        let mut other = vec![changed("body/users/frank/name")];
        keys.settle("GET /other", [&mut other, &mut Vec::new()]);
        assert_eq!(other[0].generalised, "body/users/frank/name");
    }

    #[test]
    fn the_same_keys_again_are_not_a_map() {
        let keys = KeyPositions::new(&KeySettings { threshold: 3 }, Counter::default());
        for _ in 0..100 {
            let mut candidate = vec![changed("body/name"), changed("body/age")];
            keys.settle("GET /me", [&mut candidate, &mut Vec::new()]);
        }
        assert!(keys.learned("GET /me").is_none());
        assert!(keys.take_fresh().is_empty());
    }

    #[test]
    fn folding_reads_old_places_under_learned_positions() {
        let learned = LearnedKeys::new(["body/users".to_string(), "body/users/{key}/roles".into()]);
        assert_eq!(
            learned.fold("body/users/alice/name"),
            "body/users/{key}/name"
        );
        assert_eq!(
            learned.fold("body/users/{id}/name"),
            "body/users/{key}/name"
        );
        assert_eq!(
            learned.fold("body/users/bob/roles/admin"),
            "body/users/{key}/roles/{key}"
        );
        assert!(matches!(
            learned.fold("body/users/{key}/name"),
            Cow::Borrowed(_)
        ));
        assert_eq!(learned.fold("body/users"), "body/users");
        assert_eq!(learned.fold("header/users"), "header/users");
        let root = LearnedKeys::new(["body".to_string()]);
        assert_eq!(root.fold("body/alice"), "body/{key}");
        assert_eq!(
            root.fold("body/line/3"),
            "body/line/3",
            "a text line is not a key"
        );
        assert_eq!(
            root.fold("body/*/x"),
            "body/*/x",
            "an array element is not a key"
        );
    }

    #[test]
    fn positions_are_bounded_per_endpoint_and_counted_past_it() {
        let unfollowed = Counter::default();
        let keys = KeyPositions::new(&KeySettings { threshold: 1000 }, unfollowed.clone());
        for n in 0..(MAX_POSITIONS_PER_ENDPOINT + 10) {
            let mut candidate = vec![changed(&format!("body/o{n}/field"))];
            keys.settle("GET /wide", [&mut candidate, &mut Vec::new()]);
        }
        // `body` is one position; `body/oN` one each, up to the cap.
        assert_eq!(unfollowed.get(), 11);
        let state = keys.state();
        assert_eq!(state.counting, MAX_POSITIONS_PER_ENDPOINT);
    }

    #[test]
    fn the_walk_writes_key_under_a_learned_position_and_keeps_few_examples() {
        use crate::analysis::json::{JsonOptions, diff_keyed};
        use crate::analysis::rules::EndpointRules;
        use crate::analysis::tree::Node;
        let team = |suffix: &str| {
            let users: serde_json::Map<String, serde_json::Value> = (0..10)
                .map(|n| {
                    (
                        format!("user-{n}"),
                        serde_json::json!({"name": format!("n{n}{suffix}")}),
                    )
                })
                .collect();
            serde_json::json!({"users": users, "count": 10})
        };
        let (before, after) = (team(""), team("!"));
        let (left, right) = (Node::from(&before), Node::from(&after));
        let learned = LearnedKeys::new(["body/users".to_string()]);
        let found = diff_keyed(
            &left,
            &right,
            JsonOptions::default(),
            &EndpointRules::default(),
            &learned,
            "body",
        );
        assert_eq!(found.len(), 3, "three examples of the one place: {found:?}");
        assert!(
            found
                .iter()
                .all(|c| c.generalised == "body/users/{key}/name")
        );
        assert!(
            found[0].path.starts_with("body/users/user-"),
            "the concrete path stays"
        );
        let unlearned = diff_keyed(
            &left,
            &right,
            JsonOptions::default(),
            &EndpointRules::default(),
            &LearnedKeys::default(),
            "body",
        );
        assert_eq!(
            unlearned.len(),
            10,
            "one place per user before it is learned"
        );
    }

    #[test]
    fn a_rule_naming_key_matches_any_key_learned_or_not() {
        let glob = crate::analysis::rules::Glob::parse("body/users/{key}/name").unwrap();
        assert!(glob.matches("body/users/{key}/name"));
        assert!(glob.matches("body/users/alice/name"));
        assert!(glob.matches("body/users/{id}/name"));
        assert!(
            !glob.matches("body/users/*/name"),
            "an array element is not a key"
        );
        assert!(!glob.matches("body/users/alice/age"));
    }

    #[test]
    fn adopted_positions_fold_and_reset_forgets_them() {
        let keys = KeyPositions::default();
        keys.adopt(vec![KeyPosition {
            endpoint: "GET /team".into(),
            position: "body/users".into(),
        }]);
        let mut candidate = vec![changed("body/users/zed/name")];
        keys.settle("GET /team", [&mut candidate, &mut Vec::new()]);
        assert_eq!(candidate[0].generalised, "body/users/{key}/name");
        assert!(keys.take_fresh().is_empty(), "adopted, not learned here");
        assert_eq!(keys.positions().len(), 1);
        keys.reset();
        assert!(keys.learned("GET /team").is_none());
    }
}
