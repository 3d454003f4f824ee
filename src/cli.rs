//! The subcommands, each a thin wiring of the parts for one job, and the process's exit codes.

pub mod args;
pub mod demo;
pub mod driver;
pub mod gate;
pub mod migrate;
pub mod progress;
pub mod replay;
pub mod report;
pub mod serve;
pub mod summary;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::args::{Cli, Command};

/// Exit code for usage errors and failures to start (bad flags, a taken port).
pub const EXIT_USAGE: u8 = 2;

/// Why a subcommand stopped without doing its job: printed as one `error:` line, exit code [`EXIT_USAGE`].
#[derive(Debug)]
pub struct CommandError(String);

impl CommandError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Not `std::error::Error` itself, so that every error converts into it with `?`.
impl<E: std::error::Error> From<E> for CommandError {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

/// What a subcommand ends with: its exit code, or why it could not run.
pub type Outcome = Result<ExitCode, CommandError>;

/// Parses the command line, sets up logging and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    crate::telemetry::init(&cli.telemetry.settings());
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
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args.settings()).await,
            Command::Replay(args) => {
                let (replay, settings) = args.settings();
                replay::run(replay, settings).await
            }
            Command::Gate(args) => gate::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::DemoService(args) => demo::run_service(args).await,
            Command::DemoTraffic(args) => demo::run_traffic(args).await,
            Command::Migrate(args) => migrate::run(args.database.settings()).await,
        }
    });
    exit_code(outcome)
}

/// The one place an outcome becomes the process's exit code.
pub fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_USAGE)
        }
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
