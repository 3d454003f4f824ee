//! Structural JSON diff: typed differences at JSON Pointer paths, with the endpoint's rules applied on the way.
//!
//! Arrays compare element by element (a tail that grew or shrank is `array_length` plus `extra`/`missing`
//! elements; the same elements in another order are one `array_order`); with an `unordered` rule they compare
//! as multisets under the rules of their elements. Generalised paths replace array indices with `*` and
//! identifier-like object keys (`"123"`, UUIDs) with `{id}`, and the keys of objects learned as maps
//! ([`crate::analysis::keys`]) with `{key}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};

use crate::analysis::compat::Compat;
use crate::analysis::diff::{DiffKind, Difference, render_json};
use crate::analysis::keys::{KEY, LearnedKeys};
use crate::analysis::rules::{EndpointRules, RuleAction};
use crate::analysis::tree::{self, Entries, Node};
use crate::identifier::is_identifier;

mod equality;
pub use equality::numbers_equal;
use equality::{canonical_hash, hash_into, values_equal};

/// How JSON values are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonOptions {
    /// `1` and `1.0` differ (by default numbers of equal value are equal, whatever their notation).
    pub strict_numbers: bool,
    /// Concrete differences kept per (generalised path, kind); the rest only count. `None` keeps all (a
    /// document whose array gained an element at the front would otherwise give one difference per field
    /// of every element).
    pub examples_per_path: Option<usize>,
}

impl Default for JsonOptions {
    fn default() -> Self {
        Self {
            strict_numbers: false,
            examples_per_path: Some(DEFAULT_EXAMPLES_PER_PATH),
        }
    }
}

/// Concrete differences kept per (generalised path, kind) by default.
pub const DEFAULT_EXAMPLES_PER_PATH: usize = 3;
/// Distinct (generalised path, kind) pairs kept per document; a document past this is compared no further.
pub const MAX_DISTINCT_PATHS: usize = 1024;

/// A difference found in JSON, borrowing both values in full (for patches and for rendering).
#[derive(Clone, Debug, PartialEq)]
pub struct JsonChange<'a> {
    /// Concrete path, starting with the prefix given to [`diff`] (`body/items/3/price`).
    pub path: String,
    /// The same with array indices as `*` and identifier-like keys as `{id}`.
    pub generalised: String,
    pub kind: DiffKind,
    /// Primary's value (for `array_length` and `array_order`, the whole array).
    pub left: Option<&'a Node<'a>>,
    /// The other side's value.
    pub right: Option<&'a Node<'a>>,
}

impl JsonChange<'_> {
    /// The stored form: values rendered and truncated, compatibility class decided.
    pub fn to_difference(&self) -> Difference {
        let render = |value: Option<&Node>| {
            value.map(|value| match (self.kind, value) {
                (DiffKind::ArrayLength, Node::Array(items)) => items.len().to_string(),
                (DiffKind::TypeChanged, value) => {
                    format!("{} {}", value.type_name(), render_json(value))
                }
                _ => render_json(value),
            })
        };
        let primary = render(self.left);
        let other = render(self.right);
        Difference {
            path: self.path.clone(),
            generalised: self.generalised.clone(),
            kind: self.kind,
            compat: Compat::classify(self.kind, &self.path, primary.as_deref(), other.as_deref()),
            primary,
            other,
        }
    }
}

/// Compares two JSON documents; paths start with `prefix` (`body`).
pub fn diff<'a>(
    left: &'a Node<'a>,
    right: &'a Node<'a>,
    options: JsonOptions,
    rules: &EndpointRules<'_>,
    prefix: &str,
) -> Vec<JsonChange<'a>> {
    diff_keyed(left, right, options, rules, &LearnedKeys::default(), prefix)
}

/// Compares as [`diff`] does, the keys of objects at `keys`' learned positions generalised as `{key}`.
pub fn diff_keyed<'a>(
    left: &'a Node<'a>,
    right: &'a Node<'a>,
    options: JsonOptions,
    rules: &EndpointRules<'_>,
    keys: &LearnedKeys,
    prefix: &str,
) -> Vec<JsonChange<'a>> {
    let mut walker = Walker {
        options,
        rules,
        keys,
        rule_cache: HashMap::new(),
        path: prefix.to_string(),
        generalised: prefix.to_string(),
        out: Vec::new(),
        examples: HashMap::new(),
        distinct: 0,
        found: 0,
        probing: false,
    };
    walker.node(left, right);
    walker.out
}

