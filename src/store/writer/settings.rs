//! The writer's settings: what is stored and how (`WriterSettings`, with its defaults), and the config made of
//! them once the run is known (`WriterConfig`).

use std::sync::Arc;
use std::time::Duration;

use crate::seal::Sealer;
use crate::store::sample::SampleLimits;

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
