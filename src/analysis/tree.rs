//! The parse tree the JSON diff walks: strings borrowed from the body, containers sized exactly, object keys
//! sorted once, so that building it costs a fraction of a `serde_json::Value`.
//!
//! `serde_json::Value` allocates every string and key and a B-tree node per few entries; here a string without
//! escapes points into the body, and each array or object is one allocation of exactly its length (children are
//! gathered on a stack shared by the whole parse, then moved out). Parsing goes through serde_json's own
//! deserializer, so what is valid JSON, the nesting limit (128) and how numbers read are serde_json's.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// A JSON value borrowing its text from the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Box<[Node<'a>]>),
    /// Entries sorted by key, each key once (the last of duplicates wins, as in `serde_json::Value`).
    Object(Box<[(Cow<'a, str>, Node<'a>)]>),
}

/// An object's entries, sorted by key.
pub type Entries<'a> = [(Cow<'a, str>, Node<'a>)];

/// Bytes a tree holds per value at most, besides the text of strings with escapes: an object entry (its key
/// and its node) is the largest slot a value takes.
pub const BYTES_PER_VALUE: usize = size_of::<(Cow<'static, str>, Node<'static>)>();

/// Parses a JSON document; errors are serde_json's (a nesting deeper than 128 levels says "recursion limit").
pub fn parse(bytes: &[u8]) -> Result<Node<'_>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut stacks = Stacks::default();
    let node = NodeSeed(&mut stacks).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(node)
}

impl<'a> Node<'a> {
    /// An object of these entries, sorted by key, the last of duplicate keys winning (as a parse does): for
    /// trees read from formats other than JSON.
    pub fn object(mut entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Self {
        // A stable sort keeps duplicates in document order, so the last of each run is the one kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match unique.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => unique.push(entry),
            }
        }
        Node::Object(unique.into_boxed_slice())
    }

    /// The number as `f64`, when this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Node::Number(number) => number.as_f64(),
            _ => None,
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Node::Number(_))
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Node::Array(_))
    }

    /// The elements, when this is an array.
    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The JSON type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Number(_) => "number",
            Node::String(_) => "string",
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }

    /// The same value as a `serde_json::Value` (for patches, which are built of those).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(number) => Value::Number(number.clone()),
            Node::String(text) => Value::String(text.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(key, node)| (key.to_string(), node.to_value()))
                    .collect(),
            ),
        }
    }
}

/// The entry under `key` of sorted entries.
pub fn get<'n, 'a>(entries: &'n Entries<'a>, key: &str) -> Option<&'n Node<'a>> {
    entries
        .binary_search_by(|(probe, _)| probe.as_ref().cmp(key))
        .ok()
        .map(|index| &entries[index].1)
}

/// Borrows a `Value`'s strings (objects come sorted from its map).
impl<'a> From<&'a Value> for Node<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(number) => Node::Number(number.clone()),
            Value::String(text) => Node::String(Cow::Borrowed(text)),
            Value::Array(items) => Node::Array(items.iter().map(Node::from).collect()),
            Value::Object(map) => {
                let mut entries: Vec<_> = map
                    .iter()
                    .map(|(key, node)| (Cow::Borrowed(key.as_str()), Node::from(node)))
                    .collect();
                entries.sort_by(|(a, _), (b, _)| a.cmp(b));
                Node::Object(entries.into_boxed_slice())
            }
        }
    }
}

/// Compact JSON, keys in sorted order (as `serde_json::Value` writes them).
impl fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Number(number) => number.serialize(serializer),
            Node::String(text) => serializer.serialize_str(text),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, node) in entries {
                    map.serialize_entry(key.as_ref(), node)?;
                }
                map.end()
            }
        }
    }
}

/// Children of the containers being parsed, shared by the whole parse so that a container is allocated once,
/// at its exact length, when it closes.
#[derive(Default)]
struct Stacks<'de> {
    items: Vec<Node<'de>>,
    entries: Vec<(Cow<'de, str>, Node<'de>)>,
}

