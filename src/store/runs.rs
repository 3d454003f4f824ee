//! Which run a set of upstreams is judged under now: the pointer every replica follows, moved when a run is
//! started without a restart (the run before it closed and kept), and the events of notifications claimed once.

use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row};

use crate::store::{Pool, Store, StoreError, on_pool, upsert_run};

/// The run the processes shadowing one set of upstreams write into, as the store points at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveRun {
    pub id: i64,
    pub label: String,
    /// When it became the active run: exchanges that began before belong to the run it replaced.
    pub since_ms: i64,
}

/// What the `settings` row of a pointer holds. The id is looked up by label, so that a run deleted and
/// started again under its label is still the one pointed at.
#[derive(Serialize, Deserialize)]
struct Pointer {
    label: String,
    since_ms: i64,
}

/// The settings row that points at the active run of these upstreams: replicas of one deployment share
/// upstreams, other deployments sharing the database do not, so each follows its own.
fn pointer_name(urls: [&str; 3]) -> String {
    format!("active_run {} {} {}", urls[0], urls[1], urls[2])
}

impl Store {
    /// The active run of these upstreams, if one is pointed at and still exists.
    pub async fn active_run(&self, urls: [&str; 3]) -> Result<Option<ActiveRun>, StoreError> {
        let name = pointer_name(urls);
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT value FROM settings WHERE name = ");
            query.push_bind(&name);
            let Some(row) = query.build().fetch_optional(pool).await? else {
                return Ok(None);
            };
            let value: String = row.try_get("value")?;
            let Ok(pointer) = serde_json::from_str::<Pointer>(&value) else {
                return Ok(None);
            };
            let mut query = QueryBuilder::new("SELECT id FROM runs WHERE label = ");
            query.push_bind(&pointer.label);
            let id = query.build().fetch_optional(pool).await?;
            Ok(match id {
                Some(row) => Some(ActiveRun {
                    id: row.try_get("id")?,
                    label: pointer.label,
                    since_ms: pointer.since_ms,
                }),
                None => None,
            })
        })
    }

    /// Makes `label` the active run of these upstreams (created if new, reopened if closed), closing the other
    /// open runs of these upstreams. Returns the active run and whether it changed (asking for the active run again is a
    /// no-op, so a retried hook or a second replica's start does not reset the clock).
    pub async fn start_run(
        &self,
        label: &str,
        urls: [&str; 3],
        now_ms: i64,
    ) -> Result<(ActiveRun, bool), StoreError> {
        if let Some(active) = self.active_run(urls).await?
            && active.label == label
        {
            return Ok((active, false));
        }
        let name = pointer_name(urls);
        let pointer = serde_json::to_string(&Pointer {
            label: label.to_string(),
            since_ms: now_ms,
        })
        .unwrap_or_default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut insert = QueryBuilder::new("");
            upsert_run(&mut insert, label, urls, now_ms, true);
            let id: i64 = insert.build().fetch_one(&mut *tx).await?.try_get("id")?;

            // Every other open run of these upstreams is closed, not only the one pointed at: two starts at once
            // each close what the other made.
            let mut close = QueryBuilder::new("UPDATE runs SET closed_at = ");
            close.push_bind(now_ms).push(" WHERE primary_url = ").push_bind(urls[0]);
            close.push(" AND secondary_url = ").push_bind(urls[1]).push(" AND candidate_url = ").push_bind(urls[2]);
            close.push(" AND label <> ").push_bind(label).push(" AND closed_at IS NULL");
            close.build().execute(&mut *tx).await?;
            let mut point = QueryBuilder::new("INSERT INTO settings (name, value) VALUES (");
            point.push_bind(&name).push(", ").push_bind(&pointer);
            point.push(") ON CONFLICT (name) DO UPDATE SET value = excluded.value");
            point.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok((
                ActiveRun {
                    id,
                    label: label.to_string(),
                    since_ms: now_ms,
                },
                true,
            ))
        })
    }

    /// Claims an event for sending: true for the first claimant only, whichever replica it is.
    pub async fn claim_event(&self, event: &str, now_ms: i64) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut insert = QueryBuilder::new("INSERT INTO notifications (event, claimed_at) VALUES (");
            insert.push_bind(event).push(", ").push_bind(now_ms).push(") ON CONFLICT (event) DO NOTHING");
            Ok(insert.build().execute(pool).await?.rows_affected() == 1)
        })
    }

    /// Sets a setting from `old` (none: unset) to `new`, only if it still holds `old`: of replicas that saw
    /// the same change, one succeeds.
    pub async fn swap_setting(
        &self,
        name: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let affected = match old {
                None => {
                    let mut insert = QueryBuilder::new("INSERT INTO settings (name, value) VALUES (");
                    insert.push_bind(name).push(", ").push_bind(new).push(") ON CONFLICT (name) DO NOTHING");
                    insert.build().execute(pool).await?.rows_affected()
                }
                Some(old) => {
                    let mut update = QueryBuilder::new("UPDATE settings SET value = ");
                    update.push_bind(new).push(" WHERE name = ").push_bind(name).push(" AND value = ").push_bind(old);
                    update.build().execute(pool).await?.rows_affected()
                }
            };
            Ok(affected == 1)
        })
    }

    /// A setting's value.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT value FROM settings WHERE name = ");
            query.push_bind(name);
            Ok(match query.build().fetch_optional(pool).await? {
                Some(row) => Some(row.try_get::<String, _>("value")?),
                None => None,
            })
        })
    }
}