struct Walker<'r, 'a> {
    options: JsonOptions,
    rules: &'r EndpointRules<'r>,
    /// The endpoint's object positions whose keys are `{key}`.
    keys: &'r LearnedKeys,
    /// The rule at each generalised path seen, so that patterns are matched once per path, not per node.
    rule_cache: HashMap<String, Option<RuleAction>>,
    path: String,
    generalised: String,
    out: Vec<JsonChange<'a>>,
    /// Differences kept per generalised path, by kind ([`kind_slot`]): looked up by `&str`, so that finding
    /// a path already seen allocates nothing.
    examples: HashMap<String, [usize; DiffKind::ALL.len()]>,
    /// Distinct (generalised path, kind) pairs in `examples`.
    distinct: usize,
    /// Differences found, kept or not.
    found: usize,
    /// Only finding out whether two values differ: nothing is kept.
    probing: bool,
}

impl<'a> Walker<'_, 'a> {
    fn emit(&mut self, kind: DiffKind, left: Option<&'a Node<'a>>, right: Option<&'a Node<'a>>) {
        self.found += 1;
        if self.probing {
            return;
        }
        if let Some(limit) = self.options.examples_per_path {
            let slot = kind_slot(kind);
            match self.examples.get_mut(self.generalised.as_str()) {
                Some(kept) if kept[slot] >= limit => return,
                Some(kept) if kept[slot] > 0 => kept[slot] += 1,
                _ if self.distinct >= MAX_DISTINCT_PATHS => return,
                Some(kept) => {
                    kept[slot] = 1;
                    self.distinct += 1;
                }
                None => {
                    let mut kept = [0; DiffKind::ALL.len()];
                    kept[slot] = 1;
                    self.examples.insert(self.generalised.clone(), kept);
                    self.distinct += 1;
                }
            }
        }
        self.out.push(JsonChange {
            path: self.path.clone(),
            generalised: self.generalised.clone(),
            kind,
            left,
            right,
        });
    }

    /// Drops the differences kept since `mark` (and gives their example slots back).
    fn discard_since(&mut self, mark: usize) {
        for change in self.out.drain(mark..) {
            if let Some(kept) = self.examples.get_mut(change.generalised.as_str()) {
                kept[kind_slot(change.kind)] -= 1;
            }
        }
    }

    fn rule(&mut self) -> Option<RuleAction> {
        if self.rules.is_empty() {
            return None;
        }
        if let Some(cached) = self.rule_cache.get(&self.generalised) {
            return cached.clone();
        }
        let rule = self.rules.at(&self.generalised).cloned();
        self.rule_cache
            .insert(self.generalised.clone(), rule.clone());
        rule
    }

    fn node(&mut self, a: &'a Node<'a>, b: &'a Node<'a>) {
        match self.rule() {
            Some(RuleAction::Ignore | RuleAction::PresenceOnly) => return,
            Some(RuleAction::TypeOnly) => {
                if a.type_name() != b.type_name() {
                    self.emit(DiffKind::TypeChanged, Some(a), Some(b));
                }
                return;
            }
            Some(RuleAction::Tolerance { absolute, relative }) => {
                if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64())
                    && RuleAction::within_tolerance(absolute, relative, x, y)
                {
                    return;
                }
            }
            Some(RuleAction::Unordered) => {
                if let (Node::Array(x), Node::Array(y)) = (a, b) {
                    self.unordered(a, b, x, y);
                    return;
                }
            }
            Some(RuleAction::Noise | RuleAction::Accept { .. }) | None => {}
        }
        match (a, b) {
            (Node::Object(x), Node::Object(y)) => self.objects(x, y),
            (Node::Array(x), Node::Array(y)) => self.arrays(a, b, x, y),
            (Node::Number(x), Node::Number(y)) => {
                if !numbers_equal(x, y, self.options.strict_numbers) {
                    self.emit(DiffKind::ValueChanged, Some(a), Some(b));
                }
            }
            (Node::String(x), Node::String(y)) => {
                if x != y {
                    self.emit(DiffKind::ValueChanged, Some(a), Some(b));
                }
            }
            (Node::Bool(x), Node::Bool(y)) => {
                if x != y {
                    self.emit(DiffKind::ValueChanged, Some(a), Some(b));
                }
            }
            (Node::Null, Node::Null) => {}
            _ => self.emit(DiffKind::TypeChanged, Some(a), Some(b)),
        }
    }

    /// Emits a missing or extra value unless a rule ignores this path.
    fn presence(
        &mut self,
        kind: DiffKind,
        left: Option<&'a Node<'a>>,
        right: Option<&'a Node<'a>>,
    ) {
        if !matches!(self.rule(), Some(RuleAction::Ignore)) {
            self.emit(kind, left, right);
        }
    }

    fn objects(&mut self, x: &'a Entries<'a>, y: &'a Entries<'a>) {
        let mut shared = 0;
        let map = self.is_map();
        for (key, a) in x {
            let mark = self.push_key(key, map);
            match tree::get(y, key) {
                Some(b) => {
                    shared += 1;
                    self.node(a, b);
                }
                None => self.presence(DiffKind::Missing, Some(a), None),
            }
            self.pop(mark);
        }
        // Every key of `y` was in `x`: nothing extra, no second round of lookups.
        if shared == y.len() {
            return;
        }
        for (key, b) in y {
            if tree::get(x, key).is_none() {
                let mark = self.push_key(key, map);
                self.presence(DiffKind::Extra, None, Some(b));
                self.pop(mark);
            }
        }
    }

    fn arrays(&mut self, a: &'a Node<'a>, b: &'a Node<'a>, x: &'a [Node<'a>], y: &'a [Node<'a>]) {
        let common = x.len().min(y.len());
        let (mark_out, found_before) = (self.out.len(), self.found);
        let mut first_differing = None;
        for index in 0..common {
            let mark = self.push_index(index);
            let found = self.found;
            self.node(&x[index], &y[index]);
            if first_differing.is_none() && self.found > found {
                first_differing = Some(index);
            }
            self.pop(mark);
        }
        if x.len() == y.len() {
            // Element-wise differences that are only a reordering are one difference, not many. A reordering
            // moves the first differing element elsewhere: looking for it first (comparisons stop at the first
            // difference) spares hashing both arrays whole when elements changed in place, the usual case.
            if let Some(index) = first_differing
                && self.has_equal(index, &x[index], y)
                && self.same_multiset(x, y)
            {
                self.discard_since(mark_out);
                self.found = found_before;
                self.emit(DiffKind::ArrayOrder, Some(a), Some(b));
            }
            return;
        }
        self.emit(DiffKind::ArrayLength, Some(a), Some(b));
        // Removals from the end backwards, so that the differences apply as a patch in order.
        for index in (common..x.len()).rev() {
            let mark = self.push_index(index);
            self.presence(DiffKind::Missing, Some(&x[index]), None);
            self.pop(mark);
        }
        for (index, value) in y.iter().enumerate().skip(common) {
            let mark = self.push_index(index);
            self.presence(DiffKind::Extra, None, Some(value));
            self.pop(mark);
        }
    }

    /// Compares arrays as multisets (under the rules of their elements): elements are matched with an equal
    /// counterpart; the elements left over are paired in order and compared, and the rest are missing or extra.
    fn unordered(
        &mut self,
        a: &'a Node<'a>,
        b: &'a Node<'a>,
        x: &'a [Node<'a>],
        y: &'a [Node<'a>],
    ) {
        let mut unmatched_right: HashMap<u64, Vec<usize>> = HashMap::new();
        for (index, value) in y.iter().enumerate().rev() {
            let hash = self.element_hash(index, value);
            unmatched_right.entry(hash).or_default().push(index);
        }
        let mut missing = Vec::new();
        for (index, value) in x.iter().enumerate() {
            let hash = self.element_hash(index, value);
            let candidates = unmatched_right.get(&hash).cloned().unwrap_or_default();
            // Equal hashes are confirmed by comparing: a tolerance makes unequal numbers hash alike.
            let matched = candidates
                .iter()
                .rev()
                .copied()
                .find(|&other| self.element_equal(index, value, &y[other]));
            match matched {
                Some(other) => take_matched(&mut unmatched_right, hash, other),
                None => missing.push(index),
            }
        }
        let mut extra: Vec<usize> = unmatched_right.into_values().flatten().collect();
        extra.sort_unstable();
        if x.len() != y.len() {
            self.emit(DiffKind::ArrayLength, Some(a), Some(b));
        }
        let paired = missing.len().min(extra.len());
        for (&left, &right) in missing.iter().zip(extra.iter()) {
            let mark = self.push_index(left);
            self.node(&x[left], &y[right]);
            self.pop(mark);
        }
        for &index in missing[paired..].iter().rev() {
            let mark = self.push_index(index);
            self.emit(DiffKind::Missing, Some(&x[index]), None);
            self.pop(mark);
        }
        for &index in &extra[paired..] {
            let mark = self.push_index(index);
            self.emit(DiffKind::Extra, None, Some(&y[index]));
            self.pop(mark);
        }
    }

    /// Whether `value`, element `index` of the left array, has an equal (under the rules) in `y`.
    fn has_equal(&mut self, index: usize, value: &'a Node<'a>, y: &'a [Node<'a>]) -> bool {
        if self.rules.is_empty() {
            let strict = self.options.strict_numbers;
            return y.iter().any(|other| values_equal(value, other, strict));
        }
        let mark = self.push_index(index);
        let found = y.iter().any(|other| self.probe_equal(value, other));
        self.pop(mark);
        found
    }

    /// Whether two values compare equal here, under the rules; nothing is emitted.
    fn probe_equal(&mut self, a: &'a Node<'a>, b: &'a Node<'a>) -> bool {
        let (probing, found) = (self.probing, self.found);
        self.probing = true;
        self.node(a, b);
        let equal = self.found == found;
        self.probing = probing;
        self.found = found;
        equal
    }

    /// Whether the two arrays hold the same elements (under the rules), in whatever order.
    fn same_multiset(&mut self, x: &'a [Node<'a>], y: &'a [Node<'a>]) -> bool {
        let mut unmatched: HashMap<u64, Vec<usize>> = HashMap::new();
        for (index, value) in y.iter().enumerate() {
            let hash = self.element_hash(index, value);
            unmatched.entry(hash).or_default().push(index);
        }
        for (index, value) in x.iter().enumerate() {
            let hash = self.element_hash(index, value);
            let Some(candidates) = unmatched.get(&hash).cloned() else {
                return false;
            };
            // Without rules equal hashes mean equal values; under rules (a tolerance) they are confirmed.
            let matched = if self.rules.is_empty() {
                candidates.last().copied()
            } else {
                candidates
                    .iter()
                    .copied()
                    .find(|&other| self.element_equal(index, value, &y[other]))
            };
            match matched {
                Some(other) => take_matched(&mut unmatched, hash, other),
                None => return false,
            }
        }
        true
    }

    /// Whether element `index` of the left array equals `other`, probed under the rules at the element's path.
    fn element_equal(&mut self, index: usize, value: &'a Node<'a>, other: &'a Node<'a>) -> bool {
        let mark = self.push_index(index);
        let equal = self.probe_equal(value, other);
        self.pop(mark);
        equal
    }

    /// The hash of an array element under the rules at its path.
    fn element_hash(&mut self, index: usize, value: &Node<'_>) -> u64 {
        if self.rules.is_empty() {
            return canonical_hash(value, self.options.strict_numbers);
        }
        let mark = self.push_index(index);
        let mut hasher = DefaultHasher::new();
        self.hash_under_rules(value, &mut hasher);
        self.pop(mark);
        hasher.finish()
    }

    /// Hashes a value so that values equal under the rules hash alike: ignored and presence-only parts count as
    /// present, type-only parts by their type, numbers under a tolerance as numbers, unordered arrays as
    /// multisets.
    fn hash_under_rules(&mut self, value: &Node<'_>, hasher: &mut DefaultHasher) {
        match self.rule() {
            Some(RuleAction::Ignore | RuleAction::PresenceOnly) => return 0xf0u8.hash(hasher),
            Some(RuleAction::TypeOnly) => return (0xf1u8, value.type_name()).hash(hasher),
            Some(RuleAction::Tolerance { .. }) if value.is_number() => return 0xf2u8.hash(hasher),
            Some(RuleAction::Unordered) if value.is_array() => {
                let items = value.as_array().unwrap_or_default();
                let mut hashes: Vec<u64> = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.element_hash(i, v))
                    .collect();
                hashes.sort_unstable();
                return (0xf3u8, hashes).hash(hasher);
            }
            _ => {}
        }
        match value {
            Node::Array(items) => {
                (4u8, items.len()).hash(hasher);
                for (index, item) in items.iter().enumerate() {
                    let mark = self.push_index(index);
                    self.hash_under_rules(item, hasher);
                    self.pop(mark);
                }
            }
            Node::Object(map) => {
                (5u8, map.len()).hash(hasher);
                let keyed = self.is_map();
                for (key, item) in map {
                    let mark = self.push_key(key, keyed);
                    key.hash(hasher);
                    self.hash_under_rules(item, hasher);
                    self.pop(mark);
                }
            }
            scalar => hash_into(scalar, self.options.strict_numbers, hasher),
        }
    }

    /// Whether the object at the current generalised path is a learned map (its keys are `{key}`).
    fn is_map(&self) -> bool {
        !self.keys.is_empty() && self.keys.contains(&self.generalised)
    }

    /// Appends an object key (escaped per RFC 6901) to both paths (`{key}` in the generalised one for any key
    /// of a learned `map`, `{id}` for identifier-like keys); returns the lengths to restore.
    fn push_key(&mut self, key: &str, map: bool) -> (usize, usize) {
        let mark = (self.path.len(), self.generalised.len());
        self.path.push('/');
        escape_into(&mut self.path, key);
        if map {
            self.generalised.push('/');
            self.generalised.push_str(KEY);
        } else if is_identifier(key) {
            self.generalised.push_str("/{id}");
        } else {
            self.generalised.push('/');
            escape_into(&mut self.generalised, key);
        }
        mark
    }

    /// Appends an array index: the number to the concrete path, `*` to the generalised one.
    fn push_index(&mut self, index: usize) -> (usize, usize) {
        let mark = (self.path.len(), self.generalised.len());
        // Writing into a String cannot fail.
        let _ = write!(self.path, "/{index}");
        self.generalised.push_str("/*");
        mark
    }

    fn pop(&mut self, (path, generalised): (usize, usize)) {
        self.path.truncate(path);
        self.generalised.truncate(generalised);
    }
}

