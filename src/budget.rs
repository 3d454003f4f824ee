//! One memory budget, in bytes, for everything shadow work holds: a charge is taken before memory is held and
//! given back when it is let go, so that shadow work past the budget is shed instead of queued.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::instruments::counters_for;

/// Where charged memory is held, for `/metrics`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A caller's request body, read before primary is asked.
    Request,
    /// Exchanges being assembled: the request and the response bodies captured so far.
    InFlight,
    /// Completed exchanges waiting for analysis.
    ExchangeQueue,
    /// Exchanges being analysed, with their decoded bodies and parse trees.
    Analysis,
    /// Analysed exchanges waiting for the writer.
    AnalysisQueue,
    /// The writer's pending rows, samples and the batch it is writing.
    Writer,
    /// Requests waiting to be written to the `--record` file.
    Recording,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Request,
        Stage::InFlight,
        Stage::ExchangeQueue,
        Stage::Analysis,
        Stage::AnalysisQueue,
        Stage::Writer,
        Stage::Recording,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::InFlight => "in_flight",
            Stage::ExchangeQueue => "exchange_queue",
            Stage::Analysis => "analysis",
            Stage::AnalysisQueue => "analysis_queue",
            Stage::Writer => "writer",
            Stage::Recording => "recording",
        }
    }
}

/// Shadow work shed for the budget, by the stage that refused it. The budget keeps it, so that whichever stage
/// charges the budget counts what it sheds there.
#[derive(Clone, Default)]
pub struct BudgetMetrics {
    shed: [Counter; Stage::ALL.len()],
}

impl BudgetMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let shed = counters_for(
            registry,
            "memory_shed",
            "Shadow work shed because it would have gone over --memory-budget, by the stage that refused it",
            "stage",
            Stage::ALL.map(Stage::as_str),
        );
        Self { shed }
    }

    pub fn shed_count(&self, stage: Stage) -> u64 {
        self.shed[stage as usize].get()
    }
}

/// The budget: a limit and what is held against it, in all and per stage.
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    stages: [AtomicUsize; Stage::ALL.len()],
    /// Where the work shed for this budget is counted.
    metrics: BudgetMetrics,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish()
    }
}

impl MemoryBudget {
    /// What shadow work may hold by default (`--memory-budget`).
    pub const DEFAULT_LIMIT: usize = 128 << 20;

    /// A budget whose shed work is counted nowhere (for tools and tests).
    pub fn new(limit: usize) -> Arc<Self> {
        Self::counted(limit, BudgetMetrics::default())
    }

    /// A budget whose shed work is counted in `metrics`.
    pub fn counted(limit: usize, metrics: BudgetMetrics) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            stages: Default::default(),
            metrics,
        })
    }

    /// Counts shadow work `stage` shed because it did not fit.
    pub fn shed(&self, stage: Stage) {
        self.metrics.shed[stage as usize].inc();
    }

    /// A budget that never refuses (for tools and tests that measure nothing).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now, in all.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes held now in one stage.
    pub fn held(&self, stage: Stage) -> usize {
        self.stages[stage as usize].load(Ordering::Relaxed)
    }

    /// Takes up to `wanted` bytes, as many as fit; returns how many were taken.
    fn take_up_to(&self, wanted: usize, at_least: usize) -> usize {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let room = self.limit.saturating_sub(used);
            let taken = wanted.min(room);
            if taken < at_least || taken == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(
                used,
                used + taken,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return taken,
                Err(now) => used = now,
            }
        }
    }

    fn give(&self, bytes: usize, stage: Stage) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            self.stages[stage as usize].fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn note(&self, bytes: usize, stage: Stage) {
        self.stages[stage as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    /// A charge of `bytes` held in `stage`, or `None` when they do not fit.
    pub fn charge(self: &Arc<Self>, stage: Stage, bytes: usize) -> Option<Charge> {
        let mut charge = self.empty(stage);
        charge.try_grow(bytes).then_some(charge)
    }

    /// A charge of nothing yet, to grow as memory is taken.
    pub fn empty(self: &Arc<Self>, stage: Stage) -> Charge {
        Charge {
            budget: Some(self.clone()),
            stage,
            bytes: 0,
        }
    }
}

/// Bytes held against a budget, given back when dropped. A charge without a budget (`Charge::none`) always
/// grows (and counts what it holds): it is what code outside the proxy (benchmarks, tests, tools) hands to
/// parts that take a charge.
pub struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    stage: Stage,
    bytes: usize,
}

