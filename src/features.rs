//! Request features and the bounded sketches that count them, so that the read side can say which features
//! separate a change's failing requests from the passing ones (`report::predictors`).

pub mod extract;
pub mod sketch;
pub mod topk;
pub mod totals;

pub use extract::{RequestParts, extract};
pub use sketch::FeatureSketch;

/// One request's features: `(name, value)` pairs, a name with no value being a presence (a body field), and
/// how many were left out past the per-request caps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Features {
    pub list: Vec<(String, Option<String>)>,
    pub dropped: u32,
}

impl Features {
    pub fn push(&mut self, name: impl Into<String>, value: Option<String>) {
        self.list.push((name.into(), value));
    }

    /// Keeps the first value of each name: a request counts once per feature.
    fn dedup(&mut self) {
        let mut seen = std::collections::HashSet::with_capacity(self.list.len());
        self.list.retain(|(name, _)| seen.insert(name.clone()));
    }

    /// Whether the request had `name` (with `value`, when one is given).
    pub fn has(&self, name: &str, value: Option<&str>) -> bool {
        self.list
            .iter()
            .any(|(n, v)| n == name && value.is_none_or(|wanted| v.as_deref() == Some(wanted)))
    }
}
