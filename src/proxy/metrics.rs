//! What the caller's path counts: requests, the ones not shadowed and why, callers turned away, shadows shed,
//! upstream errors and bodies too large to keep. Counters the proxy touches per request are resolved once, so
//! the caller's path increments an atomic and never looks up a label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::exchange::{ErrorKind, Target, UpstreamError};
use crate::instruments::{counters_for, registered};

/// Why a caller's request was not shadowed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnshadowedReason {
    /// Its method is not in `--shadow-methods` (and `--allow-side-effects` is off).
    Method,
    /// `--sample-rate` left it out.
    SampledOut,
    /// Its body is larger than `--max-body`.
    BodyTooLarge,
    /// Its body could not be read from the caller.
    BodyUnreadable,
    /// A protocol upgrade (WebSocket): tunnelled to primary alone.
    Upgrade,
    /// Its URI is too long to forward with an upstream's path prefix; answered 414.
    UriTooLong,
    /// Holding it for the shadows would have gone over `--memory-budget`.
    MemoryBudget,
    /// It matches a `--no-shadow` pattern (a one-time link, a logout, a token exchange).
    Excluded,
    /// A streamed request (a gRPC call) that had not ended within `--response-timeout`: its copy was given up.
    StreamTooLong,
    /// A GraphQL mutation or subscription, or a batch holding one (and `--allow-side-effects` is off).
    GraphqlSideEffect,
    /// A GraphQL operation sent by its persisted hash alone, or whose text is not a document: what it does is
    /// not known here.
    GraphqlUnknown,
}

impl UnshadowedReason {
    pub const ALL: [UnshadowedReason; 11] = [
        UnshadowedReason::Method,
        UnshadowedReason::SampledOut,
        UnshadowedReason::BodyTooLarge,
        UnshadowedReason::BodyUnreadable,
        UnshadowedReason::Upgrade,
        UnshadowedReason::UriTooLong,
        UnshadowedReason::MemoryBudget,
        UnshadowedReason::Excluded,
        UnshadowedReason::StreamTooLong,
        UnshadowedReason::GraphqlSideEffect,
        UnshadowedReason::GraphqlUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnshadowedReason::Method => "method",
            UnshadowedReason::SampledOut => "sampled_out",
            UnshadowedReason::BodyTooLarge => "body_too_large",
            UnshadowedReason::BodyUnreadable => "body_unreadable",
            UnshadowedReason::Upgrade => "upgrade",
            UnshadowedReason::UriTooLong => "uri_too_long",
            UnshadowedReason::MemoryBudget => "memory_budget",
            UnshadowedReason::Excluded => "no_shadow",
            UnshadowedReason::StreamTooLong => "stream_too_long",
            UnshadowedReason::GraphqlSideEffect => "graphql_side_effect",
            UnshadowedReason::GraphqlUnknown => "graphql_unknown",
        }
    }
}

/// Why HTTP parsing turned a caller's connection away before any request reached the proxy.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CallerRejection {
    /// Not HTTP the server can read (answered 400 or 505).
    Malformed,
    /// Its head is larger than the read buffer (answered 431).
    HeaderTooLarge,
    /// Its head did not arrive in time.
    HeaderTimeout,
    /// Its body, read to be shared with the shadows, did not arrive in time (answered 408).
    BodyTimeout,
    /// `--max-connections` callers were connected already (closed at once).
    TooManyConnections,
}

impl CallerRejection {
    pub const ALL: [CallerRejection; 5] = [
        CallerRejection::Malformed,
        CallerRejection::HeaderTooLarge,
        CallerRejection::HeaderTimeout,
        CallerRejection::BodyTimeout,
        CallerRejection::TooManyConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallerRejection::Malformed => "malformed",
            CallerRejection::HeaderTooLarge => "header_too_large",
            CallerRejection::HeaderTimeout => "header_timeout",
            CallerRejection::BodyTimeout => "body_timeout",
            CallerRejection::TooManyConnections => "too_many_connections",
        }
    }
}

/// Whose body was too large to keep: the caller's request, or an upstream's response.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BodySide {
    Request,
    Response(Target),
}

impl BodySide {
    pub const ALL: [BodySide; 4] = [
        BodySide::Request,
        BodySide::Response(Target::Primary),
        BodySide::Response(Target::Secondary),
        BodySide::Response(Target::Candidate),
    ];

