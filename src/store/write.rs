//! Writing a batch in one transaction (counts added, latency merged into this writer's sketches, samples in and
//! out, learned templates and key positions), recognised when sent twice; rows the database rejects are dropped
//! one at a time instead of the batch. Also the run's heartbeat, retention, and what a writer reads back at start.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::{Acquire, QueryBuilder, Row};

use crate::analysis::aggregate::Tally;
use crate::analysis::keys::KeyPosition;
use crate::analysis::latency::{self, Latencies};
use crate::endpoint::cluster::LearnedTemplate;
use crate::exchange::Target;
use crate::store::rows::{clean_path, clean_text, counter_rows, parse_target, signature_row};
use crate::store::sketches::{RunSketch, SketchRow};
use crate::store::{Pool, SampleRow, Store, StoreError, on_pool};

/// Rows per multi-row statement, well under both databases' limits on bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// A sample the reservoir let go for one place (it may still show others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsampled {
    pub endpoint: String,
    pub path: String,
    pub kind: String,
    pub sample_id: String,
}

/// Everything one flush writes, for one run.
#[derive(Clone, Debug, Default)]
pub struct FlushBatch {
    /// This writer's number for the batch: the same when the batch is sent again.
    pub id: i64,
    /// Counts since the last flush, per (endpoint, minute).
    pub counts: Vec<(String, i64, Tally)>,
    /// Latency since the last flush, per (endpoint, minute) and (endpoint, -1) for the whole run, to be added
    /// to this writer's stored sketches.
    pub latency: Vec<(String, i64, Latencies)>,
    pub samples: Vec<SampleRow>,
    pub unsampled: Vec<Unsampled>,
    pub templates: Vec<LearnedTemplate>,
    /// Object positions learned as maps (`{key}`) since the last flush.
    pub key_positions: Vec<KeyPosition>,
    /// Feature and shape sketches since the last flush, to be merged into this writer's stored ones.
    pub sketches: Vec<SketchRow>,
}

impl FlushBatch {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
            && self.latency.is_empty()
            && self.samples.is_empty()
            && self.unsampled.is_empty()
            && self.templates.is_empty()
            && self.key_positions.is_empty()
            && self.sketches.is_empty()
    }

    /// Requests the batch counts (what is lost if it cannot be written).
    pub fn requests(&self) -> u64 {
        self.counts.iter().map(|(_, _, tally)| tally.requests).sum()
    }

    /// Exchanges the batch counts as compared.
    pub fn compared(&self) -> u64 {
        self.counts.iter().map(|(_, _, tally)| tally.compared).sum()
    }
}

/// Rows the database refused, left out of a batch written one row at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub table: &'static str,
    pub rows: usize,
    /// The database's first reason.
    pub cause: String,
}

/// What writing a batch did.
#[derive(Debug, Default)]
pub struct Written {
    /// The batch had been committed before (its first commit's answer was lost): nothing was written again.
    pub already: bool,
    pub rejected: Vec<Rejected>,
}

impl Written {
    fn reject(&mut self, table: &'static str, error: &StoreError) {
        match self.rejected.iter_mut().find(|r| r.table == table) {
            Some(rejected) => rejected.rows += 1,
            None => self.rejected.push(Rejected {
                table,
                rows: 1,
                cause: error.to_string(),
            }),
        }
    }
}

/// Runs one statement per chunk of rows. With `$isolate`, each row is a statement of its own inside a savepoint,
/// and a row the database refuses for good is rolled back, counted and left out; anything else fails the batch.
macro_rules! each_chunk {
    ($tx:ident, $isolate:expr, $written:ident, $table:expr, $rows:expr, |$chunk:ident| $build:expr) => {{
        let size = if $isolate { 1 } else { ROWS_PER_STATEMENT };
        for $chunk in $rows.chunks(size) {
            let mut query = $build;
            if $isolate {
                let mut savepoint = (&mut *$tx).begin().await?;
                let result = query.build().execute(&mut *savepoint).await;
                match result {
                    Ok(_) => savepoint.commit().await?,
                    Err(error) => {
                        let error = StoreError::from(error);
                        if error.is_retryable() {
                            return Err(error);
                        }
                        savepoint.rollback().await?;
                        $written.reject($table, &error);
                    }
                }
            } else {
                query.build().execute(&mut *$tx).await?;
            }
        }
    }};
}

