//! The flags of comparison and judgement: how responses are compared (`AnalysisArgs`) and how counts become
//! verdicts (`VerdictArgs`), with their value parsers and conversions into settings.

use std::path::PathBuf;

use clap::Args;
use clap::builder::BoolishValueParser;
use http::HeaderName;

use crate::analysis::aggregate::VerdictSettings;
use crate::analysis::keys::KeySettings;
use crate::analysis::noise::Thresholds;
use crate::analysis::{AnalysisSettings, GrpcSchemaSettings};
use crate::values::{ByteSize, Span, parse_span};

/// How responses are compared.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Analysis")]
pub struct AnalysisArgs {
    /// Rules file (TOML): paths to ignore or treat as noise, numeric tolerances, unordered arrays, presence-only
    /// and type-only comparisons, changes accepted as intended, per endpoint; see the README.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_RULES")]
    pub rules: Option<PathBuf>,

    /// Largest response body after undoing its Content-Encoding; a larger one is not compared (counted).
    #[arg(long, value_name = "SIZE", env = "SHADOWDIFF_MAX_DECODED_BODY", default_value_t = ByteSize(AnalysisSettings::DEFAULT_MAX_DECODED_BODY as u64))]
    pub max_decoded_body: ByteSize,

    /// Treat `1` and `1.0` as different (by default JSON numbers of equal value are equal).
    #[arg(long, env = "SHADOWDIFF_STRICT_NUMBER_TYPES", value_parser = BoolishValueParser::new())]
    pub strict_number_types: bool,

    /// An object position (per endpoint) whose differences show more distinct keys than this is a map keyed by
    /// data (user names, e-mails): its keys become `{key}` in places (`body/users/{key}/name`); numbers, UUIDs
    /// and long hex keys are `{id}` at once.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_KEY_THRESHOLD",
          default_value_t = KeySettings::DEFAULT_THRESHOLD as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_threshold: u32,

    /// A response header never compared, besides the built-in per-connection ones (Date, Connection,
    /// Content-Length, ...); repeat the flag (or comma-separate) for several.
    #[arg(
        long = "exclude-header",
        value_name = "NAME",
        env = "SHADOWDIFF_EXCLUDE_HEADER",
        value_delimiter = ','
    )]
    pub exclude_headers: Vec<HeaderName>,

    /// Compare no response headers at all.
    #[arg(long, env = "SHADOWDIFF_EXCLUDE_ALL_HEADERS", value_parser = BoolishValueParser::new())]
    pub exclude_all_headers: bool,

    /// Time allowed for one line diff of a text body; past it the diff reports coarser regions.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_TEXT_DIFF_TIMEOUT",
          default_value_t = Span(AnalysisSettings::DEFAULT_TEXT_DIFF_TIMEOUT), value_parser = parse_span)]
    pub text_diff_timeout: Span,

    /// A FileDescriptorSet giving gRPC methods' message types (`protoc --include_imports --descriptor_set_out`,
    /// `buf build -o`); repeat the flag for several.
    #[arg(
        long = "grpc-descriptor-set",
        value_name = "FILE",
        env = "SHADOWDIFF_GRPC_DESCRIPTOR_SET",
        value_delimiter = ','
    )]
    pub grpc_descriptor_sets: Vec<PathBuf>,

    /// A `.proto` file compiled at start for gRPC methods' message types (no protoc needed); repeat the flag
    /// for several.
    #[arg(
        long = "grpc-proto",
        value_name = "FILE",
        env = "SHADOWDIFF_GRPC_PROTO",
        value_delimiter = ','
    )]
    pub grpc_protos: Vec<PathBuf>,

    /// Where the `--grpc-proto` files' imports are found (default: beside each file); repeat the flag for
    /// several.
    #[arg(
        long = "grpc-proto-path",
        value_name = "DIR",
        env = "SHADOWDIFF_GRPC_PROTO_PATH",
        value_delimiter = ','
    )]
    pub grpc_proto_paths: Vec<PathBuf>,

    /// Ask primary's gRPC server reflection (v1, else v1alpha) for the schema of each service the given schemas
    /// lack, once per service, the first time it is called.
    #[arg(long, env = "SHADOWDIFF_GRPC_REFLECTION", value_parser = BoolishValueParser::new())]
    pub grpc_reflection: bool,

    /// Exchanges analysed at once (default: the number of CPU cores).
    #[arg(long, value_name = "N", env = "SHADOWDIFF_ANALYSIS_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub analysis_workers: Option<u32>,

    /// Analysed exchanges waiting to be stored; when full, new ones are dropped and counted.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_ANALYSIS_QUEUE",
          default_value_t = AnalysisSettings::DEFAULT_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub analysis_queue: u32,
}

/// How counts become verdicts.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Verdicts")]
pub struct VerdictArgs {
    /// A path is a regression only if |raw - noise| / (raw + noise) exceeds this percentage (Diffy's relative
    /// threshold).
    #[arg(long, value_name = "PERCENT", env = "SHADOWDIFF_THRESHOLD_RELATIVE",
          default_value_t = Thresholds::DEFAULT_RELATIVE_PERCENT, value_parser = parse_percent)]
    pub threshold_relative: f64,

    /// ... and |raw - noise| / requests exceeds this percentage (Diffy's absolute threshold).
    #[arg(long, value_name = "PERCENT", env = "SHADOWDIFF_THRESHOLD_ABSOLUTE",
          default_value_t = Thresholds::DEFAULT_ABSOLUTE_PERCENT, value_parser = parse_percent)]
    pub threshold_absolute: f64,

    /// An endpoint has a latency regression when the candidate's p99 exceeds this many times secondary's, which
    /// runs the current code on the candidate's path (at least 100 samples each).
    #[arg(long, value_name = "FACTOR", env = "SHADOWDIFF_LATENCY_FACTOR",
          default_value_t = VerdictSettings::DEFAULT_LATENCY_FACTOR, value_parser = parse_factor)]
    pub latency_factor: f64,
}

/// A percentage from 0 to 100 (`20` or `20%`).
fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("`{text}` is out of range; expected 0 to 100"));
    }
    Ok(value)
}

/// A factor of 1 or more.
fn parse_factor(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !value.is_finite() || value < 1.0 {
        return Err(format!("`{text}` must be a number of 1 or more"));
    }
    Ok(value)
}

impl AnalysisArgs {
    pub fn settings(self) -> AnalysisSettings {
        AnalysisSettings {
            rules: self.rules,
            max_decoded_body: self.max_decoded_body.as_usize(),
            strict_number_types: self.strict_number_types,
            exclude_headers: self.exclude_headers,
            exclude_all_headers: self.exclude_all_headers,
            text_diff_timeout: self.text_diff_timeout.into(),
            workers: self.analysis_workers.map(|n| n as usize),
            queue: self.analysis_queue as usize,
            grpc: GrpcSchemaSettings {
                descriptor_sets: self.grpc_descriptor_sets,
                protos: self.grpc_protos,
                proto_paths: self.grpc_proto_paths,
                reflection: self.grpc_reflection,
            },
            keys: KeySettings {
                threshold: self.key_threshold as usize,
            },
        }
    }
}

impl VerdictArgs {
    pub fn settings(&self) -> VerdictSettings {
        VerdictSettings {
            thresholds: Thresholds::from_percent(self.threshold_relative, self.threshold_absolute),
            latency_factor: self.latency_factor,
        }
    }
}
