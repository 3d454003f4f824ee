//! The process's run judged from the store every few seconds (not per scrape): the verdict gauges on
//! `/metrics`, withdrawn while the store cannot answer, and the events notifications are made of, each
//! claimed through the store so that of several replicas one sends it.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio_util::sync::CancellationToken;

use crate::analysis::aggregate::rate;
use crate::clock::now_ms;
use crate::gate::verdict::Verdict;
use crate::gate::{self, GateSettings};
use crate::notify::{self, ChangeNotice, Event, Notifier};
use crate::report::{ReportError, Reports, RunReport};
use crate::runs::RunControl;
use crate::store::queries::TimeRange;

/// How often the verdict is worked out again.
#[derive(Clone, Debug)]
pub struct MonitorSettings {
    pub refresh: Duration,
}

impl MonitorSettings {
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            refresh: Self::DEFAULT_REFRESH,
        }
    }
}

/// How long a refresh waits for the store before the gauges are withdrawn: a database that hangs is no more
/// current than one that refuses.
const STORE_PATIENCE: Duration = Duration::from_secs(5);
/// Endpoints with a gauge of their own at most (the ones with most requests), as for the other endpoint
/// labels.
pub const MAX_ENDPOINT_GAUGES: usize = 500;
/// New changes claimed per refresh at most: a candidate broken in many ways at once is told over a few
/// refreshes, not in one burst.
const CLAIMS_PER_REFRESH: usize = 20;
/// The notification event whose state is the run's verdict last told.
const VERDICT_EVENT: &str = "verdict";
/// Changes remembered as told, so that they are not claimed again; past it the store's claim still keeps each
/// event to one message.
const MAX_TOLD: usize = 10_000;

/// The verdict gauges as of the last refresh.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    run: String,
    passed: bool,
    enough_data: bool,
    diff_rate: f64,
    noise_rate: f64,
    /// (endpoint, diff rate, latency regression), most requests first.
    endpoints: Vec<(String, f64, bool)>,
}

/// The verdict gauges: rendered from the last refresh, nothing while the store could not be read.
#[derive(Default)]
pub struct VerdictGauges {
    snapshot: Mutex<Option<Snapshot>>,
}

impl fmt::Debug for VerdictGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerdictGauges").finish_non_exhaustive()
    }
}

impl VerdictGauges {
    fn set(&self, snapshot: Option<Snapshot>) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}

/// The gauges of a shared [`VerdictGauges`], for the registry.
#[derive(Debug)]
pub struct GaugesCollector(pub Arc<VerdictGauges>);

