//! The `samgate` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = samgate::cli::Cli::parse();
    samgate::telemetry::init(cli.log_json);
    samgate::cli::run(cli)
}
