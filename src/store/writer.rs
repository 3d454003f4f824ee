//! The background writer: folds analysed exchanges into per-minute counts, latency and a few samples per place,
//! and writes them in one transaction every flush interval (or when the batch is large). The run it writes
//! stays alive (a heartbeat; started again under its label when it was deleted); a batch the database could not
//! take is sent again, whole and under the same id, with backoff; rows the database refuses for good are left
//! out and counted. Everything it holds is charged to the memory budget: past it, or past its buffer,
//! exchanges are dropped and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
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
use crate::metrics::Metrics;
use crate::pipeline::Draining;
use crate::redact::Redactor;
use crate::runs::RunControl;
use crate::seal::Sealer;
use crate::store::health::StoreHealth;
use crate::store::metrics::{FeaturesDropped, Unstored, UnstoredReason};
use crate::store::places::PlaceCap;
use crate::store::retention::Retention;
use crate::store::runs::ActiveRun;
use crate::store::sample::{SampleDocument, SampleLimits, started_at_ms};
use crate::store::sampler::{SamplePlace, Sampler, Take};
use crate::store::sealed;
use crate::store::sketches::PendingSketches;
use crate::store::write::{FlushBatch, Unsampled, Written};
use crate::store::{SampleRow, Store, StoreError};

/// How the writer batches, what it keeps while the database is away, and which run it writes.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub run_id: i64,
    /// The run's label and upstreams, to start it again if it is deleted while being written.
    pub run_label: String,
    pub run_urls: [String; 3],
    /// Tells this process's rows apart from other replicas' (latency sketches, batch ids).
    pub writer_id: String,
    pub flush_interval: Duration,
    /// Flush as soon as this many rows are waiting.
    pub batch_rows: usize,
    /// Most rows kept waiting while the database cannot be written; exchanges past it are dropped.
    pub max_pending_rows: usize,
    /// Samples kept per (endpoint, place), in this process: the first half and a reservoir of later ones.
    pub samples_per_path: usize,
    pub sample_limits: SampleLimits,
    /// Delete what is older than this, checked every few minutes.
    pub retention: Option<Duration>,
    /// With `--sample-recipient`: seals each sample's values, and has request features and change shapes
    /// counted as keyed hashes.
    pub sealer: Option<Arc<Sealer>>,
    /// Delete samples older than this, checked with `retention` (`--sample-retention`).
    pub sample_retention: Option<Duration>,
}

/// What is stored, and how: the settings the writer's config is made from once the run is known.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    /// Label of the run; comparisons with the same label add up. `None`: the candidate's host and the time.
    pub run: Option<String>,
    /// Sample exchanges kept per endpoint and place.
    pub samples_per_path: usize,
    /// Most bytes of each body a sample keeps.
    pub sample_body_limit: usize,
    /// Delete counts and samples older than this; zero keeps everything.
    pub retention: Duration,
    /// Delete samples older than this, the counts kept; `None`: samples go with the counts.
    pub sample_retention: Option<Duration>,
    /// How often buffered counts are written (more than zero).
    pub flush_interval: Duration,
    /// Write as soon as this many rows are buffered.
    pub batch_rows: usize,
    /// Most rows buffered while the database cannot be written.
    pub buffer_rows: usize,
    /// Distinct places (path and kind) per endpoint in a run; past them, new places count under `{other}`.
    pub max_places_per_endpoint: usize,
}

