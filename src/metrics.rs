//! The one registry of an instance: each stage's metric set, defined beside the stage that records it, is
//! registered here when the app is built, with scrape-time gauges the wiring adds; rendered as Prometheus text
//! on `/metrics`. Stages are handed only their own set, never this registry.

use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::budget::BudgetMetrics;
use crate::monitor::{GaugesCollector, VerdictGauges};
use crate::notify::NotifyMetrics;
use crate::pipeline::metrics::{AnalysisMetrics, QueueMetrics};
use crate::proxy::metrics::ProxyMetrics;
use crate::store::metrics::StoreMetrics;

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

/// The registry, shared by the app (which adds scrape-time gauges as it builds parts) and `/metrics`.
type SharedRegistry = Arc<Mutex<Registry>>;

/// What `/metrics` is given: the means to render every metric, and nothing to count with.
#[derive(Clone)]
pub struct Exposition {
    registry: SharedRegistry,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition").finish_non_exhaustive()
    }
}

impl Exposition {
    /// The Prometheus text exposition (OpenMetrics flavour) of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(4096);
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// Every metric of one running instance, by the stage that records it. Only the app holds it: it hands each
/// stage its own set (a clone: the sets are handles to shared counters) and `/metrics` an [`Exposition`].
pub struct Metrics {
    /// Behind a lock so that parts built after the metrics (queues, pools) can add scrape-time gauges.
    registry: SharedRegistry,
    pub proxy: ProxyMetrics,
    pub queues: QueueMetrics,
    pub analysis: AnalysisMetrics,
    pub store: StoreMetrics,
    pub budget: BudgetMetrics,
    /// Requests whose new endpoint name was past `--max-endpoints` (the endpoint namer increments it).
    pub endpoints_overflowed: Counter,
    /// Object keys in differences at positions past the caps on map positions followed (the analysis counts).
    pub key_positions_unfollowed: Counter,
    pub notify: NotifyMetrics,
    /// The run's verdict as last worked out from the store (none while it could not be).
    pub verdict: Arc<VerdictGauges>,
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
        let proxy = ProxyMetrics::register(&mut registry);
        registry.register(
            "panics",
            "Panics in this process (each one a bug: see the log); the caller's connection or the one exchange is lost",
            crate::telemetry::PANICS.clone(),
        );
        let queues = QueueMetrics::register(&mut registry);
        let analysis = AnalysisMetrics::register(&mut registry);
        let store = StoreMetrics::register(&mut registry);
        let budget = BudgetMetrics::register(&mut registry);
        let endpoints_overflowed = crate::endpoint::register_overflow_counter(&mut registry);
        let key_positions_unfollowed =
            crate::analysis::keys::register_unfollowed_counter(&mut registry);
        let notify = NotifyMetrics::register(&mut registry);
        let verdict = Arc::new(VerdictGauges::default());
        registry.register_collector(Box::new(GaugesCollector(verdict.clone())));
        Self {
            registry: Arc::new(Mutex::new(registry)),
            proxy,
            queues,
            analysis,
            store,
            budget,
            endpoints_overflowed,
            key_positions_unfollowed,
            notify,
            verdict,
        }
    }

    /// Adds a gauge whose values are read at each scrape, one per label value (`label` empty: no label).
    pub fn register_scrape_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: impl Fn() -> Vec<(&'static str, i64)> + Send + Sync + 'static,
    ) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        registry.register_collector(Box::new(ScrapeGauge {
            name,
            help,
            label,
            read: Box::new(read),
        }));
    }

    /// Adds a gauge read at each scrape for each of `values` (a stage, an upstream), labelled with its name.
    pub fn register_scrape_gauge_per<T: Copy + Send + Sync + 'static, const N: usize>(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: [T; N],
        value_name: fn(T) -> &'static str,
        read: impl Fn(T) -> i64 + Send + Sync + 'static,
    ) {
        self.register_scrape_gauge(name, help, label, move || {
            values
                .iter()
                .map(|value| (value_name(*value), read(*value)))
                .collect()
        });
    }

    /// What `/metrics` renders.
    pub fn exposition(&self) -> Exposition {
        Exposition {
            registry: self.registry.clone(),
        }
    }

    /// The Prometheus text exposition (OpenMetrics flavour) of every metric.
    pub fn render(&self) -> String {
        self.exposition().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{ErrorKind, Target, UpstreamError};
    use crate::proxy::metrics::UnshadowedReason;

    #[test]
    fn counters_and_scrape_gauges_render_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.register_scrape_gauge(
            "shadow_inflight",
            "Shadow requests in flight",
            "target",
            Box::new(|| vec![("candidate", 3)]),
        );
        metrics.proxy.request_received();
        metrics.proxy.unshadowed(UnshadowedReason::Method);
        metrics
            .proxy
            .upstream_error(Target::Candidate, &UpstreamError::Reset("closed".into()));
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
        assert_eq!(metrics.proxy.unshadowed_count(UnshadowedReason::Method), 1);
        assert_eq!(
            metrics
                .proxy
                .upstream_error_count(Target::Candidate, ErrorKind::Reset),
            1
        );
        assert_eq!(
            metrics
                .proxy
                .upstream_error_count(Target::Primary, ErrorKind::Reset),
            0
        );
    }
}
