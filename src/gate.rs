//! The CI gate: a stored run judged against bounds (diff rate, evidence, latency), with every reason it fails.

pub mod changes;
pub mod render;
pub mod verdict;

use serde::Serialize;

use crate::analysis::aggregate::{
    self, AcceptedReport, EndpointReport, RegressionReport, TargetLatency,
};
use crate::analysis::compat::Compat;
use crate::analysis::rules::EndpointGlob;
use crate::report::changes::Change;
use crate::report::{ReportError, Reports, RunReport};
use crate::store::StoreError;
use crate::store::queries::TimeRange;

/// Why there is no verdict.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the store has no runs yet: send traffic through `serve`, `replay` or `demo` first")]
    NoRuns,
    #[error("no run labelled `{0}` in the store")]
    NoRun(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<ReportError> for GateError {
    fn from(error: ReportError) -> Self {
        match error {
            ReportError::NoRuns => GateError::NoRuns,
            ReportError::NoRun(label) => GateError::NoRun(label),
            ReportError::Store(error) => GateError::Store(error),
        }
    }
}

/// Reads a run's whole report (under the rules in force), its changes with their predictors, and judges it.
pub async fn evaluate(
    reports: &Reports,
    run: &str,
    settings: &GateSettings,
) -> Result<GateReport, GateError> {
    let report = reports.explained(run, TimeRange::all()).await?;
    Ok(judge(&report, settings))
}

/// A run's verdict as deployment tools read it, judged as `evaluate` judges it (without predictors, which a
/// verdict does not carry); a run the store does not have is a verdict with too little data, not an error.
pub async fn verdict(
    reports: &Reports,
    run: &str,
    settings: &GateSettings,
) -> Result<verdict::Verdict, StoreError> {
    match reports.report(run, TimeRange::all()).await {
        Ok(report) => Ok(verdict::Verdict::of(&judge(&report, settings))),
        Err(ReportError::NoRun(_) | ReportError::NoRuns) => Ok(verdict::Verdict::unknown(run)),
        Err(ReportError::Store(error)) => Err(error),
    }
}

/// The gate's verdict; its JSON form is the stable interface CI scripts read.
#[derive(Clone, Debug, Serialize)]
pub struct GateReport {
    pub run: String,
    pub passed: bool,
    /// Whether the run had the fewest compared requests asked for (`--min-requests`); it fails without.
    /// Not in the gate's JSON, whose shape is stable; the verdict endpoint's has it.
    #[serde(skip)]
    pub enough_data: bool,
    pub max_diff_rate: f64,
    pub requests: u64,
    pub diff_rate: f64,
    /// Requests that carried a redacted value instead of a credential (replayed from a redacted recording
    /// without `--header`): upstreams likely refused them, so their verdicts say little. Present when not zero.
    #[serde(skip_serializing_if = "crate::analysis::aggregate::is_zero")]
    pub redacted_requests: u64,
    /// `primary-twice` when the run had no secondary (primary was asked a second time for the noise
    /// baseline); absent for the usual secondary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<&'static str>,
    pub endpoints: Vec<GateEndpoint>,
    /// The failing places of the judged endpoints grouped by cause, most failing requests first, a latency
    /// change last (reported, failing the gate only with `--latency`); with `--fail-on breaking`, the changes
    /// with a breaking place on those endpoints.
    pub changes: Vec<Change>,
    /// Why it failed, in the order checked (empty when it passed).
    #[serde(skip)]
    pub failures: Vec<Failure>,
    #[serde(skip)]
    pub settings: GateSettings,
}

/// Which regressions fail the gate.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FailOn {
    /// Every regression counts toward the diff rate.
    Any,
    /// Only breaking ones (a field missing, a type or status class changed): for compatibility checks.
    Breaking,
}

/// The bounds a report is judged against.
#[derive(Clone, Debug)]
pub struct GateSettings {
    /// Largest diff rate that passes, overall and for each endpoint with at least `min_requests` requests.
    pub max_diff_rate: f64,
    /// Fewest compared requests for a verdict; an endpoint with fewer is reported but not judged on its own.
    pub min_requests: u64,
    /// Which regressions count.
    pub fail_on: FailOn,
    /// Fail on latency regressions too (they are reported either way).
    pub latency: bool,
    /// Judge only endpoints matching one of these; none judges every endpoint.
    pub endpoints: Vec<EndpointGlob>,
}

impl GateSettings {
    pub const DEFAULT_MAX_DIFF_RATE: f64 = 0.01;
    pub const DEFAULT_MIN_REQUESTS: u64 = 20;
    pub const DEFAULT_FAIL_ON: FailOn = FailOn::Any;
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            max_diff_rate: Self::DEFAULT_MAX_DIFF_RATE,
            min_requests: Self::DEFAULT_MIN_REQUESTS,
            fail_on: Self::DEFAULT_FAIL_ON,
            latency: false,
            endpoints: Vec::new(),
        }
    }
}

