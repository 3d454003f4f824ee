//! A sample document sealed for storage and opened for reading: every value traffic put in it (the request's
//! target, header values, bodies, the values of each difference, rewritten requests, gRPC frames) moves into one
//! age ciphertext, while what the reports count stays plain (id, endpoint, time, result, statuses, timings,
//! failures, header names, and each difference's path, kind and class).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::redact::{RedactionSettings, Redactor};
use crate::seal::{Keys, OpenError, Opener, SealFailure, Sealer};
use crate::store::Store;
use crate::store::sample::{SampleDocument, SentRequest, StoredBody};

/// What a sealed value shows in the plain part.
pub const SEALED: &str = "(encrypted)";

/// What a page says of a sealed sample read without an identity.
pub const NO_IDENTITY: &str = "the samples are encrypted (--sample-recipient): their values show only to a \
                               process given the private key with --sample-identity FILE";

type Headers = Vec<(String, String)>;
/// Primary's and the other side's value of one difference.
type Values = (Option<String>, Option<String>);

/// The sealed part: one age ciphertext per document, rather than one per value (each costs ~200 bytes of
/// header), in an order the plain part's lists keep.
#[derive(Serialize, Deserialize)]
struct SealedValues {
    /// The document's id: a ciphertext moved to another row in the database does not open there.
    id: String,
    uri: String,
    request_headers: Headers,
    request_body: StoredBody,
    /// Primary's, secondary's and the candidate's.
    outcomes: [(Headers, Option<StoredBody>); 3],
    candidate_values: Vec<Values>,
    noise_values: Vec<Values>,
    sent: Vec<SentRequest>,
    frames: Vec<(String, String)>,
}

/// Header names kept, their values marked.
fn marked(headers: &mut Headers) -> Headers {
    let plain = headers
        .iter()
        .map(|(name, _)| (name.clone(), SEALED.to_string()))
        .collect();
    std::mem::replace(headers, plain)
}

/// A difference's values taken, an absent one left absent (the difference's kind says as much).
fn take_values(primary: &mut Option<String>, other: &mut Option<String>) -> Values {
    let mark = |value: &mut Option<String>| {
        let taken = value.take();
        if taken.is_some() {
            *value = Some(SEALED.to_string());
        }
        taken
    };
    (mark(primary), mark(other))
}

/// Moves the document's values into its sealed part.
pub fn seal(document: &mut SampleDocument, sealer: &Sealer) -> Result<(), SealFailure> {
    let body = |body: &mut Option<StoredBody>| match body {
        Some(StoredBody::Text { .. } | StoredBody::Base64 { .. }) => {
            body.replace(StoredBody::Sealed)
        }
        _ => body.clone(),
    };
    let outcomes = [
        &mut document.primary,
        &mut document.secondary,
        &mut document.candidate,
    ]
    .map(|outcome| (marked(&mut outcome.headers), body(&mut outcome.body)));
    let values = SealedValues {
        id: document.id.clone(),
        uri: std::mem::replace(&mut document.request.uri, SEALED.to_string()),
        request_headers: marked(&mut document.request.headers),
        request_body: std::mem::replace(&mut document.request.body, StoredBody::Sealed),
        outcomes,
        candidate_values: document
            .candidate_differences
            .iter_mut()
            .map(|stored| {
                let difference = &mut stored.difference;
                take_values(&mut difference.primary, &mut difference.other)
            })
            .collect(),
        noise_values: document
            .noise_differences
            .iter_mut()
            .map(|difference| take_values(&mut difference.primary, &mut difference.other))
            .collect(),
        sent: document
            .sent
            .iter_mut()
            .map(|sent| SentRequest {
                target: sent.target.clone(),
                uri: std::mem::replace(&mut sent.uri, SEALED.to_string()),
                headers: marked(&mut sent.headers),
            })
            .collect(),
        frames: std::mem::take(&mut document.frames),
    };
    let plain = serde_json::to_vec(&values).map_err(|error| SealFailure::new(error.to_string()))?;
    document.sealed = Some(sealer.seal(&plain)?);
    Ok(())
}

