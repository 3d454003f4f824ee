//! The caller's path: one request in, the responder's response out as soon as it answers; every other upstream
//! is reached from a background task, which also assembles the Exchange.
//!
//! Each path has its own file: `caller.rs` is what the caller waits for (accept, primary, the answer, tunnels,
//! `bad_gateway`), `shadow.rs` the work done on the lane (plans, background requests, the exchange's
//! completion), and `forward.rs` the request both of them address and send to an upstream.

mod caller;
mod forward;
mod introspection;
mod shadow;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::Semaphore;

use crate::analysis::rewrite::Rewrites;
use crate::budget::MemoryBudget;
use crate::endpoint::EndpointNamer;
use crate::exchange::Target;
use crate::graphql::GraphqlSettings;
use crate::graphql::persisted::PersistedQueries;
use crate::lane::Lane;
use crate::pipeline::recorder::Recording;
use crate::pipeline::{ExchangeSink, Sink};
use crate::proxy::ProxySettings;
use crate::proxy::headers::host_value;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::policy::ShadowPolicy;
use crate::proxy::upstream::{Baseline, UpstreamClient, UpstreamSettings};
use crate::values::{TrustedProxies, UpstreamUrl};

pub use caller::{CallerBody, CallerPeer, CallerResponse};

/// Everything the caller's path needs, shared by all connections.
pub struct Proxy {
    /// Base URLs, indexed by [`Target::index`].
    upstreams: [UpstreamUrl; 3],
    /// One pooled client per upstream for the caller's path (the responder, and primary for what is not
    /// shadowed), indexed likewise, for each caller thread: a connection is driven by the thread that opened
    /// it, so a caller's request and primary's answer stay on one thread.
    clients: Vec<[UpstreamClient; 3]>,
    /// One pooled client per upstream for each lane thread: a connection is driven by the thread that sends on
    /// it, and shares no pool (and no lock) with the caller's.
    shadow_clients: Vec<[UpstreamClient; 3]>,
    policy: ShadowPolicy,
    /// The upstream whose response the caller gets; `None` answers at once with an empty 200.
    responder: Option<Target>,
    max_body: usize,
    response_timeout: Duration,
    shadow_timeout: Duration,
    /// Longest wait for the responder's body to reach its end before the exchange is given up.
    capture_deadline: Duration,
    preserve_host: bool,
    shadow_host_suffix: bool,
    /// What secondary or candidate is sent instead of the caller's request (the rules file's `[[rewrite]]`).
    rewrites: Rewrites,
    /// No `--secondary`: primary is asked twice, for safe methods only.
    primary_twice: bool,
    /// Each upstream's own Host header, indexed by [`Target::index`]: plain, then with the shadow suffix.
    hosts: [[Option<HeaderValue>; 2]; 3],
    /// Callers whose forwarded headers are believed (`--trusted-proxies`).
    trusted_proxies: TrustedProxies,
    /// Longest a caller may take to send a body read for the shadows.
    body_timeout: Duration,
    /// Background requests in flight per upstream, bounded by `--max-shadow-inflight`.
    inflight: [Arc<Semaphore>; 3],
    /// Names exchanges by endpoint (and learns templates as it does).
    namer: Arc<EndpointNamer>,
    /// Which requests are GraphQL operations, shadowed by what they do and named after it.
    graphql: GraphqlSettings,
    /// The texts of the GraphQL persisted queries seen, by hash.
    persisted: PersistedQueries,
    /// What shadow work may hold (`--memory-budget`): request and captured bodies are charged to it.
    budget: Arc<MemoryBudget>,
    sink: ExchangeSink,
    /// Where shadowed requests are recorded (`--record`), if anywhere.
    recorder: Option<Sink<Recording>>,
    /// The caller's path's own counters (work shed for the budget is counted by the budget).
    metrics: ProxyMetrics,
    /// Where every background task runs: threads at a lower priority than the callers'.
    lane: Arc<Lane>,
}

/// The set of clients of the thread running here (its index among the lane's or the callers' threads), so that a
/// connection is driven by the thread that sends on it; off those threads, the first set.
fn of_thread(sets: &[[UpstreamClient; 3]], thread: Option<usize>) -> &[UpstreamClient; 3] {
    &sets[thread.unwrap_or(0) % sets.len()]
}

/// The connection pools to the three upstreams and their in-flight bounds, indexed by [`Target::index`], and the
/// lane that carries shadow work.
pub struct UpstreamPools {
    /// For the caller's path: one set per caller thread.
    pub clients: Vec<[UpstreamClient; 3]>,
    /// For the lane's background requests: one set per lane thread.
    pub shadow_clients: Vec<[UpstreamClient; 3]>,
    /// Background requests in flight per upstream (the app reads them for a gauge).
    pub inflight: [Arc<Semaphore>; 3],
    /// The threads that drive the shadow pools and every other background task.
    pub lane: Arc<Lane>,
}

impl Proxy {
    pub fn new(
        settings: &ProxySettings,
        upstreams: &UpstreamSettings,
        UpstreamPools {
            clients,
            shadow_clients,
            inflight,
            lane,
        }: UpstreamPools,
        sink: ExchangeSink,
        namer: Arc<EndpointNamer>,
        budget: Arc<MemoryBudget>,
        metrics: ProxyMetrics,
    ) -> Self {
        let response_timeout = upstreams.response_timeout;
        let shadow_timeout = upstreams.shadow_timeout;
        Self {
            upstreams: Target::ALL.map(|target| upstreams.url(target).clone()),
            clients,
            shadow_clients,
            policy: ShadowPolicy::new(&settings.shadow),
            responder: settings.response_mode.responder(),
            max_body: settings.shadow.max_body,
            response_timeout,
            shadow_timeout,
            capture_deadline: response_timeout.max(shadow_timeout),
            preserve_host: settings.shadow.preserve_host,
            hosts: Target::ALL.map(|target| {
                let authority = upstreams.url(target).authority().as_str();
                [false, true].map(|suffixed| host_value(authority, suffixed))
            }),
            shadow_host_suffix: settings.shadow.host_suffix,
            rewrites: settings.shadow.rewrites.clone(),
            primary_twice: upstreams.baseline == Baseline::PrimaryTwice,
            trusted_proxies: settings.trusted_proxies.clone(),
            body_timeout: settings.body_timeout,
            inflight,
            namer,
            graphql: settings.shadow.graphql.clone(),
            persisted: PersistedQueries::default(),
            budget,
            sink,
            recorder: None,
            metrics,
            lane,
        }
    }

    /// Records every shadowed request into this queue as well.
    pub fn with_recorder(mut self, recorder: Sink<Recording>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// The background tasks still running, to be awaited at shutdown.
    pub fn tasks(&self) -> &tokio_util::task::TaskTracker {
        self.lane.tasks()
    }
}
