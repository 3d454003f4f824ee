//! The command line: every setting as a flag, each also read from a `SHADOWDIFF_*` environment variable, with
//! the defaults its component declares; converted once into the components' settings.

pub mod choices;
pub mod commands;
pub mod sealing;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use http::HeaderName;

use crate::analysis::aggregate::VerdictSettings;
use crate::analysis::keys::KeySettings;
use crate::analysis::noise::Thresholds;
use crate::analysis::rules::EndpointGlob;
use crate::analysis::{AnalysisSettings, GrpcSchemaSettings};
use crate::app::AppSettings;
use crate::budget::MemoryBudget;
use crate::endpoint::{EndpointPattern, NamingSettings};
use crate::lane::{LaneSettings, ShadowScheduling};
use crate::monitor::MonitorSettings;
use crate::notify::{NotifyFormat, NotifySettings};
use crate::proxy::upstream::{Baseline, UpstreamSettings};
use crate::proxy::{ProxySettings, ResponseMode, ShadowSettings};
use crate::redact::RedactionSettings;
use crate::redact::values::ValueSet;
use crate::store::StoreSettings;
use crate::store::writer::WriterSettings;
use crate::telemetry::{LogFormat, TelemetrySettings};
use crate::values::{
    ByteSize, Fraction, MethodList, Span, TrustedProxies, UpstreamUrl, parse_interval_span,
    parse_span,
};
use crate::web::WebSettings;
pub use commands::{
    DemoArgs, DemoServiceArgs, DemoTrafficArgs, GateArgs, GateOptions, ReplayArgs, ReportArgs,
    TrafficArgs,
};

/// shadowdiff: send each request to primary, secondary and candidate; report what the candidate changed.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "shadowdiff",
    version,
    propagate_version = true,
    max_term_width = 110
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
// Parsed once per process; boxing the largest variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the shadow proxy: answer callers from one upstream, compare all three in the background.
    Serve(ServeArgs),
    /// Send recorded traffic (JSON lines, HAR or GoReplay) through the same engine and store as `serve`.
    Replay(ReplayArgs),
    /// Judge a stored run for CI: exit 0 within bounds, 1 over them, 2 on errors.
    Gate(GateArgs),
    /// Write a stored run's report as one self-contained HTML file (for a CI job's artifacts).
    Report(ReportArgs),
    /// Start example services, the proxy and the dashboard, and send traffic through them.
    Demo(DemoArgs),
    /// Serve one version of the demo's example service (for docker-compose).
    DemoService(DemoServiceArgs),
    /// Send the demo's traffic to a proxy (for docker-compose).
    DemoTraffic(DemoTrafficArgs),
    /// Apply the store's migrations and exit.
    Migrate(MigrateArgs),
}

/// Everything `migrate` needs.
#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

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

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SHADOWDIFF_LOG_FORMAT",
        default_value_t = TelemetrySettings::DEFAULT_FORMAT
    )]
    pub log_format: LogFormat,

    /// Which log lines to keep, in tracing's filter syntax (e.g. `info` or `shadowdiff=debug,hyper=warn`).
    #[arg(long, global = true, env = "SHADOWDIFF_LOG", default_value_t = TelemetrySettings::DEFAULT_FILTER.to_string())]
    pub log: String,
}

/// Everything `serve` needs.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// What `serve` and `replay` share: the upstreams, shadowing, analysis, verdicts and the store.
#[derive(Args, Debug, Clone)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub upstreams: UpstreamArgs,

    #[command(flatten)]
    pub shadow: ShadowArgs,

    #[command(flatten)]
    pub analysis: AnalysisArgs,

    #[command(flatten)]
    pub verdicts: VerdictArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub store: StoreArgs,
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

/// How responses are compared.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Analysis")]
pub struct AnalysisArgs {
    /// Rules file (TOML): paths to ignore or treat as noise, numeric tolerances, unordered arrays, presence-only
    /// and type-only comparisons, changes accepted as intended, per endpoint; see the README.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_RULES")]
    pub rules: Option<PathBuf>,

