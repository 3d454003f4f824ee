//! The bounded hand-off of completed exchanges from the proxy to their consumer; a full queue drops and counts,
//! it never makes anyone wait.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::exchange::{Exchange, Target};
use crate::metrics::{DropReason, Metrics};

/// The sending side, held by the proxy (and later by replay).
#[derive(Clone)]
pub struct ExchangeSink {
    tx: mpsc::Sender<Exchange>,
    metrics: Arc<Metrics>,
}

/// Creates the queue: the sink and the receiving end.
pub fn channel(capacity: usize, metrics: Arc<Metrics>) -> (ExchangeSink, mpsc::Receiver<Exchange>) {
    let (tx, rx) = mpsc::channel(capacity);
    (ExchangeSink { tx, metrics }, rx)
}

impl ExchangeSink {
    /// Hands an exchange on without waiting: queued, or dropped and counted.
    pub fn offer(&self, exchange: Exchange) {
        match self.tx.try_send(exchange) {
            Ok(()) => self.metrics.exchange_queued(),
            Err(TrySendError::Full(exchange)) => {
                self.metrics.exchange_dropped(DropReason::QueueFull);
                tracing::debug!(id = %exchange.id, "exchange queue full; exchange dropped");
            }
            Err(TrySendError::Closed(_)) => self.metrics.exchange_dropped(DropReason::Closed),
        }
    }

    /// Reads the number of exchanges waiting, without keeping the queue open.
    pub fn depth_reader(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let weak = self.tx.downgrade();
        move || {
            weak.upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity())
        }
    }
}

/// Receives exchanges until `stop` is cancelled, then drains what is already queued and returns.
pub async fn consume<F>(mut rx: mpsc::Receiver<Exchange>, stop: CancellationToken, mut handle: F)
where
    F: FnMut(Exchange),
{
    loop {
        tokio::select! {
            biased;
            received = rx.recv() => match received {
                Some(exchange) => handle(exchange),
                None => return,
            },
            () = stop.cancelled() => break,
        }
    }
    rx.close();
    while let Some(exchange) = rx.recv().await {
        handle(exchange);
    }
}

/// The consumer used until analysis is wired in: one log line per exchange.
pub fn log_exchange(exchange: Exchange) {
    let describe = |target: Target| -> String {
        let outcome = exchange.outcome(target);
        match &outcome.result {
            Ok(response) if response.body.is_too_large() => {
                format!(
                    "{} (body too large) in {:?}",
                    response.status.as_u16(),
                    outcome.elapsed
                )
            }
            Ok(response) => format!("{} in {:?}", response.status.as_u16(), outcome.elapsed),
            Err(error) => format!("{error}"),
        }
    };
    tracing::info!(
        id = %exchange.id,
        endpoint = %exchange.endpoint,
        primary = %describe(Target::Primary),
        secondary = %describe(Target::Secondary),
        candidate = %describe(Target::Candidate),
        "exchange"
    );
}
