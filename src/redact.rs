//! Secrets never reach storage: credential headers and configured JSON fields become `redacted:<12 hex>`, a
//! keyed hash (HMAC-SHA256), so that equal secrets still compare equal and nobody can reverse them.

use std::collections::HashSet;

use hmac::{KeyInit, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;

use crate::analysis::diff::{Difference, MAX_VALUE_LEN};

/// Headers whose values are always redacted.
pub const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
];

/// What a body that names a secret field but cannot be parsed as JSON is stored as.
pub const UNPARSEABLE_WITH_SECRET: &[u8] =
    br#"{"shadowdiff":"body not stored: it names a secret field and is not parseable JSON"}"#;

/// Applies redaction with one key.
#[derive(Clone)]
pub struct Redactor {
    key: Vec<u8>,
    headers: HashSet<String>,
    json_fields: HashSet<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("json_fields", &self.json_fields)
            .finish_non_exhaustive()
    }
}

/// What is never stored in clear, beyond the built-in secret headers.
#[derive(Clone, Debug, Default)]
pub struct RedactionSettings {
    /// JSON fields whose values are replaced by `redacted:<keyed hash>` at any depth.
    pub json_fields: Vec<String>,
    /// Key of the redaction hash; `None`: a random key made once and kept in the database.
    pub key: Option<String>,
}

impl Redactor {
    /// `json_fields` are object keys whose values are redacted at any depth (`--redact-json-field`).
    pub fn new(key: impl Into<Vec<u8>>, json_fields: &[String]) -> Self {
        Self {
            key: key.into(),
            headers: SECRET_HEADERS.iter().map(|name| name.to_string()).collect(),
            json_fields: json_fields
                .iter()
                .map(|field| field.to_ascii_lowercase())
                .collect(),
        }
    }

    /// `redacted:` and the first 12 hex digits of HMAC-SHA256(key, value).
    pub fn token(&self, value: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts any key length");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        format!("redacted:{}", &hex::encode(digest)[..12])
    }

    /// Whether any JSON field is redacted (`--redact-json-field`).
    pub fn redacts_json_fields(&self) -> bool {
        !self.json_fields.is_empty()
    }

    pub fn is_secret_header(&self, name: &str) -> bool {
        self.headers.contains(&name.to_ascii_lowercase())
    }

    fn is_secret_field(&self, key: &str) -> bool {
        !self.json_fields.is_empty() && self.json_fields.contains(&key.to_ascii_lowercase())
    }

