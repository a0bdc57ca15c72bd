//! `samgate audit verify` (to be written).
use std::path::PathBuf;
use std::process::ExitCode;

/// Verifies the audit log.
pub async fn verify(
    _config: Option<PathBuf>,
    _export: Option<PathBuf>,
    _public_key: Option<PathBuf>,
) -> ExitCode {
    eprintln!("samgate audit verify: not yet implemented");
    ExitCode::from(2)
}
