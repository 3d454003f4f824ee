//! Sample exchanges as stored: the request, the three outcomes (bodies decoded for reading) and the
//! differences, every secret redacted, as one JSON document.

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::analysis::decode;
use crate::analysis::diff::Difference;
use crate::analysis::{Analysis, Compared};
use crate::exchange::{CapturedBody, Exchange, Outcome, Target};
use crate::redact::Redactor;

/// A body as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum StoredBody {
    /// UTF-8 text (after undoing any Content-Encoding), secret JSON fields redacted.
    Text { text: String },
    /// Bytes that are not text, base64-encoded (decoded when the encoding could be undone).
    Base64 { data: String },
    /// Larger than `--max-body`: not kept.
    TooLarge { limit: u64 },
}

impl StoredBody {
    pub fn text(&self) -> Option<&str> {
        match self {
            StoredBody::Text { text } => Some(text),
            _ => None,
        }
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
}

impl SampleDocument {
    pub fn outcome(&self, target: Target) -> &StoredOutcome {
        match target {
            Target::Primary => &self.primary,
            Target::Secondary => &self.secondary,
            Target::Candidate => &self.candidate,
        }
    }

    /// The document of an analysed exchange, redacted; bodies are decoded up to `max_decoded` bytes.
    pub fn build(analysis: &Analysis, redactor: &Redactor, max_decoded: usize) -> Self {
        let exchange = &analysis.exchange;
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
                uri: exchange.request.uri.to_string(),
                version: format!("{:?}", exchange.request.version),
                headers: redactor.headers(&exchange.request.headers),
                body: stored_body(
                    &exchange.request.headers,
                    &exchange.request.body,
                    redactor,
                    max_decoded,
                ),
            },
            primary: stored_outcome(&exchange.primary, redactor, max_decoded),
            secondary: stored_outcome(&exchange.secondary, redactor, max_decoded),
            candidate: stored_outcome(&exchange.candidate, redactor, max_decoded),
            result,
            candidate_differences,
            noise_differences,
            body_skipped,
        }
    }
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

fn stored_outcome(outcome: &Outcome, redactor: &Redactor, max_decoded: usize) -> StoredOutcome {
    let elapsed_ms = outcome.elapsed.as_secs_f64() * 1000.0;
    match &outcome.result {
        Ok(response) => StoredOutcome {
            elapsed_ms,
            status: Some(response.status.as_u16()),
            headers: redactor.headers(&response.headers),
            body: Some(match &response.body {
                CapturedBody::Complete(bytes) => {
                    stored_body(&response.headers, bytes, redactor, max_decoded)
                }
                CapturedBody::TooLarge { limit } => StoredBody::TooLarge { limit: *limit },
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

/// A body made readable: encoding undone (when possible), text kept as text (with secret JSON fields
/// redacted), anything else base64.
fn stored_body(
    headers: &HeaderMap,
    raw: &Bytes,
    redactor: &Redactor,
    max_decoded: usize,
) -> StoredBody {
    let decoded =
        decode::decode(headers, raw, max_decoded).unwrap_or(std::borrow::Cow::Borrowed(&raw[..]));
    let bytes: Vec<u8> = redactor
        .json_body(&decoded)
        .unwrap_or_else(|| decoded.into_owned());
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => StoredBody::Text { text },
        Ok(text) => StoredBody::Base64 {
            data: base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
        },
        Err(error) => StoredBody::Base64 {
            data: base64::engine::general_purpose::STANDARD.encode(error.as_bytes()),
        },
    }
}
