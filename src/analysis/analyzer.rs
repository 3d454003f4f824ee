//! The `Analyzer`: one exchange's three answers compared, primary's body decoded and parsed once for both sides.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Duration;

use crate::analysis::decode::ContentKind;
use crate::analysis::diff::{DiffKind, Difference};
use crate::analysis::graphql_answer;
use crate::analysis::keys::{KeyPositions, LearnedKeys};
use crate::analysis::rules::EndpointRules;
use crate::analysis::structured::{self, Side, StructureFailure};
use crate::analysis::tree::Node;
use crate::analysis::{
    Analysis, AnalysisConfig, BodySkip, Compared, SkipReason, decode, grpc, headers, json, text,
    tree,
};
use crate::budget::Charge;
use crate::exchange::{CapturedBody, Exchange, Outcome, Target, UpstreamError, UpstreamResponse};
use crate::graphql;

/// One side's comparison with primary.
struct SideComparison {
    differences: Vec<Difference>,
    /// The side gave no response.
    failed: bool,
    /// The side's body could not be read (too large, undecodable, too deep) while primary's could.
    body_unreadable: Option<BodySkip>,
    /// Primary's body could not be read.
    primary_unreadable: Option<BodySkip>,
}

/// For a gRPC call, why primary's and the other side's messages could not be decoded, if they could not.
#[derive(Copy, Clone, Debug)]
struct GrpcSides {
    primary: Option<BodySkip>,
    other: Option<BodySkip>,
}

/// What comparing two bodies gave.
enum BodyComparison {
    Compared(Vec<Difference>),
    /// Primary's body cannot be read: nothing to compare against.
    PrimaryUnreadable(BodySkip),
    /// The other side's body cannot be read: a difference in itself.
    OtherUnreadable(BodySkip, Difference),
}

/// Compares exchanges under one configuration.
#[derive(Clone, Debug, Default)]
pub struct Analyzer {
    config: AnalysisConfig,
    /// The object positions learned as maps in this run, read and taught by every comparison.
    keys: Arc<KeyPositions>,
}

impl Analyzer {
    pub fn new(config: AnalysisConfig) -> Self {
        Self {
            config,
            keys: Arc::default(),
        }
    }

    /// Learns maps' positions into `keys` (shared with the writer, which stores them).
    pub fn with_keys(mut self, keys: Arc<KeyPositions>) -> Self {
        self.keys = keys;
        self
    }

    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    /// Compares primary with candidate, and primary with secondary.
    pub fn analyse(&self, exchange: Exchange) -> Analysis {
        self.analyse_within(exchange, &mut Charge::none())
    }

    /// Compares as [`Analyzer::analyse`] does, taking the memory for decoded bodies, parse trees and text
    /// diffs from `scratch` as it goes; a body that does not fit is not compared (`memory_budget`). What
    /// `scratch` took is given back when the analysis is done.
    pub fn analyse_within(&self, mut exchange: Exchange, scratch: &mut Charge) -> Analysis {
        let held = scratch.bytes();
        let (call, frames) =
            if crate::grpc::is_grpc(&exchange.request.headers) && !exchange.over_budget() {
                let (undecoded, frames) = grpc::decode_exchange(
                    &mut exchange,
                    &self.config.grpc,
                    self.config.max_decoded_body,
                    scratch,
                );
                (Some(undecoded), Some(Box::new(frames)))
            } else {
                (None, None)
            };
        let result = self.compare_exchange(&exchange, scratch, call);
        scratch.shrink_to(held);
        let latency = Target::ALL.map(|target| latency_sample(exchange.outcome(target)));
        Analysis {
            exchange,
            result,
            latency,
            frames,
        }
    }

