//! Retention: counts and samples older than `--retention` deleted, and samples alone older than
//! `--sample-retention`, so that stored responses go sooner than the verdict they back.

use std::time::Duration;

use sqlx::QueryBuilder;

use crate::store::{Pool, Store, StoreError, on_pool};

/// How long what is stored is kept.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Counts, samples and idle runs (`--retention`); `None` keeps them.
    pub counts: Option<Duration>,
    /// Samples alone (`--sample-retention`); `None`: as long as the counts.
    pub samples: Option<Duration>,
}

impl Retention {
    /// Whether anything is ever deleted.
    pub fn deletes(&self) -> bool {
        self.counts.is_some() || self.samples.is_some()
    }

    /// Deletes what is past its age at `now_ms`; the rows deleted.
    pub async fn apply(&self, store: &Store, now_ms: i64) -> Result<u64, StoreError> {
        let cutoff = |age: Duration| {
            now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
        };
        let mut deleted = 0;
        if let Some(age) = self.counts {
            deleted += store.delete_older_than(cutoff(age)).await?;
        }
        if let Some(age) = self.samples {
            deleted += store.delete_samples_older_than(cutoff(age)).await?;
        }
        Ok(deleted)
    }
}

impl Store {
    /// Deletes the samples taken before `cutoff_ms` (what places they show goes with them); the counts stay.
    pub async fn delete_samples_older_than(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let mut samples = QueryBuilder::new("DELETE FROM samples WHERE created_at < ");
            samples.push_bind(cutoff_ms);
            Ok(samples.build().execute(pool).await?.rows_affected())
        })
    }
}
