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
use crate::analysis::{Analysis, SkipReason};
use crate::exchange::{Target, UpstreamError};

/// Counts for one generalised path of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Requests where the candidate differed here, by the (kind, class) of that request's worst difference.
    pub raw: BTreeMap<(DiffKind, Compat), u64>,
    /// Requests where secondary differed here.
    pub noise: u64,
}

impl PathCounts {
    pub fn raw_total(&self) -> u64 {
        self.raw.values().sum()
    }

    /// The most frequent kind, and the worst class seen.
    pub fn dominant(&self) -> Option<(DiffKind, Compat)> {
        let mut by_kind: BTreeMap<DiffKind, u64> = BTreeMap::new();
        for ((kind, _), count) in &self.raw {
            *by_kind.entry(*kind).or_default() += count;
        }
        let kind = by_kind
            .iter()
            .max_by_key(|(kind, count)| (**count, std::cmp::Reverse(**kind)))?
            .0;
        let compat = self.raw.keys().map(|(_, compat)| *compat).max()?;
        Some((*kind, compat))
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
    /// Bodies not compared (status and headers were), by target and reason.
    pub body_skipped: BTreeMap<(Target, &'static str), u64>,
    /// Compared exchanges where secondary differed from primary anywhere.
    pub noisy: u64,
    pub paths: BTreeMap<String, PathCounts>,
    /// Compared exchanges by their set of uncancelled candidate paths (empty sets are not kept).
    pub signatures: BTreeMap<Vec<String>, u64>,
    pub latency: Latencies,
    /// The first exchange with a candidate difference at each path.
    pub samples: BTreeMap<String, Uuid>,
}

impl EndpointCounts {
    /// Adds one analysed exchange.
    pub fn record(&mut self, analysis: &Analysis) {
        self.requests += 1;
        for target in Target::ALL {
            let outcome = analysis.exchange.outcome(target);
            match &outcome.result {
                Ok(_) => self.latency.record(target, outcome.elapsed),
                Err(UpstreamError::Shed | UpstreamError::Abandoned) => {}
                Err(error) => *self.errors.entry((target, error.kind())).or_default() += 1,
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
        for path in compared.noise_paths() {
            self.paths.entry(path.to_string()).or_default().noise += 1;
        }
        for (path, (compat, kind)) in compared.candidate_paths() {
            *self
                .paths
                .entry(path.to_string())
                .or_default()
                .raw
                .entry((kind, compat))
                .or_default() += 1;
            self.samples
                .entry(path.to_string())
                .or_insert(analysis.exchange.id);
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
        for (path, counts) in &other.paths {
            let mine = self.paths.entry(path.clone()).or_default();
            mine.noise += counts.noise;
            for (key, count) in &counts.raw {
                *mine.raw.entry(*key).or_default() += count;
            }
        }
        for (signature, count) in &other.signatures {
            *self.signatures.entry(signature.clone()).or_default() += count;
        }
        self.latency.merge(&other.latency);
        for (path, id) in &other.samples {
            self.samples.entry(path.clone()).or_insert(*id);
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

/// A path judged a regression.
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

/// A path judged noise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseReport {
    pub path: String,
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
    let mut regression_paths: BTreeSet<&str> = BTreeSet::new();
    let mut noise = Vec::new();
    let mut judged = Vec::new();
    for (path, path_counts) in &counts.paths {
        let overridden = rules.verdict_override(path);
        if matches!(overridden, Some(RuleAction::Ignore)) {
            continue;
        }
        let raw = path_counts.raw_total();
        let verdict = match overridden {
            Some(RuleAction::Noise) => Verdict::Noise,
            _ => noise::verdict(raw, path_counts.noise, compared, settings.thresholds),
        };
        match (verdict, path_counts.dominant()) {
            (Verdict::Regression, Some((kind, compat))) => {
                regression_paths.insert(path);
                judged.push((path, kind, compat, raw, path_counts.noise));
            }
            _ => noise.push(NoiseReport {
                path: path.clone(),
                raw,
                noise: path_counts.noise,
            }),
        }
    }
    let mut failing = 0;
    let mut uncancelled: BTreeMap<&str, u64> = BTreeMap::new();
    for (signature, count) in &counts.signatures {
        if signature
            .iter()
            .any(|path| regression_paths.contains(path.as_str()))
        {
            failing += count;
        }
        for path in signature {
            *uncancelled.entry(path.as_str()).or_default() += count;
        }
    }
    let mut regressions: Vec<RegressionReport> = judged
        .into_iter()
        .map(|(path, kind, compat, raw, noise)| RegressionReport {
            path: path.clone(),
            kind,
            compat,
            raw,
            noise,
            rate: fraction(uncancelled.get(path.as_str()).copied().unwrap_or(0)),
            sample: counts.samples.get(path).map(Uuid::to_string),
        })
        .collect();
    regressions.sort_by(|a, b| b.rate.total_cmp(&a.rate).then_with(|| a.path.cmp(&b.path)));
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
