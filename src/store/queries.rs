//! Reads for the report module: runs, per-endpoint counts over a time range (merged into [`EndpointCounts`]
//! under the names the run's learned templates give) and minute by minute, samples, exchanges and rules. Counts
//! only: judging them is the report module's.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use crate::analysis::PathKey;
use crate::analysis::aggregate::EndpointCounts;
use crate::analysis::compat::Compat;
use crate::analysis::diff::DiffKind;
use crate::analysis::latency;
use crate::analysis::rules::{ActionKind, Rule, RuleSet, RuleSpec};
use crate::endpoint::cluster::TemplateSet;
use crate::features::topk::TopK;
use crate::store::rows::{apply_counter, parse_signature, parse_target};
use crate::store::sample::SampleDocument;
use crate::store::sketches::{
    MAX_SHAPE_ROWS, MAX_SHAPES, RunSketch, SHAPES_LIKE, dominant, parse_shapes_item,
};
use crate::store::{Pool, RunInfo, Store, StoreError, on_pool, upsert_run};

/// A span of time, in unix minutes, both ends included; `None` ends are open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from_minute: Option<i64>,
    pub to_minute: Option<i64>,
}

impl TimeRange {
    pub fn all() -> Self {
        Self::default()
    }

    /// From `from_ms` to `to_ms` (unix milliseconds).
    pub fn between_ms(from_ms: Option<i64>, to_ms: Option<i64>) -> Self {
        Self {
            from_minute: from_ms.map(|ms| ms.div_euclid(60_000)),
            to_minute: to_ms.map(|ms| ms.div_euclid(60_000)),
        }
    }

    fn is_all(&self) -> bool {
        self.from_minute.is_none() && self.to_minute.is_none()
    }

    fn bounds(&self) -> (i64, i64) {
        // Bucket -1 holds whole-run histograms: a range always starts at 0 or later.
        (
            self.from_minute.unwrap_or(0).max(0),
            self.to_minute.unwrap_or(i64::MAX),
        )
    }
}

/// A sample in a list.
#[derive(Clone, Debug, Serialize)]
pub struct SampleSummary {
    pub id: String,
    pub endpoint: String,
    pub created_at_ms: i64,
}