    /// `call` is, for a gRPC call, which sides' messages could not be decoded.
    fn compare_exchange(
        &self,
        exchange: &Exchange,
        scratch: &mut Charge,
        call: Option<grpc::Undecoded>,
    ) -> Result<Compared, SkipReason> {
        if exchange.over_budget() {
            return Err(SkipReason::MemoryBudget);
        }
        let primary = match &exchange.primary.result {
            Ok(response) => response,
            Err(UpstreamError::Abandoned) => return Err(SkipReason::Abandoned),
            Err(_) => return Err(SkipReason::PrimaryFailed),
        };
        for (outcome, shed) in [
            (&exchange.secondary, SkipReason::SecondaryShed),
            (&exchange.candidate, SkipReason::CandidateShed),
        ] {
            match outcome.error() {
                Some(UpstreamError::Shed) => return Err(shed),
                Some(UpstreamError::Abandoned) => return Err(SkipReason::Abandoned),
                _ => {}
            }
        }
        let rules = self.config.rules.for_endpoint(&exchange.endpoint);
        // Most endpoints learn no map: their walks read an empty set, which allocates nothing.
        let snapshot = self.keys.learned(&exchange.endpoint);
        let no_keys = LearnedKeys::default();
        let learned = snapshot.as_deref().unwrap_or(&no_keys);
        let primary_decoded = OnceCell::new();
        let mut reference = Reference::new(primary, scratch, &primary_decoded);
        let side = |target: Target| {
            call.map(|undecoded| GrpcSides {
                primary: undecoded[Target::Primary.index()],
                other: undecoded[target.index()],
            })
        };
        let mut candidate = self.compare(
            &mut reference,
            &exchange.candidate,
            (&rules, learned),
            side(Target::Candidate),
        );
        let mut noise = self.compare(
            &mut reference,
            &exchange.secondary,
            (&rules, learned),
            side(Target::Secondary),
        );

        if graphql::is_graphql_endpoint(&exchange.endpoint) {
            let schema = exchange.endpoint == graphql::SCHEMA_ENDPOINT;
            for differences in [&mut candidate.differences, &mut noise.differences] {
                differences.retain(graphql_answer::is_compared);
                if !schema {
                    continue;
                }
                for difference in differences.iter_mut() {
                    if let Some(compat) = graphql_answer::schema_compat(difference) {
                        difference.compat = compat;
                    }
                }
            }
        }
        // Without secondary's answer (or body), what the candidate did cannot be told apart from noise: only
        // the outcome itself (an error, or none) is compared then.
        if noise.failed {
            candidate.differences.retain(|d| d.path == "error");
        } else if noise.body_unreadable.is_some() {
            candidate
                .differences
                .retain(|d| !d.path.starts_with("body"));
        }
        text::limit_regions(&mut candidate.differences, &mut noise.differences);
        self.keys.settle(
            &exchange.endpoint,
            [&mut candidate.differences, &mut noise.differences],
        );

        let mut body_skipped = Vec::new();
        if let Some(reason) = candidate.primary_unreadable.or(noise.primary_unreadable) {
            body_skipped.push((Target::Primary, reason));
        }
        body_skipped.extend(
            noise
                .body_unreadable
                .map(|reason| (Target::Secondary, reason)),
        );
        body_skipped.extend(
            candidate
                .body_unreadable
                .map(|reason| (Target::Candidate, reason)),
        );
        Ok(Compared {
            candidate: candidate.differences,
            noise: noise.differences,
            body_skipped,
        })
    }

