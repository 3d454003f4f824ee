//! Recorded lines sealed one by one (`serve --record` with `--sample-recipient`): each line is the JSON object
//! `{"sealed":"<base64 age>"}` holding one whole request line, so that the file stays appendable and a crash
//! costs at most the line being written; `replay --sample-identity FILE` opens them as it reads.

use serde::Deserialize;

use super::MAX_RECORD_BYTES;
use crate::seal::{OpenError, Opener};

/// The longest sealed line read: a request line of [`MAX_RECORD_BYTES`], sealed and base64 (4/3), with room
/// for age's header.
pub const MAX_SEALED_LINE: usize = MAX_RECORD_BYTES / 3 * 4 + (64 << 10);

/// A sealed line (without its newline) for an age ciphertext in base64 (which JSON needs no escape for).
pub fn line(sealed: &str) -> String {
    format!("{{\"sealed\":\"{sealed}\"}}")
}

/// The ciphertext of a line that is a sealed one; none for any other line.
pub fn ciphertext(raw: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SealedLine {
        sealed: String,
    }
    // A request line is not parsed twice: only one that names the field is tried.
    memchr::memmem::find(raw, b"\"sealed\"")?;
    serde_json::from_slice::<SealedLine>(raw)
        .ok()
        .map(|line| line.sealed)
}

/// What opening a sealed line gave.
pub enum Opened {
    /// The request line it held.
    Line(Vec<u8>),
    /// It cannot be opened (damaged, or larger than a record may be): skipped, with why.
    Skipped(String),
}

/// Opens a sealed line; without an identity, or with one it was not sealed to, the whole file is unreadable:
/// that is an error, not a skip per line.
pub fn open(sealed: &str, opener: Option<&Opener>) -> Result<Opened, String> {
    let Some(opener) = opener else {
        return Err(
            "it is encrypted (recorded with --sample-recipient): give the private key with --sample-identity FILE"
                .to_string(),
        );
    };
    match opener.open(sealed) {
        Ok(plain) if plain.len() > MAX_RECORD_BYTES => Ok(Opened::Skipped(format!(
            "an encrypted line of more than {MAX_RECORD_BYTES} bytes"
        ))),
        Ok(plain) => Ok(Opened::Line(plain)),
        Err(error @ OpenError::WrongIdentity(_)) => Err(format!("it cannot be decrypted: {error}")),
        Err(error) => Ok(Opened::Skipped(format!("an encrypted line {error}"))),
    }
}

#[cfg(test)]
// X25519 keys, which the age crate deprecates for new keys but deployments use.
#[allow(deprecated)]
mod tests {
    use super::*;
    use crate::seal::Sealer;
    use crate::traffic::{Record, jsonl, records_of};

    const PLAIN: &str = r#"{"method":"GET","uri":"/orders/7?email=ada@example.com","headers":[]}"#;

    fn keys() -> (Sealer, Opener) {
        let identity = age::x25519::Identity::generate();
        (
            Sealer::new(vec![Box::new(identity.to_public())]),
            Opener::new(vec![Box::new(identity)]),
        )
    }

    #[test]
    fn sealed_lines_read_with_their_identity_and_stop_without_it() {
        let (sealer, opener) = keys();
        let sealed = line(&sealer.seal(PLAIN.as_bytes()).unwrap());
        assert!(!sealed.contains("ada@example.com"));
        let damaged = line("AAAA");
        let file = format!("{sealed}\n{damaged}\n{PLAIN}\n");

        let (records, result) =
            records_of(|sink| jsonl::read(file.as_bytes(), sink, Some(&opener)));
        result.unwrap();
        assert!(
            matches!(&records[0], Record::Request(request) if request.uri.query() == Some("email=ada@example.com"))
        );
        assert!(
            matches!(&records[1], Record::Skipped(skipped) if skipped.line == 2 && skipped.reason.contains("damaged")),
            "a damaged line is skipped"
        );
        assert!(
            matches!(&records[2], Record::Request(_)),
            "a plain line still reads"
        );

        let (records, result) = records_of(|sink| jsonl::read(file.as_bytes(), sink, None));
        let said = result.unwrap_err();
        assert!(
            said.contains("line 1") && said.contains("--sample-identity"),
            "{said}"
        );
        assert!(records.is_empty());

        let (_, stranger) = keys();
        let (_, result) = records_of(|sink| jsonl::read(file.as_bytes(), sink, Some(&stranger)));
        assert!(result.unwrap_err().contains("is not one it was sealed to"));
    }

    #[test]
    fn only_a_line_of_the_one_field_is_a_sealed_one() {
        assert_eq!(ciphertext(br#"{"sealed":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(ciphertext(br#"{"sealed":"abc","method":"GET"}"#), None);
        assert_eq!(ciphertext(PLAIN.as_bytes()), None);
        assert_eq!(ciphertext(br#"{"sealed":1}"#), None);
    }
}
