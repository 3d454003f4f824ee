//! From places to causes: a run's failing places grouped into changes. Places of one endpoint that fail on the
//! same requests are one change; the same place shape on several endpoints is one change; a place that fails
//! only where the status (or the body's type) changed too is a consequence, listed under it. Worked out from
//! stored counts alone, in a fixed order, so that every replica and every reader gets the same changes and ids.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::analysis::PathKey;
use crate::analysis::aggregate::{self, EndpointReport, LATENCY_PATH, Tally};
use crate::analysis::compat::{self, Compat};
use crate::analysis::diff::DiffKind;
use crate::encoding::fnv1a;
use crate::report::change_text;

/// Two places of an endpoint are one change when the requests failing at either fail at both at least this
/// often (a weighted Jaccard overlap). Per-request noise cancellation can take one of two places caused
/// together out of a few requests' signatures; two independent places rarely overlap this much unless both
/// fail on nearly every request, where nothing in the counts can tell them apart on that endpoint (the
/// endpoints they fail on still can: see [`group`]).
pub const SAME_REQUESTS: f64 = 0.9;
/// A place is a consequence of a status (or body type) change when at least this share of the requests
/// failing at it also changed status: "only where", with room for a request whose status change was
/// cancelled as noise.
pub const CONSEQUENCE_SHARE: f64 = 0.95;
/// Places of an endpoint compared pairwise at most (the most failing ones): the rest are grouped by shape
/// across endpoints only, so that an object keyed by ids cannot make the grouping quadratic in its keys.
pub const MAX_PAIRED_PLACES: usize = 256;

/// What a change is made of and how often it fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The same in every replica and reader, and across restarts: a hash of the least of its place shapes (path,
    /// kind, class and shape). It stays while the change keeps its places and they keep their shape; a place
    /// that joins or leaves it as the counts grow, or whose changes stop taking one shape, gives it another.
    pub id: String,
    /// One line a person understands.
    pub title: String,
    /// The worst class of its places and consequences.
    pub compat: Compat,
    /// Compared requests failing at any of its places (for a latency change, its endpoints' requests).
    pub requests: u64,
    pub endpoints: Vec<String>,
    /// Each endpoint's share of requests failing at it.
    pub rates: Vec<EndpointShare>,
    pub places: Vec<ChangePlace>,
    /// Places that fail only where one of `places` (a status or body type) changed too.
    pub consequences: Vec<ChangePlace>,
    /// The places as a person reads them: many under one parent with the same kind collapsed to it.
    pub summary: Vec<PlaceGroup>,
    /// The request features that best tell its failing requests from its endpoints' passing ones.
    #[serde(default)]
    pub predictors: Vec<Predictor>,
    /// An exchange showing it.
    pub sample: Option<String>,
}

/// How often a change fails on one of its endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointShare {
    pub endpoint: String,
    /// Compared requests of the endpoint.
    pub requests: u64,
    /// Of them, failing at the change.
    pub failing: u64,
    pub rate: f64,
}

/// One failing place of a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangePlace {
    pub endpoint: String,
    pub path: String,
    pub kind: DiffKind,
    pub compat: Compat,
    /// Share of the endpoint's compared requests failing here.
    pub rate: f64,
    /// How most changes here look (`number → string`, `200 → 404`), when that says more than the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// Places shown together: one place, or many under one parent (`body/user/*`) with the same kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceGroup {
    pub path: String,
    pub kind: DiffKind,
    pub compat: Compat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// Distinct paths it stands for.
    pub places: usize,
    /// Endpoints they fail on.
    pub endpoints: usize,
}

/// A request feature that separates a change's failing requests from its endpoints' passing ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Predictor {
    /// `query currency`, `header x-client`, `path /orders/{id} last digit`, `body field coupon`.
    pub feature: String,
    /// The value; none when the feature's presence is what predicts.
    pub value: Option<String>,
    pub failing_share: f64,
    pub passing_share: f64,
}

impl Change {
    /// The places (and consequences) of the change on `endpoint`.
    pub fn keys_on(&self, endpoint: &str) -> Vec<(&str, DiffKind)> {
        self.places
            .iter()
            .chain(&self.consequences)
            .filter(|place| place.endpoint == endpoint)
            .map(|place| (place.path.as_str(), place.kind))
            .collect()
    }

