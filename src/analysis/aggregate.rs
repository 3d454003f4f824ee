//! Counts that turn many analysed exchanges into verdicts per endpoint and path, a diff rate and a noise rate.
//! The store keeps the same counts per time bucket; merging buckets and reporting on them is this code.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::analysis::compat::Compat;
use crate::analysis::diff::DiffKind;
use crate::analysis::latency::{Latencies, LatencySummary};
use crate::analysis::noise::{self, Thresholds, Verdict};
use crate::analysis::rules::{RuleAction, RuleSet};
use crate::analysis::{Analysis, BodySkip, PathKey, SkipReason};
use crate::encoding::holds_redacted;

use crate::exchange::{ErrorKind, Target};

/// Counts for one place (generalised path and kind) of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Requests where the candidate differed here, by the worst compatibility class of that request's
    /// differences here (indexed by `Compat as usize`).
    pub raw: [u64; 3],
    /// Requests where secondary differed here.
    pub noise: u64,
}

impl PathCounts {
    pub fn raw_total(&self) -> u64 {
        self.raw.iter().sum()
    }

    /// The worst class seen.
    pub fn worst(&self) -> Option<Compat> {
        [Compat::Breaking, Compat::Additive, Compat::Changed]
            .into_iter()
            .find(|compat| self.raw[*compat as usize] > 0)
    }
}

/// The additive counts of one endpoint over some span (a minute, a flush, a range): what writers add up in the
/// store and replicas sum. Latency and samples are kept apart (see [`EndpointCounts`]).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Exchanges seen, compared or not.
    pub requests: u64,
    /// Exchanges compared (the denominator of every rate).
    pub compared: u64,
    /// Exchanges not compared, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Upstream failures, by target and kind.
    pub errors: BTreeMap<(Target, ErrorKind), u64>,
    /// Bodies not compared, by the upstream whose body it was and the reason.
    pub body_skipped: BTreeMap<(Target, BodySkip), u64>,
    /// Compared exchanges where secondary differed from primary anywhere.
    pub noisy: u64,
    /// Exchanges whose request carried a redacted value (`redacted:...`): replayed from a redacted recording
    /// without real credentials, so upstreams likely refused them.
    pub redacted: u64,
    pub paths: BTreeMap<PathKey, PathCounts>,
    /// Compared exchanges by their set of uncancelled candidate differences (empty sets are not kept).
    pub signatures: BTreeMap<Vec<PathKey>, u64>,
}

/// What one map entry costs besides its key's text, roughly: the node's share and the value.
const ENTRY_BYTES: usize = 64;

impl Tally {
    /// Adds one analysed exchange.
    pub fn record(&mut self, analysis: &Analysis) {
        let signature = analysis
            .compared()
            .map(|compared| compared.signature())
            .unwrap_or_default();
        self.record_signed(analysis, &signature);
    }

    /// Adds one analysed exchange whose signature ([`crate::analysis::Compared::signature`]) the caller
    /// worked out already.
    pub fn record_signed(&mut self, analysis: &Analysis, signature: &[PathKey]) {
        self.requests += 1;
        if carries_redacted_value(&analysis.exchange.request) {
            self.redacted += 1;
        }
        for target in Target::ALL {
            if let Err(error) = &analysis.exchange.outcome(target).result
                && error.is_upstream_fault()
            {
                *self.errors.entry((target, error.kind())).or_default() += 1;
            }
        }
        let compared = match &analysis.result {
            Ok(compared) => compared,
            Err(reason) => {
                *self.skipped.entry(*reason).or_default() += 1;
                return;
            }
        };
        self.compared += 1;
        for (target, reason) in &compared.body_skipped {
            *self.body_skipped.entry((*target, *reason)).or_default() += 1;
        }
        if !compared.noise.is_empty() {
            self.noisy += 1;
        }
        for (path, kind) in compared.noise_keys() {
            self.paths
                .entry((path.to_string(), kind))
                .or_default()
                .noise += 1;
        }
        for ((path, kind), compat) in compared.candidate_keys() {
            self.paths.entry((path.to_string(), kind)).or_default().raw[compat as usize] += 1;
        }
        if !signature.is_empty() {
            match self.signatures.get_mut(signature) {
                Some(count) => *count += 1,
                None => {
                    self.signatures.insert(signature.to_vec(), 1);
                }
            }
        }
    }

