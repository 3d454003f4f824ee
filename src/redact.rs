//! Secrets never reach storage, the record file or the log: credential headers, secret query parameters (in the
//! request line, in `Location` and in URL-valued JSON strings), and secret fields of JSON and form bodies become
//! `redacted:<12 hex>`, a keyed hash (HMAC-SHA256), so that equal secrets still compare equal and nobody can
//! reverse them. Names match ignoring case, `_` and `-` (`accessToken` is `access_token`); the built-in lists
//! are extended by flags, never shortened.

pub mod grpc;
mod rows;
pub mod values;
mod xml;

use std::borrow::Cow;
use std::collections::HashSet;

use hmac::{KeyInit, Mac};
use http::HeaderMap;
use serde_json::Value;

use crate::analysis::decode::ContentKind;
use sha2::Sha256;

use crate::analysis::diff::{Difference, MAX_VALUE_LEN};
use crate::encoding::{REDACTED_MARK, percent_decode};

/// Headers whose values are always redacted.
pub const SECRET_HEADERS: [&str; 9] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
    "x-auth-token",
    "private-token",
    "x-amz-security-token",
    "x-csrf-token",
];

/// Query parameters whose values are always redacted.
pub const SECRET_QUERY_PARAMS: [&str; 14] = [
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "code",
    "session",
];

/// Query parameters too generic to redact as body fields: `key`, `sig`, `code` and `session` name ordinary data
/// in bodies far more often than secrets.
const GENERIC_NAMES: [&str; 4] = ["key", "sig", "code", "session"];

/// Headers whose values are URLs, whose secret query parameters are redacted.
const URL_HEADERS: [&str; 3] = ["location", "content-location", "referer"];

/// A name as it is matched: lowercase, without `_` and `-`.
pub(crate) fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// What a body that names a secret field but cannot be parsed as JSON is stored as.
pub const UNPARSEABLE_WITH_SECRET: &[u8] =
    br#"{"shadowdiff":"body not stored: it names a secret field and is not parseable JSON"}"#;

/// What a body whose encoding cannot be undone is stored and recorded as: it cannot be searched for secrets.
pub const UNDECODABLE: &[u8] =
    br#"{"shadowdiff":"body not stored: its content encoding could not be undone, so it cannot be redacted"}"#;

/// Applies redaction with one key.
#[derive(Clone)]
pub struct Redactor {
    key: Vec<u8>,
    /// Normalised names (see [`normalise`]).
    headers: HashSet<String>,
    json_fields: HashSet<String>,
    query_params: HashSet<String>,
    /// Personal data searched for by value (`--redact-values`, `[[redact_value]]`).
    values: values::ValuePatterns,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("json_fields", &self.json_fields)
            .finish_non_exhaustive()
    }
}

/// What is never stored in clear, beyond the built-in lists.
#[derive(Clone, Debug, Default)]
pub struct RedactionSettings {
    /// More JSON and form body fields whose values are replaced by `redacted:<keyed hash>` at any depth.
    pub json_fields: Vec<String>,
    /// More query parameters whose values are redacted.
    pub query_params: Vec<String>,
    /// More headers whose values are redacted.
    pub headers: Vec<String>,
    /// Key of the redaction hash; `None`: a random key made once and kept in the database.
    pub key: Option<String>,
    /// Kinds of personal data searched for by value (`--redact-values`); none by default.
    pub values: Vec<values::ValueKind>,
}

impl Redactor {
    /// The built-in lists, with `json_fields` added to the body fields (`--redact-json-field`).
    pub fn new(key: impl Into<Vec<u8>>, json_fields: &[String]) -> Self {
        Self::with(
            key,
            &RedactionSettings {
                json_fields: json_fields.to_vec(),
                ..RedactionSettings::default()
            },
        )
    }

