//! Personal data found by its value (`--redact-values`, the rules file's `[[redact_value]]`): e-mail addresses,
//! card numbers, IBANs, JWTs, bearer tokens and IP addresses, and named patterns, found by one linear-time regex
//! (the `regex` crate) over each stored value, each candidate checked (Luhn, mod 97, a JWT's header, std's
//! address parsers) and replaced where it sits by its keyed hash: the rest of the text stays.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder};
use serde_json::Value;

use crate::analysis::rules::ValuePatternSpec;
use crate::encoding::{percent_decode, percent_encode};
use crate::redact::Redactor;

/// Most bytes the compiled patterns (built-in and named together) may take: a pattern that blows up is refused
/// at start, never compiled without bound.
pub const MAX_COMPILED_SIZE: usize = 4 << 20;
/// Most bytes of lazy DFA states the search keeps per thread; past it the engine falls back, still in linear
/// time.
const MAX_DFA_SIZE: usize = 2 << 20;

/// The built-in kinds of personal data, chosen with `--redact-values` (`pii` is all of them).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Email,
    Card,
    Iban,
    Jwt,
    Bearer,
    Ip,
}

impl ValueKind {
    /// What `--redact-values pii` turns on.
    pub const ALL: [ValueKind; 6] = [
        ValueKind::Jwt,
        ValueKind::Bearer,
        ValueKind::Email,
        ValueKind::Iban,
        ValueKind::Card,
        ValueKind::Ip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Email => "email",
            ValueKind::Card => "card",
            ValueKind::Iban => "iban",
            ValueKind::Jwt => "jwt",
            ValueKind::Bearer => "bearer",
            ValueKind::Ip => "ip",
        }
    }

    /// The candidates' patterns: each is checked further before it is redacted.
    fn patterns(self) -> &'static [(&'static str, Check)] {
        match self {
            ValueKind::Email => &[(
                r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,63}(?-u:\b)",
                Check::Whole,
            )],
            // 13 to 19 digits, spaces or dashes between them, starting as cards' issuers do (2 to 6).
            ValueKind::Card => &[(r"(?-u:\b)[2-6](?:[ \-]?[0-9]){12,18}(?-u:\b)", Check::Luhn)],
            ValueKind::Iban => &[(
                r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)",
                Check::Iban,
            )],
            ValueKind::Jwt => &[(
                r"(?-u:\b)eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
                Check::Jwt,
            )],
            ValueKind::Bearer => &[(r"(?i:bearer)[ \t]+[A-Za-z0-9._~+/\-]{8,}=*", Check::Bearer)],
            ValueKind::Ip => &[
                (
                    r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
                    Check::Ipv4,
                ),
                (
                    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?",
                    Check::Ipv6,
                ),
            ],
        }
    }
}

/// What `--redact-values` names: every built-in kind (`pii`) or one of them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ValueSet {
    Pii,
    Kind(ValueKind),
}

impl ValueSet {
    /// The kinds each of `sets` turns on, each once.
    pub fn kinds(sets: &[ValueSet]) -> Vec<ValueKind> {
        ValueKind::ALL
            .into_iter()
            .filter(|kind| {
                sets.iter()
                    .any(|set| *set == ValueSet::Pii || *set == ValueSet::Kind(*kind))
            })
            .collect()
    }
}

/// What a candidate must pass to be redacted: the part of it that is redacted, if any.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Check {
    /// The pattern says it all.
    Whole,
    /// Card numbers: the longest run of 13 to 19 digits from the start whose Luhn sum holds.
    Luhn,
    /// The longest prefix of 15 to 34 characters whose ISO 13616 check digits hold (mod 97).
    Iban,
    /// A JWT: its first part is base64url JSON (the header).
    Jwt,
    /// `Bearer <token>`: the token, after the scheme.
    Bearer,
    Ipv4,
    Ipv6,
}

impl Check {
    fn redacted(self, text: &[u8]) -> Option<Range<usize>> {
        match self {
            Check::Whole => Some(0..text.len()),
            Check::Luhn => luhn_prefix(text),
            Check::Iban => iban_prefix(text),
            Check::Jwt => jwt_header(text).then_some(0..text.len()),
            Check::Bearer => {
                let start = text.iter().position(|b| *b == b' ' || *b == b'\t')?;
                let start = start
                    + text[start..]
                        .iter()
                        .take_while(|b| b.is_ascii_whitespace())
                        .count();
                Some(start..text.len())
            }
            Check::Ipv4 => parses::<std::net::Ipv4Addr>(text).then_some(0..text.len()),
            Check::Ipv6 => parses::<std::net::Ipv6Addr>(text).then_some(0..text.len()),
        }
    }
}

