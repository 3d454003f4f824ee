//! What the read side hands on as stored: runs, templates, exchanges, stored rules, samples, the store's ping.

use std::collections::BTreeMap;

use crate::analysis::rules::RuleSpec;
use crate::endpoint::cluster::LearnedTemplate;
use crate::report::Reports;
use crate::store::listing::{SampleFilter, SampleListing};
use crate::store::queries::StoredRule;
use crate::store::sample::SampleDocument;
use crate::store::{RunInfo, StoreError};

impl Reports {
    /// Every run, most recently active first.
    pub async fn runs(&self) -> Result<Vec<RunInfo>, StoreError> {
        self.store.runs().await
    }

    /// Requests counted per run id.
    pub async fn run_requests(&self) -> Result<BTreeMap<i64, u64>, StoreError> {
        self.store.run_requests().await
    }

    /// The endpoint templates learned from a run's traffic.
    pub async fn templates(&self, run_id: i64) -> Result<Vec<LearnedTemplate>, StoreError> {
        self.store.templates(run_id).await
    }

    /// One stored exchange, whole (redacted), if it is kept.
    pub async fn exchange(&self, id: &str) -> Result<Option<SampleDocument>, StoreError> {
        self.store.exchange(id).await
    }

    /// The rules stored from the dashboard or the API, with their ids (not the rules file's).
    pub async fn stored_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        self.store.rules().await
    }

    /// The stored rules as rules, their ids dropped.
    pub async fn stored_specs(&self) -> Result<Vec<RuleSpec>, StoreError> {
        Ok(self
            .stored_rules()
            .await?
            .into_iter()
            .map(|stored| stored.spec)
            .collect())
    }

    /// A page of a run's samples of `endpoint` that `filter` keeps, newest first: `offset` of them skipped, at
    /// most `limit` kept.
    pub async fn samples(
        &self,
        run: &RunInfo,
        endpoint: &str,
        filter: &SampleFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SampleListing>, StoreError> {
        self.store
            .sample_listing(run.id, endpoint, filter, limit, offset)
            .await
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
