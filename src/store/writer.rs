//! The background writer: folds analysed exchanges into per-minute counter deltas, this writer's latency
//! histograms and a few samples per place, and writes them in one transaction every flush interval (or when
//! the batch is large). When the database is away it keeps folding into a bounded buffer, retries with
//! backoff, drops (and counts) what exceeds the bound, and resumes by itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::analysis::Analysis;
use crate::analysis::aggregate::{EndpointCounts, latency_sample};
use crate::analysis::latency::Latencies;
use crate::exchange::Target;
use crate::metrics::Metrics;
use crate::pipeline::Draining;
use crate::redact::Redactor;
use crate::store::sample::{SampleDocument, started_at_ms};
use crate::store::{FlushBatch, SampleRow, Store, now_ms};

/// How the writer batches and how much it keeps while the database is away.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub run_id: i64,
    /// Tells this process's histograms apart from other replicas' (each replaces only its own).
    pub writer_id: String,
    pub flush_interval: Duration,
    /// Flush as soon as this many rows are waiting.
    pub batch_rows: usize,
    /// Most rows kept waiting while the database cannot be written; exchanges past it are dropped.
    pub max_pending_rows: usize,
    /// Samples kept per (endpoint, place), in this process.
    pub samples_per_path: usize,
    /// Largest decoded body in a sample.
    pub max_decoded_body: usize,
    /// Delete what is older than this, checked every few minutes.
    pub retention: Option<Duration>,
}

/// Most samples waiting for a flush; past it, new samples are dropped (their exchanges still count).
const MAX_PENDING_SAMPLES: usize = 1_000;
/// Minute histograms are kept (and rewritten whole) this long, which covers any exchange still in flight.
const HISTOGRAM_MINUTES_KEPT: i64 = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A database restart takes seconds: retrying every few seconds notices its return soon, at no real cost.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(300);

/// The rows one endpoint-minute of counts is written as.
fn rows_of(counts: &EndpointCounts) -> usize {
    3 + counts.skipped.len()
        + counts.errors.len()
        + counts.body_skipped.len()
        + counts.paths.len()
        + counts.signatures.len()
}

pub struct Writer {
    store: Store,
    config: WriterConfig,
    redactor: Redactor,
    metrics: Arc<Metrics>,
    /// Counts since the last successful flush, per (endpoint, minute).
    pending: HashMap<(String, i64), EndpointCounts>,
    /// Rows those counts make (kept up to date, so that checking the bound costs nothing).
    pending_counts: usize,
    /// This writer's histograms per (endpoint, minute), minute -1 for the whole run.
    histograms: HashMap<(String, i64), Latencies>,
    dirty_histograms: HashSet<(String, i64)>,
    samples: Vec<SampleRow>,
    sampled: HashMap<(String, String, String), usize>,
    /// When writing failed, the earliest next attempt.
    retry_at: Option<Instant>,
    backoff: Duration,
    last_retention: Instant,
}

