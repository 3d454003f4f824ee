//! What the proxy is told: where it listens, whose answer the caller gets, and which requests are shadowed how.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::analysis::rewrite::Rewrites;
use crate::analysis::rules::{EndpointGlob, SampleRate};
use crate::exchange::Target;
use crate::graphql::GraphqlSettings;
use crate::values::{MethodList, TrustedProxies};

/// Which upstream's response the caller receives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResponseMode {
    /// Primary's response (inline proxy).
    Primary,
    /// Secondary's response.
    Secondary,
    /// Candidate's response.
    Candidate,
    /// 200 with no body at once, before any upstream answers (mirror target behind Envoy, nginx or GoReplay).
    Empty,
}

impl ResponseMode {
    /// The upstream whose response the caller waits for, if any.
    pub fn responder(self) -> Option<Target> {
        match self {
            ResponseMode::Primary => Some(Target::Primary),
            ResponseMode::Secondary => Some(Target::Secondary),
            ResponseMode::Candidate => Some(Target::Candidate),
            ResponseMode::Empty => None,
        }
    }
}

/// The proxy listener and what it does with each caller request.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Address the proxy listens on for callers.
    pub listen: SocketAddr,
    /// Which upstream's response the caller gets.
    pub response_mode: ResponseMode,
    /// On SIGINT or SIGTERM, time allowed for in-flight caller requests to finish.
    pub shutdown_grace: Duration,
    /// Where every shadowed request is appended as JSON lines, if anywhere.
    pub record: Option<PathBuf>,
    /// Which requests are shadowed, and how the copies are sent.
    pub shadow: ShadowSettings,
    /// Completed exchanges waiting for analysis; when full, new ones are dropped and counted.
    pub exchange_queue: usize,
    /// Callers whose `X-Forwarded-*` and `Forwarded` headers are kept; other callers' are replaced by what
    /// the proxy sees.
    pub trusted_proxies: TrustedProxies,
    /// Most caller connections open at once; past it, a new one is closed at once and counted.
    pub max_connections: usize,
    /// Longest a caller may take to send its request head.
    pub header_timeout: Duration,
    /// Longest a caller may take to send a body that is read to be shared with the shadows.
    pub body_timeout: Duration,
    /// Threads that serve callers, each with a runtime and upstream pools of its own, all accepting from the
    /// proxy's one listening socket; `None`: one per core.
    pub caller_threads: Option<usize>,
}

impl ProxySettings {
    /// Caller threads to start.
    pub fn caller_thread_count(&self) -> usize {
        crate::values::one_per_core(self.caller_threads).max(1)
    }

    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8880));
    pub const DEFAULT_RESPONSE_MODE: ResponseMode = ResponseMode::Primary;
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const DEFAULT_EXCHANGE_QUEUE: usize = 8192;
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            response_mode: Self::DEFAULT_RESPONSE_MODE,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            record: None,
            shadow: ShadowSettings::default(),
            exchange_queue: Self::DEFAULT_EXCHANGE_QUEUE,
            trusted_proxies: TrustedProxies::private_ranges(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            caller_threads: None,
        }
    }
}

/// Which requests are shadowed, and how the copies are sent.
#[derive(Clone, Debug)]
pub struct ShadowSettings {
    /// Shadow every method, including POST, PUT, PATCH and DELETE.
    pub allow_side_effects: bool,
    /// Methods that are shadowed (unless `allow_side_effects`); other methods go to primary only.
    pub methods: MethodList,
    /// Share of requests that are shadowed, from 0 to 1.
    pub sample_rate: f64,
    /// Sample by a hash of this request header's value, so that one key is always in or always out.
    pub sample_key_header: Option<HeaderName>,
    /// Append `-shadow` to the Host sent to secondary and candidate.
    pub host_suffix: bool,
    /// Send the caller's Host header to the upstreams instead of each upstream's own host.
    pub preserve_host: bool,
    /// Largest request or response body kept for comparison.
    pub max_body: usize,
    /// Most shadow requests in flight per upstream.
    pub max_inflight: usize,
    /// Requests that are never shadowed (`--no-shadow`): endpoint templates or path globs, with an optional
    /// method (`POST /oauth/token`, `/logout`, `/links/{token}`, `/admin/**`).
    pub never: Vec<EndpointGlob>,
    /// Per-endpoint sample rates (the rules file's `[[sample]]`), the first that matches winning over
    /// `sample_rate`.
    pub endpoint_rates: Vec<SampleRate>,
    /// What secondary or candidate is sent instead of the caller's request (the rules file's `[[rewrite]]`).
    pub rewrites: Rewrites,
    /// Which requests are GraphQL operations, shadowed by what they do rather than by their method.
    pub graphql: GraphqlSettings,
}

impl ShadowSettings {
    pub const DEFAULT_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];
    pub const DEFAULT_SAMPLE_RATE: f64 = 1.0;
    pub const DEFAULT_MAX_BODY: usize = 8 << 20;
    pub const DEFAULT_MAX_INFLIGHT: usize = 1024;

    pub fn default_methods() -> MethodList {
        MethodList(Self::DEFAULT_METHODS.to_vec())
    }
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            allow_side_effects: false,
            methods: Self::default_methods(),
            sample_rate: Self::DEFAULT_SAMPLE_RATE,
            sample_key_header: None,
            host_suffix: false,
            preserve_host: false,
            max_body: Self::DEFAULT_MAX_BODY,
            max_inflight: Self::DEFAULT_MAX_INFLIGHT,
            never: Vec::new(),
            endpoint_rates: Vec::new(),
            rewrites: Rewrites::default(),
            graphql: GraphqlSettings::default(),
        }
    }
}
