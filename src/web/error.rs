//! Errors of the admin routes: JSON for the API, a page for the browser; each says what failed.

use askama::Template;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

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
    /// A template failed to render: a bug, answered 500 with its cause logged.
    #[error("the page could not be drawn")]
    Render(String),
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
            WebError::BadRequest(_) | WebError::Store(StoreError::Sealed(_)) => {
                StatusCode::BAD_REQUEST
            }
            WebError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Logs what the answer does not say: the store's error, or why a template failed.
    fn log(&self, what: &str) {
        match self {
            WebError::Store(StoreError::Sealed(_)) => {}
            WebError::Store(error) => tracing::warn!(%error, "{what} failed"),
            WebError::Render(cause) => {
                tracing::error!(%cause, "{what}: a template failed to render")
            }
            WebError::NotFound(_) | WebError::BadRequest(_) => {}
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
        self.0.log("API request");
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

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        self.0.log("page request");
        let title = match &self.0 {
            WebError::NotFound(_) => "Not found",
            WebError::BadRequest(_) => "Bad request",
            WebError::Store(StoreError::Sealed(_)) => "The samples are encrypted",
            WebError::Store(_) => "The store is not answering",
            WebError::Render(_) => "The page could not be drawn",
        };
        let page = ErrorPage {
            title: title.to_string(),
            message: self.0.to_string(),
        };
        match html(&page) {
            Ok(page) => (status, page).into_response(),
            Err(error) => {
                error.log("the error page");
                (status, title).into_response()
            }
        }
    }
}

/// A template rendered as HTML; one that fails to render is [`WebError::Render`] (a 500, its cause logged).
pub fn html(template: &impl Template) -> Result<Html<String>, WebError> {
    template
        .render()
        .map(Html)
        .map_err(|error| WebError::Render(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// A value whose formatting fails, as a template bug would.
    struct Broken;

    impl fmt::Display for Broken {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            Err(fmt::Error)
        }
    }

    #[derive(Template)]
    #[template(source = "<p>{{ value }}</p>", ext = "html")]
    struct BrokenPage {
        value: Broken,
    }

    #[test]
    fn a_template_that_fails_to_render_is_a_500_page() {
        let error = html(&BrokenPage { value: Broken }).unwrap_err();
        assert!(matches!(error, WebError::Render(_)));
        let response = PageError(error).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let api = ApiError(WebError::Render("cause".into())).into_response();
        assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
