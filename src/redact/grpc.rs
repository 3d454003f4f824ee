//! Secret fields of recorded gRPC calls: each message decoded with its method's schema, the fields whose names
//! are secret replaced by their keyed hash, and the message encoded again, so the record still replays.

use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value as Field};

use crate::budget::Charge;

use crate::grpc::decode::{Direction, charge_decoding};
use crate::grpc::frame;
use crate::grpc::renamed::Renamed;
use crate::grpc::schema::Schemas;
use crate::redact::{Redactor, normalise};

/// Messages nested deeper than this are not searched (the decoder itself stops far below protobuf's limit).
const MAX_DEPTH: usize = 64;

/// What redacting a call's body gave.
#[derive(Debug, PartialEq, Eq)]
pub enum GrpcRedaction {
    /// Nothing secret in it: kept as it is.
    Unchanged,
    /// No schema has its method, so its fields have numbers, not names: kept as it is, unsearched.
    NoSchema,
    /// The body framed again, uncompressed, with its secret fields replaced.
    Redacted(Vec<u8>),
    /// Its frames or messages could not be read, so its secrets cannot be found: not to be kept.
    Unreadable,
}

impl Redactor {
    /// For a gRPC call's decoded bodies, whose fields carry their JSON names: this redaction with the JSON names
    /// of fields whose proto name is secret (`password` with `json_name = "k"`) secret too; `None` when there
    /// are none.
    pub fn with_renamed(&self, renamed: &[Renamed]) -> Option<Redactor> {
        let secret: Vec<String> = renamed
            .iter()
            .filter(|(json, proto)| !self.is_secret_field(json) && self.is_secret_field(proto))
            .map(|(json, _)| normalise(json))
            .collect();
        if secret.is_empty() {
            return None;
        }
        let mut redactor = self.clone();
        redactor.json_fields.extend(secret);
        Some(redactor)
    }

    /// The body of a call to `path` with its secret fields redacted, message by message.
    pub fn grpc_body(
        &self,
        schemas: &Schemas,
        path: &str,
        direction: Direction,
        body: &[u8],
        encoding: Option<&str>,
        (max_decoded, charge): (usize, &mut Charge),
    ) -> GrpcRedaction {
        if !self.redacts_json_fields() && !self.redacts_values() {
            return GrpcRedaction::Unchanged;
        }
        let Some(method) = schemas.method(path) else {
            return GrpcRedaction::NoSchema;
        };
        let descriptor = match direction {
            Direction::Request => method.input,
            Direction::Response => method.output,
        };
        let Ok(messages) = frame::split(body, encoding, max_decoded) else {
            return GrpcRedaction::Unreadable;
        };
        // Not recorded when the budget cannot hold decoding it.
        let Some(held) = charge_decoding(&messages, charge) else {
            return GrpcRedaction::Unreadable;
        };
        let redaction = self.redact_messages(&descriptor, messages, body.len());
        charge.shrink_to(held);
        redaction
    }

    /// Each message decoded, redacted and encoded again, framed.
    fn redact_messages(
        &self,
        descriptor: &MessageDescriptor,
        messages: Vec<Vec<u8>>,
        size: usize,
    ) -> GrpcRedaction {
        let mut changed = false;
        let mut framed = Vec::with_capacity(size);
        for bytes in messages {
            let Ok(mut message) = DynamicMessage::decode(descriptor.clone(), bytes.as_slice())
            else {
                return GrpcRedaction::Unreadable;
            };
            changed |= self.protobuf_message(&mut message, 0);
            framed.extend_from_slice(&frame::frame(&message.encode_to_vec()));
        }
        if changed {
            GrpcRedaction::Redacted(framed)
        } else {
            GrpcRedaction::Unchanged
        }
    }

