//! What the stages between the proxy and the store count: items handed on and dropped per queue, and each
//! analysed exchange (its result, differences, bodies not compared, endpoint and latency, recorded once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::analysis::{Analysis, SkipReason};
use crate::exchange::Target;
use crate::instruments::{family_from_zero, registered};

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
    pub const ALL: [Queue; 3] = [Queue::Exchanges, Queue::Analyses, Queue::Recordings];

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
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Closed,
        DropReason::WriteFailed,
        DropReason::MemoryBudget,
        DropReason::Shutdown,
    ];

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

/// What became of an analysed exchange: compared, or skipped for a reason.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Analysed {
    Compared,
    Skipped(SkipReason),
}

impl Analysed {
    pub fn of(analysis: &Analysis) -> Self {
        match &analysis.result {
            Ok(_) => Analysed::Compared,
            Err(reason) => Analysed::Skipped(*reason),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Analysed::Compared => "compared",
            Analysed::Skipped(reason) => reason.as_str(),
        }
    }
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

/// Items handed on and dropped, per queue. A clone counts into the same series.
#[derive(Clone)]
pub struct QueueMetrics {
    queued: Family<QueueLabel, Counter>,
    dropped: Family<QueueReasonLabels, Counter>,
}

impl QueueMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let queued = registered(
            registry,
            "queued",
            "Items handed to the next stage: exchanges to analysis, analyses to storage",
            Family::default(),
        );
        let dropped = family_from_zero(
            registry,
            "dropped",
            "Items dropped because the next stage's queue was full (or closed), by queue and reason",
            Queue::ALL.into_iter().flat_map(|queue| {
                DropReason::ALL.map(|reason| QueueReasonLabels {
                    queue: queue.as_str(),
                    reason: reason.as_str(),
                })
            }),
        );
        Self { queued, dropped }
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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabel {
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReasonLabels {
    target: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

/// Distinct endpoint label values on /metrics, so that a flood of odd paths cannot bloat every scrape.
const MAX_ENDPOINT_LABELS: usize = 500;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The analysis stage's counters. A clone counts into the same series (and shares the endpoints labelled).
#[derive(Clone)]
pub struct AnalysisMetrics {
    analysed: Family<ResultLabel, Counter>,
    differences: Family<SideLabel, Counter>,
    bodies_not_compared: Family<TargetReasonLabels, Counter>,
    failures: Counter,
    endpoint_requests: Family<EndpointLabel, Counter>,
    /// Endpoints given a label of their own; past [`MAX_ENDPOINT_LABELS`] they share `other`.
    endpoint_labels: Arc<Mutex<HashSet<String>>>,
    latency: Family<TargetLabel, Histogram, fn() -> Histogram>,
}

impl AnalysisMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let analysed = registered(
            registry,
            "exchanges_analysed",
            "Exchanges analysed: compared, or skipped with the reason",
            Family::default(),
        );
        let differences = registered(
            registry,
            "differences",
            "Differences found: primary vs candidate (candidate) and primary vs secondary (noise)",
            Family::default(),
        );
        let bodies_not_compared = registered(
            registry,
            "bodies_not_compared",
            "Response bodies not compared (status and headers were), by upstream and reason",
            Family::default(),
        );
        let failures = registered(
            registry,
            "analysis_failures",
            "Exchanges whose analysis failed unexpectedly (a bug: see the log)",
            Counter::default(),
        );
        let endpoint_requests = registered(
            registry,
            "endpoint_requests",
            "Analysed exchanges per endpoint (at most 500 endpoints by name; the rest as `other`)",
            Family::default(),
        );
        let latency = Family::<TargetLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "upstream_latency",
            "Time to the response head per upstream (timeouts at their full wait)",
            Unit::Seconds,
            latency.clone(),
        );
        Self {
            analysed,
            differences,
            bodies_not_compared,
            failures,
            endpoint_requests,
            endpoint_labels: Arc::default(),
            latency,
        }
    }

    /// Counts one analysed exchange: its result, its endpoint, its latency samples, its differences and the
    /// bodies it could not compare.
    pub fn analysed(&self, analysis: &Analysis) {
        self.analysed
            .get_or_create(&ResultLabel {
                result: Analysed::of(analysis).as_str(),
            })
            .inc();
        let endpoint = self.endpoint_label(&analysis.exchange.endpoint);
        self.endpoint_requests
            .get_or_create(&EndpointLabel { endpoint })
            .inc();
        for target in Target::ALL {
            if let Some(elapsed) = analysis.latency(target) {
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

    /// The endpoint's own label while fewer than [`MAX_ENDPOINT_LABELS`] are in use, else `other`.
    fn endpoint_label(&self, endpoint: &str) -> String {
        let mut labels = self
            .endpoint_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if labels.contains(endpoint) {
            return endpoint.to_string();
        }
        if labels.len() < MAX_ENDPOINT_LABELS {
            labels.insert(endpoint.to_string());
            return endpoint.to_string();
        }
        "other".to_string()
    }

    pub fn failed(&self) {
        self.failures.inc();
    }

    pub fn analysed_count(&self, result: Analysed) -> u64 {
        self.analysed
            .get(&ResultLabel {
                result: result.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn failures(&self) -> u64 {
        self.failures.get()
    }
}
