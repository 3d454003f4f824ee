//! What the admin listener accepts from browsers: requests addressed to its own host (no DNS rebinding), state
//! changes from its own origin (no cross-site forms or fetches), and login attempts at a bounded pace.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::web::AdminState;

/// Login failures an address may make before it has to wait.
const FREE_FAILURES: u32 = 3;
/// The first wait, doubled with each further failure up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(30);
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Addresses followed at most; past it, the ones whose wait is over are forgotten first.
const MAX_FOLLOWED: usize = 10_000;

/// The admin listener's own names, and how hard it is to guess its token.
pub struct AdminGuard {
    /// The listener's address, as a browser that reached it directly writes it in `Host`.
    listener: SocketAddr,
    /// `--admin-allowed-host` and the public URL's host, lowercase, each with or without a port.
    allowed_hosts: Vec<String>,
    /// The public URL's origin (`https://shadowdiff.example`), lowercase, when one is set.
    public_origin: Option<String>,
    /// Whether a token guards the listener: then the token, not the host, decides who may read.
    token_set: bool,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long after the last failure the address must wait.
    fn wait(self) -> Duration {
        if self.count < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (self.count - FREE_FAILURES).min(16);
        FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT)
    }
}

impl AdminGuard {
    pub fn new(
        listener: SocketAddr,
        allowed_hosts: &[String],
        public_url: Option<&http::Uri>,
        token_set: bool,
    ) -> Self {
        let mut hosts: Vec<String> = allowed_hosts
            .iter()
            .map(|host| host.trim().to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect();
        let public_origin = public_url.and_then(|url| {
            let authority = url.authority()?.as_str().to_ascii_lowercase();
            hosts.push(authority.clone());
            Some(format!(
                "{}://{authority}",
                url.scheme_str().unwrap_or("http")
            ))
        });
        Self {
            listener,
            allowed_hosts: hosts,
            public_origin,
            token_set,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request naming `host` may be served. With a token anything may ask (the token decides);
    /// without one only the listener's own names, so that a page whose DNS name was rebound to this address
    /// cannot read it.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if self.token_set {
            return true;
        }
        let Some(host) = host.map(str::to_ascii_lowercase) else {
            return false;
        };
        if host == self.listener.to_string() {
            return true;
        }
        let port = self.listener.port();
        if host == format!("localhost:{port}") {
            return true;
        }
        let bare = strip_port(&host);
        self.allowed_hosts
            .iter()
            .any(|allowed| *allowed == host || (strip_port(allowed) == allowed && allowed == bare))
    }

    /// Why a state-changing request is refused as cross-site, if it is: a browser's `Sec-Fetch-Site` other
    /// than `same-origin` or `none`, or (from browsers that do not send it) an `Origin` other than the admin's
    /// own. Clients that send neither
    /// (curl, scripts, deployment tools) are not browsers acting for someone else.
    pub fn cross_site(&self, headers: &HeaderMap) -> Option<String> {
        // Browsers that send `Sec-Fetch-Site` say exactly where a request came from; it decides for them. (Their
        // `Origin` can be `null` on the dashboard's own forms, since its pages send no referrer.)
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("?");
            return (!matches!(site, "same-origin" | "none")).then(|| {
                format!(
                    "the browser says this request came from another site (Sec-Fetch-Site: {site})"
                )
            });
        }
        let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
        let origin = origin.to_ascii_lowercase();
        let own = match &self.public_origin {
            Some(public) => origin == *public,
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_ascii_lowercase);
                let origin_host = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"));
                host.is_some() && origin_host == host.as_deref()
            }
        };
        (!own).then(|| format!("the request came from another origin (Origin: {origin})"))
    }

    /// How long `address` must still wait before its next login attempt.
    pub fn login_wait(&self, address: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&address).map_or(Duration::ZERO, |f| {
            f.wait().saturating_sub(f.last.elapsed())
        })
    }

    /// A failed login from `address`.
    pub fn login_failed(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_FOLLOWED && !failures.contains_key(&address) {
            failures.retain(|_, f| f.last.elapsed() < f.wait());
            if failures.len() >= MAX_FOLLOWED {
                // Still full of addresses that must wait: forget the one that failed longest ago.
                if let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a) {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(address).or_insert(Failures {
            count: 0,
            last: Instant::now(),
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = Instant::now();
    }

    /// A successful login from `address`: its failures are forgiven.
    pub fn login_succeeded(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&address);
    }
}

/// `host` without its `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split(':').next().unwrap_or(host)
}

/// Refuses requests for another host (without a token) and cross-site state changes, with 403 and the reason.
pub async fn check(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !state.guard.host_allowed(host) {
        return refused(format!(
            "this admin listener answers only to its own address; `{}` is not one (add it with \
             --admin-allowed-host, or set --admin-token)",
            host.unwrap_or("no Host")
        ));
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state && let Some(reason) = state.guard.cross_site(request.headers()) {
        return refused(format!("cross-site request refused: {reason}"));
    }
    next.run(request).await
}

fn refused(reason: String) -> Response {
    tracing::warn!(%reason, "admin request refused");
    (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: bool) -> AdminGuard {
        let public: http::Uri = "https://shadowdiff.example".parse().unwrap();
        AdminGuard::new(
            "127.0.0.1:8888".parse().unwrap(),
            &["dash.internal".to_string(), "ops.internal:9000".to_string()],
            Some(&public),
            token,
        )
    }

    #[test]
    fn without_a_token_only_the_listeners_own_names_are_served() {
        let guard = guard(false);
        for ok in [
            "127.0.0.1:8888",
            "localhost:8888",
            "LOCALHOST:8888",
            "dash.internal",
            "dash.internal:8888",
            "ops.internal:9000",
            "shadowdiff.example",
        ] {
            assert!(guard.host_allowed(Some(ok)), "{ok}");
        }
        for refused in [
            "evil.example:8888",
            "localhost:9999",
            "ops.internal:9001",
            "127.0.0.1:9999",
            "",
        ] {
            assert!(!guard.host_allowed(Some(refused)), "{refused}");
        }
        assert!(!guard.host_allowed(None));
        assert!(self::guard(true).host_allowed(Some("evil.example")));
    }

    #[test]
    fn browsers_saying_cross_site_are_refused_and_plain_clients_are_not() {
        let guard = guard(false);
        // Whether a request with these headers is refused as cross-site.
        let cross_site = |guard: &AdminGuard, pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            guard.cross_site(&map).is_some()
        };
        assert!(!cross_site(&guard, &[]));
        assert!(!cross_site(&guard, &[("sec-fetch-site", "same-origin")]));
        assert!(
            !cross_site(
                &guard,
                &[("sec-fetch-site", "same-origin"), ("origin", "null")]
            ),
            "the dashboard's own forms send no referrer, so their Origin is null"
        );
        assert!(cross_site(&guard, &[("sec-fetch-site", "cross-site")]));
        assert!(cross_site(&guard, &[("sec-fetch-site", "same-site")]));
        assert!(!cross_site(
            &guard,
            &[("origin", "https://shadowdiff.example")]
        ));
        assert!(
            cross_site(&guard, &[("origin", "http://127.0.0.1:8888")]),
            "with a public URL, only its origin is the admin's own"
        );
        let local = AdminGuard::new("127.0.0.1:8888".parse().unwrap(), &[], None, false);
        assert!(!cross_site(
            &local,
            &[
                ("origin", "http://127.0.0.1:8888"),
                ("host", "127.0.0.1:8888")
            ]
        ));
        assert!(cross_site(
            &local,
            &[
                ("origin", "http://127.0.0.1:9000"),
                ("host", "127.0.0.1:8888")
            ]
        ));
        assert!(cross_site(
            &local,
            &[("origin", "null"), ("host", "127.0.0.1:8888")]
        ));
    }

    #[test]
    fn login_failures_past_the_free_ones_make_the_address_wait_longer_each_time() {
        let guard = guard(true);
        let (one, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FREE_FAILURES - 1 {
            guard.login_failed(one);
        }
        assert_eq!(guard.login_wait(one), Duration::ZERO);
        guard.login_failed(one);
        let first = guard.login_wait(one);
        assert!(first > Duration::ZERO && first <= FIRST_WAIT, "{first:?}");
        guard.login_failed(one);
        assert!(guard.login_wait(one) > first);
        assert_eq!(guard.login_wait(other), Duration::ZERO);
        guard.login_succeeded(one);
        assert_eq!(guard.login_wait(one), Duration::ZERO);
    }
}
