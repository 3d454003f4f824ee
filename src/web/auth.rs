//! `--admin-token`: when set, every page, API call and `/metrics` needs it, as `Authorization: Bearer TOKEN`
//! or as the session cookie the login form sets. Health checks and the assets stay open.

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::web::error::{PageError, html};
use crate::web::{AdminState, routes};

const COOKIE: &str = "shadowdiff_session";

/// The session cookie's value for a token: an HMAC of it, so the token itself never sits in a cookie.
fn session_value(token: &str) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes())
        .expect("HMAC takes any key");
    mac.update(b"shadowdiff admin session");
    hex::encode(mac.finalize().into_bytes())
}

/// Compares without leaking, through timing, how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()));
    let session = session_value(token);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value.as_bytes(), session.as_bytes()));
    bearer || cookie
}

/// Whether a request may pass: no token is set, or it carries the token.
fn admitted(state: &AdminState, request: &Request) -> bool {
    state
        .token
        .as_deref()
        .is_none_or(|token| authorised(request.headers(), token))
}

/// For the JSON API and `/metrics`: without the token, 401 (scripts and scrapers cannot log in).
pub async fn require_api_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    if admitted(&state, &request) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": "admin token required"})),
    )
        .into_response()
}

/// For the pages: without the token, to the login form, which comes back here.
pub async fn require_page_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    if admitted(&state, &request) {
        return next.run(request).await;
    }
    let next_page = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("{}?next={}", routes::LOGIN, urlencode(next_page));
    Redirect::to(&location).into_response()
}

fn urlencode(text: &str) -> String {
    crate::encoding::percent_encode(text, b"/")
}

/// Only a path on this site: never `//elsewhere` or a full URL.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    failed: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let page = LoginPage {
        next: safe_next(query.next.as_deref()),
        failed: false,
    };
    match html(&page) {
        Ok(page) => page.into_response(),
        Err(error) => PageError(error).into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(State(state): State<AdminState>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref());
    let Some(token) = state.token.as_deref() else {
        return Redirect::to(&next).into_response();
    };
    if !same(form.token.trim().as_bytes(), token.as_bytes()) {
        return match html(&LoginPage { next, failed: true }) {
            Ok(page) => (StatusCode::UNAUTHORIZED, page).into_response(),
            Err(error) => PageError(error).into_response(),
        };
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        session_value(token)
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Security headers on every answer: no inline scripts or styles, no framing, no sniffing, no referrer.
pub async fn security_headers(request: Request<Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_cookie_authorise_and_nothing_else_does() {
        let mut headers = HeaderMap::new();
        assert!(!authorised(&headers, "s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorised(&headers, "s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorised(&headers, "s3cret"));
        let mut cookies = HeaderMap::new();
        cookies.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={}", session_value("s3cret"))
                .parse()
                .unwrap(),
        );
        assert!(authorised(&cookies, "s3cret"));
        assert!(!authorised(&cookies, "other"));
    }

    #[test]
    fn next_pages_stay_on_this_site() {
        assert_eq!(safe_next(Some("/runs/x?range=1h")), "/runs/x?range=1h");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(urlencode("/a b?c=d&e"), "/a%20b%3Fc%3Dd%26e");
    }
}