/// A `path_counts` row: endpoint, minute, path, kind, raw by class, noise.
type PlaceRow<'a> = (&'a str, i64, Cow<'a, str>, &'a str, [i64; 3], i64);
/// A `latency_histograms` key: endpoint, bucket, target.
type SketchKey = (String, i64, &'static str);

impl Store {
    /// Writes one batch in one transaction: the run's heartbeat, the batch id (a batch already committed is
    /// not written again), counters and place counts added, signatures counted, latency merged into this
    /// writer's sketches, samples inserted and let go, templates recorded. All or nothing, so that a failed
    /// flush can be retried whole; with `isolate`, rows the database refuses are left out one by one instead.
    pub async fn write_batch(
        &self,
        run_id: i64,
        writer: &str,
        batch: &FlushBatch,
        now_ms: i64,
        isolate: bool,
    ) -> Result<Written, StoreError> {
        let mut written = Written::default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;

            let mut touch = QueryBuilder::new("UPDATE runs SET last_seen_at = ");
            touch.push_bind(now_ms).push(", heartbeat_at = ").push_bind(now_ms).push(" WHERE id = ").push_bind(run_id);
            if touch.build().execute(&mut *tx).await?.rows_affected() == 0 {
                return Err(StoreError::RunGone(run_id));
            }
            let mut mark = QueryBuilder::new("INSERT INTO applied_batches (writer, batch, run_id) VALUES (");
            mark.push_bind(writer).push(", ").push_bind(batch.id).push(", ").push_bind(run_id);
            mark.push(") ON CONFLICT (writer, batch) DO NOTHING");
            if mark.build().execute(&mut *tx).await?.rows_affected() == 0 {
                tx.commit().await?;
                written.already = true;
                return Ok(written);
            }
            // Only the last batch of a writer is ever sent again.
            let mut forget = QueryBuilder::new("DELETE FROM applied_batches WHERE writer = ");
            forget.push_bind(writer).push(" AND batch < ").push_bind(batch.id);
            forget.build().execute(&mut *tx).await?;

            let counters: Vec<(&str, i64, String, i64)> = batch
                .counts
                .iter()
                .flat_map(|(endpoint, bucket, tally)| {
                    counter_rows(tally).into_iter().map(move |(name, value)| (endpoint.as_str(), *bucket, name, value))
                })
                .collect();
            each_chunk!(tx, isolate, written, "endpoint_counters", counters, |chunk| {
                let mut query = QueryBuilder::new("INSERT INTO endpoint_counters (run_id, endpoint, bucket, name, value) ");
                query.push_values(chunk, |mut row, (endpoint, bucket, name, value)| {
                    row.push_bind(run_id).push_bind(clean_text(endpoint)).push_bind(*bucket).push_bind(name.as_str()).push_bind(*value);
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, name) DO UPDATE SET value = endpoint_counters.value + excluded.value",
                );
                query
            });

            let places: Vec<PlaceRow<'_>> = batch
                .counts
                .iter()
                .flat_map(|(endpoint, bucket, tally)| {
                    tally.paths.iter().map(move |((path, kind), place)| {
                        (endpoint.as_str(), *bucket, clean_path(path), kind.as_str(), place.raw.map(|n| n as i64), place.noise as i64)
                    })
                })
                .collect();
            each_chunk!(tx, isolate, written, "path_counts", places, |chunk| {
                let mut query = QueryBuilder::new(
                    "INSERT INTO path_counts (run_id, endpoint, bucket, path, kind, raw_changed, raw_additive, raw_breaking, noise) ",
                );
                query.push_values(chunk, |mut row, (endpoint, bucket, path, kind, raw, noise)| {
                    row.push_bind(run_id).push_bind(clean_text(endpoint)).push_bind(*bucket).push_bind(path.as_ref()).push_bind(*kind);
                    row.push_bind(raw[0]).push_bind(raw[1]).push_bind(raw[2]).push_bind(*noise);
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, path, kind) DO UPDATE SET \
                     raw_changed = path_counts.raw_changed + excluded.raw_changed, \
                     raw_additive = path_counts.raw_additive + excluded.raw_additive, \
                     raw_breaking = path_counts.raw_breaking + excluded.raw_breaking, \
                     noise = path_counts.noise + excluded.noise",
                );
                query
            });

            let signatures: Vec<(&str, i64, i64, String, i64)> = batch
                .counts
                .iter()
                .flat_map(|(endpoint, bucket, tally)| {
                    tally.signatures.iter().map(move |(signature, count)| {
                        let (hash, text) = signature_row(signature);
                        (endpoint.as_str(), *bucket, hash, text, *count as i64)
                    })
                })
                .collect();
            each_chunk!(tx, isolate, written, "signature_counts", signatures, |chunk| {
                let mut query = QueryBuilder::new(
                    "INSERT INTO signature_counts (run_id, endpoint, bucket, signature_hash, signature, count) ",
                );
                query.push_values(chunk, |mut row, (endpoint, bucket, hash, text, count)| {
                    row.push_bind(run_id).push_bind(clean_text(endpoint)).push_bind(*bucket).push_bind(*hash);
                    row.push_bind(text.as_str()).push_bind(*count);
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, signature_hash) DO UPDATE SET count = signature_counts.count + excluded.count",
                );
                query
            });

            // Latency: this writer's stored sketches, plus what this batch adds to them.
            let mut sketches: HashMap<SketchKey, latency::LatencySketch> = HashMap::new();
            for (endpoint, bucket, latencies) in &batch.latency {
                for target in Target::ALL {
                    let delta = latencies.histogram(target);
                    if !delta.is_empty() {
                        sketches
                            .entry((clean_text(endpoint).into_owned(), *bucket, target.as_str()))
                            .or_default()
                            .add(delta);
                    }
                }
            }
            let keys: Vec<(String, i64)> = {
                let mut keys: Vec<(String, i64)> = sketches.keys().map(|(e, b, _)| (e.clone(), *b)).collect();
                keys.sort();
                keys.dedup();
                keys
            };
            for chunk in keys.chunks(ROWS_PER_STATEMENT / 2) {
                let mut query = QueryBuilder::new(
                    "SELECT endpoint, bucket, target, histogram FROM latency_histograms WHERE run_id = ",
                );
                query.push_bind(run_id).push(" AND writer = ").push_bind(writer).push(" AND (");
                for (index, (endpoint, bucket)) in chunk.iter().enumerate() {
                    if index > 0 {
                        query.push(" OR ");
                    }
                    query.push("(endpoint = ").push_bind(endpoint.as_str()).push(" AND bucket = ").push_bind(*bucket).push(")");
                }
                query.push(")");
                for row in query.build().fetch_all(&mut *tx).await? {
                    let Some(target) = parse_target(&row.try_get::<String, _>("target")?) else { continue };
                    let bytes: Vec<u8> = row.try_get("histogram")?;
                    let key = (row.try_get::<String, _>("endpoint")?, row.try_get::<i64, _>("bucket")?, target.as_str());
                    if let (Some(stored), Some(sketch)) = (latency::decode(&bytes), sketches.get_mut(&key)) {
                        sketch.add(&stored);
                    }
                }
            }
            let histograms: Vec<(SketchKey, Vec<u8>)> =
                sketches.iter().map(|(key, sketch)| (key.clone(), latency::encode(sketch))).collect();
            each_chunk!(tx, isolate, written, "latency_histograms", histograms, |chunk| {
                let mut query = QueryBuilder::new(
                    "INSERT INTO latency_histograms (run_id, endpoint, bucket, target, writer, histogram) ",
                );
                query.push_values(chunk, |mut row, ((endpoint, bucket, target), bytes)| {
                    row.push_bind(run_id).push_bind(endpoint.as_str()).push_bind(*bucket).push_bind(*target);
                    row.push_bind(writer).push_bind(bytes.as_slice());
                });
                query.push(
                    " ON CONFLICT (run_id, endpoint, bucket, target, writer) DO UPDATE SET histogram = excluded.histogram",
                );
                query
            });

            // Feature and shape sketches: this writer's stored ones, plus what this batch adds to them.
            let mut sketches: HashMap<(String, String), RunSketch> = HashMap::new();
            for row in &batch.sketches {
                match sketches.entry((clean_text(&row.endpoint).into_owned(), row.item.clone())) {
                    std::collections::hash_map::Entry::Occupied(mut known) => known.get_mut().merge(&row.sketch),
                    std::collections::hash_map::Entry::Vacant(new) => { new.insert(row.sketch.clone()); }
                }
            }
            let keys: Vec<(String, String)> = sketches.keys().cloned().collect();
            for chunk in keys.chunks(ROWS_PER_STATEMENT / 2) {
                let mut query = QueryBuilder::new("SELECT endpoint, item, sketch FROM run_sketches WHERE run_id = ");
                query.push_bind(run_id).push(" AND writer = ").push_bind(writer).push(" AND (");
                for (index, (endpoint, item)) in chunk.iter().enumerate() {
                    if index > 0 {
                        query.push(" OR ");
                    }
                    query.push("(endpoint = ").push_bind(endpoint.as_str()).push(" AND item = ").push_bind(item.as_str()).push(")");
                }
                query.push(")");
                for row in query.build().fetch_all(&mut *tx).await? {
                    let endpoint: String = row.try_get("endpoint")?;
                    let item: String = row.try_get("item")?;
                    let text: String = row.try_get("sketch")?;
                    // A stored sketch this version cannot read is replaced by what this batch has.
                    if let (Some(stored), Some(sketch)) =
                        (RunSketch::decode(&item, &text), sketches.get_mut(&(endpoint, item.clone())))
                    {
                        sketch.merge(&stored);
                    }
                }
            }
            let encoded: Vec<(&(String, String), String)> =
                sketches.iter().map(|(key, sketch)| (key, sketch.encode())).collect();
            each_chunk!(tx, isolate, written, "run_sketches", encoded, |chunk| {
                let mut query = QueryBuilder::new("INSERT INTO run_sketches (run_id, endpoint, item, writer, sketch) ");
                query.push_values(chunk, |mut row, ((endpoint, item), text)| {
                    row.push_bind(run_id).push_bind(endpoint.as_str()).push_bind(item.as_str());
                    row.push_bind(writer).push_bind(text.as_str());
                });
                query.push(" ON CONFLICT (run_id, endpoint, item, writer) DO UPDATE SET sketch = excluded.sketch");
                query
            });

            each_chunk!(tx, isolate, written, "samples", batch.samples, |chunk| {
                let mut query = QueryBuilder::new("INSERT INTO samples (id, run_id, endpoint, created_at, document) ");
                query.push_values(chunk, |mut row, sample| {
                    row.push_bind(sample.id.as_str()).push_bind(run_id).push_bind(clean_text(&sample.endpoint));
                    row.push_bind(sample.created_at_ms).push_bind(clean_text(&sample.document));
                });
                query.push(" ON CONFLICT (id) DO NOTHING");
                query
            });
            let sample_places: Vec<(&SampleRow, Cow<'_, str>, &str)> = batch
                .samples
                .iter()
                .flat_map(|sample| sample.places.iter().map(move |(path, kind)| (sample, clean_path(path), kind.as_str())))
                .collect();
            each_chunk!(tx, isolate, written, "sample_paths", sample_places, |chunk| {
                let mut query = QueryBuilder::new("INSERT INTO sample_paths (run_id, endpoint, path, kind, sample_id) ");
                query.push_values(chunk, |mut row, (sample, path, kind)| {
                    row.push_bind(run_id).push_bind(clean_text(&sample.endpoint)).push_bind(path.as_ref());
                    row.push_bind(*kind).push_bind(sample.id.as_str());
                });
                // A sample whose own row was refused cannot be pointed at.
                query.push(" ON CONFLICT DO NOTHING");
                query
            });
            for unsampled in &batch.unsampled {
                let mut query = QueryBuilder::new("DELETE FROM sample_paths WHERE run_id = ");
                query.push_bind(run_id).push(" AND endpoint = ").push_bind(clean_text(&unsampled.endpoint));
                query.push(" AND path = ").push_bind(clean_path(&unsampled.path)).push(" AND kind = ").push_bind(unsampled.kind.as_str());
                query.push(" AND sample_id = ").push_bind(unsampled.sample_id.as_str());
                query.build().execute(&mut *tx).await?;
                let mut orphan = QueryBuilder::new("DELETE FROM samples WHERE id = ");
                orphan.push_bind(unsampled.sample_id.as_str());
                orphan.push(" AND NOT EXISTS (SELECT 1 FROM sample_paths WHERE sample_id = ");
                orphan.push_bind(unsampled.sample_id.as_str()).push(")");
                orphan.build().execute(&mut *tx).await?;
            }

            each_chunk!(tx, isolate, written, "endpoint_templates", batch.templates, |chunk| {
                let mut query = QueryBuilder::new("INSERT INTO endpoint_templates (run_id, method, segments, prefix, learned_at) ");
                query.push_values(chunk, |mut row, template| {
                    row.push_bind(run_id).push_bind(clean_text(&template.method)).push_bind(i32::try_from(template.segments).unwrap_or(i32::MAX));
                    row.push_bind(clean_text(&template.prefix)).push_bind(now_ms);
                });
                query.push(" ON CONFLICT DO NOTHING");
                query
            });

            each_chunk!(tx, isolate, written, "key_positions", batch.key_positions, |chunk| {
                let mut query = QueryBuilder::new("INSERT INTO key_positions (run_id, endpoint, position, learned_at) ");
                query.push_values(chunk, |mut row, learned| {
                    row.push_bind(run_id).push_bind(clean_text(&learned.endpoint)).push_bind(clean_path(&learned.position));
                    row.push_bind(now_ms);
                });
                query.push(" ON CONFLICT DO NOTHING");
                query
            });

            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        Ok(written)
    }

    /// Says the run's writer is alive, so that retention spares the run even while no traffic flows;
    /// [`StoreError::RunGone`] when the run was deleted.
    pub async fn heartbeat(&self, run_id: i64, now_ms: i64) -> Result<(), StoreError> {
        let touched = on_pool!(self, pool => {
            let mut query = QueryBuilder::new("UPDATE runs SET heartbeat_at = ");
            query.push_bind(now_ms).push(" WHERE id = ").push_bind(run_id);
            query.build().execute(pool).await?.rows_affected()
        });
        if touched == 0 {
            return Err(StoreError::RunGone(run_id));
        }
        Ok(())
    }

    /// Deletes what is older than `cutoff_ms`: counter buckets, samples, and runs neither seen nor alive since.
    pub async fn delete_older_than(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let cutoff_bucket = cutoff_ms.div_euclid(60_000);
        on_pool!(self, pool => {
            let mut deleted = 0;
            for table in ["endpoint_counters", "path_counts", "signature_counts"] {
                let mut query = QueryBuilder::new(format!("DELETE FROM {table} WHERE bucket < "));
                query.push_bind(cutoff_bucket);
                deleted += query.build().execute(pool).await?.rows_affected();
            }
            let mut histograms = QueryBuilder::new("DELETE FROM latency_histograms WHERE bucket >= 0 AND bucket < ");
            histograms.push_bind(cutoff_bucket);
            deleted += histograms.build().execute(pool).await?.rows_affected();
            let mut samples = QueryBuilder::new("DELETE FROM samples WHERE created_at < ");
            samples.push_bind(cutoff_ms);
            deleted += samples.build().execute(pool).await?.rows_affected();
            let mut runs = QueryBuilder::new("DELETE FROM runs WHERE last_seen_at < ");
            runs.push_bind(cutoff_ms).push(" AND heartbeat_at < ").push_bind(cutoff_ms);
            deleted += runs.build().execute(pool).await?.rows_affected();
            Ok(deleted)
        })
    }

    /// The endpoint templates learned in a run, in learning order.
    pub async fn templates(&self, run_id: i64) -> Result<Vec<LearnedTemplate>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT method, segments, prefix FROM endpoint_templates WHERE run_id = ");
            query.push_bind(run_id).push(" ORDER BY learned_at, method, segments, prefix");
            let mut templates = Vec::new();
            for row in query.build().fetch_all(pool).await? {
                templates.push(LearnedTemplate {
                    method: row.try_get("method")?,
                    segments: u32::try_from(row.try_get::<i32, _>("segments")?).unwrap_or(0),
                    prefix: row.try_get("prefix")?,
                });
            }
            Ok(templates)
        })
    }

    /// Endpoint names counted in a run, at most `limit` of them.
    pub async fn endpoint_names(
        &self,
        run_id: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT DISTINCT endpoint FROM endpoint_counters WHERE run_id = ");
            query.push_bind(run_id).push(" LIMIT ").push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
            let mut names = Vec::new();
            for row in query.build().fetch_all(pool).await? {
                names.push(row.try_get("endpoint")?);
            }
            Ok(names)
        })
    }
}
