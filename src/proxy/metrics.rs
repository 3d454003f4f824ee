//! What the caller's path counts: requests, the ones not shadowed and why, callers turned away, shadows shed,
//! upstream errors and bodies too large to keep. Counters the proxy touches per request are resolved once, so
//! the caller's path increments an atomic and never looks up a label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::exchange::{ErrorKind, Target, UpstreamError};

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
}

impl UnshadowedReason {
    pub const ALL: [UnshadowedReason; 8] = [
        UnshadowedReason::Method,
        UnshadowedReason::SampledOut,
        UnshadowedReason::BodyTooLarge,
        UnshadowedReason::BodyUnreadable,
        UnshadowedReason::Upgrade,
        UnshadowedReason::UriTooLong,
        UnshadowedReason::MemoryBudget,
        UnshadowedReason::Excluded,
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
    pub fn as_str(self) -> &'static str {
        match self {
            BodySide::Request => "request",
            BodySide::Response(target) => target.as_str(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetKindLabels {
    target: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabel {
    side: &'static str,
}

/// The caller's path's counters.
pub struct ProxyMetrics {
    requests: Counter,
    unshadowed: [Counter; UnshadowedReason::ALL.len()],
    callers_rejected: Family<ReasonLabel, Counter>,
    shed: [Counter; 3],
    upstream_errors: Family<TargetKindLabels, Counter>,
    bodies_too_large: Family<SideLabel, Counter>,
    forwarded_dropped: Counter,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Counter::default();
        registry.register(
            "requests",
            "Caller requests received by the proxy",
            requests.clone(),
        );
        let unshadowed_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "unshadowed_requests",
            "Caller requests sent to primary only, by reason",
            unshadowed_family.clone(),
        );
        let unshadowed = UnshadowedReason::ALL.map(|reason| {
            unshadowed_family
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .clone()
        });
        let callers_rejected = Family::default();
        registry.register(
            "callers_rejected",
            "Caller connections or requests turned away: malformed, header_too_large, header_timeout, \
             body_timeout (answered 408), too_many_connections (closed at once)",
            callers_rejected.clone(),
        );
        let shed_family = Family::<TargetLabel, Counter>::default();
        registry.register(
            "shadow_shed",
            "Shadow requests not sent because the upstream had --max-shadow-inflight in flight",
            shed_family.clone(),
        );
        let shed = Target::ALL.map(|target| {
            shed_family
                .get_or_create(&TargetLabel {
                    target: target.as_str(),
                })
                .clone()
        });
        let upstream_errors = Family::default();
        registry.register(
            "upstream_errors",
            "Upstream requests without a usable response, by upstream and kind",
            upstream_errors.clone(),
        );
        let bodies_too_large = Family::default();
        registry.register(
            "bodies_too_large",
            "Bodies larger than --max-body, forwarded but not kept (side: request or an upstream)",
            bodies_too_large.clone(),
        );
        let forwarded_dropped = Counter::default();
        registry.register(
            "forwarded_headers_dropped",
            "Caller requests whose X-Forwarded-* or Forwarded headers were replaced, the caller not being in \
             --trusted-proxies",
            forwarded_dropped.clone(),
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
        self.callers_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn shadow_shed(&self, target: Target) {
        self.shed[target.index()].inc();
    }

    pub fn upstream_error(&self, target: Target, error: &UpstreamError) {
        self.upstream_errors
            .get_or_create(&TargetKindLabels {
                target: target.as_str(),
                kind: error.kind().as_str(),
            })
            .inc();
    }

    pub fn body_too_large(&self, side: BodySide) {
        self.bodies_too_large
            .get_or_create(&SideLabel {
                side: side.as_str(),
            })
            .inc();
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
        self.callers_rejected
            .get(&ReasonLabel {
                reason: reason.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn shed_count(&self, target: Target) -> u64 {
        self.shed[target.index()].get()
    }

    pub fn upstream_error_count(&self, target: Target, kind: ErrorKind) -> u64 {
        self.upstream_errors
            .get(&TargetKindLabels {
                target: target.as_str(),
                kind: kind.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn too_large_count(&self, side: BodySide) -> u64 {
        self.bodies_too_large
            .get(&SideLabel {
                side: side.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }
}
