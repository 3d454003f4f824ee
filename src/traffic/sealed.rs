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
