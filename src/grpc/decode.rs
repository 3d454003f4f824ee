//! gRPC messages as JSON the engine compares. With the method's schema: proto3 JSON with every field present (a
//! value set to zero is a changed value, not a missing one), and fields the schema lacks added under their
//! number, so that primary's schema stays the contract. Without one: the wire format itself, keyed by field
//! number, still compared structurally.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions, Value as Field};
use serde_json::{Map, Value};

use crate::budget::Charge;
use crate::grpc::frame;
use crate::grpc::schema::Schemas;

/// Bytes a decoded message and its JSON tree may hold per byte of it on the wire (a packed number, one byte on
/// the wire, is a tree node of tens of bytes): the worst case decoding is charged at.
const DECODE_FACTOR: usize = 64;

/// Charges decoding `messages` to `charge` at that worst case, before it starts; `None` when the budget cannot
/// hold it. Gives the charge's size before, to shrink back to once decoding is done.
pub fn charge_decoding(messages: &[Vec<u8>], charge: &mut Charge) -> Option<usize> {
    let held = charge.bytes();
    let wire: usize = messages.iter().map(Vec::len).sum();
    charge
        .try_grow(wire.saturating_mul(DECODE_FACTOR))
        .then_some(held)
}

/// Nesting read at most in schema-less messages (a message in a message in ...).
const MAX_DEPTH: usize = 32;

/// `bytes` decoded as a `descriptor`, as proto3 JSON with defaults and unknown fields by number.
pub fn with_schema(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<Value, String> {
    let message = DynamicMessage::decode(descriptor.clone(), bytes)
        .map_err(|error| format!("not a {}: {error}", descriptor.full_name()))?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|error| format!("{}: {error}", descriptor.full_name()))?;
    add_unknown(&message, &mut json, 0);
    Ok(json)
}

