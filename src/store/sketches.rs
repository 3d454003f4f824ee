//! The whole-run sketches a writer keeps per endpoint and replaces as they grow (readers merge every writer's):
//! the features of the requests of each signature (`features:<signature hash>`), what tells a change's failing
//! requests from the passing ones; and the shapes of the candidate's changes at each place
//! (`shapes:<kind>:<path>`: `number → string`, `200 → 404`), what tells one change from another at the same
//! place. Gathered between flushes here, bounded in count and charged in bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{QueryBuilder, Row};

use crate::analysis::diff::{DiffKind, Difference};
use crate::analysis::{Analysis, Compared, PathKey};
use crate::encoding::fnv1a;
use crate::endpoint::cluster::TemplateSet;
use crate::features::extract::Tokens;
use crate::features::topk::TopK;
use crate::features::{self, FeatureSketch, RequestParts};
use crate::redact::Redactor;
use crate::store::queries::push_list;
use crate::store::rows::{clean_path, signature_row};
use crate::store::{Pool, Store, StoreError, on_pool};

/// Shapes kept per place: a place whose changes take more forms than this has no one shape.
pub const MAX_SHAPES: usize = 8;
/// Signatures of one endpoint whose requests' features are sketched, per writer and run (the passing
/// requests' among them); requests of any other signature are counted without their features.
pub const SIGNATURES_PER_ENDPOINT: usize = 32;
/// Signatures sketched per writer and run, over every endpoint.
pub const MAX_SIGNATURES: usize = 20_000;
/// Places whose shapes wait for the next batch at most.
const MAX_SHAPE_PLACES: usize = 20_000;
/// Longest shape value side, in characters.
const SHAPE_VALUE_CHARS: usize = 64;

/// What one sketch row holds.
#[derive(Clone, Debug, PartialEq)]
pub enum RunSketch {
    Features(FeatureSketch),
    Shapes(TopK<()>),
}

impl RunSketch {
    /// Adds another of the same kind; a sketch of another kind is left aside.
    pub fn merge(&mut self, other: &RunSketch) {
        match (self, other) {
            (RunSketch::Features(mine), RunSketch::Features(theirs)) => mine.merge(theirs),
            (RunSketch::Shapes(mine), RunSketch::Shapes(theirs)) => mine.merge(theirs, MAX_SHAPES),
            _ => {}
        }
    }

    pub fn encode(&self) -> String {
        match self {
            RunSketch::Features(sketch) => sketch.encode(),
            RunSketch::Shapes(shapes) => serde_json::to_string(shapes).unwrap_or_default(),
        }
    }

    /// A stored row back, by its item's kind; `None` for an item or text this version does not read.
    pub fn decode(item: &str, text: &str) -> Option<RunSketch> {
        if item.starts_with(FEATURES) {
            return FeatureSketch::decode(text).map(RunSketch::Features);
        }
        if item.starts_with(SHAPES) && text.len() <= 64 << 10 {
            let mut shapes: TopK<()> = serde_json::from_str(text).ok()?;
            if shapes.len() > MAX_SHAPES {
                shapes.keep(MAX_SHAPES);
            }
            return Some(RunSketch::Shapes(shapes));
        }
        None
    }
}

const FEATURES: &str = "features:";
const SHAPES: &str = "shapes:";
/// A `LIKE` pattern for every shapes item.
pub const SHAPES_LIKE: &str = "shapes:%";
/// A `LIKE` pattern for every features item.
pub const FEATURES_LIKE: &str = "features:%";

/// The item of the features of an endpoint's requests with this signature (by its stored hash).
pub fn features_item(signature_hash: i64) -> String {
    format!("{FEATURES}{signature_hash}")
}

/// The signature hash of a features item.
pub fn parse_features_item(item: &str) -> Option<i64> {
    item.strip_prefix(FEATURES)?.parse().ok()
}

/// The item of the shapes at a place.
pub fn shapes_item(path: &str, kind: DiffKind) -> String {
    format!("{SHAPES}{}:{}", kind.as_str(), clean_path(path))
}

/// The place of a shapes item.
pub fn parse_shapes_item(item: &str) -> Option<PathKey> {
    let (kind, path) = item.strip_prefix(SHAPES)?.split_once(':')?;
    Some((path.to_string(), DiffKind::parse(kind)?))
}

/// One row to merge into this writer's stored sketches.
#[derive(Clone, Debug)]
pub struct SketchRow {
    pub endpoint: String,
    pub item: String,
    pub sketch: RunSketch,
}

/// What adding one exchange did to the features it had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeaturesAdded {
    /// Features past the per-request caps.
    pub over_cap: u32,
    /// The exchange's signature was not sketched: its endpoint, or the writer, had sketched as many as it may.
    pub unsketched: bool,
}