    /// Differences between primary (the reference) and another outcome; `grpc` for a gRPC call, whose status
    /// is its `grpc-status` and whose bodies are its decoded messages.
    fn compare(
        &self,
        reference: &mut Reference<'_>,
        other: &Outcome,
        (rules, keys): (&EndpointRules<'_>, &LearnedKeys),
        grpc: Option<GrpcSides>,
    ) -> SideComparison {
        let mut side = SideComparison {
            differences: Vec::new(),
            failed: false,
            body_unreadable: None,
            primary_unreadable: None,
        };
        let other = match &other.result {
            Ok(response) => response,
            Err(error) => {
                side.failed = true;
                if rules.is_empty() || !rules.ignores("error") {
                    side.differences.push(Difference::at(
                        "error",
                        DiffKind::ValueChanged,
                        Some("response".to_string()),
                        Some(error.kind().to_string()),
                    ));
                }
                return side;
            }
        };
        if grpc.is_some() {
            // The call's outcome is its gRPC status (a failed call is still HTTP 200); the HTTP status stands
            // in when a whole answer carries none (a proxy's 502). A body not kept whole was not read to its
            // trailers: its status is unknown, and not compared.
            let status = |response: &UpstreamResponse| match grpc::status_name(&response.headers) {
                Some(name) => Some(name),
                None if matches!(response.body, CapturedBody::Complete(_)) => {
                    Some(response.status.as_u16().to_string())
                }
                None => None,
            };
            if let (Some(primary), Some(other)) = (status(reference.response), status(other)) {
                side.differences
                    .extend(headers::diff_status_text(primary, other, rules));
            }
        } else {
            side.differences.extend(headers::diff_status(
                reference.response.status,
                other.status,
                rules,
            ));
        }
        let mut header_differences = headers::diff_headers(
            &reference.response.headers,
            &other.headers,
            &self.config.headers,
            rules,
        );
        if grpc.is_some() {
            header_differences.retain(|difference| difference.path != "header/grpc-status");
        }
        side.differences.extend(header_differences);
        if rules.is_empty() || !rules.ignores("body") {
            let comparison = match grpc {
                Some(GrpcSides {
                    primary: Some(reason),
                    ..
                }) => BodyComparison::PrimaryUnreadable(reason),
                Some(GrpcSides {
                    other: Some(reason),
                    ..
                }) => unreadable("grpc", reason),
                _ => self.compare_bodies(reference, other, rules, keys),
            };
            match comparison {
                BodyComparison::Compared(found) => side.differences.extend(found),
                BodyComparison::PrimaryUnreadable(reason) => side.primary_unreadable = Some(reason),
                BodyComparison::OtherUnreadable(reason, difference) => {
                    side.body_unreadable = Some(reason);
                    side.differences.push(difference);
                }
            }
        }
        side
    }

    fn compare_bodies(
        &self,
        reference: &mut Reference<'_>,
        other: &UpstreamResponse,
        rules: &EndpointRules<'_>,
        keys: &LearnedKeys,
    ) -> BodyComparison {
        let limit = self.config.max_decoded_body;
        let CapturedBody::Complete(primary_raw) = &reference.response.body else {
            return BodyComparison::PrimaryUnreadable(BodySkip::TooLarge);
        };
        let CapturedBody::Complete(other_raw) = &other.body else {
            return match reference.decoded(limit) {
                Ok((_, kind)) => unreadable(kind.as_str(), BodySkip::TooLarge),
                Err(reason) => BodyComparison::PrimaryUnreadable(reason),
            };
        };
        // Byte-identical bodies under the same encoding and type are equal: the common case costs no parsing.
        if primary_raw == other_raw
            && same_header(
                &reference.response.headers,
                &other.headers,
                http::header::CONTENT_ENCODING,
            )
            && same_header(
                &reference.response.headers,
                &other.headers,
                http::header::CONTENT_TYPE,
            )
        {
            return BodyComparison::Compared(Vec::new());
        }
        let primary_kind = match reference.decoded(limit) {
            Ok((_, kind)) => kind,
            Err(reason) => return BodyComparison::PrimaryUnreadable(reason),
        };
        let other_bytes = match decode_within(&other.headers, other_raw, limit, reference.scratch) {
            Ok(bytes) => bytes,
            Err(reason) => return unreadable(primary_kind.as_str(), reason),
        };
        // Bodies that decode to the same bytes under the same media type are equal whatever their encodings
        // (gzip at another level, brotli against none): nothing to sniff or parse.
        let decoded_equal = reference
            .decoded(limit)
            .is_ok_and(|(primary_bytes, _)| primary_bytes == &other_bytes[..]);
        if decoded_equal && same_media_type(&reference.response.headers, &other.headers) {
            return BodyComparison::Compared(Vec::new());
        }
        let other_kind = decode::content_kind(&other.headers, &other_bytes);
        let timeout = self.config.text_timeout;

        let found = match (primary_kind, other_kind) {
            (ContentKind::Empty, ContentKind::Empty) => Vec::new(),
            (ContentKind::Json, ContentKind::Json) => {
                let other_json = parse_json_within(&other_bytes, reference.scratch);
                let options = self.config.json;
                match (reference.parsed(limit), other_json) {
                    (Err(JsonFailure::TooDeep), _) => {
                        return BodyComparison::PrimaryUnreadable(BodySkip::JsonTooDeep);
                    }
                    (Err(JsonFailure::OverBudget), _) => {
                        return BodyComparison::PrimaryUnreadable(BodySkip::MemoryBudget);
                    }
                    (_, Err(JsonFailure::TooDeep)) => {
                        return unreadable("json", BodySkip::JsonTooDeep);
                    }
                    (_, Err(JsonFailure::OverBudget)) => {
                        return unreadable("json", BodySkip::MemoryBudget);
                    }
                    (Ok(primary_json), Ok(other_json)) => {
                        json::diff_keyed(primary_json, &other_json, options, rules, keys, "body")
                            .iter()
                            .map(json::JsonChange::to_difference)
                            .collect()
                    }
                    (Ok(_), Err(JsonFailure::Invalid)) => {
                        vec![body_kind_change("json", "invalid json")]
                    }
                    (Err(JsonFailure::Invalid), Ok(_)) => {
                        vec![body_kind_change("invalid json", "json")]
                    }
                    (Err(JsonFailure::Invalid), Err(JsonFailure::Invalid)) => {
                        diff_text(reference, &other_bytes, false, limit, timeout)
                    }
                }
            }
            (kind @ (ContentKind::Xml | ContentKind::Csv | ContentKind::Ndjson), other_kind)
                if kind == other_kind =>
            {
                let Ok((primary_bytes, _)) = reference.decoded(limit) else {
                    return BodyComparison::PrimaryUnreadable(BodySkip::TooLarge);
                };
                let format = kind.as_str();
                match structured::parse_pair(kind, primary_bytes, &other_bytes, reference.scratch) {
                    Ok((primary_tree, other_tree)) => json::diff_keyed(
                        &primary_tree,
                        &other_tree,
                        self.config.json,
                        rules,
                        keys,
                        "body",
                    )
                    .iter()
                    .map(json::JsonChange::to_difference)
                    .collect(),
                    Err((Side::Primary, StructureFailure::Skipped(reason))) => {
                        return BodyComparison::PrimaryUnreadable(reason);
                    }
                    Err((Side::Other, StructureFailure::Skipped(reason))) => {
                        return unreadable(format, reason);
                    }
                    Err((side, StructureFailure::Invalid)) => {
                        // Read alone, the other side tells whether only one of them is invalid.
                        let (primary_valid, other_valid) = match side {
                            Side::Primary => (
                                false,
                                structured::parse_one(kind, &other_bytes, reference.scratch),
                            ),
                            Side::Other => (true, false),
                        };
                        let invalid = format!("invalid {format}");
                        match (primary_valid, other_valid) {
                            (true, _) => vec![body_kind_change(format, &invalid)],
                            (false, true) => vec![body_kind_change(&invalid, format)],
                            (false, false) => {
                                diff_text(reference, &other_bytes, false, limit, timeout)
                            }
                        }
                    }
                }
            }
            (ContentKind::Html, ContentKind::Html) => {
                diff_text(reference, &other_bytes, true, limit, timeout)
            }
            (ContentKind::Text | ContentKind::Html, ContentKind::Text | ContentKind::Html) => {
                diff_text(reference, &other_bytes, false, limit, timeout)
            }
            (ContentKind::Binary, ContentKind::Binary) => match reference.decoded(limit) {
                Ok((primary_bytes, _)) => text::diff_binary(primary_bytes, &other_bytes)
                    .into_iter()
                    .collect(),
                Err(reason) => return BodyComparison::PrimaryUnreadable(reason),
            },
            (primary_kind, other_kind) => {
                vec![body_kind_change(primary_kind.as_str(), other_kind.as_str())]
            }
        };
        BodyComparison::Compared(found)
    }
}

/// Line differences of two textual bodies (HTML normalised first when `html`). Bodies that are not both UTF-8
/// are compared as bytes: lossy decoding would make bodies that differ only in their invalid bytes look equal.
fn diff_text(
    reference: &mut Reference<'_>,
    other: &[u8],
    html: bool,
    limit: usize,
    timeout: Duration,
) -> Vec<Difference> {
    let primary_len = match reference.decoded(limit) {
        Ok((primary, _)) => primary.len(),
        // Primary's body was decoded before any comparison reaches here.
        Err(_) => return Vec::new(),
    };
    // A line diff holds both texts again (primary's as text, normalised HTML) and its tokens.
    if !reference.scratch.try_grow(3 * (primary_len + other.len())) {
        return vec![body_kind_change("text", BodySkip::MemoryBudget.as_str())];
    }
    let Ok((primary, _)) = reference.decoded(limit) else {
        return Vec::new();
    };
    let (Ok(_), Ok(other_text)) = (std::str::from_utf8(primary), std::str::from_utf8(other)) else {
        return text::diff_binary(primary, other).into_iter().collect();
    };
    if html {
        text::diff_lines(
            reference.normalised_html(limit),
            &text::normalise_html(other_text),
            timeout,
        )
    } else {
        text::diff_lines(reference.text(limit), other_text, timeout)
    }
}

/// The other side's body cannot be read where primary's can: that is a difference of its own.
fn unreadable(primary_kind: &str, reason: BodySkip) -> BodyComparison {
    BodyComparison::OtherUnreadable(reason, body_kind_change(primary_kind, reason.as_str()))
}

fn body_kind_change(primary: &str, other: &str) -> Difference {
    Difference::at(
        "body",
        DiffKind::TypeChanged,
        Some(primary.to_string()),
        Some(other.to_string()),
    )
}

fn same_header(a: &http::HeaderMap, b: &http::HeaderMap, name: http::HeaderName) -> bool {
    a.get_all(&name).iter().eq(b.get_all(&name).iter())
}

/// Whether both responses declare the same media type (parameters such as `charset` aside), or neither does:
/// what [`decode::content_kind`] reads of the headers, so equal bytes are then of the same kind.
fn same_media_type(a: &http::HeaderMap, b: &http::HeaderMap) -> bool {
    fn media_type(headers: &http::HeaderMap) -> Option<&[u8]> {
        headers.get(http::header::CONTENT_TYPE).map(|value| {
            let bytes = value.as_bytes();
            let end = bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len());
            bytes[..end].trim_ascii()
        })
    }
    match (media_type(a), media_type(b)) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

/// Why a body that claims to be JSON could not be read as JSON.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum JsonFailure {
    /// Nested deeper than the parser's limit (128 levels).
    TooDeep,
    /// Not valid JSON.
    Invalid,
    /// Its parse tree would not fit the memory budget.
    OverBudget,
}

