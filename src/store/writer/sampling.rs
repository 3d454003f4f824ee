//! The writer's samples: which exchanges are kept for a place, the reservoir's replaced samples let go, and
//! the kept exchanges made into sample rows off the async threads.

use crate::analysis::Analysis;
use crate::budget::{Charge, Stage};
use crate::store::SampleRow;
use crate::store::metrics::{Unstored, UnstoredReason};
use crate::store::sample::SampleDocument;
use crate::store::sampler::{SamplePlace, Take};
use crate::store::sealed;
use crate::store::write::Unsampled;

use super::Writer;

/// Most exchanges waiting to be made into samples; past it, new samples are not taken (their exchanges still
/// count).
pub(super) const MAX_TO_SAMPLE: usize = 256;
/// Samples are made (off the async threads) as soon as this many wait, not only at the flush.
pub(super) const SAMPLE_BUILD_AT: usize = 64;
/// Places followed for samples.
pub(super) const MAX_SAMPLED_PLACES: usize = 20_000;

/// An exchange kept to be made into a sample, with the places it was taken for.
pub(super) struct ToSample {
    analysis: Analysis,
    places: Vec<(SamplePlace, Take)>,
}

impl Writer {
    /// Keeps the exchange to be made into a sample if the sampler takes it for one of its places.
    pub(super) fn maybe_sample(&mut self, analysis: Analysis) {
        let Some(compared) = analysis.compared() else {
            return;
        };
        let endpoint = analysis.exchange.endpoint.clone();
        let mut places: Vec<SamplePlace> = compared
            .candidate_keys()
            .keys()
            .chain(compared.noise_keys().iter())
            .map(|(path, kind)| (path.to_string(), kind.as_str().to_string()))
            .collect();
        places.sort();
        places.dedup();
        if places.is_empty() {
            // An exchange without differences: a few per endpoint, to show what "the same" looks like.
            places.push((String::new(), String::new()));
        }
        let id = analysis.exchange.id.to_string();
        let taken = self.sampler.decide(&endpoint, &places, &id);
        if taken.is_empty() {
            return;
        }
        if self.pending.to_sample.len() >= MAX_TO_SAMPLE {
            for (place, take) in &taken {
                self.sampler.release(&endpoint, place, take, &id);
            }
            self.metrics
                .dropped(Unstored::Sample, UnstoredReason::BufferFull, 1);
            return;
        }
        for (place, take) in &taken {
            if let Take::Reservoir {
                replaces: Some(old),
            } = take
            {
                self.unsample(&endpoint, place, old);
            }
        }
        self.pending.to_sample.push(ToSample {
            analysis,
            places: taken,
        });
    }

    /// A sample the reservoir let go for a place: taken out of what waits, or deleted from the store.
    fn unsample(&mut self, endpoint: &str, place: &SamplePlace, id: &str) {
        if let Some(at) = self
            .pending
            .to_sample
            .iter()
            .position(|waiting| waiting.analysis.exchange.id.to_string() == id)
        {
            let waiting = &mut self.pending.to_sample[at];
            waiting.places.retain(|(p, _)| p != place);
            if waiting.places.is_empty() {
                self.pending.to_sample.swap_remove(at);
            }
            return;
        }
        if let Some(sample) = self
            .unsent
            .as_mut()
            .and_then(|batch| batch.samples.iter_mut().find(|sample| sample.id == id))
        {
            sample.places.retain(|p| p != place);
            return;
        }
        self.pending.unsampled.push(Unsampled {
            endpoint: endpoint.to_string(),
            path: place.0.clone(),
            kind: place.1.clone(),
            sample_id: id.to_string(),
        });
    }

    /// Makes the exchanges waiting for it into sample rows, on a blocking thread (decoding, redacting and
    /// encoding bodies is CPU work).
    pub(super) async fn build_samples(&mut self) -> Vec<SampleRow> {
        let waiting = std::mem::take(&mut self.pending.to_sample);
        if waiting.is_empty() {
            return Vec::new();
        }
        let count = waiting.len();
        let limits = self.config.sample_limits;
        // Making a sample decodes one body at a time (and parses it, to redact it): a few times the decoding
        // cap, for as long as the samples take to make.
        let scratch = 4 * limits.max_decoded;
        let held = match &self.budget {
            Some(budget) => budget.charge(Stage::Writer, scratch),
            None => Some(Charge::none()),
        };
        let Some(held) = held else {
            for ToSample { analysis, places } in &waiting {
                let id = analysis.exchange.id.to_string();
                for (place, take) in places {
                    self.sampler
                        .release(&analysis.exchange.endpoint, place, take, &id);
                }
            }
            self.metrics
                .dropped(Unstored::Sample, UnstoredReason::MemoryBudget, count as u64);
            self.shed();
            return Vec::new();
        };
        let redactor = self.redactor.clone();
        let (rewrites, sealer) = (self.rewrites.clone(), self.config.sealer.clone());
        let built = tokio::task::spawn_blocking(move || {
            waiting
                .into_iter()
                .filter_map(|ToSample { analysis, places }| {
                    let mut document =
                        SampleDocument::build(&analysis, &redactor, limits, &rewrites);
                    Some(SampleRow {
                        document: sealed::stored_text(&mut document, sealer.as_deref())?,
                        id: document.id.clone(),
                        endpoint: analysis.exchange.endpoint.clone(),
                        created_at_ms: document.started_at_ms,
                        places: places
                            .into_iter()
                            .map(|((path, kind), _)| (path, kind))
                            .collect(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        drop(held);
        if let Ok(rows) = &built
            && rows.len() < count
        {
            let unsealed = (count - rows.len()) as u64;
            self.metrics
                .dropped(Unstored::Sample, UnstoredReason::Failed, unsealed);
        }
        built.unwrap_or_else(|_| {
            tracing::error!(count, "making samples failed; they are not stored");
            self.metrics
                .dropped(Unstored::Sample, UnstoredReason::Failed, count as u64);
            Vec::new()
        })
    }
}
