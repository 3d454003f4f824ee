//! The caller's path: one request in, the responder's response out as soon as it answers; every other upstream
//! is reached from a background task, which also assembles the Exchange.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::analysis::rewrite::{RewriteId, Rewrites};
use crate::budget::{Charge, MemoryBudget, Stage, header_bytes};
use crate::endpoint::EndpointNamer;
use crate::exchange::{
    Exchange, Outcome, RecordedRequest, Target, UpstreamError, UpstreamResponse,
};
use crate::grpc;
use crate::lane::{Handoff, Lane};
use crate::metrics::Metrics;
use crate::pipeline::metrics::{DropReason, Queue};
use crate::pipeline::recorder::Recording;
use crate::pipeline::{ExchangeSink, Sink};
use crate::proxy::ProxySettings;
use crate::proxy::capture::{TeeBody, TeeReport, read_capped};
use crate::proxy::headers::{
    ROLE_HEADER, add_forwarded, forwarded_for, host_value, is_forwarded, strip_hop_by_hop,
    strip_with,
};
use crate::proxy::metrics::{BodySide, CallerRejection, UnshadowedReason};
use crate::proxy::policy::ShadowPolicy;
use crate::proxy::request_body::{self, RequestBody};
use crate::proxy::request_tee::{RequestCopy, RequestTee};
use crate::proxy::timing::head_latency;
use crate::proxy::upstream::{
    Baseline, UpstreamBody, UpstreamClient, UpstreamSettings, buffered, streamed,
};
use crate::values::{TrustedProxies, UpstreamUrl};

/// The body the caller receives.
// One per response, for its whole life; boxing the tee would add an allocation to every request.
#[allow(clippy::large_enum_variant)]
pub enum CallerBody {
    /// The responder's body, copied for comparison on its way through.
    Tee(TeeBody),
    /// Primary's body for a request that is not shadowed: nothing to copy.
    Direct(Incoming),
    /// A response shadowdiff writes itself (502, the empty mirror answer).
    Full(Full<Bytes>),
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            CallerBody::Tee(body) => Pin::new(body).poll_frame(cx),
            CallerBody::Direct(body) => Pin::new(body).poll_frame(cx),
            CallerBody::Full(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CallerBody::Tee(body) => body.is_end_stream(),
            CallerBody::Direct(body) => body.is_end_stream(),
            CallerBody::Full(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CallerBody::Tee(body) => body.size_hint(),
            CallerBody::Direct(body) => body.size_hint(),
            CallerBody::Full(body) => body.size_hint(),
        }
    }
}

pub type CallerResponse = Response<CallerBody>;

/// The caller's request after header hygiene, addressed to each upstream.
struct Forward {
    method: Method,
    /// The caller's HTTP version, which the response is given back in.
    version: Version,
    /// The request URI on each upstream (its path prefix in front), indexed by [`Target::index`]; only primary's
    /// for a request sent to primary alone.
    uris: [Option<Uri>; 3],
    headers: HeaderMap,
    caller_host: Option<HeaderValue>,
    /// The rewrite (the rules file's `[[rewrite]]`) each upstream is sent, if any.
    rewritten: [Option<RewriteId>; 3],
}

impl Forward {
    /// For all three upstreams; `None` when the URI, with an upstream's path prefix in front, is too long to be
    /// a URI.
    fn new(
        parts: &http::request::Parts,
        caller: &CallerPeer,
        upstreams: &[UpstreamUrl; 3],
        rewrites: &Rewrites,
        metrics: &Metrics,
    ) -> Option<Self> {
        let mut rewritten = [None; 3];
        let mut uri_for = |target: Target| {
            let upstream = &upstreams[target.index()];
            // Without rewrites (the usual case) nothing is looked at.
            let rewrite = if rewrites.is_empty() {
                None
            } else {
                rewrites.request(target, &parts.uri)
            };
            match rewrite {
                Some((id, uri)) => {
                    rewritten[target.index()] = Some(id);
                    upstream.join_uri(&uri)
                }
                _ => upstream.join_uri(&parts.uri),
            }
        };
        let primary = upstreams[Target::Primary.index()].join_uri(&parts.uri)?;
        let secondary = uri_for(Target::Secondary)?;
        let candidate = uri_for(Target::Candidate)?;
        let uris = [Some(primary), Some(secondary), Some(candidate)];
        let mut forward = Self::with(parts, parts.headers.clone(), uris, caller, metrics);
        forward.rewritten = rewritten;
        Some(forward)
    }

