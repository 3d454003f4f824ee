//! Sample exchanges as stored: the request, the three outcomes (bodies decoded for reading) and the
//! differences, every secret redacted, as one JSON document.

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::analysis::decode;
use crate::analysis::diff::Difference;
use crate::analysis::grpc::RawFrames;
use crate::analysis::rewrite::Rewrites;
use crate::analysis::{Analysis, Compared};
use crate::exchange::{CapturedBody, Exchange, Outcome, Target};
use crate::redact::{Redactor, UNDECODABLE};

/// A body as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum StoredBody {
    /// UTF-8 text (after undoing any Content-Encoding), secret JSON fields redacted; `truncated` when only its
    /// beginning was kept (`--sample-body-limit`).
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    /// Bytes that are not text, base64-encoded (decoded when the encoding could be undone).
    Base64 {
        data: String,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    /// Larger than `--max-body`: not kept.
    TooLarge { limit: u64 },
    /// Not kept: holding it would have gone over `--memory-budget`.
    OverBudget,
    /// Kept in the document's sealed part (`--sample-recipient`).
    Sealed,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl StoredBody {
    pub fn text(&self) -> Option<&str> {
        match self {
            StoredBody::Text { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether only the beginning of the body was kept.
    pub fn is_truncated(&self) -> bool {
        matches!(
            self,
            StoredBody::Text {
                truncated: true,
                ..
            } | StoredBody::Base64 {
                truncated: true,
                ..
            }
        )
    }
}

/// How much of an exchange a sample keeps.
#[derive(Copy, Clone, Debug)]
pub struct SampleLimits {
    /// Most bytes of a body decoded (and parsed, for redaction) to store it; a body that decodes to more is
    /// stored by its beginning.
    pub max_decoded: usize,
    /// Most bytes of each body stored (`--sample-body-limit`); the rest is cut and the body marked truncated.
    pub body_limit: usize,
}

impl SampleLimits {
    pub const DEFAULT_BODY_LIMIT: usize = 64 << 10;

    /// Decoding (and redacting) a body whole costs this much at most, past which its beginning is shown: a few
    /// times what is kept, so that a body a little over the limit is still redacted field by field.
    pub fn new(max_decoded: usize, body_limit: usize) -> Self {
        Self {
            max_decoded: max_decoded.min(body_limit.saturating_mul(16).max(1 << 20)),
            body_limit,
        }
    }
}

impl Default for SampleLimits {
    fn default() -> Self {
        Self::new(32 << 20, Self::DEFAULT_BODY_LIMIT)
    }
}

/// The request as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: StoredBody,
}

/// One upstream's outcome as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub elapsed_ms: f64,
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Option<StoredBody>,
    /// The kind of failure (`timeout`, `connect`, ...), when there was no response.
    pub error: Option<String>,
    pub error_detail: Option<String>,
}

/// A candidate difference with whether noise cancelled it in this request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredDifference {
    #[serde(flatten)]
    pub difference: Difference,
    pub cancelled: bool,
}

/// One sample exchange, whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleDocument {
    pub id: String,
    /// The run's label (filled in when read back; not part of what is written).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run: String,
    pub endpoint: String,
    pub started_at_ms: i64,
    pub request: StoredRequest,
    pub primary: StoredOutcome,
    pub secondary: StoredOutcome,
    pub candidate: StoredOutcome,
    /// `compared`, or why not (`primary_failed`, `candidate_shed`, ...).
    pub result: String,
    pub candidate_differences: Vec<StoredDifference>,
    pub noise_differences: Vec<Difference>,
    pub body_skipped: Vec<(String, String)>,
    /// What secondary or candidate was sent instead of the caller's request (the rules file's `[[rewrite]]`),
    /// redacted as the request is; empty when every upstream was sent the caller's request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<SentRequest>,
    /// A gRPC call's bodies as they came, framed and base64, by side (`request`, `primary`, `secondary`,
    /// `candidate`): only those in whose decoded messages redaction found nothing to hide, and none longer
    /// than the sample body limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<(String, String)>,
    /// With `--sample-recipient`: the values above, sealed (`store::sealed`); where they were, a mark. None
    /// once opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Why a sealed document is shown sealed (no identity, or another's); said when read, never stored.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub unopened: Option<String>,
    /// Whether it was read sealed and opened (its request's feature values then count as tokens).
    #[serde(skip)]
    pub opened: bool,
}

