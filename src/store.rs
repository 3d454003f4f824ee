//! Persistent store (sqlx, runtime-checked queries): PostgreSQL for production, an embedded SQLite file by
//! default; one schema, migrated at start. Writes come in batches from [`writer`] ([`write`]); reads serve the
//! report and the gate ([`queries`]).

pub mod health;
pub mod key_positions;
pub mod listing;
pub mod metrics;
pub mod places;
pub mod queries;
pub mod retention;
pub mod rows;
pub mod runs;
pub mod sample;
pub mod sampler;
pub mod sealed;
pub mod sketches;
pub mod write;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

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
    /// The run being written was deleted (from the dashboard, or by retention).
    #[error("store: run {0} no longer exists")]
    RunGone(i64),
    /// What was asked for needs the values of sealed samples, which this process cannot open.
    #[error("{0}")]
    Sealed(String),
}

impl StoreError {
    /// Whether the same write may succeed later (the database away, restarting, busy or out of room), rather
    /// than fail the same way again (a row it rejects, a schema it lacks, a run that is gone).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(error) => retryable(error),
            StoreError::Migrate(_)
            | StoreError::Url(_)
            | StoreError::Data(_)
            | StoreError::RunGone(_)
            | StoreError::Sealed(_) => false,
        }
    }
}

fn retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            if let Ok(sqlite) = code.parse::<i64>() {
                // SQLite's primary result codes: BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN.
                matches!(sqlite & 0xff, 5 | 6 | 7 | 10 | 13 | 14)
            } else {
                // PostgreSQL's SQLSTATE classes: connection, transaction rollback (serialisation, deadlock),
                // insufficient resources, operator intervention (shutdown), system error.
                matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
            }
        }
        _ => false,
    }
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
    /// How sealed samples are opened when read (`store::sealed`); none: they are shown sealed.
    reading: sealed::SampleReading,
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
    /// When a writer last said it was alive (it keeps the run from retention).
    pub heartbeat_at_ms: i64,
    /// When another run was started for the same upstreams, closing this one (it is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<i64>,
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

/// Which database holds the report, and how many connections it gets.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// `postgres://user:password@host/db`, or `sqlite://PATH` (a file, created if missing).
    pub database_url: String,
    /// Connections to the database (PostgreSQL; SQLite uses at most 4).
    pub connections: u32,
}

impl StoreSettings {
    pub const DEFAULT_DATABASE_URL: &str = "sqlite://shadowdiff.db";
    pub const DEFAULT_CONNECTIONS: u32 = 8;

    /// The store at `database_url`, with the default connections.
    pub fn at(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            connections: Self::DEFAULT_CONNECTIONS,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self::at(Self::DEFAULT_DATABASE_URL)
    }
}

impl Store {
    /// Connects to the configured database and brings its schema up to date.
    pub async fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let store = Self::connect(&settings.database_url, settings.connections).await?;
        store.migrate().await?;
        Ok(store)
    }

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
        Ok(Self {
            pool,
            reading: Default::default(),
        })
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
            let mut query = QueryBuilder::new("");
            upsert_run(&mut query, label, urls, now_ms, false);
            let row = query.build().fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>("id")?)
        })
    }
}

/// `INSERT INTO runs ... RETURNING id` for `label`, or, when it exists, its last-seen time and heartbeat set
/// to now (and with `reopen`, its closing undone).
pub(crate) fn upsert_run<DB: sqlx::Database>(
    query: &mut QueryBuilder<DB>,
    label: &str,
    urls: [&str; 3],
    now_ms: i64,
    reopen: bool,
) where
    i64: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push(
        "INSERT INTO runs (label, primary_url, secondary_url, candidate_url, started_at, last_seen_at, heartbeat_at) VALUES (",
    );
    let mut values = query.separated(", ");
    values.push_bind(label);
    for url in urls {
        values.push_bind(url);
    }
    values.push_bind(now_ms).push_bind(now_ms).push_bind(now_ms);
    query.push(
        ") ON CONFLICT (label) DO UPDATE SET last_seen_at = excluded.last_seen_at, heartbeat_at = excluded.heartbeat_at",
    );
    if reopen {
        query.push(", closed_at = NULL");
    }
    query.push(" RETURNING id");
}
