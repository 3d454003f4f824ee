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
use crate::analysis::{Analysis, PathKey, SkipReason};
use std::time::Duration;

use crate::exchange::{Outcome, Target, UpstreamError};

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

/// The latency an outcome contributes: its time to a response head, or a timeout's full wait (leaving timeouts
/// out would make a slow upstream look fast); nothing for other failures.
pub fn latency_sample(outcome: &Outcome) -> Option<Duration> {
    match &outcome.result {
        Ok(_) | Err(UpstreamError::Timeout(_)) => Some(outcome.elapsed),
        Err(_) => None,
    }
}

/// Everything counted for one endpoint (over one time bucket, or merged over many).
#[derive(Clone, Debug, Default)]
pub struct EndpointCounts {
    /// Exchanges seen, compared or not.
    pub requests: u64,
    /// Exchanges compared (the denominator of every rate).
    pub compared: u64,
    /// Exchanges not compared, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Upstream failures, by target and kind.
    pub errors: BTreeMap<(Target, &'static str), u64>,
    /// Bodies not compared, by the upstream whose body it was and the reason.
    pub body_skipped: BTreeMap<(Target, &'static str), u64>,
    /// Compared exchanges where secondary differed from primary anywhere.
    pub noisy: u64,
    pub paths: BTreeMap<PathKey, PathCounts>,
    /// Compared exchanges by their set of uncancelled candidate differences (empty sets are not kept).
    pub signatures: BTreeMap<Vec<PathKey>, u64>,
    pub latency: Latencies,
    /// An exchange showing each candidate difference, uncancelled where one was seen.
    pub samples: BTreeMap<PathKey, (Uuid, bool)>,
}

impl EndpointCounts {
    /// Adds one analysed exchange.
    pub fn record(&mut self, analysis: &Analysis) {
        self.requests += 1;
        for target in Target::ALL {
            let outcome = analysis.exchange.outcome(target);
            if let Some(elapsed) = latency_sample(outcome) {
                self.latency.record(target, elapsed);
            }
            if let Err(error) = &outcome.result
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
            *self.body_skipped.entry((*target, reason)).or_default() += 1;
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
        let noise = compared.noise_keys();
        for ((path, kind), compat) in compared.candidate_keys() {
            let key = (path.to_string(), kind);
            self.paths.entry(key.clone()).or_default().raw[compat as usize] += 1;
            let uncancelled = !noise.contains(&(path, kind));
            let sample = self
                .samples
                .entry(key)
                .or_insert((analysis.exchange.id, uncancelled));
            if uncancelled && !sample.1 {
                *sample = (analysis.exchange.id, true);
            }
        }
        let signature = compared.signature();
        if !signature.is_empty() {
            *self.signatures.entry(signature).or_default() += 1;
        }
    }

    /// Adds another set of counts (another time bucket, another replica).
    pub fn merge(&mut self, other: &EndpointCounts) {
        self.requests += other.requests;
        self.compared += other.compared;
        self.noisy += other.noisy;
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
        self.latency.merge(&other.latency);
        for (key, sample) in &other.samples {
            let mine = self.samples.entry(key.clone()).or_insert(*sample);
            if sample.1 && !mine.1 {
                *mine = *sample;
            }
        }
    }
}

/// How counts become verdicts.
#[derive(Clone, Debug)]
pub struct VerdictSettings {
    pub thresholds: Thresholds,
    /// `--latency-factor`.
    pub latency_factor: f64,
}

impl Default for VerdictSettings {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            latency_factor: 1.5,
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
    pub noise: Vec<NoiseReport>,
    /// Requests whose candidate differs at a regression path (the numerator of `diff_rate`).
    #[serde(skip)]
    pub failing: u64,
}

/// Judges one endpoint's counts under the rules in force.
pub fn report(
    endpoint: &str,
    counts: &EndpointCounts,
    settings: &VerdictSettings,
    rules: &RuleSet,
) -> EndpointReport {
    let rules = rules.for_endpoint(endpoint);
    let compared = counts.compared;
    let fraction = |count: u64| {
        if compared == 0 {
            0.0
        } else {
            count as f64 / compared as f64
        }
    };
    let mut regression_keys: BTreeSet<&PathKey> = BTreeSet::new();
    let mut noise = Vec::new();
    let mut judged = Vec::new();
    for (key, path_counts) in &counts.paths {
        let (path, kind) = key;
        if !rules.counts(path, *kind) {
            continue;
        }
        let raw = path_counts.raw_total();
        let verdict = match rules.verdict_override(path) {
            Some(RuleAction::Noise) => Verdict::Noise,
            _ => noise::verdict(raw, path_counts.noise, compared, settings.thresholds),
        };
        match (verdict, path_counts.worst()) {
            (Verdict::Regression, Some(compat)) => {
                regression_keys.insert(key);
                judged.push((key, compat, raw, path_counts.noise));
            }
            _ => noise.push(NoiseReport {
                path: path.clone(),
                kind: *kind,
                raw,
                noise: path_counts.noise,
            }),
        }
    }
    let mut failing = 0;
    let mut uncancelled: BTreeMap<&PathKey, u64> = BTreeMap::new();
    for (signature, count) in &counts.signatures {
        if signature.iter().any(|key| regression_keys.contains(key)) {
            failing += count;
        }
        for key in signature {
            *uncancelled.entry(key).or_default() += count;
        }
    }
    let mut regressions: Vec<RegressionReport> = judged
        .into_iter()
        .map(|(key, compat, raw, noise)| RegressionReport {
            path: key.0.clone(),
            kind: key.1,
            compat,
            raw,
            noise,
            rate: fraction(uncancelled.get(key).copied().unwrap_or(0)),
            sample: counts.samples.get(key).map(|(id, _)| id.to_string()),
        })
        .collect();
    regressions.sort_by(|a, b| {
        b.rate
            .total_cmp(&a.rate)
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    noise.sort_by(|a, b| b.noise.cmp(&a.noise).then_with(|| a.path.cmp(&b.path)));
    EndpointReport {
        endpoint: endpoint.to_string(),
        requests: compared,
        diff_rate: fraction(failing),
        noise_rate: fraction(counts.noisy),
        latency: TargetLatency {
            primary: counts.latency.summary(Target::Primary),
            secondary: counts.latency.summary(Target::Secondary),
            candidate: counts.latency.summary(Target::Candidate),
        },
        latency_regression: counts.latency.regression(settings.latency_factor),
        regressions,
        noise,
        failing,
    }
}

/// Requests and diff rate over several endpoints.
pub fn overall(reports: &[EndpointReport]) -> (u64, f64) {
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let failing: u64 = reports.iter().map(|r| r.failing).sum();
    let rate = if requests == 0 {
        0.0
    } else {
        failing as f64 / requests as f64
    };
    (requests, rate)
}
