//! GraphQL operations as shadowdiff sees them: what a request asks for (each operation's kind, name and root
//! fields, read within limits) and the endpoint name that says it.

pub mod operation;
pub mod request;

use crate::graphql::operation::{Classified, Operation};
use crate::graphql::request::GraphqlRequest;

/// Root fields named at most in an endpoint name; more are said as `+…`.
pub const MAX_NAMED_FIELDS: usize = 6;
/// Operations of a batch named at most; more are said as `, …`.
pub const MAX_NAMED_OPERATIONS: usize = 4;
/// The longest name or field kept in an endpoint name, in bytes (GraphQL names are ASCII).
pub const MAX_NAME_BYTES: usize = 64;

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
        return format!("GraphQL {}", names.next().unwrap_or_default());
    }
    let mut labels: Vec<String> = names.by_ref().take(MAX_NAMED_OPERATIONS).collect();
    if names.next().is_some() {
        labels.push("…".to_string());
    }
    format!("GraphQL batch {}", labels.join(", "))
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
        endpoint_name(&from_json_body(body.as_bytes()).expect("read as GraphQL"))
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
            endpoint_name(&from_query_string("query=%7B+me+%7D").unwrap()),
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
}
