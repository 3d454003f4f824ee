//! The background writer: folds analysed exchanges into per-minute counts, latency and a few samples per place,
//! and writes them in one transaction every flush interval (or when the batch is large). The run it writes
//! stays alive (a heartbeat; started again under its label when it was deleted); a batch the database could not
//! take is sent again, whole and under the same id, with backoff; rows the database refuses for good are left
//! out and counted. Everything it holds is charged to the memory budget: past it, or past its buffer,
//! exchanges are dropped and counted.

mod run_life;
mod sampling;
mod settings;

pub use settings::{WriterConfig, WriterSettings};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::analysis::aggregate::Tally;
use crate::analysis::keys::KeyPositions;
use crate::analysis::latency::Latencies;
use crate::analysis::rewrite::Rewrites;
use crate::analysis::{Analysis, PathKey};
use crate::budget::{Charge, MemoryBudget, Stage};
use crate::clock::now_ms;
use crate::endpoint::EndpointNamer;
use crate::exchange::Target;
use crate::pipeline::Draining;
use crate::redact::Redactor;
use crate::store::health::StoreHealth;
use crate::store::metrics::{FeaturesDropped, StoreMetrics, Unstored, UnstoredReason};
use crate::store::places::PlaceCap;
use crate::store::runs::ActiveRun;
use crate::store::sample::started_at_ms;
use crate::store::sampler::Sampler;
use crate::store::sketches::PendingSketches;
use crate::store::write::{FlushBatch, Unsampled, Written};
use crate::store::{Store, StoreError};

use run_life::next_switch;
use sampling::{MAX_SAMPLED_PLACES, SAMPLE_BUILD_AT, ToSample};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A database restart takes seconds: retrying every few seconds notices its return soon, at no real cost.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Flush ticks between heartbeats (and between reads of the templates other replicas learned).
const HEARTBEAT_TICKS: u64 = 10;
/// What an exchange's share of the pending maps costs at least, besides its places.
const EXCHANGE_BYTES: usize = 512;

/// What waits for the next batch.
#[derive(Default)]
struct Pending {
    /// Counts per (endpoint, minute), with the memory each was last found to hold (worked out again only when
    /// it gains rows, since that takes a walk over its maps).
    counts: HashMap<(String, i64), (Tally, usize)>,
    /// Latency since the last batch per (endpoint, minute), and (endpoint, -1) for the whole run.
    latency: HashMap<(String, i64), Latencies>,
    to_sample: Vec<ToSample>,
    unsampled: Vec<Unsampled>,
    /// Rows the counts make, kept up to date so that checking the bound costs nothing.
    rows: usize,
    /// Memory the counts and latency hold, roughly.
    bytes: usize,
}

impl Pending {
    fn requests(&self) -> u64 {
        self.counts.values().map(|(tally, _)| tally.requests).sum()
    }
}

pub struct Writer {
    store: Store,
    config: WriterConfig,
    redactor: Redactor,
    /// The writer's own counters (work shed for the budget is counted by the budget).
    metrics: StoreMetrics,
    namer: Arc<EndpointNamer>,
    health: Arc<StoreHealth>,
    pending: Pending,
    /// A batch the database did not take yet: sent again as it is (same id, same run) until it is.
    unsent: Option<FlushBatch>,
    /// The run `unsent` counts for (the run before a switch, for a batch frozen before it).
    unsent_run: i64,
    unsent_rows: usize,
    unsent_bytes: usize,
    next_batch: i64,
    sampler: Sampler,
    /// Request features by signature and the shapes of changes, since the last batch.
    sketches: PendingSketches,
    /// Object positions learned as maps (stored here, adopted from the store) and the places per endpoint.
    keys: Arc<KeyPositions>,
    places: PlaceCap,
    /// The memory held by the pending counts, the unsent batch and the sample quotas.
    charge: Charge,
    /// Where the memory making samples takes is charged from (decoded and parsed bodies, for a moment).
    budget: Option<Arc<MemoryBudget>>,
    /// When writing failed, the earliest next attempt.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The run was deleted and could not be started again yet.
    run_missing: bool,
    /// When retention last ran; `None`: not yet, so it runs at the first tick (a process restarted more often
    /// than [`run_life::RETENTION_EVERY`] still applies it).
    last_retention: Option<Instant>,
    ticks: u64,
    /// Which run to write, when runs can be switched without a restart.
    runs: Option<watch::Receiver<ActiveRun>>,
    /// The rewrites secondary and candidate were sent, shown in samples.
    rewrites: Arc<Rewrites>,
    /// Exchanges that began before this (unix ms) belong to the run closed when this one started, or to the
    /// run cleared when it was started again.
    since_ms: i64,
    /// Why an exchange that began before `since_ms` is not stored: its run was closed, or cleared.
    since_reason: UnstoredReason,
}

