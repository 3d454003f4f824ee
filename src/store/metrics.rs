//! What the writer counts: batches written, exchanges and samples not stored and why, rows the database
//! refused, places past their caps, rows waiting, and whether the store can be written.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::instruments::{family_from_zero, registered};
use crate::store::places::PlaceOverflow;

/// What the writer could not store.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Unstored {
    /// An analysed exchange (its counts).
    Exchange,
    /// A sample.
    Sample,
}

impl Unstored {
    pub fn as_str(self) -> &'static str {
        match self {
            Unstored::Exchange => "exchange",
            Unstored::Sample => "sample",
        }
    }
}

/// Why the writer did not store something.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnstoredReason {
    /// The database was away too long and the buffer filled.
    BufferFull,
    /// Holding it would have gone over `--memory-budget`.
    MemoryBudget,
    /// The run was deleted while being written.
    RunDeleted,
    /// The database refused it for good.
    Refused,
    /// The database was away at shutdown.
    Shutdown,
    /// Making it failed.
    Failed,
    /// It began before the run it would have counted for was closed and another started (a straggler of the
    /// revision judged before).
    RunClosed,
}

impl UnstoredReason {
    pub const ALL: [UnstoredReason; 7] = [
        UnstoredReason::BufferFull,
        UnstoredReason::MemoryBudget,
        UnstoredReason::RunDeleted,
        UnstoredReason::Refused,
        UnstoredReason::Shutdown,
        UnstoredReason::Failed,
        UnstoredReason::RunClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnstoredReason::BufferFull => "buffer_full",
            UnstoredReason::MemoryBudget => "memory_budget",
            UnstoredReason::RunDeleted => "run_deleted",
            UnstoredReason::Refused => "refused",
            UnstoredReason::Shutdown => "shutdown",
            UnstoredReason::Failed => "failed",
            UnstoredReason::RunClosed => "run_closed",
        }
    }
}

/// Why request features were not counted (the request itself is).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FeaturesDropped {
    /// Past the per-request caps (query parameters, headers, body fields, path parameters).
    RequestCap,
    /// The request's signature was not sketched: its endpoint, or the writer, had as many as it may.
    SketchesFull,
    /// Holding them would have gone over `--memory-budget`.
    MemoryBudget,
}

