//! The admin listener's paths that pages and notifications link to, and `link` to fill them: imports nothing of web.

use crate::encoding::percent_encode;

pub const HOME: &str = "/";
pub const LOGIN: &str = "/login";
pub const LOGOUT: &str = "/logout";
pub const RUN: &str = "/runs/{run}";
pub const RUN_LIVE: &str = "/runs/{run}/live";
pub const RUN_CLEAR: &str = "/runs/{run}/clear";
pub const CHANGE_ACCEPT: &str = "/runs/{run}/changes/{id}/accept";
pub const ENDPOINT: &str = "/runs/{run}/endpoints/{endpoint}";
pub const ENDPOINT_LIVE: &str = "/runs/{run}/endpoints/{endpoint}/live";
pub const ENDPOINT_SAMPLES: &str = "/runs/{run}/endpoints/{endpoint}/samples";
pub const ENDPOINT_RULES: &str = "/runs/{run}/endpoints/{endpoint}/rules";
pub const ENDPOINT_RULE_DELETE: &str = "/runs/{run}/endpoints/{endpoint}/rules/{id}/delete";
pub const EXCHANGE: &str = "/exchanges/{id}";
pub const EXCHANGE_FRAMES: &str = "/exchanges/{id}/frames/{side}";
pub const API_TIMELINE: &str = "/api/v1/runs/{run}/endpoints/{endpoint}/timeline";
pub const RULES_TOML: &str = "/api/v1/rules.toml";

/// The path of `pattern` with its `{name}` segments filled, in order, with `values` (percent-encoded).
pub fn link(pattern: &str, values: &[&str]) -> String {
    let mut values = values.iter();
    pattern
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                percent_encode(values.next().copied().unwrap_or_default(), &[])
            } else {
                segment.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