/// The request one upstream was sent, when a rewrite changed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentRequest {
    pub target: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl SampleDocument {
    pub fn outcome(&self, target: Target) -> &StoredOutcome {
        match target {
            Target::Primary => &self.primary,
            Target::Secondary => &self.secondary,
            Target::Candidate => &self.candidate,
        }
    }

    /// The document of an analysed exchange, redacted, each body cut to `limits.body_limit` bytes.
    pub fn build(
        analysis: &Analysis,
        redactor: &Redactor,
        limits: SampleLimits,
        rewrites: &Rewrites,
    ) -> Self {
        let exchange = &analysis.exchange;
        // A gRPC call's decoded bodies name fields by their JSON names: secret proto names count too.
        let renamed = analysis
            .frames
            .as_deref()
            .and_then(|frames| redactor.with_renamed(&frames.renamed));
        let redactor = renamed.as_ref().unwrap_or(redactor);
        let (candidate_differences, noise_differences, body_skipped) = match &analysis.result {
            Ok(compared) => redacted_differences(compared, redactor),
            Err(_) => (Vec::new(), Vec::new(), Vec::new()),
        };
        let result = match &analysis.result {
            Ok(_) => "compared".to_string(),
            Err(reason) => reason.as_str().to_string(),
        };
        SampleDocument {
            id: exchange.id.to_string(),
            run: String::new(),
            endpoint: exchange.endpoint.clone(),
            started_at_ms: started_at_ms(exchange),
            request: StoredRequest {
                method: exchange.request.method.to_string(),
                uri: redactor.uri(&exchange.request.uri.to_string()).into_owned(),
                version: format!("{:?}", exchange.request.version),
                headers: redactor.headers(&exchange.request.headers),
                body: stored_body(
                    &exchange.request.headers,
                    &exchange.request.body,
                    redactor,
                    limits,
                ),
            },
            primary: stored_outcome(&exchange.primary, redactor, limits),
            secondary: stored_outcome(&exchange.secondary, redactor, limits),
            candidate: stored_outcome(&exchange.candidate, redactor, limits),
            result,
            candidate_differences,
            noise_differences,
            body_skipped,
            sent: sent_requests(&exchange.request, redactor, rewrites),
            frames: analysis
                .frames
                .as_deref()
                .map(|frames| kept_frames(exchange, frames, redactor, limits))
                .unwrap_or_default(),
            sealed: None,
            unopened: None,
            opened: false,
        }
    }
}

/// The frames of a gRPC call that may be kept: a body's frames hold everything its decoded messages hold, so
/// they are kept only when redaction leaves those messages as they are.
fn kept_frames(
    exchange: &Exchange,
    frames: &RawFrames,
    redactor: &Redactor,
    limits: SampleLimits,
) -> Vec<(String, String)> {
    let mut sides = vec![(
        "request",
        &exchange.request.headers,
        &exchange.request.body,
        frames.request.as_ref(),
    )];
    for target in Target::ALL {
        if let Ok(response) = &exchange.outcome(target).result
            && let CapturedBody::Complete(decoded) = &response.body
        {
            sides.push((
                target.as_str(),
                &response.headers,
                decoded,
                frames.responses[target.index()].as_ref(),
            ));
        }
    }
    sides
        .into_iter()
        .filter_map(|(side, headers, decoded, raw)| {
            let raw = raw.filter(|raw| !raw.is_empty())?;
            (raw.len() <= limits.body_limit && redactor.body(headers, decoded).is_none()).then(
                || {
                    (
                        side.to_string(),
                        base64::engine::general_purpose::STANDARD.encode(raw),
                    )
                },
            )
        })
        .collect()
}

type RedactedDifferences = (
    Vec<StoredDifference>,
    Vec<Difference>,
    Vec<(String, String)>,
);

fn redacted_differences(compared: &Compared, redactor: &Redactor) -> RedactedDifferences {
    let candidate = compared
        .candidate
        .iter()
        .map(|difference| {
            let cancelled = compared.is_cancelled(difference);
            let mut difference = difference.clone();
            redactor.difference(&mut difference);
            StoredDifference {
                difference,
                cancelled,
            }
        })
        .collect();
    let noise = compared
        .noise
        .iter()
        .map(|difference| {
            let mut difference = difference.clone();
            redactor.difference(&mut difference);
            difference
        })
        .collect();
    let skipped = compared
        .body_skipped
        .iter()
        .map(|(target, reason)| (target.to_string(), reason.to_string()))
        .collect();
    (candidate, noise, skipped)
}

