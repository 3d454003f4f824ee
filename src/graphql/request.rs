//! A GraphQL request as it comes over HTTP: a POST's JSON body (one operation or a batch) or a GET's query
//! string, each operation classified, and an automatic persisted query's hash kept.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::graphql::operation::{Classified, MAX_TOKENS, OperationKind, classify_within};
use crate::graphql::persisted::PersistedQueries;

/// Operations in one batch read at most; a longer batch is not taken for GraphQL (it is an ordinary request).
pub const MAX_BATCH: usize = 64;

/// One operation of a request: what its text selects, or only its persisted hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AskedOperation {
    /// What the query text selects; `None` when the request sent only a persisted query's hash.
    pub classified: Option<Classified>,
    /// `extensions.persistedQuery.sha256Hash`, when sent.
    pub persisted_hash: Option<String>,
    /// The text of an operation sent by its hash alone, known from an earlier request that sent both: what
    /// the shadows are sent with the hash, as a client does after a cache miss.
    pub recovered_text: Option<Arc<str>>,
}

/// A request read as GraphQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphqlRequest {
    pub operations: Vec<AskedOperation>,
    /// Sent as a JSON array, even of one.
    pub batch: bool,
}

impl GraphqlRequest {
    /// Whether an operation was sent by its hash alone and read through the text known for it.
    pub fn recovered_any(&self) -> bool {
        self.operations
            .iter()
            .any(|asked| asked.recovered_text.is_some())
    }

    /// The POST body this request was read from, each operation sent by its hash alone given its text beside
    /// the hash (as a client sends it after a server's cache miss); `None` when the body is not the one read.
    pub fn body_with_texts(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let objects: Vec<&mut serde_json::Map<String, serde_json::Value>> = match &mut value {
            serde_json::Value::Object(object) if !self.batch => vec![object],
            serde_json::Value::Array(items) if self.batch => items
                .iter_mut()
                .map(serde_json::Value::as_object_mut)
                .collect::<Option<_>>()?,
            _ => return None,
        };
        if objects.len() != self.operations.len() {
            return None;
        }
        for (object, asked) in objects.into_iter().zip(&self.operations) {
            if let Some(text) = &asked.recovered_text {
                object.insert("query".to_string(), serde_json::Value::from(&**text));
            }
        }
        serde_json::to_vec(&value).ok()
    }

    /// A GET's query string with the text of the operation sent by its hash alone added as `query`.
    pub fn query_string_with_text(&self, query_string: &str) -> Option<String> {
        let text = self.operations.first()?.recovered_text.as_deref()?;
        let text = crate::encoding::percent_encode(text, b"");
        Some(format!("{query_string}&query={text}"))
    }
}

/// What a GraphQL request may be sent to the shadows as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shadowing {
    /// Every operation is a query whose text is here: sent three times, it writes nothing.
    Queries,
    /// A mutation or a subscription is among them.
    SideEffects,
    /// An operation was sent by its persisted hash alone, or its text selects nothing: what it does is not known.
    Unknown,
}

impl GraphqlRequest {
    /// What it may be sent to the shadows as (a batch as queries only when all of it is).
    pub fn shadowing(&self) -> Shadowing {
        let mut shadowing = Shadowing::Queries;
        for asked in &self.operations {
            match &asked.classified {
                Some(Classified::Operation(operation))
                    if operation.kind == OperationKind::Query => {}
                Some(Classified::Operation(_)) => return Shadowing::SideEffects,
                _ => shadowing = Shadowing::Unknown,
            }
        }
        shadowing
    }
}

/// The fields a GraphQL-over-HTTP request may carry; any other field means it is not one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOperation<'a> {
    #[serde(default, borrow)]
    query: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "operationName")]
    operation_name: Option<Cow<'a, str>>,
    /// Read past: what an operation is does not depend on its variables.
    #[serde(default, rename = "variables")]
    _variables: Option<IgnoredAny>,
    #[serde(default, borrow)]
    extensions: Option<Extensions<'a>>,
}

#[derive(Deserialize)]
struct Extensions<'a> {
    #[serde(default, borrow, rename = "persistedQuery")]
    persisted_query: Option<PersistedQuery<'a>>,
}

#[derive(Deserialize)]
struct PersistedQuery<'a> {
    #[serde(borrow, rename = "sha256Hash")]
    sha256_hash: Cow<'a, str>,
}

