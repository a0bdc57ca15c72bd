//! The `samgate` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

// mimalloc: the request path allocates many small buffers (JSON, TLS
// records); the profile showed ~10% of CPU in the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = samgate::cli::Cli::parse();
    let default_level = match cli.command {
        samgate::cli::Command::Demo { .. } => "warn",
        _ => "info",
    };
    samgate::telemetry::init_with_default(cli.log_json, default_level);
    samgate::cli::run(cli)
}