    /// Largest response body after undoing its Content-Encoding; a larger one is not compared (counted).
    #[arg(long, value_name = "SIZE", env = "SHADOWDIFF_MAX_DECODED_BODY", default_value_t = ByteSize(AnalysisSettings::DEFAULT_MAX_DECODED_BODY as u64))]
    pub max_decoded_body: ByteSize,

    /// Treat `1` and `1.0` as different (by default JSON numbers of equal value are equal).
    #[arg(long, env = "SHADOWDIFF_STRICT_NUMBER_TYPES", value_parser = BoolishValueParser::new())]
    pub strict_number_types: bool,

    /// An object position (per endpoint) whose differences show more distinct keys than this is a map keyed by
    /// data (user names, e-mails): its keys become `{key}` in places (`body/users/{key}/name`); numbers, UUIDs
    /// and long hex keys are `{id}` at once.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_KEY_THRESHOLD",
          default_value_t = KeySettings::DEFAULT_THRESHOLD as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_threshold: u32,

    /// A response header never compared, besides the built-in per-connection ones (Date, Connection,
    /// Content-Length, ...); repeat the flag (or comma-separate) for several.
    #[arg(
        long = "exclude-header",
        value_name = "NAME",
        env = "SHADOWDIFF_EXCLUDE_HEADER",
        value_delimiter = ','
    )]
    pub exclude_headers: Vec<HeaderName>,

    /// Compare no response headers at all.
    #[arg(long, env = "SHADOWDIFF_EXCLUDE_ALL_HEADERS", value_parser = BoolishValueParser::new())]
    pub exclude_all_headers: bool,

    /// Time allowed for one line diff of a text body; past it the diff reports coarser regions.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_TEXT_DIFF_TIMEOUT",
          default_value_t = Span(AnalysisSettings::DEFAULT_TEXT_DIFF_TIMEOUT), value_parser = parse_span)]
    pub text_diff_timeout: Span,

    /// A FileDescriptorSet giving gRPC methods' message types (`protoc --include_imports --descriptor_set_out`,
    /// `buf build -o`); repeat the flag for several.
    #[arg(
        long = "grpc-descriptor-set",
        value_name = "FILE",
        env = "SHADOWDIFF_GRPC_DESCRIPTOR_SET",
        value_delimiter = ','
    )]
    pub grpc_descriptor_sets: Vec<PathBuf>,

    /// A `.proto` file compiled at start for gRPC methods' message types (no protoc needed); repeat the flag
    /// for several.
    #[arg(
        long = "grpc-proto",
        value_name = "FILE",
        env = "SHADOWDIFF_GRPC_PROTO",
        value_delimiter = ','
    )]
    pub grpc_protos: Vec<PathBuf>,

    /// Where the `--grpc-proto` files' imports are found (default: beside each file); repeat the flag for
    /// several.
    #[arg(
        long = "grpc-proto-path",
        value_name = "DIR",
        env = "SHADOWDIFF_GRPC_PROTO_PATH",
        value_delimiter = ','
    )]
    pub grpc_proto_paths: Vec<PathBuf>,

    /// Ask primary's gRPC server reflection (v1, else v1alpha) for the schema of each service the given schemas
    /// lack, once per service, the first time it is called.
    #[arg(long, env = "SHADOWDIFF_GRPC_REFLECTION", value_parser = BoolishValueParser::new())]
    pub grpc_reflection: bool,

    /// Exchanges analysed at once (default: the number of CPU cores).
    #[arg(long, value_name = "N", env = "SHADOWDIFF_ANALYSIS_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub analysis_workers: Option<u32>,

    /// Analysed exchanges waiting to be stored; when full, new ones are dropped and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_ANALYSIS_QUEUE",
          default_value_t = AnalysisSettings::DEFAULT_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub analysis_queue: u32,
}