impl Writer {
    pub fn new(
        store: Store,
        config: WriterConfig,
        redactor: Redactor,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            config,
            redactor,
            metrics,
            pending: HashMap::new(),
            pending_counts: 0,
            histograms: HashMap::new(),
            dirty_histograms: HashSet::new(),
            samples: Vec::new(),
            sampled: HashMap::new(),
            retry_at: None,
            backoff: FIRST_BACKOFF,
            last_retention: Instant::now(),
        }
    }

    /// Rows waiting to be written.
    fn pending_rows(&self) -> usize {
        self.pending_counts + self.dirty_histograms.len() * Target::ALL.len() + self.samples.len()
    }

    /// Folds one analysed exchange into what waits to be written.
    pub fn add(&mut self, analysis: Analysis) {
        if self.pending_rows() >= self.config.max_pending_rows {
            self.metrics.store_dropped("exchange");
            return;
        }
        let endpoint = analysis.exchange.endpoint.clone();
        let minute = started_at_ms(&analysis.exchange).div_euclid(60_000);
        let counts = self.pending.entry((endpoint.clone(), minute)).or_default();
        let before = rows_of(counts);
        counts.record(&analysis);
        self.pending_counts += rows_of(counts) - before;
        let current = now_ms().div_euclid(60_000);
        for bucket in [minute, -1] {
            // A straggler for a minute already let go is counted in the whole run only.
            if bucket >= 0 && bucket < current - HISTOGRAM_MINUTES_KEPT {
                continue;
            }
            let latencies = self
                .histograms
                .entry((endpoint.clone(), bucket))
                .or_default();
            for target in Target::ALL {
                if let Some(elapsed) = latency_sample(analysis.exchange.outcome(target)) {
                    latencies.record(target, elapsed);
                }
            }
            self.dirty_histograms.insert((endpoint.clone(), bucket));
        }
        self.maybe_sample(&analysis);
        self.metrics.store_pending(self.pending_rows());
    }

    /// Keeps the exchange as a sample if one of its places has fewer than `--samples-per-path` samples.
    fn maybe_sample(&mut self, analysis: &Analysis) {
        let Some(compared) = analysis.compared() else {
            return;
        };
        let endpoint = &analysis.exchange.endpoint;
        let mut places: Vec<(String, String)> = compared
            .candidate_keys()
            .keys()
            .chain(compared.noise_keys().iter())
            .map(|(path, kind)| (path.to_string(), kind.as_str().to_string()))
            .collect();
        places.sort();
        places.dedup();
        if places.is_empty() {
            // An exchange without differences: a few per endpoint, to show what "the same" looks like.
            places.push((String::new(), String::new()));
        }
        let limit = self.config.samples_per_path;
        places.retain(|(path, kind)| {
            self.sampled
                .get(&(endpoint.clone(), path.clone(), kind.clone()))
                .is_none_or(|count| *count < limit)
        });
        if places.is_empty() {
            return;
        }
        if self.samples.len() >= MAX_PENDING_SAMPLES {
            self.metrics.store_dropped("sample");
            return;
        }
        for (path, kind) in &places {
            *self
                .sampled
                .entry((endpoint.clone(), path.clone(), kind.clone()))
                .or_default() += 1;
        }
        let document =
            SampleDocument::build(analysis, &self.redactor, self.config.max_decoded_body);
        self.samples.push(SampleRow {
            id: document.id.clone(),
            endpoint: endpoint.clone(),
            created_at_ms: document.started_at_ms,
            document: serde_json::to_string(&document).unwrap_or_default(),
            places,
        });
    }

    /// Writes what waits, unless the database failed recently and its backoff has not passed.
    pub async fn flush(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let _ = self.flush_now().await;
    }

    /// Writes what waits now; on failure keeps it for the next attempt.
    pub async fn flush_now(&mut self) -> Result<(), crate::store::StoreError> {
        let batch = FlushBatch {
            counts: self
                .pending
                .iter()
                .map(|((endpoint, minute), counts)| (endpoint.clone(), *minute, counts.clone()))
                .collect(),
            histograms: self
                .dirty_histograms
                .iter()
                .filter_map(|key| {
                    self.histograms
                        .get(key)
                        .map(|h| (key.0.clone(), key.1, h.clone()))
                })
                .collect(),
            samples: self.samples.clone(),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        match self
            .store
            .write_batch(self.config.run_id, &self.config.writer_id, &batch, now)
            .await
        {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    tracing::info!("store reachable again; buffered counts written");
                }
                self.backoff = FIRST_BACKOFF;
                self.pending.clear();
                self.pending_counts = 0;
                self.dirty_histograms.clear();
                self.samples.clear();
                let oldest = now.div_euclid(60_000) - HISTOGRAM_MINUTES_KEPT;
                self.histograms
                    .retain(|(_, minute), _| *minute < 0 || *minute >= oldest);
                self.metrics.store_write(true);
                self.metrics.store_pending(0);
                Ok(())
            }
            Err(error) => {
                if self.retry_at.is_none() {
                    tracing::warn!(%error, "store write failed; buffering and retrying with backoff");
                } else {
                    tracing::debug!(%error, "store write failed again");
                }
                self.metrics.store_write(false);
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(error)
            }
        }
    }

    async fn apply_retention(&mut self) {
        let Some(retention) = self.config.retention else {
            return;
        };
        if self.last_retention.elapsed() < RETENTION_EVERY {
            return;
        }
        self.last_retention = Instant::now();
        let cutoff = now_ms() - retention.as_millis() as i64;
        match self.store.delete_older_than(cutoff).await {
            Ok(deleted) if deleted > 0 => tracing::info!(deleted, "retention removed old rows"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention could not delete old rows"),
        }
    }

    /// Writes until `stop` is cancelled, then writes what is left (trying a few times) and returns.
    pub async fn run(mut self, rx: mpsc::Receiver<Analysis>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut analyses = Draining::new(rx, stop);
        loop {
            tokio::select! {
                biased;
                received = analyses.next() => match received {
                    Some(analysis) => {
                        self.add(analysis);
                        if self.pending_rows() >= self.config.batch_rows {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.flush().await;
                    self.apply_retention().await;
                }
            }
        }
        for attempt in 0..3 {
            match self.flush_now().await {
                Ok(()) => return,
                Err(_) if attempt < 2 => {
                    tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt)).await
                }
                Err(error) => {
                    let rows = self.pending_rows();
                    tracing::error!(%error, rows, "store unreachable at shutdown; buffered counts lost");
                    self.metrics.store_dropped_many("exchange", rows as u64);
                }
            }
        }
    }
}