fn parses<T: std::str::FromStr>(text: &[u8]) -> bool {
    std::str::from_utf8(text).is_ok_and(|text| text.parse::<T>().is_ok())
}

/// The end of the longest run of 13 to 19 digits (separators included) whose Luhn sum is a multiple of 10.
fn luhn_prefix(text: &[u8]) -> Option<Range<usize>> {
    let ends: Vec<(usize, u8)> = text
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(at, b)| (at + 1, b - b'0'))
        .collect();
    (13..=ends.len().min(19)).rev().find_map(|count| {
        let digits = &ends[..count];
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(place, (_, digit))| {
                let digit = u32::from(*digit);
                if place % 2 == 1 {
                    let doubled = digit * 2;
                    if doubled > 9 { doubled - 9 } else { doubled }
                } else {
                    digit
                }
            })
            .sum();
        sum.is_multiple_of(10).then(|| 0..digits[count - 1].0)
    })
}

/// The longest prefix (spaces left out of the count) of 15 to 34 letters and digits whose check digits hold:
/// the first four moved to the end, letters as 10 to 35, the number mod 97 is 1.
fn iban_prefix(text: &[u8]) -> Option<Range<usize>> {
    let chars: Vec<(usize, u8)> = text
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_alphanumeric())
        .map(|(at, b)| (at + 1, *b))
        .collect();
    (15..=chars.len().min(34)).rev().find_map(|count| {
        let (head, tail) = chars[..count].split_at(4);
        let mut remainder = 0u32;
        for (_, b) in tail.iter().chain(head) {
            let value = if b.is_ascii_digit() {
                u32::from(b - b'0')
            } else {
                u32::from(b.to_ascii_uppercase() - b'A') + 10
            };
            let width = if value >= 10 { 100 } else { 10 };
            remainder = (remainder * width + value) % 97;
        }
        (remainder == 1).then(|| 0..chars[count - 1].0)
    })
}

