//! A GraphQL schema as introspection tells it, made comparable: each type by name with its kind, fields (their
//! type written as in SDL, `[Post!]!`, and their arguments), input fields, enum values and interfaces, every
//! list keyed by name so that order is no difference; the built-in `__` types left out; bounded.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The introspection request shadowdiff sends (a POST body): what comparing schemas needs, no descriptions.
pub const INTROSPECTION_REQUEST: &str = r#"{"operationName":"ShadowdiffSchema","query":"query ShadowdiffSchema { __schema { queryType { name } mutationType { name } subscriptionType { name } types { kind name fields(includeDeprecated: true) { name args { name type { ...Ref } defaultValue } type { ...Ref } } inputFields { name type { ...Ref } defaultValue } interfaces { name } enumValues(includeDeprecated: true) { name } possibleTypes { name } } } } fragment Ref on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }"}"#;

/// Types read at most.
pub const MAX_TYPES: usize = 10_000;
/// Fields, arguments, input fields, enum values and interfaces read at most, all types together.
pub const MAX_MEMBERS: usize = 200_000;

/// Why an introspection answer gave no schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The server answered, but not with a schema: introspection is turned off there, or refused.
    #[error("introspection is disabled or refused: {0}")]
    Disabled(String),
    #[error("the introspection answer is not JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("the schema has more than {MAX_TYPES} types or {MAX_MEMBERS} members")]
    TooLarge,
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
    #[serde(default)]
    errors: Vec<Value>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "__schema")]
    schema: Option<WireSchema>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSchema {
    query_type: Option<Named>,
    mutation_type: Option<Named>,
    subscription_type: Option<Named>,
    types: Vec<WireType>,
}

