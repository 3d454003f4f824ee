//! The run the writer writes, kept alive: switching to another run, a clear taken, the run started again
//! after it was deleted, the heartbeat (and the run's templates, map positions and places read back), retention.

use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::metrics::{Unstored, UnstoredReason};
use crate::store::retention::Retention;
use crate::store::runs::ActiveRun;
use crate::store::write::FlushBatch;

use super::{FIRST_BACKOFF, Pending, Writer};

pub(super) const RETENTION_EVERY: Duration = Duration::from_secs(300);

impl Writer {
    /// The run was deleted (or cleared) while `lost` exchanges were held for it: counts them as
    /// `run_deleted` and lets go of everything held for it.
    pub(super) fn drop_for_deleted_run(&mut self, lost: u64) {
        self.metrics
            .dropped(Unstored::Exchange, UnstoredReason::RunDeleted, lost);
        self.forget_run();
    }

    /// Lets go of everything held for the run: counts, latency, samples, quotas, names and templates.
    pub(super) fn forget_run(&mut self) {
        self.unsent = None;
        self.unsent_rows = 0;
        self.unsent_bytes = 0;
        self.let_go_of_run();
        self.run_missing = true;
    }

    /// Lets go of what waits for the next batch and of the run's quotas, names and templates (not of a batch
    /// the database has yet to take).
    fn let_go_of_run(&mut self) {
        self.pending = Pending::default();
        self.sampler.reset();
        self.sketches.reset();
        self.namer.reset();
        self.keys.reset();
        self.places.reset();
        self.settle_charge();
    }

    /// Writes what waits into the run being closed, then writes into `active` from now on, with nothing of
    /// the old run's held (quotas, names, templates).
    pub(super) async fn switch_to(&mut self, active: ActiveRun) {
        if active.label == self.config.run_label {
            if active.id != self.config.run_id {
                self.cleared(active);
            }
            return;
        }
        if let Err(error) = self.flush_now().await {
            // A batch the database did not take stays tagged with the closed run and is sent again; only what
            // had not been made into a batch yet is lost.
            let lost = self.pending.requests();
            tracing::warn!(%error, lost, run = %self.config.run_label, "the store did not take the closed run's last counts; they are sent again");
            self.metrics
                .dropped(Unstored::Exchange, UnstoredReason::RunClosed, lost);
        }
        self.let_go_of_run();
        self.run_missing = false;
        self.config.run_id = active.id;
        self.config.run_label = active.label;
        self.since_ms = active.since_ms;
        self.since_reason = UnstoredReason::RunClosed;
        self.load_run_state(true).await;
    }

    /// The run being written was cleared through this process and started again as `active` before the
    /// clear was answered: what is held from before is dropped and counted, and what follows is written into
    /// the run started again. (The switch is taken before any exchange queued after it, so what is held began
    /// before the clear was answered.)
    pub(super) fn cleared(&mut self, active: ActiveRun) {
        let lost = self.pending.requests() + self.unsent.as_ref().map_or(0, FlushBatch::requests);
        tracing::info!(run = %self.config.run_label, id = active.id, lost, "the run was cleared; storing what follows in it");
        self.drop_for_deleted_run(lost);
        self.run_missing = false;
        self.retry_at = None;
        self.config.run_id = active.id;
        self.since_ms = active.since_ms;
        self.since_reason = UnstoredReason::RunDeleted;
    }

    /// Creates the run again under its label (and upstreams) and writes into it from now on.
    pub(super) async fn start_run_again(&mut self) -> Result<(), StoreError> {
        let urls = self.config.run_urls.each_ref().map(String::as_str);
        match self
            .store
            .ensure_run(&self.config.run_label, urls, now_ms())
            .await
        {
            Ok(id) => {
                tracing::info!(run = %self.config.run_label, id, "run started again");
                self.config.run_id = id;
                self.since_cleared(id).await;
                self.run_missing = false;
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
                self.health.set_up();
                self.metrics.set_up(true);
                Ok(())
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Takes the start of the run started again as the clear's time: what began before belonged to the run
    /// deleted (another replica learns of a clear here, at its next write, and drops what began before it).
    pub(super) async fn since_cleared(&mut self, id: i64) {
        match self.store.run(&self.config.run_label).await {
            Ok(Some(run)) if run.id == id => {
                self.since_ms = self.since_ms.max(run.started_at_ms);
                self.since_reason = UnstoredReason::RunDeleted;
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "could not read when the run was started again"),
        }
    }

    /// Tells the store this writer is alive (so that retention spares its run even without traffic), and takes
    /// the templates other replicas learned.
    pub(super) async fn heartbeat(&mut self) {
        if self.run_missing || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match self.store.heartbeat(self.config.run_id, now_ms()).await {
            Ok(()) => {
                // The store takes writes again (a batch it refused was dropped, or it is back): the next flush
                // need not wait, and what waits is written then.
                if self.unsent.is_none() {
                    self.retry_at = None;
                    self.backoff = FIRST_BACKOFF;
                    self.health.set_up();
                    self.metrics.set_up(true);
                }
            }
            Err(StoreError::RunGone(old)) => {
                tracing::warn!(
                    run = %self.config.run_label,
                    old_id = old,
                    "the run being written was deleted (from the dashboard or by retention); starting it again \
                     under the same label"
                );
                self.drop_for_deleted_run(self.pending.requests());
                let _ = self.start_run_again().await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "heartbeat failed");
                self.failed(&error);
                return;
            }
        }
        self.load_run_state(false).await;
    }

    /// Takes the templates (and, at start, the endpoint names) the run already has in the store.
    pub(super) async fn load_run_state(&mut self, with_names: bool) {
        let run_id = self.config.run_id;
        match self.store.templates(run_id).await {
            Ok(templates) => self.namer.adopt(templates, Vec::new()),
            Err(error) => tracing::debug!(%error, "could not read the run's templates"),
        }
        match self.store.key_positions(run_id).await {
            Ok(positions) => self.keys.adopt(positions),
            Err(error) => tracing::debug!(%error, "could not read the run's map positions"),
        }
        if with_names {
            match self.store.counted_places(run_id).await {
                Ok(places) => self.places.adopt(places),
                Err(error) => tracing::debug!(%error, "could not read the run's places"),
            }
            match self.store.endpoint_names(run_id, usize::MAX).await {
                Ok(names) => self.namer.adopt(Vec::new(), names),
                Err(error) => tracing::debug!(%error, "could not read the run's endpoints"),
            }
        }
    }

    pub(super) async fn apply_retention(&mut self) {
        let retention = Retention {
            counts: self.config.retention,
            samples: self.config.sample_retention,
        };
        if !retention.deletes()
            || self
                .last_retention
                .is_some_and(|at| at.elapsed() < RETENTION_EVERY)
        {
            return;
        }
        self.last_retention = Some(Instant::now());
        match retention.apply(&self.store, now_ms()).await {
            Ok(deleted) if deleted > 0 => tracing::info!(deleted, "retention removed old rows"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention could not delete old rows"),
        }
    }
}

/// The next run switched to, or never when runs are not switched (or the switch's sender is gone).
pub(super) async fn next_switch(
    switches: &mut Option<tokio::sync::watch::Receiver<ActiveRun>>,
) -> ActiveRun {
    let Some(receiver) = switches else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => receiver.borrow_and_update().clone(),
        Err(_) => {
            *switches = None;
            std::future::pending().await
        }
    }
}