    /// Whether a change of latency, not of answers.
    pub fn is_latency(&self) -> bool {
        self.places
            .iter()
            .all(|place| place.kind == DiffKind::Slower)
    }

    /// The part of the change on `endpoints`, made again (its class, requests, summary and title), none when
    /// it has no place there. Its id stays; its predictors go, since they were told from all its endpoints.
    pub fn restricted_to(&self, endpoints: &[&str]) -> Option<Change> {
        let on = |endpoint: &String| endpoints.contains(&endpoint.as_str());
        if self.endpoints.iter().all(on) {
            return Some(self.clone());
        }
        let kept = |places: &[ChangePlace]| -> Vec<ChangePlace> {
            places
                .iter()
                .filter(|place| on(&place.endpoint))
                .cloned()
                .collect()
        };
        let places = kept(&self.places);
        if places.is_empty() {
            return None;
        }
        let rates = self
            .rates
            .iter()
            .filter(|share| on(&share.endpoint))
            .cloned()
            .collect();
        let sample = places.iter().find_map(|place| place.sample.clone());
        Some(made(
            self.id.clone(),
            places,
            kept(&self.consequences),
            rates,
            sample,
        ))
    }
}

/// One endpoint as grouping reads it.
pub struct EndpointInput<'a> {
    pub report: &'a EndpointReport,
    pub tally: &'a Tally,
    pub shapes: &'a BTreeMap<PathKey, String>,
}

/// A failing place while grouping.
struct Place {
    endpoint: usize,
    path: String,
    kind: DiffKind,
    compat: Compat,
    rate: f64,
    failing: u64,
    shape: Option<String>,
    sample: Option<String>,
    /// The status or body-type place it is a consequence of.
    cause: Option<usize>,
}

impl Place {
    /// What the same change looks like on every endpoint: path, kind, class and shape.
    fn shape_key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.path,
            self.kind.as_str(),
            self.compat.as_str(),
            self.shape.as_deref().unwrap_or("")
        )
    }
}

/// One endpoint's signatures over its places, and the requests both of two places fail on.
struct Overlaps {
    /// The global index of each of the endpoint's places.
    places: Vec<usize>,
    /// Each signature as the endpoint-local indices of its places, with its request count.
    signatures: Vec<(Vec<usize>, u64)>,
    /// Requests failing at both of two local places (the first [`MAX_PAIRED_PLACES`]), row-major.
    both: Vec<u64>,
    paired: usize,
}

impl Overlaps {
    fn both(&self, a: usize, b: usize) -> Option<u64> {
        (a < self.paired && b < self.paired).then(|| self.both[a * self.paired + b])
    }

    /// Requests failing at any of the local places `marked`.
    fn failing_any(&self, marked: &[bool]) -> u64 {
        self.signatures
            .iter()
            .filter(|(places, _)| places.iter().any(|local| marked[*local]))
            .map(|(_, count)| count)
            .sum()
    }
}

