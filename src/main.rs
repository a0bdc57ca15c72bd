//! The `samgate` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = samgate::cli::Cli::parse();
    let default_level = match cli.command {
        samgate::cli::Command::Demo { .. } => "warn",
        _ => "info",
    };
    samgate::telemetry::init_with_default(cli.log_json, default_level);
    samgate::cli::run(cli)
}