/// Adds the fields the schema does not know, at every level, under their number.
fn add_unknown(message: &DynamicMessage, json: &mut Value, depth: usize) {
    let Value::Object(object) = json else { return };
    if depth >= MAX_DEPTH {
        return;
    }
    for unknown in message.unknown_fields() {
        let mut encoded = Vec::new();
        unknown.encode(&mut encoded);
        if let Ok(fields) = wire_fields(&encoded, depth) {
            for (number, value) in fields {
                insert(object, number, value);
            }
        }
    }
    for (field, value) in message.fields() {
        let Some(child) = object.get_mut(field.json_name()) else {
            continue;
        };
        match (value, child) {
            (Field::Message(inner), child) => add_unknown(inner, child, depth + 1),
            (Field::List(items), Value::Array(children)) => {
                for (item, child) in items.iter().zip(children.iter_mut()) {
                    if let Field::Message(inner) = item {
                        add_unknown(inner, child, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A message without a schema: an object keyed by field number, repeated numbers as arrays, a length-delimited
/// field as text when it reads as text, else as a message when it parses as one, else as base64.
pub fn without_schema(bytes: &[u8]) -> Result<Value, String> {
    let mut object = Map::new();
    for (number, value) in wire_fields(bytes, 0)? {
        insert(&mut object, number, value);
    }
    Ok(Value::Object(object))
}

fn insert(object: &mut Map<String, Value>, key: String, value: Value) {
    match object.get_mut(&key) {
        None => {
            object.insert(key, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn wire_fields(mut rest: &[u8], depth: usize) -> Result<Vec<(String, Value)>, String> {
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let key = varint(&mut rest)?;
        let number = key >> 3;
        if number == 0 || number > 536_870_911 {
            return Err(format!("field number {number} is out of range"));
        }
        let value = match key & 7 {
            0 => Value::from(varint(&mut rest)?),
            1 => Value::from(u64::from_le_bytes(take::<8>(&mut rest)?)),
            5 => Value::from(u32::from_le_bytes(take::<4>(&mut rest)?)),
            2 => {
                let length = usize::try_from(varint(&mut rest)?).unwrap_or(usize::MAX);
                if rest.len() < length {
                    return Err(format!(
                        "field {number} is cut short: {} of its {length} bytes",
                        rest.len()
                    ));
                }
                let (bytes, after) = rest.split_at(length);
                rest = after;
                length_delimited(bytes, depth)
            }
            wire => {
                return Err(format!(
                    "field {number} has wire type {wire}, which is not read"
                ));
            }
        };
        fields.push((number.to_string(), value));
    }
    Ok(fields)
}

fn length_delimited(bytes: &[u8], depth: usize) -> Value {
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Value::String(text.to_string());
    }
    if depth + 1 < MAX_DEPTH
        && let Ok(fields) = wire_fields(bytes, depth + 1)
    {
        let mut object = Map::new();
        for (number, value) in fields {
            insert(&mut object, number, value);
        }
        return Value::Object(object);
    }
    Value::String(format!("base64:{}", STANDARD.encode(bytes)))
}

fn varint(rest: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for (index, byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *rest = &rest[index + 1..];
            return Ok(value);
        }
    }
    Err("a varint is cut short or longer than 10 bytes".to_string())
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
    let (bytes, after) = rest
        .split_first_chunk::<N>()
        .ok_or_else(|| format!("a {N}-byte value is cut short"))?;
    *rest = after;
    Ok(*bytes)
}

/// Which way messages travel, and so which of a method's types they are.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The caller's messages: the method's input type.
    Request,
    /// The server's messages: the method's output type.
    Response,
}

/// A body of a call to `path`, as the engine compares it: an array of its messages (the message index first in
/// every path, `body/0/items/3/price`), each decoded with the method's schema, or keyed by field number when no
/// schema has the method. A malformed frame or message is an error, for a counted skip.
pub fn body_json(
    schemas: &Schemas,
    path: &str,
    direction: Direction,
    body: &[u8],
    encoding: Option<&str>,
    max_message: usize,
) -> Result<Value, String> {
    let messages = frame::split(body, encoding, max_message).map_err(|error| error.to_string())?;
    messages_json(schemas, path, direction, &messages)
}

/// Messages already split from their frames, as [`body_json`] gives them.
pub fn messages_json(
    schemas: &Schemas,
    path: &str,
    direction: Direction,
    messages: &[Vec<u8>],
) -> Result<Value, String> {
    let descriptor = schemas.method(path).map(|method| match direction {
        Direction::Request => method.input,
        Direction::Response => method.output,
    });
    let decoded = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            match &descriptor {
                Some(descriptor) => with_schema(descriptor, message),
                None => without_schema(message),
            }
            .map_err(|error| format!("message {index}: {error}"))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    Ok(Value::Array(decoded))
}

/// A message made from proto3 JSON under `descriptor`, encoded (for tests and the demo's services).
pub fn encode_json(descriptor: &MessageDescriptor, json: &Value) -> Result<Vec<u8>, String> {
    DynamicMessage::deserialize(descriptor.clone(), json)
        .map(|message| message.encode_to_vec())
        .map_err(|error| format!("{}: {error}", descriptor.full_name()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::grpc::schema::tests::shop;

    /// The shop's `Order`, what `GetOrder` answers with.
    fn order_message() -> MessageDescriptor {
        let dir = tempfile::tempdir().unwrap();
        shop(dir.path())
            .method("/shop.v1.Orders/GetOrder")
            .unwrap()
            .output
    }

    #[test]
    fn defaults_are_present_so_a_value_set_to_zero_is_changed_not_missing() {
        let order = order_message();
        let bytes = encode_json(
            &order,
            &json!({"id": "o-1", "quantity": 0, "tier": "TIER_GOLD", "items": [{"sku": "a", "priceCents": "250"}]}),
        )
        .unwrap();
        let decoded = with_schema(&order, &bytes).unwrap();
        assert_eq!(
            decoded,
            json!({"id": "o-1", "quantity": 0, "tier": "TIER_GOLD", "note": "",
                   "items": [{"sku": "a", "priceCents": "250"}]})
        );
    }

    #[test]
    fn fields_the_schema_lacks_appear_by_number_at_every_level() {
        let order = order_message();
        let mut bytes = encode_json(&order, &json!({"id": "o-1"})).unwrap();
        // Field 9 (a string) on the order, and field 7 (a varint) inside an item (field 4).
        bytes.extend_from_slice(&[0x4a, 2, b'h', b'i']);
        bytes.extend_from_slice(&[0x22, 5, 0x0a, 1, b'x', 0x38, 42]);
        let decoded = with_schema(&order, &bytes).unwrap();
        assert_eq!(decoded["9"], "hi");
        assert_eq!(
            decoded["items"][0],
            json!({"sku": "x", "priceCents": "0", "7": 42})
        );
        assert!(with_schema(&order, &[0x0a, 50, b'x']).is_err());
    }

    #[test]
    fn without_a_schema_the_wire_format_is_keyed_by_number() {
        // 1: "abc", 2: 150, 3: {1: 1}, 2 again (repeated), 4: fixed32 7, 5: bytes that are neither.
        let bytes = [
            0x0a, 3, b'a', b'b', b'c', 0x10, 0x96, 0x01, 0x1a, 2, 0x08, 0x01, 0x10, 0x01, 0x25, 7,
            0, 0, 0, 0x2a, 2, 0xff, 0x00,
        ];
        assert_eq!(
            without_schema(&bytes).unwrap(),
            json!({"1": "abc", "2": [150, 1], "3": {"1": 1}, "4": 7, "5": "base64:/wA="})
        );
        for bad in [&[0x0a, 9, 1][..], &[0x80], &[0x0b], &[0x00, 1]] {
            assert!(without_schema(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stream_is_an_array_of_its_messages_decoded_by_the_methods_types() {
        let dir = tempfile::tempdir().unwrap();
        let schemas = shop(dir.path());
        let watch = schemas.method("/shop.v1.Orders/Watch").unwrap();
        let mut body = Vec::new();
        for quantity in 1..=3 {
            let order =
                encode_json(&watch.output, &json!({"id": "o", "quantity": quantity})).unwrap();
            body.extend_from_slice(&frame::frame(&order));
        }
        // Every body here is decoded whole (up to 1 MiB), uncompressed.
        let decode = |method: &str, direction, body: &[u8]| {
            body_json(&schemas, method, direction, body, None, 1 << 20)
        };
        let decoded = decode("/shop.v1.Orders/Watch", Direction::Response, &body).unwrap();
        let quantities: Vec<&Value> = decoded
            .as_array()
            .unwrap()
            .iter()
            .map(|order| &order["quantity"])
            .collect();
        assert_eq!(quantities, [&json!(1), &json!(2), &json!(3)]);
        let request = frame::frame(&encode_json(&watch.input, &json!({"id": "o-7"})).unwrap());
        assert_eq!(
            decode("/shop.v1.Orders/Watch", Direction::Request, &request).unwrap(),
            json!([{"id": "o-7"}])
        );
        // A method no schema has is still compared, by field number.
        assert_eq!(
            decode("/other.Svc/Call", Direction::Request, &request).unwrap(),
            json!([{"1": "o-7"}])
        );
        let error = decode(
            "/shop.v1.Orders/Watch",
            Direction::Response,
            &body[..body.len() - 1],
        )
        .unwrap_err();
        assert!(error.contains("message 2 is cut short"), "{error}");
    }

    #[test]
    fn deep_nesting_stops_at_the_bound() {
        let mut bytes = vec![0x08, 1];
        for _ in 0..200 {
            let mut outer = vec![0x0a];
            let mut length = Vec::new();
            prost::encoding::encode_varint(bytes.len() as u64, &mut length);
            outer.extend_from_slice(&length);
            outer.extend_from_slice(&bytes);
            bytes = outer;
        }
        let value = without_schema(&bytes).unwrap();
        let mut depth = 0;
        let mut at = &value;
        while let Some(inner) = at.get("1") {
            at = inner;
            depth += 1;
        }
        assert!(depth <= MAX_DEPTH + 1, "{depth}");
    }
}