impl Writer {
    pub fn new(
        store: Store,
        config: WriterConfig,
        redactor: Redactor,
        metrics: StoreMetrics,
    ) -> Self {
        let sampler = Sampler::new(config.samples_per_path, MAX_SAMPLED_PLACES);
        Self {
            store,
            config,
            redactor,
            metrics,
            namer: Arc::new(EndpointNamer::default()),
            health: Arc::new(StoreHealth::default()),
            pending: Pending::default(),
            unsent: None,
            unsent_run: 0,
            unsent_rows: 0,
            unsent_bytes: 0,
            // Batch ids grow over the writer's life, from its start time, so that they never repeat for a
            // writer id.
            next_batch: now_ms(),
            sampler,
            sketches: PendingSketches::default(),
            keys: Arc::default(),
            places: PlaceCap::new(WriterSettings::DEFAULT_MAX_PLACES_PER_ENDPOINT),
            charge: Charge::none(),
            budget: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            run_missing: false,
            last_retention: None,
            ticks: 0,
            runs: None,
            since_ms: 0,
            since_reason: UnstoredReason::RunClosed,
            rewrites: Arc::new(Rewrites::default()),
        }
    }

    /// The rules file's rewrites, for samples to say what secondary and candidate were sent.
    pub fn with_rewrites(mut self, rewrites: Rewrites) -> Self {
        self.rewrites = Arc::new(rewrites);
        self
    }

    /// Follows the process's run as it is switched (here, or by another replica through the store): told of
    /// every switch through `switches`, it never reads the store's active-run pointer itself.
    pub fn with_runs(mut self, switches: watch::Receiver<ActiveRun>) -> Self {
        self.runs = Some(switches);
        self
    }

    /// Names this writer's exchanges were given by: templates learned there are stored, and the namer is told
    /// when the run starts again.
    pub fn with_namer(mut self, namer: Arc<EndpointNamer>) -> Self {
        self.namer = namer;
        self
    }

    /// Stores the map positions `keys` learns and adopts other replicas'; caps places per endpoint at
    /// `max_places`.
    pub fn with_keys(mut self, keys: Arc<KeyPositions>, max_places: usize) -> Self {
        self.keys = keys;
        self.places = PlaceCap::new(max_places);
        self
    }

    /// Charges what the writer holds to `budget`.
    pub fn with_budget(mut self, budget: &Arc<MemoryBudget>) -> Self {
        self.charge = budget.empty(Stage::Writer);
        self.budget = Some(budget.clone());
        self
    }

    /// Counts work the writer shed for the memory budget (only a writer given a budget is ever refused).
    fn shed(&self) {
        if let Some(budget) = &self.budget {
            budget.shed(Stage::Writer);
        }
    }

    /// Reports the store's state here.
    pub fn with_health(mut self, health: Arc<StoreHealth>) -> Self {
        self.health = health;
        self
    }

    /// The run being written (it changes when the run is started again).
    pub fn run_id(&self) -> i64 {
        self.config.run_id
    }

    /// Rows waiting to be written.
    fn pending_rows(&self) -> usize {
        self.pending.rows
            + self.pending.latency.len() * Target::ALL.len()
            + self.pending.to_sample.len()
            + self.sketches.rows()
            + self.unsent_rows
    }

    /// Holds exactly what the pending state, the unsent batch and the quotas take.
    fn settle_charge(&mut self) {
        let held = self.pending.bytes
            + self.unsent_bytes
            + self.sampler.heap_bytes()
            + self.places.heap_bytes()
            + self.sketches.bytes();
        if held > self.charge.bytes() {
            self.charge.grow_up_to(held - self.charge.bytes());
        } else {
            self.charge.shrink_to(held);
        }
    }

