//! Which requests are shadowed: the method policy (side effects) and sampling, consistent by a key header.

use http::{HeaderMap, HeaderName, Method};

use crate::analysis::rules::{EndpointGlob, SampleRate};
use crate::proxy::ShadowSettings;
use crate::proxy::metrics::UnshadowedReason;
use crate::values::MethodList;

/// Methods whose requests may be sent three times.
#[derive(Clone, Debug)]
enum MethodPolicy {
    /// `--allow-side-effects`: every method.
    All,
    /// `--shadow-methods`: only these.
    Only(MethodList),
}

/// Decides, before anything is sent, whether a request is shadowed.
#[derive(Clone, Debug)]
pub struct ShadowPolicy {
    methods: MethodPolicy,
    /// `--no-shadow` patterns.
    never: Vec<EndpointGlob>,
    /// Per-endpoint sample rates, winning over `sample_rate`.
    endpoint_rates: Vec<SampleRate>,
    sample_rate: f64,
    sample_key_header: Option<HeaderName>,
}

impl ShadowPolicy {
    pub fn new(settings: &ShadowSettings) -> Self {
        let methods = if settings.allow_side_effects {
            MethodPolicy::All
        } else {
            MethodPolicy::Only(settings.methods.clone())
        };
        Self {
            methods,
            never: settings.never.clone(),
            endpoint_rates: settings.endpoint_rates.clone(),
            sample_rate: settings.sample_rate,
            sample_key_header: settings.sample_key_header.clone(),
        }
    }

    /// `Ok` when the request to `path` is shadowed, otherwise why not: a `--no-shadow` pattern, the method
    /// policy, then the first per-endpoint rate that matches (else the global one).
    pub fn decide_for(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), UnshadowedReason> {
        self.decide_with(method, path, headers, false)
    }

    /// Whether every method is shadowed (`--allow-side-effects`).
    pub fn allows_side_effects(&self) -> bool {
        matches!(self.methods, MethodPolicy::All)
    }

    /// As [`ShadowPolicy::decide_for`]; `read_only` for a request known to change nothing whatever its method
    /// (a GraphQL query sent as a POST), for which `--no-shadow` and sampling still apply but not the method policy.
    pub fn decide_with(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        read_only: bool,
    ) -> Result<(), UnshadowedReason> {
        if self.never.is_empty() && self.endpoint_rates.is_empty() {
            return self.decide_at(method, headers, self.sample_rate, read_only);
        }
        let request = format!("{method} {path}");
        if self.never.iter().any(|pattern| pattern.matches(&request)) {
            return Err(UnshadowedReason::Excluded);
        }
        let rate = self
            .endpoint_rates
            .iter()
            .find(|rate| rate.endpoint.matches(&request))
            .map_or(self.sample_rate, |rate| rate.rate);
        self.decide_at(method, headers, rate, read_only)
    }

    /// `Ok` when the request is shadowed, otherwise why not.
    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> Result<(), UnshadowedReason> {
        self.decide_at(method, headers, self.sample_rate, false)
    }

    fn decide_at(
        &self,
        method: &Method,
        headers: &HeaderMap,
        sample_rate: f64,
        read_only: bool,
    ) -> Result<(), UnshadowedReason> {
        if let MethodPolicy::Only(list) = &self.methods
            && !read_only
            && !list.contains(method)
        {
            return Err(UnshadowedReason::Method);
        }
        if sample_rate >= 1.0 {
            return Ok(());
        }
        let position = match self
            .sample_key_header
            .as_ref()
            .and_then(|name| headers.get(name))
        {
            Some(key) => key_position(key.as_bytes()),
            None => fastrand::f64(),
        };
        if position < sample_rate {
            Ok(())
        } else {
            Err(UnshadowedReason::SampledOut)
        }
    }
}

/// A stable position in [0, 1) for a sampling key: the same key lands in the same place in every process and
/// every release, so that replicas agree on which keys are shadowed (FNV-1a, which unlike the standard
/// library's hasher is fixed by its definition).
pub fn key_position(key: &[u8]) -> f64 {
    let mut hash = crate::encoding::fnv1a(key);
    // FNV's low bits mix poorly for short keys; fold the high half in before taking 53 bits.
    hash ^= hash >> 32;
    hash = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(change: impl FnOnce(&mut ShadowSettings)) -> ShadowPolicy {
        let mut settings = ShadowSettings::default();
        change(&mut settings);
        ShadowPolicy::new(&settings)
    }

    #[test]
    fn only_safe_methods_by_default() {
        let policy = policy(|_| {});
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(policy.decide(&method, &HeaderMap::new()), Ok(()));
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                policy.decide(&method, &HeaderMap::new()),
                Err(UnshadowedReason::Method)
            );
        }
    }

    #[test]
    fn side_effects_and_method_lists() {
        let all = policy(|s| s.allow_side_effects = true);
        assert_eq!(all.decide(&Method::DELETE, &HeaderMap::new()), Ok(()));
        let listed = policy(|s| s.methods = "GET,POST".parse().unwrap());
        assert_eq!(listed.decide(&Method::POST, &HeaderMap::new()), Ok(()));
        assert_eq!(
            listed.decide(&Method::PUT, &HeaderMap::new()),
            Err(UnshadowedReason::Method)
        );
    }

    #[test]
    fn keyed_sampling_is_stable_and_near_the_rate() {
        let policy = policy(|s| {
            s.sample_rate = 0.3;
            s.sample_key_header = Some(HeaderName::from_static("x-user"));
        });
        let mut shadowed = 0;
        for user in 0..10_000 {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-user",
                HeaderValue::from_str(&format!("user-{user}")).unwrap(),
            );
            let first = policy.decide(&Method::GET, &headers);
            for _ in 0..3 {
                assert_eq!(policy.decide(&Method::GET, &headers), first);
            }
            shadowed += usize::from(first.is_ok());
        }
        assert!(
            (2_700..3_300).contains(&shadowed),
            "{shadowed} of 10000 shadowed at rate 0.3"
        );
    }

    #[test]
    fn key_positions_are_fixed_values() {
        // Pinned so that a change of hash (which would reshuffle every replica's sample) fails loudly.
        for (key, expected) in [
            (&b""[..], 0.521_253_724_777),
            (&b"user-1"[..], 0.367_430_909_419),
            (&b"shadowdiff"[..], 0.157_116_494_721),
        ] {
            assert!((key_position(key) - expected).abs() < 1e-12, "{key:?}");
        }
    }

    #[test]
    fn rate_zero_shadows_nothing_and_rate_one_everything() {
        let none = policy(|s| s.sample_rate = 0.0);
        let all = policy(|_| {});
        for _ in 0..100 {
            assert_eq!(
                none.decide(&Method::GET, &HeaderMap::new()),
                Err(UnshadowedReason::SampledOut)
            );
            assert_eq!(all.decide(&Method::GET, &HeaderMap::new()), Ok(()));
        }
    }
}
