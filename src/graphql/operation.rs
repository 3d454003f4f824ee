//! One GraphQL document read with apollo-parser within limits: the operation a request selects, its kind, its
//! name and its root fields (fragments spread at the root followed, each once).

use std::collections::{HashMap, HashSet, VecDeque};

use apollo_parser::{Parser, SyntaxTree, cst};

/// Nesting the parser follows at most: a caller can send a query nested thousands deep, and the parser recurses
/// per level. 128 is also serde_json's limit on the answer, so a deeper query could not be compared anyway.
pub const MAX_RECURSION: usize = 128;
/// Tokens the lexer reads at most per request, shared by a batch's operations (whitespace and commas count): the
/// limit Apollo Router uses by default. Reading costs about 0.2 µs a token on the caller's thread, so this bounds
/// what one request can make it spend.
pub const MAX_TOKENS: usize = 15_000;

/// What an operation does, which decides whether it may be sent to the shadows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Query => "query",
            OperationKind::Mutation => "mutation",
            OperationKind::Subscription => "subscription",
        }
    }
}

/// The operation a request selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    /// Its name in the document, when it has one.
    pub name: Option<String>,
    /// Field names selected at its root, aliases ignored, in the order a breadth-first walk finds them.
    pub root_fields: Vec<String>,
}

/// What a document and an operation name select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    Operation(Operation),
    /// Several operations and no `operationName` (a request error for any server).
    Ambiguous,
    /// `operationName` names no operation of the document.
    NotFound,
    /// Not a document: a syntax error, a limit reached, or no operation at all.
    Invalid,
}

/// Reads `source` and selects the operation `operation_name` names (or the only one), as a server's
/// GetOperation() would. Never panics, whatever `source` holds.
pub fn classify(source: &str, operation_name: Option<&str>) -> Classified {
    classify_within(source, operation_name, MAX_TOKENS).0
}

/// As [`classify`], reading at most `tokens` tokens, and how many it read: the operations of one request share
/// one budget.
pub fn classify_within(
    source: &str,
    operation_name: Option<&str>,
    tokens: usize,
) -> (Classified, usize) {
    let tree = Parser::new(source)
        .recursion_limit(MAX_RECURSION)
        .token_limit(tokens.max(1))
        .parse();
    let read = tree.token_limit().high;
    (select(&tree, operation_name), read)
}

fn select(tree: &SyntaxTree<cst::Document>, operation_name: Option<&str>) -> Classified {
    // Some of the tree's accessors expect the tokens a valid document has: walk only error-free trees.
    if tree.errors().len() != 0 {
        return Classified::Invalid;
    }
    let mut operations = Vec::new();
    let mut fragments: HashMap<String, cst::FragmentDefinition> = HashMap::new();
    for definition in tree.document().definitions() {
        match definition {
            cst::Definition::OperationDefinition(operation) => operations.push(operation),
            cst::Definition::FragmentDefinition(fragment) => {
                if let Some(name) = fragment.fragment_name().and_then(|name| name.name()) {
                    fragments.entry(name.text().to_string()).or_insert(fragment);
                }
            }
            // Type-system definitions are not executable.
            _ => {}
        }
    }
    // GraphQL over HTTP: an empty operationName (a GET's `operationName=`) means none.
    let selected = match operation_name.filter(|name| !name.is_empty()) {
        None if operations.len() == 1 => operations.swap_remove(0),
        None if operations.is_empty() => return Classified::Invalid,
        None => return Classified::Ambiguous,
        Some(wanted) => match operations
            .into_iter()
            .find(|operation| operation.name().is_some_and(|name| name.text() == wanted))
        {
            Some(operation) => operation,
            None => return Classified::NotFound,
        },
    };
    let kind = match selected.operation_type() {
        Some(kind) if kind.mutation_token().is_some() => OperationKind::Mutation,
        Some(kind) if kind.subscription_token().is_some() => OperationKind::Subscription,
        // The `query` keyword, or the `{ ... }` shorthand.
        _ => OperationKind::Query,
    };
    Classified::Operation(Operation {
        kind,
        name: selected.name().map(|name| name.text().to_string()),
        root_fields: root_fields(selected.selection_set(), &fragments),
    })
}

