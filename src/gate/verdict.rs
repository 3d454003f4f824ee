//! The gate's verdict as deployment tools read it (Argo Rollouts' web metric, Flagger's webhooks, the verdict
//! gauges): one flat JSON object, made from the same judgement as the `gate` command's, and the gate's options
//! read from query parameters or a webhook's metadata.

use serde::{Deserialize, Serialize};

use super::{FailOn, GateReport, GateSettings, render};
use crate::analysis::compat::Compat;
use crate::analysis::kind::DiffKind;
use crate::analysis::rules::EndpointGlob;
use crate::units::{count, percent};

/// Places listed in `failing` at most, worst first: a verdict stays small whatever the run holds.
pub const MAX_FAILING: usize = 50;
/// Reasons a failing verdict's `reason` names at most (the rest counted): it is one line in a Kubernetes
/// event, a chat message or a log.
pub const MAX_REASONS: usize = 5;

/// A run's verdict. `passed` is false whenever `enough_data` is false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub run: String,
    pub passed: bool,
    /// Whether the run had the fewest compared requests asked for (`min_requests`).
    pub enough_data: bool,
    pub requests: u64,
    pub diff_rate: f64,
    /// Places whose regression is breaking (a field missing, a type or status class changed).
    pub breaking: u64,
    /// Endpoints whose candidate is slower than primary beyond the noise.
    pub latency_regressions: u64,
    /// The places where the candidate regressed (those that count under `fail_on`), worst first.
    pub failing: Vec<FailingPlace>,
    /// Why it passed or failed, in one line.
    pub reason: String,
}

/// One place where the candidate regressed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailingPlace {
    pub endpoint: String,
    pub path: String,
    pub kind: DiffKind,
    pub compat: Compat,
    pub rate: f64,
    /// An exchange showing it.
    pub sample: Option<String>,
}

impl Verdict {
    /// The verdict of a gate report.
    pub fn of(report: &GateReport) -> Self {
        let mut failing: Vec<FailingPlace> = report
            .endpoints
            .iter()
            .flat_map(|endpoint| {
                endpoint.regressions.iter().map(|regression| FailingPlace {
                    endpoint: endpoint.endpoint.clone(),
                    path: regression.path.clone(),
                    kind: regression.kind,
                    compat: regression.compat,
                    rate: regression.rate,
                    sample: regression.sample.clone(),
                })
            })
            .collect();
        let breaking = failing
            .iter()
            .filter(|place| place.compat == Compat::Breaking)
            .count() as u64;
        failing.sort_by(|a, b| {
            b.rate
                .total_cmp(&a.rate)
                .then_with(|| a.endpoint.cmp(&b.endpoint))
                .then_with(|| a.path.cmp(&b.path))
        });
        failing.truncate(MAX_FAILING);
        let latency_regressions = report
            .endpoints
            .iter()
            .filter(|endpoint| endpoint.latency_regression)
            .count() as u64;
        let reason = if report.passed {
            format!(
                "passed: diff rate {} is within {} over {} compared requests",
                percent(report.diff_rate),
                percent(report.max_diff_rate),
                count(report.requests)
            )
        } else {
            let mut reason = report
                .failures
                .iter()
                .take(MAX_REASONS)
                .map(render::describe)
                .collect::<Vec<_>>()
                .join("; ");
            if report.failures.len() > MAX_REASONS {
                reason.push_str(&format!(
                    "; and {} more",
                    count((report.failures.len() - MAX_REASONS) as u64)
                ));
            }
            reason
        };
        Self {
            run: report.run.clone(),
            passed: report.passed,
            enough_data: report.enough_data,
            requests: report.requests,
            diff_rate: report.diff_rate,
            breaking,
            latency_regressions,
            failing,
            reason,
        }
    }

    /// The verdict on a run the store does not have (yet): too little data, which Argo Rollouts takes as
    /// inconclusive rather than as an error.
    pub fn unknown(run: &str) -> Self {
        Self {
            run: run.to_string(),
            passed: false,
            enough_data: false,
            requests: 0,
            diff_rate: 0.0,
            breaking: 0,
            latency_regressions: 0,
            failing: Vec::new(),
            reason: format!("no run labelled `{run}` yet: no compared requests"),
        }
    }
}

/// A gate option given by name, as a query parameter or a webhook's metadata has it.
#[derive(Debug, thiserror::Error)]
#[error("`{name}`: {problem}")]
pub struct OptionError {
    pub name: String,
    pub problem: String,
}

impl GateSettings {
    /// Sets the option `name` from its text; false when `name` is not a gate option (callers decide whether
    /// that is an error).
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, OptionError> {
        let error = |problem: String| OptionError {
            name: name.to_string(),
            problem,
        };
        let value = value.trim();
        match name {
            "max_diff_rate" => {
                self.max_diff_rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|rate| (0.0..=1.0).contains(rate))
                    .ok_or_else(|| error(format!("`{value}` is not a rate from 0 to 1")))?;
            }
            "min_requests" => {
                self.min_requests = value
                    .parse()
                    .map_err(|_| error(format!("`{value}` is not a whole number")))?;
            }
            "fail_on" => {
                self.fail_on = match value {
                    "any" => FailOn::Any,
                    "breaking" => FailOn::Breaking,
                    _ => return Err(error(format!("`{value}` is neither `any` nor `breaking`"))),
                };
            }
            "latency" => {
                self.latency = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" | "" => false,
                    _ => return Err(error(format!("`{value}` is neither true nor false"))),
                };
            }
            "endpoint" => self
                .endpoints
                .push(EndpointGlob::parse(value).map_err(error)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_by_name_and_bad_values_are_named() {
        let mut settings = GateSettings::default();
        for (name, value) in [
            ("max_diff_rate", "0.05"),
            ("min_requests", "500"),
            ("fail_on", "breaking"),
            ("latency", "true"),
            ("endpoint", "GET /users/*"),
            ("endpoint", "POST /orders"),
        ] {
            assert!(settings.set(name, value).unwrap(), "{name}");
        }
        assert_eq!(settings.max_diff_rate, 0.05);
        assert_eq!(settings.min_requests, 500);
        assert_eq!(settings.fail_on, FailOn::Breaking);
        assert!(settings.latency);
        assert_eq!(settings.endpoints.len(), 2);
        assert!(!settings.set("token", "x").unwrap());
        for (name, value) in [
            ("max_diff_rate", "2"),
            ("max_diff_rate", "NaN"),
            ("min_requests", "-1"),
            ("fail_on", "some"),
            ("latency", "maybe"),
        ] {
            let error = settings.set(name, value).unwrap_err().to_string();
            assert!(error.contains(name) && error.contains(value), "{error}");
        }
    }
}
