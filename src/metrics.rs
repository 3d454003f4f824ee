//! The process's counters and gauges, kept per instance and rendered as Prometheus text on `/metrics`.

use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::exchange::{Target, UpstreamError};

/// Why a caller's request was not shadowed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnshadowedReason {
    /// Its method is not in `--shadow-methods` (and `--allow-side-effects` is off).
    Method,
    /// `--sample-rate` left it out.
    SampledOut,
    /// Its body is larger than `--max-body`.
    BodyTooLarge,
    /// Its body could not be read from the caller.
    BodyUnreadable,
    /// A protocol upgrade (WebSocket): tunnelled to primary alone.
    Upgrade,
    /// Its URI is too long to forward with an upstream's path prefix; answered 414.
    UriTooLong,
    /// Holding it for the shadows would have gone over `--memory-budget`.
    MemoryBudget,
}

impl UnshadowedReason {
    pub const ALL: [UnshadowedReason; 7] = [
        UnshadowedReason::Method,
        UnshadowedReason::SampledOut,
        UnshadowedReason::BodyTooLarge,
        UnshadowedReason::BodyUnreadable,
        UnshadowedReason::Upgrade,
        UnshadowedReason::UriTooLong,
        UnshadowedReason::MemoryBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnshadowedReason::Method => "method",
            UnshadowedReason::SampledOut => "sampled_out",
            UnshadowedReason::BodyTooLarge => "body_too_large",
            UnshadowedReason::BodyUnreadable => "body_unreadable",
            UnshadowedReason::Upgrade => "upgrade",
            UnshadowedReason::UriTooLong => "uri_too_long",
            UnshadowedReason::MemoryBudget => "memory_budget",
        }
    }
}

/// The bounded queues between the stages: proxy to analysis, analysis to storage.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Completed exchanges waiting for analysis.
    Exchanges,
    /// Analysed exchanges waiting to be stored.
    Analyses,
    /// Shadowed requests waiting to be written to the `--record` file.
    Recordings,
}

impl Queue {
    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Exchanges => "exchanges",
            Queue::Analyses => "analyses",
            Queue::Recordings => "recordings",
        }
    }
}