/// One endpoint as the gate reports it.
#[derive(Clone, Debug, Serialize)]
pub struct GateEndpoint {
    pub endpoint: String,
    pub requests: u64,
    pub diff_rate: f64,
    pub noise_rate: f64,
    pub latency: GateLatency,
    pub latency_regression: bool,
    /// The places judged regressions that count (all, or only breaking ones), as the report has them.
    pub regressions: Vec<RegressionReport>,
    /// Places the counts call regressions that accept rules say are intended: reported, not counted (present
    /// when there are any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<AcceptedReport>,
    pub noise: Vec<GateNoise>,
    /// Whether it had enough requests to be judged on its own.
    #[serde(skip)]
    pub judged: bool,
    /// Whether it fails the gate (its diff rate, or its latency with `--latency`).
    #[serde(skip)]
    pub failed: bool,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct GateLatency {
    pub primary: Percentiles,
    pub secondary: Percentiles,
    pub candidate: Percentiles,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct GateNoise {
    pub path: String,
    pub raw: u64,
    pub noise: u64,
}

/// One reason the gate fails.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// Too few compared requests to say anything.
    TooFewRequests { requests: u64, min: u64 },
    /// The run's diff rate is over the bound.
    DiffRate { rate: f64, max: f64 },
    /// One endpoint's diff rate is over the bound.
    EndpointDiffRate {
        endpoint: String,
        rate: f64,
        max: f64,
    },
    /// One endpoint is slower (with `--latency`).
    Latency {
        endpoint: String,
        primary_p99_ms: f64,
        candidate_p99_ms: f64,
    },
}

/// Judges a run's report under the gate's options.
pub fn judge(report: &RunReport, settings: &GateSettings) -> GateReport {
    let settings = settings.clone();
    let selected: Vec<&EndpointReport> = report
        .endpoints
        .iter()
        .filter(|endpoint| {
            settings.endpoints.is_empty()
                || settings
                    .endpoints
                    .iter()
                    .any(|pattern| pattern.matches(&endpoint.endpoint))
        })
        .collect();
    let failing = |endpoint: &EndpointReport| match settings.fail_on {
        FailOn::Any => endpoint.failing,
        FailOn::Breaking => endpoint.failing_breaking,
    };
    let requests: u64 = selected.iter().map(|endpoint| endpoint.requests).sum();
    let redacted_requests: u64 = selected.iter().map(|e| e.redacted_requests).sum();
    let diff_rate = aggregate::rate(selected.iter().map(|e| failing(e)).sum(), requests);

    let mut failures = Vec::new();
    let enough_data = requests >= settings.min_requests;
    if !enough_data {
        failures.push(Failure::TooFewRequests {
            requests,
            min: settings.min_requests,
        });
    }
    if diff_rate > settings.max_diff_rate {
        failures.push(Failure::DiffRate {
            rate: diff_rate,
            max: settings.max_diff_rate,
        });
    }
    let mut endpoints = Vec::new();
    for report in selected {
        let rate = aggregate::rate(failing(report), report.requests);
        let judged = report.requests >= settings.min_requests;
        let mut failed = false;
        if judged && rate > settings.max_diff_rate {
            failed = true;
            failures.push(Failure::EndpointDiffRate {
                endpoint: report.endpoint.clone(),
                rate,
                max: settings.max_diff_rate,
            });
        }
        if settings.latency && report.latency_regression {
            failed = true;
            failures.push(Failure::Latency {
                endpoint: report.endpoint.clone(),
                primary_p99_ms: report.latency.primary.p99_ms,
                candidate_p99_ms: report.latency.candidate.p99_ms,
            });
        }
        endpoints.push(GateEndpoint {
            endpoint: report.endpoint.clone(),
            requests: report.requests,
            diff_rate: rate,
            noise_rate: report.noise_rate,
            latency: latency(&report.latency),
            latency_regression: report.latency_regression,
            regressions: report
                .regressions
                .iter()
                .filter(|r| settings.fail_on == FailOn::Any || r.compat == Compat::Breaking)
                .cloned()
                .collect(),
            accepted: report.accepted.clone(),
            noise: report
                .noise
                .iter()
                .map(|n| GateNoise {
                    path: n.path.clone(),
                    raw: n.raw,
                    noise: n.noise,
                })
                .collect(),
            judged,
            failed,
        });
    }
    let judged: Vec<&str> = endpoints.iter().map(|e| e.endpoint.as_str()).collect();
    let changes = report
        .changes
        .iter()
        .filter_map(|change| selected_change(change, &judged, settings.fail_on))
        .collect();
    GateReport {
        run: report.run.label.clone(),
        changes,
        passed: failures.is_empty(),
        enough_data,
        max_diff_rate: settings.max_diff_rate,
        requests,
        diff_rate,
        redacted_requests,
        baseline: report
            .run
            .secondary_url
            .is_empty()
            .then_some("primary-twice"),
        endpoints,
        failures,
        settings,
    }
}

/// The part of a change on the judged endpoints, if it has one and it counts under `fail_on`.
fn selected_change(change: &Change, judged: &[&str], fail_on: FailOn) -> Option<Change> {
    let kept = change.restricted_to(judged)?;
    (fail_on == FailOn::Any || kept.compat == Compat::Breaking).then_some(kept)
}

fn latency(latency: &TargetLatency) -> GateLatency {
    let pick = |summary: &crate::analysis::latency::LatencySummary| Percentiles {
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
    };
    GateLatency {
        primary: pick(&latency.primary),
        secondary: pick(&latency.secondary),
        candidate: pick(&latency.candidate),
    }
}