impl WireOperation<'_> {
    /// `None` when it carries neither a query nor a persisted hash; its text read within what is left of the
    /// request's `tokens`.
    fn asked(
        self,
        tokens: &mut usize,
        persisted: Option<&PersistedQueries>,
    ) -> Option<AskedOperation> {
        let persisted_hash = self
            .extensions
            .and_then(|extensions| extensions.persisted_query)
            .map(|persisted| persisted.sha256_hash.into_owned());
        asked(
            self.query.as_deref(),
            self.operation_name.as_deref(),
            persisted_hash,
            tokens,
            persisted,
        )
    }
}

/// One operation from its parts: a text sent with its hash is learned, a hash sent alone read through the text
/// learned for it.
fn asked(
    query: Option<&str>,
    operation_name: Option<&str>,
    persisted_hash: Option<String>,
    tokens: &mut usize,
    persisted: Option<&PersistedQueries>,
) -> Option<AskedOperation> {
    let mut recovered_text = None;
    let text: Option<&str> = match (query, &persisted_hash, persisted) {
        (Some(query), Some(hash), Some(persisted)) => {
            persisted.learn(hash, query);
            Some(query)
        }
        (Some(query), _, _) => Some(query),
        (None, Some(hash), Some(persisted)) => {
            recovered_text = persisted.text(hash);
            recovered_text.as_deref()
        }
        (None, _, _) => None,
    };
    let classified = text.map(|text| {
        let (classified, read) = classify_within(text, operation_name, *tokens);
        *tokens = tokens.saturating_sub(read);
        classified
    });
    if classified.is_none() && persisted_hash.is_none() {
        return None;
    }
    Some(AskedOperation {
        classified,
        persisted_hash,
        recovered_text,
    })
}

/// Reads a POST's JSON body as GraphQL: an object of the GraphQL-over-HTTP fields, or an array of at most
/// [`MAX_BATCH`] of them. `None` when the body is not shaped so (an ordinary request).
/// With `persisted`, texts sent with their hashes are learned and hashes sent alone read through them.
pub fn from_json_body(body: &[u8], persisted: Option<&PersistedQueries>) -> Option<GraphqlRequest> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace())?;
    let (wire, batch) = match first {
        b'{' => (
            vec![serde_json::from_slice::<WireOperation>(body).ok()?],
            false,
        ),
        b'[' => {
            let batch: Vec<WireOperation> = serde_json::from_slice(body).ok()?;
            if batch.is_empty() || batch.len() > MAX_BATCH {
                return None;
            }
            (batch, true)
        }
        _ => return None,
    };
    // One budget of tokens for the whole request, so that a batch costs no more to read than one operation may.
    let mut tokens = MAX_TOKENS;
    let operations = wire
        .into_iter()
        .map(|operation| operation.asked(&mut tokens, persisted))
        .collect::<Option<Vec<_>>>()?;
    Some(GraphqlRequest { operations, batch })
}

