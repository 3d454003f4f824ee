//! `shadowdiff report`: a stored run written as one self-contained HTML file, for a CI job to attach.

use std::process::ExitCode;
use std::sync::Arc;

use crate::analysis::rules::RuleSet;
use crate::cli::args::ReportArgs;
use crate::cli::{CommandError, Outcome};
use crate::gate;
use crate::report::Reports;
use crate::store::Store;
use crate::store::sealed::SampleReading;
use crate::web::report_file;

pub async fn run(args: ReportArgs) -> Outcome {
    let file_rules = RuleSet::load_optional(args.judging.rules.as_deref())
        .map_err(|error| CommandError::new(format!("rules file {error}")))?;
    let keys = args
        .identity
        .settings()
        .load()
        .map_err(|error| CommandError::new(error.to_string()))?;
    let store = Store::open(&args.judging.database.settings())
        .await?
        .with_reading(SampleReading {
            opener: keys.opener,
            tokens: None,
        });
    let reports = Reports::new(
        store,
        Arc::new(file_rules),
        args.judging.verdicts.settings(),
    );
    let judged = gate::evaluate(&reports, &args.judging.run, &args.judging.gate.settings()).await?;
    let html = report_file::render(&reports, &judged).await?;
    std::fs::write(&args.output, html).map_err(|error| {
        CommandError::new(format!("cannot write {}: {error}", args.output.display()))
    })?;
    eprintln!(
        "wrote {} (run {}: {})",
        args.output.display(),
        judged.run,
        if judged.passed { "passed" } else { "failed" }
    );
    Ok(ExitCode::SUCCESS)
}
