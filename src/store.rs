//! Persistent store (sqlx, runtime-checked queries): PostgreSQL for production, an embedded SQLite file by
//! default; one schema, migrated at start. Writes come in batches from [`writer`]; reads serve the report and
//! the gate ([`queries`]).

pub mod queries;
pub mod rows;
pub mod sample;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use crate::analysis::aggregate::EndpointCounts;
use crate::analysis::latency::encode as encode_histogram;
use crate::exchange::Target;
use crate::store::rows::{counter_rows, signature_row};

/// Which database a store runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// What went wrong with the store; every message starts with `store`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: unsupported database URL `{0}`; expected postgres://... or sqlite://PATH")]
    Url(String),
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Data(String),
}

#[derive(Clone, Debug)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs one block of sqlx code against whichever pool the store has: the block is compiled once per backend,
/// so the same SQL (and its placeholders, through `QueryBuilder`) serves both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Postgres($pool) => $body,
            Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A connection pool to the store's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// One run as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub label: String,
    pub primary_url: String,
    pub secondary_url: String,
    pub candidate_url: String,
    pub started_at_ms: i64,
    pub last_seen_at_ms: i64,
}

/// A sample as the writer stores it.
#[derive(Clone, Debug)]
pub struct SampleRow {
    pub id: String,
    pub endpoint: String,
    pub created_at_ms: i64,
    pub document: String,
    /// The places it shows: (path, kind); ("", "") for an exchange without differences.
    pub places: Vec<(String, String)>,
}

/// Everything one flush writes, for one run.
#[derive(Debug, Default)]
pub struct FlushBatch {
    /// Counts since the last flush, per (endpoint, bucket).
    pub counts: Vec<(String, i64, EndpointCounts)>,
    /// This writer's histograms as they stand now, per (endpoint, bucket) (bucket -1: the whole run).
    pub histograms: Vec<(String, i64, crate::analysis::latency::Latencies)>,
    pub samples: Vec<SampleRow>,
}

impl FlushBatch {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.histograms.is_empty() && self.samples.is_empty()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A `path_counts` row: endpoint, minute, path, kind, raw by class, noise.
type PlaceRow<'a> = (&'a str, i64, &'a str, &'a str, [i64; 3], i64);

