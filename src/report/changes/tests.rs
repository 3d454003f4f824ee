//! Grouping on made-up counts: what makes one change, what keeps two apart, what trails a status change.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::analysis::aggregate::{RegressionReport, TargetLatency};

/// One endpoint's counts: its compared requests and, for each set of failing places, how many requests had it.
struct Endpoint {
    name: String,
    requests: u64,
    signatures: Vec<(Vec<(&'static str, DiffKind)>, u64)>,
    shapes: BTreeMap<PathKey, String>,
    slow: bool,
}

impl Endpoint {
    fn new(name: &str, requests: u64) -> Self {
        Self {
            name: name.to_string(),
            requests,
            signatures: Vec::new(),
            shapes: BTreeMap::new(),
            slow: false,
        }
    }

    fn failing(mut self, places: &[(&'static str, DiffKind)], count: u64) -> Self {
        self.signatures.push((places.to_vec(), count));
        self
    }

    fn shape(mut self, path: &str, kind: DiffKind, shape: &str) -> Self {
        self.shapes
            .insert((path.to_string(), kind), shape.to_string());
        self
    }

    fn parts(&self) -> (EndpointReport, Tally) {
        let mut tally = Tally {
            compared: self.requests,
            requests: self.requests,
            ..Tally::default()
        };
        let mut failing: BTreeMap<PathKey, u64> = BTreeMap::new();
        for (places, count) in &self.signatures {
            let signature: Vec<PathKey> = places
                .iter()
                .map(|(path, kind)| (path.to_string(), *kind))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for key in &signature {
                *failing.entry(key.clone()).or_default() += count;
            }
            *tally.signatures.entry(signature).or_default() += count;
        }
        let regressions = failing
            .iter()
            .map(|((path, kind), count)| RegressionReport {
                path: path.clone(),
                kind: *kind,
                compat: Compat::classify(*kind, path, None, None),
                raw: *count,
                noise: 0,
                rate: aggregate::rate(*count, self.requests),
                sample: Some(format!("{}:{path}", self.name)),
            })
            .collect();
        let report = EndpointReport {
            endpoint: self.name.clone(),
            requests: self.requests,
            diff_rate: 0.0,
            noise_rate: 0.0,
            latency: TargetLatency::default(),
            latency_regression: self.slow,
            regressions,
            accepted: Vec::new(),
            noise: Vec::new(),
            redacted_requests: 0,
            failing: 0,
            noisy: 0,
            failing_breaking: 0,
        };
        (report, tally)
    }
}

fn changes_of(endpoints: &[Endpoint]) -> Vec<Change> {
    let parts: Vec<(EndpointReport, Tally)> = endpoints.iter().map(Endpoint::parts).collect();
    let inputs: Vec<EndpointInput<'_>> = parts
        .iter()
        .zip(endpoints)
        .map(|((report, tally), endpoint)| EndpointInput {
            report,
            tally,
            shapes: &endpoint.shapes,
        })
        .collect();
    let changes = group(&inputs);
    // Every failing place is in exactly one change, as a place or as a consequence.
    let mut seen = BTreeSet::new();
    for change in &changes {
        for place in change.places.iter().chain(&change.consequences) {
            assert!(
                seen.insert((place.endpoint.clone(), place.path.clone(), place.kind)),
                "{place:?} is in two changes"
            );
        }
    }
    let failing: usize = parts
        .iter()
        .map(|(report, _)| report.regressions.len())
        .sum();
    let latency = endpoints.iter().filter(|e| e.slow).count();
    assert_eq!(seen.len(), failing + latency, "no place is lost");
    changes
}

const VARY: (&str, DiffKind) = ("header/vary", DiffKind::Missing);

fn body_fields() -> Vec<(&'static str, DiffKind)> {
    [
        "body/a", "body/b", "body/c", "body/d", "body/e", "body/f", "body/g", "body/h", "body/i",
        "body/j", "body/k", "body/l", "body/m", "body/n", "body/o",
    ]
    .into_iter()
    .map(|path| (path, DiffKind::Missing))
    .collect()
}

#[test]
fn one_header_dropped_everywhere_is_one_change() {
    let endpoints: Vec<Endpoint> = (0..20)
        .map(|n| Endpoint::new(&format!("GET /e{n:02}"), 100).failing(&[VARY], 100))
        .collect();
    let changes = changes_of(&endpoints);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].endpoints.len(), 20);
    assert_eq!(changes[0].requests, 2_000);
    assert_eq!(changes[0].title, "`header/vary` missing on 20 endpoints");
    assert!(changes[0].rates.iter().all(|share| share.rate == 1.0));
}

#[test]
fn a_shape_change_stays_apart_from_a_header_dropped_everywhere() {
    let mut shaped = body_fields();
    shaped.push(VARY);
    let endpoints: Vec<Endpoint> = (0..20)
        .map(|n| {
            let endpoint = Endpoint::new(&format!("GET /e{n:02}"), 100);
            if n < 5 {
                endpoint.failing(&shaped, 100)
            } else {
                endpoint.failing(&[VARY], 100)
            }
        })
        .collect();
    let changes = changes_of(&endpoints);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let header = changes.iter().find(|c| c.endpoints.len() == 20).unwrap();
    assert_eq!(header.places.len(), 20);
    let shape = changes.iter().find(|c| c.endpoints.len() == 5).unwrap();
    assert_eq!(shape.places.len(), 75, "15 places on each of 5 endpoints");
    assert_eq!(shape.title, "`body/*` missing ×15 on 5 endpoints");
}

#[test]
fn places_failing_on_other_requests_are_other_changes() {
    let endpoints = vec![
        Endpoint::new("GET /a", 100)
            .failing(
                &[("body/x", DiffKind::Missing), ("body/y", DiffKind::Extra)],
                30,
            )
            .failing(&[("body/z", DiffKind::ValueChanged)], 10),
    ];
    let changes = changes_of(&endpoints);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[0].places.len(), 2);
    assert_eq!(changes[0].requests, 30);
    assert_eq!(changes[1].requests, 10);
}

/// The change whose first place is `path`, and the paths of its consequences.
fn led_by<'c>(changes: &'c [Change], path: &str) -> (&'c Change, BTreeSet<&'c str>) {
    let change = changes
        .iter()
        .find(|c| c.places[0].path == path)
        .unwrap_or_else(|| panic!("no change led by {path}: {changes:#?}"));
    let trailing = change
        .consequences
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    (change, trailing)
}