/// Sketches gathered since the last batch, and which signatures this writer sketches in its run.
#[derive(Debug, Default)]
pub struct PendingSketches {
    /// Per endpoint, per signature fingerprint: the signature and its requests' features.
    features: HashMap<String, HashMap<u64, (Vec<PathKey>, FeatureSketch)>>,
    /// Feature sketches waiting, over every endpoint.
    feature_rows: usize,
    shapes: HashMap<(String, PathKey), TopK<()>>,
    /// Per endpoint, fingerprints of the signatures sketched (a fixed set once full).
    sketched: HashMap<String, Vec<u64>>,
    sketched_count: usize,
    bytes: usize,
}

impl PendingSketches {
    /// Memory held, roughly.
    pub fn bytes(&self) -> usize {
        self.bytes + self.sketched_count * 16
    }

    /// Rows the next batch writes.
    pub fn rows(&self) -> usize {
        self.feature_rows + self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty() && self.shapes.is_empty()
    }

    /// What adding `analysis`'s features would hold at most: each feature a new name and value.
    pub fn cost(analysis: &Analysis) -> usize {
        let request = &analysis.exchange.request;
        256 + request
            .uri
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len())
            * 4
            + request
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len().min(64) + 96)
                .sum::<usize>()
    }

    /// Counts a compared exchange's features under its signature, and the shapes of its uncancelled changes;
    /// with `sealed` samples, their values as keyed hashes (nothing in the sketches is then in clear).
    pub fn add(
        &mut self,
        analysis: &Analysis,
        signature: &[PathKey],
        redactor: &Redactor,
        sealed: bool,
    ) -> FeaturesAdded {
        let Some(compared) = analysis.compared() else {
            return FeaturesAdded::default();
        };
        let endpoint = &analysis.exchange.endpoint;
        self.add_shapes(endpoint, compared, redactor, sealed);
        let fingerprint = fingerprint(signature);
        if !self.sketched.contains_key(endpoint) {
            self.sketched.insert(endpoint.clone(), Vec::new());
        }
        let sketched = self.sketched.get_mut(endpoint).expect("just made");
        if !sketched.contains(&fingerprint) {
            if sketched.len() >= SIGNATURES_PER_ENDPOINT || self.sketched_count >= MAX_SIGNATURES {
                return FeaturesAdded {
                    over_cap: 0,
                    unsketched: true,
                };
            }
            sketched.push(fingerprint);
            self.sketched_count += 1;
        }
        let request = &analysis.exchange.request;
        let parts = RequestParts {
            method: request.method.as_str(),
            target: request
                .uri
                .path_and_query()
                .map_or_else(|| request.uri.path(), |pq| pq.as_str()),
            headers: request
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
                .collect(),
            body: &request.body,
        };
        let found = if sealed {
            let tokens = Tokens {
                inner: redactor,
                redactor,
            };
            features::extract(endpoint, &parts, &tokens)
        } else {
            features::extract(endpoint, &parts, redactor)
        };
        if !self.features.contains_key(endpoint) {
            self.features.insert(endpoint.clone(), HashMap::new());
            self.bytes += endpoint.len() + 64;
        }
        let by_signature = self.features.get_mut(endpoint).expect("just made");
        let (_, sketch) = by_signature.entry(fingerprint).or_insert_with(|| {
            self.feature_rows += 1;
            self.bytes += 128
                + signature
                    .iter()
                    .map(|(path, _)| path.len() + 32)
                    .sum::<usize>();
            (signature.to_vec(), FeatureSketch::default())
        });
        let before = sketch.heap_bytes();
        sketch.add(&found);
        self.bytes = (self.bytes + sketch.heap_bytes()).saturating_sub(before);
        FeaturesAdded {
            over_cap: found.dropped,
            unsketched: false,
        }
    }

    /// Counts the shape of each uncancelled change that has one (a type change, a status or a header value).
    fn add_shapes(
        &mut self,
        endpoint: &str,
        compared: &Compared,
        redactor: &Redactor,
        sealed: bool,
    ) {
        for difference in &compared.candidate {
            if compared.is_cancelled(difference) {
                continue;
            }
            let Some(shape) = shape(difference, redactor, sealed) else {
                continue;
            };
            let key = (
                endpoint.to_string(),
                (difference.generalised.clone(), difference.kind),
            );
            if !self.shapes.contains_key(&key) {
                if self.shapes.len() >= MAX_SHAPE_PLACES {
                    continue;
                }
                self.bytes += endpoint.len() + difference.generalised.len() + 96;
            }
            let shapes = self.shapes.entry(key).or_default();
            let before = shapes.heap_bytes();
            shapes.add(&shape, MAX_SHAPES);
            self.bytes = (self.bytes + shapes.heap_bytes()).saturating_sub(before);
        }
    }

    /// The rows of the next batch; what was sketched stays known.
    pub fn take(&mut self) -> Vec<SketchRow> {
        self.bytes = 0;
        self.feature_rows = 0;
        let features =
            std::mem::take(&mut self.features)
                .into_iter()
                .flat_map(|(endpoint, by_signature)| {
                    by_signature
                        .into_values()
                        .map(move |(signature, sketch)| SketchRow {
                            endpoint: endpoint.clone(),
                            item: features_item(signature_row(&signature).0),
                            sketch: RunSketch::Features(sketch),
                        })
                });
        let shapes = std::mem::take(&mut self.shapes).into_iter().map(
            |((endpoint, (path, kind)), shapes)| SketchRow {
                endpoint,
                item: shapes_item(&path, kind),
                sketch: RunSketch::Shapes(shapes),
            },
        );
        features.chain(shapes).collect()
    }

    /// Forgets everything, for a new run.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The shape more than half of a place's changes take, if one does (none for a place whose changes vary).
