//! `shadowdiff gate`: judges a stored run and exits 0 (within bounds), 1 (over them) or 2 (no verdict).

use std::process::ExitCode;
use std::sync::Arc;

use crate::analysis::rules::RuleSet;
use crate::cli::args::GateArgs;
use crate::cli::{CommandError, Outcome};
use crate::gate::{self, render};
use crate::report::Reports;
use crate::store::Store;

/// Exit code of a gate that failed.
pub const EXIT_FAILED: u8 = 1;

pub async fn run(args: GateArgs) -> Outcome {
    let file_rules = RuleSet::load_optional(args.judging.rules.as_deref())
        .map_err(|error| CommandError::new(format!("rules file {error}")))?;
    let store = Store::open(&args.judging.database.settings()).await?;
    let reports = Reports::new(
        store,
        Arc::new(file_rules),
        args.judging.verdicts.settings(),
    );
    let report = gate::evaluate(&reports, &args.judging.run, &args.judging.gate.settings()).await?;
    print!("{}", render::render(&report, args.judging.gate.format));
    Ok(exit_code(&report))
}

/// 0 when the report passed, 1 when it failed.
pub fn exit_code(report: &gate::GateReport) -> ExitCode {
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
