//! Properties of the JSON diff over arbitrary documents: no differences with itself, the two directions mirror
//! each other, and the differences found are exactly where the documents differ (applying them as a JSON
//! Patch turns one into the other).

use std::collections::BTreeSet;

use json_patch::PatchOperation;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::analysis::json::{JsonOptions, as_patch, diff};
use shadowdiff::analysis::rules::EndpointRules;
use shadowdiff::analysis::tree;

const STRICT: JsonOptions = JsonOptions {
    strict_numbers: true,
    examples_per_path: None,
};
const LENIENT: JsonOptions = JsonOptions {
    strict_numbers: false,
    examples_per_path: None,
};

/// Arbitrary JSON, with a small key alphabet so that two documents share keys and nest into each other, and
/// keys with `~` and `/` to exercise pointer escaping.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (-2.0f64..2.0).prop_map(|f| json!(f)),
        Just(json!(1.0)),
        // Integers too large for f64 to tell apart.
        Just(json!(1234567890123456789u64)),
        Just(json!(1234567890123456790u64)),
        "[ab~/]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[ab1~/]{1,2}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Two documents: unrelated, or the second a variation of the first (so that most of them is shared).
fn json_pair() -> impl Strategy<Value = (Value, Value)> {
    prop_oneof![
        (json_value(), json_value()),
        (json_value(), json_value(), any::<prop::sample::Index>()).prop_map(|(a, graft, at)| {
            let b = graft_into(&a, graft, at);
            (a, b)
        }),
        // The same elements in other orders, for array_order.
        (json_value(), any::<prop::sample::Index>()).prop_map(|(a, at)| {
            let b = graft_into(&a, rotated(&a, at), at);
            (a, b)
        }),
    ]
}

