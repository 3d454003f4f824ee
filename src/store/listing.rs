//! Samples listed to be read without opening each: the request line, the three statuses and primary's and
//! the candidate's values at the place, filtered by place and value, a page at a time.

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use crate::features::extract::{AlreadyRedacted, Tokens};
use crate::features::{self, Features, RequestParts};
use crate::redact::Redactor;
use crate::store::queries::{SampleSummary, push_list};
use crate::store::sample::{SampleDocument, StoredBody};
use crate::store::{Pool, Store, StoreError, on_pool};

/// Which samples to list.
#[derive(Clone, Debug, Default)]
pub struct SampleFilter {
    /// The generalised path (`body/items/*/price`); none lists every sample of the endpoint.
    pub path: Option<String>,
    /// The kind of difference at the path; none takes every kind there.
    pub kind: Option<String>,
    /// Only samples whose primary or candidate value (at the path, or anywhere shown) contains this text.
    pub value: Option<String>,
    /// Only samples whose request has this feature (a predictor's): its name, and its value if one is given.
    pub feature: Option<(String, Option<String>)>,
}

impl SampleFilter {
    /// Whether matching takes reading the documents (the database cannot page for it).
    fn reads_documents(&self) -> bool {
        self.value.is_some() || self.feature.is_some()
    }
}

/// A sample as a list shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SampleListing {
    #[serde(flatten)]
    pub summary: SampleSummary,
    pub method: String,
    /// Path and query as stored (secrets redacted).
    pub target: String,
    pub statuses: Statuses,
    /// The candidate's differences at the place (or, without one, the first few), with both values.
    pub values: Vec<SampleValue>,
    /// Why its values show as `(encrypted)`: sealed, and this process cannot open it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// The status each upstream answered (none: no response).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Statuses {
    pub primary: Option<u16>,
    pub secondary: Option<u16>,
    pub candidate: Option<u16>,
}

/// One difference of a listed sample.
#[derive(Clone, Debug, Serialize)]
pub struct SampleValue {
    /// Concrete path (`body/items/3/price`).
    pub path: String,
    pub kind: String,
    /// Primary's value, truncated; none when absent.
    pub primary: Option<String>,
    /// The candidate's value, truncated; none when absent.
    pub candidate: Option<String>,
}

/// Differences shown per sample at most.
const VALUES_PER_SAMPLE: usize = 3;
/// Characters of a value shown at most.
const VALUE_CHARS: usize = 160;
/// Samples read at most to answer one page: a filter that matches little costs a bounded scan, one document
/// in memory at a time.
const MAX_SCANNED: usize = 2_000;

