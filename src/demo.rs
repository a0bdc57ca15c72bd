//! `samgate demo` (to be written).
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the demo.
pub async fn run(_keep: Option<PathBuf>) -> ExitCode {
    println!("samgate demo: not yet implemented");
    ExitCode::SUCCESS
}