pub fn dominant(shapes: &TopK<()>) -> Option<String> {
    let total = shapes
        .counters()
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.count));
    let top = shapes
        .counters()
        .iter()
        .max_by(|a, b| a.count.cmp(&b.count).then_with(|| b.item.cmp(&a.item)))?;
    (top.lower().saturating_mul(2) > total).then(|| top.item.clone())
}

/// Feature sketches of a run, by (endpoint, signature hash), every writer's merged.
pub type FeatureSketches = BTreeMap<(String, i64), FeatureSketch>;

/// Sketch rows read for one report at most. A run with more has no predictors in that report: reading part of
/// them could leave out passing requests and make a feature look rarer among them than it is.
pub const MAX_SKETCHES_READ: usize = 20_000;
/// Shape rows read for one report at most; places past them have no shape.
pub const MAX_SHAPE_ROWS: usize = 100_000;

impl Store {
    /// The feature sketches of `endpoints` in a run (under the names the run's learned templates give),
    /// every writer's merged; `None` when there are more than [`MAX_SKETCHES_READ`] rows.
    pub async fn feature_sketches(
        &self,
        run_id: i64,
        endpoints: &BTreeSet<String>,
    ) -> Result<Option<FeatureSketches>, StoreError> {
        let templates = TemplateSet::new(self.templates(run_id).await?);
        let names: Vec<String> = if templates.is_empty() {
            endpoints.iter().cloned().collect()
        } else {
            self.endpoint_names(run_id, usize::MAX)
                .await?
                .into_iter()
                .filter(|name| endpoints.contains(templates.rename(name).as_ref()))
                .collect()
        };
        let mut sketches = FeatureSketches::new();
        let mut read = 0;
        for chunk in names.chunks(ROWS_PER_QUERY) {
            let rows: Vec<(String, String, String)> = on_pool!(self, pool => {
                let mut query = QueryBuilder::new("SELECT endpoint, item, sketch FROM run_sketches WHERE run_id = ");
                query.push_bind(run_id).push(" AND item LIKE ").push_bind(FEATURES_LIKE);
                query.push(" AND endpoint IN (");
                push_list(&mut query, chunk);
                query.push(") ORDER BY endpoint, item, writer LIMIT ");
                query.push_bind(i64::try_from(MAX_SKETCHES_READ + 1 - read).unwrap_or(i64::MAX));
                let mut rows = Vec::new();
                for row in query.build().fetch_all(pool).await? {
                    rows.push((row.try_get("endpoint")?, row.try_get("item")?, row.try_get("sketch")?));
                }
                rows
            });
            for (endpoint, item, text) in rows {
                if read == MAX_SKETCHES_READ {
                    tracing::warn!(
                        run_id,
                        rows = MAX_SKETCHES_READ,
                        "too many feature sketches to read: no predictors in this report"
                    );
                    return Ok(None);
                }
                read += 1;
                let (Some(hash), Some(sketch)) =
                    (parse_features_item(&item), FeatureSketch::decode(&text))
                else {
                    continue;
                };
                let endpoint = templates.rename(&endpoint).into_owned();
                match sketches.entry((endpoint, hash)) {
                    std::collections::btree_map::Entry::Occupied(mut known) => {
                        known.get_mut().merge(&sketch)
                    }
                    std::collections::btree_map::Entry::Vacant(new) => {
                        new.insert(sketch);
                    }
                }
            }
        }
        Ok(Some(sketches))
    }
}

/// Endpoint names per query, well under both databases' limits on bound parameters.
const ROWS_PER_QUERY: usize = 500;

