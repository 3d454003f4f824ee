//! The analysis core, pure (no sockets, no database): an Exchange in, classified differences out; counts in,
//! verdicts out.

pub mod aggregate;
mod analyzer;
pub mod compat;
pub mod decode;
pub mod diff;
pub mod graphql_answer;
pub mod grpc;
pub mod headers;
pub mod json;
pub mod keys;
pub mod kind;
pub mod latency;
pub mod noise;
pub mod rewrite;
pub mod rules;
mod settings;
pub mod structured;
pub mod text;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::analysis::compat::Compat;
use crate::analysis::diff::{DiffKind, Difference};
use crate::exchange::{Exchange, Target};

pub use analyzer::Analyzer;
pub use settings::{AnalysisConfig, AnalysisSettings, GrpcSchemaSettings};

/// Why an exchange was not compared at all.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Primary gave no response: nothing to compare against.
    PrimaryFailed,
    /// Secondary was shed by the in-flight bound: without it, noise cannot be told apart.
    SecondaryShed,
    /// The candidate was shed by the in-flight bound.
    CandidateShed,
    /// The caller went away before the answering upstream's body was complete.
    Abandoned,
    /// Keeping a body of the exchange would have gone over `--memory-budget`: it was shed.
    MemoryBudget,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::PrimaryFailed,
        SkipReason::SecondaryShed,
        SkipReason::CandidateShed,
        SkipReason::Abandoned,
        SkipReason::MemoryBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::PrimaryFailed => "primary_failed",
            SkipReason::SecondaryShed => "secondary_shed",
            SkipReason::CandidateShed => "candidate_shed",
            SkipReason::Abandoned => "abandoned",
            SkipReason::MemoryBudget => "memory_budget",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

/// Why a body was not compared (its status and headers were): a stable name for counters and samples.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BodySkip {
    /// Larger than `--max-body`: not kept.
    TooLarge,
    /// Larger than `--max-decoded-body` once its encoding is undone.
    DecodedTooLarge,
    /// A Content-Encoding that cannot be undone.
    UnsupportedEncoding,
    /// Its encoding is corrupt.
    CorruptEncoding,
    /// JSON nested deeper than the parser goes.
    JsonTooDeep,
    /// Holding it (kept, decoded or parsed) would have gone over `--memory-budget`.
    MemoryBudget,
    /// A gRPC body that is not a well-formed sequence of messages of the method's type (a bad or cut-short
    /// length prefix, a truncated stream, a message that does not decode).
    GrpcMalformed,
    /// A gRPC call to a method none of the given schemas has.
    GrpcUnknownMethod,
    /// An XML document declaring a DTD: its entities are never expanded (a billion laughs, an external entity),
    /// so it is not read at all.
    XmlDoctype,
    /// XML nested deeper than the reader goes (128 elements).
    XmlTooDeep,
}

impl BodySkip {
    pub const ALL: [BodySkip; 10] = [
        BodySkip::TooLarge,
        BodySkip::DecodedTooLarge,
        BodySkip::UnsupportedEncoding,
        BodySkip::CorruptEncoding,
        BodySkip::JsonTooDeep,
        BodySkip::MemoryBudget,
        BodySkip::GrpcMalformed,
        BodySkip::GrpcUnknownMethod,
        BodySkip::XmlDoctype,
        BodySkip::XmlTooDeep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BodySkip::TooLarge => "too_large",
            BodySkip::DecodedTooLarge => "decoded_too_large",
            BodySkip::UnsupportedEncoding => "unsupported_encoding",
            BodySkip::CorruptEncoding => "corrupt_encoding",
            BodySkip::JsonTooDeep => "json_too_deep",
            BodySkip::MemoryBudget => "memory_budget",
            BodySkip::GrpcMalformed => "grpc_malformed",
            BodySkip::GrpcUnknownMethod => "grpc_unknown_method",
            BodySkip::XmlDoctype => "xml_doctype",
            BodySkip::XmlTooDeep => "xml_too_deep",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

impl std::fmt::Display for BodySkip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a difference is counted: its generalised path and its kind. A candidate difference is explained by
/// noise only when secondary differs at the same path *in the same way* (a value that varies does not explain
/// a field that disappears).
pub type PathKey = (String, DiffKind);

/// The differences of one exchange.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compared {
    /// Primary vs candidate.
    pub candidate: Vec<Difference>,
    /// Primary vs secondary: noise.
    pub noise: Vec<Difference>,
    /// Bodies that were not compared, and why (`too_large`, `decoded_too_large`, `json_too_deep`, ...), by the
    /// upstream whose body it was.
    pub body_skipped: Vec<(Target, BodySkip)>,
}

impl Compared {
    /// Where secondary differed.
    pub fn noise_keys(&self) -> BTreeSet<(&str, DiffKind)> {
        self.noise
            .iter()
            .map(|d| (d.generalised.as_str(), d.kind))
            .collect()
    }

    /// Where the candidate differed, each with its worst compatibility class.
    pub fn candidate_keys(&self) -> BTreeMap<(&str, DiffKind), Compat> {
        let mut keys: BTreeMap<(&str, DiffKind), Compat> = BTreeMap::new();
        for difference in &self.candidate {
            let compat = keys
                .entry((difference.generalised.as_str(), difference.kind))
                .or_insert(difference.compat);
            *compat = (*compat).max(difference.compat);
        }
        keys
    }

    /// A candidate difference is cancelled when secondary differs at the same generalised path, in the same
    /// way, in the same request.
    pub fn is_cancelled(&self, difference: &Difference) -> bool {
        self.noise.iter().any(|noise| {
            noise.kind == difference.kind && noise.generalised == difference.generalised
        })
    }

    /// The sorted set of places where the candidate differs and secondary does not: what the diff rate counts
    /// requests by.
    pub fn signature(&self) -> Vec<PathKey> {
        let noise = self.noise_keys();
        let keys: BTreeSet<(&str, DiffKind)> = self
            .candidate
            .iter()
            .map(|d| (d.generalised.as_str(), d.kind))
            .filter(|key| !noise.contains(key))
            .collect();
        keys.into_iter()
            .map(|(path, kind)| (path.to_string(), kind))
            .collect()
    }
}

/// An exchange with what the analysis made of it.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub exchange: Exchange,
    pub result: Result<Compared, SkipReason>,
    /// Each upstream's latency sample, by [`Target::index`], taken once here for the counts, the store and the
    /// metrics: the time to its response head, a timeout at its full wait, none for other failures.
    latency: [Option<Duration>; 3],
    /// For a gRPC call, its bodies' frames as they came (the exchange holds them decoded).
    pub frames: Option<Box<grpc::RawFrames>>,
}

impl Analysis {
    /// The latency sample of `target`'s answer, if it gave one.
    pub fn latency(&self, target: Target) -> Option<Duration> {
        self.latency[target.index()]
    }

    pub fn compared(&self) -> Option<&Compared> {
        self.result.as_ref().ok()
    }
}
