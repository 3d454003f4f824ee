//! Text made safe for where it goes (HTML and XML markup, URL components), the mark redacted values carry, and
//! the one stable hash stored keys use: small, dependency-free, shared by the web, the gate's reports, the
//! proxy, redaction and the store.

/// Which markup escaped text goes into.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Markup {
    /// HTML element content and quoted attribute values.
    Html,
    /// XML 1.0 content and attributes, where some control characters cannot appear at all.
    Xml,
}

/// Escapes `&`, `<`, `>`, `"` and `'` for `markup`; in XML, control characters XML cannot hold become U+FFFD.
pub fn escape(text: &str, markup: Markup) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' if markup == Markup::Xml => out.push_str("&apos;"),
            '\'' => out.push_str("&#39;"),
            c if markup == Markup::Xml && (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.push('\u{FFFD}')
            }
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes every byte but RFC 3986's unreserved characters and those in `keep` (such as `/`).
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || keep.contains(&byte)
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded (and `+` as a space), lossily: enough to match a parameter's name.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' if at + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        at += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What every redacted value starts with: `redacted:` and a keyed hash (see `redact`).
pub const REDACTED_MARK: &str = "redacted:";

/// Whether `bytes` hold a redacted value somewhere.
pub fn holds_redacted(bytes: &[u8]) -> bool {
    let mark = REDACTED_MARK.as_bytes();
    bytes.windows(mark.len()).any(|window| window == mark)
}

/// FNV-1a over `bytes`: fixed by its definition (unlike the standard library's hasher), so every process and
/// every release computes the same value, which stored keys and replicas' sampling decisions rely on.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_urls_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}</a>", Markup::Html),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;\u{1}&lt;/a&gt;"
        );
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}</a>", Markup::Xml),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\u{FFFD}&lt;/a&gt;"
        );
        assert_eq!(percent_encode("GET /a b~", &[]), "GET%20%2Fa%20b~");
        assert_eq!(percent_encode("/a b?c", b"/"), "/a%20b%3Fc");
        assert_eq!(percent_decode("access%5Ftoken+x%2"), "access_token x%2");
        assert!(holds_redacted(b"Bearer redacted:0123456789ab"));
        assert!(!holds_redacted(b"redacted"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
