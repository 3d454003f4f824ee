//! GraphQL operations as shadowdiff sees them: what a request asks for (each operation's kind, name and root
//! fields, read within limits) and the endpoint name that says it.

pub mod operation;
pub mod persisted;
pub mod request;
pub mod schema;

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method};

use crate::graphql::operation::{Classified, Operation};
use crate::graphql::persisted::PersistedQueries;
use crate::graphql::request::{GraphqlRequest, from_json_body, from_query_string};

/// Whether requests are read as GraphQL (`--graphql`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GraphqlMode {
    /// On `--graphql-path`, and wherever a POST's JSON body or a GET's `query` parameter holds a document.
    #[default]
    Auto,
    /// Never: every request is shadowed by its method, as any other.
    Off,
}

/// How GraphQL requests are recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphqlSettings {
    pub mode: GraphqlMode,
    /// Paths whose requests are GraphQL (`--graphql-path`).
    pub paths: Vec<String>,
    /// With `--graphql-introspect`: how often the schemas are read by introspection (at start, then every
    /// `--graphql-introspect-interval`), on the first GraphQL path.
    pub introspect_every: Option<Duration>,
}

impl GraphqlSettings {
    pub const DEFAULT_PATH: &str = "/graphql";
    pub const DEFAULT_INTROSPECT_INTERVAL: Duration = Duration::from_secs(300);

    /// Whether a POST's body is read before deciding whether it is shadowed, since it may be a GraphQL query.
    pub fn may_be_graphql_post(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        self.mode == GraphqlMode::Auto
            && method == Method::POST
            && (self.is_graphql_path(path) || is_json(headers))
    }

    fn is_graphql_path(&self, path: &str) -> bool {
        self.paths.iter().any(|graphql| graphql == path)
    }

    /// Reads a request as GraphQL: a POST's JSON body, a GET's query string. Off `--graphql-path`, a request
    /// none of whose operations is a document or a persisted hash is an ordinary request.
    /// Texts sent with their persisted hashes are learned into `persisted`, and hashes sent alone read through
    /// it.
    pub fn read(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        persisted: &PersistedQueries,
    ) -> Option<GraphqlRequest> {
        if self.mode == GraphqlMode::Off {
            return None;
        }
        let on_path = self.is_graphql_path(path);
        let request = if method == Method::POST && (on_path || is_json(headers)) {
            from_json_body(body, Some(persisted))?
        } else if method == Method::GET {
            from_query_string(query?, Some(persisted))?
        } else {
            return None;
        };
        let recognised = request.operations.iter().any(|asked| {
            asked.persisted_hash.is_some()
                || matches!(asked.classified, Some(Classified::Operation(_)))
        });
        (on_path || recognised).then_some(request)
    }
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            mode: GraphqlMode::Auto,
            paths: vec![Self::DEFAULT_PATH.to_string()],
            introspect_every: None,
        }
    }
}

/// `application/json`, or a `+json` type such as `application/graphql-response+json`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .is_some_and(|essence| {
            // Compared in place: this runs on the caller's thread for every POST the method policy keeps back.
            essence.eq_ignore_ascii_case("application/json")
                || essence
                    .len()
                    .checked_sub(5)
                    .and_then(|start| essence.get(start..))
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
        })
}

/// Root fields named at most in an endpoint name; more are said as `+…`.
pub const MAX_NAMED_FIELDS: usize = 6;
/// Operations of a batch named at most; more are said as `, …`.
pub const MAX_NAMED_OPERATIONS: usize = 4;
/// The longest name or field kept in an endpoint name, in bytes (GraphQL names are ASCII).
pub const MAX_NAME_BYTES: usize = 64;

/// What every GraphQL endpoint's name starts with, so that the analysis knows an answer to an operation.
pub const ENDPOINT_PREFIX: &str = "GraphQL ";

/// The endpoint the schemas read by introspection are compared under.
pub const SCHEMA_ENDPOINT: &str = "GraphQL schema";

/// Whether an endpoint is one of GraphQL operations (named by [`endpoint_name`]).
pub fn is_graphql_endpoint(endpoint: &str) -> bool {
    endpoint.starts_with(ENDPOINT_PREFIX)
}

