//! The caller's path: accept, primary, the responder's answer streamed back, tunnels, `bad_gateway`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::forward::Forward;
use super::{Proxy, of_thread};
use crate::budget::{Charge, Stage};
use crate::exchange::{RecordedRequest, Target, UpstreamError, new_id};
use crate::graphql::request::{GraphqlRequest, Shadowing};
use crate::grpc;
use crate::lane::Handoff;
use crate::proxy::capture::{TeeBody, TeeReport};
use crate::proxy::headers::{forwarded_for, strip_hop_by_hop};
use crate::proxy::metrics::{BodySide, CallerRejection, UnshadowedReason};
use crate::proxy::request_body::{self, RequestBody};
use crate::proxy::request_tee::RequestTee;
use crate::proxy::timing::head_latency;
use crate::proxy::upstream::{UpstreamBody, buffered, streamed};

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

/// Who a caller connection comes from, worked out once when it is accepted rather than for each request.
pub struct CallerPeer {
    /// Whether its forwarded headers are believed (`--trusted-proxies`).
    pub(super) trusted: bool,
    /// Its address as X-Forwarded-For writes it.
    pub(super) forwarded_for: HeaderValue,
}

impl Proxy {
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
        self.metrics.request_received();
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
        let decision = self
            .policy
            .decide_for(&parts.method, parts.uri.path(), &parts.headers);
        // A POST may be a GraphQL query, which changes nothing whatever its method: its body decides. One the
        // policy shadows anyway is read too, for the persisted queries it teaches or asks by hash.
        let graphql_post = matches!(decision, Ok(()) | Err(UnshadowedReason::Method))
            && !grpc_call
            && self
                .graphql
                .may_be_graphql_post(&parts.method, parts.uri.path(), &parts.headers);
        let mut shadow_query = None;
        let decision = decision.and_then(|()| {
            shadow_query = self.graphql_get_decision(&parts)?;
            Ok(())
        });
        if let Err(reason) = decision
            && !graphql_post
        {
            self.metrics.unshadowed(reason);
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
        let Some(mut forward) = Forward::new(
            &parts,
            &caller,
            &self.upstreams,
            &self.rewrites,
            &self.metrics,
        ) else {
            self.metrics.unshadowed(UnshadowedReason::UriTooLong);
            return uri_too_long();
        };
        if let Some(query) = shadow_query
            && !forward.ask_shadows_with_query(parts.uri.path(), &query, &self.upstreams)
        {
            self.metrics.unshadowed(UnshadowedReason::UriTooLong);
            return self.primary_only(forward, streamed(body)).await;
        }
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
            self.metrics.caller_rejected(CallerRejection::BodyTimeout);
            return plain_response(
                StatusCode::REQUEST_TIMEOUT,
                "shadowdiff: the request body did not arrive in time\n",
            );
        };
        let body = match read {
            RequestBody::Buffered(bytes) => bytes,
            RequestBody::TooLarge(stream) => {
                self.metrics.unshadowed(UnshadowedReason::BodyTooLarge);
                self.metrics.body_too_large(BodySide::Request);
                return self.primary_only(forward, stream).await;
            }
            RequestBody::OverBudget(stream) => {
                self.metrics.unshadowed(UnshadowedReason::MemoryBudget);
                self.budget.shed(Stage::Request);
                return self.primary_only(forward, stream).await;
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
        if graphql_post {
            let read = self.graphql.read(
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                &parts.headers,
                &body,
                &self.persisted,
            );
            let decision = match read.as_ref().map(GraphqlRequest::shadowing) {
                Some(Shadowing::Queries) => {
                    self.policy
                        .decide_with(&parts.method, parts.uri.path(), &parts.headers, true)
                }
                // Not GraphQL (an ordinary POST), or not only queries: as the method policy says.
                _ if self.policy.allows_side_effects() => decision,
                Some(Shadowing::SideEffects) => Err(UnshadowedReason::GraphqlSideEffect),
                Some(Shadowing::Unknown) => Err(UnshadowedReason::GraphqlUnknown),
                None => decision,
            };
            let decision = decision.and_then(|()| match read {
                Some(read) if read.recovered_any() => {
                    self.with_persisted_texts(&mut forward, &read, &body, &mut charge)
                }
                _ => Ok(()),
            });
            if let Err(reason) = decision {
                self.metrics.unshadowed(reason);
                drop(charge);
                return self.primary_only(forward, buffered(body)).await;
            }
        }
        self.fan_out(parts, forward, body, charge).await
    }

    /// A GET the method policy shadows may still be a GraphQL mutation (`?query=mutation ...`), which must not
    /// happen three times unless `--allow-side-effects`. A query sent by its persisted hash alone and known is
    /// sent to the shadows with its text: the query string they are sent.
    fn graphql_get_decision(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<String>, UnshadowedReason> {
        if parts.method != Method::GET {
            return Ok(None);
        }
        let Some(read) = self.graphql.read(
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            &[],
            &self.persisted,
        ) else {
            return Ok(None);
        };
        match read.shadowing() {
            _ if self.policy.allows_side_effects() => {}
            Shadowing::Queries => {}
            Shadowing::SideEffects => return Err(UnshadowedReason::GraphqlSideEffect),
            Shadowing::Unknown => return Err(UnshadowedReason::GraphqlUnknown),
        }
        Ok(parts
            .uri
            .query()
            .and_then(|query| read.query_string_with_text(query)))
    }

    /// The shadows are sent the operations known only by their persisted hash with their texts, so that a
    /// candidate's cold cache is no difference; the new body is charged like the caller's.
    fn with_persisted_texts(
        &self,
        forward: &mut Forward,
        read: &GraphqlRequest,
        body: &[u8],
        charge: &mut Charge,
    ) -> Result<(), UnshadowedReason> {
        let Some(shadow_body) = read.body_with_texts(body) else {
            return Err(UnshadowedReason::GraphqlUnknown);
        };
        if !charge.try_grow(shadow_body.len()) {
            self.budget.shed(Stage::Request);
            return Err(UnshadowedReason::MemoryBudget);
        }
        forward.shadow_body = Some(Bytes::from(shadow_body));
        Ok(())
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
                self.metrics.upstream_error(Target::Primary, &error);
                bad_gateway(Target::Primary, &error)
            }
        }
    }

    /// A protocol upgrade (WebSocket) is tunnelled to primary alone: a connection cannot be compared, and
    /// three upgraded connections would each expect their own client.
    async fn tunnel(&self, mut request: Request<Incoming>, caller: &CallerPeer) -> CallerResponse {
        self.metrics.unshadowed(UnshadowedReason::Upgrade);
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
                self.metrics.upstream_error(Target::Primary, &error);
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
        let id = new_id();
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
        let id = new_id();
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

    /// Sends the request whose response the caller gets, waiting at most `--response-timeout` for its head.
    pub(super) async fn send_for_caller(
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
}

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