/// How counts become verdicts.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Verdicts")]
pub struct VerdictArgs {
    /// A path is a regression only if |raw - noise| / (raw + noise) exceeds this percentage (Diffy's relative
    /// threshold).
    #[arg(long, value_name = "PERCENT", env = "SHADOWDIFF_THRESHOLD_RELATIVE",
          default_value_t = Thresholds::DEFAULT_RELATIVE_PERCENT, value_parser = parse_percent)]
    pub threshold_relative: f64,

    /// ... and |raw - noise| / requests exceeds this percentage (Diffy's absolute threshold).
    #[arg(long, value_name = "PERCENT", env = "SHADOWDIFF_THRESHOLD_ABSOLUTE",
          default_value_t = Thresholds::DEFAULT_ABSOLUTE_PERCENT, value_parser = parse_percent)]
    pub threshold_absolute: f64,

    /// An endpoint has a latency regression when the candidate's p99 exceeds this many times secondary's, which
    /// runs the current code on the candidate's path (at least 100 samples each).
    #[arg(long, value_name = "FACTOR", env = "SHADOWDIFF_LATENCY_FACTOR",
          default_value_t = VerdictSettings::DEFAULT_LATENCY_FACTOR, value_parser = parse_factor)]
    pub latency_factor: f64,
}

/// A percentage from 0 to 100 (`20` or `20%`).
fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("`{text}` is out of range; expected 0 to 100"));
    }
    Ok(value)
}

/// A factor of 1 or more.
fn parse_factor(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !value.is_finite() || value < 1.0 {
        return Err(format!("`{text}` must be a number of 1 or more"));
    }
    Ok(value)
}

/// Where the three upstreams are and how they are reached.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Upstreams")]
pub struct UpstreamArgs {
    /// The current version; its response goes back to the caller by default. http:// or https://, with an
    /// optional path prefix.
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_PRIMARY")]
    pub primary: UpstreamUrl,

    /// A second instance of the current version: what differs between it and primary is noise. Without it,
    /// primary is asked a second time (safe methods only; others get no noise baseline), which misses noise
    /// that differs between instances (caches, per-instance state): give one where you can.
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_SECONDARY")]
    pub secondary: Option<UpstreamUrl>,

    /// The new version under test.
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_CANDIDATE")]
    pub candidate: UpstreamUrl,

    /// Speak HTTP/2 to the upstreams (h2c prior knowledge for http://, ALPN for https://) instead of HTTP/1.1.
    #[arg(long, env = "SHADOWDIFF_UPSTREAM_HTTP2", value_parser = BoolishValueParser::new())]
    pub upstream_http2: bool,

    /// A PEM file of extra CA certificates trusted for https:// upstreams, besides the system's.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Time allowed to open a connection to an upstream.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_CONNECT_TIMEOUT",
          default_value_t = Span(UpstreamSettings::DEFAULT_CONNECT_TIMEOUT), value_parser = parse_span)]
    pub connect_timeout: Span,

    /// How long an idle pooled connection to an upstream is kept; keep it below the upstreams' own keep-alive
    /// timeout so that a connection is never reused just as the upstream closes it.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_UPSTREAM_IDLE_TIMEOUT",
          default_value_t = Span(UpstreamSettings::DEFAULT_IDLE_TIMEOUT), value_parser = parse_span)]
    pub upstream_idle_timeout: Span,

    /// Time allowed for the upstream that answers the caller to send its response headers; past it the caller
    /// gets 502.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_RESPONSE_TIMEOUT",
          default_value_t = Span(UpstreamSettings::DEFAULT_RESPONSE_TIMEOUT), value_parser = parse_span)]
    pub response_timeout: Span,

    /// Time allowed for a whole shadow request (connect, headers and body); past it the shadow counts as a
    /// timeout.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_SHADOW_TIMEOUT",
          default_value_t = Span(UpstreamSettings::DEFAULT_SHADOW_TIMEOUT), value_parser = parse_span)]
    pub shadow_timeout: Span,
}

