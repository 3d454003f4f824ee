//! The JSON diff tested: paths and kinds, arrays, numbers, escaping, rules on the walk, rendering and patches.

use super::*;
use crate::analysis::rules::{RuleSet, RuleSpec};
use serde_json::{Value, json};

/// The tree of a value, as the walk sees it.
fn tree(value: &Value) -> Node<'_> {
    Node::from(value)
}

fn changes(a: &Value, b: &Value) -> Vec<(String, String, DiffKind)> {
    diff(
        &tree(a),
        &tree(b),
        JsonOptions::default(),
        &EndpointRules::default(),
        "body",
    )
    .into_iter()
    .map(|c| (c.path, c.generalised, c.kind))
    .collect()
}

/// The changes with numbers compared strictly (`1` and `1.0` differ) and every example kept.
fn strict_diff<'a>(a: &'a Node<'a>, b: &'a Node<'a>) -> Vec<JsonChange<'a>> {
    diff(
        a,
        b,
        JsonOptions {
            strict_numbers: true,
            examples_per_path: None,
        },
        &EndpointRules::default(),
        "body",
    )
}

fn kinds_at(a: &Value, b: &Value) -> Vec<(String, DiffKind)> {
    changes(a, b)
        .into_iter()
        .map(|(path, _, kind)| (path, kind))
        .collect()
}