impl Collector for GaugesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(snapshot) = self
            .0
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let run = [("run", snapshot.run.as_str())];
        fn flag(value: bool) -> f64 {
            if value { 1.0 } else { 0.0 }
        }
        for (name, help, value) in [
            (
                "verdict_passed",
                "1 when the run's verdict (the gate's defaults) passes, 0 when it fails or has too little data",
                flag(snapshot.passed),
            ),
            (
                "verdict_enough_data",
                "1 when the run has the compared requests a verdict needs",
                flag(snapshot.enough_data),
            ),
            (
                "run_diff_rate",
                "Share of the run's compared requests whose candidate differs where noise does not explain it",
                snapshot.diff_rate,
            ),
            (
                "run_noise_rate",
                "Share of the run's compared requests where primary and secondary differed",
                snapshot.noise_rate,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric.encode_family(&run)?)?;
        }
        // One gauge a listed endpoint for each of these, from its diff rate and whether it is slower.
        let per_endpoint = [
            (
                "endpoint_diff_rate",
                "Diff rate per endpoint of the run (the 500 with most requests)",
                (|diff_rate, _| diff_rate) as fn(f64, bool) -> f64,
            ),
            (
                "endpoint_latency_regression",
                "1 when the endpoint's candidate is slower than primary beyond the noise",
                |_, slower| flag(slower),
            ),
        ];
        for (name, help, value) in per_endpoint {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (endpoint, diff_rate, slower) in &snapshot.endpoints {
                let labels = [
                    ("run", snapshot.run.as_str()),
                    ("endpoint", endpoint.as_str()),
                ];
                ConstGauge::new(value(*diff_rate, *slower))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Works the verdict out again and again, until stopped.
pub struct Monitor {
    reports: Reports,
    runs: Arc<RunControl>,
    gauges: Arc<VerdictGauges>,
    notifier: Option<Notifier>,
    settings: MonitorSettings,
    /// Ids of the changes of `told_run` already claimed, here or by another replica.
    told: HashSet<String>,
    told_run: i64,
}

impl Monitor {
    pub fn new(
        reports: Reports,
        runs: Arc<RunControl>,
        gauges: Arc<VerdictGauges>,
        notifier: Option<Notifier>,
        settings: MonitorSettings,
    ) -> Self {
        Self {
            reports,
            runs,
            gauges,
            notifier,
            settings,
            told: HashSet::new(),
            told_run: 0,
        }
    }

    /// Refreshes until `stop`, then tells the run's verdict as it stands (with notifications).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    // A store that hangs part-way through a refresh is no more current than one that refuses.
                    if tokio::time::timeout(STORE_PATIENCE, self.refresh()).await.is_err() {
                        tracing::debug!("verdict gauges withdrawn: the store did not answer in time");
                        self.gauges.set(None);
                    }
                }
            }
        }
        if let Some(notifier) = &self.notifier {
            let label = self.runs.current().label;
            let defaults = GateSettings::default();
            let judged = gate::verdict(&self.reports, &label, &defaults);
            match tokio::time::timeout(STORE_PATIENCE, judged).await {
                Ok(Ok(verdict)) => notifier.tell(Event::Summary { verdict }),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "no summary to send: the store did not answer")
                }
                Err(_) => tracing::warn!("no summary to send: the store did not answer in time"),
            }
        }
    }

    /// Judges the run being written now, sets the gauges and claims what is new.
    pub async fn refresh(&mut self) {
        let label = self.runs.current().label;
        let settings = GateSettings::default();
        let report = match self.reports.report(&label, TimeRange::all()).await {
            Ok(report) => report,
            Err(ReportError::Store(error)) => {
                tracing::debug!(%error, "verdict gauges withdrawn: the store did not answer");
                self.gauges.set(None);
                return;
            }
            Err(ReportError::NoRun(_) | ReportError::NoRuns) => {
                self.gauges.set(None);
                return;
            }
        };
        let judged = gate::judge(&report, &settings);
        let verdict = Verdict::of(&judged);
        self.gauges.set(Some(snapshot(&report, &verdict)));
        if self.notifier.is_some() {
            self.claim(&report, &verdict).await;
        }
    }

    /// Sends the events this refresh found that no replica sent before.
    async fn claim(&mut self, report: &RunReport, verdict: &Verdict) {
        let Some(notifier) = self.notifier.clone() else {
            return;
        };
        let store = self.reports.store().clone();
        let run_id = report.run.id;
        if self.told_run != run_id {
            self.told.clear();
            self.told_run = run_id;
        }
        let now = notify::state(verdict);
        match store.told_state(run_id, VERDICT_EVENT).await {
            Ok(before) if before.as_deref() != Some(now) => {
                let swapped = store
                    .swap_told_state(run_id, VERDICT_EVENT, before.as_deref(), now, now_ms())
                    .await;
                match swapped {
                    // The first verdict of a run is where it starts, not a flip.
                    Ok(true) => {
                        if let Some(before) = before {
                            notifier.tell(Event::VerdictChanged {
                                before,
                                now: now.to_string(),
                                verdict: verdict.clone(),
                            });
                        }
                    }
                    Ok(false) => {}
                    Err(error) => tracing::debug!(%error, "could not claim a verdict change"),
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "could not read the told verdict"),
        }
        let mut claimed = 0;
        for change in &report.changes {
            if claimed == CLAIMS_PER_REFRESH {
                break;
            }
            if self.told.contains(&change.id) {
                continue;
            }
            claimed += 1;
            let event = format!("change {}", change.id);
            match store.claim_event(run_id, &event, now_ms()).await {
                Ok(first) => {
                    if first {
                        notifier.tell(Event::Change {
                            run: verdict.run.clone(),
                            change: ChangeNotice::of(change),
                        });
                    }
                    if self.told.len() < MAX_TOLD {
                        self.told.insert(change.id.clone());
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "could not claim a change event");
                    return;
                }
            }
        }
    }
}

fn snapshot(report: &RunReport, verdict: &Verdict) -> Snapshot {
    let mut endpoints: Vec<_> = report.endpoints.iter().collect();
    endpoints.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
    endpoints.truncate(MAX_ENDPOINT_GAUGES);
    Snapshot {
        run: report.run.label.clone(),
        passed: verdict.passed,
        enough_data: verdict.enough_data,
        diff_rate: verdict.diff_rate,
        noise_rate: report.noise_rate,
        endpoints: endpoints
            .into_iter()
            .map(|e| {
                (
                    e.endpoint.clone(),
                    rate(e.failing, e.requests),
                    e.latency_regression,
                )
            })
            .collect(),
    }
}
