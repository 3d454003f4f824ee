//! The analysis settings (the rules file, limits, workers, gRPC schemas to load) and the `AnalysisConfig` made of them.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use crate::analysis::headers::HeaderOptions;
use crate::analysis::json::JsonOptions;
use crate::analysis::keys;
use crate::analysis::rules::{RuleSet, RulesError};
use crate::grpc::schema::{SchemaError, Schemas};

/// Everything that decides how exchanges are compared.
#[derive(Clone, Debug)]
pub struct AnalysisConfig {
    /// Largest body after undoing its Content-Encoding (`--max-decoded-body`).
    pub max_decoded_body: usize,
    pub json: JsonOptions,
    pub headers: HeaderOptions,
    /// Time allowed for one text line diff before it falls back to coarser regions.
    pub text_timeout: Duration,
    pub rules: RuleSet,
    /// The gRPC schemas calls are decoded by (`--grpc-descriptor-set`, `--grpc-proto`, and what reflection
    /// learns); a method none has is decoded by field number, or skipped when schemas were given at start.
    pub grpc: Schemas,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            max_decoded_body: AnalysisSettings::DEFAULT_MAX_DECODED_BODY,
            json: JsonOptions::default(),
            headers: HeaderOptions::default(),
            text_timeout: AnalysisSettings::DEFAULT_TEXT_DIFF_TIMEOUT,
            rules: RuleSet::default(),
            grpc: Schemas::default(),
        }
    }
}

/// How responses are compared, as settings: the rules file by its path, the workers and their queue.
#[derive(Clone, Debug)]
pub struct AnalysisSettings {
    /// Rules file (TOML), if any.
    pub rules: Option<PathBuf>,
    /// Largest response body after undoing its Content-Encoding.
    pub max_decoded_body: usize,
    /// `1` and `1.0` differ.
    pub strict_number_types: bool,
    /// Response headers never compared, besides the built-in per-connection ones.
    pub exclude_headers: Vec<HeaderName>,
    /// Compare no response headers at all.
    pub exclude_all_headers: bool,
    /// Time allowed for one line diff of a text body.
    pub text_diff_timeout: Duration,
    /// Exchanges analysed at once; `None` is one per CPU core.
    pub workers: Option<usize>,
    /// Analysed exchanges waiting to be stored; when full, new ones are dropped and counted.
    pub queue: usize,
    /// Where gRPC calls' message types come from.
    pub grpc: GrpcSchemaSettings,
    /// When an object's keys are data (`{key}`).
    pub keys: keys::KeySettings,
}

/// The gRPC schemas to load at start: descriptor sets, and `.proto` files compiled with their import paths.
#[derive(Clone, Debug, Default)]
pub struct GrpcSchemaSettings {
    /// FileDescriptorSets (`protoc --include_imports --descriptor_set_out`, `buf build -o`).
    pub descriptor_sets: Vec<PathBuf>,
    /// `.proto` files compiled at start.
    pub protos: Vec<PathBuf>,
    /// Where the `.proto` files' imports are found (beside each file when none is given).
    pub proto_paths: Vec<PathBuf>,
    /// Ask primary's server reflection for the services no schema has, once each.
    pub reflection: bool,
}

impl GrpcSchemaSettings {
    /// The schemas, merged; a file that cannot be read or compiled is named in the error.
    pub fn load(&self) -> Result<Schemas, SchemaError> {
        Schemas::load(&self.descriptor_sets, &self.protos, &self.proto_paths)
    }
}

impl AnalysisSettings {
    pub const DEFAULT_MAX_DECODED_BODY: usize = 32 << 20;
    pub const DEFAULT_TEXT_DIFF_TIMEOUT: Duration = Duration::from_millis(100);
    pub const DEFAULT_QUEUE: usize = 8192;

    /// Exchanges analysed at once.
    pub fn worker_count(&self) -> usize {
        crate::values::one_per_core(self.workers)
    }

    /// The comparison settings, with the rules file read.
    pub fn config(&self) -> Result<AnalysisConfig, RulesError> {
        Ok(AnalysisConfig {
            max_decoded_body: self.max_decoded_body,
            json: JsonOptions {
                strict_numbers: self.strict_number_types,
                ..JsonOptions::default()
            },
            headers: HeaderOptions::new(self.exclude_all_headers, &self.exclude_headers),
            text_timeout: self.text_diff_timeout,
            rules: RuleSet::load_optional(self.rules.as_deref())?,
            grpc: Schemas::default(),
        })
    }
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            rules: None,
            max_decoded_body: Self::DEFAULT_MAX_DECODED_BODY,
            strict_number_types: false,
            exclude_headers: Vec::new(),
            exclude_all_headers: false,
            text_diff_timeout: Self::DEFAULT_TEXT_DIFF_TIMEOUT,
            workers: None,
            queue: Self::DEFAULT_QUEUE,
            grpc: GrpcSchemaSettings::default(),
            keys: keys::KeySettings::default(),
        }
    }
}
