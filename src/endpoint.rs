//! Endpoint names (`GET /users/{id}`), bounded in number: a `Canonical-Resource` header wins, then `--endpoint`
//! templates, then the path with identifiers as `{id}` and learned positions as `{param}`; past
//! `--max-endpoints` names per run, new names fall into `METHOD {other}`.

pub mod cluster;
pub mod pattern;

use std::collections::HashSet;
use std::sync::Mutex;

use http::{HeaderMap, HeaderName, Method};
use prometheus_client::metrics::counter::Counter;

use crate::endpoint::cluster::{Clusterer, LearnedTemplate};
pub use crate::endpoint::pattern::EndpointPattern;

/// The request header a caller can set to name the endpoint itself (Diffy's convention).
pub const CANONICAL_RESOURCE: HeaderName = HeaderName::from_static("canonical-resource");

/// Longest endpoint name kept; longer names are cut, so one odd request cannot make a huge key.
pub const MAX_ENDPOINT_LEN: usize = 256;

/// The name a new endpoint gets past the cap, after its method.
pub const OTHER: &str = "{other}";

/// How requests are named.
#[derive(Clone, Debug)]
pub struct NamingSettings {
    /// `--endpoint` templates, which win over automatic names.
    pub patterns: Vec<EndpointPattern>,
    /// `--endpoint-cluster-threshold`: distinct literals at one path position before it becomes `{param}`.
    pub cluster_threshold: usize,
    /// `--max-endpoints`: names per run; later new names are `METHOD {other}`.
    pub max_endpoints: usize,
}

impl NamingSettings {
    pub const DEFAULT_CLUSTER_THRESHOLD: usize = 50;
    pub const DEFAULT_MAX_ENDPOINTS: usize = 2_000;
}

impl Default for NamingSettings {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            cluster_threshold: Self::DEFAULT_CLUSTER_THRESHOLD,
            max_endpoints: Self::DEFAULT_MAX_ENDPOINTS,
        }
    }
}

/// Registers the counter of requests whose new name was past `--max-endpoints`.
pub fn register_overflow_counter(registry: &mut prometheus_client::registry::Registry) -> Counter {
    let overflowed = Counter::default();
    registry.register(
        "endpoints_overflowed",
        "Requests whose new endpoint name was past --max-endpoints and recorded as `METHOD {other}`",
        overflowed.clone(),
    );
    overflowed
}

#[derive(Debug)]
struct NamerState {
    clusterer: Clusterer,
    /// Names given in this run, at most `max_endpoints`.
    known: HashSet<String>,
}

/// Names requests by endpoint, for one run at a time. Shared by every connection: the state it learns sits
/// behind one short lock.
#[derive(Debug)]
pub struct EndpointNamer {
    patterns: Vec<EndpointPattern>,
    max_endpoints: usize,
    state: Mutex<NamerState>,
    /// New names that fell into `{other}`.
    overflowed: Counter,
}

impl Default for EndpointNamer {
    fn default() -> Self {
        Self::new(NamingSettings::default(), Counter::default())
    }
}