/// Parses JSON after taking what its tree may hold from `scratch`.
fn parse_json_within<'b>(bytes: &'b [u8], scratch: &mut Charge) -> Result<Node<'b>, JsonFailure> {
    if !scratch.try_grow(json::tree_bytes(bytes)) {
        return Err(JsonFailure::OverBudget);
    }
    parse_json(bytes)
}

/// A body with its encodings undone, each buffer decoding allocates taken from `scratch` first (a body without
/// encoding is borrowed and costs nothing); `Err` names why not (`memory_budget` when `scratch` had no room).
fn decode_within<'a>(
    headers: &http::HeaderMap,
    raw: &'a [u8],
    limit: usize,
    scratch: &mut Charge,
) -> Result<Cow<'a, [u8]>, BodySkip> {
    let held = scratch.bytes();
    let decoded = decode::decode_within(headers, raw, limit, &mut |bytes| scratch.try_grow(bytes));
    match decoded {
        Ok(bytes) => {
            // Buffers of earlier encodings are gone: what stays is the decoded body.
            let kept = match &bytes {
                Cow::Owned(owned) => owned.capacity(),
                Cow::Borrowed(_) => 0,
            };
            scratch.shrink_to(held + kept);
            Ok(bytes)
        }
        Err(error) => {
            scratch.shrink_to(held);
            Err(error.reason())
        }
    }
}