impl FeaturesDropped {
    pub const ALL: [FeaturesDropped; 3] = [
        FeaturesDropped::RequestCap,
        FeaturesDropped::SketchesFull,
        FeaturesDropped::MemoryBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeaturesDropped::RequestCap => "request_cap",
            FeaturesDropped::SketchesFull => "sketches_full",
            FeaturesDropped::MemoryBudget => "memory_budget",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabel {
    cap: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatReasonLabels {
    what: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

/// The writer's counters and gauges. A clone counts into the same series.
#[derive(Clone)]
pub struct StoreMetrics {
    writes: Family<ResultLabel, Counter>,
    dropped: Family<WhatReasonLabels, Counter>,
    rejected: Family<TableLabel, Counter>,
    features_dropped: Family<ReasonLabel, Counter>,
    places_overflowed: Family<CapLabel, Counter>,
    pending: Gauge,
    up: Gauge,
    stored: Counter,
}

impl StoreMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let writes = registered(
            registry,
            "store_writes",
            "Batches written to the store (result: ok, or error when the database could not be written)",
            Family::default(),
        );
        let dropped = family_from_zero(
            registry,
            "store_dropped",
            "Exchanges (their counts) or samples not stored, by reason: buffer_full (database away too long), \
             memory_budget, run_deleted (begun before its run was cleared or deleted), refused (by the database), \
             shutdown (database away at shutdown), failed, run_closed (begun before its run was closed for another)",
            [Unstored::Exchange, Unstored::Sample]
                .into_iter()
                .flat_map(|what| {
                    UnstoredReason::ALL.map(|reason| WhatReasonLabels {
                        what: what.as_str(),
                        reason: reason.as_str(),
                    })
                }),
        );
        let rejected = registered(
            registry,
            "store_rejected_rows",
            "Rows the database refused for good (left out of their batch, which was written without them)",
            Family::default(),
        );
        let features_dropped = family_from_zero(
            registry,
            "features_dropped",
            "Request features not counted for predictors (the requests are): request_cap (past the per-request \
             caps on query parameters, headers, body fields), sketches_full (the signature's features were not \
             sketched: its endpoint had as many as it may), memory_budget (the requests were counted without them)",
            FeaturesDropped::ALL.map(|reason| ReasonLabel {
                reason: reason.as_str(),
            }),
        );
        let places_overflowed = family_from_zero(
            registry,
            "places_overflowed",
            "Differences counted under `{other}` because their place (path and kind) was new past a cap: \
             endpoint_cap (--max-places-per-endpoint), writer_cap (places followed by this writer overall)",
            PlaceOverflow::ALL.map(|cap| CapLabel { cap: cap.as_str() }),
        );
        let up = Gauge::default();
        up.set(1);
        let up = registered(
            registry,
            "store_up",
            "1 when the last write (or heartbeat) to the store succeeded, 0 while the store cannot be written",
            up,
        );
        let pending = registered(
            registry,
            "store_pending_rows",
            "Rows waiting to be written to the store",
            Gauge::default(),
        );
        let stored = registered(
            registry,
            "exchanges_stored",
            "Compared exchanges whose counts were written to the store",
            Counter::default(),
        );
        Self {
            writes,
            dropped,
            rejected,
            features_dropped,
            places_overflowed,
            pending,
            up,
            stored,
        }
    }

    pub fn write(&self, ok: bool) {
        self.writes
            .get_or_create(&ResultLabel { result: result(ok) })
            .inc();
    }

    pub fn dropped(&self, what: Unstored, reason: UnstoredReason, count: u64) {
        self.dropped
            .get_or_create(&WhatReasonLabels {
                what: what.as_str(),
                reason: reason.as_str(),
            })
            .inc_by(count);
    }

    /// Rows of `table` the database refused for good.
    pub fn rejected(&self, table: &'static str, rows: u64) {
        self.rejected
            .get_or_create(&TableLabel { table })
            .inc_by(rows);
    }

    /// Request features not counted, for `reason`.
    pub fn features_dropped(&self, reason: FeaturesDropped, count: u64) {
        self.features_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(count);
    }

    pub fn features_dropped_count(&self, reason: FeaturesDropped) -> u64 {
        self.features_dropped
            .get(&ReasonLabel {
                reason: reason.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    /// Differences moved to `{other}` past `cap`.
    pub fn places_overflowed(&self, cap: PlaceOverflow, count: u64) {
        self.places_overflowed
            .get_or_create(&CapLabel { cap: cap.as_str() })
            .inc_by(count);
    }

    pub fn places_overflowed_count(&self, cap: PlaceOverflow) -> u64 {
        self.places_overflowed
            .get(&CapLabel { cap: cap.as_str() })
            .map_or(0, |counter| counter.get())
    }

    /// Compared exchanges of a batch the store took.
    pub fn stored(&self, exchanges: u64) {
        self.stored.inc_by(exchanges);
    }

    pub fn stored_count(&self) -> u64 {
        self.stored.get()
    }

    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub fn set_pending(&self, rows: usize) {
        self.pending.set(rows as i64);
    }

    pub fn writes_count(&self, ok: bool) -> u64 {
        self.writes
            .get(&ResultLabel { result: result(ok) })
            .map_or(0, |counter| counter.get())
    }

    /// `what`s not stored, for every reason.
    pub fn dropped_count(&self, what: Unstored) -> u64 {
        UnstoredReason::ALL
            .iter()
            .map(|reason| self.dropped_reason_count(what, *reason))
            .sum()
    }

    /// `what`s not stored for one reason.
    pub fn dropped_reason_count(&self, what: Unstored, reason: UnstoredReason) -> u64 {
        self.dropped
            .get(&WhatReasonLabels {
                what: what.as_str(),
                reason: reason.as_str(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn rejected_count(&self, table: &'static str) -> u64 {
        self.rejected
            .get(&TableLabel { table })
            .map_or(0, |counter| counter.get())
    }

    pub fn pending_rows(&self) -> i64 {
        self.pending.get()
    }
}

fn result(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}
