//! The caller's path: one request in, the responder's response out as soon as it answers; every other upstream
//! is reached from a background task, which also assembles the Exchange.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{ServeArgs, UpstreamUrl};
use crate::exchange::{
    Exchange, Outcome, RecordedRequest, Target, UpstreamError, UpstreamResponse,
};
use crate::metrics::{Metrics, UnshadowedReason};
use crate::pipeline::ExchangeSink;
use crate::proxy::capture::{TeeBody, TeeReport, read_capped};
use crate::proxy::endpoint::EndpointNamer;
use crate::proxy::headers::{ROLE_HEADER, add_forwarded, set_host, strip_hop_by_hop};
use crate::proxy::policy::ShadowPolicy;
use crate::proxy::request_body::{self, RequestBody};
use crate::proxy::upstream::{UpstreamBody, UpstreamClient, buffered, streamed};

/// The body the caller receives.
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

/// The caller's request after header hygiene, ready to be addressed to any upstream.
struct Forward {
    method: Method,
    /// The caller's HTTP version, which the response is given back in.
    version: Version,
    path_and_query: String,
    headers: HeaderMap,
    caller_host: Option<HeaderValue>,
}

impl Forward {
    fn new(parts: &http::request::Parts, caller: IpAddr) -> Self {
        let mut headers = parts.headers.clone();
        // HTTP/2 callers name the host in :authority rather than a Host header.
        let caller_host = headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        });
        strip_hop_by_hop(&mut headers);
        headers.remove(HOST);
        // A caller must not be able to pose as a shadow copy.
        headers.remove(ROLE_HEADER);
        add_forwarded(&mut headers, caller, caller_host.as_ref());
        Self {
            method: parts.method.clone(),
            version: parts.version,
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
            headers,
            caller_host,
        }
    }
}

/// How one upstream takes part in an exchange.
// Three of these live in one task per exchange; boxing the request would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Plan {
    /// It answers the caller; its tee reports on this channel.
    Responder(oneshot::Receiver<TeeReport>),
    /// It is reached in the background, holding one of its in-flight permits.
    Send(OwnedSemaphorePermit, Request<UpstreamBody>),
    /// Over its in-flight bound: not sent.
    Shed,
}

/// Everything the caller's path needs, shared by all connections.
pub struct Proxy {
    /// Base URLs, indexed by [`Target::index`].
    upstreams: [UpstreamUrl; 3],
    client: UpstreamClient,
    policy: ShadowPolicy,
    /// The upstream whose response the caller gets; `None` answers at once with an empty 200.
    responder: Option<Target>,
    max_body: usize,
    response_timeout: Duration,
    shadow_timeout: Duration,
    preserve_host: bool,
    shadow_host_suffix: bool,
    /// Background requests in flight per upstream, bounded by `--max-shadow-inflight`.
    inflight: [Arc<Semaphore>; 3],
    namer: EndpointNamer,
    sink: ExchangeSink,
    metrics: Arc<Metrics>,
    /// Background tasks, so that shutdown can wait for them.
    tasks: TaskTracker,
}

