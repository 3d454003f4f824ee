//! The store's flags: which database (`DatabaseArgs`, for every subcommand that reads or writes one) and what
//! is stored, redacted and kept, and how it is written (`StoreArgs`); each converted into its settings.

use clap::Args;

use super::sealing;
use crate::app::AppSettings;
use crate::redact::RedactionSettings;
use crate::redact::values::ValueSet;
use crate::store::StoreSettings;
use crate::store::writer::WriterSettings;
use crate::values::{ByteSize, Span, parse_interval_span, parse_span};

/// Which database holds the report.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Store")]
pub struct DatabaseArgs {
    /// The store: `postgres://user:password@host/db` (several proxies can share one), or `sqlite://PATH` (a file,
    /// created if missing).
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_DATABASE_URL", default_value_t = StoreSettings::DEFAULT_DATABASE_URL.to_string())]
    pub database_url: String,

    /// Connections to the database (PostgreSQL; SQLite uses at most 4).
    #[arg(long, value_name = "N", env = "SHADOWDIFF_STORE_CONNECTIONS",
          default_value_t = StoreSettings::DEFAULT_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub store_connections: u32,
}
/// What is stored, and how.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Label of the run to store into; comparisons with the same label add up (replicas, restarts). With it the
    /// process keeps to that run until one is started on it (`POST /api/v1/runs`). Without it, it joins the run
    /// these upstreams were last switched to while that is open (else a new one: the candidate's host and the
    /// start time) and follows every switch another replica makes: leave it unset where a pipeline names runs.
    #[arg(long, value_name = "LABEL", env = "SHADOWDIFF_RUN")]
    pub run: Option<String>,

    /// Sample exchanges kept per endpoint and place (path and kind), with their request and three responses:
    /// the first half, and a reservoir of later ones spread over the run.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_SAMPLES_PER_PATH", default_value_t = WriterSettings::DEFAULT_SAMPLES_PER_PATH)]
    pub samples_per_path: usize,

    /// Most bytes of each body a sample keeps; the rest is cut, and the body marked truncated.
    #[arg(long, value_name = "SIZE", env = "SHADOWDIFF_SAMPLE_BODY_LIMIT", default_value_t = ByteSize(WriterSettings::DEFAULT_SAMPLE_BODY_LIMIT as u64))]
    pub sample_body_limit: ByteSize,

    /// A JSON or form body field whose value is never stored or recorded (at any depth, in bodies and
    /// differences), but replaced by `redacted:<keyed hash>`, besides the built-in ones (password, token,
    /// secret, access_token, client_secret, api_key, signature, ...); repeat the flag (or comma-separate) for
    /// several. Names match ignoring case, `_` and `-`.
    #[arg(
        long = "redact-json-field",
        value_name = "NAME",
        env = "SHADOWDIFF_REDACT_JSON_FIELD",
        value_delimiter = ','
    )]
    pub redact_json_fields: Vec<String>,

    /// A query parameter whose value is never stored or recorded (in the request line, in `Location` and in
    /// URLs inside JSON), besides the built-in ones (access_token, token, api_key, password, code, ...); repeat
    /// the flag (or comma-separate) for several.
    #[arg(
        long = "redact-query-param",
        value_name = "NAME",
        env = "SHADOWDIFF_REDACT_QUERY_PARAM",
        value_delimiter = ','
    )]
    pub redact_query_params: Vec<String>,

    /// A header whose value is never stored or recorded, besides the built-in ones (Authorization, Cookie,
    /// X-Api-Key, X-Auth-Token, ...); repeat the flag (or comma-separate) for several.
    #[arg(
        long = "redact-header",
        value_name = "NAME",
        env = "SHADOWDIFF_REDACT_HEADER",
        value_delimiter = ','
    )]
    pub redact_headers: Vec<String>,

    /// Key of the redaction hash (prefer the environment variable to the flag, which other users can see).
    /// Default: a random key made once and kept in the database, shared by every replica.
    #[arg(
        long,
        value_name = "KEY",
        env = "SHADOWDIFF_REDACTION_KEY",
        hide_env_values = true
    )]
    pub redaction_key: Option<String>,

    /// Personal data searched for by value in everything stored or recorded (bodies, headers, URLs,
    /// differences, request features) and replaced where it is found by `redacted:<keyed hash>`: `pii` for all
    /// the kinds, or some of them, comma-separated. The rules file's `[[redact_value]]` tables add named
    /// patterns. Comparisons still see the real values.
    #[arg(
        long = "redact-values",
        value_name = "KINDS",
        env = "SHADOWDIFF_REDACT_VALUES",
        value_delimiter = ','
    )]
    pub redact_values: Vec<ValueSet>,

    /// Delete counts and samples older than this (checked at start and every few minutes); `0s` keeps everything.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_RETENTION",
          default_value_t = Span(WriterSettings::DEFAULT_RETENTION), value_parser = parse_span)]
    pub retention: Span,

    /// Delete samples (bodies, headers and differences of sample exchanges) older than this, while the counts
    /// stay until `--retention`. Default: samples go with the counts.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_SAMPLE_RETENTION", value_parser = parse_interval_span)]
    pub sample_retention: Option<Span>,

    /// How often buffered counts are written (more than zero).
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_STORE_FLUSH_INTERVAL",
          default_value_t = Span(WriterSettings::DEFAULT_FLUSH_INTERVAL), value_parser = parse_interval_span)]
    pub store_flush_interval: Span,

    /// Write as soon as this many rows are buffered.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_STORE_BATCH_ROWS", default_value_t = WriterSettings::DEFAULT_BATCH_ROWS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub store_batch_rows: u32,

    /// Most rows buffered while the database cannot be written; exchanges past it are dropped and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_STORE_BUFFER_ROWS", default_value_t = WriterSettings::DEFAULT_BUFFER_ROWS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub store_buffer_rows: u32,

    #[command(flatten)]
    pub sealing: sealing::SealingArgs,
    /// Most places (path and kind) per endpoint in a run; past it, new places are counted together under
    /// `{other}` (and in `places_overflowed`).
    #[arg(long, value_name = "N", env = "SHADOWDIFF_MAX_PLACES_PER_ENDPOINT",
          default_value_t = WriterSettings::DEFAULT_MAX_PLACES_PER_ENDPOINT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_places_per_endpoint: u32,
}

impl DatabaseArgs {
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            database_url: self.database_url.clone(),
            connections: self.store_connections,
        }
    }
}

impl StoreArgs {
    /// The writer's settings and what it redacts.
    pub fn apply(self, settings: &mut AppSettings) {
        settings.writer = WriterSettings {
            run: self.run,
            samples_per_path: self.samples_per_path,
            sample_body_limit: self.sample_body_limit.as_usize(),
            retention: self.retention.into(),
            sample_retention: self.sample_retention.map(Into::into),
            flush_interval: self.store_flush_interval.into(),
            batch_rows: self.store_batch_rows as usize,
            buffer_rows: self.store_buffer_rows as usize,
            max_places_per_endpoint: self.max_places_per_endpoint as usize,
        };
        settings.redaction = RedactionSettings {
            json_fields: self.redact_json_fields,
            query_params: self.redact_query_params,
            headers: self.redact_headers,
            key: self.redaction_key,
            values: ValueSet::kinds(&self.redact_values),
        };
        settings.sealing = self.sealing.settings();
    }
}
