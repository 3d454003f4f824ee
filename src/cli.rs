//! The subcommands, each a thin wiring of the parts for one job, and the process's exit codes.

pub mod demo;
pub mod driver;
pub mod gate;
pub mod migrate;
pub mod progress;
pub mod replay;
pub mod serve;
pub mod summary;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::config::{Cli, Command};

/// Exit code for usage errors and failures to start (bad flags, a taken port).
pub const EXIT_USAGE: u8 = 2;

/// Parses the command line, sets up logging and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    crate::telemetry::init(&cli.telemetry);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Replay(args) => runtime.block_on(replay::run(args)),
        Command::Gate(args) => runtime.block_on(gate::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::DemoService(args) => runtime.block_on(demo::run_service(args)),
        Command::DemoTraffic(args) => runtime.block_on(demo::run_traffic(args)),
        Command::Migrate(args) => runtime.block_on(migrate::run(args)),
    }
}

/// Help and version go to stdout as usual; every other parse error is printed on one line, exit code 2.
fn usage_error(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let rendered = error.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("{line}");
    ExitCode::from(EXIT_USAGE)
}