    /// The built-in lists extended by `settings`.
    pub fn with(key: impl Into<Vec<u8>>, settings: &RedactionSettings) -> Self {
        let names = |builtin: &[&str], extra: &[String]| -> HashSet<String> {
            builtin
                .iter()
                .map(|name| normalise(name))
                .chain(extra.iter().map(|name| normalise(name)))
                .filter(|name| !name.is_empty())
                .collect()
        };
        let body_fields: Vec<&str> = SECRET_QUERY_PARAMS
            .iter()
            .copied()
            .filter(|name| !GENERIC_NAMES.contains(name))
            .collect();
        Self {
            key: key.into(),
            headers: names(&SECRET_HEADERS, &settings.headers),
            json_fields: names(&body_fields, &settings.json_fields),
            query_params: names(&SECRET_QUERY_PARAMS, &settings.query_params),
            values: values::ValuePatterns::default(),
        }
    }

    /// The same redaction, personal data also searched for by value with `patterns`.
    pub fn with_values(mut self, patterns: values::ValuePatterns) -> Self {
        self.values = patterns;
        self
    }

    /// `redacted:` and the first 12 hex digits of HMAC-SHA256(key, value).
    pub fn token(&self, value: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts any key length");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        format!("{REDACTED_MARK}{}", &hex::encode(digest)[..12])
    }

    /// Whether any JSON field is redacted (`--redact-json-field`).
    pub fn redacts_json_fields(&self) -> bool {
        !self.json_fields.is_empty()
    }

    pub fn is_secret_header(&self, name: &str) -> bool {
        self.headers.contains(&normalise(name))
    }

    pub(crate) fn is_secret_field(&self, key: &str) -> bool {
        !self.json_fields.is_empty() && self.json_fields.contains(&normalise(key))
    }

    /// Whether a query parameter (its name percent-encoded as it came) holds a secret.
    pub fn is_secret_query_param(&self, name: &str) -> bool {
        self.query_params
            .contains(&normalise(&percent_decode(name)))
    }

