//! `--admin-token`: when set, every page, API call and `/metrics` needs it, as `Authorization: Bearer TOKEN`
//! or as the session cookie the login form sets. Health checks and the assets stay open.

use std::net::SocketAddr;

use askama::Template;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::paths;
use crate::web::AdminState;
use crate::web::error::{PageError, html};

const COOKIE: &str = "shadowdiff_session";

/// A session cookie's value, valid for the default session length from now.
#[cfg(test)]
fn session_value(token: &str) -> String {
    session_until(
        token,
        now_secs() + crate::web::WebSettings::DEFAULT_SESSION_TTL.as_secs(),
    )
}

/// A session cookie's value: when it expires (unix seconds) and an HMAC of that under the token, so the token
/// itself never sits in a cookie and an old cookie stops working when its time is up, whatever the browser
/// keeps.
fn session_until(token: &str, expires: u64) -> String {
    format!("{expires}.{}", session_mac(token, expires))
}

fn session_mac(token: &str, expires: u64) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes())
        .expect("HMAC takes any key");
    mac.update(b"shadowdiff admin session until ");
    mac.update(expires.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a cookie value is a session of this token that has not expired.
fn valid_session(token: &str, value: &str) -> bool {
    let Some((expires, mac)) = value.split_once('.') else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    expires > now_secs() && same(mac.as_bytes(), session_mac(token, expires).as_bytes())
}

fn now_secs() -> u64 {
    u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0)
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
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && valid_session(token, value));
    bearer || cookie
}

/// Whether a caller that cannot send headers of its own may pass: no token is set, the request carries it,
/// or it is `given` in the body (Flagger's webhooks carry it in their metadata).
pub fn admitted_with(state: &AdminState, headers: &HeaderMap, given: Option<&str>) -> bool {
    state.token.as_deref().is_none_or(|token| {
        authorised(headers, token)
            || given.is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
    })
}

/// Whether a request may pass: no token is set, or it carries the token.
fn admitted(state: &AdminState, request: &Request) -> bool {
    state
        .token
        .as_deref()
        .is_none_or(|token| authorised(request.headers(), token))
}

/// What a request without the token is answered, by the routes [`require_token`] guards.
#[derive(Clone, Copy, Debug)]
pub enum WithoutToken {
    /// 401, for the JSON API and `/metrics`: scripts and scrapers cannot log in.
    Unauthorized,
    /// To the login form, which comes back to the page asked for.
    Login,
}

/// Lets a request through when no token is set or it carries it; answers it as `without` says otherwise.
pub async fn require_token(
    State((state, without)): State<(AdminState, WithoutToken)>,
    request: Request,
    next: Next,
) -> Response {
    if admitted(&state, &request) {
        return next.run(request).await;
    }
    match without {
        WithoutToken::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": "admin token required"})),
        )
            .into_response(),
        WithoutToken::Login => {
            let next_page = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let location = format!("{}?next={}", paths::LOGIN, urlencode(next_page));
            Redirect::to(&location).into_response()
        }
    }
}

fn urlencode(text: &str) -> String {
    crate::encoding::percent_encode(text, b"/")
}

/// Only a path on this site: never `//elsewhere`, `/\\elsewhere` or a full URL, and nothing a browser would
/// drop on the way (white space or control characters: `/\t/evil.example` is followed as `//evil.example`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
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

/// Checks the token from the form and sets the session cookie. Failed attempts from one address past a few
/// make it wait, longer each time (429 with `Retry-After`), so that the token cannot be guessed at speed.
pub async fn login(
    State(state): State<AdminState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let Some(token) = state.token.as_deref() else {
        return Redirect::to(&next).into_response();
    };
    let address = connect.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(address) = address {
        let wait = state.guard.login_wait(address);
        if !wait.is_zero() {
            let seconds = wait.as_secs().max(1);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                format!("too many failed logins from this address: try again in {seconds} s\n"),
            )
                .into_response();
        }
    }
    if !same(form.token.trim().as_bytes(), token.as_bytes()) {
        if let Some(address) = address {
            state.guard.login_failed(address);
        }
        return match html(&LoginPage { next, failed: true }) {
            Ok(page) => (StatusCode::UNAUTHORIZED, page).into_response(),
            Err(error) => PageError(error).into_response(),
        };
    }
    if let Some(address) = address {
        state.guard.login_succeeded(address);
    }
    let ttl = state.session_ttl.as_secs().max(1);
    let cookie = format!(
        "{COOKIE}={}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Strict{}",
        session_until(token, now_secs() + ttl),
        if state.secure_cookie { "; Secure" } else { "" }
    );
    redirect_setting_cookie(&next, &cookie)
}

/// Ends the session: the cookie is cleared, and the browser sent to the login form (or the overview when no
/// token is set).
pub async fn logout(State(state): State<AdminState>) -> Response {
    let target = if state.token.is_some() {
        paths::LOGIN
    } else {
        paths::HOME
    };
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    redirect_setting_cookie(target, &cookie)
}

/// A redirect to `target` that sets the session cookie to `cookie`.
fn redirect_setting_cookie(target: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(target).into_response();
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
    fn a_session_stops_working_when_its_time_is_up() {
        let cookie = |value: String| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, format!("{COOKIE}={value}").parse().unwrap());
            headers
        };
        let later = now_secs() + 60;
        assert!(authorised(
            &cookie(session_until("s3cret", later)),
            "s3cret"
        ));
        let earlier = now_secs() - 1;
        assert!(!authorised(
            &cookie(session_until("s3cret", earlier)),
            "s3cret"
        ));
        // Moving the expiry without the token does not help.
        let forged =
            session_until("s3cret", earlier).replacen(&earlier.to_string(), &later.to_string(), 1);
        assert!(!authorised(&cookie(forged), "s3cret"));
    }

    #[test]
    fn next_pages_stay_on_this_site() {
        assert_eq!(safe_next(Some("/runs/x?range=1h")), "/runs/x?range=1h");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
        for hostile in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/\\evil.example",
            "/\u{0}/evil.example",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(urlencode("/a b?c=d&e"), "/a%20b%3Fc%3Dd%26e");
    }
}