impl EndpointNamer {
    pub fn new(settings: NamingSettings, overflowed: Counter) -> Self {
        let max_endpoints = settings.max_endpoints.max(1);
        Self {
            patterns: settings.patterns,
            max_endpoints,
            state: Mutex::new(NamerState {
                // Positions counted at once: a few per endpoint the cap allows, each at most threshold + 1
                // hashes of 8 bytes.
                clusterer: Clusterer::new(settings.cluster_threshold, 2 * max_endpoints),
                known: HashSet::new(),
            }),
            overflowed,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NamerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `METHOD /template` for a request; `gRPC pkg.Service/Method` for a gRPC call.
    pub fn name(&self, method: &Method, path: &str, headers: &HeaderMap) -> String {
        let canonical = headers
            .get(CANONICAL_RESOURCE)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty());
        let grpc_call = crate::grpc::is_grpc(headers)
            .then(|| crate::grpc::schema::endpoint_name(path))
            .flatten();
        let mut state = self.state();
        let name = if let Some(call) = grpc_call {
            call
        } else if let Some(canonical) = canonical {
            format!("{method} {canonical}")
        } else if let Some(pattern) = self.patterns.iter().find(|p| p.matches(method, path)) {
            format!("{method} {}", pattern.template())
        } else {
            format!(
                "{method} {}",
                state.clusterer.template(method.as_str(), path)
            )
        };
        self.admit(state, name, method)
    }

    /// A name worked out elsewhere (a GraphQL operation's), held to the same length and the same cap on
    /// endpoints as every other name.
    pub fn name_as(&self, method: &Method, name: String) -> String {
        self.admit(self.state(), name, method)
    }

    /// `name` cut to length, known from now on, or `METHOD other` past `--max-endpoints`.
    fn admit(
        &self,
        mut state: std::sync::MutexGuard<'_, NamerState>,
        mut name: String,
        method: &Method,
    ) -> String {
        cut(&mut name);
        if state.known.contains(&name) {
            return name;
        }
        if state.known.len() < self.max_endpoints {
            state.known.insert(name.clone());
            return name;
        }
        drop(state);
        self.overflowed.inc();
        format!("{method} {OTHER}")
    }

    /// Templates learned here and not yet stored.
    pub fn take_fresh_templates(&self) -> Vec<LearnedTemplate> {
        self.state().clusterer.take_fresh()
    }

    /// Takes templates and names the run already has (stored by an earlier start or another replica).
    pub fn adopt(&self, templates: Vec<LearnedTemplate>, names: Vec<String>) {
        let mut state = self.state();
        state.clusterer.adopt(templates);
        for name in names {
            if state.known.len() >= self.max_endpoints {
                break;
            }
            state.known.insert(name);
        }
    }

    /// Every template known in this run.
    pub fn templates(&self) -> Vec<LearnedTemplate> {
        self.state().clusterer.templates().to_vec()
    }

    /// Names given in this run.
    pub fn known(&self) -> usize {
        self.state().known.len()
    }

    /// Forgets the run: names and templates start again.
    pub fn reset(&self) {
        let mut state = self.state();
        state.clusterer.reset();
        state.known.clear();
    }
}

fn cut(name: &mut String) {
    if name.len() > MAX_ENDPOINT_LEN {
        let mut cut = MAX_ENDPOINT_LEN;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn namer(patterns: Vec<EndpointPattern>) -> EndpointNamer {
        EndpointNamer::new(
            NamingSettings {
                patterns,
                ..NamingSettings::default()
            },
            Counter::default(),
        )
    }

    fn name(namer: &EndpointNamer, method: Method, path: &str) -> String {
        namer.name(&method, path, &HeaderMap::new())
    }

    /// Names each request (without headers) in turn and checks the name.
    fn assert_names(namer: &EndpointNamer, expected: &[(Method, &str, &str)]) {
        for (method, path, endpoint) in expected {
            assert_eq!(
                name(namer, method.clone(), path),
                *endpoint,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn user_templates_win_over_automatic_names() {
        let namer = namer(vec![
            "/users/{id}/orders".parse().unwrap(),
            "GET /search/{term}".parse().unwrap(),
            "/static/*".parse().unwrap(),
        ]);
        assert_names(
            &namer,
            &[
                (Method::GET, "/users/alice/orders", "GET /users/{id}/orders"),
                (Method::GET, "/search/red-shoes", "GET /search/{term}"),
                // The method-specific template does not apply to POST.
                (Method::POST, "/search/red-shoes", "POST /search/red-shoes"),
                (Method::GET, "/static/css/site.css", "GET /static/*"),
                // Not matching: one segment too many.
                (
                    Method::GET,
                    "/users/alice/orders/9",
                    "GET /users/alice/orders/{id}",
                ),
            ],
        );
    }

    #[test]
    fn user_templates_win_over_learned_ones() {
        let namer = namer(vec!["/users/{user}/orders".parse().unwrap()]);
        for n in 0..60 {
            name(
                &namer,
                Method::GET,
                &format!("/users/user-{}/stars", "x".repeat(n + 1)),
            );
        }
        assert_names(
            &namer,
            &[
                (Method::GET, "/users/bob/stars", "GET /users/{param}/stars"),
                (Method::GET, "/users/bob/orders", "GET /users/{user}/orders"),
            ],
        );
    }

    #[test]
    fn canonical_resource_header_wins_over_templates() {
        let namer = namer(vec!["/users/{id}".parse().unwrap()]);
        let mut headers = HeaderMap::new();
        headers.insert(CANONICAL_RESOURCE, HeaderValue::from_static("user-profile"));
        assert_eq!(
            namer.name(&Method::GET, "/users/7", &headers),
            "GET user-profile"
        );
    }

    #[test]
    fn grpc_calls_are_named_by_service_and_method() {
        let namer = namer(Vec::new());
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        assert_eq!(
            namer.name(&Method::POST, "/shop.v1.Orders/GetOrder", &headers),
            "gRPC shop.v1.Orders/GetOrder"
        );
        // The same path as plain HTTP is an ordinary endpoint.
        assert_eq!(
            name(&namer, Method::POST, "/shop.v1.Orders/GetOrder"),
            "POST /shop.v1.Orders/GetOrder"
        );
    }

    #[test]
    fn very_long_names_are_cut() {
        let path = format!("/{}", "é".repeat(400));
        let name = EndpointNamer::default().name(&Method::GET, &path, &HeaderMap::new());
        assert!(name.len() <= MAX_ENDPOINT_LEN);
    }

    #[test]
    fn past_the_cap_new_names_are_other_and_counted() {
        let overflowed = Counter::default();
        let namer = EndpointNamer::new(
            NamingSettings {
                max_endpoints: 3,
                ..NamingSettings::default()
            },
            overflowed.clone(),
        );
        let mut headers = HeaderMap::new();
        for resource in ["a", "b", "c", "d", "e"] {
            headers.insert(CANONICAL_RESOURCE, HeaderValue::from_static(resource));
            namer.name(&Method::GET, "/", &headers);
        }
        assert_eq!(overflowed.get(), 2);
        // Known names keep their name; new ones of any kind are `{other}`.
        headers.insert(CANONICAL_RESOURCE, HeaderValue::from_static("b"));
        assert_eq!(namer.name(&Method::GET, "/", &headers), "GET b");
        assert_eq!(name(&namer, Method::POST, "/orders"), "POST {other}");
        assert_eq!(overflowed.get(), 3);
        assert_eq!(namer.known(), 3);
        namer.reset();
        assert_eq!(name(&namer, Method::POST, "/orders"), "POST /orders");
    }
}