    /// Header pairs as stored: secret values replaced, others as they are (lossily, if not UTF-8).
    pub fn headers(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let stored = if self.is_secret_header(name.as_str()) {
                    self.token(value.as_bytes())
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_string(), stored)
            })
            .collect()
    }

    /// Replaces the value of every secret field, at any depth. String values hash by their content, others by
    /// their JSON text.
    pub fn json(&self, value: &mut Value) {
        if self.json_fields.is_empty() {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if self.is_secret_field(key) {
                        *item = Value::String(self.json_token(item));
                    } else {
                        self.json(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            _ => {}
        }
    }

    /// Whether `"field"` appears in the body for any secret field, ignoring ASCII case.
    /// What part of a body (cut short for storage) is stored as: the marker when the part names a secret field,
    /// since a part cannot be parsed to redact its values; `None` when it can be stored as it is.
    pub fn partial_body(&self, part: &[u8]) -> Option<Vec<u8>> {
        (!self.json_fields.is_empty() && self.names_secret_field(part))
            .then(|| UNPARSEABLE_WITH_SECRET.to_vec())
    }

    fn names_secret_field(&self, body: &[u8]) -> bool {
        let lower = body.to_ascii_lowercase();
        self.json_fields.iter().any(|field| {
            let quoted = format!("\"{field}\"");
            lower
                .windows(quoted.len())
                .any(|window| window == quoted.as_bytes())
        })
    }

    fn json_token(&self, value: &Value) -> String {
        match value {
            Value::String(text) => self.token(text.as_bytes()),
            other => self.token(other.to_string().as_bytes()),
        }
    }

    /// A JSON body with its secret fields redacted; a body that is not JSON is returned unchanged, unless it
    /// names a secret field (JSON too deep to parse, or cut short): then it is replaced whole, since its secrets
    /// cannot be found one by one. The result is `None` when nothing needed changing.
    pub fn json_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.json_fields.is_empty() {
            return None;
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            return self
                .names_secret_field(body)
                .then(|| UNPARSEABLE_WITH_SECRET.to_vec());
        };
        let before = value.clone();
        self.json(&mut value);
        (value != before).then(|| serde_json::to_vec(&value).unwrap_or_default())
    }

    /// A difference as stored: its values redacted when its path is a secret header or goes through a secret
    /// field, or when a rendered value holds a secret field.
    pub fn difference(&self, difference: &mut Difference) {
        let secret_path = match difference.path.strip_prefix("header/") {
            Some(name) => self.is_secret_header(name),
            None => difference
                .path
                .split('/')
                .any(|segment| self.is_secret_field(&unescape(segment))),
        };
        for value in [&mut difference.primary, &mut difference.other]
            .into_iter()
            .flatten()
        {
            if secret_path {
                *value = self.token(value.as_bytes());
            } else {
                self.rendered_value(value);
            }
        }
    }

    /// A rendered JSON value (possibly cut short, possibly after a type name) that may hold secret fields.
    fn rendered_value(&self, rendered: &mut String) {
        if self.json_fields.is_empty() {
            return;
        }
        let (prefix, json) = match rendered.split_once(' ') {
            Some((type_name, rest)) if !rendered.starts_with(['{', '[', '"']) => {
                (format!("{type_name} "), rest.to_string())
            }
            _ => (String::new(), rendered.clone()),
        };
        if let Ok(mut value) = serde_json::from_str::<Value>(&json) {
            let before = value.clone();
            self.json(&mut value);
            if value != before {
                let mut text = value.to_string();
                if text.len() > MAX_VALUE_LEN {
                    text = crate::analysis::diff::truncate(text);
                }
                *rendered = format!("{prefix}{text}");
            }
            return;
        }
        // Cut short, so not parseable: if a secret field's name appears, keep none of it.
        let lower = rendered.to_ascii_lowercase();
        if self
            .json_fields
            .iter()
            .any(|field| lower.contains(&format!("\"{field}\"")))
        {
            *rendered = self.token(rendered.as_bytes());
        }
    }
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// A fresh random redaction key, hex-encoded.
pub fn generate_key() -> String {
    let mut rng = fastrand::Rng::new();
    let bytes: Vec<u8> = (0..32).map(|_| rng.u8(..)).collect();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diff::DiffKind;
    use http::HeaderValue;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new(
            b"test key".to_vec(),
            &["password".to_string(), "Token".to_string()],
        )
    }

    #[test]
    fn tokens_are_keyed_stable_and_short() {
        let r = redactor();
        let token = r.token(b"hunter2");
        assert!(token.starts_with("redacted:") && token.len() == "redacted:".len() + 12);
        assert_eq!(token, r.token(b"hunter2"));
        assert_ne!(token, r.token(b"hunter3"));
        assert_ne!(
            token,
            Redactor::new(b"other key".to_vec(), &[]).token(b"hunter2")
        );
    }

    #[test]
    fn credential_headers_are_redacted() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("x-api-key", HeaderValue::from_static("k3y"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let stored = redactor().headers(&headers);
        let text = format!("{stored:?}");
        assert!(!text.contains("s3cret") && !text.contains("k3y"), "{text}");
        assert!(text.contains("application/json"));
    }

    #[test]
    fn json_fields_are_redacted_at_any_depth() {
        let mut value =
            json!({"user": {"password": "hunter2", "name": "ada", "sessions": [{"TOKEN": 12345}]}});
        redactor().json(&mut value);
        let text = value.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("12345"),
            "{text}"
        );
        assert!(text.contains("ada"));
        let body = redactor().json_body(br#"{"password":"hunter2"}"#).unwrap();
        assert!(!String::from_utf8(body).unwrap().contains("hunter2"));
        assert!(redactor().json_body(b"not json").is_none());
        let deep = format!(
            "{}{{\"Password\":\"hunter2\"}}{}",
            "[".repeat(500),
            "]".repeat(500)
        );
        assert_eq!(
            redactor().json_body(deep.as_bytes()).as_deref(),
            Some(UNPARSEABLE_WITH_SECRET)
        );
    }

    #[test]
    fn differences_lose_their_secrets() {
        let r = redactor();
        let mut header = Difference::at(
            "header/set-cookie",
            DiffKind::ValueChanged,
            Some("sid=abc".into()),
            Some("sid=def".into()),
        );
        r.difference(&mut header);
        assert!(header.primary.as_deref().unwrap().starts_with("redacted:"));
        assert_ne!(header.primary, header.other);

        let mut field = Difference::at(
            "body/user/password",
            DiffKind::ValueChanged,
            Some("\"hunter2\"".into()),
            Some("\"x\"".into()),
        );
        r.difference(&mut field);
        assert!(!format!("{field:?}").contains("hunter2"));

        let mut parent = Difference::at(
            "body/user",
            DiffKind::Missing,
            Some(r#"{"password":"hunter2","name":"ada"}"#.into()),
            None,
        );
        r.difference(&mut parent);
        assert!(!format!("{parent:?}").contains("hunter2"));
        assert!(parent.primary.as_deref().unwrap().contains("ada"));

        let mut typed = Difference::at(
            "body/user",
            DiffKind::TypeChanged,
            Some(r#"object {"password":"hunter2"}"#.into()),
            Some("null null".into()),
        );
        r.difference(&mut typed);
        assert!(!format!("{typed:?}").contains("hunter2"));

        let mut cut = Difference::at(
            "body/list",
            DiffKind::Missing,
            Some(r#"[{"password":"hunter2","x":"…"#.into()),
            None,
        );
        r.difference(&mut cut);
        assert!(!format!("{cut:?}").contains("hunter2"));
    }
}