    /// For primary alone, taking the caller's headers rather than copying them: the caller's path of a request
    /// that is not shadowed builds one URI and copies no header.
    fn for_primary(
        mut parts: http::request::Parts,
        caller: &CallerPeer,
        upstreams: &[UpstreamUrl; 3],
        metrics: &Metrics,
    ) -> Option<Self> {
        let primary = upstreams[Target::Primary.index()].join_uri(&parts.uri)?;
        let headers = std::mem::take(&mut parts.headers);
        Some(Self::with(
            &parts,
            headers,
            [Some(primary), None, None],
            caller,
            metrics,
        ))
    }

    fn with(
        parts: &http::request::Parts,
        mut headers: HeaderMap,
        uris: [Option<Uri>; 3],
        caller: &CallerPeer,
        metrics: &Metrics,
    ) -> Self {
        // The authority of an absolute-form request (or HTTP/2's :authority) names the host; Host otherwise.
        let caller_host = parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
            .or_else(|| headers.get(HOST).cloned());
        let mut dropped_forwarded = false;
        strip_with(&mut headers, |name| {
            if !caller.trusted && is_forwarded(name) {
                dropped_forwarded = true;
                return true;
            }
            // Host is set per upstream; a caller must not be able to pose as a shadow copy; the caller has been
            // told to continue already, and a buffered body has nothing left to wait for.
            name == HOST || name == ROLE_HEADER || name == EXPECT
        });
        if dropped_forwarded {
            metrics.proxy.forwarded_dropped();
        }
        add_forwarded(&mut headers, &caller.forwarded_for, caller_host.as_ref());
        Self {
            method: parts.method.clone(),
            version: parts.version,
            uris,
            headers,
            caller_host,
            rewritten: [None; 3],
        }
    }

    /// Methods that may be sent again when a pooled connection turned out to be dead (RFC 9110 §9.2.2).
    fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
    }
}

/// Who a caller connection comes from, worked out once when it is accepted rather than for each request.
pub struct CallerPeer {
    /// Whether its forwarded headers are believed (`--trusted-proxies`).
    trusted: bool,
    /// Its address as X-Forwarded-For writes it.
    forwarded_for: HeaderValue,
}