/// A signature's fingerprint, to tell the sketched ones apart without keeping them.
fn fingerprint(signature: &[PathKey]) -> u64 {
    // FNV-1a over each path and kind, each followed by a 0 (which neither holds).
    let mut hash = fnv1a(b"");
    let mut eat = |bytes: &[u8]| {
        for byte in bytes.iter().chain([0u8].iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (path, kind) in signature {
        eat(path.as_bytes());
        eat(kind.as_str().as_bytes());
    }
    hash
}

/// The shape of a change, where it says more than its kind: the JSON types of a type change, the values of a
/// changed status or header (a secret header's values are not kept: its changes have no shape; with `sealed`
/// samples a header's values are their keyed hashes, which still tell one change from another).
pub fn shape(difference: &Difference, redactor: &Redactor, sealed: bool) -> Option<String> {
    let path = difference.generalised.as_str();
    match difference.kind {
        DiffKind::TypeChanged => Some(format!(
            "{} → {}",
            json_type(difference.primary.as_deref()),
            json_type(difference.other.as_deref())
        )),
        DiffKind::ValueChanged if path == "status" => Some(format!(
            "{} → {}",
            side(difference.primary.as_deref()),
            side(difference.other.as_deref())
        )),
        DiffKind::ValueChanged => {
            let name = path.strip_prefix("header/")?;
            if redactor.is_secret_header(name) {
                return None;
            }
            if sealed {
                let token = |value: Option<&str>| {
                    value.map_or_else(|| side(None), |value| redactor.token(value.as_bytes()))
                };
                return Some(format!(
                    "{} → {}",
                    token(difference.primary.as_deref()),
                    token(difference.other.as_deref())
                ));
            }
            // A header's value can hold personal data: searched before it is cut.
            let value =
                |value: Option<&str>| value.map(|text| redactor.text_values(text).into_owned());
            Some(format!(
                "{} → {}",
                side(value(difference.primary.as_deref()).as_deref()),
                side(value(difference.other.as_deref()).as_deref())
            ))
        }
        _ => None,
    }
}

fn side(value: Option<&str>) -> String {
    match value {
        None => "(none)".to_string(),
        Some(value) => match value.char_indices().nth(SHAPE_VALUE_CHARS) {
            Some((at, _)) => format!("{}…", &value[..at]),
            None => value.to_string(),
        },
    }
}

/// The type a type change names first: the JSON type (`number 12.5`), or the kind of body (`json`).
fn json_type(rendered: Option<&str>) -> String {
    match rendered.and_then(|text| text.split_whitespace().next()) {
        None => "nothing".to_string(),
        Some(word) => side(Some(word)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(difference: &Difference) -> Option<String> {
        super::shape(difference, &Redactor::new(b"k".to_vec(), &[]), false)
    }

    /// A difference at `path` between two present values.
    fn changed(path: &str, kind: DiffKind, primary: &str, other: &str) -> Difference {
        Difference::at(path, kind, Some(primary.into()), Some(other.into()))
    }

    #[test]
    fn shapes_say_how_a_value_changed() {
        // Each change and its shape; a secret header's and a body value's change have none.
        for (path, kind, primary, other, expected) in [
            (
                "body/price",
                DiffKind::TypeChanged,
                "number 12.5",
                "string \"12.50\"",
                Some("number → string"),
            ),
            (
                "status",
                DiffKind::ValueChanged,
                "200",
                "404",
                Some("200 → 404"),
            ),
            (
                "header/cache-control",
                DiffKind::ValueChanged,
                "no-cache",
                "max-age=60",
                Some("no-cache → max-age=60"),
            ),
            (
                "header/set-cookie",
                DiffKind::ValueChanged,
                "a=1",
                "a=2",
                None,
            ),
            ("body/total", DiffKind::ValueChanged, "1", "2", None),
        ] {
            let difference = changed(path, kind, primary, other);
            assert_eq!(shape(&difference).as_deref(), expected, "{path}");
        }
        let header = changed(
            "header/cache-control",
            DiffKind::ValueChanged,
            "no-cache",
            "max-age=60",
        );
        let status = changed("status", DiffKind::ValueChanged, "200", "404");
        let redactor = Redactor::new(b"k".to_vec(), &[]);
        let sealed = super::shape(&header, &redactor, true).unwrap();
        assert_eq!(
            sealed,
            format!(
                "{} → {}",
                redactor.token(b"no-cache"),
                redactor.token(b"max-age=60")
            )
        );
        assert_eq!(
            super::shape(&status, &redactor, true).as_deref(),
            Some("200 → 404"),
            "a status is counted plain, sealed or not"
        );
    }

    #[test]
    fn items_round_trip() {
        assert_eq!(parse_features_item(&features_item(-42)), Some(-42));
        assert_eq!(
            parse_shapes_item(&shapes_item("header/a:b", DiffKind::Missing)),
            Some(("header/a:b".to_string(), DiffKind::Missing))
        );
        assert_eq!(parse_shapes_item("features:1"), None);
        assert!(RunSketch::decode("other:1", "{}").is_none());
    }
}