    /// Header pairs as stored: secret values replaced, URL values with their secret parameters redacted,
    /// others as they are (lossily, if not UTF-8).
    pub fn headers(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    self.header_value(name.as_str(), value.as_bytes()),
                )
            })
            .collect()
    }

    /// One header's value as stored.
    pub fn header_value(&self, name: &str, value: &[u8]) -> String {
        if self.is_secret_header(name) {
            return self.token(value);
        }
        let text = String::from_utf8_lossy(value);
        if URL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return self.uri(&text).into_owned();
        }
        self.text_values(&text).into_owned()
    }

    /// A URI (or any text with a `?query`) with the values of its secret query parameters redacted, and the
    /// personal data in its path segments and query values.
    pub fn uri<'a>(&self, uri: &'a str) -> Cow<'a, str> {
        self.uri_with(uri, true)
    }

    /// A text value as JSON strings are redacted (the secret query parameters of a URL in it, then the personal
    /// data in it), for the text and cells of XML and CSV bodies; `None` when nothing was.
    pub(crate) fn text_value(&self, text: &str) -> Option<String> {
        let urls = if !self.json_fields.is_empty() && text.contains('?') {
            self.uri_with(text, false)
        } else {
            Cow::Borrowed(text)
        };
        if let Cow::Owned(clean) = self.text_values(&urls) {
            return Some(clean);
        }
        match urls {
            Cow::Owned(clean) => Some(clean),
            Cow::Borrowed(_) => None,
        }
    }

    /// [`Self::uri`], personal data searched for in its parts only when `values` says so (text that merely
    /// holds a `?` is searched as text instead, never encoded as a URL's parts are).
    fn uri_with<'a>(&self, uri: &'a str, values: bool) -> Cow<'a, str> {
        let path = |path: &'a str| {
            if values {
                self.path_values(path)
            } else {
                Cow::Borrowed(path)
            }
        };
        let Some((base, rest)) = uri.split_once('?') else {
            return path(uri);
        };
        let base = path(base);
        let (query, fragment) = match rest.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (rest, None),
        };
        let query = self.pairs(query, |name| self.is_secret_query_param(name), values);
        if matches!((&base, &query), (Cow::Borrowed(_), Cow::Borrowed(_))) {
            return Cow::Borrowed(uri);
        }
        let mut redacted = format!("{base}?{query}");
        if let Some(fragment) = fragment {
            redacted.push('#');
            redacted.push_str(fragment);
        }
        Cow::Owned(redacted)
    }

    /// `name=value&...` with the values of the pairs `secret` picks redacted (by the keyed hash of the value),
    /// and, when `values` says so, the personal data in the others.
    fn pairs<'a>(
        &self,
        encoded: &'a str,
        secret: impl Fn(&str) -> bool,
        values: bool,
    ) -> Cow<'a, str> {
        let mut changed = false;
        let pairs: Vec<String> = encoded
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if secret(name) => {
                    changed = true;
                    format!("{name}={}", self.token(value.as_bytes()))
                }
                // Personal data in an ordinary value is searched for decoded, and encoded again.
                Some((name, value)) if values => match self.encoded_values(value, b":") {
                    Cow::Owned(clean) => {
                        changed = true;
                        format!("{name}={clean}")
                    }
                    Cow::Borrowed(_) => pair.to_string(),
                },
                _ => pair.to_string(),
            })
            .collect();
        if changed {
            Cow::Owned(pairs.join("&"))
        } else {
            Cow::Borrowed(encoded)
        }
    }

    /// A form-encoded body with its secret fields redacted; `None` when nothing needed changing.
    pub fn form_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        let text = String::from_utf8_lossy(body);
        match self.pairs(
            text.trim_end_matches(['\r', '\n']),
            |name| self.is_secret_field(&percent_decode(name)),
            true,
        ) {
            Cow::Owned(redacted) => Some(redacted.into_bytes()),
            Cow::Borrowed(_) => None,
        }
    }

    /// A whole decoded body as stored or recorded: form fields or JSON fields redacted by its content type;
    /// `None` when nothing needed changing.
    pub fn body(&self, headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
        let media_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(crate::analysis::decode::media_type)
            .unwrap_or_default();
        if media_type == "application/x-www-form-urlencoded" {
            return self.form_body(body);
        }
        match crate::analysis::decode::structured_kind(&media_type) {
            Some(ContentKind::Xml) => self.xml_body(body),
            Some(ContentKind::Csv) => self.csv_body(body),
            Some(ContentKind::Ndjson) => self.ndjson_body(body),
            _ => self.json_body(body),
        }
    }

    /// Replaces the value of every secret field, at any depth (string values hash by their content, others by
    /// their JSON text), then the personal data found by value.
    pub fn json(&self, value: &mut Value) {
        self.json_fields(value);
        self.json_values(value);
    }

    fn json_fields(&self, value: &mut Value) {
        if self.json_fields.is_empty() {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if self.is_secret_field(key) {
                        *item = Value::String(self.json_token(item));
                    } else {
                        self.json_fields(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.json_fields(item)),
            // A URL in a string (a redirect target, a next-page link) can carry a token in its query.
            Value::String(text) if text.contains('?') => {
                if let Cow::Owned(redacted) = self.uri_with(text, false) {
                    *text = redacted;
                }
            }
            _ => {}
        }
    }

    /// Whether `"field"` appears in the body for any secret field, ignoring ASCII case.
    /// What part of a body (cut short for storage) is stored as: the marker when the part names a secret field,
    /// since a part cannot be parsed to redact its values; else the part with its personal data replaced; `None`
    /// when it can be stored as it is.
    pub fn partial_body(&self, part: &[u8]) -> Option<Vec<u8>> {
        // A part of an XML body names its secrets as elements or attributes, not as quoted keys.
        if !self.json_fields.is_empty()
            && (self.names_secret_field(part) || self.names_secret_xml_name(part))
        {
            return Some(UNPARSEABLE_WITH_SECRET.to_vec());
        }
        self.bytes_values(part)
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

    /// A JSON body with its secret fields and personal data redacted; a body that is not JSON has its personal
    /// data replaced as text, unless it names a secret field (JSON too deep to parse, or cut short): then it is
    /// replaced whole, since its secrets cannot be found one by one. The result is `None` when nothing needed
    /// changing.
    pub fn json_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.json_fields.is_empty() && !self.redacts_values() {
            return None;
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            return self.partial_body(body);
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
        if self.json_fields.is_empty() && !self.redacts_values() {
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
        } else if let Cow::Owned(clean) = self.text_values(rendered) {
            *rendered = clean;
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
    fn secrets_are_redacted_by_default_wherever_they_sit() {
        let r = Redactor::new(b"k".to_vec(), &[]);
        let uri = r.uri("/cb?code=c0de&state=ok&Access-Token=t0k&x=%2F#frag");
        assert!(!uri.contains("c0de") && !uri.contains("t0k"), "{uri}");
        assert!(
            uri.contains("state=ok") && uri.contains("x=%2F") && uri.ends_with("#frag"),
            "{uri}"
        );
        assert_eq!(r.uri("/plain?a=1"), "/plain?a=1");
        assert!(matches!(r.uri("/plain?a=1"), Cow::Borrowed(_)));

        let mut headers = HeaderMap::new();
        headers.insert(
            "location",
            HeaderValue::from_static("https://app.example/cb?code=c0de"),
        );
        headers.insert("X-CSRF-Token", HeaderValue::from_static("csrf1"));
        headers.insert("private-token", HeaderValue::from_static("pt1"));
        let stored = format!("{:?}", r.headers(&headers));
        for secret in ["c0de", "csrf1", "pt1"] {
            assert!(!stored.contains(secret), "{secret} in {stored}");
        }

        let mut value = json!({"next": "https://x.example/?token=t0k&page=2", "accessToken": "at1",
                               "code": "ABC-123", "client-secret": "cs1"});
        r.json(&mut value);
        let text = value.to_string();
        for secret in ["t0k", "at1", "cs1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("ABC-123"),
            "a body field named `code` is ordinary data: {text}"
        );
        assert!(text.contains("page=2"));

        let mut form = HeaderMap::new();
        form.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let body = r
            .body(&form, b"user=ada&password=hunter2&remember=on")
            .unwrap();
        let body = String::from_utf8(body).unwrap();
        assert!(
            !body.contains("hunter2") && body.contains("user=ada"),
            "{body}"
        );
        assert!(r.body(&form, b"user=ada").is_none());
    }

    #[test]
    fn flags_extend_the_lists() {
        let r = Redactor::with(
            b"k".to_vec(),
            &RedactionSettings {
                json_fields: vec!["ssn".into()],
                query_params: vec!["otp".into()],
                headers: vec!["X-Tenant-Secret".into()],
                key: None,
                values: Vec::new(),
            },
        );
        assert!(!r.uri("/a?otp=123456").contains("123456"));
        assert!(r.is_secret_header("x_tenant_secret"));
        let body = r.json_body(br#"{"SSN":"078-05-1120"}"#).unwrap();
        assert!(!String::from_utf8(body).unwrap().contains("078-05-1120"));
        // The built-in names stay.
        assert!(r.is_secret_header("authorization"));
        assert!(!r.uri("/a?token=abc").contains("abc"));
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

        // The secret field itself, an object holding it (whose other fields stay), a typed rendering of one,
        // and a rendering cut short inside it.
        for (path, kind, primary, other, kept) in [
            (
                "body/user/password",
                DiffKind::ValueChanged,
                "\"hunter2\"",
                Some("\"x\""),
                None,
            ),
            (
                "body/user",
                DiffKind::Missing,
                r#"{"password":"hunter2","name":"ada"}"#,
                None,
                Some("ada"),
            ),
            (
                "body/user",
                DiffKind::TypeChanged,
                r#"object {"password":"hunter2"}"#,
                Some("null null"),
                None,
            ),
            (
                "body/list",
                DiffKind::Missing,
                r#"[{"password":"hunter2","x":"…"#,
                None,
                None,
            ),
        ] {
            let mut difference =
                Difference::at(path, kind, Some(primary.into()), other.map(Into::into));
            r.difference(&mut difference);
            assert!(!format!("{difference:?}").contains("hunter2"), "{primary}");
            if let Some(kept) = kept {
                assert!(
                    difference.primary.as_deref().unwrap().contains(kept),
                    "{primary}"
                );
            }
        }
    }
}