fn parse_json(bytes: &[u8]) -> Result<Node<'_>, JsonFailure> {
    tree::parse(bytes).map_err(|error| {
        if error.to_string().contains("recursion limit") {
            JsonFailure::TooDeep
        } else {
            JsonFailure::Invalid
        }
    })
}

/// A body with its encoding undone, and what it holds; or why it could not be.
type Decoded<'a> = Result<(Cow<'a, [u8]>, ContentKind), BodySkip>;

/// Primary's response, decoded and parsed at most once for both comparisons, and the memory the analysis
/// takes as it goes. The decoded body lives in a cell of the caller's ([`Reference::new`]), so that the parse
/// tree, which borrows its strings from it, can live here beside it.
struct Reference<'r> {
    response: &'r UpstreamResponse,
    scratch: &'r mut Charge,
    decoded: &'r OnceCell<Decoded<'r>>,
    parsed: Option<Result<Node<'r>, JsonFailure>>,
    text: Option<String>,
    html: Option<String>,
}

impl<'r> Reference<'r> {
    fn new(
        response: &'r UpstreamResponse,
        scratch: &'r mut Charge,
        decoded: &'r OnceCell<Decoded<'r>>,
    ) -> Self {
        Self {
            response,
            scratch,
            decoded,
            parsed: None,
            text: None,
            html: None,
        }
    }

