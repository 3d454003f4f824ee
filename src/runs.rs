//! The process's run, switched without a restart: a new run started from the API or a deployment hook closes
//! the one before; the writer follows locally at once, and replicas started without `--run` at their next
//! flush.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::store::runs::{ActiveRun, Start};
use crate::store::{Store, StoreError};

/// The run this process writes into, and the means to start another.
pub struct RunControl {
    store: Store,
    /// The upstreams the runs are of (their pointer in the store is kept per set of upstreams).
    urls: [String; 3],
    current: watch::Sender<ActiveRun>,
    /// Whether runs started elsewhere (another replica, a hook it answered) are followed; a process given
    /// `--run` keeps to its run until one is started on it.
    follows: bool,
}

impl RunControl {
    pub fn new(store: Store, urls: [String; 3], first: ActiveRun, follows: bool) -> Self {
        Self {
            store,
            urls,
            current: watch::Sender::new(first),
            follows,
        }
    }

    fn urls(&self) -> [&str; 3] {
        self.urls.each_ref().map(String::as_str)
    }

    /// The run being written now.
    pub fn current(&self) -> ActiveRun {
        self.current.borrow().clone()
    }

    /// Told of every switch.
    pub fn subscribe(&self) -> watch::Receiver<ActiveRun> {
        self.current.subscribe()
    }

    /// Makes `label` the run of these upstreams, for this process now and for the other replicas at their
    /// next flush. Returns the run and whether it changed.
    pub async fn start(&self, label: &str) -> Result<(ActiveRun, bool), StoreError> {
        let (active, changed) = self
            .store
            .start_run(
                label,
                self.urls(),
                now_ms(),
                Start::Replace,
                Some(self.current().id),
            )
            .await?;
        self.adopt(active.clone(), true);
        Ok((active, changed))
    }

    /// The run being written was cleared through this process and started again as `id` at `since_ms` (the
    /// clear's time): the writer drops what it holds from before and writes what follows into it.
    pub fn restarted(&self, id: i64, since_ms: i64) {
        self.current.send_modify(|current| {
            current.id = id;
            current.since_ms = since_ms;
        });
    }

    /// Reads which run the store points at and follows it if another replica moved it.
    pub async fn follow(&self) -> Result<(), StoreError> {
        if !self.follows {
            return Ok(());
        }
        if let Some(active) = self.store.active_run(self.urls()).await? {
            self.adopt(active, false);
        }
        Ok(())
    }

    /// Reads the store's active-run pointer every `interval` (the writer's flush interval, so that a replica
    /// takes a run started elsewhere at about its next flush) until `stop` is cancelled. The writer is only
    /// told of switches, so the reading is done here.
    pub async fn follow_every(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        if !self.follows {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.follow().await {
                        tracing::debug!(%error, "could not read the active run");
                    }
                }
            }
        }
    }

    /// Follows `active` unless it is the run being written (by label: a run deleted and started again under
    /// its label is the same run to follow). A pointer read from the store is followed only if the pointer
    /// moved since the run being written was taken (a larger generation): a read that raced a start made here
    /// must not undo it.
    fn adopt(&self, active: ActiveRun, started_here: bool) {
        self.current.send_if_modified(|current| {
            if current.label == active.label
                || (!started_here && active.generation <= current.generation)
            {
                return false;
            }
            tracing::info!(run = %active.label, previous = %current.label, "now storing into another run");
            *current = active;
            true
        });
    }
}

/// The run a process starts in: the one asked for (as before runs could be switched: it moves no pointer,
/// so processes given different labels keep apart), or else the upstreams' active run if it is still open, or
/// else a new one under `fallback`, made the active run.
pub async fn first_run(
    store: &Store,
    asked: Option<&str>,
    fallback: &str,
    urls: [&str; 3],
) -> Result<ActiveRun, StoreError> {
    let now = now_ms();
    if let Some(label) = asked {
        let id = store.ensure_run(label, urls, now).await?;
        return Ok(ActiveRun {
            id,
            label: label.to_string(),
            since_ms: now,
            generation: 0,
        });
    }
    // A replica restarted mid-rollout goes on judging the revision the pipeline named; replicas starting
    // together agree on one run, whichever of them names it.
    let (active, _) = store
        .start_run(fallback, urls, now, Start::JoinOrCreate, None)
        .await?;
    Ok(active)
}
