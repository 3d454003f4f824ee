//! When two JSON values are equal as the walk sees them: numbers by value (unless strict), and hashes that agree.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Number;

use crate::analysis::tree::Node;

/// Equality as the walk sees it without rules (numbers by [`numbers_equal`], arrays in order), stopping at the
/// first difference.
pub(super) fn values_equal(a: &Node<'_>, b: &Node<'_>, strict: bool) -> bool {
    match (a, b) {
        (Node::Number(x), Node::Number(y)) => numbers_equal(x, y, strict),
        (Node::String(x), Node::String(y)) => x == y,
        (Node::Bool(x), Node::Bool(y)) => x == y,
        (Node::Null, Node::Null) => true,
        (Node::Array(x), Node::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b, strict))
        }
        (Node::Object(x), Node::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, a), (kb, b))| ka == kb && values_equal(a, b, strict))
        }
        _ => false,
    }
}

/// An integer value of a number, exactly: integers as they are, floats with no fractional part.
fn exact_integer(number: &Number) -> Option<i128> {
    if let Some(i) = number.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = number.as_u64() {
        return Some(i128::from(u));
    }
    let f = number.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1.0e38).then_some(f as i128)
}

/// Numbers of equal value are equal; with `strict`, `1` and `1.0` are not. Integers compare exactly (no
/// rounding through `f64` for large values).
pub fn numbers_equal(x: &Number, y: &Number, strict: bool) -> bool {
    if strict {
        return x == y;
    }
    match (exact_integer(x), exact_integer(y)) {
        (Some(a), Some(b)) => a == b,
        (Some(_), None) | (None, Some(_)) => false,
        (None, None) => match (x.as_f64(), y.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => x == y,
        },
    }
}

/// A hash under which values that compare equal hash equal (objects key-ordered, numbers by value unless
/// strict). Equal hashes are trusted to mean equal values: a 64-bit collision is not a practical risk here.
pub(super) fn canonical_hash(value: &Node<'_>, strict: bool) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_into(value, strict, &mut hasher);
    hasher.finish()
}

pub(super) fn hash_into(value: &Node<'_>, strict: bool, hasher: &mut DefaultHasher) {
    match value {
        Node::Null => 0u8.hash(hasher),
        Node::Bool(b) => (1u8, b).hash(hasher),
        Node::Number(n) => {
            2u8.hash(hasher);
            hash_number(n, strict, hasher);
        }
        Node::String(s) => (3u8, s).hash(hasher),
        Node::Array(items) => {
            (4u8, items.len()).hash(hasher);
            for item in items {
                hash_into(item, strict, hasher);
            }
        }
        Node::Object(map) => {
            (5u8, map.len()).hash(hasher);
            for (key, item) in map {
                key.hash(hasher);
                hash_into(item, strict, hasher);
            }
        }
    }
}

/// Numbers hash by value: integers (and, unless strict, integral floats) exactly; other floats by their bits,
/// with -0.0 as 0.0.
fn hash_number(number: &Number, strict: bool, hasher: &mut DefaultHasher) {
    let float_bits = |f: f64| {
        if f == 0.0 {
            0.0f64.to_bits()
        } else {
            f.to_bits()
        }
    };
    if strict {
        match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(i), _, _) => ('i', i128::from(i)).hash(hasher),
            (None, Some(u), _) => ('i', i128::from(u)).hash(hasher),
            (_, _, f) => ('f', float_bits(f.unwrap_or(0.0))).hash(hasher),
        }
        return;
    }
    match exact_integer(number) {
        Some(integer) => ('i', integer).hash(hasher),
        None => ('f', float_bits(number.as_f64().unwrap_or(0.0))).hash(hasher),
    }
}