#[test]
fn what_trails_a_status_change_is_listed_under_it() {
    let endpoints = vec![
        Endpoint::new("GET /a", 1_000)
            .failing(&[VARY], 980)
            .failing(
                &[
                    VARY,
                    ("status", DiffKind::ValueChanged),
                    ("body/items", DiffKind::Missing),
                    ("body/error", DiffKind::Extra),
                    ("header/content-type", DiffKind::ValueChanged),
                ],
                20,
            )
            .shape("status", DiffKind::ValueChanged, "200 → 500"),
    ];
    let changes = changes_of(&endpoints);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let (status, trailing) = led_by(&changes, "status");
    assert_eq!(status.places.len(), 1);
    assert_eq!(
        trailing,
        BTreeSet::from(["body/error", "body/items", "header/content-type"])
    );
    assert_eq!(status.requests, 20);
    assert_eq!(
        status.title,
        "`status` 200 → 500 on GET /a, 3 places trailing it"
    );
    assert_eq!(status.compat, Compat::Breaking);
}

#[test]
fn what_trails_an_error_list_appearing_is_listed_under_it_as_under_a_status() {
    let endpoints = vec![
        Endpoint::new("GraphQL query Post", 1_000)
            .failing(&[VARY], 980)
            .failing(
                &[
                    VARY,
                    ("body/errors", DiffKind::Extra),
                    ("body/data/post", DiffKind::TypeChanged),
                    ("body/data/post/title", DiffKind::Missing),
                ],
                20,
            ),
    ];
    let changes = changes_of(&endpoints);
    let (errors, trailing) = led_by(&changes, "body/errors");
    assert_eq!(errors.places.len(), 1, "{changes:#?}");
    assert_eq!(
        trailing,
        BTreeSet::from(["body/data/post", "body/data/post/title"])
    );
    assert_eq!(errors.compat, Compat::Breaking);
}

#[test]
fn the_same_place_changed_another_way_is_another_change() {
    let endpoints = vec![
        Endpoint::new("GET /a", 10)
            .failing(&[("status", DiffKind::ValueChanged)], 10)
            .shape("status", DiffKind::ValueChanged, "200 → 404"),
        Endpoint::new("GET /b", 10)
            .failing(&[("status", DiffKind::ValueChanged)], 10)
            .shape("status", DiffKind::ValueChanged, "200 → 404"),
        Endpoint::new("GET /c", 10)
            .failing(&[("status", DiffKind::ValueChanged)], 10)
            .shape("status", DiffKind::ValueChanged, "200 → 500"),
    ];
    let changes = changes_of(&endpoints);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[0].endpoints, vec!["GET /a", "GET /b"]);
    assert_eq!(changes[0].title, "`status` 200 → 404 on 2 endpoints");
}

#[test]
fn a_slower_candidate_is_a_change_of_its_own() {
    let mut slow = Endpoint::new("GET /search", 200).failing(&[VARY], 200);
    slow.slow = true;
    let changes = changes_of(&[slow]);
    assert_eq!(changes.len(), 2);
    let latency = changes.iter().find(|c| c.is_latency()).unwrap();
    assert_eq!(latency.places[0].path, "latency");
    assert_eq!(latency.places[0].kind, DiffKind::Slower);
}

#[test]
fn ids_do_not_depend_on_the_order_or_the_counts() {
    let make = |scale: u64, reverse: bool| {
        let mut endpoints = vec![
            Endpoint::new("GET /a", 100 * scale)
                .failing(&[("body/x", DiffKind::Missing)], 40 * scale)
                .failing(&[VARY], 7 * scale),
            Endpoint::new("GET /b", 100 * scale).failing(&[VARY], 9 * scale),
        ];
        if reverse {
            endpoints.reverse();
        }
        let mut ids: Vec<(String, String)> = changes_of(&endpoints)
            .into_iter()
            .map(|change| (change.id, change.title))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(make(1, false), make(3, true));
    assert_eq!(make(1, false).len(), 2);
}

#[test]
fn a_change_narrowed_to_some_endpoints_is_made_again_for_them() {
    let endpoints: Vec<Endpoint> = (0..3)
        .map(|n| {
            Endpoint::new(&format!("GET /e{n}"), 10)
                .failing(&[VARY, ("body/a", DiffKind::Extra)], 10)
        })
        .collect();
    let mut changes = changes_of(&endpoints);
    assert_eq!(changes.len(), 1);
    let change = changes.remove(0);
    let narrowed = change.restricted_to(&["GET /e1"]).expect("it fails there");
    assert_eq!(narrowed.id, change.id, "the same change");
    assert_eq!(narrowed.endpoints, ["GET /e1"]);
    assert_eq!(narrowed.places.len(), 2);
    assert_eq!(narrowed.requests, 10);
    assert_eq!(narrowed.compat, Compat::Breaking);
    assert_eq!(
        narrowed.title,
        "`header/vary` missing, `body/a` extra on GET /e1"
    );
    assert!(change.restricted_to(&["GET /elsewhere"]).is_none());
}