/// A rule stored through the API.
#[derive(Clone, Debug, Serialize)]
pub struct StoredRule {
    pub id: i64,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// A run's columns, as [`run_info`] reads them.
const RUN_COLUMNS: &str = "SELECT id, label, primary_url, secondary_url, candidate_url, started_at, last_seen_at, \
                           heartbeat_at, closed_at FROM runs";

impl Store {
    pub async fn runs(&self) -> Result<Vec<RunInfo>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new(RUN_COLUMNS);
            query.push(" ORDER BY last_seen_at DESC, id DESC");
            let rows = query.build().fetch_all(pool).await?;
            rows.iter().map(|row| Ok(run_info(row)?)).collect()
        })
    }

    /// Requests counted per run id.
    pub async fn run_requests(&self) -> Result<BTreeMap<i64, u64>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT run_id, CAST(SUM(value) AS BIGINT) AS total FROM endpoint_counters \
                 WHERE name = 'requests' GROUP BY run_id",
            )
            .fetch_all(pool)
            .await?;
            let mut totals = BTreeMap::new();
            for row in &rows {
                totals.insert(row.try_get::<i64, _>("run_id")?, row.try_get::<i64, _>("total")?.max(0) as u64);
            }
            Ok(totals)
        })
    }

    /// The run with this label, or the most recently active one for `latest`.
    pub async fn run(&self, label: &str) -> Result<Option<RunInfo>, StoreError> {
        // One row, not the whole list: the writer's pointer poll and the verdict refresh ask for it often.
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new(RUN_COLUMNS);
            if label == "latest" {
                query.push(" ORDER BY last_seen_at DESC, id DESC LIMIT 1");
            } else {
                query.push(" WHERE label = ").push_bind(label);
            }
            let row = query.build().fetch_optional(pool).await?;
            Ok(row.as_ref().map(run_info).transpose()?)
        })
    }

    /// Deletes a run and everything counted for it.
    pub async fn delete_run(&self, run_id: i64) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("DELETE FROM runs WHERE id = ");
            query.push_bind(run_id);
            Ok(query.build().execute(pool).await?.rows_affected() > 0)
        })
    }

    /// Deletes a run and starts it again under its label and upstreams at `now_ms`, in one transaction, so
    /// that no writer finds the label missing in between: the run started again holds the clear's time as
    /// its start, which is how replicas tell what began before the clear. None when there was no such run.
    pub async fn clear_run(&self, run_id: i64, now_ms: i64) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // The delete comes first, so that SQLite's transaction takes the write lock at once (waiting its
            // turn) instead of failing to upgrade a read while the writer writes.
            let mut delete = QueryBuilder::new("DELETE FROM runs WHERE id = ");
            delete.push_bind(run_id);
            delete.push(" RETURNING label, primary_url, secondary_url, candidate_url");
            let Some(row) = delete.build().fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let label: String = row.try_get("label")?;
            let urls: [String; 3] = [
                row.try_get("primary_url")?,
                row.try_get("secondary_url")?,
                row.try_get("candidate_url")?,
            ];
            let mut insert = QueryBuilder::new("");
            upsert_run(&mut insert, &label, urls.each_ref().map(String::as_str), now_ms, true);
            let id: i64 = insert.build().fetch_one(&mut *tx).await?.try_get("id")?;
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    /// Every endpoint's counts over `range`, merged across buckets and writers.
    pub async fn endpoint_counts(
        &self,
        run_id: i64,
        range: TimeRange,
    ) -> Result<BTreeMap<String, EndpointCounts>, StoreError> {
        let (from, to) = range.bounds();
        let templates = TemplateSet::new(self.templates(run_id).await?);
        // Counts stored under a name made before a template was learned belong to the template's name.
        let name = |row_endpoint: String| match templates.rename(&row_endpoint) {
            std::borrow::Cow::Borrowed(_) => row_endpoint,
            std::borrow::Cow::Owned(renamed) => renamed,
        };
        // And places stored before a map's position was learned belong to its `{key}` place.
        let keys = self.key_folds(run_id, &templates).await?;
        let fold = |endpoint: &str, path: String| match keys.fold(endpoint, &path) {
            std::borrow::Cow::Borrowed(_) => path,
            std::borrow::Cow::Owned(folded) => folded,
        };
        let mut endpoints: BTreeMap<String, EndpointCounts> = BTreeMap::new();
        let mut shapes: BTreeMap<(String, PathKey), TopK<()>> = BTreeMap::new();
        let postgres = self.backend() == crate::store::Backend::Postgres;
        on_pool!(self, pool => {
            // One snapshot for every table: a batch committed between two reads would otherwise count its
            // places but not its requests (a diff rate over 100 %). SQLite's read transaction is a snapshot in
            // WAL mode; PostgreSQL's needs REPEATABLE READ.
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
            }
            let mut counters = scoped(
                "SELECT endpoint, name, CAST(SUM(value) AS BIGINT) AS total FROM endpoint_counters WHERE run_id = ",
                run_id, None, (from, to),
            );
            for row in counters.push(" GROUP BY endpoint, name").build().fetch_all(&mut *tx).await? {
                let endpoint = name(row.try_get("endpoint")?);
                let counter: String = row.try_get("name")?;
                apply_counter(&mut endpoints.entry(endpoint).or_default().tally, &counter, row.try_get("total")?);
            }

            let mut places = scoped(
                "SELECT endpoint, path, kind, CAST(SUM(raw_changed) AS BIGINT) AS changed, \
                 CAST(SUM(raw_additive) AS BIGINT) AS additive, CAST(SUM(raw_breaking) AS BIGINT) AS breaking, \
                 CAST(SUM(noise) AS BIGINT) AS noise FROM path_counts WHERE run_id = ",
                run_id, None, (from, to),
            );
            for row in places.push(" GROUP BY endpoint, path, kind").build().fetch_all(&mut *tx).await? {
                let endpoint = name(row.try_get("endpoint")?);
                let Some(kind) = DiffKind::parse(&row.try_get::<String, _>("kind")?) else { continue };
                let path = fold(&endpoint, row.try_get("path")?);
                let counts = endpoints.entry(endpoint).or_default();
                let place = counts.tally.paths.entry((path, kind)).or_default();
                for (slot, column) in ["changed", "additive", "breaking"].into_iter().enumerate() {
                    place.raw[slot] += row.try_get::<i64, _>(column)?.max(0) as u64;
                }
                place.noise += row.try_get::<i64, _>("noise")?.max(0) as u64;
            }

            let mut signatures = scoped(
                "SELECT endpoint, signature, CAST(SUM(count) AS BIGINT) AS total FROM signature_counts WHERE run_id = ",
                run_id, None, (from, to),
            );
            for row in signatures.push(" GROUP BY endpoint, signature_hash, signature").build().fetch_all(&mut *tx).await? {
                let endpoint = name(row.try_get("endpoint")?);
                let Some(signature) = parse_signature(&row.try_get::<String, _>("signature")?) else { continue };
                let signature = keys.fold_signature(&endpoint, signature);
                let total = row.try_get::<i64, _>("total")?.max(0) as u64;
                *endpoints.entry(endpoint).or_default().tally.signatures.entry(signature).or_default() += total;
            }

            // The whole run reads each writer's running histogram; a range reads its minutes.
            let mut histograms = QueryBuilder::new("SELECT endpoint, target, histogram FROM latency_histograms WHERE run_id = ");
            histograms.push_bind(run_id);
            if range.is_all() {
                histograms.push(" AND bucket = -1");
            } else {
                histograms.push(" AND bucket >= ").push_bind(from).push(" AND bucket <= ").push_bind(to);
            }
            for row in histograms.build().fetch_all(&mut *tx).await? {
                let endpoint = name(row.try_get("endpoint")?);
                let Some(target) = parse_target(&row.try_get::<String, _>("target")?) else { continue };
                let bytes: Vec<u8> = row.try_get("histogram")?;
                if let Some(histogram) = latency::decode(&bytes) {
                    endpoints.entry(endpoint).or_default().latency.merge_target(target, &histogram);
                }
            }

            let mut samples = QueryBuilder::new(
                "SELECT endpoint, path, kind, MIN(sample_id) AS sample FROM sample_paths WHERE run_id = ",
            );
            samples.push_bind(run_id).push(" GROUP BY endpoint, path, kind");
            for row in samples.build().fetch_all(&mut *tx).await? {
                let endpoint = name(row.try_get("endpoint")?);
                let Some(kind) = DiffKind::parse(&row.try_get::<String, _>("kind")?) else { continue };
                let Ok(id) = row.try_get::<String, _>("sample")?.parse() else { continue };
                let path = fold(&endpoint, row.try_get("path")?);
                if let Some(counts) = endpoints.get_mut(&endpoint) {
                    counts.samples.entry((path, kind)).or_insert((id, true));
                }
            }

            // Shapes are kept for the whole run: every writer's, merged, then the one most changes take.
            let mut shape_rows = QueryBuilder::new("SELECT endpoint, item, sketch FROM run_sketches WHERE run_id = ");
            shape_rows.push_bind(run_id).push(" AND item LIKE ").push_bind(SHAPES_LIKE);
            shape_rows.push(" LIMIT ").push_bind(MAX_SHAPE_ROWS as i64);
            for row in shape_rows.build().fetch_all(&mut *tx).await? {
                let endpoint = name(row.try_get("endpoint")?);
                let item: String = row.try_get("item")?;
                let Some((path, kind)) = parse_shapes_item(&item) else { continue };
                let place = (fold(&endpoint, path), kind);
                let Some(RunSketch::Shapes(found)) = RunSketch::decode(&item, &row.try_get::<String, _>("sketch")?) else { continue };
                shapes.entry((endpoint, place)).or_default().merge(&found, MAX_SHAPES);
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        for ((endpoint, place), found) in shapes {
            if let (Some(counts), Some(shape)) = (endpoints.get_mut(&endpoint), dominant(&found)) {
                counts.shapes.insert(place, shape);
            }
        }
        Ok(endpoints)
    }

    /// One endpoint's counts and latency minute by minute over `range` (under every name the endpoint's
    /// template covers).
    pub async fn endpoint_minutes(
        &self,
        run_id: i64,
        endpoint: &str,
        range: TimeRange,
    ) -> Result<BTreeMap<i64, EndpointCounts>, StoreError> {
        let (from, to) = range.bounds();
        let names = self.names_under(run_id, endpoint).await?;
        let templates = TemplateSet::new(self.templates(run_id).await?);
        let keys = self.key_folds(run_id, &templates).await?;
        let mut minutes: BTreeMap<i64, EndpointCounts> = BTreeMap::new();
        on_pool!(self, pool => {
            let mut counters = scoped("SELECT bucket, name, value FROM endpoint_counters WHERE run_id = ", run_id, Some(&names), (from, to));
            for row in counters.build().fetch_all(pool).await? {
                let name: String = row.try_get("name")?;
                apply_counter(&mut minutes.entry(row.try_get("bucket")?).or_default().tally, &name, row.try_get("value")?);
            }
            let mut signatures = scoped("SELECT bucket, signature, count FROM signature_counts WHERE run_id = ", run_id, Some(&names), (from, to));
            for row in signatures.build().fetch_all(pool).await? {
                let Some(signature) = parse_signature(&row.try_get::<String, _>("signature")?) else { continue };
                let signature = keys.fold_signature(endpoint, signature);
                let count = row.try_get::<i64, _>("count")?.max(0) as u64;
                *minutes.entry(row.try_get("bucket")?).or_default().tally.signatures.entry(signature).or_default() += count;
            }
            let mut histograms = scoped("SELECT bucket, target, histogram FROM latency_histograms WHERE run_id = ", run_id, Some(&names), (from, to));
            for row in histograms.build().fetch_all(pool).await? {
                let Some(target) = parse_target(&row.try_get::<String, _>("target")?) else { continue };
                let bytes: Vec<u8> = row.try_get("histogram")?;
                if let Some(histogram) = latency::decode(&bytes) {
                    minutes.entry(row.try_get("bucket")?).or_default().latency.merge_target(target, &histogram);
                }
            }
            Ok::<(), StoreError>(())
        })?;
        Ok(minutes)
    }

    /// Samples of an endpoint, for a place (path and kind) or for all, newest first.
    pub async fn samples(
        &self,
        run_id: i64,
        endpoint: &str,
        place: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<SampleSummary>, StoreError> {
        let names = self.names_under(run_id, endpoint).await?;
        let paths = match place {
            Some((path, _)) => {
                self.sample_paths_under(run_id, endpoint, &names, path)
                    .await?
            }
            None => Vec::new(),
        };
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new(
                "SELECT DISTINCT s.id, s.endpoint, s.created_at FROM samples s JOIN sample_paths p ON p.sample_id = s.id \
                 WHERE s.run_id = ",
            );
            query.push_bind(run_id).push(" AND s.endpoint IN (");
            push_list(&mut query, &names);
            query.push(")");
            if let Some((_, kind)) = place {
                // The place's path, and the per-key paths stored before its map was learned.
                query.push(" AND p.path IN (");
                push_list(&mut query, &paths);
                query.push(") AND p.kind = ").push_bind(kind);
            }
            query.push(" ORDER BY s.created_at DESC, s.id DESC LIMIT ").push_bind(limit);
            let rows = query.build().fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(SampleSummary {
                        id: row.try_get("id")?,
                        endpoint: row.try_get("endpoint")?,
                        created_at_ms: row.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    /// The names rows of `endpoint` are stored under: itself, and names made before one of the run's templates
    /// was learned that the template now covers.
    pub(crate) async fn names_under(
        &self,
        run_id: i64,
        endpoint: &str,
    ) -> Result<Vec<String>, StoreError> {
        let templates = TemplateSet::new(self.templates(run_id).await?);
        if templates.is_empty() {
            return Ok(vec![endpoint.to_string()]);
        }
        let mut names = vec![endpoint.to_string()];
        for name in self.endpoint_names(run_id, usize::MAX).await? {
            if name != endpoint && templates.rename(&name) == endpoint {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// One stored exchange, whole, with its run's label; opened, if sealed, with this store's identity.
    pub async fn exchange(&self, id: &str) -> Result<Option<SampleDocument>, StoreError> {
        let found: Option<(String, String, i64)> = on_pool!(self, pool => {
            let mut query = QueryBuilder::new(
                "SELECT s.document, r.label, s.run_id FROM samples s JOIN runs r ON r.id = s.run_id WHERE s.id = ",
            );
            query.push_bind(id);
            match query.build().fetch_optional(pool).await? {
                Some(row) => Some((row.try_get::<String, _>("document")?, row.try_get::<String, _>("label")?, row.try_get::<i64, _>("run_id")?)),
                None => None,
            }
        });
        let Some((text, label, run_id)) = found else {
            return Ok(None);
        };
        let mut document: SampleDocument = serde_json::from_str(&text)
            .map_err(|error| StoreError::Data(format!("exchange {id}: {error}")))?;
        document.run = label;
        self.open_sample(&mut document);
        // A sample taken before a map's position was learned shows its places as they are counted now.
        let templates = TemplateSet::new(self.templates(run_id).await?);
        let keys = self.key_folds(run_id, &templates).await?;
        if let Some(learned) = keys.of(&templates.rename(&document.endpoint)) {
            let differences = document
                .candidate_differences
                .iter_mut()
                .map(|stored| &mut stored.difference)
                .chain(document.noise_differences.iter_mut());
            for difference in differences {
                if let std::borrow::Cow::Owned(folded) = learned.fold(&difference.generalised) {
                    difference.generalised = folded;
                }
            }
        }
        Ok(Some(document))
    }

    pub async fn add_rule(&self, spec: &RuleSpec, now_ms: i64) -> Result<i64, StoreError> {
        let ids = self.add_rules(std::slice::from_ref(spec), now_ms).await?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Data("no rule was stored".into()))
    }

    /// Stores several rules in one transaction: all of them, or none.
    pub async fn add_rules(&self, specs: &[RuleSpec], now_ms: i64) -> Result<Vec<i64>, StoreError> {
        // Checked like a rules file's, so that a stored rule always parses.
        for spec in specs {
            Rule::new(spec.clone()).map_err(StoreError::Data)?;
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut ids = Vec::with_capacity(specs.len());
            for spec in specs {
                let mut query = QueryBuilder::new("INSERT INTO rules (endpoint, path, action, absolute, relative, kind, compat, note, created_at) VALUES (");
                let mut values = query.separated(", ");
                values.push_bind(spec.endpoint.as_deref()).push_bind(spec.path.as_str()).push_bind(spec.action.as_str());
                values.push_bind(spec.absolute).push_bind(spec.relative);
                values.push_bind(spec.kind.map(DiffKind::as_str)).push_bind(spec.compat.map(Compat::as_str)).push_bind(spec.note.as_deref());
                values.push_bind(now_ms);
                query.push(") RETURNING id");
                let row = query.build().fetch_one(&mut *tx).await?;
                ids.push(row.try_get::<i64, _>("id")?);
            }
            tx.commit().await?;
            Ok(ids)
        })
    }

    pub async fn rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT id, endpoint, path, action, absolute, relative, kind, compat, note FROM rules ORDER BY id")
                .fetch_all(pool)
                .await?;
            let mut rules = Vec::with_capacity(rows.len());
            for row in &rows {
                let action: String = row.try_get("action")?;
                let Ok(action) = serde_json::from_value::<ActionKind>(serde_json::Value::String(action)) else { continue };
                // A kind or class this version does not know is not widened to "any": the rule is left out.
                let kind: Option<String> = row.try_get("kind")?;
                let compat: Option<String> = row.try_get("compat")?;
                let Ok(kind) = kind.map(|text| DiffKind::parse(&text).ok_or(())).transpose() else { continue };
                let Ok(compat) = compat.map(|text| Compat::parse(&text).ok_or(())).transpose() else { continue };
                rules.push(StoredRule {
                    id: row.try_get("id")?,
                    spec: RuleSpec {
                        endpoint: row.try_get("endpoint")?,
                        path: row.try_get("path")?,
                        action,
                        absolute: row.try_get("absolute")?,
                        relative: row.try_get("relative")?,
                        kind,
                        compat,
                        note: row.try_get("note")?,
                    },
                });
            }
            Ok(rules)
        })
    }

    pub async fn delete_rule(&self, id: i64) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("DELETE FROM rules WHERE id = ");
            query.push_bind(id);
            Ok(query.build().execute(pool).await?.rows_affected() > 0)
        })
    }

    /// The rules in force: those given at start, then those stored.
    pub async fn rule_set(&self, from_file: &RuleSet) -> Result<RuleSet, StoreError> {
        let stored = self.rules().await?;
        Ok(from_file.with_more(
            stored
                .into_iter()
                .filter_map(|stored| Rule::new(stored.spec).ok()),
        ))
    }
}

