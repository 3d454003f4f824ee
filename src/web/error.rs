//! Errors of the admin routes: JSON for the API, a page for the browser; each says what failed.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::report::ReportError;
use crate::store::StoreError;

/// What went wrong answering a request.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReportError> for WebError {
    fn from(error: ReportError) -> Self {
        match error {
            ReportError::NoRuns => WebError::NotFound("run `latest`".to_string()),
            ReportError::NoRun(label) => WebError::NotFound(format!("run `{label}`")),
            ReportError::Store(error) => WebError::Store(error),
        }
    }
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A store refusal of a rule is the caller's mistake (a bad glob, a missing bound); anything else is
    /// the store's.
    pub fn from_rule_error(error: StoreError) -> Self {
        match error {
            StoreError::Data(reason) => WebError::BadRequest(reason),
            other => WebError::Store(other),
        }
    }
}

/// An error answered as JSON: `{"error": "..."}`.
pub struct ApiError(pub WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self.0, WebError::Store(_)) {
            tracing::warn!(error = %self.0, "API request failed");
        }
        (
            self.0.status(),
            Json(serde_json::json!({ "error": self.0.to_string() })),
        )
            .into_response()
    }
}

/// An error answered as a page.
pub struct PageError(pub WebError);

impl<E: Into<WebError>> From<E> for PageError {
    fn from(error: E) -> Self {
        PageError(error.into())
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if matches!(self.0, WebError::Store(_)) {
            tracing::warn!(error = %self.0, "page request failed");
        }
        let title = match &self.0 {
            WebError::NotFound(_) => "Not found",
            WebError::BadRequest(_) => "Bad request",
            WebError::Store(_) => "The store is not answering",
        };
        let page = ErrorPage {
            title: title.to_string(),
            message: self.0.to_string(),
        };
        (status, page).into_response()
    }
}