/// The proxy listener.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Proxy")]
pub struct ProxyArgs {
    /// Address the proxy listens on for callers.
    #[arg(long, value_name = "ADDR", env = "SHADOWDIFF_LISTEN", default_value_t = ProxySettings::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Which upstream's response the caller gets.
    #[arg(
        long,
        value_enum,
        env = "SHADOWDIFF_RESPONSE_MODE",
        default_value_t = ProxySettings::DEFAULT_RESPONSE_MODE
    )]
    pub response_mode: ResponseMode,

    /// On SIGINT or SIGTERM, time allowed for in-flight caller requests to finish.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_SHUTDOWN_GRACE",
          default_value_t = Span(ProxySettings::DEFAULT_SHUTDOWN_GRACE), value_parser = parse_span)]
    pub shutdown_grace: Span,

    /// Append every shadowed request (time, method, URI, headers, body) to this JSON-lines file, secrets
    /// redacted as in the store, for `shadowdiff replay`.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_RECORD")]
    pub record: Option<PathBuf>,

    /// Callers whose X-Forwarded-For/Proto/Host and Forwarded headers are believed (load balancers in front),
    /// as CIDR networks, or `none`; other callers' are replaced by what the proxy sees. By default loopback
    /// and the private ranges.
    #[arg(long, value_name = "CIDR,...", env = "SHADOWDIFF_TRUSTED_PROXIES",
          default_value_t = TrustedProxies::private_ranges())]
    pub trusted_proxies: TrustedProxies,

    /// Threads that serve callers, each with its own runtime and pools to the upstreams, all accepting from the
    /// proxy's listener, so that a request and its answer never change thread. By default one per core.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_CALLER_THREADS",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub caller_threads: Option<u32>,

    /// Most caller connections open at once; past it a new connection is closed at once and counted, so that
    /// idle or slow callers cannot take every file descriptor.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_MAX_CONNECTIONS",
          default_value_t = ProxySettings::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest a caller may take to send a request's head; past it the connection is closed and counted.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_CALLER_HEADER_TIMEOUT",
          default_value_t = Span(ProxySettings::DEFAULT_HEADER_TIMEOUT), value_parser = parse_interval_span)]
    pub caller_header_timeout: Span,

    /// Longest a caller may take to send a body that is read to be shared with the shadows (up to --max-body);
    /// past it the caller gets 408 and it is counted.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_CALLER_BODY_TIMEOUT",
          default_value_t = Span(ProxySettings::DEFAULT_BODY_TIMEOUT), value_parser = parse_interval_span)]
    pub caller_body_timeout: Span,
}

/// Which requests are shadowed, and how the copies are sent.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Shadowing")]
pub struct ShadowArgs {
    /// Shadow every method, including POST, PUT, PATCH and DELETE (their side effects then happen three times).
    #[arg(long, env = "SHADOWDIFF_ALLOW_SIDE_EFFECTS", value_parser = BoolishValueParser::new())]
    pub allow_side_effects: bool,

    /// Methods that are shadowed; other methods go to primary only.
    #[arg(long, value_name = "LIST", env = "SHADOWDIFF_SHADOW_METHODS", default_value_t = ShadowSettings::default_methods())]
    pub shadow_methods: MethodList,

    /// Share of requests that are shadowed, from 0 to 1 (or a percentage).
    #[arg(long, value_name = "RATE", env = "SHADOWDIFF_SAMPLE_RATE", default_value_t = Fraction(ShadowSettings::DEFAULT_SAMPLE_RATE))]
    pub sample_rate: Fraction,

    /// Sample by a hash of this request header's value, so that one key (a user id, a session) is always in or
    /// always out; requests without the header are sampled at random.
    #[arg(long, value_name = "NAME", env = "SHADOWDIFF_SAMPLE_KEY_HEADER")]
    pub sample_key_header: Option<HeaderName>,

    /// Append `-shadow` to the Host sent to secondary and candidate (Envoy/Istio convention), so that services
    /// can tell shadow traffic and skip writes.
    #[arg(long, env = "SHADOWDIFF_SHADOW_HOST_SUFFIX", value_parser = BoolishValueParser::new())]
    pub shadow_host_suffix: bool,

