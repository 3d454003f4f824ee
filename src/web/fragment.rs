//! Live fragments: server-rendered HTML with an ETag, so a poll that finds nothing new gets 304 and the page
//! keeps its DOM (selection, scroll, open details) untouched.

use std::hash::{DefaultHasher, Hash, Hasher};

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::web::error::WebError;

/// A rendered fragment and the validator of its exact bytes.
pub struct Fragment {
    pub html: String,
    pub etag: String,
}

impl Fragment {
    pub fn render(template: &impl Template) -> Result<Fragment, WebError> {
        let html = template
            .render()
            .map_err(|error| WebError::Render(error.to_string()))?;
        let mut hasher = DefaultHasher::new();
        html.hash(&mut hasher);
        let etag = format!("\"{:016x}\"", hasher.finish());
        Ok(Fragment { html, etag })
    }

    /// No fragment (a page with nothing live on it).
    pub fn none() -> Fragment {
        Fragment {
            html: String::new(),
            etag: String::new(),
        }
    }

    /// 304 when the caller already holds these bytes (`If-None-Match`), the fragment otherwise.
    pub fn respond(self, request: &HeaderMap) -> Response {
        let etag =
            HeaderValue::from_str(&self.etag).expect("hex in quotes is a valid header value");
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|tag| tag.trim() == self.etag);
        let headers = [
            (header::ETAG, etag),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let content_type = (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        (headers, [content_type], self.html).into_response()
    }
}
