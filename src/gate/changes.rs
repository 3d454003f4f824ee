//! A run's changes in words, the lines every output of the gate leads with: each change on one line, its
//! places, what trails it and its predictors beneath.

use crate::analysis::aggregate;
use crate::analysis::diff::DiffKind;
use crate::report::change_text::{describe, summary};
use crate::report::changes::{Change, Predictor};
use crate::units::{count, percent};

/// The change on one line: its class, its title and how many requests fail at it.
pub fn headline(change: &Change) -> String {
    if change.is_latency() {
        return format!("{} {}", change.compat.as_str(), change.title);
    }
    let requests: u64 = change.rates.iter().map(|share| share.requests).sum();
    format!(
        "{} {}: {} of {} requests ({})",
        change.compat.as_str(),
        change.title,
        count(change.requests),
        count(requests),
        percent(aggregate::rate(change.requests, requests))
    )
}

/// The lines beneath a change's headline: its places (many under one parent summed up), the endpoints they
/// fail on when more than one, what trails it, and its predictors.
pub fn details(change: &Change) -> Vec<String> {
    let mut lines = Vec::new();
    let many = change.endpoints.len() > 1;
    for group in &change.summary {
        let mut line = format!("{} ({})", describe(group), group.compat.as_str());
        let alone = change
            .places
            .iter()
            .filter(|p| p.path == group.path && p.kind == group.kind);
        if let [place] = alone.collect::<Vec<_>>().as_slice()
            && place.kind != DiffKind::Slower
        {
            line.push_str(&format!(", {} of requests", percent(place.rate)));
        }
        if many {
            line.push_str(&format!(
                ", on {} of {} endpoints",
                group.endpoints,
                change.endpoints.len()
            ));
        }
        lines.push(line);
    }
    if many {
        let rates: Vec<String> = change
            .rates
            .iter()
            .map(|share| format!("{} {}", share.endpoint, percent(share.rate)))
            .collect();
        lines.push(format!("endpoints: {}", rates.join(", ")));
    }
    for group in summary(&change.consequences) {
        lines.push(format!(
            "trailing it: {} ({})",
            describe(&group),
            group.compat.as_str()
        ));
    }
    for predictor in &change.predictors {
        lines.push(format!("predictor: {}", predictor_line(predictor)));
    }
    if let Some(sample) = &change.sample {
        lines.push(format!("sample {sample}"));
    }
    lines
}

/// A predictor as a person reads it: "query currency = EUR: 98.0% of failing requests, 1.0% of passing".
pub fn predictor_line(predictor: &Predictor) -> String {
    format!(
        "{}: {} of failing requests, {} of passing",
        feature_text(predictor),
        percent(predictor.failing_share),
        percent(predictor.passing_share)
    )
}

/// "query currency = EUR", or "query page present".
pub fn feature_text(predictor: &Predictor) -> String {
    match &predictor.value {
        Some(value) => format!("{} = {value}", predictor.feature),
        None => format!("{} present", predictor.feature),
    }
}

/// Every change, its headline and its details indented beneath, for a text report.
pub fn text_block(changes: &[Change]) -> String {
    let mut out = String::new();
    for (index, change) in changes.iter().enumerate() {
        out.push_str(&format!("  {}. {}\n", index + 1, headline(change)));
        for line in details(change) {
            out.push_str(&format!("       {line}\n"));
        }
    }
    out
}
