//! XML bodies as stored: the text and attributes of elements named like secret fields redacted.
//!
//! The body is rewritten in place, range by range, so that everything else stays as it was sent: an element
//! whose local name is a secret field has its content replaced by the keyed hash of its text (trimmed, with
//! references resolved; of its whole content when it holds elements), an attribute so named has its value
//! replaced by the hash of its value, and other text, CDATA, comments and attribute values have the secret
//! query parameters of URLs in them and their personal data replaced. A DTD declaring entities, which could
//! spell out a redacted secret, is itself replaced when anything secret was found.

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::attributes::Attributes;
use quick_xml::events::{BytesRef, BytesStart, Event};

use super::{Redactor, UNPARSEABLE_WITH_SECRET};

/// What the content of a DTD that declares entities becomes once a secret was redacted: `<!DOCTYPE redacted>`.
const REDACTED_DOCTYPE: &str = "redacted";

/// Byte ranges of the body and what each becomes, in order and apart.
type Replacements = Vec<(Range<usize>, String)>;

/// A secret element being read: where its content starts, and its text so far.
struct SecretElement {
    depth: usize,
    content_start: usize,
    text: String,
    has_children: bool,
}

impl Redactor {
    /// An XML body with its secret elements and attributes redacted; `None` when nothing needed changing. A
    /// body that is not well-formed XML is replaced whole when it names a secret field as an element or an
    /// attribute, and otherwise stored as a part is ([`Redactor::partial_body`]).
    pub(super) fn xml_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if !self.redacts_json_fields() && !self.redacts_values() {
            return None;
        }
        let Some(replacements) = self.xml_replacements(body) else {
            if self.names_secret_xml_name(body) {
                return Some(UNPARSEABLE_WITH_SECRET.to_vec());
            }
            return self.partial_body(body);
        };
        if replacements.is_empty() {
            return None;
        }
        let mut stored = Vec::with_capacity(body.len());
        let mut copied = 0;
        for (range, replacement) in replacements {
            // Ranges come apart and in order from a well-formed document; anything else is not stored.
            let Some(kept) = body.get(copied..range.start) else {
                return Some(UNPARSEABLE_WITH_SECRET.to_vec());
            };
            stored.extend_from_slice(kept);
            stored.extend_from_slice(replacement.as_bytes());
            copied = range.end;
        }
        stored.extend_from_slice(&body[copied..]);
        Some(stored)
    }

    /// What to replace in `body`; `None` when it is not well-formed XML.
    fn xml_replacements(&self, body: &[u8]) -> Option<Replacements> {
        let text = std::str::from_utf8(body).ok()?;
        let mut reader = Reader::from_str(text);
        let mut replacements = Vec::new();
        let mut depth = 0usize;
        let mut secret: Option<SecretElement> = None;
        let mut secrets_found = false;
        let mut doctype = None;
        let mut root_seen = false;
        loop {
            match reader.read_event().ok()? {
                Event::Start(start) => {
                    depth += 1;
                    root_seen = true;
                    if let Some(secret) = &mut secret {
                        secret.has_children = true;
                        continue;
                    }
                    secrets_found |= self.xml_attributes(text, &start, &mut replacements)?;
                    if self.is_secret_field(start.local_name().into_inner()) {
                        secret = Some(SecretElement {
                            depth,
                            // Past the tag's closing `>`.
                            content_start: span(text, &start)?.end + 1,
                            text: String::new(),
                            has_children: false,
                        });
                    }
                }
                Event::Empty(start) => match &mut secret {
                    Some(secret) => secret.has_children = true,
                    None => {
                        secrets_found |= self.xml_attributes(text, &start, &mut replacements)?
                    }
                },
                Event::End(end) => {
                    if let Some(open) = secret.take_if(|secret| secret.depth == depth) {
                        // Before the closing tag's `</`.
                        let content_end = span(text, &end)?.start.checked_sub(2)?;
                        let content = open.content_start..content_end;
                        if !content.is_empty() {
                            let value = if open.has_children {
                                text.get(content.clone())?
                            } else {
                                open.text
                                    .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
                            };
                            replacements.push((content, self.token(value.as_bytes())));
                            secrets_found = true;
                        }
                    }
                    depth = depth.checked_sub(1)?;
                }
                Event::Text(piece) => match &mut secret {
                    Some(secret) => secret.text.push_str(&piece.xml10_content()),
                    None => self.xml_text(text, &piece, &mut replacements)?,
                },
                Event::CData(data) => match &mut secret {
                    Some(secret) => secret.text.push_str(&data.xml10_content()),
                    None => self.xml_text(text, &data, &mut replacements)?,
                },
                Event::GeneralRef(reference) => {
                    if let Some(secret) = &mut secret {
                        push_reference(&mut secret.text, &reference);
                    }
                }
                Event::Comment(comment) => {
                    if secret.is_none() {
                        self.xml_text(text, &comment, &mut replacements)?;
                    }
                }
                Event::DocType(declaration) => {
                    // One DTD, before the root: anywhere else the document is not well-formed.
                    if doctype.is_some() || depth > 0 || root_seen {
                        return None;
                    }
                    doctype = Some(span(text, &declaration)?);
                }
                Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if depth != 0 {
            return None;
        }
        if let Some(declaration) = doctype {
            let content = text.get(declaration.clone())?;
            if secrets_found && content.contains("<!ENTITY") {
                replacements.push((declaration, REDACTED_DOCTYPE.to_string()));
            } else if let Some(clean) = self.text_value(content) {
                replacements.push((declaration, clean));
            }
        }
        replacements.sort_by_key(|(range, _)| range.start);
        Some(replacements)
    }

    /// Redacts a tag's attributes; whether one of them was a secret field. `None` when they are not well-formed.
    fn xml_attributes(
        &self,
        text: &str,
        start: &BytesStart<'_>,
        replacements: &mut Replacements,
    ) -> Option<bool> {
        let tag = text.get(span(text, start)?)?;
        let mut found = false;
        for attribute in Attributes::new(tag, start.name().as_ref().len()) {
            let attribute = attribute.ok()?;
            if attribute.key.as_namespace_binding().is_some() {
                continue;
            }
            let Cow::Borrowed(raw) = attribute.value else {
                continue;
            };
            let range = span(text, raw)?;
            if self.is_secret_field(attribute.key.local_name().into_inner()) {
                let value = attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .unwrap_or(Cow::Borrowed(raw));
                replacements.push((range, self.token(value.as_bytes())));
                found = true;
            } else if let Some(clean) = self.text_value(raw) {
                replacements.push((range, clean));
            }
        }
        Some(found)
    }

    /// Redacts a piece of text (as it is in the body) that is no secret field's.
    fn xml_text(&self, text: &str, piece: &str, replacements: &mut Replacements) -> Option<()> {
        if let Some(clean) = self.text_value(piece) {
            replacements.push((span(text, piece)?, clean));
        }
        Some(())
    }

    /// Whether a body names a secret field where XML names elements (`<password`, `<p:password`, `</password`)
    /// or attributes (`password=`), for a body that cannot be read.
    pub(super) fn names_secret_xml_name(&self, body: &[u8]) -> bool {
        if !self.redacts_json_fields() {
            return false;
        }
        let is_name_byte =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
        let mut at = 0;
        while at < body.len() {
            if !is_name_byte(body[at]) {
                at += 1;
                continue;
            }
            let start = at;
            while at < body.len() && is_name_byte(body[at]) {
                at += 1;
            }
            let name = String::from_utf8_lossy(&body[start..at]);
            let local = name.rsplit(':').next().unwrap_or_default();
            let before = body[..start].trim_ascii_end();
            let opens_tag = before.ends_with(b"<") || before.ends_with(b"</");
            let assigned = body[at..].trim_ascii_start().starts_with(b"=");
            if (opens_tag || assigned) && self.is_secret_field(local) {
                return true;
            }
        }
        false
    }
}

/// A reference's text, added to a secret element's text (its hash's input): resolved when it is a character
/// or predefined entity reference, as written otherwise.
fn push_reference(text: &mut String, reference: &BytesRef<'_>) {
    match reference.resolve_char_ref() {
        Ok(Some(character)) => text.push(character),
        _ => match resolve_xml_entity(reference) {
            Some(resolved) => text.push_str(resolved),
            None => {
                text.push('&');
                text.push_str(reference);
                text.push(';');
            }
        },
    }
}

/// Where `part`, a slice of `text` the reader handed out, lies in it.
fn span(text: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    let found = text.get(start..end)?;
    (found.as_ptr() == part.as_ptr()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::redact::values::{ValueKind, ValuePatterns};

    fn redactor() -> Redactor {
        Redactor::new(b"k".to_vec(), &["Password".to_string()])
    }

    fn stored(redactor: &Redactor, body: &str) -> Option<String> {
        redactor
            .xml_body(body.as_bytes())
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    fn reads(xml: &str) {
        let mut scratch = crate::budget::Charge::none();
        assert!(
            crate::analysis::structured::xml::parse_one(xml.as_bytes(), &mut scratch).is_ok(),
            "{xml}"
        );
    }

    #[test]
    fn a_part_of_a_body_cut_short_naming_a_secret_element_is_not_kept() {
        let part = b"<order><customer>Ada</customer><ns:password>hunter2</ns:passw";
        assert_eq!(
            redactor().partial_body(part).as_deref(),
            Some(UNPARSEABLE_WITH_SECRET)
        );
        let attribute = b"<login user=\"ada\" password=\"hunter2";
        assert_eq!(
            redactor().partial_body(attribute).as_deref(),
            Some(UNPARSEABLE_WITH_SECRET)
        );
        assert_eq!(redactor().partial_body(b"<order><total>3</to"), None);
    }

    #[test]
    fn secret_elements_and_attributes_are_replaced_in_place() {
        let r = redactor();
        let body = r#"<?xml version="1.0"?>
<s:Envelope xmlns:s="urn:s"><s:Body><login user="ada" a:api_key="k&amp;1" xmlns:a="urn:a">
  <s:password> hunter&amp;2 </s:password><TOKEN><![CDATA[t0k]]></TOKEN><note>kept</note>
</login></s:Body></s:Envelope>"#;
        let redacted = stored(&r, body).expect("redacted");
        for secret in ["hunter", "t0k", "k&amp;1"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        // Hashed as the tree reads them: text trimmed and references resolved, as JSON strings are.
        assert!(redacted.contains(&format!(
            "<s:password>{}</s:password>",
            r.token(b"hunter&2")
        )));
        assert!(redacted.contains(&format!("<TOKEN>{}</TOKEN>", r.token(b"t0k"))));
        assert!(redacted.contains(&format!(r#"a:api_key="{}""#, r.token(b"k&1"))));
        // Everything else as it was sent.
        assert!(redacted.starts_with(r#"<?xml version="1.0"?>"#));
        assert!(
            redacted.contains(r#"<login user="ada" "#) && redacted.contains("<note>kept</note>")
        );
        reads(&redacted);
    }

    #[test]
    fn a_secret_element_holding_elements_is_replaced_whole() {
        let r = redactor();
        let redacted = stored(
            &r,
            "<a><password><hash>h1</hash><salt>s1</salt></password><b/></a>",
        )
        .unwrap();
        assert_eq!(
            redacted,
            format!(
                "<a><password>{}</password><b/></a>",
                r.token(b"<hash>h1</hash><salt>s1</salt>")
            )
        );
    }

    #[test]
    fn personal_data_and_urls_are_replaced_where_they_sit() {
        let r = redactor().with_values(ValuePatterns::new(&ValueKind::ALL, &[]).unwrap());
        let body = r#"<a mail="ada@example.com"><!-- from ada@example.com -->write to ada@example.com
<next>https://x.example/?token=t0k&amp;page=2</next><c><![CDATA[ada@example.com]]></c></a>"#;
        let redacted = stored(&r, body).unwrap();
        assert!(!redacted.contains("ada@example.com"), "{redacted}");
        assert!(
            !redacted.contains("t0k") && redacted.contains("page=2"),
            "{redacted}"
        );
        assert_eq!(
            redacted.matches(&r.token(b"ada@example.com")).count(),
            4,
            "{redacted}"
        );
        reads(&redacted);
    }

    #[test]
    fn nothing_to_redact_is_none_and_a_body_that_cannot_be_read_is_not_kept_with_its_secrets() {
        let r = redactor();
        assert_eq!(stored(&r, "<a><b x='1'>text</b></a>"), None);
        assert_eq!(
            Redactor::new(b"k".to_vec(), &[])
                .xml_body(b"<password>x</password>")
                .map(|_| ()),
            Some(())
        );
        // Cut short or broken: a secret element or attribute named anywhere, and the whole body is replaced.
        for broken in [
            "<a><password>hunter2",
            "<a x='1'><p:Password>x</b>",
            "<a password = 'x'",
        ] {
            assert_eq!(
                r.xml_body(broken.as_bytes()).as_deref(),
                Some(UNPARSEABLE_WITH_SECRET),
                "{broken}"
            );
        }
        assert_eq!(stored(&r, "<a>the password is long</b>"), None);
        assert_eq!(stored(&r, "<a><b>1</a>"), None);
    }

    #[test]
    fn a_dtd_that_could_spell_out_a_secret_is_replaced() {
        let r = redactor();
        let body = r#"<!DOCTYPE a [<!ENTITY p "hunter2">]><a><password>&p;</password></a>"#;
        let redacted = stored(&r, body).unwrap();
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(
            redacted.starts_with("<!DOCTYPE redacted><a><password>redacted:"),
            "{redacted}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_redacted_without_panicking(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "<a>", "</a>", "<password>", "</password>", "<p:token xmlns:p='urn:p'>", "</p:token>",
                "<b secret='s'/>", "<c x=\"ada@example.com\">", "</c>", "hunter2", " ", "&amp;", "&x;",
                "<![CDATA[t]]>", "<!-- ada@example.com -->", "<!DOCTYPE a [<!ENTITY x 'y'>]>", "<", ">",
                "\"", "=", "?token=t&", "\u{feff}",
            ]), 0..30),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            // Compiled once: the search's patterns take far longer to build than a case takes to run.
            static REDACTOR: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(|| {
                redactor().with_values(ValuePatterns::new(&ValueKind::ALL, &[]).unwrap())
            });
            let r = &*REDACTOR;
            let body = pieces.concat();
            let _ = r.xml_body(body.as_bytes());
            let _ = r.xml_body(&bytes);
        }
    }

    #[test]
    fn xml_media_types_are_redacted_as_xml() {
        let r = redactor();
        for media_type in [
            "application/xml",
            "text/xml; charset=utf-8",
            "application/soap+xml",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_str(media_type).unwrap());
            let body = r
                .body(&headers, b"<a><password>hunter2</password></a>")
                .unwrap();
            let body = String::from_utf8(body).unwrap();
            assert!(
                body.starts_with("<a><password>redacted:"),
                "{media_type}: {body}"
            );
        }
    }
}