/// `select` (ending in `WHERE run_id = `) over a count table, scoped: the run, the endpoint names (all when
/// `None`) and the buckets from `from` to `to`, both included.
fn scoped<DB: sqlx::Database>(
    select: &str,
    run_id: i64,
    names: Option<&[String]>,
    (from, to): (i64, i64),
) -> QueryBuilder<DB>
where
    i64: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new(select);
    query.push_bind(run_id);
    if let Some(names) = names {
        query.push(" AND endpoint IN (");
        push_list(&mut query, names);
        query.push(")");
    }
    query
        .push(" AND bucket >= ")
        .push_bind(from)
        .push(" AND bucket <= ")
        .push_bind(to);
    query
}

/// `?, ?, ...` binding each of `items`.
pub(crate) fn push_list<DB: sqlx::Database>(query: &mut QueryBuilder<DB>, items: &[String])
where
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut list = query.separated(", ");
    for item in items {
        list.push_bind(item.as_str());
    }
}

fn run_info<R: Row>(row: &R) -> Result<RunInfo, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RunInfo {
        id: row.try_get("id")?,
        label: row.try_get("label")?,
        primary_url: row.try_get("primary_url")?,
        secondary_url: row.try_get("secondary_url")?,
        candidate_url: row.try_get("candidate_url")?,
        started_at_ms: row.try_get("started_at")?,
        last_seen_at_ms: row.try_get("last_seen_at")?,
        heartbeat_at_ms: row.try_get("heartbeat_at")?,
        closed_at_ms: row.try_get("closed_at")?,
    })
}