/// How one upstream takes part in an exchange.
enum Plan {
    /// It answers the caller; its tee reports on this channel.
    Responder(oneshot::Receiver<TeeReport>),
    /// It is reached in the background, holding one of its in-flight permits.
    Send(OwnedSemaphorePermit),
    /// Over its in-flight bound: not sent.
    Shed,
    /// Secondary without a `--secondary`, for a method that must not be sent twice: no request, and its
    /// outcome is primary's own, so the exchange has no noise baseline (nothing differs from primary).
    AsPrimary,
}

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
    /// What shadow work may hold (`--memory-budget`): request and captured bodies are charged to it.
    budget: Arc<MemoryBudget>,
    sink: ExchangeSink,
    /// Where shadowed requests are recorded (`--record`), if anywhere.
    recorder: Option<Sink<Recording>>,
    metrics: Arc<Metrics>,
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
        metrics: Arc<Metrics>,
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

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The background tasks still running, to be awaited at shutdown.
    pub fn tasks(&self) -> &tokio_util::task::TaskTracker {
        self.lane.tasks()
    }

    /// Who a newly accepted caller connection comes from, for every request it sends.
    pub fn peer(&self, addr: SocketAddr) -> Arc<CallerPeer> {
        Arc::new(CallerPeer {
            trusted: self.trusted_proxies.contains(addr.ip()),
            forwarded_for: forwarded_for(addr.ip()),
        })
    }

    /// Answers one caller request.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        caller: Arc<CallerPeer>,
    ) -> CallerResponse {
        self.metrics.proxy.request_received();
        if request.method() == Method::CONNECT {
            return plain_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "shadowdiff: CONNECT is not proxied\n",
            );
        }
        if request.method() == Method::OPTIONS && request.uri().path() == "*" {
            // A server-wide probe (`OPTIONS *`) is about the proxy itself: it has no path to forward.
            return empty_ok();
        }
        if is_upgrade(request.headers()) {
            return self.tunnel(request, &caller).await;
        }
        let (parts, body) = request.into_parts();
        let grpc_call = grpc::is_grpc(&parts.headers);
        if let Err(reason) = self
            .policy
            .decide_for(&parts.method, parts.uri.path(), &parts.headers)
        {
            self.metrics.proxy.unshadowed(reason);
            let Some(forward) =
                Forward::for_primary(parts, &caller, &self.upstreams, &self.metrics)
            else {
                return uri_too_long();
            };
            if grpc_call {
                return self.primary_only_streamed(forward, body).await;
            }
            return self.primary_only(forward, streamed(body)).await;
        }
        let Some(forward) = Forward::new(
            &parts,
            &caller,
            &self.upstreams,
            &self.rewrites,
            &self.metrics,
        ) else {
            self.metrics.proxy.unshadowed(UnshadowedReason::UriTooLong);
            return uri_too_long();
        };
        if let Some(responder) = self.responder
            && grpc_call
        {
            // A gRPC call's messages go to the responder as they come: a bidirectional stream sends its next
            // message only once it has read an answer.
            return self
                .fan_out_streaming(responder, parts, forward, body)
                .await;
        }
        let mut charge = self.budget.empty(Stage::Request);
        let read = request_body::read_capped(body, self.max_body, &mut charge);
        let Ok(read) = tokio::time::timeout(self.body_timeout, read).await else {
            // A caller trickling its body would hold a connection and its charge for as long as it liked.
            self.metrics
                .proxy
                .caller_rejected(CallerRejection::BodyTimeout);
            return plain_response(
                StatusCode::REQUEST_TIMEOUT,
                "shadowdiff: the request body did not arrive in time\n",
            );
        };
        let body = match read {
            RequestBody::Buffered(bytes) => bytes,
            RequestBody::TooLarge(stream) => {
                self.metrics
                    .proxy
                    .unshadowed(UnshadowedReason::BodyTooLarge);
                self.metrics.proxy.body_too_large(BodySide::Request);
                return self.primary_only(forward, stream).await;
            }
            RequestBody::OverBudget(stream) => {
                self.metrics
                    .proxy
                    .unshadowed(UnshadowedReason::MemoryBudget);
                self.metrics.budget.shed(Stage::Request);
                return self.primary_only(forward, stream).await;
            }
            RequestBody::Unreadable(error) => {
                self.metrics
                    .proxy
                    .unshadowed(UnshadowedReason::BodyUnreadable);
                tracing::debug!(%error, "could not read the caller's request body");
                return plain_response(
                    StatusCode::BAD_REQUEST,
                    "shadowdiff: could not read the request body\n",
                );
            }
        };
        self.fan_out(parts, forward, body, charge).await
    }

    /// A request that is not shadowed goes to primary alone, streamed both ways. In `--response-mode empty`
    /// (a mirror target) it is answered at once and sent nowhere: the mirrored original already reached
    /// production, and a copy sent to primary alone would compare with nothing.
    async fn primary_only(&self, forward: Forward, body: UpstreamBody) -> CallerResponse {
        if self.responder.is_none() {
            return empty_ok();
        }
        let version = forward.version;
        let request = self.sole_upstream_request(Target::Primary, forward, body);
        let response = self.send_for_caller(Target::Primary, request).await;
        self.primary_answer(response, version)
    }

    /// As [`Proxy::primary_only`], for a gRPC call: streamed, `--response-timeout` counted from the end of the
    /// caller's stream.
    async fn primary_only_streamed(&self, forward: Forward, body: Incoming) -> CallerResponse {
        if self.responder.is_none() {
            return empty_ok();
        }
        let version = forward.version;
        let (ended_tx, ended) = oneshot::channel();
        let body = RequestTee::passthrough(body).on_end(ended_tx);
        let request = self.sole_upstream_request(Target::Primary, forward, body.boxed_unsync());
        let response = self
            .send_streaming_for_caller(Target::Primary, request, ended)
            .await;
        self.primary_answer(response, version)
    }

    /// Primary's answer to a request sent to it alone, or a 502 naming it.
    fn primary_answer(
        &self,
        response: Result<Response<Incoming>, UpstreamError>,
        version: Version,
    ) -> CallerResponse {
        match response {
            Ok(response) => {
                let (head, body) = response.into_parts();
                for_caller(head, version, CallerBody::Direct(body))
            }
            Err(error) => {
                // Fanned-out requests count their failures with their exchange; this one has none.
                self.metrics.proxy.upstream_error(Target::Primary, &error);
                bad_gateway(Target::Primary, &error)
            }
        }
    }

    /// A protocol upgrade (WebSocket) is tunnelled to primary alone: a connection cannot be compared, and
    /// three upgraded connections would each expect their own client.
    async fn tunnel(&self, mut request: Request<Incoming>, caller: &CallerPeer) -> CallerResponse {
        self.metrics.proxy.unshadowed(UnshadowedReason::Upgrade);
        if self.responder.is_none() {
            return empty_ok();
        }
        let protocol = request.headers().get(UPGRADE).cloned();
        let caller_upgrade = hyper::upgrade::on(&mut request);
        let (parts, body) = request.into_parts();
        let Some(forward) = Forward::for_primary(parts, caller, &self.upstreams, &self.metrics)
        else {
            return uri_too_long();
        };
        let version = forward.version;
        let mut upstream_request =
            self.sole_upstream_request(Target::Primary, forward, streamed(body));
        if let Some(protocol) = protocol {
            upstream_request.headers_mut().insert(UPGRADE, protocol);
            upstream_request
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let mut response = match self
            .send_for_caller(Target::Primary, upstream_request)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                self.metrics.proxy.upstream_error(Target::Primary, &error);
                return bad_gateway(Target::Primary, &error);
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (head, body) = response.into_parts();
            return for_caller(head, version, CallerBody::Direct(body));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(caller_upgrade, upstream_upgrade) {
                Ok((caller, upstream)) => {
                    let (mut caller, mut upstream) = (TokioIo::new(caller), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut caller, &mut upstream).await;
                }
                Err(error) => tracing::debug!(%error, "upgrade did not complete"),
            }
        });
        // The switching response keeps its Connection and Upgrade headers: they are the point of it.
        let (mut head, _) = response.into_parts();
        head.version = version;
        Response::from_parts(head, CallerBody::Full(Full::new(Bytes::new())))
    }

    async fn fan_out(
        self: Arc<Self>,
        parts: http::request::Parts,
        forward: Forward,
        body: Bytes,
        mut charge: Charge,
    ) -> CallerResponse {
        // The exchange holds the request and three response heads besides the bodies, and each background
        // request a connection's buffers and its own state while it runs: charged before any shadow is sent, so
        // that past the budget the request goes to primary alone.
        if !self.charge_exchange(&mut charge, &parts.headers) {
            drop(charge);
            return self.primary_only(forward, buffered(body)).await;
        }
        let id = Uuid::now_v7();
        let (report_tx, report_rx) = Handoff::channel(&self.lane);
        let plans = self.plans(&parts.method, report_rx);
        let forward = Arc::new(forward);
        let recorded = recorded_request(parts, body.clone());
        let span = tracing::info_span!("exchange", %id, endpoint = tracing::field::Empty);
        let background = self.clone().complete_exchange(
            id,
            SystemTime::now(),
            recorded,
            forward.clone(),
            plans,
            charge,
        );
        self.lane.spawn(background.instrument(span));

        let Some(target) = self.responder else {
            return empty_ok();
        };
        let started = Instant::now();
        let response = self.send_buffered(target, &forward, &body, true).await;
        self.answer(target, &forward, started, response, report_tx)
    }

    /// Whether the charge can hold an exchange's heads and its background requests besides the bodies; past
    /// the budget the request goes to primary alone (counted).
    fn charge_exchange(&self, charge: &mut Charge, headers: &HeaderMap) -> bool {
        charge.move_to(Stage::InFlight);
        if charge.try_grow(EXCHANGE_BYTES + 4 * header_bytes(headers) + self.background_bytes()) {
            return true;
        }
        self.metrics
            .proxy
            .unshadowed(UnshadowedReason::MemoryBudget);
        self.metrics.budget.shed(Stage::InFlight);
        false
    }

    /// How each upstream takes part: the responder through its tee's report, the others each holding an
    /// in-flight permit or shed over their bound.
    fn plans(&self, method: &Method, report: oneshot::Receiver<TeeReport>) -> [Plan; 3] {
        let mut report = Some(report);
        Target::ALL.map(|target| {
            if Some(target) == self.responder
                && let Some(rx) = report.take()
            {
                return Plan::Responder(rx);
            }
            if target == Target::Secondary && self.primary_twice && !method.is_safe() {
                return Plan::AsPrimary;
            }
            match self.inflight[target.index()].clone().try_acquire_owned() {
                Ok(permit) => Plan::Send(permit),
                Err(_) => {
                    self.metrics.proxy.shadow_shed(target);
                    Plan::Shed
                }
            }
        })
    }

    /// A gRPC call: its request messages stream to the responder as the caller sends them, copied on the way;
    /// the shadows are sent the copy once the caller's stream has ended (and not at all when it grew past
    /// `--max-body` or the budget, counted).
    async fn fan_out_streaming(
        self: Arc<Self>,
        target: Target,
        parts: http::request::Parts,
        forward: Forward,
        body: Incoming,
    ) -> CallerResponse {
        let mut charge = self.budget.empty(Stage::InFlight);
        if !self.charge_exchange(&mut charge, &parts.headers) {
            drop(charge);
            return self.primary_only_streamed(forward, body).await;
        }
        let id = Uuid::now_v7();
        let (report_tx, report_rx) = Handoff::channel(&self.lane);
        let (copy_tx, copy_rx) = Handoff::channel(&self.lane);
        let forward = Arc::new(forward);
        let recorded = recorded_request(parts, Bytes::new());
        let span = tracing::info_span!("exchange", %id, endpoint = tracing::field::Empty);
        let background = self.clone().complete_streamed_exchange(
            (id, SystemTime::now()),
            recorded,
            forward.clone(),
            report_rx,
            charge,
            copy_rx,
        );
        self.lane.spawn(background.instrument(span));

        let (ended_tx, ended) = oneshot::channel();
        let tee = RequestTee::new(
            body,
            (self.max_body, self.budget.empty(Stage::Request)),
            copy_tx,
            self.capture_deadline,
        )
        .on_end(ended_tx);
        let started = Instant::now();
        // Not sent again on a dead connection: the body is already on its way.
        let request = self.upstream_request(target, &forward, tee.boxed_unsync());
        let response = self.send_streaming_for_caller(target, request, ended).await;
        self.answer(target, &forward, started, response, report_tx)
    }

    /// Sends a request whose body streams from the caller: a server may answer only once it has read the whole
    /// stream (a client-streaming gRPC call), so `--response-timeout` counts from the end of the body.
    async fn send_streaming_for_caller(
        &self,
        target: Target,
        request: Request<UpstreamBody>,
        ended: oneshot::Receiver<()>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let clients = of_thread(&self.clients, crate::proxy::callers::current_thread_index());
        let send = clients[target.index()].send(request);
        tokio::pin!(send);
        tokio::select! {
            result = &mut send => return result,
            // Ended, or the body was dropped (an error then comes from the send itself).
            _ = ended => {}
        }
        self.within_response_timeout(send).await
    }

    /// Waits for the copy of a streamed request body, then completes the exchange with it; without a usable
    /// copy the shadows are not sent (counted as a request not shadowed). Their in-flight permits are taken
    /// only once the copy is there: an open stream holds none.
    async fn complete_streamed_exchange(
        self: Arc<Self>,
        (id, started_at): (Uuid, SystemTime),
        mut request: RecordedRequest,
        forward: Arc<Forward>,
        report: oneshot::Receiver<TeeReport>,
        mut charge: Charge,
        copy: oneshot::Receiver<RequestCopy>,
    ) {
        let copy = match tokio::time::timeout(self.capture_deadline, copy).await {
            Ok(Ok(copy)) => copy,
            Ok(Err(_)) => RequestCopy::Unreadable,
            Err(_) => {
                self.metrics
                    .proxy
                    .unshadowed(UnshadowedReason::StreamTooLong);
                return;
            }
        };
        let reason = match copy {
            RequestCopy::Complete(body, held) => {
                charge.absorb(held);
                request.body = body;
                let plans = self.plans(&request.method, report);
                return self
                    .complete_exchange(id, started_at, request, forward, plans, charge)
                    .await;
            }
            RequestCopy::TooLarge => {
                self.metrics.proxy.body_too_large(BodySide::Request);
                UnshadowedReason::BodyTooLarge
            }
            RequestCopy::OverBudget => {
                self.metrics.budget.shed(Stage::Request);
                UnshadowedReason::MemoryBudget
            }
            RequestCopy::Unreadable => UnshadowedReason::BodyUnreadable,
        };
        self.metrics.proxy.unshadowed(reason);
    }

    /// The caller's response from the responder's answer, its body copied on the way through for the exchange
    /// (whose task hears of it through `report`); a 502 naming the responder when it failed.
    fn answer(
        &self,
        target: Target,
        forward: &Forward,
        started: Instant,
        response: Result<Response<Incoming>, UpstreamError>,
        report_tx: Handoff<TeeReport>,
    ) -> CallerResponse {
        match response {
            Ok(response) => {
                let elapsed = head_latency(&response).unwrap_or_else(|| started.elapsed());
                let (head, incoming) = response.into_parts();
                let upstream_headers = head.headers.clone();
                let bodiless = forward.method == Method::HEAD
                    || head.status.is_informational()
                    || head.status == StatusCode::NO_CONTENT
                    || head.status == StatusCode::NOT_MODIFIED;
                let tee = TeeBody::new(
                    incoming,
                    self.max_body,
                    self.budget.empty(Stage::InFlight),
                    bodiless,
                    head.status,
                    (upstream_headers, forward.version == Version::HTTP_2),
                    elapsed,
                    report_tx,
                );
                for_caller(head, forward.version, CallerBody::Tee(tee))
            }
            Err(error) => {
                report_tx.send(TeeReport::failed(started.elapsed(), error.clone()));
                bad_gateway(target, &error)
            }
        }
    }

    /// What the background requests of one exchange hold while they run, besides their bodies.
    fn background_bytes(&self) -> usize {
        let background = Target::ALL.len() - usize::from(self.responder.is_some());
        background * BACKGROUND_REQUEST_BYTES
    }

    /// Sends a buffered request; an idempotent one whose connection closed before any response came back is
    /// sent once more (a pooled connection that the upstream had just closed is the usual cause). Bounded by
    /// `--response-timeout` for the caller's upstream.
    async fn send_buffered(
        &self,
        target: Target,
        forward: &Forward,
        body: &Bytes,
        for_caller: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let attempt = || async {
            let request = self.upstream_request(target, forward, buffered(body.clone()));
            if for_caller {
                self.send_for_caller(target, request).await
            } else {
                let clients = of_thread(&self.shadow_clients, crate::lane::current_thread_index());
                clients[target.index()].send(request).await
            }
        };
        match attempt().await {
            Err(UpstreamError::Reset(reason)) if forward.is_idempotent() => {
                tracing::debug!(%target, %reason, "connection closed before a response; sending once more");
                attempt().await
            }
            other => other,
        }
    }

    /// Sends the request whose response the caller gets, waiting at most `--response-timeout` for its head.
    async fn send_for_caller(
        &self,
        target: Target,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let clients = of_thread(&self.clients, crate::proxy::callers::current_thread_index());
        self.within_response_timeout(clients[target.index()].send(request))
            .await
    }

    /// The responder's head, or a timeout past `--response-timeout`.
    async fn within_response_timeout(
        &self,
        send: impl Future<Output = Result<Response<Incoming>, UpstreamError>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(self.response_timeout)),
        }
    }

    /// Addresses the forwarded request to one upstream. Secondary and candidate requests that are copies (not
    /// the caller's answer) carry the role header and, with `--shadow-host-suffix`, the `-shadow` Host.
    fn upstream_request(
        &self,
        target: Target,
        forward: &Forward,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let mut headers = forward.headers.clone();
        if let Some(id) = forward.rewritten[target.index()] {
            self.rewrites.headers(id, &mut headers);
        }
        self.address(
            target,
            forward.method.clone(),
            forward.uris[target.index()].clone(),
            headers,
            forward.caller_host.as_ref(),
            body,
        )
    }

    /// As [`Proxy::upstream_request`], for the one upstream a request goes to: nothing is copied.
    fn sole_upstream_request(
        &self,
        target: Target,
        mut forward: Forward,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let uri = forward.uris[target.index()].take();
        self.address(
            target,
            forward.method,
            uri,
            forward.headers,
            forward.caller_host.as_ref(),
            body,
        )
    }

    fn address(
        &self,
        target: Target,
        method: Method,
        // Built for every upstream a request is sent to; `Forward::for_primary` is only sent to primary.
        uri: Option<Uri>,
        mut headers: HeaderMap,
        caller_host: Option<&HeaderValue>,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let is_copy = target != Target::Primary && Some(target) != self.responder;
        // Every set of clients speaks the same version.
        let client = &self.clients[0][target.index()];
        let grpc = grpc::is_grpc(&headers);
        let version = client.version_for(grpc);
        // Over HTTP/2 the host is the :authority, which names the host connected to: a gRPC call keeps it,
        // whatever `--preserve-host` and `--shadow-host-suffix` say (they are refused with `--upstream-http2`).
        let http1 = version != Version::HTTP_2;
        let suffixed = is_copy && self.shadow_host_suffix && http1;
        let host = match (caller_host, self.preserve_host && http1) {
            (Some(caller_host), true) => caller_host
                .to_str()
                .ok()
                .and_then(|caller_host| host_value(caller_host, suffixed)),
            _ => None,
        };
        if let Some(host) =
            host.or_else(|| self.hosts[target.index()][usize::from(suffixed)].clone())
        {
            headers.insert(HOST, host);
        }
        if is_copy {
            headers.insert(ROLE_HEADER, HeaderValue::from_static(target.as_str()));
        }
        if grpc {
            // gRPC servers want to hear that the client reads trailers (the call's status is in them); TE went
            // with the other hop-by-hop headers.
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        // An HTTP/1.1 client sends a GET or HEAD whose length it does not know with no body at all; a caller's
        // chunked body, streamed on, must keep its chunked framing to arrive.
        if version == Version::HTTP_11
            && matches!(method, Method::GET | Method::HEAD)
            && !body.is_end_stream()
            && body.size_hint().exact().is_none()
        {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri.unwrap_or_default();
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        request
    }

    async fn complete_exchange(
        self: Arc<Self>,
        id: Uuid,
        started_at: SystemTime,
        request: RecordedRequest,
        forward: Arc<Forward>,
        plans: [Plan; 3],
        mut charge: Charge,
    ) {
        // Recorded here, on the lane, rather than on the caller's path.
        if let Some(recorder) = &self.recorder {
            let size = request.body.len() + header_bytes(&request.headers) + EXCHANGE_BYTES;
            match self.budget.charge(Stage::Recording, size) {
                Some(charge) => {
                    let mut copy = request.clone();
                    copy.detach();
                    recorder.offer(Recording {
                        time: started_at,
                        request: copy,
                        charge,
                    })
                }
                None => {
                    self.metrics
                        .queues
                        .dropped(Queue::Recordings, DropReason::MemoryBudget);
                    self.metrics.budget.shed(Stage::Recording);
                }
            }
        }
        let [primary, secondary, candidate] = plans;
        let secondary_as_primary = matches!(secondary, Plan::AsPrimary);
        let (primary, secondary, candidate) = tokio::join!(
            self.outcome(Target::Primary, primary, &forward, &request.body),
            self.outcome(Target::Secondary, secondary, &forward, &request.body),
            self.outcome(Target::Candidate, candidate, &forward, &request.body),
        );
        let [
            (primary, held_primary),
            (secondary, held_secondary),
            (candidate, held_candidate),
        ] = [primary, secondary, candidate];
        let secondary = if secondary_as_primary {
            // The same bytes: the body is shared, not copied, and charged once.
            primary.clone()
        } else {
            secondary
        };
        // The background requests are done: what they held is let go, what they captured is kept.
        charge.shrink(self.background_bytes());
        for held in [held_primary, held_secondary, held_candidate] {
            charge.absorb(held);
        }
        for (target, outcome) in [
            (Target::Primary, &primary),
            (Target::Secondary, &secondary),
            (Target::Candidate, &candidate),
        ] {
            match &outcome.result {
                Ok(response) if response.body.is_too_large() => self
                    .metrics
                    .proxy
                    .body_too_large(BodySide::Response(target)),
                Err(error) if error.is_upstream_fault() => {
                    self.metrics.proxy.upstream_error(target, error);
                    tracing::debug!(%target, %error, "upstream gave no usable response");
                }
                _ => {}
            }
        }
        let endpoint = self
            .namer
            .name(&request.method, request.uri.path(), &request.headers);
        tracing::Span::current().record("endpoint", endpoint.as_str());
        let mut exchange = Exchange {
            id,
            started_at,
            endpoint,
            request,
            primary,
            secondary,
            candidate,
            charge: Charge::none(),
        };
        exchange.detach();
        // The heads were charged at a guess when the request came in; now they are known.
        let heads = exchange.head_bytes();
        let guessed = EXCHANGE_BYTES + 4 * header_bytes(&exchange.request.headers);
        if heads > guessed {
            charge.grow_up_to(heads - guessed);
        }
        charge.move_to(Stage::ExchangeQueue);
        exchange.charge = charge;
        if exchange.over_budget() {
            self.metrics.budget.shed(Stage::InFlight);
        }
        self.sink.offer(exchange);
    }

    /// One upstream's outcome, and the charge holding its body.
    async fn outcome(
        &self,
        target: Target,
        plan: Plan,
        forward: &Forward,
        body: &Bytes,
    ) -> (Outcome, Charge) {
        match plan {
            Plan::Responder(report) => {
                match tokio::time::timeout(self.capture_deadline, report).await {
                    Ok(Ok(report)) => report.into_outcome(),
                    // Not read to its end in time (a stalled caller, a stream that never ends), or never built.
                    Ok(Err(_)) | Err(_) => (
                        Outcome::failed(UpstreamError::Abandoned, Duration::ZERO),
                        Charge::none(),
                    ),
                }
            }
            Plan::Shed => (
                Outcome::failed(UpstreamError::Shed, Duration::ZERO),
                Charge::none(),
            ),
            // Replaced by primary's outcome once it is known.
            Plan::AsPrimary => (
                Outcome::failed(UpstreamError::Shed, Duration::ZERO),
                Charge::none(),
            ),
            Plan::Send(permit) => {
                // Boxed when it starts, on the lane: inline, the three requests' state would make the exchange's
                // task some 14 KiB, moved several times on the caller's thread on its way to the lane.
                let outcome = Box::pin(self.background_request(target, forward, body)).await;
                drop(permit);
                outcome
            }
        }
    }

    /// One background request, whole (connect, head and body up to the cap) within `--shadow-timeout`.
    async fn background_request(
        &self,
        target: Target,
        forward: &Forward,
        body: &Bytes,
    ) -> (Outcome, Charge) {
        let started = Instant::now();
        let mut head_elapsed = None;
        let mut held = Charge::none();
        let exchange = async {
            let response = self.send_buffered(target, forward, body, false).await?;
            // As the connection stamped it: the lane may have noticed the answer later than it came.
            head_elapsed = Some(head_latency(&response).unwrap_or_else(|| started.elapsed()));
            let (mut head, body) = response.into_parts();
            let (body, charge) = read_capped(
                body,
                self.max_body,
                self.budget.empty(Stage::InFlight),
                &mut head.headers,
            )
            .await?;
            held = charge;
            Ok(UpstreamResponse {
                status: head.status,
                headers: head.headers,
                body,
            })
        };
        let result = match tokio::time::timeout(self.shadow_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(self.shadow_timeout)),
        };
        let outcome = Outcome {
            elapsed: head_elapsed.unwrap_or_else(|| started.elapsed()),
            result,
        };
        (outcome, held)
    }
}