impl Store {
    /// A page of an endpoint's samples, newest first: `offset` matching samples skipped, at most `limit` kept.
    pub async fn sample_listing(
        &self,
        run_id: i64,
        endpoint: &str,
        filter: &SampleFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SampleListing>, StoreError> {
        let names = self.names_under(run_id, endpoint).await?;
        let paths = match &filter.path {
            Some(path) => {
                self.sample_paths_under(run_id, endpoint, &names, path)
                    .await?
            }
            None => Vec::new(),
        };
        // Without a value to match, the database pages; with one, documents are read until the page is full.
        let read = if filter.reads_documents() {
            MAX_SCANNED
        } else {
            (offset + limit).min(MAX_SCANNED)
        };
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new(
                "SELECT s.id, s.endpoint, s.created_at, s.document FROM samples s WHERE s.run_id = ",
            );
            query.push_bind(run_id).push(" AND s.endpoint IN (");
            push_list(&mut query, &names);
            query.push(")");
            if filter.path.is_some() {
                // The place's path, and the per-key paths stored before its map was learned.
                query.push(" AND s.id IN (SELECT sample_id FROM sample_paths WHERE run_id = ").push_bind(run_id);
                query.push(" AND path IN (");
                push_list(&mut query, &paths);
                query.push(")");
                if let Some(kind) = &filter.kind {
                    query.push(" AND kind = ").push_bind(kind.as_str());
                }
                query.push(")");
            }
            query.push(" ORDER BY s.created_at DESC, s.id DESC LIMIT ").push_bind(read as i64);
            let mut rows = query.build().fetch(pool);
            let mut listed = Vec::new();
            let mut skipped = 0;
            while let Some(row) = rows.try_next().await? {
                let summary = SampleSummary {
                    id: row.try_get("id")?,
                    endpoint: row.try_get("endpoint")?,
                    created_at_ms: row.try_get("created_at")?,
                };
                let document: String = row.try_get("document")?;
                // A document that does not read back is left out, not an error for the whole page.
                let Ok(mut document) = serde_json::from_str::<SampleDocument>(&document) else {
                    continue;
                };
                self.open_sample(&mut document);
                // A sealed value cannot be matched: the page says so rather than list nothing.
                if let Some(reason) = &document.unopened
                    && filter.reads_documents()
                {
                    return Err(StoreError::Sealed(format!("cannot filter by value or request feature: {reason}")));
                }
                let listing = listing(summary, &document, filter);
                if let Some(value) = &filter.value
                    && !listing.values.iter().any(|v| contains(v, value))
                {
                    continue;
                }
                if let Some((name, value)) = &filter.feature
                    && !request_features(&listing.summary.endpoint, &document, self.feature_tokens()).has(name, value.as_deref())
                {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                    continue;
                }
                listed.push(listing);
                if listed.len() == limit {
                    break;
                }
            }
            Ok(listed)
        })
    }
}

/// The features of a stored request, as they were counted from it live: a sealed one's values as tokens
/// (`features::extract::Tokens`), as its run's sketches count them.
fn request_features(
    endpoint: &str,
    document: &SampleDocument,
    tokens: Option<&Redactor>,
) -> Features {
    let request = &document.request;
    let body = match &request.body {
        StoredBody::Text { text, .. } => text.as_bytes(),
        _ => &[],
    };
    let parts = RequestParts {
        method: &request.method,
        target: &request.uri,
        headers: request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect(),
        body,
    };
    let redaction = AlreadyRedacted {
        headers: &request.headers,
    };
    match tokens.filter(|_| document.opened) {
        Some(redactor) => features::extract(
            endpoint,
            &parts,
            &Tokens {
                inner: &redaction,
                redactor,
            },
        ),
        None => features::extract(endpoint, &parts, &redaction),
    }
}

fn contains(value: &SampleValue, text: &str) -> bool {
    [&value.primary, &value.candidate]
        .into_iter()
        .flatten()
        .any(|side| side.contains(text))
}

fn listing(
    summary: SampleSummary,
    document: &SampleDocument,
    filter: &SampleFilter,
) -> SampleListing {
    let at_place = |difference: &crate::analysis::diff::Difference| {
        filter
            .path
            .as_deref()
            .is_none_or(|path| difference.generalised == path)
            && filter
                .kind
                .as_deref()
                .is_none_or(|kind| difference.kind.as_str() == kind)
    };
    let values = document
        .candidate_differences
        .iter()
        .map(|stored| &stored.difference)
        .filter(|difference| at_place(difference))
        .take(VALUES_PER_SAMPLE)
        .map(|difference| SampleValue {
            path: difference.path.clone(),
            kind: difference.kind.as_str().to_string(),
            primary: difference.primary.as_deref().map(shortened),
            candidate: difference.other.as_deref().map(shortened),
        })
        .collect();
    SampleListing {
        summary,
        method: document.request.method.clone(),
        target: document.request.uri.clone(),
        statuses: Statuses {
            primary: document.primary.status,
            secondary: document.secondary.status,
            candidate: document.candidate.status,
        },
        values,
        sealed: document.unopened.clone(),
    }
}

fn shortened(value: &str) -> String {
    match value.char_indices().nth(VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}
