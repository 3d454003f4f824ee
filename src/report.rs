//! The read side, between the store and its readers (pages, JSON API, gate, replay's summary): a run found by
//! label, the rules in force merged (file and stored), its counts judged, and minute-by-minute timelines. The
//! store only returns counts; every rate of a report is worked out here and in `analysis::aggregate`. The
//! failing places grouped into changes (`changes`), with the request features that predict each
//! (`predictors`); what is read as stored (runs, samples, exchanges, stored rules) passed on (`stored`).

pub mod change_text;
pub mod changes;
pub mod predictors;
pub mod stored;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::analysis::aggregate::{
    self, EndpointCounts, EndpointReport, PlaceVerdict, Tally, TargetLatency, VerdictSettings,
};
use crate::analysis::diff::DiffKind;
use crate::analysis::latency::Latencies;
use crate::analysis::rules::RuleSet;
use crate::exchange::Target;
use crate::report::changes::{Change, EndpointInput};
use crate::store::queries::TimeRange;
use crate::store::{RunInfo, Store, StoreError};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `latest` was asked for, and the store has no run.
    #[error("the store has no runs yet")]
    NoRuns,
    /// No run has this label.
    #[error("no run labelled `{0}`")]
    NoRun(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run judged: every endpoint, worst first, and the run's totals.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run: RunInfo,
    /// Compared requests.
    pub requests: u64,
    /// Share of compared requests whose candidate differs at a regression path.
    pub diff_rate: f64,
    /// Share of compared requests where primary and secondary differed.
    pub noise_rate: f64,
    /// Requests that carried a redacted value instead of a credential (replayed from a redacted recording);
    /// present when not zero.
    #[serde(skip_serializing_if = "aggregate::is_zero")]
    pub redacted_requests: u64,
    pub endpoints: Vec<EndpointReport>,
    /// The failing places grouped by cause, most failing requests first (predictors only where asked for).
    pub changes: Vec<Change>,
}

impl RunReport {
    /// The totals over `endpoints`, which are sorted worst first (by diff rate, then requests, then name).
    pub fn new(run: RunInfo, mut endpoints: Vec<EndpointReport>, changes: Vec<Change>) -> Self {
        endpoints.sort_by(|a, b| {
            b.diff_rate
                .total_cmp(&a.diff_rate)
                .then_with(|| b.requests.cmp(&a.requests))
                .then_with(|| a.endpoint.cmp(&b.endpoint))
        });
        let requests: u64 = endpoints.iter().map(|e| e.requests).sum();
        let failing: u64 = endpoints.iter().map(|e| e.failing).sum();
        let noisy: u64 = endpoints.iter().map(|e| e.noisy).sum();
        let redacted_requests = endpoints.iter().map(|e| e.redacted_requests).sum();
        Self {
            run,
            requests,
            diff_rate: aggregate::rate(failing, requests),
            noise_rate: aggregate::rate(noisy, requests),
            redacted_requests,
            endpoints,
            changes,
        }
    }
}

/// One endpoint in detail: its places judged, and its report.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointDetail {
    pub endpoint: String,
    /// Compared requests.
    pub requests: u64,
    pub places: Vec<PlaceVerdict>,
    #[serde(skip)]
    pub report: EndpointReport,
}

/// One minute of one endpoint, for charts.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    pub minute: i64,
    pub requests: u64,
    pub diff_rate: f64,
    pub latency: TargetLatency,
}

/// Reads and judges stored runs under the rules in force.
#[derive(Clone)]
pub struct Reports {
    store: Store,
    /// Rules from the rules file; rules stored from the dashboard or the API are read with every report.
    file_rules: Arc<RuleSet>,
    verdicts: VerdictSettings,
}