/// Why an item was dropped from a queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue was full.
    QueueFull,
    /// The consuming stage had already shut down.
    Closed,
    /// The consuming stage could not write the item (a full disk, say).
    WriteFailed,
    /// Holding it would have gone over `--memory-budget`.
    MemoryBudget,
    /// Still being assembled when shutdown's wait for background requests ran out.
    Shutdown,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Closed => "closed",
            DropReason::WriteFailed => "write_failed",
            DropReason::MemoryBudget => "memory_budget",
            DropReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetKindLabels {
    target: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabel {
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueReasonLabels {
    queue: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatReasonLabels {
    what: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReasonLabels {
    target: &'static str,
    reason: &'static str,
}

/// A value read at scrape time (a queue depth, permits in use), rendered as a gauge per label.
pub type GaugeReader = Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>;

struct ScrapeGauge {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    read: GaugeReader,
}

impl fmt::Debug for ScrapeGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeGauge")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for ScrapeGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let values = (self.read)();
        let mut metric = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        if self.label.is_empty() {
            let value = values.first().map_or(0, |(_, value)| *value);
            return ConstGauge::new(value).encode(metric);
        }
        for (value_label, value) in values {
            let label = [(self.label, value_label)];
            ConstGauge::new(value).encode(metric.encode_family(&label)?)?;
        }
        Ok(())
    }
}

/// Every counter of one running instance. Counters the proxy touches per request are resolved once here, so
/// the caller's path increments an atomic and never looks up a label set.
pub struct Metrics {
    /// Behind a lock so that parts built after the metrics (queues, pools) can add scrape-time gauges.
    registry: Mutex<Registry>,
    requests: Counter,
    unshadowed: [Counter; UnshadowedReason::ALL.len()],
    callers_rejected: Family<ReasonLabel, Counter>,
    shed: [Counter; 3],
    upstream_errors: Family<TargetKindLabels, Counter>,
    bodies_too_large: Family<SideLabel, Counter>,
    queued: Family<QueueLabel, Counter>,
    dropped: Family<QueueReasonLabels, Counter>,
    analysed: Family<ResultLabel, Counter>,
    differences: Family<SideLabel, Counter>,
    bodies_not_compared: Family<TargetReasonLabels, Counter>,
    analysis_failures: Counter,
    store_writes: Family<ResultLabel, Counter>,
    store_dropped: Family<WhatReasonLabels, Counter>,
    store_rejected: Family<TableLabel, Counter>,
    store_pending: Gauge,
    store_up: Gauge,
    memory_shed: Family<StageLabel, Counter>,
    endpoints_overflowed: Counter,
    endpoint_requests: Family<EndpointLabel, Counter>,
    /// Endpoints given a label of their own; past [`MAX_ENDPOINT_LABELS`] they share `other`.
    endpoint_labels: Mutex<std::collections::HashSet<String>>,
    latency: Family<TargetLabel, Histogram, fn() -> Histogram>,
}

/// Distinct endpoint label values on /metrics, so that a flood of odd paths cannot bloat every scrape.
const MAX_ENDPOINT_LABELS: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shadowdiff");

        let requests = Counter::default();
        registry.register(
            "requests",
            "Caller requests received by the proxy",
            requests.clone(),
        );

        let unshadowed_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "unshadowed_requests",
            "Caller requests sent to primary only, by reason",
            unshadowed_family.clone(),
        );
        let unshadowed = UnshadowedReason::ALL.map(|reason| {
            unshadowed_family
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .clone()
        });

        registry.register(
            "panics",
            "Panics in this process (each one a bug: see the log); the caller's connection or the one exchange is lost",
            crate::telemetry::PANICS.clone(),
        );

        let callers_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "callers_rejected",
            "Caller connections answered with an error before any request reached the proxy (malformed, \
             header_too_large, header_timeout)",
            callers_rejected.clone(),
        );

        let shed_family = Family::<TargetLabel, Counter>::default();
        registry.register(
            "shadow_shed",
            "Shadow requests not sent because the upstream had --max-shadow-inflight in flight",
            shed_family.clone(),
        );
        let shed = Target::ALL.map(|target| {
            shed_family
                .get_or_create(&TargetLabel {
                    target: target.as_str(),
                })
                .clone()
        });

        let upstream_errors = Family::<TargetKindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests without a usable response, by upstream and kind",
            upstream_errors.clone(),
        );

        let bodies_too_large = Family::<SideLabel, Counter>::default();
        registry.register(
            "bodies_too_large",
            "Bodies larger than --max-body, forwarded but not kept (side: request or an upstream)",
            bodies_too_large.clone(),
        );

        let queued = Family::<QueueLabel, Counter>::default();
        registry.register(
            "queued",
            "Items handed to the next stage: exchanges to analysis, analyses to storage",
            queued.clone(),
        );

        let dropped = Family::<QueueReasonLabels, Counter>::default();
        registry.register(
            "dropped",
            "Items dropped because the next stage's queue was full (or closed), by queue and reason",
            dropped.clone(),
        );

        let analysed = Family::<ResultLabel, Counter>::default();
        registry.register(
            "exchanges_analysed",
            "Exchanges analysed: compared, or skipped with the reason",
            analysed.clone(),
        );

        let differences = Family::<SideLabel, Counter>::default();
        registry.register(
            "differences",
            "Differences found: primary vs candidate (candidate) and primary vs secondary (noise)",
            differences.clone(),
        );

        let bodies_not_compared = Family::<TargetReasonLabels, Counter>::default();
        registry.register(
            "bodies_not_compared",
            "Response bodies not compared (status and headers were), by upstream and reason",
            bodies_not_compared.clone(),
        );

        let analysis_failures = Counter::default();
        registry.register(
            "analysis_failures",
            "Exchanges whose analysis failed unexpectedly (a bug: see the log)",
            analysis_failures.clone(),
        );

        let store_writes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "store_writes",
            "Batches written to the store (result: ok, or error when the database could not be written)",
            store_writes.clone(),
        );
        let store_dropped = Family::<WhatReasonLabels, Counter>::default();
        registry.register(
            "store_dropped",
            "Exchanges (their counts) or samples not stored, by reason: buffer_full (database away too long), \
             memory_budget, run_deleted (the run was deleted while being written), refused (by the database), \
             shutdown (database away at shutdown), failed",
            store_dropped.clone(),
        );
        let store_rejected = Family::<TableLabel, Counter>::default();
        registry.register(
            "store_rejected_rows",
            "Rows the database refused for good (left out of their batch, which was written without them)",
            store_rejected.clone(),
        );
        let store_up = Gauge::default();
        store_up.set(1);
        registry.register(
            "store_up",
            "1 when the last write (or heartbeat) to the store succeeded, 0 while the store cannot be written",
            store_up.clone(),
        );
        let memory_shed = Family::<StageLabel, Counter>::default();
        registry.register(
            "memory_shed",
            "Shadow work shed because it would have gone over --memory-budget, by the stage that refused it",
            memory_shed.clone(),
        );
        let endpoints_overflowed = Counter::default();
        registry.register(
            "endpoints_overflowed",
            "Requests whose new endpoint name was past --max-endpoints and recorded as `METHOD {other}`",
            endpoints_overflowed.clone(),
        );
        let store_pending = Gauge::default();
        registry.register(
            "store_pending_rows",
            "Rows waiting to be written to the store",
            store_pending.clone(),
        );

        let endpoint_requests = Family::<EndpointLabel, Counter>::default();
        registry.register(
            "endpoint_requests",
            "Analysed exchanges per endpoint (at most 500 endpoints by name; the rest as `other`)",
            endpoint_requests.clone(),
        );
        let latency = Family::<TargetLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "upstream_latency",
            "Time to the response head per upstream (timeouts at their full wait)",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );

        Self {
            registry: Mutex::new(registry),
            requests,
            unshadowed,
            callers_rejected,
            shed,
            upstream_errors,
            bodies_too_large,
            queued,
            dropped,
            analysed,
            differences,
            bodies_not_compared,
            analysis_failures,
            store_writes,
            store_dropped,
            store_rejected,
            store_pending,
            store_up,
            memory_shed,
            endpoints_overflowed,
            endpoint_requests,
            endpoint_labels: Mutex::new(std::collections::HashSet::new()),
            latency,
        }
    }

    /// Adds a gauge whose values are read at each scrape, one per label value (`label` empty: no label).
    pub fn register_scrape_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: GaugeReader,
    ) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        registry.register_collector(Box::new(ScrapeGauge {
            name,
            help,
            label,
            read,
        }));
    }

    /// The Prometheus text exposition (OpenMetrics flavour) of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    pub fn request_received(&self) {
        self.requests.inc();
    }

    pub fn unshadowed(&self, reason: UnshadowedReason) {
        self.unshadowed[reason as usize].inc();
    }

    /// A caller's connection that HTTP parsing turned away (answered 400, 431 or 505, or timed out).
    pub fn caller_rejected(&self, reason: &'static str) {
        self.callers_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn shadow_shed(&self, target: Target) {
        self.shed[target.index()].inc();
    }

    pub fn upstream_error(&self, target: Target, error: &UpstreamError) {
        self.upstream_errors
            .get_or_create(&TargetKindLabels {
                target: target.as_str(),
                kind: error.kind().as_str(),
            })
            .inc();
    }

    pub fn body_too_large(&self, side: &'static str) {
        self.bodies_too_large
            .get_or_create(&SideLabel { side })
            .inc();
    }

    pub fn queued(&self, queue: Queue) {
        self.queued
            .get_or_create(&QueueLabel {
                queue: queue.as_str(),
            })
            .inc();
    }

    pub fn dropped(&self, queue: Queue, reason: DropReason) {
        self.dropped
            .get_or_create(&QueueReasonLabels {
                queue: queue.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts one analysed exchange: its result, its differences and the bodies it could not compare.
    pub fn analysed(&self, analysis: &crate::analysis::Analysis) {
        let result = match &analysis.result {
            Ok(_) => "compared",
            Err(reason) => reason.as_str(),
        };
        self.analysed.get_or_create(&ResultLabel { result }).inc();
        let endpoint = {
            let mut labels = self
                .endpoint_labels
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let known = labels.contains(&analysis.exchange.endpoint);
            if known || labels.len() < MAX_ENDPOINT_LABELS {
                if !known {
                    labels.insert(analysis.exchange.endpoint.clone());
                }
                analysis.exchange.endpoint.clone()
            } else {
                "other".to_string()
            }
        };
        self.endpoint_requests
            .get_or_create(&EndpointLabel { endpoint })
            .inc();
        for target in Target::ALL {
            if let Some(elapsed) =
                crate::analysis::aggregate::latency_sample(analysis.exchange.outcome(target))
            {
                self.latency
                    .get_or_create(&TargetLabel {
                        target: target.as_str(),
                    })
                    .observe(elapsed.as_secs_f64());
            }
        }
        if let Ok(compared) = &analysis.result {
            self.differences
                .get_or_create(&SideLabel { side: "candidate" })
                .inc_by(compared.candidate.len() as u64);
            self.differences
                .get_or_create(&SideLabel { side: "noise" })
                .inc_by(compared.noise.len() as u64);
            for (target, reason) in &compared.body_skipped {
                self.bodies_not_compared
                    .get_or_create(&TargetReasonLabels {
                        target: target.as_str(),
                        reason: reason.as_str(),
                    })
                    .inc();
            }
        }
    }

    pub fn analysis_failed(&self) {
        self.analysis_failures.inc();
    }

    pub fn store_write(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.store_writes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn store_dropped(&self, what: &'static str, reason: &'static str) {
        self.store_dropped_many(what, reason, 1);
    }

    pub fn store_dropped_many(&self, what: &'static str, reason: &'static str, count: u64) {
        self.store_dropped
            .get_or_create(&WhatReasonLabels { what, reason })
            .inc_by(count);
    }

    pub fn store_rejected(&self, table: &'static str, rows: u64) {
        self.store_rejected
            .get_or_create(&TableLabel { table })
            .inc_by(rows);
    }

    pub fn set_store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Shadow work one stage shed for the memory budget.
    pub fn memory_shed(&self, stage: crate::budget::Stage) {
        self.memory_shed
            .get_or_create(&StageLabel {
                stage: stage.as_str(),
            })
            .inc();
    }

    /// The counter the endpoint namer increments for names past the cap.
    pub fn endpoints_overflowed(&self) -> Counter {
        self.endpoints_overflowed.clone()
    }

    pub fn store_pending(&self, rows: usize) {
        self.store_pending.set(rows as i64);
    }

    // Readers, for tests and for the report.

    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    pub fn unshadowed_count(&self, reason: UnshadowedReason) -> u64 {
        self.unshadowed[reason as usize].get()
    }

    pub fn callers_rejected_count(&self, reason: &'static str) -> u64 {
        self.callers_rejected
            .get(&ReasonLabel { reason })
            .map_or(0, |counter| counter.get())
    }

    pub fn shed_count(&self, target: Target) -> u64 {
        self.shed[target.index()].get()
    }

    pub fn upstream_error_count(&self, target: Target, kind: &'static str) -> u64 {
        self.upstream_errors
            .get(&TargetKindLabels {
                target: target.as_str(),
                kind,
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn too_large_count(&self, side: &'static str) -> u64 {
        self.bodies_too_large
            .get(&SideLabel { side })
            .map_or(0, |counter| counter.get())
    }

    pub fn queued_count(&self, queue: Queue) -> u64 {
        self.queued
            .get(&QueueLabel {
                queue: queue.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn dropped_count(&self, queue: Queue, reason: DropReason) -> u64 {
        self.dropped
            .get(&QueueReasonLabels {
                queue: queue.as_str(),
                reason: reason.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn analysed_count(&self, result: &'static str) -> u64 {
        self.analysed
            .get(&ResultLabel { result })
            .map_or(0, |counter| counter.get())
    }

    pub fn analysis_failures(&self) -> u64 {
        self.analysis_failures.get()
    }

    pub fn store_writes_count(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "error" };
        self.store_writes
            .get(&ResultLabel { result })
            .map_or(0, |counter| counter.get())
    }

    /// Dropped `what`s, for every reason.
    pub fn store_dropped_count(&self, what: &'static str) -> u64 {
        const REASONS: [&str; 7] = [
            "buffer_full",
            "memory_budget",
            "run_deleted",
            "refused",
            "shutdown",
            "failed",
            "closed",
        ];
        REASONS
            .iter()
            .filter_map(|reason| self.store_dropped.get(&WhatReasonLabels { what, reason }))
            .map(|counter| counter.get())
            .sum()
    }

    /// Dropped `what`s for one reason.
    pub fn store_dropped_reason_count(&self, what: &'static str, reason: &'static str) -> u64 {
        self.store_dropped
            .get(&WhatReasonLabels { what, reason })
            .map_or(0, |counter| counter.get())
    }

    pub fn store_rejected_count(&self, table: &'static str) -> u64 {
        self.store_rejected
            .get(&TableLabel { table })
            .map_or(0, |counter| counter.get())
    }

    pub fn memory_shed_count(&self, stage: crate::budget::Stage) -> u64 {
        self.memory_shed
            .get(&StageLabel {
                stage: stage.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn endpoints_overflowed_count(&self) -> u64 {
        self.endpoints_overflowed.get()
    }

    pub fn store_pending_rows(&self) -> i64 {
        self.store_pending.get()
    }
}

/// Shared handle to the metrics of one instance.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_scrape_gauges_render_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.register_scrape_gauge(
            "shadow_inflight",
            "Shadow requests in flight",
            "target",
            Box::new(|| vec![("candidate", 3)]),
        );
        metrics.request_received();
        metrics.unshadowed(UnshadowedReason::Method);
        metrics.upstream_error(Target::Candidate, &UpstreamError::Reset("closed".into()));
        let text = metrics.render();
        assert!(text.contains("shadowdiff_requests_total 1"), "{text}");
        assert!(
            text.contains("shadowdiff_unshadowed_requests_total{reason=\"method\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "shadowdiff_upstream_errors_total{target=\"candidate\",kind=\"reset\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("shadowdiff_shadow_inflight{target=\"candidate\"} 3"),
            "{text}"
        );
        assert_eq!(metrics.unshadowed_count(UnshadowedReason::Method), 1);
        assert_eq!(metrics.upstream_error_count(Target::Candidate, "reset"), 1);
        assert_eq!(metrics.upstream_error_count(Target::Primary, "reset"), 0);
    }
}