    /// Folds one analysed exchange into what waits to be written.
    pub fn add(&mut self, mut analysis: Analysis) {
        analysis.exchange.charge.move_to(Stage::Writer);
        if started_at_ms(&analysis.exchange) < self.since_ms {
            self.metrics
                .dropped(Unstored::Exchange, self.since_reason, 1);
            return;
        }
        self.places.admit_counted(&mut analysis, &self.metrics);
        if self.pending_rows() >= self.config.max_pending_rows {
            self.metrics
                .dropped(Unstored::Exchange, UnstoredReason::BufferFull, 1);
            return;
        }
        // Taken before anything is held, so that a full budget refuses the exchange instead of overrunning.
        let places_bytes: usize = analysis.compared().map_or(0, |compared| {
            compared
                .candidate
                .iter()
                .chain(&compared.noise)
                .map(|d| 2 * (d.generalised.len() + 96))
                .sum()
        });
        if !self.charge.try_grow(EXCHANGE_BYTES + places_bytes) {
            self.metrics
                .dropped(Unstored::Exchange, UnstoredReason::MemoryBudget, 1);
            self.shed();
            return;
        }
        let endpoint = analysis.exchange.endpoint.clone();
        let minute = started_at_ms(&analysis.exchange).div_euclid(60_000);
        let key = (endpoint.clone(), minute);
        let new_entry = !self.pending.counts.contains_key(&key);
        let (tally, bytes) = self.pending.counts.entry(key).or_default();
        let rows_before = tally.rows();
        // Worked out once for the counts and the feature sketches.
        let signature = analysis
            .compared()
            .map(|compared| compared.signature())
            .unwrap_or_default();
        tally.record_signed(&analysis, &signature);
        if new_entry || tally.rows() != rows_before {
            let now = tally.heap_bytes() + endpoint.len() + 96;
            self.pending.bytes = (self.pending.bytes + now).saturating_sub(*bytes);
            *bytes = now;
        }
        self.pending.rows = self.pending.rows + tally.rows() - rows_before;
        for bucket in [minute, -1] {
            let latencies = self
                .pending
                .latency
                .entry((endpoint.clone(), bucket))
                .or_default();
            let before = latencies.heap_bytes();
            for target in Target::ALL {
                if let Some(elapsed) = analysis.latency(target) {
                    latencies.record(target, elapsed);
                }
            }
            self.pending.bytes =
                (self.pending.bytes + latencies.heap_bytes()).saturating_sub(before);
        }
        self.sketch(&analysis, &signature);
        self.maybe_sample(analysis);
        self.settle_charge();
        self.metrics.set_pending(self.pending_rows());
    }

    /// Counts the exchange's request features under its signature, and the shapes of its changes, if the
    /// budget has room for what that may hold.
    fn sketch(&mut self, analysis: &Analysis, signature: &[PathKey]) {
        if analysis.compared().is_none() {
            return;
        }
        let features = &self.metrics;
        if !self.charge.try_grow(PendingSketches::cost(analysis)) {
            features.features_dropped(FeaturesDropped::MemoryBudget, 1);
            return;
        }
        let sealed = self.config.sealer.is_some();
        let added = self
            .sketches
            .add(analysis, signature, &self.redactor, sealed);
        if added.over_cap > 0 {
            features.features_dropped(FeaturesDropped::RequestCap, u64::from(added.over_cap));
        }
        if added.unsketched {
            features.features_dropped(FeaturesDropped::SketchesFull, 1);
        }
    }

    /// Turns what waits into a batch with a new id.
    async fn freeze(&mut self) -> FlushBatch {
        let samples = self.build_samples().await;
        let id = self.next_batch;
        self.next_batch += 1;
        let rows = self.pending.rows
            + self.pending.latency.len() * Target::ALL.len()
            + self.sketches.rows();
        let sketched_before = self.sketches.bytes();
        let sketches = self.sketches.take();
        let sketch_bytes = sketched_before - self.sketches.bytes();
        let pending = std::mem::take(&mut self.pending);
        let batch = FlushBatch {
            id,
            counts: pending
                .counts
                .into_iter()
                .map(|((endpoint, minute), (tally, _))| (endpoint, minute, tally))
                .collect(),
            latency: pending
                .latency
                .into_iter()
                .map(|((endpoint, bucket), latencies)| (endpoint, bucket, latencies))
                .collect(),
            unsampled: pending.unsampled,
            templates: self.namer.take_fresh_templates(),
            key_positions: self.keys.take_fresh(),
            samples,
            sketches,
        };
        self.unsent_rows = rows + batch.samples.len();
        self.unsent_bytes = pending.bytes
            + sketch_bytes
            + batch
                .samples
                .iter()
                .map(|sample| sample.document.len() + sample.endpoint.len() + 256)
                .sum::<usize>();
        batch
    }

    /// Writes what waits, unless the database failed recently and its backoff has not passed.
    pub async fn flush(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let _ = self.flush_now().await;
    }

    /// Writes what waits now: first a batch the database did not take before, then what came since; on failure
    /// keeps it for the next attempt.
    pub async fn flush_now(&mut self) -> Result<(), StoreError> {
        if self.run_missing {
            self.start_run_again().await?;
        }
        if let Some(batch) = self.unsent.take() {
            self.send(self.unsent_run, batch).await?;
        }
        if self.pending.counts.is_empty()
            && self.pending.latency.is_empty()
            && self.pending.to_sample.is_empty()
            && self.pending.unsampled.is_empty()
            && self.sketches.is_empty()
        {
            let templates = self.namer.take_fresh_templates();
            let key_positions = self.keys.take_fresh();
            if templates.is_empty() && key_positions.is_empty() {
                return Ok(());
            }
            let batch = FlushBatch {
                id: self.next_batch,
                templates,
                key_positions,
                ..FlushBatch::default()
            };
            self.next_batch += 1;
            return self.send(self.config.run_id, batch).await;
        }
        let batch = self.freeze().await;
        self.settle_charge();
        self.send(self.config.run_id, batch).await
    }

