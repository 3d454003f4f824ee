//! The samples of one place (or of a whole endpoint): links to the exchanges kept for it.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{endpoint_href, render, run_href};
use crate::web::error::PageError;
use crate::web::range::RangeChoice;
use crate::web::routes::{self, link};
use crate::web::view::timestamp;
use crate::web::{AdminState, resolve_run};

#[derive(Deserialize)]
pub struct SamplesQuery {
    path: Option<String>,
    kind: Option<String>,
}

struct SampleRow {
    id: String,
    href: String,
    time: String,
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
    samples: Vec<SampleRow>,
}

pub async fn samples_page(
    State(state): State<AdminState>,
    Path((run, endpoint)): Path<(String, String)>,
    Query(query): Query<SamplesQuery>,
) -> Result<Response, PageError> {
    let info = resolve_run(&state, &run).await?;
    let place = match (&query.path, &query.kind) {
        (Some(path), Some(kind)) => Some((path.as_str(), kind.as_str())),
        _ => None,
    };
    let samples = state.store.samples(info.id, &endpoint, place, 50).await?;
    let page = SamplesPage {
        run_href: run_href(&info.label, RangeChoice::All),
        endpoint_href: endpoint_href(&info.label, &endpoint, RangeChoice::All),
        place: place.map(|(path, kind)| format!("{path} ({})", kind.replace('_', " "))),
        per_path: state.samples_per_path,
        samples: samples
            .into_iter()
            .map(|sample| SampleRow {
                href: link(routes::EXCHANGE, &[&sample.id]),
                time: timestamp(sample.created_at_ms),
                id: sample.id,
            })
            .collect(),
        run_label: info.label,
        endpoint,
    };
    render(&page)
}
