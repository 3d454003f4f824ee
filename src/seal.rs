//! Sealing at rest with age (X25519): what a sample or a recorded line holds is encrypted to the public keys in
//! `--sample-recipient FILE` before it is written, and opened on view by a process given the private key in
//! `--sample-identity FILE`. The process that stores holds only public keys, so it cannot read back what it
//! stored. Keys come from files only (a Kubernetes Secret mounted as a file), never from the command line,
//! where any user of the host can read them.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A key file larger than this is not a key file (age's own are under 200 bytes a key).
const MAX_KEY_FILE: u64 = 64 << 10;

/// Where the keys are read from; neither is the default.
#[derive(Clone, Debug, Default)]
pub struct SealingSettings {
    /// A file of age X25519 recipients (`age1...`, one a line, `#` comments): samples and recordings are
    /// sealed to every one of them.
    pub recipient_file: Option<PathBuf>,
    /// A file of age X25519 identities (`AGE-SECRET-KEY-1...`, as `age-keygen` writes them): sealed samples
    /// and recordings are opened with any that fits.
    pub identity_file: Option<PathBuf>,
}

/// A key file that cannot be used: one line, naming the file, never quoting a key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(String);

/// The keys a process was given, loaded and checked.
#[derive(Clone, Default)]
pub struct Keys {
    pub sealer: Option<Arc<Sealer>>,
    pub opener: Option<Arc<Opener>>,
}

impl SealingSettings {
    /// Reads both files; when both are given, checks that the identity opens what is sealed to the recipients,
    /// so that a mismatched pair fails at start rather than on the first page read.
    pub fn load(&self) -> Result<Keys, KeyFileError> {
        let sealer = self
            .recipient_file
            .as_deref()
            .map(Sealer::from_file)
            .transpose()?;
        let opener = self
            .identity_file
            .as_deref()
            .map(Opener::from_file)
            .transpose()?;
        if let (Some(sealer), Some(opener)) = (&sealer, &opener) {
            let probe = sealer
                .seal(b"shadowdiff key check")
                .map_err(|error| KeyFileError(error.to_string()))?;
            if let Err(error) = opener.open(&probe) {
                return Err(KeyFileError(format!(
                    "the sample identity file {} does not open what is sealed to the recipients in {}: {error}",
                    opener.file.display(),
                    sealer.file.display()
                )));
            }
        }
        Ok(Keys {
            sealer: sealer.map(Arc::new),
            opener: opener.map(Arc::new),
        })
    }
}

/// Any age recipient.
pub type Recipient = Box<dyn age::Recipient + Send + Sync>;
/// Any age identity.
pub type Identity = Box<dyn age::Identity + Send + Sync>;

/// The public side: seals.
pub struct Sealer {
    recipients: Vec<Recipient>,
    file: PathBuf,
}

/// The private side: opens.
pub struct Opener {
    identities: Vec<Identity>,
    file: PathBuf,
}

/// An age recipient: X25519 (`age1...`), or the post-quantum hybrid (`age1pq1...`) age 1.3 and later make.
fn recipient(line: &str) -> Option<Recipient> {
    // X25519 is deprecated by the age crate for new keys (it is not safe against a future quantum computer),
    // but it is what `age-keygen` writes by default and what deployments hold: both are taken.
    #[allow(deprecated)]
    if let Ok(recipient) = age::x25519::Recipient::from_str(line) {
        return Some(Box::new(recipient));
    }
    age::pq::Recipient::from_str(line)
        .ok()
        .map(|recipient| Box::new(recipient) as Recipient)
}

/// An age identity: X25519 (`AGE-SECRET-KEY-1...`) or the post-quantum hybrid.
fn identity(line: &str) -> Option<Identity> {
    if let Ok(identity) = age::x25519::Identity::from_str(line) {
        return Some(Box::new(identity));
    }
    age::pq::Identity::from_str(line)
        .ok()
        .map(|identity| Box::new(identity) as Identity)
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("file", &self.file).finish()
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the identities themselves.
        f.debug_struct("Opener").field("file", &self.file).finish()
    }
}

/// Sealing failed (age's encryption into memory fails only on a bug, but it is an error, not a panic).
#[derive(Debug, thiserror::Error)]
#[error("cannot seal: {0}")]
pub struct SealFailure(String);