impl Reports {
    pub fn new(store: Store, file_rules: Arc<RuleSet>, verdicts: VerdictSettings) -> Self {
        Self {
            store,
            file_rules,
            verdicts,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The rules from the rules file.
    pub fn file_rules(&self) -> &RuleSet {
        &self.file_rules
    }

    /// The run with this label, or the most recently active one for `latest`.
    pub async fn run(&self, label: &str) -> Result<RunInfo, ReportError> {
        match self.store.run(label).await? {
            Some(run) => Ok(run),
            None if label == "latest" => Err(ReportError::NoRuns),
            None => Err(ReportError::NoRun(label.to_string())),
        }
    }

    /// The rules in force: the file's, then the stored ones.
    pub async fn rules(&self) -> Result<RuleSet, StoreError> {
        self.store.rule_set(&self.file_rules).await
    }

    /// The run with this label judged over `range`.
    pub async fn report(&self, label: &str, range: TimeRange) -> Result<RunReport, ReportError> {
        let run = self.run(label).await?;
        Ok(self.judge(run, range).await?)
    }

    /// The run with this label judged over `range`, its changes with their predictors.
    pub async fn explained(&self, label: &str, range: TimeRange) -> Result<RunReport, ReportError> {
        let run = self.run(label).await?;
        let (mut report, counts) = self.judge_counts(run, range).await?;
        let wanted: BTreeSet<String> = report
            .changes
            .iter()
            .filter(|change| !change.is_latency())
            .flat_map(|change| change.endpoints.iter().cloned())
            .collect();
        if !wanted.is_empty() {
            // Past the store's cap on sketches read, no predictor is better than one made of part of them.
            if let Some(sketches) = self.store.feature_sketches(report.run.id, &wanted).await? {
                let tallies: BTreeMap<String, Tally> = counts
                    .into_iter()
                    .filter(|(endpoint, _)| wanted.contains(endpoint))
                    .map(|(endpoint, counts)| (endpoint, counts.tally))
                    .collect();
                predictors::fill(&mut report.changes, &tallies, &sketches);
            }
        }
        Ok(report)
    }

    /// A run judged over `range`.
    pub async fn judge(&self, run: RunInfo, range: TimeRange) -> Result<RunReport, StoreError> {
        Ok(self.judge_counts(run, range).await?.0)
    }

    /// A run judged over `range`, with the counts it was judged from.
    async fn judge_counts(
        &self,
        run: RunInfo,
        range: TimeRange,
    ) -> Result<(RunReport, BTreeMap<String, EndpointCounts>), StoreError> {
        let rules = self.rules().await?;
        let counts = self.store.endpoint_counts(run.id, range).await?;
        let endpoints: Vec<EndpointReport> = counts
            .iter()
            .map(|(endpoint, counts)| aggregate::report(endpoint, counts, &self.verdicts, &rules))
            .collect();
        let inputs: Vec<EndpointInput<'_>> = endpoints
            .iter()
            .filter_map(|report| {
                let counts = counts.get(&report.endpoint)?;
                Some(EndpointInput {
                    report,
                    tally: &counts.tally,
                    shapes: &counts.shapes,
                })
            })
            .collect();
        let changes = changes::group(&inputs);
        Ok((RunReport::new(run, endpoints, changes), counts))
    }

    /// One endpoint of a run over `range`: every place judged, and its report.
    pub async fn endpoint(
        &self,
        run: &RunInfo,
        endpoint: &str,
        range: TimeRange,
    ) -> Result<EndpointDetail, StoreError> {
        let rules = self.rules().await?;
        let counts = self.store.endpoint_counts(run.id, range).await?;
        let counts = counts.get(endpoint).cloned().unwrap_or_default();
        Ok(EndpointDetail {
            endpoint: endpoint.to_string(),
            requests: counts.tally.compared,
            places: aggregate::places(endpoint, &counts, &self.verdicts, &rules),
            report: aggregate::report(endpoint, &counts, &self.verdicts, &rules),
        })
    }

    /// One endpoint minute by minute over `range`: requests, diff rate and latency percentiles. Which places
    /// are regressions is decided over the whole range, then counted minute by minute.
    pub async fn timeline(
        &self,
        label: &str,
        endpoint: &str,
        range: TimeRange,
    ) -> Result<Vec<TimelinePoint>, ReportError> {
        let run = self.run(label).await?;
        let rules = self.rules().await?;
        let minutes = self.store.endpoint_minutes(run.id, endpoint, range).await?;
        let whole = self.store.endpoint_counts(run.id, range).await?;
        let judged = whole
            .get(endpoint)
            .map(|counts| aggregate::report(endpoint, counts, &self.verdicts, &rules));
        let regressions: Vec<(String, DiffKind)> = judged
            .map(|report| {
                report
                    .regressions
                    .into_iter()
                    .map(|r| (r.path, r.kind))
                    .collect()
            })
            .unwrap_or_default();
        let places: BTreeSet<(&str, DiffKind)> = regressions
            .iter()
            .map(|(path, kind)| (path.as_str(), *kind))
            .collect();
        Ok(minutes
            .into_iter()
            .map(|(minute, counts)| point(minute, &counts, &places))
            .collect())
    }
}

fn point(
    minute: i64,
    counts: &EndpointCounts,
    regressions: &BTreeSet<(&str, DiffKind)>,
) -> TimelinePoint {
    let failing = aggregate::failing_requests(&counts.tally, regressions);
    TimelinePoint {
        minute,
        requests: counts.tally.compared,
        diff_rate: aggregate::rate(failing, counts.tally.compared),
        latency: latency_of(&counts.latency),
    }
}

fn latency_of(latencies: &Latencies) -> TargetLatency {
    TargetLatency {
        primary: latencies.summary(Target::Primary),
        secondary: latencies.summary(Target::Secondary),
        candidate: latencies.summary(Target::Candidate),
    }
}