impl WriterSettings {
    pub const DEFAULT_SAMPLES_PER_PATH: usize = 5;
    pub const DEFAULT_SAMPLE_BODY_LIMIT: usize = 64 << 10;
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DEFAULT_SAMPLE_RETENTION: Option<Duration> = None;
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_BATCH_ROWS: usize = 5000;
    pub const DEFAULT_BUFFER_ROWS: usize = 200_000;
    pub const DEFAULT_MAX_PLACES_PER_ENDPOINT: usize = 500;
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            run: None,
            samples_per_path: Self::DEFAULT_SAMPLES_PER_PATH,
            sample_body_limit: Self::DEFAULT_SAMPLE_BODY_LIMIT,
            retention: Self::DEFAULT_RETENTION,
            sample_retention: Self::DEFAULT_SAMPLE_RETENTION,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            batch_rows: Self::DEFAULT_BATCH_ROWS,
            buffer_rows: Self::DEFAULT_BUFFER_ROWS,
            max_places_per_endpoint: Self::DEFAULT_MAX_PLACES_PER_ENDPOINT,
        }
    }
}

/// Most exchanges waiting to be made into samples; past it, new samples are not taken (their exchanges still
/// count).
const MAX_TO_SAMPLE: usize = 256;
/// Samples are made (off the async threads) as soon as this many wait, not only at the flush.
const SAMPLE_BUILD_AT: usize = 64;
/// Places followed for samples.
const MAX_SAMPLED_PLACES: usize = 20_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A database restart takes seconds: retrying every few seconds notices its return soon, at no real cost.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(300);
/// Flush ticks between heartbeats (and between reads of the templates other replicas learned).
const HEARTBEAT_TICKS: u64 = 10;
/// What an exchange's share of the pending maps costs at least, besides its places.
const EXCHANGE_BYTES: usize = 512;