    /// Adds another tally (another time bucket, another replica).
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.compared += other.compared;
        self.noisy += other.noisy;
        self.redacted += other.redacted;
        for (reason, count) in &other.skipped {
            *self.skipped.entry(*reason).or_default() += count;
        }
        for (key, count) in &other.errors {
            *self.errors.entry(*key).or_default() += count;
        }
        for (key, count) in &other.body_skipped {
            *self.body_skipped.entry(*key).or_default() += count;
        }
        for (key, counts) in &other.paths {
            let mine = self.paths.entry(key.clone()).or_default();
            mine.noise += counts.noise;
            for (slot, count) in mine.raw.iter_mut().zip(counts.raw) {
                *slot += count;
            }
        }
        for (signature, count) in &other.signatures {
            *self.signatures.entry(signature.clone()).or_default() += count;
        }
    }

    /// The rows this tally is written as.
    pub fn rows(&self) -> usize {
        3 + self.skipped.len()
            + self.errors.len()
            + self.body_skipped.len()
            + self.paths.len()
            + self.signatures.len()
    }

    /// The memory this tally holds, roughly (its maps' entries and the text of their keys).
    pub fn heap_bytes(&self) -> usize {
        let places: usize = self
            .paths
            .keys()
            .map(|(path, _)| path.len() + ENTRY_BYTES)
            .sum();
        let signatures: usize = self
            .signatures
            .keys()
            .map(|signature| {
                ENTRY_BYTES
                    + signature
                        .iter()
                        .map(|(path, _)| path.len() + 32)
                        .sum::<usize>()
            })
            .sum();
        (self.skipped.len() + self.errors.len() + self.body_skipped.len()) * ENTRY_BYTES
            + places
            + signatures
    }
}

/// Everything known of one endpoint over a range, for judging: the tally, latency and an exchange per place.
#[derive(Clone, Debug, Default)]
pub struct EndpointCounts {
    pub tally: Tally,
    pub latency: Latencies,
    /// An exchange showing each candidate difference, uncancelled where one was seen.
    pub samples: BTreeMap<PathKey, (Uuid, bool)>,
    /// The shape most of the candidate's changes at a place take (`number → string`, `200 → 404`), where
    /// one does; read from the store's sketches.
    pub shapes: BTreeMap<PathKey, String>,
}

impl EndpointCounts {
    /// Adds one analysed exchange.
    pub fn record(&mut self, analysis: &Analysis) {
        self.tally.record(analysis);
        for target in Target::ALL {
            if let Some(elapsed) = analysis.latency(target) {
                self.latency.record(target, elapsed);
            }
        }
        let Ok(compared) = &analysis.result else {
            return;
        };
        let noise = compared.noise_keys();
        for (path, kind) in compared.candidate_keys().into_keys() {
            let uncancelled = !noise.contains(&(path, kind));
            let sample = self
                .samples
                .entry((path.to_string(), kind))
                .or_insert((analysis.exchange.id, uncancelled));
            if uncancelled && !sample.1 {
                *sample = (analysis.exchange.id, true);
            }
        }
    }

    /// Adds another set of counts (another time bucket, another replica).
    pub fn merge(&mut self, other: &EndpointCounts) {
        self.tally.merge(&other.tally);
        self.latency.merge(&other.latency);
        for (key, sample) in &other.samples {
            let mine = self.samples.entry(key.clone()).or_insert(*sample);
            if sample.1 && !mine.1 {
                *mine = *sample;
            }
        }
        for (key, shape) in &other.shapes {
            self.shapes
                .entry(key.clone())
                .or_insert_with(|| shape.clone());
        }
    }
}

/// The place of a latency regression, whose kind is [`DiffKind::Slower`].
pub const LATENCY_PATH: &str = "latency";

/// How counts become verdicts.
#[derive(Clone, Debug)]
pub struct VerdictSettings {
    pub thresholds: Thresholds,
    /// `--latency-factor`.
    pub latency_factor: f64,
}

impl VerdictSettings {
    pub const DEFAULT_LATENCY_FACTOR: f64 = 1.5;
}

impl Default for VerdictSettings {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            latency_factor: Self::DEFAULT_LATENCY_FACTOR,
        }
    }
}

/// A place (path and kind) judged a regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    pub path: String,
    pub kind: DiffKind,
    pub compat: Compat,
    pub raw: u64,
    pub noise: u64,
    /// Share of compared requests with an uncancelled candidate difference here.
    pub rate: f64,
    /// An exchange showing it.
    pub sample: Option<String>,
}

/// A place the counts call a regression that an accept rule says is intended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcceptedReport {
    /// The place, as it would be reported were it not accepted.
    #[serde(flatten)]
    pub place: RegressionReport,
    /// The rule's note, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A place judged noise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseReport {
    pub path: String,
    pub kind: DiffKind,
    pub raw: u64,
    pub noise: u64,
}