/// Whether a JWT's first part decodes to a JSON object (its header).
fn jwt_header(text: &[u8]) -> bool {
    let header = text.split(|b| *b == b'.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .is_some_and(|json| json.is_object())
}

/// The patterns values are searched for, compiled once; cheap to clone. The default finds nothing.
#[derive(Clone, Debug, Default)]
pub struct ValuePatterns {
    compiled: Option<Arc<Compiled>>,
}

#[derive(Debug)]
struct Compiled {
    /// Every pattern as one alternation: one pass over a value finds the candidates.
    any: Regex,
    /// Each pattern anchored, with its check: which one a candidate is.
    each: Vec<(Regex, Check)>,
}

impl ValuePatterns {
    /// The built-in `kinds` and the rules file's named patterns, compiled together; an error names the pattern
    /// that cannot be compiled within the size limit.
    pub fn new(kinds: &[ValueKind], named: &[ValuePatternSpec]) -> Result<Self, String> {
        let mut sources: Vec<(String, String, Check)> = Vec::new();
        for kind in ValueKind::ALL.iter().filter(|kind| kinds.contains(kind)) {
            for (pattern, check) in kind.patterns() {
                sources.push((kind.as_str().to_string(), pattern.to_string(), *check));
            }
        }
        for spec in named {
            sources.push((spec.name.clone(), spec.pattern.clone(), Check::Whole));
        }
        if sources.is_empty() {
            return Ok(Self::default());
        }
        let build = |pattern: &str| {
            RegexBuilder::new(pattern)
                .size_limit(MAX_COMPILED_SIZE)
                .dfa_size_limit(MAX_DFA_SIZE)
                .build()
        };
        let mut each = Vec::with_capacity(sources.len());
        for (name, pattern, check) in &sources {
            let anchored = build(&format!("^(?:{pattern})$")).map_err(|error| {
                format!("value pattern \"{name}\": {}", one_line(&error.to_string()))
            })?;
            each.push((anchored, *check));
        }
        let alternation = sources
            .iter()
            .map(|(_, pattern, _)| format!("(?:{pattern})"))
            .collect::<Vec<_>>()
            .join("|");
        let any = build(&alternation).map_err(|error| {
            format!(
                "the value patterns together: {}",
                one_line(&error.to_string())
            )
        })?;
        Ok(Self {
            compiled: Some(Arc::new(Compiled { any, each })),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.compiled.is_none()
    }

    /// `text` with every value found replaced by `token(value)`; `None` when nothing was found. One pass of the
    /// search: a candidate that fails its check is skipped whole, so the work stays linear in the text.
    pub fn replace(&self, text: &[u8], token: impl Fn(&[u8]) -> String) -> Option<Vec<u8>> {
        let compiled = self.compiled.as_ref()?;
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for found in compiled.any.find_iter(text) {
            if found.is_empty() {
                continue;
            }
            let candidate = found.as_bytes();
            let Some(part) = compiled
                .each
                .iter()
                .filter(|(anchored, _)| anchored.is_match(candidate))
                .find_map(|(_, check)| check.redacted(candidate))
                .filter(|part| !part.is_empty())
            else {
                continue;
            };
            let (start, end) = (found.start() + part.start, found.start() + part.end);
            let out = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
            out.extend_from_slice(&text[copied..start]);
            out.extend_from_slice(token(&text[start..end]).as_bytes());
            copied = end;
        }
        let mut out = out?;
        out.extend_from_slice(&text[copied..]);
        Some(out)
    }
}

/// What a path segment keeps unencoded when it is encoded again: `/` never occurs in a segment, and names it
/// as a path's for [`Redactor::encoded_values`].
const PATH_KEEPS: &[u8] = b"/:@!$'()*,;=";

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Redactor {
    /// Whether values are searched for personal data.
    pub fn redacts_values(&self) -> bool {
        !self.values.is_empty()
    }

    /// Bytes with the personal data in them replaced by its keyed hash; `None` when there is none.
    pub fn bytes_values(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.values.replace(bytes, |value| self.token(value))
    }

    /// Text with the personal data in it replaced by its keyed hash.
    pub fn text_values<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.bytes_values(text.as_bytes()) {
            // Values are cut where a pattern matched, which for text is at character boundaries.
            Some(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
            None => Cow::Borrowed(text),
        }
    }

    /// Personal data in a JSON value replaced, at any depth: in strings where it is found (the rest of the
    /// string kept), in object keys (a map keyed by e-mail address), and whole numbers that are card numbers,
    /// which become the string of their hash.
    pub fn json_values(&self, value: &mut Value) {
        if self.values.is_empty() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Cow::Owned(clean) = self.text_values(text) {
                    *text = clean;
                }
            }
            // Only a number long enough to be a card number is searched.
            Value::Number(number) if number.as_u64().is_some_and(|n| n >= 1_000_000_000_000) => {
                let text = number.to_string();
                if let Cow::Owned(clean) = self.text_values(&text) {
                    *value = Value::String(clean);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.json_values(item)),
            Value::Object(map) => {
                let renamed: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|key| match self.text_values(key) {
                        Cow::Owned(clean) => Some((key.clone(), clean)),
                        Cow::Borrowed(_) => None,
                    })
                    .collect();
                for (key, clean) in renamed {
                    if let Some(item) = map.remove(&key) {
                        map.insert(clean, item);
                    }
                }
                map.values_mut().for_each(|item| self.json_values(item));
            }
            _ => {}
        }
    }

    /// One percent-encoded part of a URL (a path segment, a query value) with its personal data replaced: the
    /// decoded text searched, encoded again when something was found.
    pub(crate) fn encoded_values<'a>(&self, encoded: &'a str, keep: &[u8]) -> Cow<'a, str> {
        if self.values.is_empty() {
            return Cow::Borrowed(encoded);
        }
        // A `+` is a space in a query value, itself in a path segment (`ada+shop@example.com`).
        let decoded = if keep.contains(&b'/') {
            percent_decode(&encoded.replace('+', "%2B"))
        } else {
            percent_decode(encoded)
        };
        match self.text_values(&decoded) {
            Cow::Owned(clean) => Cow::Owned(percent_encode(&clean, keep)),
            Cow::Borrowed(_) => Cow::Borrowed(encoded),
        }
    }

    /// A request target's path with its segments' personal data replaced (a scheme and authority, in an
    /// absolute URI, are kept: they name the upstream).
    pub(crate) fn path_values<'a>(&self, path: &'a str) -> Cow<'a, str> {
        if self.values.is_empty() {
            return Cow::Borrowed(path);
        }
        let start = match path.find("://") {
            Some(at) => path[at + 3..]
                .find('/')
                .map_or(path.len(), |slash| at + 3 + slash),
            None => 0,
        };
        let (origin, rest) = path.split_at(start);
        let mut changed = false;
        let segments: Vec<Cow<'_, str>> = rest
            .split('/')
            .map(|segment| {
                let clean = self.encoded_values(segment, PATH_KEEPS);
                changed |= matches!(clean, Cow::Owned(_));
                clean
            })
            .collect();
        if !changed {
            return Cow::Borrowed(path);
        }
        Cow::Owned(format!("{origin}{}", segments.join("/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pii() -> Redactor {
        Redactor::new(b"k".to_vec(), &[])
            .with_values(ValuePatterns::new(&ValueKind::ALL, &[]).unwrap())
    }

    fn found(text: &str) -> String {
        pii().text_values(text).into_owned()
    }

    #[test]
    fn each_kind_is_found_checked_and_replaced_where_it_sits() {
        let r = pii();
        let t = |value: &str| r.token(value.as_bytes());
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
        let jwt_query = format!("token={jwt}");
        // Each text, and the value in it that is replaced by its token (none: the text stays as it is).
        for (text, secret) in [
            ("mail ada@example.co.uk now", Some("ada@example.co.uk")),
            ("card 4111 1111 1111 1111.", Some("4111 1111 1111 1111")),
            ("4111111111111111", Some("4111111111111111")),
            // Not a card: the Luhn sum fails; a millisecond timestamp starts with 1.
            ("4111111111111112", None),
            ("1733580000000", None),
            // A card followed by more digits is cut back to the card.
            ("4111 1111 1111 1111 123", Some("4111 1111 1111 1111")),
            (
                "GB82 WEST 1234 5698 7654 32",
                Some("GB82 WEST 1234 5698 7654 32"),
            ),
            ("BE68 5390 0754 7034 ABCD", Some("BE68 5390 0754 7034")),
            ("GB82 WEST 1234 5698 7654 33", None),
            (&jwt_query, Some(jwt)),
            ("eyJnotjson.eyJx.y", None),
            (
                "Authorization: Bearer abc.def-123456",
                Some("abc.def-123456"),
            ),
            ("from 10.1.2.3, 999.1.1.1", Some("10.1.2.3")),
            ("via 2001:db8::1 at 12:30:45", Some("2001:db8::1")),
            ("nothing here", None),
        ] {
            let expected = match secret {
                Some(secret) => text.replacen(secret, &t(secret), 1),
                None => text.to_string(),
            };
            assert_eq!(found(text), expected, "{text}");
        }
    }

    #[test]
    fn json_values_keep_their_place_and_equal_values_hash_equal() {
        let r = pii();
        let mut value = json!({"note": "write to ada@example.com", "ada@example.com": 1,
                               "n": 4111111111111111u64, "list": ["ada@example.com", 7]});
        r.json_values(&mut value);
        let token = r.token(b"ada@example.com");
        assert_eq!(value["note"], format!("write to {token}"));
        assert_eq!(value[&token], 1);
        assert_eq!(value["list"][0], token);
        assert_eq!(value["list"][1], 7);
        assert_eq!(value["n"], r.token(b"4111111111111111"));
        assert!(!value.to_string().contains("ada@"));
        // Text that holds a `?` is searched as text, not taken apart as a URL.
        let body = r
            .json_body(br#"{"q":"mail ada@example.com, a/b?c d"}"#)
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["q"], format!("mail {token}, a/b?c d"));
        // Form fields are searched decoded.
        let form = r.form_body(b"to=ada%40example.com&n=1").unwrap();
        assert_eq!(String::from_utf8(form).unwrap(), format!("to={token}&n=1"));
    }

    #[test]
    fn named_patterns_are_compiled_once_and_bad_ones_named() {
        let spec = |name: &str, pattern: &str| ValuePatternSpec {
            name: name.into(),
            pattern: pattern.into(),
        };
        let r = Redactor::new(b"k".to_vec(), &[])
            .with_values(ValuePatterns::new(&[], &[spec("order id", "ORD-[0-9]{8}")]).unwrap());
        assert_eq!(
            r.text_values("see ORD-12345678"),
            format!("see {}", r.token(b"ORD-12345678"))
        );
        assert_eq!(
            r.text_values("mail ada@example.com"),
            "mail ada@example.com"
        );
        let error = ValuePatterns::new(&[], &[spec("huge", "[a-z]{1000}{1000}")]).unwrap_err();
        assert!(
            error.starts_with("value pattern \"huge\":") && !error.contains('\n'),
            "{error}"
        );
    }

    #[test]
    fn url_parts_are_searched_decoded() {
        let r = pii();
        let token = r.token(b"ada@example.com");
        assert_eq!(
            r.path_values("/users/ada%40example.com/orders"),
            format!("/users/{token}/orders")
        );
        assert_eq!(r.path_values("http://10.0.0.1/a"), "http://10.0.0.1/a");
        let plus = r.token(b"ada+shop@example.com");
        assert_eq!(
            r.path_values("/u/ada+shop@example.com"),
            format!("/u/{plus}")
        );
        assert_eq!(
            r.encoded_values("ada%40example.com", b""),
            token.replace(':', "%3A")
        );
    }
}