/// Groups every failing place of `endpoints` into changes, most failing requests first (latency last).
pub fn group(endpoints: &[EndpointInput<'_>]) -> Vec<Change> {
    let mut places: Vec<Place> = Vec::new();
    let mut overlaps: Vec<Overlaps> = Vec::with_capacity(endpoints.len());
    for (index, input) in endpoints.iter().enumerate() {
        overlaps.push(collect(index, input, &mut places));
    }
    for overlap in &overlaps {
        find_consequences(overlap, &mut places);
    }
    let local_of: HashMap<usize, usize> = overlaps
        .iter()
        .flat_map(|o| {
            o.places
                .iter()
                .enumerate()
                .map(|(local, global)| (*global, local))
        })
        .collect();

    // Shape groups: the same path, kind, class and shape on any number of endpoints.
    let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, place) in places.iter().enumerate() {
        if place.cause.is_none() {
            shapes.entry(place.shape_key()).or_default().push(index);
        }
    }
    let mut ordered: Vec<(String, Vec<usize>, u64)> = shapes
        .into_iter()
        .map(|(key, members)| {
            let failing = members.iter().map(|m| places[*m].failing).sum();
            (key, members, failing)
        })
        .collect();
    ordered.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));

    // Shape groups on the same endpoints whose places fail on the same requests on every one of them merge;
    // a place on more (or other) endpoints stays apart however much it overlaps where both fail.
    let mut built: Vec<Building> = Vec::new();
    let mut by_endpoints: HashMap<Vec<usize>, Vec<usize>> = HashMap::new();
    for (key, members, _) in ordered {
        let endpoints_of: Vec<usize> = members.iter().map(|m| places[*m].endpoint).collect();
        let candidates = by_endpoints.entry(endpoints_of.clone()).or_default();
        let joined = candidates.iter().copied().find(|candidate| {
            let lead = &built[*candidate].leads;
            members.iter().zip(lead).all(|(member, lead)| {
                let overlap = &overlaps[places[*member].endpoint];
                let (a, b) = (local_of[member], local_of[lead]);
                same_requests(overlap, a, b)
            })
        });
        match joined {
            Some(at) => {
                let change = &mut built[at];
                change.members.extend(members);
                if key < change.first_key {
                    change.first_key = key;
                }
            }
            None => {
                candidates.push(built.len());
                built.push(Building {
                    first_key: key,
                    leads: members.clone(),
                    members,
                });
            }
        }
    }

    // What trails a cause goes with the change the cause is in.
    let owner: HashMap<usize, usize> = built
        .iter()
        .enumerate()
        .flat_map(|(at, building)| building.members.iter().map(move |member| (*member, at)))
        .collect();
    let mut trailing: Vec<Vec<usize>> = vec![Vec::new(); built.len()];
    for (index, place) in places.iter().enumerate() {
        if let Some(at) = place.cause.and_then(|cause| owner.get(&cause)) {
            trailing[*at].push(index);
        }
    }
    let mut changes: Vec<Change> = built
        .into_iter()
        .zip(trailing)
        .map(|(building, consequences)| {
            finish(
                building,
                consequences,
                &places,
                &overlaps,
                &local_of,
                endpoints,
            )
        })
        .collect();
    changes.extend(latency_change(endpoints));
    // Changes of answers by failing requests; a latency change, which has none of its own, after them.
    changes.sort_by(|a, b| {
        a.is_latency()
            .cmp(&b.is_latency())
            .then_with(|| b.requests.cmp(&a.requests))
            .then_with(|| b.compat.cmp(&a.compat))
            .then_with(|| a.id.cmp(&b.id))
    });
    changes
}

/// A change being put together: its shape groups' places, and the first group's (one per endpoint, in
/// endpoint order) that later groups are compared with.
struct Building {
    /// The least of its groups' shape keys: its id, which stays while its groups do.
    first_key: String,
    leads: Vec<usize>,
    members: Vec<usize>,
}

/// Whether two places of one endpoint fail on the same requests.
fn same_requests(overlap: &Overlaps, a: usize, b: usize) -> bool {
    let (Some(both), Some(first), Some(second)) =
        (overlap.both(a, b), overlap.both(a, a), overlap.both(b, b))
    else {
        return false;
    };
    let either = first + second - both;
    either > 0 && both as f64 >= SAME_REQUESTS * either as f64
}