/// The endpoint a GraphQL request belongs to: `GraphQL query Name`, else the operation's sorted root fields
/// (`GraphQL query allPosts+_allPostsMeta`); a batch names its operations (`GraphQL batch query A, query B`).
/// Bounded whatever the document holds.
pub fn endpoint_name(request: &GraphqlRequest) -> String {
    let mut names = request
        .operations
        .iter()
        .map(|asked| match &asked.classified {
            Some(Classified::Operation(operation)) => operation_label(operation),
            Some(_) => "invalid".to_string(),
            None => "persisted".to_string(),
        });
    if !request.batch {
        return format!("{ENDPOINT_PREFIX}{}", names.next().unwrap_or_default());
    }
    let mut labels: Vec<String> = names.by_ref().take(MAX_NAMED_OPERATIONS).collect();
    if names.next().is_some() {
        labels.push("…".to_string());
    }
    format!("{ENDPOINT_PREFIX}batch {}", labels.join(", "))
}

/// `query Name`, or `query a+b` from its root fields.
fn operation_label(operation: &Operation) -> String {
    let kind = operation.kind.as_str();
    if let Some(name) = &operation.name {
        return format!("{kind} {}", cut(name));
    }
    let mut fields: Vec<&str> = operation
        .root_fields
        .iter()
        .map(|field| cut(field))
        .collect();
    // Sorted so that clients writing the fields in another order share an endpoint; leading underscores and
    // case set aside, so that `_allPostsMeta` sorts beside `allPosts` rather than before every letter.
    fields.sort_by_key(|field| (field.trim_start_matches('_').to_ascii_lowercase(), *field));
    fields.dedup();
    let more = fields.len() > MAX_NAMED_FIELDS;
    fields.truncate(MAX_NAMED_FIELDS);
    if more {
        fields.push("…");
    }
    format!("{kind} {}", fields.join("+"))
}

fn cut(name: &str) -> &str {
    match name.char_indices().nth(MAX_NAME_BYTES) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::request::{from_json_body, from_query_string};

    fn name_of(body: &str) -> String {
        endpoint_name(&from_json_body(body.as_bytes(), None).expect("read as GraphQL"))
    }

    #[test]
    fn an_operation_is_named_by_its_name_else_by_its_sorted_root_fields() {
        assert_eq!(
            name_of(r#"{"query":"query Posts { allPosts { id } }"}"#),
            "GraphQL query Posts"
        );
        assert_eq!(
            name_of(r#"{"query":"{ _allPostsMeta { count } allPosts { id } }"}"#),
            "GraphQL query allPosts+_allPostsMeta"
        );
        assert_eq!(
            name_of(r#"{"query":"{ allPosts { id } _allPostsMeta { count } }"}"#),
            "GraphQL query allPosts+_allPostsMeta"
        );
        assert_eq!(
            name_of(r#"{"query":"mutation { createPost(title: \"t\") { id } }"}"#),
            "GraphQL mutation createPost"
        );
        assert_eq!(
            endpoint_name(&from_query_string("query=%7B+me+%7D", None).unwrap()),
            "GraphQL query me"
        );
    }

    #[test]
    fn batches_persisted_and_invalid_operations_are_named_too() {
        assert_eq!(
            name_of(r#"[{"query":"query A { a }"},{"query":"{ b }"}]"#),
            "GraphQL batch query A, query b"
        );
        assert_eq!(
            name_of(r#"{"extensions":{"persistedQuery":{"sha256Hash":"abc"}}}"#),
            "GraphQL persisted"
        );
        assert_eq!(name_of(r#"{"query":"{"}"#), "GraphQL invalid");
    }

    #[test]
    fn names_stay_bounded_whatever_the_document_holds() {
        let fields: Vec<String> = (0..500)
            .map(|n| format!("field{n:03}{}", "x".repeat(200)))
            .collect();
        let many = format!(r#"{{"query":"{{ {} }}"}}"#, fields.join(" "));
        let name = name_of(&many);
        assert!(name.ends_with("+…"), "{name}");
        assert!(
            name.len() < 16 + (MAX_NAME_BYTES + 1) * (MAX_NAMED_FIELDS + 1),
            "{}",
            name.len()
        );

        let batch = format!("[{}]", [r#"{"query":"query A { a }"}"#; 10].join(","));
        assert_eq!(
            name_of(&batch),
            "GraphQL batch query A, query A, query A, query A, …"
        );
    }

    #[test]
    fn json_content_types_are_told_apart_without_case() {
        for (content_type, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/graphql-response+JSON", true),
            ("+json", true),
            ("json", false),
            ("text/plain", false),
            ("application/jsonl", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
            assert_eq!(is_json(&headers), json, "{content_type}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
