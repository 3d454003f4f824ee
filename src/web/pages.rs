//! The report's pages (askama templates), one module per page: overview, endpoint with its field tree and
//! charts, samples, and one exchange side by side; live parts are fragments the script refreshes. What they
//! share: links made from the route table, the run and range selectors, and rendering.

pub mod endpoint;
pub mod exchange;
pub mod overview;
pub mod samples;

use askama::Template;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

use crate::paths::{self, link};
use crate::store::RunInfo;
use crate::web::error::{PageError, WebError, html};
use crate::web::range::RangeChoice;

/// A run's overview over `range`.
fn run_href(label: &str, range: RangeChoice) -> String {
    format!("{}?range={}", link(paths::RUN, &[label]), range.as_str())
}

/// An endpoint's page over `range`.
fn endpoint_href(label: &str, endpoint: &str, range: RangeChoice) -> String {
    format!(
        "{}?range={}",
        link(paths::ENDPOINT, &[label, endpoint]),
        range.as_str()
    )
}

/// A page rendered; a template that fails to render is a 500, its cause logged.
fn render(template: &impl Template) -> Result<Response, PageError> {
    Ok(html(template)?.into_response())
}

/// What a path no route matches answers (behind the login redirect, like every page).
pub async fn not_found(uri: Uri) -> PageError {
    PageError(WebError::NotFound(format!("page {}", uri.path())))
}

/// The share a failing rate is shown as: fine, worrying, bad.
fn rate_class(rate: f64) -> &'static str {
    if rate == 0.0 {
        "ok"
    } else if rate < 0.01 {
        "warn"
    } else {
        "bad"
    }
}

struct RunOption {
    label: String,
    selected: bool,
    /// Another run replaced it for its upstreams: it is kept, and no longer written.
    closed: bool,
}

struct RangeOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// The run and time-range selectors.
struct Controls {
    action: String,
    runs: Vec<RunOption>,
    ranges: Vec<RangeOption>,
}

impl Controls {
    fn new(action: String, runs: &[RunInfo], selected: Option<&str>, range: RangeChoice) -> Self {
        Self {
            action,
            runs: runs
                .iter()
                .map(|run| RunOption {
                    label: run.label.clone(),
                    selected: Some(run.label.as_str()) == selected,
                    closed: run.closed_at_ms.is_some(),
                })
                .collect(),
            ranges: RangeChoice::ALL
                .iter()
                .map(|choice| RangeOption {
                    value: choice.as_str(),
                    label: choice.label(),
                    selected: *choice == range,
                })
                .collect(),
        }
    }
}
