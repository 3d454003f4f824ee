//! A run's report as one self-contained HTML file (`shadowdiff report`): the verdict, its changes, every endpoint, and for
//! each endpoint with regressions its places, its diff rate over time (an inline SVG) and one sample side by
//! side. Styles are inline and a Content-Security-Policy forbids loading anything, so it opens offline and
//! stored bytes cannot run as script; everything that came from traffic is escaped as on the dashboard.

use askama::Template;

use crate::gate::changes;
use crate::gate::verdict::Verdict;
use crate::gate::{GateEndpoint, GateReport};
use crate::report::{ReportError, Reports};
use crate::store::queries::TimeRange;
use crate::units::{count, millis, percent, timestamp};
use crate::web::pages::exchange::{DifferenceRow, Panel, side_by_side};
use crate::web::view::{TextPart, code_spans};

/// Endpoints shown in detail at most (worst first); the table lists them all.
const MAX_DETAILED: usize = 20;
/// Places listed per endpoint at most.
const MAX_PLACES: usize = 30;

/// The dashboard's stylesheet, inlined.
const STYLES: &str = include_str!("../../static/app.css");

struct EndpointRow {
    endpoint: String,
    requests: String,
    diff_rate: String,
    noise_rate: String,
    p99: String,
    failed: bool,
}

struct PlaceRow {
    path: String,
    kind: String,
    compat: &'static str,
    rate: String,
}

/// A change accepted as intended: where, and why.
struct AcceptedRow {
    endpoint: String,
    place: PlaceRow,
    note: String,
}

impl PlaceRow {
    fn of(place: &crate::analysis::aggregate::RegressionReport) -> Self {
        Self {
            path: place.path.clone(),
            kind: place.kind.as_str().replace('_', " "),
            compat: place.compat.as_str(),
            rate: percent(place.rate),
        }
    }
}

/// A sample of an endpoint: primary and candidate side by side with the differences marked.
struct SampleView {
    id: String,
    request: String,
    differences: Vec<DifferenceRow>,
    primary: Panel,
    candidate: Panel,
    /// Why its values are not shown (sealed, and this process has no identity for them).
    sealed: Option<String>,
}

/// A change: its headline and the lines beneath it, as the gate's text has them.
struct ChangeView {
    compat: &'static str,
    headline: Vec<TextPart>,
    details: Vec<Vec<TextPart>>,
}

struct Detail {
    endpoint: String,
    anchor: String,
    places: Vec<PlaceRow>,
    /// The diff rate minute by minute, as an SVG path over a 300 x 60 box (numbers only).
    chart: Option<String>,
    sample: Option<SampleView>,
}

#[derive(Template)]
#[template(path = "report_file.html")]
struct ReportFile {
    styles: &'static str,
    run: String,
    passed: bool,
    reason: String,
    requests: String,
    diff_rate: String,
    max_diff_rate: String,
    baseline: Option<&'static str>,
    generated: String,
    endpoints: Vec<EndpointRow>,
    details: Vec<Detail>,
    accepted: Vec<AcceptedRow>,
    changes: Vec<ChangeView>,
}

/// The report file of a judged run.
pub async fn render(reports: &Reports, judged: &GateReport) -> Result<String, ReportError> {
    let verdict = Verdict::of(judged);
    let mut details = Vec::new();
    let failing = judged
        .endpoints
        .iter()
        .filter(|endpoint| !endpoint.regressions.is_empty() || endpoint.failed);
    for (index, endpoint) in failing.take(MAX_DETAILED).enumerate() {
        details.push(detail(reports, &judged.run, endpoint, index).await?);
    }
    let page = ReportFile {
        styles: STYLES,
        run: judged.run.clone(),
        passed: judged.passed,
        reason: verdict.reason,
        requests: count(judged.requests),
        diff_rate: percent(judged.diff_rate),
        max_diff_rate: percent(judged.max_diff_rate),
        baseline: judged
            .baseline
            .map(|_| "primary asked twice (no secondary)"),
        generated: timestamp(crate::clock::now_ms()),
        endpoints: judged
            .endpoints
            .iter()
            .map(|endpoint| EndpointRow {
                endpoint: endpoint.endpoint.clone(),
                requests: count(endpoint.requests),
                diff_rate: percent(endpoint.diff_rate),
                noise_rate: percent(endpoint.noise_rate),
                p99: format!(
                    "{} / {}",
                    millis(endpoint.latency.primary.p99_ms),
                    millis(endpoint.latency.candidate.p99_ms)
                ),
                failed: endpoint.failed,
            })
            .collect(),
        details,
        changes: judged
            .changes
            .iter()
            .map(|change| ChangeView {
                compat: change.compat.as_str(),
                headline: code_spans(&changes::headline(change)),
                details: changes::details(change)
                    .iter()
                    .map(|line| code_spans(line))
                    .collect(),
            })
            .collect(),
        accepted: judged
            .endpoints
            .iter()
            .flat_map(|endpoint| {
                endpoint.accepted.iter().map(|accepted| AcceptedRow {
                    endpoint: endpoint.endpoint.clone(),
                    place: PlaceRow::of(&accepted.place),
                    note: accepted.note.clone().unwrap_or_default(),
                })
            })
            .collect(),
    };
    page.render()
        .map_err(|error| ReportError::Store(crate::store::StoreError::Data(error.to_string())))
}

async fn detail(
    reports: &Reports,
    run: &str,
    endpoint: &GateEndpoint,
    index: usize,
) -> Result<Detail, ReportError> {
    let timeline = reports
        .timeline(run, &endpoint.endpoint, TimeRange::all())
        .await?;
    let rates: Vec<f64> = timeline.iter().map(|point| point.diff_rate).collect();
    let sample = match endpoint.regressions.iter().find_map(|r| r.sample.clone()) {
        Some(id) => reports.exchange(&id).await?.map(sample_view),
        None => None,
    };
    Ok(Detail {
        endpoint: endpoint.endpoint.clone(),
        anchor: format!("endpoint-{index}"),
        places: endpoint
            .regressions
            .iter()
            .take(MAX_PLACES)
            .map(PlaceRow::of)
            .collect(),
        chart: chart(&rates),
        sample,
    })
}

fn sample_view(document: crate::store::sample::SampleDocument) -> SampleView {
    let (differences, primary, candidate) = side_by_side(&document);
    SampleView {
        request: format!("{} {}", document.request.method, document.request.uri),
        differences,
        primary,
        candidate,
        sealed: document.unopened.clone(),
        id: document.id,
    }
}

/// An SVG path of the rates over a 300 x 60 box, 0 at the bottom and 100 % at the top; none for fewer than two
/// points.
fn chart(rates: &[f64]) -> Option<String> {
    if rates.len() < 2 {
        return None;
    }
    let step = 300.0 / (rates.len() - 1) as f64;
    let points: Vec<String> = rates
        .iter()
        .enumerate()
        .map(|(i, rate)| {
            let rate = if rate.is_finite() {
                rate.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let y = 60.0 - rate * 60.0;
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    Some(format!("M{}", points.join(" L")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_numbers_only_within_their_box() {
        assert_eq!(chart(&[0.5]), None);
        let path = chart(&[0.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!(path, "M0.0,60.0 L100.0,0.0 L200.0,0.0 L300.0,60.0");
    }
}
