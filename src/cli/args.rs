//! The command line: every setting as a flag, each also read from a `SHADOWDIFF_*` environment variable, with
//! the defaults its component declares; converted once into the components' settings.

pub mod admin;
pub mod analysis;
pub mod choices;
pub mod commands;
pub mod sealing;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use http::HeaderName;

use crate::analysis::rules::EndpointGlob;
use crate::app::AppSettings;
use crate::budget::MemoryBudget;
use crate::endpoint::{EndpointPattern, NamingSettings};
use crate::graphql::{GraphqlMode, GraphqlSettings};
use crate::lane::{LaneSettings, ShadowScheduling};
use crate::monitor::MonitorSettings;
use crate::notify::NotifySettings;
use crate::proxy::upstream::{Baseline, UpstreamSettings};
use crate::proxy::{ProxySettings, ResponseMode, ShadowSettings};
use crate::telemetry::{LogFormat, TelemetrySettings};
use crate::values::{
    ByteSize, Fraction, MethodList, Span, TrustedProxies, UpstreamUrl, parse_interval_span,
    parse_span,
};
pub use admin::AdminArgs;
pub use analysis::{AnalysisArgs, VerdictArgs};
pub use commands::{
    DemoArgs, DemoServiceArgs, DemoTrafficArgs, GateArgs, GateOptions, ReplayArgs, ReportArgs,
    TrafficArgs,
};
pub use store::{DatabaseArgs, StoreArgs};

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

    /// How GraphQL operations are recognised. A recognised query is shadowed whatever its method, a mutation or
    /// subscription (or a batch holding one) only with --allow-side-effects, an operation sent by its persisted
    /// hash alone not at all; `--no-shadow` still wins. A POST that may be one is read (within --max-body) before
    /// it is sent, as a shadowed request is.
    #[arg(
        long,
        value_name = "MODE",
        env = "SHADOWDIFF_GRAPHQL",
        default_value = "auto"
    )]
    pub graphql: GraphqlMode,

    /// A path whose requests are GraphQL operations (whatever their content type); repeat the flag (or
    /// comma-separate) for several.
    #[arg(long = "graphql-path", value_name = "PATH", env = "SHADOWDIFF_GRAPHQL_PATH",
          value_delimiter = ',', default_value = GraphqlSettings::DEFAULT_PATH)]
    pub graphql_paths: Vec<String>,

    /// Read primary's, secondary's and candidate's GraphQL schemas by introspection (on the first
    /// --graphql-path) at start and every --graphql-introspect-interval, and compare them under the endpoint
    /// `GraphQL schema`: a type, field or enum value removed, a type changed or an argument made required is
    /// breaking, an addition additive. A server that refuses introspection is said once and skipped.
    #[arg(long, env = "SHADOWDIFF_GRAPHQL_INTROSPECT", value_parser = BoolishValueParser::new())]
    pub graphql_introspect: bool,

    /// How often the schemas are read again with --graphql-introspect.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_GRAPHQL_INTROSPECT_INTERVAL",
          default_value_t = Span(GraphqlSettings::DEFAULT_INTROSPECT_INTERVAL), value_parser = parse_interval_span)]
    pub graphql_introspect_interval: Span,

    /// Memory all shadow work may hold (request and response bodies in flight, queued exchanges, analysis,
    /// the store's buffer); past it, new shadow work is shed (the caller is still answered) and counted.
    #[arg(long, value_name = "SIZE", env = "SHADOWDIFF_MEMORY_BUDGET", default_value_t = ByteSize(MemoryBudget::DEFAULT_LIMIT as u64))]
    pub memory_budget: ByteSize,

    /// Completed exchanges waiting for analysis; when full, new ones are dropped and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_EXCHANGE_QUEUE",
          default_value_t = ProxySettings::DEFAULT_EXCHANGE_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub exchange_queue: u32,
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
            graphql: GraphqlSettings {
                mode: self.graphql,
                paths: self.graphql_paths,
                introspect_every: self
                    .graphql_introspect
                    .then_some(self.graphql_introspect_interval.0),
            },
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

/// `serve` parsed from these flags after the upstreams (primary and secondary on loopback, the candidate behind
/// a path prefix), as the command line would (for unit tests).
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
        "https://candidate.internal/v2",
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
mod tests;