/// Opens a sealed document with `opener`, putting its values back; one that stays sealed says why in
/// `unopened`. A document that was never sealed is left as it is.
pub fn open(document: &mut SampleDocument, opener: Option<&Opener>) {
    let Some(sealed) = document.sealed.as_deref() else {
        return;
    };
    let Some(opener) = opener else {
        document.unopened = Some(NO_IDENTITY.to_string());
        return;
    };
    let values = opener.open(sealed).and_then(|plain| {
        serde_json::from_slice::<SealedValues>(&plain)
            .map_err(|error| OpenError::Damaged(format!("not a sealed sample: {error}")))
    });
    match values {
        Ok(values) if fits(document, &values) => restore(document, values),
        Ok(_) => {
            document.unopened = Some(
                "the sealed part of this sample does not match its plain part; it is not shown"
                    .into(),
            )
        }
        Err(error) => {
            document.unopened = Some(format!(
                "the samples are encrypted and this one cannot be opened: {error}"
            ))
        }
    }
}

/// Whether the sealed part is this document's and its lists line up with the plain ones (a document altered in
/// the database, or given another's sealed part, would not).
fn fits(document: &SampleDocument, values: &SealedValues) -> bool {
    values.id == document.id
        && values.candidate_values.len() == document.candidate_differences.len()
        && values.noise_values.len() == document.noise_differences.len()
}

fn restore(document: &mut SampleDocument, values: SealedValues) {
    let SealedValues {
        id: _,
        uri,
        request_headers,
        request_body,
        outcomes,
        candidate_values,
        noise_values,
        sent,
        frames,
    } = values;
    document.request.uri = uri;
    document.request.headers = request_headers;
    document.request.body = request_body;
    let [primary, secondary, candidate] = outcomes;
    for (outcome, (headers, body)) in [
        (&mut document.primary, primary),
        (&mut document.secondary, secondary),
        (&mut document.candidate, candidate),
    ] {
        outcome.headers = headers;
        outcome.body = body;
    }
    for (stored, (primary, other)) in document
        .candidate_differences
        .iter_mut()
        .zip(candidate_values)
    {
        stored.difference.primary = primary;
        stored.difference.other = other;
    }
    for (difference, (primary, other)) in document.noise_differences.iter_mut().zip(noise_values) {
        difference.primary = primary;
        difference.other = other;
    }
    document.sent = sent;
    document.frames = frames;
    document.sealed = None;
    document.unopened = None;
    document.opened = true;
}

/// How a process reads sealed samples: with its identity (`--sample-identity`), and the redaction key that
/// turns a sealed run's request feature values into the tokens its sketches count (for a predictor's link).
#[derive(Clone, Debug, Default)]
pub struct SampleReading {
    pub opener: Option<Arc<Opener>>,
    pub tokens: Option<Redactor>,
}

impl SampleReading {
    /// How a process with `keys` reads: the redaction key's tokens are those its writer counts with. A process
    /// that seals with the redaction key kept in the database is warned: whoever reads the database can hash
    /// guesses of a short value (a country, a small id) and find it among the tokens of the sketches.
    pub fn of(keys: &Keys, redactor: &Redactor, redaction: &RedactionSettings) -> Self {
        if keys.sealer.is_some() && redaction.key.is_none() {
            tracing::warn!(
                "samples are sealed, but the redaction key is kept in the database: give --redaction-key \
                 (from a secret) so that the hashed request values in the run's sketches cannot be checked \
                 against guesses by whoever reads the database"
            );
        }
        Self {
            opener: keys.opener.clone(),
            tokens: Some(redactor.clone()),
        }
    }
}

impl Store {
    /// This store, opening sealed samples as `reading` says when it reads them.
    pub fn with_reading(mut self, reading: SampleReading) -> Self {
        self.reading = reading;
        self
    }

    /// `document` opened, if sealed, with this store's identity.
    pub(crate) fn open_sample(&self, document: &mut SampleDocument) {
        open(document, self.reading.opener.as_deref());
    }

    /// The redaction key's tokens, when sealed requests' feature values are compared with counted ones.
    pub(crate) fn feature_tokens(&self) -> Option<&Redactor> {
        self.reading.tokens.as_ref()
    }
}

/// The document as it is stored: sealed first when there is a `sealer`. None when sealing failed: the sample is
/// then not stored (never stored in clear), and the failure logged.
pub fn stored_text(document: &mut SampleDocument, sealer: Option<&Sealer>) -> Option<String> {
    if let Some(sealer) = sealer
        && let Err(error) = seal(document, sealer)
    {
        tracing::error!(%error, id = %document.id, "a sample could not be sealed; it is not stored");
        return None;
    }
    // A document of strings and numbers always serializes.
    serde_json::to_string(document).ok()
}

