//! The `shadowdiff` command: parses the arguments and runs one subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    shadowdiff::cli::main()
}