/// Rows per multi-row statement, well under both databases' limits on bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Connects to `postgres://...` or `sqlite://PATH` (the file is created if missing).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Pool::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            // SQLite writes one at a time; a few connections serve concurrent readers.
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.clamp(1, 4))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Pool::Sqlite(pool)
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        Ok(Self { pool })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
            Pool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// The redaction key: the one given, or the one kept in the database, created by the first instance that
    /// needs one so that every replica uses the same.
    pub async fn redaction_key(&self, given: Option<&str>) -> Result<String, StoreError> {
        if let Some(key) = given {
            return Ok(key.to_string());
        }
        let fresh = crate::redact::generate_key();
        on_pool!(self, pool => {
            let mut insert = QueryBuilder::new("INSERT INTO settings (name, value) VALUES ('redaction_key', ");
            insert.push_bind(&fresh).push(") ON CONFLICT (name) DO NOTHING");
            insert.build().execute(pool).await?;
            let row = sqlx::query("SELECT value FROM settings WHERE name = 'redaction_key'").fetch_one(pool).await?;
            Ok(row.try_get::<String, _>("value")?)
        })
    }

    /// The id of the run with this label, created if new (with its upstreams and start time).
    pub async fn ensure_run(
        &self,
        label: &str,
        urls: [&str; 3],
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new(
                "INSERT INTO runs (label, primary_url, secondary_url, candidate_url, started_at, last_seen_at) VALUES (",
            );
            let mut values = query.separated(", ");
            values.push_bind(label);
            for url in urls {
                values.push_bind(url);
            }
            values.push_bind(now_ms).push_bind(now_ms);
            query.push(") ON CONFLICT (label) DO UPDATE SET last_seen_at = excluded.last_seen_at RETURNING id");
            let row = query.build().fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>("id")?)
        })
    }

    /// Writes one batch in one transaction: counters and place counts added, signatures counted, this writer's
    /// histograms replaced, samples inserted. All or nothing, so a failed flush can be retried whole.
    pub async fn write_batch(
        &self,
        run_id: i64,
        writer: &str,
        batch: &FlushBatch,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;

            let counters: Vec<(&str, i64, String, i64)> = batch
                .counts
                .iter()
                .flat_map(|(endpoint, bucket, counts)| {
                    counter_rows(counts).into_iter().map(move |(name, value)| (endpoint.as_str(), *bucket, name, value))
                })
                .collect();
            for chunk in counters.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new("INSERT INTO endpoint_counters (run_id, endpoint, bucket, name, value) ");
                query.push_values(chunk, |mut row, (endpoint, bucket, name, value)| {
                    row.push_bind(run_id).push_bind(*endpoint).push_bind(*bucket).push_bind(name.as_str()).push_bind(*value);
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, name) DO UPDATE SET value = endpoint_counters.value + excluded.value",
                );
                query.build().execute(&mut *tx).await?;
            }

            let places: Vec<PlaceRow<'_>> = batch
                .counts
                .iter()
                .flat_map(|(endpoint, bucket, counts)| {
                    counts.paths.iter().map(move |((path, kind), place)| {
                        (endpoint.as_str(), *bucket, path.as_str(), kind.as_str(), place.raw.map(|n| n as i64), place.noise as i64)
                    })
                })
                .collect();
            for chunk in places.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO path_counts (run_id, endpoint, bucket, path, kind, raw_changed, raw_additive, raw_breaking, noise) ",
                );
                query.push_values(chunk, |mut row, (endpoint, bucket, path, kind, raw, noise)| {
                    row.push_bind(run_id).push_bind(*endpoint).push_bind(*bucket).push_bind(*path).push_bind(*kind);
                    row.push_bind(raw[0]).push_bind(raw[1]).push_bind(raw[2]).push_bind(*noise);
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, path, kind) DO UPDATE SET \
                     raw_changed = path_counts.raw_changed + excluded.raw_changed, \
                     raw_additive = path_counts.raw_additive + excluded.raw_additive, \
                     raw_breaking = path_counts.raw_breaking + excluded.raw_breaking, \
                     noise = path_counts.noise + excluded.noise",
                );
                query.build().execute(&mut *tx).await?;
            }

            let signatures: Vec<(&str, i64, i64, String, i64)> = batch
                .counts
                .iter()
                .flat_map(|(endpoint, bucket, counts)| {
                    counts.signatures.iter().map(move |(signature, count)| {
                        let (hash, text) = signature_row(signature);
                        (endpoint.as_str(), *bucket, hash, text, *count as i64)
                    })
                })
                .collect();
            for chunk in signatures.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO signature_counts (run_id, endpoint, bucket, signature_hash, signature, count) ",
                );
                query.push_values(chunk, |mut row, (endpoint, bucket, hash, text, count)| {
                    row.push_bind(run_id).push_bind(*endpoint).push_bind(*bucket).push_bind(*hash);
                    row.push_bind(text.as_str()).push_bind(*count);
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, signature_hash) DO UPDATE SET count = signature_counts.count + excluded.count",
                );
                query.build().execute(&mut *tx).await?;
            }

            let histograms: Vec<(&str, i64, &str, Vec<u8>)> = batch
                .histograms
                .iter()
                .flat_map(|(endpoint, bucket, latencies)| {
                    Target::ALL.into_iter().filter(|target| !latencies.histogram(*target).is_empty()).map(move |target| {
                        (endpoint.as_str(), *bucket, target.as_str(), encode_histogram(latencies.histogram(target)))
                    })
                })
                .collect();
            for chunk in histograms.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO latency_histograms (run_id, endpoint, bucket, target, writer, histogram) ",
                );
                query.push_values(chunk, |mut row, (endpoint, bucket, target, bytes)| {
                    row.push_bind(run_id).push_bind(*endpoint).push_bind(*bucket).push_bind(*target);
                    row.push_bind(writer).push_bind(bytes.as_slice());
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, target, writer) DO UPDATE SET histogram = excluded.histogram",
                );
                query.build().execute(&mut *tx).await?;
            }

            for chunk in batch.samples.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new("INSERT INTO samples (id, run_id, endpoint, created_at, document) ");
                query.push_values(chunk, |mut row, sample| {
                    row.push_bind(sample.id.as_str()).push_bind(run_id).push_bind(sample.endpoint.as_str());
                    row.push_bind(sample.created_at_ms).push_bind(sample.document.as_str());
                });
                query.push(" ON CONFLICT (id) DO NOTHING");
                query.build().execute(&mut *tx).await?;
            }
            let sample_places: Vec<(&SampleRow, &(String, String))> =
                batch.samples.iter().flat_map(|sample| sample.places.iter().map(move |place| (sample, place))).collect();
            for chunk in sample_places.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new("INSERT INTO sample_paths (run_id, endpoint, path, kind, sample_id) ");
                query.push_values(chunk, |mut row, (sample, (path, kind))| {
                    row.push_bind(run_id).push_bind(sample.endpoint.as_str()).push_bind(path.as_str());
                    row.push_bind(kind.as_str()).push_bind(sample.id.as_str());
                });
                query.push(" ON CONFLICT DO NOTHING");
                query.build().execute(&mut *tx).await?;
            }

            let mut touch = QueryBuilder::new("UPDATE runs SET last_seen_at = ");
            touch.push_bind(now_ms).push(" WHERE id = ").push_bind(run_id);
            touch.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Deletes what is older than `cutoff_ms`: counter buckets, samples, and runs not seen since.
    pub async fn delete_older_than(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let cutoff_bucket = cutoff_ms.div_euclid(60_000);
        on_pool!(self, pool => {
            let mut deleted = 0;
            for table in ["endpoint_counters", "path_counts", "signature_counts"] {
                let mut query = QueryBuilder::new(format!("DELETE FROM {table} WHERE bucket < "));
                query.push_bind(cutoff_bucket);
                deleted += query.build().execute(pool).await?.rows_affected();
            }
            let mut histograms = QueryBuilder::new("DELETE FROM latency_histograms WHERE bucket >= 0 AND bucket < ");
            histograms.push_bind(cutoff_bucket);
            deleted += histograms.build().execute(pool).await?.rows_affected();
            let mut samples = QueryBuilder::new("DELETE FROM samples WHERE created_at < ");
            samples.push_bind(cutoff_ms);
            deleted += samples.build().execute(pool).await?.rows_affected();
            let mut runs = QueryBuilder::new("DELETE FROM runs WHERE last_seen_at < ");
            runs.push_bind(cutoff_ms);
            deleted += runs.build().execute(pool).await?.rows_affected();
            Ok(deleted)
        })
    }
}
