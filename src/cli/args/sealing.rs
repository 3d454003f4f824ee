//! The flags of sealed samples: the key files, read at start (never the keys themselves on the command line).

use std::path::PathBuf;

use clap::Args;

use crate::seal::SealingSettings;

/// Where `serve` and `replay` find the keys samples and recordings are sealed to and opened with.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Sealing")]
pub struct SealingArgs {
    /// A file of age recipients (`age1...` public keys, one a line, as `age-keygen -y` prints them): every
    /// sample's bodies, header values, differing values and request target, and every line `serve --record` writes, are
    /// encrypted to them before they are written; counts, paths, kinds and statuses stay plain. This process
    /// cannot read back what it stored without `--sample-identity`.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_SAMPLE_RECIPIENT")]
    pub sample_recipient: Option<PathBuf>,

    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Where a process that shows samples finds the private key.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Sealing")]
pub struct IdentityArgs {
    /// A file of age identities (the private key, `AGE-SECRET-KEY-1...`, as `age-keygen` writes it; a mounted
    /// secret): encrypted samples are decrypted when shown (dashboard, API, `report`), and an encrypted
    /// recording when replayed. Without it, pages say the samples are encrypted.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_SAMPLE_IDENTITY")]
    pub sample_identity: Option<PathBuf>,
}

impl SealingArgs {
    pub fn settings(self) -> SealingSettings {
        SealingSettings {
            recipient_file: self.sample_recipient,
            identity_file: self.identity.sample_identity,
        }
    }
}

impl IdentityArgs {
    pub fn settings(self) -> SealingSettings {
        SealingSettings {
            recipient_file: None,
            identity_file: self.sample_identity,
        }
    }
}