/// Latency percentiles of the three targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetLatency {
    pub primary: LatencySummary,
    pub secondary: LatencySummary,
    pub candidate: LatencySummary,
}

/// One endpoint's verdicts: the `endpoints` entries of the gate's JSON and the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub endpoint: String,
    /// Compared requests.
    pub requests: u64,
    pub diff_rate: f64,
    pub noise_rate: f64,
    pub latency: TargetLatency,
    pub latency_regression: bool,
    pub regressions: Vec<RegressionReport>,
    /// Intended changes: regressions by the counts that accept rules leave out of the diff rate; present when
    /// there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<AcceptedReport>,
    pub noise: Vec<NoiseReport>,
    /// Requests that carried a redacted value (`redacted:...`) instead of a credential; present when not zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redacted_requests: u64,
    /// Requests whose candidate differs at a regression path (the numerator of `diff_rate`).
    #[serde(skip)]
    pub failing: u64,
    /// Requests where primary and secondary differed (the numerator of `noise_rate`).
    #[serde(skip, default)]
    pub noisy: u64,
    /// Requests whose candidate differs at a regression path whose class is breaking (for `gate --fail-on
    /// breaking`).
    #[serde(skip)]
    pub failing_breaking: u64,
}

/// How a rule decided a place, if one did.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleEffect {
    /// A rule ignores this place (or presence-only / type-only leaves this kind out): it is not counted.
    Ignored,
    /// A rule calls this place noise.
    Noise,
    /// The counts call this place a regression; an accept rule says it is intended.
    Accepted,
}

/// One place of an endpoint with its counts and verdict: a row of the field tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceVerdict {
    pub path: String,
    pub kind: DiffKind,
    /// The worst class of the candidate's differences here (none when only secondary differed).
    pub compat: Option<Compat>,
    pub raw: u64,
    pub noise: u64,
    /// `|raw - noise| / (raw + noise)`, the relative part of the test.
    pub relative: f64,
    /// `|raw - noise| / requests`, the absolute part of the test.
    pub absolute: f64,
    /// Share of requests with an uncancelled candidate difference here.
    pub rate: f64,
    pub verdict: Verdict,
    /// Set when a rule decided rather than the counts.
    pub rule: Option<RuleEffect>,
    /// The deciding rule's note (accept rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub sample: Option<String>,
}

/// Every place of an endpoint judged, ignored ones included (marked), sorted by path and kind.
pub fn places(
    endpoint: &str,
    counts: &EndpointCounts,
    settings: &VerdictSettings,
    rules: &RuleSet,
) -> Vec<PlaceVerdict> {
    let rules = rules.for_endpoint(endpoint);
    let compared = counts.tally.compared;
    let fraction = |count: u64| rate(count, compared);
    let mut uncancelled: BTreeMap<&PathKey, u64> = BTreeMap::new();
    for (signature, count) in &counts.tally.signatures {
        for key in signature {
            *uncancelled.entry(key).or_default() += count;
        }
    }
    counts
        .tally
        .paths
        .iter()
        .map(|(key, place)| {
            let (path, kind) = key;
            let raw = place.raw_total();
            let delta = raw.abs_diff(place.noise) as f64;
            let compat = place.worst();
            let mut note = None;
            let (verdict, rule) = if !rules.counts(path, *kind) {
                (Verdict::Noise, Some(RuleEffect::Ignored))
            } else if matches!(rules.verdict_override(path), Some(RuleAction::Noise)) {
                (Verdict::Noise, Some(RuleEffect::Noise))
            } else {
                let verdict = noise::verdict(raw, place.noise, compared, settings.thresholds);
                let accepted = (verdict == Verdict::Regression)
                    .then(|| rules.accepting(path, *kind, compat))
                    .flatten();
                note = accepted.and_then(|rule| rule.spec.note.clone());
                (verdict, accepted.map(|_| RuleEffect::Accepted))
            };
            PlaceVerdict {
                path: path.clone(),
                kind: *kind,
                compat,
                raw,
                noise: place.noise,
                relative: rate(delta as u64, raw + place.noise),
                absolute: fraction(delta as u64),
                rate: fraction(uncancelled.get(key).copied().unwrap_or(0)),
                verdict,
                rule,
                note,
                sample: counts.samples.get(key).map(|(id, _)| id.to_string()),
            }
        })
        .collect()
}