impl Proxy {
    pub fn new(
        args: &ServeArgs,
        client: UpstreamClient,
        inflight: [Arc<Semaphore>; 3],
        sink: ExchangeSink,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            upstreams: Target::ALL.map(|target| args.upstreams.url(target).clone()),
            client,
            policy: ShadowPolicy::new(&args.proxy),
            responder: args.proxy.response_mode.responder(),
            max_body: args.proxy.max_body.as_usize(),
            response_timeout: args.upstreams.response_timeout,
            shadow_timeout: args.upstreams.shadow_timeout,
            preserve_host: args.proxy.preserve_host,
            shadow_host_suffix: args.proxy.shadow_host_suffix,
            inflight,
            namer: EndpointNamer::new(args.proxy.endpoints.clone()),
            sink,
            metrics,
            tasks: TaskTracker::new(),
        }
    }

    /// The background tasks still running, to be awaited at shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Answers one caller request.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        caller: SocketAddr,
    ) -> CallerResponse {
        self.metrics.request_received();
        let (parts, body) = request.into_parts();
        if parts.method == Method::CONNECT {
            return plain_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "shadowdiff: CONNECT is not proxied\n",
            );
        }
        let forward = Forward::new(&parts, caller.ip());
        if let Err(reason) = self.policy.decide(&parts.method, &parts.headers) {
            self.metrics.unshadowed(reason);
            return self.primary_only(&forward, streamed(body)).await;
        }
        let body = match request_body::read_capped(body, self.max_body).await {
            RequestBody::Buffered(bytes) => bytes,
            RequestBody::TooLarge(stream) => {
                self.metrics.unshadowed(UnshadowedReason::BodyTooLarge);
                self.metrics.body_too_large("request");
                return self.primary_only(&forward, stream).await;
            }
            RequestBody::Unreadable(error) => {
                self.metrics.unshadowed(UnshadowedReason::BodyUnreadable);
                tracing::debug!(%error, "could not read the caller's request body");
                return plain_response(
                    StatusCode::BAD_REQUEST,
                    "shadowdiff: could not read the request body\n",
                );
            }
        };
        self.fan_out(parts, forward, body).await
    }

    /// A request that is not shadowed goes to primary alone, streamed both ways. In `--response-mode empty`
    /// (a mirror target) it is answered at once and sent nowhere: the mirrored original already reached
    /// production, and a copy sent to primary alone would compare with nothing.
    async fn primary_only(&self, forward: &Forward, body: UpstreamBody) -> CallerResponse {
        if self.responder.is_none() {
            return empty_ok();
        }
        let request = self.upstream_request(Target::Primary, forward, body);
        match self.send_for_caller(request).await {
            Ok(response) => {
                let (head, body) = response.into_parts();
                for_caller(head, forward.version, CallerBody::Direct(body))
            }
            Err(error) => {
                // Fanned-out requests count their failures with their exchange; this one has none.
                self.metrics.upstream_error(Target::Primary, &error);
                bad_gateway(Target::Primary, &error)
            }
        }
    }

    async fn fan_out(
        self: Arc<Self>,
        parts: http::request::Parts,
        forward: Forward,
        body: Bytes,
    ) -> CallerResponse {
        let id = Uuid::now_v7();
        let (report_tx, report_rx) = oneshot::channel();
        let mut report_rx = Some(report_rx);
        let plans = Target::ALL.map(|target| {
            if Some(target) == self.responder
                && let Some(rx) = report_rx.take()
            {
                return Plan::Responder(rx);
            }
            match self.inflight[target.index()].clone().try_acquire_owned() {
                Ok(permit) => Plan::Send(
                    permit,
                    self.upstream_request(target, &forward, buffered(body.clone())),
                ),
                Err(_) => {
                    self.metrics.shadow_shed(target);
                    Plan::Shed
                }
            }
        });
        let responder_request = self.responder.map(|target| {
            (
                target,
                self.upstream_request(target, &forward, buffered(body.clone())),
            )
        });
        let recorded = RecordedRequest {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
        };
        let span = tracing::info_span!("exchange", %id, endpoint = tracing::field::Empty);
        self.tasks.spawn(
            self.clone()
                .complete_exchange(id, SystemTime::now(), recorded, plans)
                .instrument(span),
        );

        let Some((target, request)) = responder_request else {
            return empty_ok();
        };
        let started = Instant::now();
        match self.send_for_caller(request).await {
            Ok(response) => {
                let (head, incoming) = response.into_parts();
                let upstream_headers = head.headers.clone();
                let tee = TeeBody::new(
                    incoming,
                    self.max_body,
                    head.status,
                    upstream_headers,
                    started,
                    report_tx,
                );
                for_caller(head, forward.version, CallerBody::Tee(tee))
            }
            Err(error) => {
                let _ = report_tx.send(TeeReport::failed(started, error.clone()));
                bad_gateway(target, &error)
            }
        }
    }

    /// Sends the request whose response the caller gets, waiting at most `--response-timeout` for its head.
    async fn send_for_caller(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.send(request)).await {
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
        let upstream = &self.upstreams[target.index()];
        let mut headers = forward.headers.clone();
        let is_copy = target != Target::Primary && Some(target) != self.responder;
        let host = match (&forward.caller_host, self.preserve_host) {
            (Some(caller_host), true) => caller_host
                .to_str()
                .unwrap_or(upstream.authority().as_str()),
            _ => upstream.authority().as_str(),
        };
        set_host(&mut headers, host, is_copy && self.shadow_host_suffix);
        if is_copy {
            headers.insert(ROLE_HEADER, HeaderValue::from_static(target.as_str()));
        }
        let mut request = Request::new(body);
        *request.method_mut() = forward.method.clone();
        *request.uri_mut() = upstream.join(&forward.path_and_query);
        *request.version_mut() = self.client.version();
        *request.headers_mut() = headers;
        request
    }

    async fn complete_exchange(
        self: Arc<Self>,
        id: Uuid,
        started_at: SystemTime,
        request: RecordedRequest,
        plans: [Plan; 3],
    ) {
        let [primary, secondary, candidate] = plans;
        let (primary, secondary, candidate) = tokio::join!(
            self.outcome(primary),
            self.outcome(secondary),
            self.outcome(candidate)
        );
        for (target, outcome) in [
            (Target::Primary, &primary),
            (Target::Secondary, &secondary),
            (Target::Candidate, &candidate),
        ] {
            match &outcome.result {
                Ok(response) if response.body.is_too_large() => {
                    self.metrics.body_too_large(target.as_str())
                }
                Ok(_) | Err(UpstreamError::Shed) => {}
                Err(error) => {
                    self.metrics.upstream_error(target, error);
                    tracing::debug!(%target, %error, "upstream gave no usable response");
                }
            }
        }
        let endpoint = self
            .namer
            .name(&request.method, request.uri.path(), &request.headers);
        tracing::Span::current().record("endpoint", endpoint.as_str());
        self.sink.offer(Exchange {
            id,
            started_at,
            endpoint,
            request,
            primary,
            secondary,
            candidate,
        });
    }

    async fn outcome(&self, plan: Plan) -> Outcome {
        match plan {
            Plan::Responder(report) => match report.await {
                Ok(report) => report.into_outcome(),
                // The tee is dropped without a report only if the response was never built.
                Err(_) => Outcome::failed(UpstreamError::Abandoned, Duration::ZERO),
            },
            Plan::Shed => Outcome::failed(UpstreamError::Shed, Duration::ZERO),
            Plan::Send(permit, request) => {
                let outcome = self.background_request(request).await;
                drop(permit);
                outcome
            }
        }
    }

    /// One background request, whole (connect, head and body up to the cap) within `--shadow-timeout`.
    async fn background_request(&self, request: Request<UpstreamBody>) -> Outcome {
        let started = Instant::now();
        let exchange = async {
            let response = self.client.send(request).await?;
            let (head, body) = response.into_parts();
            let body = read_capped(body, self.max_body).await?;
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
        Outcome {
            elapsed: started.elapsed(),
            result,
        }
    }
}

/// An upstream's response head made fit for the caller: hop-by-hop headers removed, in the caller's HTTP version
/// (an HTTP/1.0 upstream must not make an HTTP/1.1 caller's connection close).
fn for_caller(
    mut head: http::response::Parts,
    version: Version,
    body: CallerBody,
) -> CallerResponse {
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