impl Charge {
    /// A charge against no budget.
    pub fn none() -> Self {
        Self {
            budget: None,
            stage: Stage::InFlight,
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Takes `bytes` more if they fit; on `false` nothing was taken.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        let Some(budget) = &self.budget else {
            self.bytes = self.bytes.saturating_add(bytes);
            return true;
        };
        if bytes == 0 {
            return true;
        }
        if budget.take_up_to(bytes, bytes) == 0 {
            return false;
        }
        budget.note(bytes, self.stage);
        self.bytes += bytes;
        true
    }

    /// Takes as much of `bytes` as fits and returns how much was taken.
    pub fn grow_up_to(&mut self, bytes: usize) -> usize {
        let Some(budget) = &self.budget else {
            self.bytes = self.bytes.saturating_add(bytes);
            return bytes;
        };
        let taken = budget.take_up_to(bytes, 1);
        budget.note(taken, self.stage);
        self.bytes += taken;
        taken
    }

    /// Gives back up to `bytes`.
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        if let Some(budget) = &self.budget {
            budget.give(bytes, self.stage);
        }
        self.bytes -= bytes;
    }

    /// Gives back everything above `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        self.shrink(self.bytes.saturating_sub(bytes));
    }

    /// Holds what `other` held, in this charge's stage (a charge of another budget is just given back).
    pub fn absorb(&mut self, mut other: Charge) {
        let same = match (&self.budget, &other.budget) {
            (Some(mine), Some(theirs)) => Arc::ptr_eq(mine, theirs),
            (None, None) => true,
            _ => false,
        };
        if !same || other.bytes == 0 {
            return;
        }
        if let Some(budget) = &self.budget
            && other.stage != self.stage
        {
            budget.stages[other.stage as usize].fetch_sub(other.bytes, Ordering::Relaxed);
            budget.note(other.bytes, self.stage);
        }
        self.bytes += other.bytes;
        other.bytes = 0;
    }

    /// Counts the memory in another stage from now on.
    pub fn move_to(&mut self, stage: Stage) {
        if stage == self.stage {
            return;
        }
        if let Some(budget) = &self.budget {
            budget.stages[self.stage as usize].fetch_sub(self.bytes, Ordering::Relaxed);
            budget.note(self.bytes, stage);
        }
        self.stage = stage;
    }
}

impl Default for Charge {
    fn default() -> Self {
        Self::none()
    }
}

/// A copy holds no memory of its own against the budget: only the original is charged.
impl Clone for Charge {
    fn clone(&self) -> Self {
        Self::none()
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Charge({} bytes in {})", self.bytes, self.stage.as_str())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.bytes, self.stage);
        }
    }
}

/// What a header map holds, roughly: names, values and the map's own entries.
pub fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_limit_and_are_given_back() {
        let budget = MemoryBudget::new(100);
        let first = budget.charge(Stage::InFlight, 60).unwrap();
        assert!(budget.charge(Stage::InFlight, 41).is_none());
        let mut second = budget.charge(Stage::Writer, 40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(!second.try_grow(1));
        drop(first);
        assert_eq!(budget.used(), 40);
        assert_eq!(budget.held(Stage::InFlight), 0);
        assert_eq!(second.grow_up_to(100), 60);
        assert_eq!(budget.used(), 100);
        second.shrink_to(10);
        assert_eq!(budget.used(), 10);
        assert_eq!(budget.held(Stage::Writer), 10);
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn stages_follow_the_memory() {
        let budget = MemoryBudget::new(1000);
        let mut exchange = budget.charge(Stage::Request, 100).unwrap();
        exchange.move_to(Stage::InFlight);
        let capture = budget.charge(Stage::InFlight, 50).unwrap();
        exchange.absorb(capture);
        assert_eq!(budget.held(Stage::Request), 0);
        assert_eq!(budget.held(Stage::InFlight), 150);
        exchange.move_to(Stage::ExchangeQueue);
        assert_eq!(budget.held(Stage::InFlight), 0);
        assert_eq!(budget.held(Stage::ExchangeQueue), 150);
        let copy = exchange.clone();
        assert_eq!(copy.bytes(), 0);
        drop(exchange);
        drop(copy);
        assert_eq!(budget.used(), 0);
        assert!(Stage::ALL.iter().all(|stage| budget.held(*stage) == 0));
    }

    #[test]
    fn work_shed_is_counted_by_the_stage_that_shed_it() {
        let metrics = BudgetMetrics::default();
        let budget = MemoryBudget::counted(10, metrics.clone());
        budget.shed(Stage::Writer);
        assert_eq!(metrics.shed_count(Stage::Writer), 1);
        assert_eq!(metrics.shed_count(Stage::Request), 0);
    }

    #[test]
    fn a_charge_without_budget_always_grows() {
        let mut charge = Charge::none();
        assert!(charge.try_grow(usize::MAX / 2));
        assert_eq!(charge.grow_up_to(10), 10);
        assert_eq!(charge.bytes(), usize::MAX / 2 + 10);
        charge.shrink_to(5);
        assert_eq!(charge.bytes(), 5);
    }

    #[test]
    fn concurrent_charges_never_pass_the_limit() {
        let budget = MemoryBudget::new(10_000);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let budget = budget.clone();
                scope.spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..1000 {
                        if let Some(charge) = budget.charge(Stage::InFlight, 7) {
                            assert!(budget.used() <= 10_000);
                            held.push(charge);
                        }
                        if held.len() > 100 {
                            held.clear();
                        }
                    }
                });
            }
        });
        assert_eq!(budget.used(), 0);
    }
}