/// An exchange kept to be made into a sample, with the places it was taken for.
struct ToSample {
    analysis: Analysis,
    places: Vec<(SamplePlace, Take)>,
}

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
    metrics: Arc<Metrics>,
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
    /// than [`RETENTION_EVERY`] still applies it).
    last_retention: Option<Instant>,
    ticks: u64,
    /// Which run to write, when runs can be switched without a restart.
    runs: Option<Arc<RunControl>>,
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
        metrics: Arc<Metrics>,
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

    /// Follows the process's run as it is switched (here, or by another replica through the store).
    pub fn with_runs(mut self, runs: Arc<RunControl>) -> Self {
        self.runs = Some(runs);
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
                .store
                .dropped(Unstored::Exchange, self.since_reason, 1);
            return;
        }
        self.places
            .admit_counted(&mut analysis, &self.metrics.store);
        if self.pending_rows() >= self.config.max_pending_rows {
            self.metrics
                .store
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
                .store
                .dropped(Unstored::Exchange, UnstoredReason::MemoryBudget, 1);
            self.metrics.budget.shed(Stage::Writer);
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
        self.metrics.store.set_pending(self.pending_rows());
    }

    /// Counts the exchange's request features under its signature, and the shapes of its changes, if the
    /// budget has room for what that may hold.
    fn sketch(&mut self, analysis: &Analysis, signature: &[PathKey]) {
        if analysis.compared().is_none() {
            return;
        }
        let features = &self.metrics.store;
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

    /// Keeps the exchange to be made into a sample if the sampler takes it for one of its places.
    fn maybe_sample(&mut self, analysis: Analysis) {
        let Some(compared) = analysis.compared() else {
            return;
        };
        let endpoint = analysis.exchange.endpoint.clone();
        let mut places: Vec<SamplePlace> = compared
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
        let id = analysis.exchange.id.to_string();
        let taken = self.sampler.decide(&endpoint, &places, &id);
        if taken.is_empty() {
            return;
        }
        if self.pending.to_sample.len() >= MAX_TO_SAMPLE {
            for (place, take) in &taken {
                self.sampler.release(&endpoint, place, take, &id);
            }
            self.metrics
                .store
                .dropped(Unstored::Sample, UnstoredReason::BufferFull, 1);
            return;
        }
        for (place, take) in &taken {
            if let Take::Reservoir {
                replaces: Some(old),
            } = take
            {
                self.unsample(&endpoint, place, old);
            }
        }
        self.pending.to_sample.push(ToSample {
            analysis,
            places: taken,
        });
    }

    /// A sample the reservoir let go for a place: taken out of what waits, or deleted from the store.
    fn unsample(&mut self, endpoint: &str, place: &SamplePlace, id: &str) {
        if let Some(at) = self
            .pending
            .to_sample
            .iter()
            .position(|waiting| waiting.analysis.exchange.id.to_string() == id)
        {
            let waiting = &mut self.pending.to_sample[at];
            waiting.places.retain(|(p, _)| p != place);
            if waiting.places.is_empty() {
                self.pending.to_sample.swap_remove(at);
            }
            return;
        }
        if let Some(sample) = self
            .unsent
            .as_mut()
            .and_then(|batch| batch.samples.iter_mut().find(|sample| sample.id == id))
        {
            sample.places.retain(|p| p != place);
            return;
        }
        self.pending.unsampled.push(Unsampled {
            endpoint: endpoint.to_string(),
            path: place.0.clone(),
            kind: place.1.clone(),
            sample_id: id.to_string(),
        });
    }

    /// Makes the exchanges waiting for it into sample rows, on a blocking thread (decoding, redacting and
    /// encoding bodies is CPU work).
    async fn build_samples(&mut self) -> Vec<SampleRow> {
        let waiting = std::mem::take(&mut self.pending.to_sample);
        if waiting.is_empty() {
            return Vec::new();
        }
        let count = waiting.len();
        let limits = self.config.sample_limits;
        // Making a sample decodes one body at a time (and parses it, to redact it): a few times the decoding
        // cap, for as long as the samples take to make.
        let scratch = 4 * limits.max_decoded;
        let held = match &self.budget {
            Some(budget) => budget.charge(Stage::Writer, scratch),
            None => Some(Charge::none()),
        };
        let Some(held) = held else {
            for ToSample { analysis, places } in &waiting {
                let id = analysis.exchange.id.to_string();
                for (place, take) in places {
                    self.sampler
                        .release(&analysis.exchange.endpoint, place, take, &id);
                }
            }
            self.metrics.store.dropped(
                Unstored::Sample,
                UnstoredReason::MemoryBudget,
                count as u64,
            );
            self.metrics.budget.shed(Stage::Writer);
            return Vec::new();
        };
        let redactor = self.redactor.clone();
        let (rewrites, sealer) = (self.rewrites.clone(), self.config.sealer.clone());
        let built = tokio::task::spawn_blocking(move || {
            waiting
                .into_iter()
                .filter_map(|ToSample { analysis, places }| {
                    let mut document =
                        SampleDocument::build(&analysis, &redactor, limits, &rewrites);
                    Some(SampleRow {
                        document: sealed::stored_text(&mut document, sealer.as_deref())?,
                        id: document.id.clone(),
                        endpoint: analysis.exchange.endpoint.clone(),
                        created_at_ms: document.started_at_ms,
                        places: places
                            .into_iter()
                            .map(|((path, kind), _)| (path, kind))
                            .collect(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        drop(held);
        if let Ok(rows) = &built
            && rows.len() < count
        {
            let unsealed = (count - rows.len()) as u64;
            self.metrics
                .store
                .dropped(Unstored::Sample, UnstoredReason::Failed, unsealed);
        }
        built.unwrap_or_else(|_| {
            tracing::error!(count, "making samples failed; they are not stored");
            self.metrics
                .store
                .dropped(Unstored::Sample, UnstoredReason::Failed, count as u64);
            Vec::new()
        })
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
                    self.metrics.store.stored(batch.compared());
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
                self.metrics
                    .store
                    .dropped(Unstored::Exchange, UnstoredReason::RunDeleted, lost);
                self.forget_run();
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
                    .store
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
            self.metrics
                .store
                .rejected(rejected.table, rejected.rows as u64);
        }
        self.health.set_up();
        self.metrics.store.set_up(true);
        self.backoff = FIRST_BACKOFF;
        self.unsent_rows = 0;
        self.unsent_bytes = 0;
        self.settle_charge();
        self.metrics.store.write(true);
        self.metrics.store.set_pending(self.pending_rows());
    }

    fn failed(&mut self, error: &StoreError) {
        self.health.set_down(&error.to_string(), now_ms());
        self.metrics.store.set_up(false);
        self.metrics.store.write(false);
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Lets go of everything held for the run: counts, latency, samples, quotas, names and templates.
    fn forget_run(&mut self) {
        self.pending = Pending::default();
        self.unsent = None;
        self.unsent_rows = 0;
        self.unsent_bytes = 0;
        self.sampler.reset();
        self.sketches.reset();
        self.namer.reset();
        self.keys.reset();
        self.places.reset();
        self.settle_charge();
        self.run_missing = true;
    }

    /// Writes what waits into the run being closed, then writes into `active` from now on, with nothing of
    /// the old run's held (quotas, names, templates).
    async fn switch_to(&mut self, active: ActiveRun) {
        if active.label == self.config.run_label {
            if active.id != self.config.run_id {
                self.cleared(active);
            }
            return;
        }
        if let Err(error) = self.flush_now().await {
            // A batch the database did not take stays tagged with the closed run and is sent again; only what
            // had not been made into a batch yet is lost.
            let lost = self.pending.requests();
            tracing::warn!(%error, lost, run = %self.config.run_label, "the store did not take the closed run's last counts; they are sent again");
            self.metrics
                .store
                .dropped(Unstored::Exchange, UnstoredReason::RunClosed, lost);
        }
        self.pending = Pending::default();
        self.sampler.reset();
        self.sketches.reset();
        self.namer.reset();
        self.keys.reset();
        self.places.reset();
        self.settle_charge();
        self.run_missing = false;
        self.config.run_id = active.id;
        self.config.run_label = active.label;
        self.since_ms = active.since_ms;
        self.since_reason = UnstoredReason::RunClosed;
        self.load_run_state(true).await;
    }

    /// The run being written was cleared through this process and started again as `active` before the
    /// clear was answered: what is held from before is dropped and counted, and what follows is written into
    /// the run started again. (The switch is taken before any exchange queued after it, so what is held began
    /// before the clear was answered.)
    fn cleared(&mut self, active: ActiveRun) {
        let lost = self.pending.requests() + self.unsent.as_ref().map_or(0, FlushBatch::requests);
        tracing::info!(run = %self.config.run_label, id = active.id, lost, "the run was cleared; storing what follows in it");
        self.metrics
            .store
            .dropped(Unstored::Exchange, UnstoredReason::RunDeleted, lost);
        self.forget_run();
        self.run_missing = false;
        self.retry_at = None;
        self.config.run_id = active.id;
        self.since_ms = active.since_ms;
        self.since_reason = UnstoredReason::RunDeleted;
    }

    /// Asks the store which run these upstreams are judged under now (another replica may have moved it).
    async fn follow_runs(&mut self) {
        if let Some(runs) = &self.runs
            && let Err(error) = runs.follow().await
        {
            tracing::debug!(%error, "could not read the active run");
        }
    }

    /// Creates the run again under its label (and upstreams) and writes into it from now on.
    async fn start_run_again(&mut self) -> Result<(), StoreError> {
        let urls = self.config.run_urls.each_ref().map(String::as_str);
        match self
            .store
            .ensure_run(&self.config.run_label, urls, now_ms())
            .await
        {
            Ok(id) => {
                tracing::info!(run = %self.config.run_label, id, "run started again");
                self.config.run_id = id;
                self.since_cleared(id).await;
                self.run_missing = false;
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
                self.health.set_up();
                self.metrics.store.set_up(true);
                Ok(())
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Takes the start of the run started again as the clear's time: what began before belonged to the run
    /// deleted (another replica learns of a clear here, at its next write, and drops what began before it).
    async fn since_cleared(&mut self, id: i64) {
        match self.store.run(&self.config.run_label).await {
            Ok(Some(run)) if run.id == id => {
                self.since_ms = self.since_ms.max(run.started_at_ms);
                self.since_reason = UnstoredReason::RunDeleted;
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "could not read when the run was started again"),
        }
    }

    /// Tells the store this writer is alive (so that retention spares its run even without traffic), and takes
    /// the templates other replicas learned.
    async fn heartbeat(&mut self) {
        if self.run_missing || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match self.store.heartbeat(self.config.run_id, now_ms()).await {
            Ok(()) => {
                // The store takes writes again (a batch it refused was dropped, or it is back): the next flush
                // need not wait, and what waits is written then.
                if self.unsent.is_none() {
                    self.retry_at = None;
                    self.backoff = FIRST_BACKOFF;
                    self.health.set_up();
                    self.metrics.store.set_up(true);
                }
            }
            Err(StoreError::RunGone(old)) => {
                tracing::warn!(
                    run = %self.config.run_label,
                    old_id = old,
                    "the run being written was deleted (from the dashboard or by retention); starting it again \
                     under the same label"
                );
                let lost = self.pending.requests();
                self.metrics
                    .store
                    .dropped(Unstored::Exchange, UnstoredReason::RunDeleted, lost);
                self.forget_run();
                let _ = self.start_run_again().await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "heartbeat failed");
                self.failed(&error);
                return;
            }
        }
        self.load_run_state(false).await;
    }

    /// Takes the templates (and, at start, the endpoint names) the run already has in the store.
    async fn load_run_state(&mut self, with_names: bool) {
        let run_id = self.config.run_id;
        match self.store.templates(run_id).await {
            Ok(templates) => self.namer.adopt(templates, Vec::new()),
            Err(error) => tracing::debug!(%error, "could not read the run's templates"),
        }
        match self.store.key_positions(run_id).await {
            Ok(positions) => self.keys.adopt(positions),
            Err(error) => tracing::debug!(%error, "could not read the run's map positions"),
        }
        if with_names {
            match self.store.counted_places(run_id).await {
                Ok(places) => self.places.adopt(places),
                Err(error) => tracing::debug!(%error, "could not read the run's places"),
            }
            match self.store.endpoint_names(run_id, usize::MAX).await {
                Ok(names) => self.namer.adopt(Vec::new(), names),
                Err(error) => tracing::debug!(%error, "could not read the run's endpoints"),
            }
        }
    }

    async fn apply_retention(&mut self) {
        let retention = Retention {
            counts: self.config.retention,
            samples: self.config.sample_retention,
        };
        if !retention.deletes()
            || self
                .last_retention
                .is_some_and(|at| at.elapsed() < RETENTION_EVERY)
        {
            return;
        }
        self.last_retention = Some(Instant::now());
        match retention.apply(&self.store, now_ms()).await {
            Ok(deleted) if deleted > 0 => tracing::info!(deleted, "retention removed old rows"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention could not delete old rows"),
        }
    }

    /// Writes until `stop` is cancelled, then writes what is left (trying a few times) and returns.
    pub async fn run(mut self, rx: mpsc::Receiver<Analysis>, stop: CancellationToken) {
        self.load_run_state(true).await;
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut analyses = Draining::new(rx, stop);
        let mut switches = self.runs.as_ref().map(|runs| runs.subscribe());
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
                    self.follow_runs().await;
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
                        .store
                        .dropped(Unstored::Exchange, UnstoredReason::Shutdown, lost);
                }
            }
        }
    }
}

/// The next run switched to, or never when runs are not switched (or the switch's sender is gone).
async fn next_switch(switches: &mut Option<tokio::sync::watch::Receiver<ActiveRun>>) -> ActiveRun {
    let Some(receiver) = switches else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => receiver.borrow_and_update().clone(),
        Err(_) => {
            *switches = None;
            std::future::pending().await
        }
    }
}