    /// Send the caller's Host header to the upstreams instead of each upstream's own host.
    #[arg(long, env = "SHADOWDIFF_PRESERVE_HOST", value_parser = BoolishValueParser::new())]
    pub preserve_host: bool,

    /// Largest request or response body kept for comparison; a larger one still reaches its destination whole,
    /// streamed, and is marked too large.
    #[arg(long, value_name = "SIZE", env = "SHADOWDIFF_MAX_BODY", default_value_t = ByteSize(ShadowSettings::DEFAULT_MAX_BODY as u64))]
    pub max_body: ByteSize,

    /// Most shadow requests in flight per upstream; beyond it a shadow request is shed and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_MAX_SHADOW_INFLIGHT",
          default_value_t = ShadowSettings::DEFAULT_MAX_INFLIGHT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_shadow_inflight: u32,

    /// Threads that carry shadow work (shadow requests, capture, analysis hand-off, the store writer), each with
    /// its own event loop (default: one per CPU core). They run below the callers' threads.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_SHADOW_THREADS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shadow_threads: Option<u32>,

    /// Nice value of the shadow threads and the analysis (0 to 19): in the batch scheduling class, this much
    /// below the callers' threads, which are preferred whenever they wake.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_SHADOW_NICE",
          default_value_t = LaneSettings::DEFAULT_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub shadow_nice: i32,

    /// Scheduling class of the shadow threads: `batch` keeps them a share of a saturated CPU; `idle` lets them
    /// run only on CPU time no other thread on the machine wants (a niced one included), so that a caller's
    /// thread always preempts them at once.
    #[arg(long, value_enum, value_name = "CLASS", env = "SHADOWDIFF_SHADOW_SCHEDULING", default_value_t = ShadowScheduling::Batch)]
    pub shadow_scheduling: ShadowScheduling,

    /// Endpoint template that wins over the automatic one, such as `/users/{id}/orders` or
    /// `GET /search/{term}`; repeat the flag (or comma-separate) for several.
    #[arg(
        long = "endpoint",
        value_name = "PATTERN",
        env = "SHADOWDIFF_ENDPOINT",
        value_delimiter = ','
    )]
    pub endpoints: Vec<EndpointPattern>,

    /// A path position (same method, segment count and template before it) that sees more distinct values
    /// than this (slugs, user names, dates) becomes `{param}` in endpoint names; numbers, UUIDs and long hex
    /// are `{id}` at once.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_ENDPOINT_CLUSTER_THRESHOLD",
          default_value_t = NamingSettings::DEFAULT_CLUSTER_THRESHOLD as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub endpoint_cluster_threshold: u32,

    /// Most endpoint names per run; past it, a new name (a path, a Canonical-Resource value) is recorded as
    /// `METHOD {other}` and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_MAX_ENDPOINTS",
          default_value_t = NamingSettings::DEFAULT_MAX_ENDPOINTS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_endpoints: u32,

    /// Requests never shadowed, sent to primary alone: an endpoint template or path glob with an optional
    /// method (`POST /oauth/token`, `/logout`, `/links/{token}`, `/admin/**`), for one-time links, logouts and
    /// token exchanges that must not happen three times; repeat the flag (or comma-separate) for several.
    #[arg(long = "no-shadow", value_name = "PATTERN", env = "SHADOWDIFF_NO_SHADOW",
          value_delimiter = ',', value_parser = EndpointGlob::parse_template)]
    pub no_shadow: Vec<EndpointGlob>,

    /// Memory all shadow work may hold (request and response bodies in flight, queued exchanges, analysis,
    /// the store's buffer); past it, new shadow work is shed (the caller is still answered) and counted.
    #[arg(long, value_name = "SIZE", env = "SHADOWDIFF_MEMORY_BUDGET", default_value_t = ByteSize(MemoryBudget::DEFAULT_LIMIT as u64))]
    pub memory_budget: ByteSize,

    /// Completed exchanges waiting for analysis; when full, new ones are dropped and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_EXCHANGE_QUEUE",
          default_value_t = ProxySettings::DEFAULT_EXCHANGE_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub exchange_queue: u32,
}