/// The node of `a` picked by `at`, with its array (if it is one) rotated by one, and its inner arrays reversed.
fn rotated(a: &Value, at: prop::sample::Index) -> Value {
    let mut pointers = Vec::new();
    collect_pointers(a, String::new(), &mut pointers);
    let pointer: &String = at.get(&pointers);
    let node = a.pointer(pointer).cloned().unwrap_or(Value::Null);
    fn reverse_inner(value: Value) -> Value {
        match value {
            Value::Array(items) => {
                Value::Array(items.into_iter().rev().map(reverse_inner).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, reverse_inner(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    match node {
        Value::Array(mut items) => {
            if !items.is_empty() {
                items.rotate_left(1);
            }
            Value::Array(items)
        }
        other => reverse_inner(other),
    }
}

/// `a` with one of its nodes (picked by `at`) replaced by `graft`.
fn graft_into(a: &Value, graft: Value, at: prop::sample::Index) -> Value {
    let mut pointers = Vec::new();
    collect_pointers(a, String::new(), &mut pointers);
    let pointer = at.get(&pointers).clone();
    let mut b = a.clone();
    if let Some(node) = b.pointer_mut(&pointer) {
        *node = graft;
    }
    b
}

fn collect_pointers(value: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                collect_pointers(item, format!("{here}/{index}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                collect_pointers(item, format!("{here}/{escaped}"), out);
            }
        }
        _ => {}
    }
}

/// A difference found, its values turned back into `Value`s to set beside the documents.
struct Change {
    path: String,
    generalised: String,
    kind: DiffKind,
    left: Option<Value>,
    right: Option<Value>,
}

/// The differences of two documents, as the trees the analysis walks, and the patch they make. (The trees are
/// converted from the documents, not parsed from their text: a float's text does not always read back to the
/// same float. That the parse reads what serde_json reads is a property of its own below.)
fn diff_documents(
    a: &Value,
    b: &Value,
    options: JsonOptions,
) -> (Vec<Change>, Vec<PatchOperation>) {
    let (a_tree, b_tree) = (tree::Node::from(a), tree::Node::from(b));
    let found = diff(&a_tree, &b_tree, options, &EndpointRules::default(), "body");
    let patch = as_patch(&found, "body");
    let changes = found
        .into_iter()
        .map(|c| Change {
            path: c.path,
            generalised: c.generalised,
            kind: c.kind,
            left: c.left.map(tree::Node::to_value),
            right: c.right.map(tree::Node::to_value),
        })
        .collect();
    (changes, patch)
}

fn changes(a: &Value, b: &Value, options: JsonOptions) -> Vec<Change> {
    diff_documents(a, b, options).0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_tree_reads_what_serde_json_reads(a in json_value(), spaced in any::<bool>()) {
        let text = if spaced { serde_json::to_string_pretty(&a).unwrap() } else { a.to_string() };
        let read: Value = serde_json::from_str(&text).unwrap();
        let parsed = tree::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed.to_value(), read.clone());
        prop_assert_eq!(parsed.to_string(), read.to_string());
        prop_assert_eq!(parsed, tree::Node::from(&read));
    }

    #[test]
    fn a_document_does_not_differ_from_itself(a in json_value()) {
        prop_assert!(changes(&a, &a, STRICT).is_empty());
        prop_assert!(changes(&a, &a, LENIENT).is_empty());
    }

    #[test]
    fn the_two_directions_mirror_each_other((a, b) in json_pair()) {
        let forward: BTreeSet<(String, DiffKind, Option<String>, Option<String>)> = changes(&a, &b, STRICT)
            .iter()
            .map(|c| (c.path.clone(), c.kind, c.left.as_ref().map(Value::to_string), c.right.as_ref().map(Value::to_string)))
            .collect();
        let backward: BTreeSet<(String, DiffKind, Option<String>, Option<String>)> = changes(&b, &a, STRICT)
            .iter()
            .map(|c| (c.path.clone(), c.kind.mirrored(), c.right.as_ref().map(Value::to_string), c.left.as_ref().map(Value::to_string)))
            .collect();
        prop_assert_eq!(forward, backward);
    }

    #[test]
    fn applying_the_differences_turns_one_document_into_the_other((a, b) in json_pair()) {
        let (found, patch) = diff_documents(&a, &b, STRICT);
        prop_assert_eq!(found.is_empty(), a == b);
        let mut patched = a.clone();
        json_patch::patch(&mut patched, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&patched, &b);

        // Leniently, numbers of equal value are equal: what remains after the patch is only such numbers.
        let (_, lenient) = diff_documents(&a, &b, LENIENT);
        let mut patched = a.clone();
        json_patch::patch(&mut patched, &lenient).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(changes(&patched, &b, LENIENT).is_empty());
    }

    #[test]
    fn keeping_a_few_examples_per_place_loses_no_place((a, b) in json_pair()) {
        let key = |c: &Change| (c.generalised.clone(), c.kind);
        let all: BTreeSet<(String, DiffKind)> = changes(&a, &b, STRICT).iter().map(key).collect();
        let capped_options = JsonOptions { examples_per_path: Some(1), ..STRICT };
        let capped = changes(&a, &b, capped_options);
        let kept: BTreeSet<(String, DiffKind)> = capped.iter().map(key).collect();
        prop_assert_eq!(kept, all);
        for (place, count) in capped.iter().map(key).fold(std::collections::BTreeMap::new(), |mut m, k| {
            *m.entry(k).or_insert(0) += 1;
            m
        }) {
            prop_assert_eq!(count, 1, "{:?}", place);
        }
    }

    #[test]
    fn every_difference_points_where_the_documents_differ((a, b) in json_pair()) {
        for change in changes(&a, &b, STRICT) {
            let pointer = change.path.strip_prefix("body").unwrap();
            match change.kind {
                DiffKind::Missing => {
                    prop_assert_eq!(a.pointer(pointer), change.left.as_ref());
                    prop_assert!(b.pointer(pointer).is_none() || matches!(b.pointer(pointer.rsplit_once('/').unwrap().0), Some(Value::Array(_))));
                }
                DiffKind::Extra => {
                    prop_assert_eq!(b.pointer(pointer), change.right.as_ref());
                }
                _ => {
                    prop_assert_eq!(a.pointer(pointer), change.left.as_ref());
                    prop_assert_eq!(b.pointer(pointer), change.right.as_ref());
                    prop_assert_ne!(&change.left, &change.right);
                }
            }
            // The generalised path is the concrete one with array indices as `*` (and identifier-like keys as
            // `{id}`), segment by segment.
            let concrete: Vec<&str> = change.path.split('/').collect();
            let generalised: Vec<&str> = change.generalised.split('/').collect();
            prop_assert_eq!(concrete.len(), generalised.len());
            let mut node = Some(&a);
            for (position, (c, g)) in concrete.iter().zip(&generalised).enumerate().skip(1) {
                let in_array = matches!(node, Some(Value::Array(_)));
                match *g {
                    "*" => prop_assert!(in_array && c.parse::<usize>().is_ok(), "{} in {}", g, change.path),
                    "{id}" => prop_assert!(!in_array && shadowdiff::identifier::is_identifier(c)),
                    _ => prop_assert_eq!(c, g),
                }
                let pointer = format!("/{}", concrete[1..=position].join("/"));
                node = a.pointer(&pointer).or_else(|| b.pointer(&pointer));
            }
            if change.kind == DiffKind::ArrayOrder {
                let sorted = |value: Option<&Value>| {
                    let mut items: Vec<String> =
                        value.and_then(Value::as_array).into_iter().flatten().map(Value::to_string).collect();
                    items.sort();
                    items
                };
                prop_assert_eq!(sorted(change.left.as_ref()), sorted(change.right.as_ref()));
            }
        }
    }
}
