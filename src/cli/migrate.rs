//! `shadowdiff migrate`: applies the store's migrations and exits.

use std::process::ExitCode;

use crate::cli::Outcome;
use crate::store::{Store, StoreSettings};

pub async fn run(settings: StoreSettings) -> Outcome {
    let store = Store::open(&settings).await?;
    println!("store migrated ({})", store.backend().as_str());
    Ok(ExitCode::SUCCESS)
}