/// The admin listener: health, metrics and (later) the report.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Admin")]
pub struct AdminArgs {
    /// Address of the admin listener (health, metrics, dashboard); loopback by default.
    #[arg(long, value_name = "ADDR", env = "SHADOWDIFF_ADMIN_LISTEN", default_value_t = WebSettings::DEFAULT_LISTEN)]
    pub admin_listen: SocketAddr,

    /// Token every page, API call and /metrics then needs (`Authorization: Bearer TOKEN`, or the login form's
    /// cookie); health checks stay open. Prefer the environment variable to the flag. Without a token, keep
    /// the admin listener on loopback.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SHADOWDIFF_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// The URL people open the dashboard at, when it is not the listener's own address (a load balancer, TLS
    /// in front): its host is served, its origin accepted for changes, and with https the session cookie is
    /// `Secure`.
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_ADMIN_PUBLIC_URL", value_parser = parse_public_url)]
    pub admin_public_url: Option<http::Uri>,

    /// Another name the admin listener answers to without a token (`dash.internal`, or with a port); repeat
    /// the flag (or comma-separate) for several. Requests naming any other host are refused, so that a web
    /// page cannot rebind its own name to this listener and read it.
    #[arg(
        long = "admin-allowed-host",
        value_name = "HOST",
        env = "SHADOWDIFF_ADMIN_ALLOWED_HOST",
        value_delimiter = ','
    )]
    pub admin_allowed_hosts: Vec<String>,

    /// How long a login to the dashboard lasts.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_ADMIN_SESSION_TTL",
          default_value_t = Span(WebSettings::DEFAULT_SESSION_TTL), value_parser = parse_interval_span)]
    pub admin_session_ttl: Span,

    /// Post a message here when a change first appears in the run, when the run's verdict flips, and
    /// when the process stops (a Slack incoming webhook, or any URL with `--notify-format json`); repeat the
    /// flag for several. Links point at `--admin-public-url` when set.
    #[arg(long = "notify-url", value_name = "URL", env = "SHADOWDIFF_NOTIFY_URL", value_delimiter = ',',
          value_parser = parse_public_url, hide_env_values = true)]
    pub notify_urls: Vec<http::Uri>,

    /// How notifications are written.
    #[arg(long, value_enum, env = "SHADOWDIFF_NOTIFY_FORMAT", default_value_t = NotifyFormat::Slack)]
    pub notify_format: NotifyFormat,

    /// How often the run's verdict is worked out from the store, for the verdict gauges on /metrics and for
    /// notifications.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_VERDICT_REFRESH",
          default_value_t = Span(MonitorSettings::DEFAULT_REFRESH), value_parser = parse_interval_span)]
    pub verdict_refresh: Span,
}

/// An http:// or https:// URL with a host.
fn parse_public_url(text: &str) -> Result<http::Uri, String> {
    let url: http::Uri = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a URL"))?;
    match (url.scheme_str(), url.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(url),
        _ => Err(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        )),
    }
}

impl ServeArgs {
    /// Each component's settings, as these flags give them.
    pub fn settings(self) -> AppSettings {
        let mut settings = self.instance.settings();
        self.proxy.apply(&mut settings.proxy);
        settings.notify = NotifySettings {
            urls: self.admin.notify_urls.clone(),
            format: self.admin.notify_format,
            dashboard: None,
        };
        settings.monitor = MonitorSettings {
            refresh: self.admin.verdict_refresh.into(),
        };
        settings.web = self.admin.settings();
        settings
    }
}

