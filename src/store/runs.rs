//! Which run a set of upstreams is judged under now: the pointer replicas started without `--run` follow,
//! moved when a run is started without a restart (the run before closed and kept), and the notification events
//! of each run, claimed once.

use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row};

use crate::store::{Backend, Pool, Store, StoreError, on_pool, upsert_run};

/// The run the processes shadowing one set of upstreams write into, as the store points at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveRun {
    pub id: i64,
    pub label: String,
    /// When it became the active run (the starting process's clock): exchanges that began before belong to
    /// the run it replaced.
    pub since_ms: i64,
    /// Counts the pointer's moves: a later start has a larger one whatever the clocks of the processes say.
    pub generation: i64,
}

/// What the `settings` row of a pointer holds. The id is looked up by label, so that a run deleted and
/// started again under its label is still the one pointed at.
#[derive(Clone, Serialize, Deserialize)]
struct Pointer {
    label: String,
    since_ms: i64,
    #[serde(default)]
    generation: i64,
}

/// How a start treats a run already pointed at.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The label given becomes the active run (the API, a deployment hook).
    Replace,
    /// An open run already pointed at is joined; only when there is none does the label become it (a
    /// replica starting beside others that may be starting too).
    JoinOrCreate,
}

/// The settings row that points at the active run of these upstreams: replicas of one deployment share
/// upstreams, other deployments sharing the database do not, so each follows its own.
fn pointer_name(urls: [&str; 3]) -> String {
    format!("active_run {} {} {}", urls[0], urls[1], urls[2])
}

impl Store {
    /// The active run of these upstreams, if one is pointed at and still exists.
    pub async fn active_run(&self, urls: [&str; 3]) -> Result<Option<ActiveRun>, StoreError> {
        let Some(value) = self.setting(&pointer_name(urls)).await? else {
            return Ok(None);
        };
        let Ok(pointer) = serde_json::from_str::<Pointer>(&value) else {
            return Ok(None);
        };
        Ok(self
            .run(&pointer.label)
            .await?
            .map(|run| pointed(run.id, pointer)))
    }

    /// Points these upstreams at `label` (created if new, reopened if closed), closing the run pointed at
    /// before and the run `writing` (the starting process's own, which a process given `--run` writes without
    /// a pointer); with [`Start::JoinOrCreate`], an open run pointed at already is joined instead. Returns the
    /// active run and whether this call moved the pointer: asking for the active run again is a no-op, so a
    /// retried hook does not reset its clock. The pointer's row is locked for the transaction, so that
    /// starts at once from several replicas happen one after the other.
    pub async fn start_run(
        &self,
        label: &str,
        urls: [&str; 3],
        now_ms: i64,
        mode: Start,
        writing: Option<i64>,
    ) -> Result<(ActiveRun, bool), StoreError> {
        let name = pointer_name(urls);
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            // SQLite has one writer at a time, and the placeholder's insert below makes this transaction it.
            Backend::Sqlite => "",
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut placeholder = QueryBuilder::new("INSERT INTO settings (name, value) VALUES (");
            placeholder.push_bind(&name).push(", '') ON CONFLICT (name) DO NOTHING");
            placeholder.build().execute(&mut *tx).await?;
            let mut read = QueryBuilder::new("SELECT value FROM settings WHERE name = ");
            read.push_bind(&name).push(lock);
            let value: String = read.build().fetch_one(&mut *tx).await?.try_get("value")?;
            let before = serde_json::from_str::<Pointer>(&value).ok();

            if let Some(before) = &before {
                let mut current = QueryBuilder::new("SELECT id, closed_at FROM runs WHERE label = ");
                current.push_bind(&before.label);
                if let Some(row) = current.build().fetch_optional(&mut *tx).await? {
                    let open = row.try_get::<Option<i64>, _>("closed_at")?.is_none();
                    let id: i64 = row.try_get("id")?;
                    if before.label == label || (mode == Start::JoinOrCreate && open) {
                        tx.commit().await?;
                        return Ok((pointed(id, before.clone()), false));
                    }
                    let mut close = QueryBuilder::new("UPDATE runs SET closed_at = ");
                    close.push_bind(now_ms).push(" WHERE id = ").push_bind(id);
                    close.build().execute(&mut *tx).await?;
                }
            }

            let mut insert = QueryBuilder::new("");
            upsert_run(&mut insert, label, urls, now_ms, true);
            let id: i64 = insert.build().fetch_one(&mut *tx).await?.try_get("id")?;
            if let Some(writing) = writing.filter(|writing| *writing != id) {
                let mut close = QueryBuilder::new("UPDATE runs SET closed_at = ");
                close.push_bind(now_ms).push(" WHERE id = ").push_bind(writing).push(" AND closed_at IS NULL");
                close.build().execute(&mut *tx).await?;
            }
            let pointer = Pointer {
                label: label.to_string(),
                since_ms: now_ms,
                generation: before.as_ref().map_or(0, |before| before.generation) + 1,
            };
            let mut point = QueryBuilder::new("UPDATE settings SET value = ");
            point.push_bind(serde_json::to_string(&pointer).unwrap_or_default());
            point.push(" WHERE name = ").push_bind(&name);
            point.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok((pointed(id, pointer), true))
        })
    }

    /// Claims an event of a run for sending: true for the first claimant only, whichever replica it is.
    pub async fn claim_event(
        &self,
        run_id: i64,
        event: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut insert = QueryBuilder::new("INSERT INTO notifications (run_id, event, claimed_at) VALUES (");
            insert.push_bind(run_id).push(", ").push_bind(event).push(", ").push_bind(now_ms);
            insert.push(") ON CONFLICT (run_id, event) DO NOTHING");
            Ok(insert.build().execute(pool).await?.rows_affected() == 1)
        })
    }

    /// The state last told for an event of a run (the verdict), if any.
    pub async fn told_state(&self, run_id: i64, event: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT state FROM notifications WHERE run_id = ");
            query.push_bind(run_id).push(" AND event = ").push_bind(event);
            Ok(match query.build().fetch_optional(pool).await? {
                Some(row) => Some(row.try_get::<String, _>("state")?),
                None => None,
            })
        })
    }

    /// Moves an event's told state from `old` (none: never told) to `new`, only if it still is `old`: of
    /// replicas that saw the same change, one succeeds, and it is the one to tell it.
    pub async fn swap_told_state(
        &self,
        run_id: i64,
        event: &str,
        old: Option<&str>,
        new: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let affected = match old {
                None => {
                    let mut insert = QueryBuilder::new("INSERT INTO notifications (run_id, event, state, claimed_at) VALUES (");
                    insert.push_bind(run_id).push(", ").push_bind(event).push(", ").push_bind(new).push(", ").push_bind(now_ms);
                    insert.push(") ON CONFLICT (run_id, event) DO NOTHING");
                    insert.build().execute(pool).await?.rows_affected()
                }
                Some(old) => {
                    let mut update = QueryBuilder::new("UPDATE notifications SET state = ");
                    update.push_bind(new).push(", claimed_at = ").push_bind(now_ms);
                    update.push(" WHERE run_id = ").push_bind(run_id).push(" AND event = ").push_bind(event);
                    update.push(" AND state = ").push_bind(old);
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

fn pointed(id: i64, pointer: Pointer) -> ActiveRun {
    ActiveRun {
        id,
        label: pointer.label,
        since_ms: pointer.since_ms,
        generation: pointer.generation,
    }
}
