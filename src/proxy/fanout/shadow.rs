//! The shadow path: each upstream's plan, the background requests on the lane, the exchange's completion.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use uuid::Uuid;

use super::Proxy;
use super::forward::Forward;
use crate::budget::{Charge, Stage, header_bytes};
use crate::exchange::{
    Exchange, Outcome, RecordedRequest, Target, UpstreamError, UpstreamResponse,
};
use crate::pipeline::metrics::DropReason;
use crate::pipeline::recorder::Recording;
use crate::proxy::capture::{TeeReport, read_capped};
use crate::proxy::metrics::{BodySide, UnshadowedReason};
use crate::proxy::request_tee::RequestCopy;
use crate::proxy::timing::head_latency;

/// How one upstream takes part in an exchange.
pub(super) enum Plan {
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

impl Proxy {
    /// Whether the charge can hold an exchange's heads and its background requests besides the bodies; past
    /// the budget the request goes to primary alone (counted).
    pub(super) fn charge_exchange(&self, charge: &mut Charge, headers: &HeaderMap) -> bool {
        charge.move_to(Stage::InFlight);
        if charge.try_grow(EXCHANGE_BYTES + 4 * header_bytes(headers) + self.background_bytes()) {
            return true;
        }
        self.metrics.unshadowed(UnshadowedReason::MemoryBudget);
        self.budget.shed(Stage::InFlight);
        false
    }

    /// How each upstream takes part: the responder through its tee's report, the others each holding an
    /// in-flight permit or shed over their bound.
    pub(super) fn plans(&self, method: &Method, report: oneshot::Receiver<TeeReport>) -> [Plan; 3] {
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
                    self.metrics.shadow_shed(target);
                    Plan::Shed
                }
            }
        })
    }

    /// Waits for the copy of a streamed request body, then completes the exchange with it; without a usable
    /// copy the shadows are not sent (counted as a request not shadowed). Their in-flight permits are taken
    /// only once the copy is there: an open stream holds none.
    pub(super) async fn complete_streamed_exchange(
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
                self.metrics.unshadowed(UnshadowedReason::StreamTooLong);
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
                self.metrics.body_too_large(BodySide::Request);
                UnshadowedReason::BodyTooLarge
            }
            RequestCopy::OverBudget => {
                self.budget.shed(Stage::Request);
                UnshadowedReason::MemoryBudget
            }
            RequestCopy::Unreadable => UnshadowedReason::BodyUnreadable,
        };
        self.metrics.unshadowed(reason);
    }

    /// What the background requests of one exchange hold while they run, besides their bodies.
    fn background_bytes(&self) -> usize {
        let background = Target::ALL.len() - usize::from(self.responder.is_some());
        background * BACKGROUND_REQUEST_BYTES
    }

    pub(super) async fn complete_exchange(
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
                    recorder.dropped(DropReason::MemoryBudget);
                    self.budget.shed(Stage::Recording);
                }
            }
        }
        let [primary, secondary, candidate] = plans;
        let secondary_as_primary = matches!(secondary, Plan::AsPrimary);
        let (primary, secondary, candidate) = tokio::join!(
            self.outcome(Target::Primary, primary, &forward, &request.body),
            self.outcome(
                Target::Secondary,
                secondary,
                &forward,
                forward.body_for(Target::Secondary, &request.body)
            ),
            self.outcome(
                Target::Candidate,
                candidate,
                &forward,
                forward.body_for(Target::Candidate, &request.body)
            ),
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
                Ok(response) if response.body.is_too_large() => {
                    self.metrics.body_too_large(BodySide::Response(target))
                }
                Err(error) if error.is_upstream_fault() => {
                    self.metrics.upstream_error(target, error);
                    tracing::debug!(%target, %error, "upstream gave no usable response");
                }
                _ => {}
            }
        }
        let graphql = self.graphql.read(
            &request.method,
            request.uri.path(),
            request.uri.query(),
            &request.headers,
            &request.body,
            &self.persisted,
        );
        let endpoint = match graphql {
            Some(operations) => self
                .namer
                .name_as(&request.method, crate::graphql::endpoint_name(&operations)),
            None => self
                .namer
                .name(&request.method, request.uri.path(), &request.headers),
        };
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
            self.budget.shed(Stage::InFlight);
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