    fn index(self) -> usize {
        match self {
            BodySide::Request => 0,
            BodySide::Response(target) => 1 + target.index(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BodySide::Request => "request",
            BodySide::Response(target) => target.as_str(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetKindLabels {
    target: &'static str,
    kind: &'static str,
}

/// The caller's path's counters. Every label set is resolved when they are registered, so that counting is an
/// atomic increment: a family's lookup takes its lock, which the lane's threads (counting secondary's and
/// candidate's errors) would share with the callers'. A clone counts into the same series.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: Counter,
    unshadowed: [Counter; UnshadowedReason::ALL.len()],
    callers_rejected: [Counter; CallerRejection::ALL.len()],
    shed: [Counter; 3],
    /// By target, then by kind ([`ErrorKind::ALL`]'s order).
    upstream_errors: [[Counter; ErrorKind::ALL.len()]; 3],
    bodies_too_large: [Counter; BodySide::ALL.len()],
    forwarded_dropped: Counter,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = registered(
            registry,
            "requests",
            "Caller requests received by the proxy",
            Counter::default(),
        );
        let unshadowed = counters_for(
            registry,
            "unshadowed_requests",
            "Caller requests sent to primary only, by reason",
            "reason",
            UnshadowedReason::ALL.map(UnshadowedReason::as_str),
        );
        let callers_rejected = counters_for(
            registry,
            "callers_rejected",
            "Caller connections or requests turned away: malformed, header_too_large, header_timeout, \
             body_timeout (answered 408), too_many_connections (closed at once)",
            "reason",
            CallerRejection::ALL.map(CallerRejection::as_str),
        );
        let shed = counters_for(
            registry,
            "shadow_shed",
            "Shadow requests not sent because the upstream had --max-shadow-inflight in flight",
            "target",
            Target::ALL.map(Target::as_str),
        );
        let errors_family = registered(
            registry,
            "upstream_errors",
            "Upstream requests without a usable response, by upstream and kind",
            Family::<TargetKindLabels, Counter>::default(),
        );
        let upstream_errors = Target::ALL.map(|target| {
            ErrorKind::ALL.map(|kind| {
                errors_family
                    .get_or_create(&TargetKindLabels {
                        target: target.as_str(),
                        kind: kind.as_str(),
                    })
                    .clone()
            })
        });
        let bodies_too_large = counters_for(
            registry,
            "bodies_too_large",
            "Bodies larger than --max-body, forwarded but not kept (side: request or an upstream)",
            "side",
            BodySide::ALL.map(BodySide::as_str),
        );
        let forwarded_dropped = registered(
            registry,
            "forwarded_headers_dropped",
            "Caller requests whose X-Forwarded-* or Forwarded headers were replaced, the caller not being in \
             --trusted-proxies",
            Counter::default(),
        );
        Self {
            requests,
            unshadowed,
            callers_rejected,
            shed,
            upstream_errors,
            bodies_too_large,
            forwarded_dropped,
        }
    }

    pub fn request_received(&self) {
        self.requests.inc();
    }

    pub fn unshadowed(&self, reason: UnshadowedReason) {
        self.unshadowed[reason as usize].inc();
    }

    /// A caller's connection that HTTP parsing turned away (answered 400, 431 or 505, or timed out).
    pub fn caller_rejected(&self, reason: CallerRejection) {
        self.callers_rejected[reason as usize].inc();
    }

    pub fn shadow_shed(&self, target: Target) {
        self.shed[target.index()].inc();
    }

    pub fn upstream_error(&self, target: Target, error: &UpstreamError) {
        self.upstream_errors[target.index()][error.kind() as usize].inc();
    }

    pub fn body_too_large(&self, side: BodySide) {
        self.bodies_too_large[side.index()].inc();
    }

    /// A caller outside `--trusted-proxies` sent forwarded headers, which were replaced.
    pub fn forwarded_dropped(&self) {
        self.forwarded_dropped.inc();
    }

    // Readers, for tests and summaries.

    pub fn forwarded_dropped_count(&self) -> u64 {
        self.forwarded_dropped.get()
    }

    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    pub fn unshadowed_count(&self, reason: UnshadowedReason) -> u64 {
        self.unshadowed[reason as usize].get()
    }

    pub fn callers_rejected_count(&self, reason: CallerRejection) -> u64 {
        self.callers_rejected[reason as usize].get()
    }

    pub fn shed_count(&self, target: Target) -> u64 {
        self.shed[target.index()].get()
    }

    pub fn upstream_error_count(&self, target: Target, kind: ErrorKind) -> u64 {
        self.upstream_errors[target.index()][kind as usize].get()
    }

    pub fn too_large_count(&self, side: BodySide) -> u64 {
        self.bodies_too_large[side.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters are indexed by the enums' discriminants, which must follow their `ALL` order.
    #[test]
    fn every_label_has_its_own_counter() {
        for (index, reason) in CallerRejection::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, reason) in UnshadowedReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, side) in BodySide::ALL.iter().enumerate() {
            assert_eq!(side.index(), index);
        }
    }
}