fn escape_into(out: &mut String, key: &str) {
    if !key.bytes().any(|byte| byte == b'~' || byte == b'/') {
        out.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// The index of `kind` in [`DiffKind::ALL`], which lists the kinds in their declared order.
fn kind_slot(kind: DiffKind) -> usize {
    kind as usize
}

/// Memory a parse of `bytes` into a [`tree`] holds at most: a slot per value, plus the text of strings and keys
/// with escapes (the others point into `bytes`), which is unescaped into the parser's scratch buffer (up to
/// twice the longest such string, as it grows) and copied from there. The separators bound the number of
/// values, so the estimate costs one pass over the bytes and no parse.
pub fn tree_bytes(bytes: &[u8]) -> usize {
    /// A value takes a slot in its container and, while its container is open, one on the parse stack, whose
    /// capacity may be twice what it holds. An object entry counts two separators (`:` and `,`), so it is
    /// given 4 × 56 bytes for its 3 × 56 at most; an array element is given 2 × 56 for its 3 × 32.
    const PER_VALUE: usize = 2 * tree::BYTES_PER_VALUE;
    // Counted in chunks into a byte-sized counter, which the compiler turns into vector compares: this pass
    // runs before every parse.
    let separators: usize = bytes
        .chunks(255)
        .map(|chunk| {
            let count = chunk.iter().fold(0u8, |count, &byte| {
                count + u8::from(matches!(byte, b',' | b':' | b'[' | b'{'))
            });
            usize::from(count)
        })
        .sum();
    3 * bytes.len() + (separators + 1) * PER_VALUE
}

/// The changes as an RFC 6902 patch that turns primary's document into the other side's (paths without the
/// prefix). `array_length` needs no operation of its own: its element removals and additions carry it.
pub fn as_patch(changes: &[JsonChange<'_>], prefix: &str) -> Vec<PatchOperation> {
    changes
        .iter()
        .filter_map(|change| {
            let pointer = change.path.strip_prefix(prefix).unwrap_or(&change.path);
            let path = PointerBuf::parse(pointer).ok()?;
            match change.kind {
                DiffKind::ValueChanged | DiffKind::TypeChanged | DiffKind::ArrayOrder => {
                    Some(PatchOperation::Replace(ReplaceOperation {
                        path,
                        value: change.right?.to_value(),
                    }))
                }
                DiffKind::Missing => Some(PatchOperation::Remove(RemoveOperation { path })),
                DiffKind::Extra => Some(PatchOperation::Add(AddOperation {
                    path,
                    value: change.right?.to_value(),
                })),
                DiffKind::ArrayLength | DiffKind::Slower => None,
            }
        })
        .collect()
}

/// Takes a right-hand element that found its counterpart out of those still waiting for one.
fn take_matched(unmatched: &mut HashMap<u64, Vec<usize>>, hash: u64, matched: usize) {
    if let Some(list) = unmatched.get_mut(&hash) {
        list.retain(|&index| index != matched);
    }
}

#[cfg(test)]
mod tests;