impl SealFailure {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// Why something sealed did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Sealed to other keys than the identity file's.
    #[error("the identity in {0} is not one it was sealed to")]
    WrongIdentity(PathBuf),
    /// Not base64, not an age file, or altered since it was sealed.
    #[error("damaged: {0}")]
    Damaged(String),
}

/// The key lines of a file: trimmed, blank lines and `#` comments left out, with their line numbers.
fn key_lines(path: &Path, role: &str) -> Result<Vec<(usize, String)>, KeyFileError> {
    let unreadable = |error: &dyn std::fmt::Display| {
        KeyFileError(format!(
            "cannot read the {role} file {}: {error}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|error| unreadable(&error))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|error| unreadable(&error))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(unreadable(&format!("larger than {MAX_KEY_FILE} bytes")));
    }
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(at, line)| (at + 1, line.trim().to_string()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Err(KeyFileError(format!(
            "the {role} file {} holds no key",
            path.display()
        )));
    }
    Ok(lines)
}

/// Each key line of the file read by `parse` (given its line number and text). `parse` refuses a line with
/// what follows `the {role} file {path}` in the error, so that each message names the file the same way.
fn keys_in<K>(
    path: &Path,
    role: &str,
    parse: impl Fn(usize, &str) -> Result<K, String>,
) -> Result<Vec<K>, KeyFileError> {
    key_lines(path, role)?
        .into_iter()
        .map(|(number, line)| {
            parse(number, &line)
                .map_err(|why| KeyFileError(format!("the {role} file {}{why}", path.display())))
        })
        .collect()
}

impl Sealer {
    /// The recipients in `path` (`--sample-recipient`).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let recipients = keys_in(path, "sample recipient", |number, line| {
            if line.starts_with("AGE-SECRET-KEY-") {
                return Err(format!(
                    " holds a private key on line {number}: give its public recipient (`age-keygen -y`), \
                     and the private key only to --sample-identity"
                ));
            }
            recipient(line)
                .ok_or_else(|| format!(": line {number} is not an age recipient (age1...)"))
        })?;
        let sealer = Self {
            recipients,
            file: path.to_path_buf(),
        };
        // Recipients age will not seal to together (a post-quantum one with others) fail here, at start.
        sealer.seal(b"").map_err(|error| {
            KeyFileError(format!(
                "the sample recipient file {}: {error}",
                path.display()
            ))
        })?;
        Ok(sealer)
    }

    /// A sealer of freshly made recipients, for tests.
    pub fn new(recipients: Vec<Recipient>) -> Self {
        Self {
            recipients,
            file: PathBuf::new(),
        }
    }

    /// `plain` sealed to every recipient: an age file, base64 (one ciphertext, ~200 bytes of header per
    /// recipient whatever its length).
    pub fn seal(&self, plain: &[u8]) -> Result<String, SealFailure> {
        use std::io::Write as _;
        let encryptor = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|recipient| recipient.as_ref() as &dyn age::Recipient),
        )
        .map_err(|error| SealFailure(error.to_string()))?;
        let mut sealed = Vec::with_capacity(plain.len() + 256);
        let mut writer = encryptor
            .wrap_output(&mut sealed)
            .map_err(|error| SealFailure(error.to_string()))?;
        writer
            .write_all(plain)
            .and_then(|()| writer.finish().map(|_| ()))
            .map_err(|error| SealFailure(error.to_string()))?;
        Ok(STANDARD.encode(sealed))
    }
}

impl Opener {
    /// The identities in `path` (`--sample-identity`).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let identities = keys_in(path, "sample identity", |number, line| {
            if line.starts_with("age1") {
                return Err(format!(
                    ": line {number} is a recipient (a public key); the identity is the AGE-SECRET-KEY-1... \
                     line age-keygen wrote"
                ));
            }
            // The line is a secret: the message never quotes it.
            identity(line).ok_or_else(|| {
                format!(": line {number} is not an age identity (AGE-SECRET-KEY-1...)")
            })
        })?;
        Ok(Self {
            identities,
            file: path.to_path_buf(),
        })
    }

    /// An opener of freshly made identities, for tests.
    pub fn new(identities: Vec<Identity>) -> Self {
        Self {
            identities,
            file: PathBuf::new(),
        }
    }

    /// The file the identities came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// What [`Sealer::seal`] sealed. The plain text is never longer than the ciphertext, which bounds the
    /// memory a hostile value can take.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let bytes = STANDARD
            .decode(sealed.trim())
            .map_err(|error| OpenError::Damaged(format!("not base64: {error}")))?;
        let decryptor = age::Decryptor::new_buffered(&bytes[..])
            .map_err(|error| OpenError::Damaged(error.to_string()))?;
        let mut reader = decryptor
            .decrypt(
                self.identities
                    .iter()
                    .map(|identity| identity.as_ref() as &dyn age::Identity),
            )
            .map_err(|error| match error {
                age::DecryptError::NoMatchingKeys => OpenError::WrongIdentity(self.file.clone()),
                other => OpenError::Damaged(other.to_string()),
            })?;
        let mut plain = Vec::with_capacity(bytes.len());
        reader
            .read_to_end(&mut plain)
            .map_err(|error| OpenError::Damaged(error.to_string()))?;
        Ok(plain)
    }
}