    fn decoded(&mut self, limit: usize) -> Result<(&'r [u8], ContentKind), BodySkip> {
        let response = self.response;
        let scratch = &mut *self.scratch;
        let decoded = self.decoded.get_or_init(|| {
            let raw: &'r [u8] = response.body.bytes().map_or(&[], |bytes| &bytes[..]);
            decode_within(&response.headers, raw, limit, scratch).map(|bytes| {
                let kind = decode::content_kind(&response.headers, &bytes);
                (bytes, kind)
            })
        });
        match decoded {
            Ok((bytes, kind)) => Ok((&bytes[..], *kind)),
            Err(reason) => Err(*reason),
        }
    }

    fn parsed(&mut self, limit: usize) -> Result<&Node<'r>, JsonFailure> {
        if self.parsed.is_none() {
            let parsed = match self.decoded(limit) {
                Ok((bytes, _)) => parse_json_within(bytes, self.scratch),
                Err(_) => Err(JsonFailure::Invalid),
            };
            self.parsed = Some(parsed);
        }
        match self.parsed.as_ref() {
            Some(Ok(node)) => Ok(node),
            Some(Err(failure)) => Err(*failure),
            None => Err(JsonFailure::Invalid),
        }
    }

    fn text(&mut self, limit: usize) -> &str {
        if self.text.is_none() {
            let text = self
                .decoded(limit)
                .map(|(bytes, _)| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default();
            self.text = Some(text);
        }
        self.text.as_deref().unwrap_or_default()
    }

    fn normalised_html(&mut self, limit: usize) -> &str {
        if self.html.is_none() {
            let html = text::normalise_html(self.text(limit));
            self.html = Some(html);
        }
        self.html.as_deref().unwrap_or_default()
    }
}

/// The latency an outcome contributes: its time to a response head, or a timeout's full wait (leaving timeouts
/// out would make a slow upstream look fast); nothing for other failures.
fn latency_sample(outcome: &Outcome) -> Option<Duration> {
    match &outcome.result {
        Ok(_) | Err(UpstreamError::Timeout(_)) => Some(outcome.elapsed),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests;