#[cfg(test)]
// X25519 keys are what the issue and most deployments use, though the age crate now deprecates them.
#[allow(deprecated)]
mod tests {
    use super::*;

    fn document() -> SampleDocument {
        let outcome = |status: u16, body: &str| {
            serde_json::json!({
                "elapsed_ms": 1.0, "status": status, "headers": [["x-user", "ada@example.com"]],
                "body": {"as": "text", "text": body}, "error": null, "error_detail": null,
            })
        };
        serde_json::from_value(serde_json::json!({
            "id": "e1", "endpoint": "GET /users/{id}", "started_at_ms": 1,
            "request": {
                "method": "GET", "uri": "/users/7?email=ada@example.com", "version": "HTTP/1.1",
                "headers": [["x-user", "ada@example.com"]], "body": {"as": "text", "text": ""},
            },
            "primary": outcome(200, r#"{"email":"ada@example.com"}"#),
            "secondary": outcome(200, r#"{"email":"ada@example.com"}"#),
            "candidate": outcome(200, r#"{"email":"bob@example.com"}"#),
            "result": "compared",
            "candidate_differences": [{
                "path": "body/email", "generalised": "body/email", "kind": "value_changed",
                "compat": "changed", "primary": "\"ada@example.com\"", "other": "\"bob@example.com\"",
                "cancelled": false,
            }, {
                "path": "body/gone", "generalised": "body/gone", "kind": "missing",
                "compat": "breaking", "primary": "\"ada@example.com\"", "other": null,
                "cancelled": false,
            }],
            "noise_differences": [],
            "body_skipped": [],
            "frames": [["primary", "AAAAAAA="]],
        }))
        .unwrap()
    }

    fn pair() -> (Sealer, Opener) {
        let identity = age::x25519::Identity::generate();
        let recipient: crate::seal::Recipient = Box::new(identity.to_public());
        (
            Sealer::new(vec![recipient]),
            Opener::new(vec![Box::new(identity)]),
        )
    }

    #[test]
    fn a_sealed_document_keeps_places_plain_and_values_sealed() {
        let (sealer, opener) = pair();
        let original = document();
        let mut stored = original.clone();
        let text = stored_text(&mut stored, Some(&sealer)).unwrap();
        assert!(!text.contains("example.com"), "{text}");
        assert!(!text.contains("AAAAAAA="), "frames are sealed too");
        for plain in [
            "GET /users/{id}",
            "body/email",
            "value_changed",
            "missing",
            "x-user",
        ] {
            assert!(text.contains(plain), "{plain} stays plain");
        }

        let mut read: SampleDocument = serde_json::from_str(&text).unwrap();
        open(&mut read, None);
        assert_eq!(read.unopened.as_deref(), Some(NO_IDENTITY));
        assert_eq!(
            read.candidate_differences[0].difference.other.as_deref(),
            Some(SEALED)
        );
        assert_eq!(
            read.candidate_differences[1].difference.other, None,
            "an absent value stays absent"
        );

        let mut read: SampleDocument = serde_json::from_str(&text).unwrap();
        open(&mut read, Some(&opener));
        assert!(read.opened && read.unopened.is_none() && read.sealed.is_none());
        assert_eq!(
            SampleDocument {
                opened: false,
                ..read
            },
            original
        );

        let (_, stranger) = pair();
        let mut read: SampleDocument = serde_json::from_str(&text).unwrap();
        open(&mut read, Some(&stranger));
        let said = read.unopened.unwrap();
        assert!(said.contains("cannot be opened"), "{said}");
    }

    #[test]
    fn a_sealed_part_that_does_not_fit_its_document_is_not_shown() {
        let (sealer, opener) = pair();
        let mut stored = document();
        let text = stored_text(&mut stored, Some(&sealer)).unwrap();
        let mut read: SampleDocument = serde_json::from_str(&text).unwrap();
        read.candidate_differences.pop();
        open(&mut read, Some(&opener));
        assert!(read.unopened.unwrap().contains("does not match"));
        assert!(!read.opened);

        let mut other = document();
        other.id = "e2".into();
        other.sealed = serde_json::from_str::<SampleDocument>(&text)
            .unwrap()
            .sealed;
        open(&mut other, Some(&opener));
        assert!(
            other.unopened.is_some(),
            "another sample's sealed part does not open here"
        );
    }
}