    /// Writes one batch into `run_id`; what becomes of it depends on how the database answers.
    async fn send(&mut self, run_id: i64, batch: FlushBatch) -> Result<(), StoreError> {
        let now = now_ms();
        let writer = self.config.writer_id.clone();
        let mut result = self
            .store
            .write_batch(run_id, &writer, &batch, now, false)
            .await;
        if let Err(error) = &result
            && !error.is_retryable()
            && !matches!(error, StoreError::RunGone(_))
        {
            tracing::warn!(%error, "the store refused a batch; writing it row by row to leave out what it refuses");
            result = self
                .store
                .write_batch(run_id, &writer, &batch, now, true)
                .await;
        }
        match result {
            Ok(written) => {
                if !written.already {
                    self.metrics.stored(batch.compared());
                }
                self.written(written);
                Ok(())
            }
            Err(StoreError::RunGone(old)) => {
                let lost = batch.requests() + self.pending.requests();
                tracing::warn!(
                    run = %self.config.run_label,
                    old_id = old,
                    lost,
                    "the run being written was deleted (from the dashboard or by retention); starting it again \
                     under the same label"
                );
                self.drop_for_deleted_run(lost);
                self.start_run_again().await
            }
            Err(error) if error.is_retryable() => {
                if self.retry_at.is_none() {
                    tracing::warn!(%error, "store write failed; buffering and retrying with backoff");
                } else {
                    tracing::debug!(%error, "store write failed again");
                }
                self.failed(&error);
                self.unsent = Some(batch);
                self.unsent_run = run_id;
                Err(error)
            }
            Err(error) => {
                let lost = batch.requests();
                tracing::error!(%error, lost, "the store refused a batch outright; its counts are lost");
                self.metrics
                    .dropped(Unstored::Exchange, UnstoredReason::Refused, lost);
                self.failed(&error);
                self.unsent_rows = 0;
                self.unsent_bytes = 0;
                self.settle_charge();
                Err(error)
            }
        }
    }

    fn written(&mut self, written: Written) {
        if self.retry_at.take().is_some() {
            tracing::info!("store reachable again; buffered counts written");
        }
        if written.already {
            tracing::info!("a batch sent again had been written before; not counted twice");
        }
        for rejected in &written.rejected {
            tracing::warn!(
                table = rejected.table,
                rows = rejected.rows,
                cause = %rejected.cause,
                "rows the store refused were left out"
            );
            self.metrics.rejected(rejected.table, rejected.rows as u64);
        }
        self.health.set_up();
        self.metrics.set_up(true);
        self.backoff = FIRST_BACKOFF;
        self.unsent_rows = 0;
        self.unsent_bytes = 0;
        self.settle_charge();
        self.metrics.write(true);
        self.metrics.set_pending(self.pending_rows());
    }

    fn failed(&mut self, error: &StoreError) {
        self.health.set_down(&error.to_string(), now_ms());
        self.metrics.set_up(false);
        self.metrics.write(false);
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Writes until `stop` is cancelled, then writes what is left (trying a few times) and returns.
    pub async fn run(mut self, rx: mpsc::Receiver<Analysis>, stop: CancellationToken) {
        self.load_run_state(true).await;
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut analyses = Draining::new(rx, stop);
        let mut switches = self.runs.take();
        // A switch made before this writer started listening is taken now.
        if let Some(current) = switches.as_mut().map(|s| s.borrow_and_update().clone()) {
            self.switch_to(current).await;
        }
        loop {
            tokio::select! {
                biased;
                active = next_switch(&mut switches) => self.switch_to(active).await,
                received = analyses.next() => match received {
                    Some(analysis) => {
                        self.add(analysis);
                        if self.pending.rows >= self.config.batch_rows
                            || self.pending.to_sample.len() >= SAMPLE_BUILD_AT
                        {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.flush().await;
                    self.ticks += 1;
                    if self.ticks.is_multiple_of(HEARTBEAT_TICKS) {
                        self.heartbeat().await;
                    }
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
                    let lost = self.pending.requests()
                        + self.unsent.as_ref().map_or(0, FlushBatch::requests);
                    tracing::error!(%error, lost, "store unreachable at shutdown; buffered counts lost");
                    self.metrics
                        .dropped(Unstored::Exchange, UnstoredReason::Shutdown, lost);
                }
            }
        }
    }
}
