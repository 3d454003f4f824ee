//! Recognises identifier-like strings (numbers, UUIDs, long hex, long mixed tokens), which endpoint names and
//! generalised JSON paths replace with `{id}`.

/// Whether a path segment looks like an identifier rather than a name: all digits, a UUID, a long hex string,
/// or a long token mixing letters and digits (ULIDs, base64url ids).
pub fn is_identifier(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let bytes = segment.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() {
        return true;
    }
    if is_uuid(bytes) {
        return true;
    }
    // Long hex (object ids, digests): at least 16 hex digits, one of them a decimal digit, so that words made
    // of the letters a-f are not taken for ids.
    if bytes.len() >= 16 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Long mixed tokens: letters and digits (and - or _), at least 20 long, with at least 3 digits, which
    // leaves slugs such as `getting-started-with-v2` alone.
    bytes.len() >= 20
        && digits >= 3
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && !looks_like_words(segment)
}

/// A slug of words separated by dashes or underscores, where the digits are in short groups.
fn looks_like_words(segment: &str) -> bool {
    let parts: Vec<&str> = segment.split(['-', '_']).collect();
    parts.len() >= 3 && parts.iter().all(|part| part.len() <= 10)
}

fn is_uuid(bytes: &[u8]) -> bool {
    match bytes.len() {
        32 => bytes.iter().all(u8::is_ascii_hexdigit),
        36 => bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_words() {
        for id in [
            "123",
            "0",
            "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b",
            "507f1f77bcf86cd799439011",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(is_identifier(id), "{id}");
        }
        for word in [
            "",
            "users",
            "v2",
            "deadbeef",
            "getting-started-with-v2-and-v3",
            "user42",
        ] {
            assert!(!is_identifier(word), "{word}");
        }
    }
}
