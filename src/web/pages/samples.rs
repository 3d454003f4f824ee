//! The samples of one place (or of a whole endpoint), readable in the list: each row the request line, the
//! three statuses and primary's and the candidate's values with the part that differs marked; filtered by value,
//! a page at a time.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{endpoint_href, render, run_href};
use crate::encoding::percent_encode;
use crate::paths::{self, link};
use crate::store::listing::{SampleFilter, SampleListing};
use crate::web::error::PageError;
use crate::web::range::RangeChoice;
use crate::web::view::{Split, split_difference, timestamp};
use crate::web::{AdminState, resolve_run};

/// Rows per page.
const PAGE: usize = 25;
/// The deepest page offered.
const MAX_OFFSET: usize = 10_000;

#[derive(Deserialize)]
pub struct SamplesQuery {
    path: Option<String>,
    kind: Option<String>,
    value: Option<String>,
    /// A predictor's feature the requests must have, with `feature_value` when the value is what predicts.
    feature: Option<String>,
    feature_value: Option<String>,
    offset: Option<usize>,
}

struct SampleRow {
    id: String,
    href: String,
    time: String,
    method: String,
    target: String,
    statuses: [String; 3],
    values: Vec<ValueRow>,
}

/// A difference of a row: both values split around the part that differs.
struct ValueRow {
    path: String,
    kind: String,
    primary: Option<Split>,
    candidate: Option<Split>,
}

#[derive(Template)]
#[template(path = "samples.html")]
struct SamplesPage {
    run_label: String,
    run_href: String,
    endpoint: String,
    endpoint_href: String,
    place: Option<String>,
    per_path: usize,
    /// The filter form's target and its hidden fields (the place).
    action: String,
    path: String,
    kind: String,
    value: String,
    /// The predictor filtered on, in words, and the fields that keep it.
    feature_text: Option<String>,
    feature: String,
    feature_value: Option<String>,
    samples: Vec<SampleRow>,
    newer: Option<String>,
    older: Option<String>,
    /// Why values show as `(encrypted)`, when a listed sample is sealed and this process cannot open it.
    sealed: Option<String>,
}

pub async fn samples_page(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<SamplesQuery>,
) -> Result<Response, PageError> {
    let info = resolve_run(&state, &run).await?;
    let filter = SampleFilter {
        path: query.path.clone().filter(|path| !path.is_empty()),
        kind: query
            .kind
            .clone()
            .filter(|kind| !kind.is_empty() && query.path.is_some()),
        value: query.value.clone().filter(|value| !value.is_empty()),
        feature: query
            .feature
            .clone()
            .filter(|feature| !feature.is_empty())
            .map(|feature| (feature, query.feature_value.clone())),
    };
    let offset = query.offset.unwrap_or(0).min(MAX_OFFSET);
    // One more than a page says whether there is an older one.
    let mut listed = state
        .reports
        .samples(&info, &endpoint, &filter, PAGE + 1, offset)
        .await?;
    let has_older = listed.len() > PAGE;
    listed.truncate(PAGE);
    let action = link(paths::ENDPOINT_SAMPLES, &[&info.label, &endpoint]);
    let page_href = |offset: usize| {
        let mut href = format!("{action}?offset={offset}");
        for (name, value) in [
            ("path", &filter.path),
            ("kind", &filter.kind),
            ("value", &filter.value),
        ] {
            if let Some(value) = value {
                href.push_str(&format!("&{name}={}", percent_encode(value, &[])));
            }
        }
        if let Some((feature, value)) = &filter.feature {
            href.push_str(&format!("&feature={}", percent_encode(feature, &[])));
            if let Some(value) = value {
                href.push_str(&format!("&feature_value={}", percent_encode(value, &[])));
            }
        }
        href
    };
    let sealed = listed.iter().find_map(|sample| sample.sealed.clone());
    let page = SamplesPage {
        sealed,
        run_href: run_href(&info.label, RangeChoice::All),
        endpoint_href: endpoint_href(&info.label, &endpoint, RangeChoice::All),
        place: filter.path.as_ref().map(|path| match &filter.kind {
            Some(kind) => format!("{path} ({})", kind.replace('_', " ")),
            None => path.clone(),
        }),
        per_path: state.samples_per_path,
        newer: (offset > 0).then(|| page_href(offset.saturating_sub(PAGE))),
        older: (has_older && offset + PAGE <= MAX_OFFSET).then(|| page_href(offset + PAGE)),
        path: filter.path.clone().unwrap_or_default(),
        kind: filter.kind.clone().unwrap_or_default(),
        value: filter.value.clone().unwrap_or_default(),
        feature_text: filter.feature.as_ref().map(|(feature, value)| match value {
            Some(value) => format!("{feature} = {value}"),
            None => format!("{feature} present"),
        }),
        feature: filter
            .feature
            .as_ref()
            .map(|(f, _)| f.clone())
            .unwrap_or_default(),
        feature_value: filter.feature.as_ref().and_then(|(_, v)| v.clone()),
        action,
        samples: listed.into_iter().map(row).collect(),
        run_label: info.label,
        endpoint,
    };
    render(&page)
}

fn row(sample: SampleListing) -> SampleRow {
    let status = |status: Option<u16>| status.map_or("—".to_string(), |s| s.to_string());
    SampleRow {
        href: link(paths::EXCHANGE, &[&sample.summary.id]),
        time: timestamp(sample.summary.created_at_ms),
        method: sample.method,
        target: sample.target,
        statuses: [
            status(sample.statuses.primary),
            status(sample.statuses.secondary),
            status(sample.statuses.candidate),
        ],
        values: sample
            .values
            .into_iter()
            .map(|value| {
                let (primary, candidate) = match (&value.primary, &value.candidate) {
                    (Some(primary), Some(candidate)) => {
                        let (primary, candidate) = split_difference(primary, candidate);
                        (Some(primary), Some(candidate))
                    }
                    (primary, candidate) => (
                        primary.as_deref().map(Split::whole),
                        candidate.as_deref().map(Split::whole),
                    ),
                };
                ValueRow {
                    path: value.path,
                    kind: value.kind.replace('_', " "),
                    primary,
                    candidate,
                }
            })
            .collect(),
        id: sample.summary.id,
    }
}