/// The endpoint's failing places (its regressions) added to `places`, and its signatures over them.
fn collect(index: usize, input: &EndpointInput<'_>, places: &mut Vec<Place>) -> Overlaps {
    let report = input.report;
    let mut local: Vec<(&str, DiffKind)> = Vec::new();
    let mut at: HashMap<(&str, DiffKind), usize> = HashMap::new();
    let mut signatures: Vec<(Vec<usize>, u64)> = Vec::new();
    // Local order: most failing first, so that the paired ones are the most failing.
    let mut regressions: Vec<_> = report.regressions.iter().collect();
    let failing_of = |path: &str, kind: DiffKind| -> u64 {
        input
            .tally
            .signatures
            .iter()
            .filter(|(signature, _)| signature.iter().any(|(p, k)| p == path && *k == kind))
            .map(|(_, count)| count)
            .sum()
    };
    let mut failing: HashMap<(&str, DiffKind), u64> = HashMap::new();
    for regression in &regressions {
        failing.insert(
            (regression.path.as_str(), regression.kind),
            failing_of(&regression.path, regression.kind),
        );
    }
    regressions.sort_by(|a, b| {
        let key = |r: &&aggregate::RegressionReport| failing[&(r.path.as_str(), r.kind)];
        key(b)
            .cmp(&key(a))
            .then_with(|| (a.path.as_str(), a.kind).cmp(&(b.path.as_str(), b.kind)))
    });
    let mut globals = Vec::with_capacity(regressions.len());
    for regression in &regressions {
        let key = (regression.path.as_str(), regression.kind);
        at.insert(key, local.len());
        local.push(key);
        globals.push(places.len());
        places.push(Place {
            endpoint: index,
            path: regression.path.clone(),
            kind: regression.kind,
            compat: regression.compat,
            rate: regression.rate,
            failing: failing[&key],
            shape: input
                .shapes
                .get(&(regression.path.clone(), regression.kind))
                .cloned(),
            sample: regression.sample.clone(),
            cause: None,
        });
    }
    for (signature, count) in &input.tally.signatures {
        let mut members: Vec<usize> = signature
            .iter()
            .filter_map(|(path, kind)| at.get(&(path.as_str(), *kind)).copied())
            .collect();
        if members.is_empty() {
            continue;
        }
        members.sort_unstable();
        signatures.push((members, *count));
    }
    let paired = local.len().min(MAX_PAIRED_PLACES);
    let mut both = vec![0u64; paired * paired];
    for (members, count) in &signatures {
        let inside: Vec<usize> = members.iter().copied().filter(|m| *m < paired).collect();
        for (i, a) in inside.iter().enumerate() {
            for b in &inside[i..] {
                both[a * paired + b] += count;
                if a != b {
                    both[b * paired + a] += count;
                }
            }
        }
    }
    Overlaps {
        places: globals,
        signatures,
        both,
        paired,
    }
}

/// Marks the places of one endpoint that fail only where its outcome (its status, an error list or a SOAP
/// Fault appearing), or then its body's type, changed too.
fn find_consequences(overlap: &Overlaps, places: &mut [Place]) {
    let local_place = |local: usize| &overlap.places[local];
    let is_status = |place: &Place| compat::is_outcome(&place.path, place.kind);
    let is_body_type = |place: &Place| {
        (place.path == "body" && place.kind == DiffKind::TypeChanged)
            || (place.path == "header/content-type" && place.kind == DiffKind::ValueChanged)
    };
    let count = overlap.places.len();
    let status: Vec<usize> = (0..count)
        .filter(|local| is_status(&places[*local_place(*local)]))
        .collect();
    assign(overlap, places, &status, |place| !is_status(place));
    let body: Vec<usize> = (0..count)
        .filter(|local| {
            let place = &places[*local_place(*local)];
            is_body_type(place) && place.cause.is_none()
        })
        .collect();
    assign(overlap, places, &body, |place| {
        !is_status(place) && !is_body_type(place)
    });
}

/// Each place `eligible` picks, not yet a consequence, that fails only where one of `causes` (local indices,
/// most failing first) does becomes that cause's consequence.
fn assign(
    overlap: &Overlaps,
    places: &mut [Place],
    causes: &[usize],
    eligible: impl Fn(&Place) -> bool,
) {
    if causes.is_empty() {
        return;
    }
    for local in 0..overlap.places.len() {
        let global = overlap.places[local];
        let place = &places[global];
        if place.cause.is_some() || !eligible(place) || place.failing == 0 {
            continue;
        }
        let found = causes.iter().copied().find(|cause| {
            *cause != local
                && overlap.both(local, *cause).is_some_and(|both| {
                    both as f64 >= CONSEQUENCE_SHARE * places[global].failing as f64
                })
        });
        if let Some(cause) = found {
            places[global].cause = Some(overlap.places[cause]);
        }
    }
}