#[cfg(test)]
// X25519 keys are what the issue and most deployments use, though the age crate now deprecates them.
#[allow(deprecated)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        let identity = age::x25519::Identity::generate();
        let recipient: Recipient = Box::new(identity.to_public());
        (
            Sealer::new(vec![recipient]),
            Opener::new(vec![Box::new(identity)]),
        )
    }

    #[test]
    fn what_is_sealed_opens_with_its_identity_only() {
        let (sealer, opener) = pair();
        let sealed = sealer.seal(b"card 4111 1111 1111 1111").unwrap();
        assert!(!sealed.contains("4111"));
        assert_eq!(opener.open(&sealed).unwrap(), b"card 4111 1111 1111 1111");
        let (_, stranger) = pair();
        assert!(matches!(
            stranger.open(&sealed),
            Err(OpenError::WrongIdentity(_))
        ));
        assert!(matches!(
            opener.open("not base64!"),
            Err(OpenError::Damaged(_))
        ));
        assert!(matches!(
            opener.open(&STANDARD.encode(b"age-encryption.org/v1\nnonsense")),
            Err(OpenError::Damaged(_))
        ));
        let quantum = age::pq::Identity::generate();
        let sealed = Sealer::new(vec![Box::new(quantum.to_public())])
            .seal(b"later")
            .unwrap();
        assert_eq!(
            Opener::new(vec![Box::new(quantum)]).open(&sealed).unwrap(),
            b"later"
        );
        let sealed = sealer.seal(b"card 4111 1111 1111 1111").unwrap();
        let mut altered = STANDARD.decode(&sealed).unwrap();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(
            opener.open(&STANDARD.encode(altered)),
            Err(OpenError::Damaged(_))
        ));
    }

    #[test]
    fn key_files_are_checked_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let secret = {
            use age::secrecy::ExposeSecret as _;
            identity.to_string().expose_secret().to_string()
        };
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let recipient = write(
            "recipient",
            &format!("# made by age-keygen\n{}\n", identity.to_public()),
        );
        let identity_file = write("identity", &format!("# created\n{secret}\n"));
        let settings = SealingSettings {
            recipient_file: Some(recipient.clone()),
            identity_file: Some(identity_file.clone()),
        };
        let keys = settings.load().unwrap();
        assert!(keys.sealer.is_some() && keys.opener.is_some());

        let error = Sealer::from_file(&identity_file).unwrap_err().to_string();
        assert!(
            error.contains("private key") && !error.contains(&secret),
            "{error}"
        );
        let error = Opener::from_file(&recipient).unwrap_err().to_string();
        assert!(error.contains("is a recipient"), "{error}");
        let broken = write("broken", &format!("{}x\n", &secret[..secret.len() - 1]));
        let error = Opener::from_file(&broken).unwrap_err().to_string();
        assert!(
            error.contains("line 1 is not") && !error.contains(&secret[20..]),
            "{error}"
        );
        let empty = write("empty", "# nothing\n\n");
        assert!(
            Sealer::from_file(&empty)
                .unwrap_err()
                .to_string()
                .contains("holds no key")
        );
        let missing = dir.path().join("missing");
        assert!(
            Opener::from_file(&missing)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );

        let other = age::x25519::Identity::generate();
        let other_recipient = write("other", &format!("{}\n", other.to_public()));
        let mismatched = SealingSettings {
            recipient_file: Some(other_recipient),
            identity_file: Some(identity_file),
        };
        let error = mismatched.load().err().unwrap().to_string();
        assert!(error.contains("does not open"), "{error}");
        assert!(!error.contains('\n'));
    }
}