impl InstanceArgs {
    /// Each component's settings, as these flags give them; the listeners at their defaults.
    pub fn settings(self) -> AppSettings {
        let mut settings = AppSettings::new(self.upstreams.settings());
        self.shadow.apply(&mut settings);
        settings.analysis = self.analysis.settings();
        settings.verdicts = self.verdicts.settings();
        settings.store = self.database.settings();
        self.store.apply(&mut settings);
        settings
    }
}

impl TelemetryArgs {
    pub fn settings(&self) -> TelemetrySettings {
        TelemetrySettings {
            format: self.log_format,
            filter: self.log.clone(),
        }
    }
}

impl DatabaseArgs {
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            database_url: self.database_url.clone(),
            connections: self.store_connections,
        }
    }
}

impl UpstreamArgs {
    pub fn settings(&self) -> UpstreamSettings {
        let (secondary, baseline) = match &self.secondary {
            Some(secondary) => (secondary.clone(), Baseline::Secondary),
            None => (self.primary.clone(), Baseline::PrimaryTwice),
        };
        UpstreamSettings {
            primary: self.primary.clone(),
            secondary,
            baseline,
            candidate: self.candidate.clone(),
            http2: self.upstream_http2,
            ca_file: self.upstream_ca.clone(),
            connect_timeout: self.connect_timeout.into(),
            idle_timeout: self.upstream_idle_timeout.into(),
            response_timeout: self.response_timeout.into(),
            shadow_timeout: self.shadow_timeout.into(),
        }
    }
}

impl ProxyArgs {
    fn apply(self, proxy: &mut ProxySettings) {
        proxy.listen = self.listen;
        proxy.response_mode = self.response_mode;
        proxy.shutdown_grace = self.shutdown_grace.into();
        proxy.record = self.record;
        proxy.trusted_proxies = self.trusted_proxies;
        proxy.max_connections = self.max_connections as usize;
        proxy.header_timeout = self.caller_header_timeout.into();
        proxy.body_timeout = self.caller_body_timeout.into();
        proxy.caller_threads = self.caller_threads.map(|n| n as usize);
    }
}

impl ShadowArgs {
    /// Shadowing, endpoint naming and the memory budget.
    pub fn apply(self, settings: &mut AppSettings) {
        settings.proxy.shadow = ShadowSettings {
            allow_side_effects: self.allow_side_effects,
            methods: self.shadow_methods,
            sample_rate: self.sample_rate.0,
            sample_key_header: self.sample_key_header,
            host_suffix: self.shadow_host_suffix,
            preserve_host: self.preserve_host,
            max_body: self.max_body.as_usize(),
            max_inflight: self.max_shadow_inflight as usize,
            never: self.no_shadow,
            // From the rules file, read when the app is built.
            endpoint_rates: Vec::new(),
            rewrites: Default::default(),
        };
        settings.proxy.exchange_queue = self.exchange_queue as usize;
        settings.lane = LaneSettings {
            threads: self.shadow_threads.map(|n| n as usize),
            nice: self.shadow_nice,
            scheduling: self.shadow_scheduling,
        };
        settings.naming = NamingSettings {
            patterns: self.endpoints,
            cluster_threshold: self.endpoint_cluster_threshold as usize,
            max_endpoints: self.max_endpoints as usize,
        };
        settings.memory_budget = self.memory_budget.as_usize();
    }
}

impl AnalysisArgs {
    pub fn settings(self) -> AnalysisSettings {
        AnalysisSettings {
            rules: self.rules,
            max_decoded_body: self.max_decoded_body.as_usize(),
            strict_number_types: self.strict_number_types,
            exclude_headers: self.exclude_headers,
            exclude_all_headers: self.exclude_all_headers,
            text_diff_timeout: self.text_diff_timeout.into(),
            workers: self.analysis_workers.map(|n| n as usize),
            queue: self.analysis_queue as usize,
            grpc: GrpcSchemaSettings {
                descriptor_sets: self.grpc_descriptor_sets,
                protos: self.grpc_protos,
                proto_paths: self.grpc_proto_paths,
                reflection: self.grpc_reflection,
            },
            keys: KeySettings {
                threshold: self.key_threshold as usize,
            },
        }
    }
}