/// A change made whole: its places and consequences, rates, class, id, summary and title.
fn finish(
    building: Building,
    consequences: Vec<usize>,
    places: &[Place],
    overlaps: &[Overlaps],
    local_of: &HashMap<usize, usize>,
    endpoints: &[EndpointInput<'_>],
) -> Change {
    let mut members = building.members;
    members.sort_by_key(|m| {
        (
            places[*m].endpoint,
            places[*m].path.clone(),
            places[*m].kind,
        )
    });
    let mut endpoint_indices: Vec<usize> = members.iter().map(|m| places[*m].endpoint).collect();
    endpoint_indices.dedup();
    let rates: Vec<EndpointShare> = endpoint_indices
        .iter()
        .map(|endpoint| {
            let overlap = &overlaps[*endpoint];
            let mut marked = vec![false; overlap.places.len()];
            for member in members.iter().chain(&consequences) {
                if places[*member].endpoint == *endpoint {
                    marked[local_of[member]] = true;
                }
            }
            let failing = overlap.failing_any(&marked);
            let requests = endpoints[*endpoint].report.requests;
            EndpointShare {
                endpoint: endpoints[*endpoint].report.endpoint.clone(),
                requests,
                failing,
                rate: aggregate::rate(failing, requests),
            }
        })
        .collect();
    let place_of = |index: &usize| {
        let place = &places[*index];
        ChangePlace {
            endpoint: endpoints[place.endpoint].report.endpoint.clone(),
            path: place.path.clone(),
            kind: place.kind,
            compat: place.compat,
            rate: place.rate,
            shape: place.shape.clone(),
            sample: place.sample.clone(),
        }
    };
    let sample = members
        .iter()
        .max_by(|a, b| {
            places[**a]
                .failing
                .cmp(&places[**b].failing)
                .then_with(|| b.cmp(a))
        })
        .and_then(|m| places[*m].sample.clone());
    let change_places: Vec<ChangePlace> = members.iter().map(place_of).collect();
    let consequence_places: Vec<ChangePlace> = consequences.iter().map(place_of).collect();
    made(
        change_id(&building.first_key),
        change_places,
        consequence_places,
        rates,
        sample,
    )
}

/// The id of the change whose least shape key is `key`.
fn change_id(key: &str) -> String {
    format!("ch-{:012x}", fnv1a(key.as_bytes()) >> 16)
}

/// A change from its parts: the worst class, the summary and the title.
fn made(
    id: String,
    places: Vec<ChangePlace>,
    consequences: Vec<ChangePlace>,
    rates: Vec<EndpointShare>,
    sample: Option<String>,
) -> Change {
    let compat = places
        .iter()
        .chain(&consequences)
        .map(|place| place.compat)
        .max()
        .unwrap_or(Compat::Changed);
    let endpoints: Vec<String> = rates.iter().map(|r| r.endpoint.clone()).collect();
    let summary = change_text::summary(&places);
    let title = change_text::title(&summary, &endpoints, consequences.len());
    Change {
        id,
        title,
        compat,
        requests: rates.iter().map(|r| r.failing).sum(),
        endpoints,
        rates,
        places,
        consequences,
        summary,
        predictors: Vec::new(),
        sample,
    }
}

/// The endpoints whose candidate is slower, one change (their latency is one shape, whatever the endpoint).
fn latency_change(endpoints: &[EndpointInput<'_>]) -> Option<Change> {
    let slow: Vec<&EndpointReport> = endpoints
        .iter()
        .map(|input| input.report)
        .filter(|report| report.latency_regression)
        .collect();
    if slow.is_empty() {
        return None;
    }
    let places = slow
        .iter()
        .map(|report| ChangePlace {
            endpoint: report.endpoint.clone(),
            path: LATENCY_PATH.to_string(),
            kind: DiffKind::Slower,
            compat: Compat::Changed,
            rate: 1.0,
            shape: Some(format!(
                "p99 {:.1} ms → {:.1} ms",
                report.latency.secondary.p99_ms, report.latency.candidate.p99_ms
            )),
            sample: None,
        })
        .collect();
    let rates = slow
        .iter()
        .map(|report| EndpointShare {
            endpoint: report.endpoint.clone(),
            requests: report.requests,
            failing: report.requests,
            rate: 1.0,
        })
        .collect();
    let key = format!("{LATENCY_PATH}\u{1f}{}", DiffKind::Slower.as_str());
    Some(made(change_id(&key), places, Vec::new(), rates, None))
}

#[cfg(test)]
mod tests;
