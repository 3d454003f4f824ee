//! `shadowdiff gate`: judges a stored run and exits 0 (within bounds), 1 (over them) or 2 (no verdict).

use std::process::ExitCode;

use crate::analysis::rules::RuleSet;
use crate::cli::EXIT_USAGE;
use crate::config::GateArgs;
use crate::gate::{self, render};
use crate::store::Store;

/// Exit code of a gate that failed.
pub const EXIT_FAILED: u8 = 1;

pub async fn run(args: GateArgs) -> ExitCode {
    let file_rules = match &args.rules {
        Some(path) => match RuleSet::load(path) {
            Ok(rules) => rules,
            Err(error) => return error_exit(&format!("rules file {error}")),
        },
        None => RuleSet::default(),
    };
    let store =
        match Store::connect(&args.database.database_url, args.database.store_connections).await {
            Ok(store) => store,
            Err(error) => return error_exit(&error.to_string()),
        };
    if let Err(error) = store.migrate().await {
        return error_exit(&error.to_string());
    }
    let verdicts = args.verdicts.settings();
    match gate::evaluate(&store, &args.run, &args.gate, &verdicts, &file_rules).await {
        Ok(report) => {
            print!("{}", render::render(&report, args.gate.format));
            exit_code(&report)
        }
        Err(error) => error_exit(&error.to_string()),
    }
}

/// 0 when the report passed, 1 when it failed.
pub fn exit_code(report: &gate::GateReport) -> ExitCode {
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

fn error_exit(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}
