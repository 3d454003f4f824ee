//! The overview's changes as the page shows them: each one line (its title, class and failing requests) that
//! opens to its endpoints, places, what trails it, its predictors (each a link to the samples with that
//! feature) and the button that accepts it.

use crate::analysis::aggregate;
use crate::encoding::percent_encode;
use crate::paths::{self, link};
use crate::report::changes::{Change, ChangePlace, Predictor};
use crate::web::pages::endpoint_href;
use crate::web::range::RangeChoice;
use crate::web::view::{TextPart, code_spans, count, kind_label, percent};

/// Changes the overview lists at most; the API has them all.
pub const SHOWN: usize = 50;

pub struct ChangeRow {
    pub id: String,
    /// The title in pieces, the parts between backticks marked as code.
    pub title: Vec<TextPart>,
    pub compat: &'static str,
    pub requests: String,
    pub rate: String,
    pub latency: bool,
    pub endpoints: Vec<EndpointLink>,
    pub places: Vec<PlaceRow>,
    pub consequences: Vec<PlaceRow>,
    pub predictors: Vec<PredictorRow>,
    pub samples_href: Option<String>,
    pub accept_action: String,
    /// The time range the change was grouped over, which accepting it groups over again.
    pub range: &'static str,
}

pub struct EndpointLink {
    pub name: String,
    pub href: String,
    pub rate: String,
}

pub struct PlaceRow {
    pub endpoint: String,
    pub path: String,
    pub kind: String,
    pub shape: Option<String>,
    pub compat: &'static str,
    pub rate: String,
    pub samples_href: String,
}

pub struct PredictorRow {
    pub feature: String,
    pub value: Option<String>,
    pub failing: String,
    pub passing: String,
    pub samples_href: String,
}

/// The rows of the first [`SHOWN`] changes.
pub fn rows(run: &str, changes: &[Change], range: RangeChoice) -> Vec<ChangeRow> {
    changes
        .iter()
        .take(SHOWN)
        .map(|change| row(run, change, range))
        .collect()
}

fn row(run: &str, change: &Change, range: RangeChoice) -> ChangeRow {
    let requests: u64 = change.rates.iter().map(|share| share.requests).sum();
    let lead = change
        .places
        .iter()
        .find(|place| place.sample.is_some())
        .or(change.places.first());
    ChangeRow {
        id: change.id.clone(),
        title: code_spans(&change.title),
        compat: change.compat.as_str(),
        requests: count(change.requests),
        rate: percent(aggregate::rate(change.requests, requests)),
        latency: change.is_latency(),
        endpoints: change
            .rates
            .iter()
            .map(|share| EndpointLink {
                name: share.endpoint.clone(),
                href: endpoint_href(run, &share.endpoint, range),
                rate: percent(share.rate),
            })
            .collect(),
        places: change
            .places
            .iter()
            .map(|place| place_row(run, place))
            .collect(),
        consequences: change
            .consequences
            .iter()
            .map(|place| place_row(run, place))
            .collect(),
        predictors: lead
            .map(|lead| {
                change
                    .predictors
                    .iter()
                    .map(|predictor| predictor_row(run, lead, predictor))
                    .collect()
            })
            .unwrap_or_default(),
        samples_href: lead
            .filter(|lead| !change.is_latency() && lead.sample.is_some())
            .map(|lead| samples_href(run, lead)),
        accept_action: link(paths::CHANGE_ACCEPT, &[run, &change.id]),
        range: range.as_str(),
    }
}

fn place_row(run: &str, place: &ChangePlace) -> PlaceRow {
    PlaceRow {
        endpoint: place.endpoint.clone(),
        path: place.path.clone(),
        kind: kind_label(place.kind),
        shape: place.shape.clone(),
        compat: place.compat.as_str(),
        rate: percent(place.rate),
        samples_href: samples_href(run, place),
    }
}

/// The samples of a place.
fn samples_href(run: &str, place: &ChangePlace) -> String {
    format!(
        "{}?path={}&kind={}",
        link(paths::ENDPOINT_SAMPLES, &[run, &place.endpoint]),
        percent_encode(&place.path, &[]),
        place.kind.as_str()
    )
}

/// The samples of the change's first place whose requests have the predictor's feature.
fn predictor_row(run: &str, lead: &ChangePlace, predictor: &Predictor) -> PredictorRow {
    let mut href = format!(
        "{}&feature={}",
        samples_href(run, lead),
        percent_encode(&predictor.feature, &[])
    );
    if let Some(value) = &predictor.value {
        href.push_str(&format!("&feature_value={}", percent_encode(value, &[])));
    }
    PredictorRow {
        feature: predictor.feature.clone(),
        value: predictor.value.clone(),
        failing: percent(predictor.failing_share),
        passing: percent(predictor.passing_share),
        samples_href: href,
    }
}