impl VerdictArgs {
    pub fn settings(&self) -> VerdictSettings {
        VerdictSettings {
            thresholds: Thresholds::from_percent(self.threshold_relative, self.threshold_absolute),
            latency_factor: self.latency_factor,
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

impl AdminArgs {
    pub fn settings(self) -> WebSettings {
        WebSettings {
            listen: self.admin_listen,
            token: self.admin_token,
            public_url: self.admin_public_url,
            allowed_hosts: self.admin_allowed_hosts,
            session_ttl: self.admin_session_ttl.into(),
        }
    }
}

/// `serve` parsed from these flags after three loopback upstreams, as the command line would (for unit tests).
#[cfg(test)]
pub(crate) fn serve_from(extra: &[&str]) -> Result<ServeArgs, String> {
    let mut args = vec![
        "shadowdiff",
        "serve",
        "--primary",
        "http://127.0.0.1:1",
        "--secondary",
        "http://127.0.0.1:2",
        "--candidate",
        "http://127.0.0.1:3",
    ];
    args.extend_from_slice(extra);
    match Cli::try_parse_from(args) {
        Ok(Cli {
            command: Command::Serve(serve),
            ..
        }) => Ok(serve),
        Ok(_) => Err("not parsed as serve".to_string()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_are_the_documented_ones() {
        let cli = Cli::try_parse_from([
            "shadowdiff",
            "serve",
            "--primary",
            "http://127.0.0.1:1",
            "--secondary",
            "http://127.0.0.1:2",
            "--candidate",
            "https://candidate.internal/v2",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve")
        };
        assert_eq!(args.proxy.listen.to_string(), "0.0.0.0:8880");
        assert_eq!(args.admin.admin_listen.to_string(), "127.0.0.1:8888");
        assert_eq!(args.instance.shadow.max_body, ByteSize(8 << 20));
        assert_eq!(args.instance.shadow.max_shadow_inflight, 1024);
        assert_eq!(
            args.instance.upstreams.shadow_timeout,
            Span(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            args.instance.shadow.shadow_methods.to_string(),
            "GET,HEAD,OPTIONS"
        );
        assert_eq!(args.proxy.response_mode, ResponseMode::Primary);
        assert_eq!(args.instance.upstreams.candidate.prefix(), "/v2");
        assert_eq!(args.instance.shadow.memory_budget, ByteSize(128 << 20));
        assert_eq!(args.instance.shadow.endpoint_cluster_threshold, 50);
        assert_eq!(args.instance.shadow.max_endpoints, 2000);
        assert_eq!(args.instance.store.sample_body_limit, ByteSize(64 << 10));
    }

    #[test]
    fn no_shadow_takes_templates_and_globs() {
        let serve = serve_from(&["--no-shadow", "/links/{token},POST /oauth/token"]).unwrap();
        let never = serve.instance.shadow.no_shadow;
        assert!(never[0].matches("GET /links/abc123"));
        assert!(!never[0].matches("GET /links/abc/more"));
        assert!(never[1].matches("POST /oauth/token"));
        assert!(!never[1].matches("GET /oauth/token"));
        assert!(serve_from(&["--no-shadow", "nonsense"]).is_err());
    }

    #[test]
    fn values_that_would_stop_a_task_are_refused_at_start() {
        let serve = serve_from;
        let error = serve(&["--store-flush-interval", "0s"]).unwrap_err();
        assert!(error.contains("must be longer than zero"), "{error}");
        assert!(
            serve(&["--shadow-timeout", "1000000000y"])
                .unwrap_err()
                .contains("too long")
        );
        assert!(serve(&["--store-batch-rows", "0"]).is_err());
        assert!(serve(&["--max-endpoints", "0"]).is_err());
        assert!(serve(&["--endpoint-cluster-threshold", "0"]).is_err());
        assert!(serve(&["--store-flush-interval", "250ms"]).is_ok());
    }
}
