//! The fields of a method's messages whose JSON name is not their proto name made camel case (`string password
//! = 1 [json_name = "k"]`): decoded messages carry the JSON name, so whatever finds secret fields by name (sample
//! redaction) is told the proto name too.

use std::collections::HashSet;

use prost_reflect::{Kind, MessageDescriptor};

use crate::grpc::schema::Method;

/// Message types walked at most per method: a schema of thousands of types is not walked whole per call.
const MAX_MESSAGES: usize = 1024;

/// A field's JSON name, and its proto name.
pub type Renamed = (String, String);

/// The fields reachable from a method's input and output types whose JSON name differs from their proto name
/// other than by case and underscores, each once.
pub fn renamed_fields(method: &Method) -> Vec<Renamed> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: Vec<MessageDescriptor> = vec![method.input.clone(), method.output.clone()];
    let mut renamed = Vec::new();
    while let Some(message) = queue.pop() {
        if seen.len() >= MAX_MESSAGES || !seen.insert(message.full_name().to_string()) {
            continue;
        }
        for field in message.fields() {
            if plain(field.json_name()) != plain(field.name()) {
                let pair = (field.json_name().to_string(), field.name().to_string());
                if !renamed.contains(&pair) {
                    renamed.push(pair);
                }
            }
            if let Kind::Message(inner) = field.kind() {
                queue.push(inner);
            }
        }
    }
    renamed
}

fn plain(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}
