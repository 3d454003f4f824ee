//! The admin's only writes to the store: stored rules added and removed, runs cleared and deleted.

use crate::analysis::rules::RuleSpec;
use crate::clock::now_ms;
use crate::runs::RunControl;
use crate::store::{RunInfo, Store, StoreError};
use crate::web::error::WebError;

/// The writes the pages and the API make; everything they read goes through [`crate::report::Reports`].
#[derive(Clone)]
pub struct Edits {
    store: Store,
}

impl Edits {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Stores a rule, in force at once; its id. A rule the store refuses is the caller's mistake (400).
    pub async fn add_rule(&self, spec: &RuleSpec) -> Result<i64, WebError> {
        self.store
            .add_rule(spec, now_ms())
            .await
            .map_err(WebError::from_rule_error)
    }

    /// Stores rules in one transaction, all or none; their ids.
    pub async fn add_rules(&self, specs: &[RuleSpec]) -> Result<Vec<i64>, WebError> {
        self.store
            .add_rules(specs, now_ms())
            .await
            .map_err(WebError::from_rule_error)
    }

    /// Removes a stored rule; whether there was one with this id.
    pub async fn delete_rule(&self, id: i64) -> Result<bool, StoreError> {
        self.store.delete_rule(id).await
    }

    /// Deletes `run` and everything counted for it. When it is the run this process writes (`runs`), it is
    /// started again under its label in the same transaction, and the writer told before this returns: what
    /// the writer held from before is dropped (counted as `run_deleted`), what arrives after is stored, so
    /// that what follows the answer is kept. Other replicas writing it learn of the clear at their next write.
    pub async fn clear_run(
        &self,
        runs: Option<&RunControl>,
        run: &RunInfo,
    ) -> Result<(), StoreError> {
        if let Some(runs) = runs
            && runs.current().label == run.label
        {
            let now = now_ms();
            if let Some(id) = self.store.clear_run(run.id, now).await? {
                runs.restarted(id, now);
            }
            return Ok(());
        }
        self.store.delete_run(run.id).await?;
        Ok(())
    }
}