/// Milliseconds since the Unix epoch at which the exchange started.
pub fn started_at_ms(exchange: &Exchange) -> i64 {
    exchange
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn stored_outcome(outcome: &Outcome, redactor: &Redactor, limits: SampleLimits) -> StoredOutcome {
    let elapsed_ms = outcome.elapsed.as_secs_f64() * 1000.0;
    match &outcome.result {
        Ok(response) => StoredOutcome {
            elapsed_ms,
            status: Some(response.status.as_u16()),
            headers: redactor.headers(&response.headers),
            body: Some(match &response.body {
                CapturedBody::Complete(bytes) => {
                    stored_body(&response.headers, bytes, redactor, limits)
                }
                CapturedBody::TooLarge { limit } => StoredBody::TooLarge { limit: *limit },
                CapturedBody::OverBudget => StoredBody::OverBudget,
            }),
            error: None,
            error_detail: None,
        },
        Err(error) => StoredOutcome {
            elapsed_ms,
            status: None,
            headers: Vec::new(),
            body: None,
            error: Some(error.kind().to_string()),
            error_detail: Some(error.to_string()),
        },
    }
}

/// Bytes past the sample body limit searched for personal data in a body cut short: longer than the values
/// found (a JWT is the longest), so none is kept in part.
const VALUE_MARGIN: usize = 4 << 10;

/// A body made readable: encoding undone (when possible), text kept as text (with secret JSON fields
/// redacted), anything else base64; at most `limits.body_limit` bytes of it, marked truncated when cut.
fn stored_body(
    headers: &HeaderMap,
    raw: &Bytes,
    redactor: &Redactor,
    limits: SampleLimits,
) -> StoredBody {
    // A body whose encoding cannot be undone cannot be searched for secrets: it is not kept.
    let Ok((decoded, complete)) = decode::decode_prefix(headers, raw, limits.max_decoded) else {
        return StoredBody::Text {
            text: String::from_utf8_lossy(UNDECODABLE).into_owned(),
            truncated: false,
        };
    };
    let mut truncated = !complete;
    let mut bytes: Vec<u8> = if complete {
        redactor
            .body(headers, &decoded)
            .unwrap_or_else(|| decoded.into_owned())
    } else {
        decoded.into_owned()
    };
    if !complete {
        // A beginning cannot be parsed to redact field by field: it is kept only when it names no secret field,
        // its personal data replaced, searched a little past the cut so that a value across it is found whole.
        // (A body decoded whole was redacted before it was cut.)
        bytes.truncate(limits.body_limit.saturating_add(VALUE_MARGIN));
        if let Some(clean) = redactor.partial_body(&bytes) {
            bytes = clean;
        }
    }
    if bytes.len() > limits.body_limit {
        bytes.truncate(limits.body_limit);
        truncated = true;
    }
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => StoredBody::Text { text, truncated },
        Ok(text) => StoredBody::Base64 {
            data: base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            truncated,
        },
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let bytes = error.into_bytes();
            // A cut through a multi-byte character leaves an incomplete one at the end: drop it, keep the text.
            if truncated && valid + 4 > bytes.len() && !bytes[..valid].contains(&0) {
                StoredBody::Text {
                    text: String::from_utf8_lossy(&bytes[..valid]).into_owned(),
                    truncated,
                }
            } else {
                StoredBody::Base64 {
                    data: base64::engine::general_purpose::STANDARD.encode(&bytes),
                    truncated,
                }
            }
        }
    }
}

/// The requests rewrites made of the caller's, as secondary and candidate were sent them (the rewrites are the
/// process's own, fixed at start, so the same ones that were applied), redacted.
fn sent_requests(
    request: &crate::exchange::RecordedRequest,
    redactor: &Redactor,
    rewrites: &Rewrites,
) -> Vec<SentRequest> {
    if rewrites.is_empty() {
        return Vec::new();
    }
    [Target::Secondary, Target::Candidate]
        .into_iter()
        .filter_map(|target| {
            let mut uri = request.uri.clone();
            let mut headers = request.headers.clone();
            rewrites
                .apply(target, &mut uri, &mut headers)
                .then(|| SentRequest {
                    target: target.as_str().to_string(),
                    uri: redactor.uri(&uri.to_string()).into_owned(),
                    headers: redactor.headers(&headers),
                })
        })
        .collect()
}