/// What an exchange holds besides its bodies and headers (the structure, ids, the task), roughly.
const EXCHANGE_BYTES: usize = 8 << 10;
/// What a background request holds while it runs, besides its body: its connection's read and write buffers and
/// state, the request, the client's futures. Measured in the soak benchmark: a thousand requests held by a
/// black-holed candidate took about this each.
const BACKGROUND_REQUEST_BYTES: usize = 32 << 10;

/// The caller's request as the exchange keeps it.
fn recorded_request(parts: http::request::Parts, body: Bytes) -> RecordedRequest {
    RecordedRequest {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` with an `Upgrade` header).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// An upstream's response head made fit for the caller: hop-by-hop headers removed, in the caller's HTTP version
/// (an HTTP/1.0 upstream must not make an HTTP/1.1 caller's connection close).
fn for_caller(
    mut head: http::response::Parts,
    version: Version,
    body: CallerBody,
) -> CallerResponse {
    // A message with both Transfer-Encoding and Content-Length is framed by the former (RFC 9112 §6.1); the
    // stale length must not reach the caller, who would cut the body short.
    if head.headers.contains_key(TRANSFER_ENCODING) {
        head.headers.remove(CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut head.headers);
    head.version = version;
    Response::from_parts(head, body)
}

/// The caller's answer when its upstream failed: 502 naming the upstream and the kind of failure (the details,
/// which may name internal hosts, go to the log only).
fn bad_gateway(target: Target, error: &UpstreamError) -> CallerResponse {
    tracing::warn!(%target, %error, "upstream failed; caller gets 502");
    plain_response(
        StatusCode::BAD_GATEWAY,
        &format!("shadowdiff: {target} upstream failed ({})\n", error.kind()),
    )
}

fn uri_too_long() -> CallerResponse {
    plain_response(StatusCode::URI_TOO_LONG, "shadowdiff: URI too long\n")
}

fn plain_response(status: StatusCode, text: &str) -> CallerResponse {
    let mut response = Response::new(CallerBody::Full(Full::new(Bytes::copy_from_slice(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty_ok() -> CallerResponse {
    let mut response = Response::new(CallerBody::Full(Full::new(Bytes::new())));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}