struct NodeSeed<'s, 'de>(&'s mut Stacks<'de>);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Node<'de>, E> {
        // serde_json hands only finite floats to a visitor; a non-finite one would have no JSON form.
        Ok(Number::from_f64(f).map_or(Node::Null, Node::Number))
    }

    // Strings are read as keys are: borrowed from the body when they have no escapes.
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Node<'de>, E> {
        KeySeed.visit_borrowed_str(text).map(Node::String)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Node<'de>, E> {
        KeySeed.visit_str(text).map(Node::String)
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Node<'de>, E> {
        KeySeed.visit_string(text).map(Node::String)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let stacks = self.0;
        let start = stacks.items.len();
        while let Some(item) = seq.next_element_seed(NodeSeed(stacks))? {
            stacks.items.push(item);
        }
        Ok(Node::Array(stacks.items.drain(start..).collect()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let stacks = self.0;
        let start = stacks.entries.len();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let node = map.next_value_seed(NodeSeed(stacks))?;
            stacks.entries.push((key, node));
        }
        let opened = &mut stacks.entries[start..];
        // Stable, so that among equal keys the last one parsed stays last.
        opened.sort_by(|(a, _), (b, _)| a.cmp(b));
        let unique = opened.windows(2).all(|pair| pair[0].0 != pair[1].0);
        if unique {
            return Ok(Node::Object(stacks.entries.drain(start..).collect()));
        }
        let mut kept: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        for entry in stacks.entries.drain(start..) {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        Ok(Node::Object(kept.into_boxed_slice()))
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E>(self, text: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(text: &str) -> String {
        parse(text.as_bytes()).unwrap().to_string()
    }

    #[test]
    fn parses_to_what_serde_json_reads() {
        let documents = [
            r#"{"b": [1, -2, 3.5, 1e400000000], "a": {"z": null, "y": true}}"#,
            r#"[18446744073709551616, -9223372036854775809, 0.1, -0.0, 12345678901234567890]"#,
            r#"{"esc\"aped": "line\nbreak \u00e9", "plain": "x"}"#,
            r#""just a string""#,
            "[]",
            "{}",
        ];
        for text in documents {
            let expected: Result<Value, _> = serde_json::from_str(text);
            match expected {
                Ok(value) => {
                    assert_eq!(parse(text.as_bytes()).unwrap().to_value(), value, "{text}")
                }
                Err(_) => assert!(parse(text.as_bytes()).is_err(), "{text}"),
            }
        }
    }

    #[test]
    fn adjacent_floats_read_as_the_values_their_texts_name() {
        // Two neighbouring doubles: a parser that rounds the last step wrongly reads both texts as one value,
        // and the diff would call a changed number equal.
        let (a, b) = ("1.0158414948377523", "1.0158414948377525");
        let (x, y) = (parse(a.as_bytes()).unwrap(), parse(b.as_bytes()).unwrap());
        assert_ne!(x, y);
        assert_eq!(x.to_string(), a);
        assert_eq!(y.to_string(), b);
    }

    #[test]
    fn keys_are_sorted_and_the_last_duplicate_wins() {
        assert_eq!(
            round_trip(r#"{"b":1,"a":2,"b":3,"c":{"y":1,"x":2}}"#),
            r#"{"a":2,"b":3,"c":{"x":2,"y":1}}"#
        );
        let value: Value = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(value.to_string(), round_trip(r#"{"b":1,"a":2,"b":3}"#));
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let bytes = br#"{"plain": "text", "esc\taped": "a\"b"}"#;
        let Node::Object(entries) = parse(bytes).unwrap() else {
            panic!("an object");
        };
        let borrowed: Vec<bool> = entries
            .iter()
            .flat_map(|(key, node)| {
                let Node::String(text) = node else {
                    panic!("strings");
                };
                [
                    matches!(key, Cow::Borrowed(_)),
                    matches!(text, Cow::Borrowed(_)),
                ]
            })
            .collect();
        assert_eq!(borrowed, [false, false, true, true]);
    }

    #[test]
    fn invalid_and_too_deep_documents_are_errors() {
        assert!(parse(b"{\"a\": }").is_err());
        assert!(parse(b"[1] trailing").is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let error = parse(deep.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("recursion limit"), "{error}");
        let shallow = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(shallow.as_bytes()).is_ok());
    }

    #[test]
    fn a_value_converts_to_the_same_tree_as_its_text() {
        let value = json!({"k": [1, {"b": "x", "a": 2.5}], "e": ""});
        let text = value.to_string();
        assert_eq!(Node::from(&value), parse(text.as_bytes()).unwrap());
        let Node::Object(entries) = Node::from(&value) else {
            panic!("an object");
        };
        assert_eq!(get(&entries, "k").map(Node::type_name), Some("array"));
        assert_eq!(get(&entries, "missing"), None);
    }
}
