//! gRPC exchanges made comparable: each body becomes the JSON array of its decoded messages (so the JSON
//! engine, rules, noise and redaction see fields by name; its content type is left as it came, and the JSON is
//! recognised by its shape), and a side whose messages cannot be read is a counted skip.

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;

use crate::analysis::BodySkip;
use crate::analysis::decode::media_type;
use crate::budget::Charge;
use crate::exchange::{CapturedBody, Exchange, Target};
use crate::grpc::decode::{Direction, charge_decoding, messages_json};
use crate::grpc::frame::{self, FrameError};
use crate::grpc::schema::Schemas;
use crate::grpc::status::Status;

/// Why each side's body (by [`Target::index`]) was left undecoded, if it was.
pub type Undecoded = [Option<BodySkip>; 3];

/// A call's bodies as they came, framed, for those that were decoded: the frames stay downloadable from a sample
/// when redaction has nothing to hide in them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawFrames {
    pub request: Option<Bytes>,
    /// By [`Target::index`].
    pub responses: [Option<Bytes>; 3],
    /// The fields of the method's messages whose JSON name (what the decoded bodies carry) is not their proto
    /// name: redaction looks for secret fields by both.
    pub renamed: std::sync::Arc<[crate::grpc::renamed::Renamed]>,
}

/// Decodes the request and the three responses of a gRPC call in place (the frames handed back), charging the
/// decoded bodies to the exchange's own charge and the work of decoding them to `scratch`. A request that is not a gRPC call (by its content type), or one in a
/// codec other than protobuf, is left as it is.
pub fn decode_exchange(
    exchange: &mut Exchange,
    schemas: &Schemas,
    max_decoded: usize,
    scratch: &mut Charge,
) -> (Undecoded, RawFrames) {
    let mut undecoded = [None; 3];
    let mut raw = RawFrames::default();
    if !is_protobuf_call(&exchange.request.headers) {
        return (undecoded, raw);
    }
    let path = exchange.request.uri.path().to_string();
    if schemas.were_given() && schemas.method(&path).is_none() {
        // Schemas were given and none has this method: decoding by field number would compare a call nobody
        // described, so its bodies are skipped (its status and headers are still compared).
        return ([Some(BodySkip::GrpcUnknownMethod); 3], raw);
    }
    if let Some(method) = schemas.method(&path) {
        raw.renamed = schemas.renamed_fields(&method);
    }
    let mut charge = std::mem::take(&mut exchange.charge);
    let request = &mut exchange.request;
    if let Ok(decoded) = decode_body(
        schemas,
        &path,
        Direction::Request,
        &request.body,
        &request.headers,
        max_decoded,
        (&mut charge, scratch),
    ) {
        raw.request = Some(std::mem::replace(&mut request.body, decoded));
    }
    for target in Target::ALL {
        let Ok(response) = &mut exchange.outcome_mut(target).result else {
            continue;
        };
        // A trailers-only answer (an error status) is an empty array: no messages.
        let CapturedBody::Complete(body) = &response.body else {
            continue;
        };
        match decode_body(
            schemas,
            &path,
            Direction::Response,
            body,
            &response.headers,
            max_decoded,
            (&mut charge, scratch),
        ) {
            Ok(decoded) => {
                raw.responses[target.index()] = Some(body.clone());
                response.body = CapturedBody::Complete(decoded);
            }
            Err(reason) => undecoded[target.index()] = Some(reason),
        }
    }
    exchange.charge = charge;
    (undecoded, raw)
}

/// One body as the JSON bytes of its messages, what it adds charged to `charge`.
fn decode_body(
    schemas: &Schemas,
    path: &str,
    direction: Direction,
    body: &Bytes,
    headers: &HeaderMap,
    max_decoded: usize,
    (charge, scratch): (&mut Charge, &mut Charge),
) -> Result<Bytes, BodySkip> {
    let encoding = headers
        .get("grpc-encoding")
        .and_then(|value| value.to_str().ok());
    let malformed = |error: String| {
        tracing::debug!(%error, ?direction, "gRPC messages could not be decoded");
        BodySkip::GrpcMalformed
    };
    let messages = frame::split(body, encoding, max_decoded).map_err(|error| match error {
        FrameError::TooLarge { .. } => BodySkip::DecodedTooLarge,
        other => malformed(other.to_string()),
    })?;
    let Some(held) = charge_decoding(&messages, scratch) else {
        return Err(BodySkip::MemoryBudget);
    };
    let json = messages_json(schemas, path, direction, &messages);
    drop(messages);
    let bytes = json
        .map_err(malformed)
        .and_then(|json| serde_json::to_vec(&json).map_err(|error| malformed(error.to_string())));
    scratch.shrink_to(held);
    let bytes = bytes?;
    if bytes.len() > max_decoded {
        return Err(BodySkip::DecodedTooLarge);
    }
    // Kept beside the frames, which stay for the sample.
    if !charge.try_grow(bytes.len()) {
        return Err(BodySkip::MemoryBudget);
    }
    Ok(Bytes::from(bytes))
}

/// A gRPC call whose messages are protobuf (`application/grpc` or `application/grpc+proto`).
pub fn is_protobuf_call(headers: &HeaderMap) -> bool {
    if !crate::grpc::is_grpc(headers) {
        return false;
    }
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(media_type)
        .unwrap_or_default();
    media == "application/grpc" || media == "application/grpc+proto"
}

/// A response's gRPC status as the exchange's status: the code's name (`OK`, `NOT_FOUND`), from the trailers
/// (kept with the headers) or a trailers-only answer; `None` when it carries none.
pub fn status_name(headers: &HeaderMap) -> Option<String> {
    Status::of(None, headers).map(|status| status.name())
}
