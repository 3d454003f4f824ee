//! `shadowdiff migrate`: applies the store's migrations and exits.

use std::process::ExitCode;

use crate::cli::EXIT_USAGE;
use crate::config::MigrateArgs;
use crate::store::Store;

pub async fn run(args: MigrateArgs) -> ExitCode {
    let url = &args.database.database_url;
    let migrated = async {
        let store = Store::connect(url, args.database.store_connections).await?;
        store.migrate().await?;
        Ok::<_, crate::store::StoreError>(store.backend())
    };
    match migrated.await {
        Ok(backend) => {
            println!("store migrated ({})", backend.as_str());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