/// The field names at the root of `selection`, following inline fragments and fragment spreads (each fragment
/// once, so that cycles and diamonds end) with a worklist rather than recursion.
fn root_fields(
    selection: Option<cst::SelectionSet>,
    fragments: &HashMap<String, cst::FragmentDefinition>,
) -> Vec<String> {
    let mut fields = Vec::new();
    let mut seen = HashSet::new();
    let mut expanded = HashSet::new();
    let mut pending: VecDeque<cst::SelectionSet> = selection.into_iter().collect();
    while let Some(set) = pending.pop_front() {
        for selection in set.selections() {
            match selection {
                cst::Selection::Field(field) => {
                    if let Some(name) = field.name() {
                        let name = name.text().to_string();
                        if seen.insert(name.clone()) {
                            fields.push(name);
                        }
                    }
                }
                cst::Selection::InlineFragment(inline) => pending.extend(inline.selection_set()),
                cst::Selection::FragmentSpread(spread) => {
                    let Some(name) = spread.fragment_name().and_then(|name| name.name()) else {
                        continue;
                    };
                    let name = name.text().to_string();
                    if expanded.insert(name.clone()) {
                        pending.extend(
                            fragments
                                .get(&name)
                                .and_then(|fragment| fragment.selection_set()),
                        );
                    }
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(source: &str, name: Option<&str>) -> Operation {
        match classify(source, name) {
            Classified::Operation(operation) => operation,
            other => panic!("{source}: {other:?}"),
        }
    }

    #[test]
    fn kinds_names_and_root_fields_are_read() {
        let read = operation(
            "query Posts { allPosts { id } _allPostsMeta { count } }",
            None,
        );
        assert_eq!(read.kind, OperationKind::Query);
        assert_eq!(read.name.as_deref(), Some("Posts"));
        assert_eq!(read.root_fields, ["allPosts", "_allPostsMeta"]);

        let shorthand = operation("{ me { name } }", None);
        assert_eq!(
            (shorthand.kind, shorthand.name),
            (OperationKind::Query, None)
        );

        let mutation = operation("mutation { createPost(title: \"x\") { id } }", None);
        assert_eq!(mutation.kind, OperationKind::Mutation);
        assert_eq!(mutation.root_fields, ["createPost"]);

        let subscription = operation("subscription Ticks { tick }", None);
        assert_eq!(subscription.kind, OperationKind::Subscription);
    }

    #[test]
    fn the_named_operation_is_selected_and_aliases_are_not_names() {
        let document = "query A { a } mutation B { renamed: b }";
        assert_eq!(operation(document, Some("B")).kind, OperationKind::Mutation);
        assert_eq!(operation(document, Some("B")).root_fields, ["b"]);
        assert_eq!(operation(document, Some("A")).kind, OperationKind::Query);
        assert_eq!(classify(document, None), Classified::Ambiguous);
        assert_eq!(classify(document, Some("")), Classified::Ambiguous);
        assert_eq!(classify(document, Some("C")), Classified::NotFound);
    }

    #[test]
    fn fragments_at_the_root_are_followed_once_even_in_a_cycle() {
        let document = "query { ...F ... on Query { c } } fragment F on Query { a ...G } fragment G on Query { b ...F }";
        // Breadth first: F's fields and the inline fragment's come before G's, reached through F.
        assert_eq!(operation(document, None).root_fields, ["a", "c", "b"]);
    }

    #[test]
    fn what_is_not_a_document_is_invalid_not_a_panic() {
        for source in [
            "",
            "{",
            "query {",
            "fragment F on Q { a }",
            "type Query { a: Int }",
            "\"text\"",
        ] {
            assert_eq!(classify(source, None), Classified::Invalid, "{source:?}");
        }
    }

    #[test]
    fn nesting_and_length_past_the_limits_are_invalid() {
        let deep = format!(
            "{}{}",
            "{ a ".repeat(MAX_RECURSION + 10),
            "}".repeat(MAX_RECURSION + 10)
        );
        assert_eq!(classify(&deep, None), Classified::Invalid);
        let deep_value = format!(
            "{{ a(x: {}1{}) }}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(classify(&deep_value, None), Classified::Invalid);
        let long = format!("{{ {} }}", "a ".repeat(MAX_TOKENS));
        assert_eq!(classify(&long, None), Classified::Invalid);
        let within = format!("{}{}", "{ a ".repeat(20), "}".repeat(20));
        assert_eq!(operation(&within, None).root_fields, ["a"]);
    }

    proptest::proptest! {
        /// Documents made of GraphQL's punctuation and names, mostly invalid: each is classified, none panics.
        #[test]
        fn any_document_is_classified_without_a_panic(
            source in "(query|mutation|fragment|on|\\.\\.\\.|[{}()\\[\\]:$@!=,\" ]|[a-zA-Z_]{1,3}){0,60}",
            name in proptest::option::of("[A-Za-z]{0,2}"),
        ) {
            let _ = classify(&source, name.as_deref());
        }
    }
}