/// Judges one endpoint's counts under the rules in force.
pub fn report(
    endpoint: &str,
    counts: &EndpointCounts,
    settings: &VerdictSettings,
    rules: &RuleSet,
) -> EndpointReport {
    let compared = counts.tally.compared;
    let fraction = |count: u64| rate(count, compared);
    let judged = places(endpoint, counts, settings, rules);
    let regression_keys = |breaking_only: bool| -> BTreeSet<(&str, DiffKind)> {
        judged
            .iter()
            .filter(|place| place.verdict == Verdict::Regression && place.rule.is_none())
            .filter(|place| !breaking_only || place.compat == Some(Compat::Breaking))
            .map(|place| (place.path.as_str(), place.kind))
            .collect()
    };
    let failing = failing_requests(&counts.tally, &regression_keys(false));
    let failing_breaking = failing_requests(&counts.tally, &regression_keys(true));
    let mut regressions = Vec::new();
    let mut accepted = Vec::new();
    let mut noise = Vec::new();
    for place in judged {
        match (place.verdict, place.rule, place.compat) {
            (_, Some(RuleEffect::Ignored), _) => {}
            (Verdict::Regression, rule, Some(compat)) => {
                let report = RegressionReport {
                    path: place.path,
                    kind: place.kind,
                    compat,
                    raw: place.raw,
                    noise: place.noise,
                    rate: place.rate,
                    sample: place.sample,
                };
                if rule == Some(RuleEffect::Accepted) {
                    accepted.push(AcceptedReport {
                        place: report,
                        note: place.note,
                    });
                } else {
                    regressions.push(report);
                }
            }
            _ => noise.push(NoiseReport {
                path: place.path,
                kind: place.kind,
                raw: place.raw,
                noise: place.noise,
            }),
        }
    }
    // Most frequent first; at equal rates the worst class first (a missing field before the extra one that
    // replaced it).
    regressions.sort_by(|a, b| {
        b.rate
            .total_cmp(&a.rate)
            .then_with(|| b.compat.cmp(&a.compat))
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    noise.sort_by(|a, b| b.noise.cmp(&a.noise).then_with(|| a.path.cmp(&b.path)));
    let mut latency_regression = counts.latency.regression(settings.latency_factor);
    // A slower candidate is accepted like any place: the rule names the path `latency` and the kind `slower`.
    if latency_regression
        && let Some(rule) = rules.for_endpoint(endpoint).accepting(
            LATENCY_PATH,
            DiffKind::Slower,
            Some(Compat::Changed),
        )
    {
        latency_regression = false;
        accepted.push(AcceptedReport {
            place: RegressionReport {
                path: LATENCY_PATH.to_string(),
                kind: DiffKind::Slower,
                compat: Compat::Changed,
                raw: 0,
                noise: 0,
                rate: 0.0,
                sample: None,
            },
            note: rule.spec.note.clone(),
        });
    }
    accepted.sort_by(|a, b| {
        (a.place.path.as_str(), a.place.kind).cmp(&(b.place.path.as_str(), b.place.kind))
    });
    EndpointReport {
        endpoint: endpoint.to_string(),
        requests: compared,
        diff_rate: fraction(failing),
        noise_rate: fraction(counts.tally.noisy),
        redacted_requests: counts.tally.redacted,
        noisy: counts.tally.noisy,
        latency: TargetLatency {
            primary: counts.latency.summary(Target::Primary),
            secondary: counts.latency.summary(Target::Secondary),
            candidate: counts.latency.summary(Target::Candidate),
        },
        latency_regression,
        regressions,
        accepted,
        noise,
        failing,
        failing_breaking,
    }
}

/// Whether a request carries a value redaction put there (`redacted:` and a keyed hash) in a header, its
/// query or its body: a request replayed from a redacted recording without real credentials.
pub fn carries_redacted_value(request: &crate::exchange::RecordedRequest) -> bool {
    request
        .headers
        .values()
        .any(|value| holds_redacted(value.as_bytes()))
        || request
            .uri
            .query()
            .is_some_and(|query| holds_redacted(query.as_bytes()))
        || holds_redacted(&request.body)
}

/// For counts that appear in JSON only when they are not zero.
pub fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// A share of `whole`: the diff rate, the noise rate and every other rate of the report are this, and nothing
/// compared is a rate of 0.
pub fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Compared requests whose candidate differs at one of `places` (the numerator of a diff rate).
pub fn failing_requests(tally: &Tally, places: &BTreeSet<(&str, DiffKind)>) -> u64 {
    tally
        .signatures
        .iter()
        .filter(|(signature, _)| {
            signature
                .iter()
                .any(|(path, kind)| places.contains(&(path.as_str(), *kind)))
        })
        .map(|(_, count)| count)
        .sum()
}