/// Reads a GET's query string (`query`, `operationName`, `extensions`) as GraphQL; `None` without a `query` or
/// a persisted hash.
pub fn from_query_string(
    query_string: &str,
    persisted: Option<&PersistedQueries>,
) -> Option<GraphqlRequest> {
    let mut query = None;
    let mut operation_name = None;
    let mut extensions = None;
    for pair in query_string.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Decoded only when encoded: this runs on the caller's thread for every GET with a query string.
        let name = if name.contains(['%', '+']) {
            Cow::Owned(crate::encoding::percent_decode(name))
        } else {
            Cow::Borrowed(name)
        };
        let slot = match name.as_ref() {
            "query" => &mut query,
            "operationName" => &mut operation_name,
            "extensions" => &mut extensions,
            _ => continue,
        };
        // A repeated parameter is ambiguous: not taken for GraphQL.
        if slot
            .replace(crate::encoding::percent_decode(value))
            .is_some()
        {
            return None;
        }
    }
    let persisted_hash = match extensions {
        Some(text) => serde_json::from_str::<Extensions>(&text)
            .ok()?
            .persisted_query
            .map(|persisted| persisted.sha256_hash.into_owned()),
        None => None,
    };
    let mut tokens = MAX_TOKENS;
    let asked = asked(
        query.as_deref(),
        operation_name.as_deref(),
        persisted_hash,
        &mut tokens,
        persisted,
    )?;
    Some(GraphqlRequest {
        operations: vec![asked],
        batch: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::operation::Operation;

    fn kinds(request: &GraphqlRequest) -> Vec<Option<OperationKind>> {
        request
            .operations
            .iter()
            .map(|asked| match &asked.classified {
                Some(Classified::Operation(Operation { kind, .. })) => Some(*kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_post_body_of_one_operation_or_a_batch_is_read() {
        let one = from_json_body(
            br#"{"query":"query Q { a }","operationName":"Q","variables":{"x":[1]}}"#,
            None,
        )
        .unwrap();
        assert!(!one.batch);
        assert_eq!(kinds(&one), [Some(OperationKind::Query)]);
        assert_eq!(one.shadowing(), Shadowing::Queries);

        let batch =
            from_json_body(br#" [{"query":"{ a }"},{"query":"mutation { b }"}]"#, None).unwrap();
        assert!(batch.batch);
        assert_eq!(
            kinds(&batch),
            [Some(OperationKind::Query), Some(OperationKind::Mutation)]
        );
        assert_eq!(
            batch.shadowing(),
            Shadowing::SideEffects,
            "a batch with a mutation"
        );
    }

    #[test]
    fn a_persisted_query_keeps_its_hash_and_is_not_a_known_query_without_its_text() {
        let hash_only = from_json_body(
            br#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"abc"}}}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            hash_only.operations[0].persisted_hash.as_deref(),
            Some("abc")
        );
        assert_eq!(hash_only.operations[0].classified, None);
        assert_eq!(hash_only.shadowing(), Shadowing::Unknown);

        let with_text = from_json_body(
            br#"{"query":"{ a }","extensions":{"persistedQuery":{"version":1,"sha256Hash":"abc"},"tracing":true}}"#,
            None,
        )
        .unwrap();
        assert_eq!(with_text.shadowing(), Shadowing::Queries);
    }

    #[test]
    fn bodies_of_another_shape_are_ordinary_requests() {
        for body in [
            &br#"{"query":"{ a }","user":"x"}"#[..],
            br#"{"name":"x"}"#,
            br#"{}"#,
            br#"[]"#,
            br#"{"query":42}"#,
            b"query { a }",
            b"",
            br#"{"query":"{ a }""#,
        ] {
            assert_eq!(
                from_json_body(body, None),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let too_many = format!("[{}]", [r#"{"query":"{ a }"}"#; MAX_BATCH + 1].join(","));
        assert_eq!(from_json_body(too_many.as_bytes(), None), None);
    }

    #[test]
    fn a_get_query_string_is_read() {
        let get = from_query_string(
            "query=query%20Q%20%7B%20a%20%7D&operationName=Q&variables=%7B%7D",
            None,
        )
        .unwrap();
        assert_eq!(kinds(&get), [Some(OperationKind::Query)]);
        let mutation = from_query_string("query=mutation+%7B+b+%7D", None).unwrap();
        assert_eq!(kinds(&mutation), [Some(OperationKind::Mutation)]);
        let persisted = from_query_string(
            "extensions=%7B%22persistedQuery%22%3A%7B%22version%22%3A1%2C%22sha256Hash%22%3A%22abc%22%7D%7D",
            None,
        )
        .unwrap();
        assert_eq!(
            persisted.operations[0].persisted_hash.as_deref(),
            Some("abc")
        );
        assert_eq!(from_query_string("page=2", None), None);
        assert_eq!(
            from_query_string("query=%7B+a+%7D&query=%7B+b+%7D", None),
            None
        );
    }

    #[test]
    fn a_batch_shares_one_budget_of_tokens() {
        let fields = "a ".repeat(1_000);
        let operation = format!(r#"{{"query":"{{ {fields} }}"}}"#);
        let batch = format!("[{}]", [operation.as_str(); 20].join(","));
        let read = from_json_body(batch.as_bytes(), None).unwrap();
        // About 2 000 tokens each: the first seven fit in the request's budget, the rest are not read.
        let classified: Vec<bool> = read
            .operations
            .iter()
            .map(|asked| matches!(asked.classified, Some(Classified::Operation(_))))
            .collect();
        assert!(classified[..7].iter().all(|ok| *ok), "{classified:?}");
        assert!(classified[8..].iter().all(|ok| !ok), "{classified:?}");
        assert_eq!(read.shadowing(), Shadowing::Unknown);
    }
}