/// The places and kinds found, in any order, are these.
fn assert_kinds(mut found: Vec<(String, DiffKind)>, expected: &[(&str, DiffKind)]) {
    found.sort();
    let expected: Vec<(String, DiffKind)> = expected
        .iter()
        .map(|(path, kind)| (path.to_string(), *kind))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn typed_differences_at_pointer_paths() {
    let a = json!({"user": {"name": "ada", "age": 36, "tags": ["x"], "id": 1}, "gone": true});
    let b = json!({"user": {"name": "bob", "age": "36", "tags": ["x"], "id": 1}, "new": null});
    assert_kinds(
        kinds_at(&a, &b),
        &[
            ("body/gone", DiffKind::Missing),
            ("body/new", DiffKind::Extra),
            ("body/user/age", DiffKind::TypeChanged),
            ("body/user/name", DiffKind::ValueChanged),
        ],
    );
}

#[test]
fn array_indices_are_generalised_and_lengths_reported() {
    let a = json!({"items": [{"price": 1}, {"price": 2}, {"price": 3}]});
    let b = json!({"items": [{"price": 1}, {"price": 5}]});
    let found = changes(&a, &b);
    assert!(found.contains(&(
        "body/items/1/price".into(),
        "body/items/*/price".into(),
        DiffKind::ValueChanged
    )));
    assert!(found.contains(&(
        "body/items".into(),
        "body/items".into(),
        DiffKind::ArrayLength
    )));
    assert!(found.contains(&(
        "body/items/2".into(),
        "body/items/*".into(),
        DiffKind::Missing
    )));
    assert_eq!(found.len(), 3);
}

#[test]
fn a_reordering_is_one_array_order_difference() {
    let a = json!({"tags": ["a", "b", "c"]});
    let b = json!({"tags": ["c", "a", "b"]});
    assert_eq!(
        kinds_at(&a, &b),
        vec![("body/tags".to_string(), DiffKind::ArrayOrder)]
    );
    // Same length but another element: element-wise, not an order change.
    let c = json!({"tags": ["c", "a", "z"]});
    assert!(
        kinds_at(&a, &c)
            .iter()
            .all(|(_, kind)| *kind == DiffKind::ValueChanged)
    );
}

#[test]
fn integers_and_floats_of_equal_value_are_equal_unless_strict() {
    let a = json!({"n": 1, "big": 9007199254740993u64});
    let b = json!({"n": 1.0, "big": 9007199254740992u64});
    assert_eq!(
        kinds_at(&a, &b),
        vec![("body/big".to_string(), DiffKind::ValueChanged)]
    );
    let (a_tree, b_tree) = (tree(&a), tree(&b));
    let strict = strict_diff(&a_tree, &b_tree);
    assert_eq!(strict.len(), 2);
}

#[test]
fn keys_are_escaped_per_rfc_6901() {
    let a = json!({"a/b": 1, "m~n": 2});
    let b = json!({"a/b": 2, "m~n": 3});
    let mut found = kinds_at(&a, &b);
    found.sort();
    assert_eq!(found[0].0, "body/a~1b");
    assert_eq!(found[1].0, "body/m~0n");
}

#[test]
fn rules_apply_during_the_walk() {
    let rules = RuleSet::new(
        [
            r#"{"path":"body/updated","action":"ignore"}"#,
            r#"{"path":"body/prices/*","action":"tolerance","absolute":0.01}"#,
            r#"{"path":"body/tags","action":"unordered"}"#,
            r#"{"path":"body/session","action":"presence-only"}"#,
            r#"{"path":"body/score","action":"type-only"}"#,
        ]
        .iter()
        .map(|text| {
            crate::analysis::rules::Rule::new(serde_json::from_str::<RuleSpec>(text).unwrap())
                .unwrap()
        })
        .collect(),
    );
    let rules = rules.for_endpoint("GET /x");
    let a = json!({"updated": 1, "prices": [1.0, 2.0], "tags": ["a", "b", "b"], "session": "s1", "score": 1});
    let b = json!({"updated": 2, "prices": [1.005, 2.5], "tags": ["b", "a", "c"], "session": "s2", "score": 2});
    let found = diff(&tree(&a), &tree(&b), JsonOptions::default(), &rules, "body")
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    assert_kinds(
        found,
        &[
            ("body/prices/1", DiffKind::ValueChanged),
            // The element left over on each side of the unordered array, paired and compared.
            ("body/tags/2", DiffKind::ValueChanged),
        ],
    );
    let missing_session =
        json!({"updated": 1, "prices": [1.0, 2.0], "tags": ["a", "b", "b"], "score": "x"});
    let found: Vec<(String, DiffKind)> = diff(
        &tree(&a),
        &tree(&missing_session),
        JsonOptions::default(),
        &rules,
        "body",
    )
    .into_iter()
    .map(|c| (c.path, c.kind))
    .collect();
    assert!(found.contains(&("body/session".to_string(), DiffKind::Missing)));
    assert!(found.contains(&("body/score".to_string(), DiffKind::TypeChanged)));
}

#[test]
fn differences_render_with_compatibility_classes() {
    let a = json!({"id": 7, "items": [1, 2]});
    let b = json!({"id": "7", "items": [1, 2, 3]});
    let (a_tree, b_tree) = (tree(&a), tree(&b));
    let found = diff(
        &a_tree,
        &b_tree,
        JsonOptions::default(),
        &EndpointRules::default(),
        "body",
    );
    let rendered: Vec<Difference> = found.iter().map(JsonChange::to_difference).collect();
    let id = rendered.iter().find(|d| d.path == "body/id").unwrap();
    assert_eq!(id.compat, Compat::Breaking);
    assert_eq!(id.primary.as_deref(), Some("number 7"));
    assert_eq!(id.other.as_deref(), Some("string \"7\""));
    let length = rendered
        .iter()
        .find(|d| d.kind == DiffKind::ArrayLength)
        .unwrap();
    assert_eq!(
        (length.primary.as_deref(), length.other.as_deref()),
        (Some("2"), Some("3"))
    );
    let extra = rendered.iter().find(|d| d.kind == DiffKind::Extra).unwrap();
    assert_eq!(extra.compat, Compat::Additive);
}

#[test]
fn the_patch_turns_primary_into_the_other_side() {
    let a = json!({"a": [1, 2, 3, 4], "b": {"c": 1}, "d": "x"});
    let b = json!({"a": [1, 9], "b": {"c": [1]}, "e": {"f": 2}});
    let (a_tree, b_tree) = (tree(&a), tree(&b));
    let found = strict_diff(&a_tree, &b_tree);
    let mut patched = a.clone();
    json_patch::patch(&mut patched, &as_patch(&found, "body")).unwrap();
    assert_eq!(patched, b);
}