#[derive(Deserialize)]
struct Named {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireType {
    kind: String,
    name: Option<String>,
    fields: Option<Vec<WireField>>,
    input_fields: Option<Vec<WireInput>>,
    interfaces: Option<Vec<Named>>,
    enum_values: Option<Vec<Named>>,
    possible_types: Option<Vec<Named>>,
}

#[derive(Deserialize)]
struct WireField {
    name: String,
    #[serde(default)]
    args: Vec<WireInput>,
    #[serde(rename = "type")]
    of: TypeRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInput {
    name: String,
    #[serde(rename = "type")]
    of: TypeRef,
    default_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeRef {
    kind: String,
    name: Option<String>,
    of_type: Option<Box<TypeRef>>,
}

impl TypeRef {
    /// As SDL writes it: `String`, `[Post!]!`.
    fn sdl(&self) -> String {
        let inner = || self.of_type.as_ref().map(|of| of.sdl()).unwrap_or_default();
        match self.kind.as_str() {
            "NON_NULL" => format!("{}!", inner()),
            "LIST" => format!("[{}]", inner()),
            _ => self.name.clone().unwrap_or_default(),
        }
    }
}

/// An introspection answer as comparable JSON (see the module's doc), or why it is not one.
pub fn comparable(answer: &[u8]) -> Result<Vec<u8>, SchemaError> {
    let answer: Answer = serde_json::from_slice(answer)
        .map_err(|error| SchemaError::Malformed(error.to_string()))?;
    let Some(schema) = answer.data.and_then(|data| data.schema) else {
        let said = answer
            .errors
            .first()
            .and_then(|error| error.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("no __schema in the answer");
        return Err(SchemaError::Disabled(said.chars().take(200).collect()));
    };
    if schema.types.len() > MAX_TYPES {
        return Err(SchemaError::TooLarge);
    }
    let mut members = 0usize;
    let mut count = |n: usize| {
        members += n;
        if members > MAX_MEMBERS {
            Err(SchemaError::TooLarge)
        } else {
            Ok(())
        }
    };
    let mut types = Map::new();
    for wire in schema.types {
        let Some(name) = wire.name else { continue };
        if name.starts_with("__") {
            continue;
        }
        let mut described = Map::new();
        described.insert("kind".into(), Value::from(wire.kind));
        if let Some(fields) = wire.fields {
            count(fields.iter().map(|field| 1 + field.args.len()).sum())?;
            let fields = fields.into_iter().map(|field| {
                let args = inputs(field.args);
                (field.name, json!({"type": field.of.sdl(), "args": args}))
            });
            described.insert("fields".into(), Value::Object(fields.collect()));
        }
        if let Some(input_fields) = wire.input_fields {
            count(input_fields.len())?;
            described.insert("inputFields".into(), inputs(input_fields));
        }
        for (key, names) in [
            ("interfaces", wire.interfaces),
            ("enumValues", wire.enum_values),
            ("possibleTypes", wire.possible_types),
        ] {
            if let Some(names) = names {
                count(names.len())?;
                let set = names
                    .into_iter()
                    .filter_map(|named| named.name)
                    .map(|name| (name, Value::Bool(true)));
                described.insert(key.into(), Value::Object(set.collect()));
            }
        }
        types.insert(name, Value::Object(described));
    }
    let root = |named: Option<Named>| named.and_then(|named| named.name).map(Value::from);
    let comparable = json!({
        "query": root(schema.query_type),
        "mutation": root(schema.mutation_type),
        "subscription": root(schema.subscription_type),
        "types": types,
    });
    serde_json::to_vec(&comparable).map_err(|error| SchemaError::Malformed(error.to_string()))
}

/// Arguments or input fields by name: their type, and their default when they have one.
fn inputs(inputs: Vec<WireInput>) -> Value {
    let inputs = inputs.into_iter().map(|input| {
        let mut described = Map::new();
        described.insert("type".into(), Value::from(input.of.sdl()));
        if let Some(default) = input.default_value {
            described.insert("default".into(), Value::from(default));
        }
        (input.name, Value::Object(described))
    });
    Value::Object(inputs.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(post_fields: &str) -> String {
        format!(
            r#"{{"data":{{"__schema":{{"queryType":{{"name":"Query"}},"mutationType":null,"subscriptionType":null,"types":[
            {{"kind":"OBJECT","name":"Query","fields":[{{"name":"post","args":[{{"name":"id","type":{{"kind":"NON_NULL","name":null,"ofType":{{"kind":"SCALAR","name":"ID","ofType":null}}}},"defaultValue":null}}],"type":{{"kind":"OBJECT","name":"Post","ofType":null}}}}],"inputFields":null,"interfaces":[],"enumValues":null,"possibleTypes":null}},
            {{"kind":"OBJECT","name":"Post","fields":[{post_fields}],"inputFields":null,"interfaces":[],"enumValues":null,"possibleTypes":null}},
            {{"kind":"OBJECT","name":"__Type","fields":[],"inputFields":null,"interfaces":[],"enumValues":null,"possibleTypes":null}}
            ]}}}}}}"#
        )
    }

    const TITLE: &str = r#"{"name":"title","args":[],"type":{"kind":"NON_NULL","name":null,"ofType":{"kind":"LIST","name":null,"ofType":{"kind":"SCALAR","name":"String","ofType":null}}}}"#;
    const LEGACY: &str =
        r#"{"name":"legacyId","args":[],"type":{"kind":"SCALAR","name":"Int","ofType":null}}"#;

    #[test]
    fn types_become_comparable_json_keyed_by_name() {
        let read = comparable(answer(&format!("{LEGACY},{TITLE}")).as_bytes()).unwrap();
        let read: Value = serde_json::from_slice(&read).unwrap();
        assert_eq!(read["query"], "Query");
        assert_eq!(
            read["types"]["Post"]["fields"]["title"]["type"],
            "[String]!"
        );
        assert_eq!(read["types"]["Post"]["fields"]["legacyId"]["type"], "Int");
        assert_eq!(
            read["types"]["Query"]["fields"]["post"]["args"]["id"]["type"],
            "ID!"
        );
        assert!(read["types"].get("__Type").is_none());
        // The order fields come in is no difference.
        let reordered = comparable(answer(&format!("{TITLE},{LEGACY}")).as_bytes()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&reordered).unwrap(), read);
    }

    #[test]
    fn an_answer_without_a_schema_says_why() {
        assert_eq!(
            comparable(br#"{"errors":[{"message":"introspection is disabled"}]}"#),
            Err(SchemaError::Disabled("introspection is disabled".into()))
        );
        assert!(matches!(
            comparable(b"<html>"),
            Err(SchemaError::Malformed(_))
        ));
        let many: Vec<String> = (0..=MAX_TYPES)
            .map(|n| format!(r#"{{"kind":"SCALAR","name":"S{n}"}}"#))
            .collect();
        let huge = format!(
            r#"{{"data":{{"__schema":{{"types":[{}]}}}}}}"#,
            many.join(",")
        );
        assert_eq!(comparable(huge.as_bytes()), Err(SchemaError::TooLarge));
    }
}
