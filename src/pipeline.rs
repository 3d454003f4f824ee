//! The stages after the proxy, joined by bounded queues that drop and count when full (nobody ever waits on
//! them): completed exchanges to analysis, analysed exchanges to their consumer (the store).

pub mod metrics;
pub mod recorder;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::analysis::{Analysis, Analyzer};
use crate::budget::{MemoryBudget, Stage};
use crate::exchange::Exchange;
use crate::pipeline::metrics::{AnalysisMetrics, DropReason, Queue, QueueMetrics};

/// The sending side of a bounded queue.
pub struct Sink<T> {
    tx: mpsc::Sender<T>,
    queue: Queue,
    metrics: QueueMetrics,
}

impl<T> Clone for Sink<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queue: self.queue,
            metrics: self.metrics.clone(),
        }
    }
}

/// Completed exchanges, from the proxy (or replay) to analysis.
pub type ExchangeSink = Sink<Exchange>;
/// Analysed exchanges, from analysis to the store.
pub type AnalysisSink = Sink<Analysis>;

/// Creates a queue: the sink and the receiving end.
pub fn channel<T>(
    queue: Queue,
    capacity: usize,
    metrics: QueueMetrics,
) -> (Sink<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Sink { tx, queue, metrics }, rx)
}

impl<T: Send + 'static> Sink<T> {
    /// Hands an item on without waiting: queued, or dropped and counted.
    pub fn offer(&self, item: T) {
        match self.tx.try_send(item) {
            Ok(()) => self.metrics.queued(self.queue),
            Err(TrySendError::Full(_)) => {
                self.dropped(DropReason::QueueFull);
                tracing::debug!(queue = self.queue.as_str(), "queue full; item dropped");
            }
            Err(TrySendError::Closed(_)) => self.dropped(DropReason::Closed),
        }
    }

    /// Counts an item of this queue dropped for `reason`, here or before it could be offered.
    pub fn dropped(&self, reason: DropReason) {
        self.metrics.dropped(self.queue, reason);
    }

    /// Reads the number of items waiting, without keeping the queue open.
    pub fn depth_reader(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let weak = self.tx.downgrade();
        move || {
            weak.upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity())
        }
    }
}

/// The receiving end of a queue that takes no new items once `stop` is cancelled, but still yields those
/// already queued.
pub struct Draining<T> {
    rx: mpsc::Receiver<T>,
    stop: CancellationToken,
    closed: bool,
}

impl<T> Draining<T> {
    pub fn new(rx: mpsc::Receiver<T>, stop: CancellationToken) -> Self {
        Self {
            rx,
            stop,
            closed: false,
        }
    }

    /// The next item; `None` once stopped and drained. Cancel-safe, so it can race a timer in `select!`.
    pub async fn next(&mut self) -> Option<T> {
        loop {
            tokio::select! {
                biased;
                received = self.rx.recv() => return received,
                () = self.stop.cancelled(), if !self.closed => {
                    self.rx.close();
                    self.closed = true;
                }
            }
        }
    }

    /// An item already queued, without waiting.
    pub fn try_next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Receives items until `stop` is cancelled, then drains what is already queued and returns.
pub async fn consume<T, F>(rx: mpsc::Receiver<T>, stop: CancellationToken, mut handle: F)
where
    F: FnMut(T),
{
    let mut items = Draining::new(rx, stop);
    while let Some(item) = items.next().await {
        handle(item);
    }
}

/// The most exchanges one analysis worker takes at once.
pub const ANALYSIS_BATCH: usize = 32;

/// What the analysis stage works with.
pub struct AnalysisStage {
    pub analyzer: Arc<Analyzer>,
    /// Blocking workers analysing at once.
    pub workers: usize,
    pub budget: Arc<MemoryBudget>,
    pub metrics: AnalysisMetrics,
    pub out: AnalysisSink,
    /// With `--grpc-reflection`: asks primary for the schemas of the services calls name.
    pub reflection: Option<Box<dyn LearnSchemas>>,
}

/// What the analysis stage waits for before an exchange is compared, so that the analysis can decode it (with
/// `--grpc-reflection`: the schema of a service no schema has, asked of primary). The app hands it in, so that
/// the pipeline does not reach up to the upstream clients.
pub trait LearnSchemas: Send {
    /// Learns what `exchange` needs, if anything.
    fn learn_for<'a>(
        &'a mut self,
        exchange: &'a Exchange,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Analyses exchanges on blocking worker threads, at most `workers` batches at a time (CPU work kept off the
/// threads that serve callers), and hands each result to `out`. Decoded bodies and parse trees are charged to
/// `budget` while they are held. A full `out` drops and counts; a panic in the analysis of one exchange is caught,
/// counted and logged. When `stop` is cancelled, queued exchanges are still analysed and the function returns
/// once the last one is done.
///
/// Exchanges go to a worker in batches of what is already queued (up to [`ANALYSIS_BATCH`]): each hand-over to
/// a worker and each worker's return wakes a thread, and under load the task that hands them over waits behind
/// the callers for its turn, so one exchange per hand-over capped analysis at a few thousand exchanges a second.
pub async fn analyse(
    rx: mpsc::Receiver<Exchange>,
    stop: CancellationToken,
    AnalysisStage {
        analyzer,
        workers,
        budget,
        metrics,
        out,
        mut reflection,
    }: AnalysisStage,
) {
    let workers = workers.max(1);
    let permits = Arc::new(Semaphore::new(workers));
    let mut exchanges = Draining::new(rx, stop);
    while let Some(first) = exchanges.next().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let mut batch = Vec::with_capacity(ANALYSIS_BATCH);
        batch.push(first);
        while batch.len() < ANALYSIS_BATCH
            && let Some(exchange) = exchanges.try_next()
        {
            batch.push(exchange);
        }
        for exchange in &mut batch {
            exchange.charge.move_to(Stage::Analysis);
            if let Some(reflection) = reflection.as_mut() {
                reflection.learn_for(exchange).await;
            }
        }
        let (analyzer, metrics, out) = (analyzer.clone(), metrics.clone(), out.clone());
        let mut scratch = budget.empty(Stage::Analysis);
        tokio::task::spawn_blocking(move || {
            for exchange in batch {
                let id = exchange.id;
                let analysed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    analyzer.analyse_within(exchange, &mut scratch)
                }));
                match analysed {
                    Ok(mut analysis) => {
                        metrics.analysed(&analysis);
                        analysis.exchange.charge.move_to(Stage::AnalysisQueue);
                        out.offer(analysis);
                    }
                    Err(_) => {
                        metrics.failed();
                        tracing::error!(%id, "analysis of an exchange failed; it is skipped");
                    }
                }
            }
            // Only now is this batch handed on: shutdown waits for every permit before closing the next stage.
            drop(permit);
        });
    }
    // Every permit back means every analysis has finished.
    let _ = permits.acquire_many(workers as u32).await;
}
