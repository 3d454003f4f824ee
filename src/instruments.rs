//! How a stage's metric set registers its instruments in prometheus-client's registry, shared by every set.

use std::fmt;
use std::hash::Hash;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};

/// Registers `metric` under `name` and gives it back, to be kept by the set that records it.
pub fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Registers a counter family whose series in `labels` are shown from the start, at zero, so that a rate over
/// the first count sees them; other series appear as they are first counted.
pub fn family_from_zero<S>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: impl IntoIterator<Item = S>,
) -> Family<S, Counter>
where
    S: EncodeLabelSet + Clone + Hash + Eq + fmt::Debug + Send + Sync + 'static,
{
    let family = registered(registry, name, help, Family::<S, Counter>::default());
    for label in labels {
        let _ = family.get_or_create(&label);
    }
    family
}

/// Registers a counter family with one label and resolves the counter of each of its `values`, in their order:
/// counting is then an atomic increment, never a lookup (which takes the family's lock, shared by every thread
/// that counts). Every series is shown from the start, at zero.
pub fn counters_for<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = registered(
        registry,
        name,
        help,
        Family::<[(&str, &str); 1], Counter>::default(),
    );
    values.map(|value| family.get_or_create(&[(label, value)]).clone())
}