    /// Replaces the secret fields of `message`, at any depth: a string or bytes value by its token, any other
    /// value cleared (a number has no room for a token). Whether anything changed.
    fn protobuf_message(&self, message: &mut DynamicMessage, depth: usize) -> bool {
        if depth >= MAX_DEPTH {
            return false;
        }
        let mut changed = false;
        for field in message.descriptor().fields() {
            if !message.has_field(&field) {
                continue;
            }
            if self.is_secret_field(field.json_name()) || self.is_secret_field(field.name()) {
                changed = true;
                match message.get_field_mut(&field) {
                    Field::String(text) => *text = self.token(text.as_bytes()),
                    Field::Bytes(bytes) => *bytes = self.token(bytes).into_bytes().into(),
                    Field::List(items) if matches!(field.kind(), Kind::String) => {
                        for item in items.iter_mut() {
                            if let Field::String(text) = item {
                                *text = self.token(text.as_bytes());
                            }
                        }
                    }
                    _ => message.clear_field(&field),
                }
                continue;
            }
            changed |= self.protobuf_value(message.get_field_mut(&field), depth);
        }
        changed
    }

    /// A value of a field that is not secret itself, with the personal data in it replaced: text searched,
    /// messages walked, lists and maps element by element. Whether anything changed.
    fn protobuf_value(&self, value: &mut Field, depth: usize) -> bool {
        match value {
            Field::Message(inner) => self.protobuf_message(inner, depth + 1),
            Field::String(text) => self.protobuf_text(text),
            Field::List(items) => items.iter_mut().fold(false, |changed, item| {
                self.protobuf_value(item, depth) | changed
            }),
            Field::Map(entries) => entries.values_mut().fold(false, |changed, entry| {
                self.protobuf_value(entry, depth) | changed
            }),
            _ => false,
        }
    }

    /// A string field with its personal data replaced; whether it changed.
    fn protobuf_text(&self, text: &mut String) -> bool {
        match self.text_values(text) {
            std::borrow::Cow::Owned(clean) => {
                *text = clean;
                true
            }
            std::borrow::Cow::Borrowed(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::grpc::decode::{encode_json, with_schema};

    const PROTO: &str = r#"
syntax = "proto3";
package auth.v1;
message Credentials { string user = 1; string password = 2; repeated string secret = 3; int64 pin = 4; }
message Login { Credentials credentials = 1; repeated Credentials others = 2; string note = 3; }
message Session { string id = 1; }
service Auth { rpc SignIn(Login) returns (Session); }
"#;

    fn schemas(dir: &std::path::Path) -> Schemas {
        crate::grpc::schema::tests::compile_proto(dir, "auth.proto", PROTO)
    }

    #[test]
    fn secret_fields_are_hashed_in_place_and_the_call_still_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let schemas = schemas(dir.path());
        let login = schemas.method("/auth.v1.Auth/SignIn").unwrap().input;
        let message = encode_json(
            &login,
            &json!({"credentials": {"user": "ada", "password": "hunter2", "secret": ["t1"], "pin": "1234"},
                    "others": [{"user": "bob", "password": "swordfish"}], "note": "hi"}),
        )
        .unwrap();
        let redactor = Redactor::new(b"k".to_vec(), &[]);
        let GrpcRedaction::Redacted(body) = redactor.grpc_body(
            &schemas,
            "/auth.v1.Auth/SignIn",
            Direction::Request,
            &frame::frame(&message),
            None,
            (1 << 20, &mut Charge::none()),
        ) else {
            panic!("the password is redacted")
        };
        let messages = frame::split(&body, None, 1 << 20).unwrap();
        let decoded = with_schema(&login, &messages[0]).unwrap();
        let credentials = &decoded["credentials"];
        assert_eq!(credentials["user"], "ada");
        assert_eq!(credentials["password"], redactor.token(b"hunter2"));
        assert_eq!(credentials["secret"][0], redactor.token(b"t1"));
        assert_eq!(
            decoded["others"][0]["password"],
            redactor.token(b"swordfish")
        );
        assert_eq!(decoded["note"], "hi");
        assert!(!String::from_utf8_lossy(&body).contains("hunter2"));

        let plain = encode_json(&login, &json!({"note": "nothing secret"})).unwrap();
        assert_eq!(
            redactor.grpc_body(
                &schemas,
                "/auth.v1.Auth/SignIn",
                Direction::Request,
                &frame::frame(&plain),
                None,
                (1 << 20, &mut Charge::none())
            ),
            GrpcRedaction::Unchanged
        );
        assert_eq!(
            redactor.grpc_body(
                &schemas,
                "/auth.v1.Auth/SignIn",
                Direction::Request,
                &frame::frame(&message)[..8],
                None,
                (1 << 20, &mut Charge::none())
            ),
            GrpcRedaction::Unreadable
        );
    }
}
