//! `samgate audit verify` (DESIGN §8.2, §9 "Export and verify"): verifies a
//! deployment's database (`--config`) or an NDJSON export (`--export` with
//! `--public-key`) offline. Exit 0 and `verified <n> records, root <hex>`;
//! exit 1 and `seq <n>: <reason>` on stderr; exit 2 for usage, configuration
//! and I/O problems. The database is only read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::verify::{self, Summary, VerifyError};
use crate::config::Config;
use crate::keys::{self, KeyAlg};
use crate::store::Store;

/// Verifies the audit log; see the module doc.
pub async fn verify(
    config: Option<PathBuf>,
    export: Option<PathBuf>,
    public_key: Option<PathBuf>,
) -> ExitCode {
    let result = match (config, export, public_key) {
        (Some(config), None, _) => verify_config(&config).await,
        (None, Some(export), Some(key)) => verify_export_file(&export, &key),
        _ => Err(VerifyError::Input(
            "give --config FILE, or --export FILE.ndjson with --public-key FILE".into(),
        )),
    };
    report(result)
}

/// Prints the outcome and maps it to the exit code.
pub fn report(result: Result<Summary, VerifyError>) -> ExitCode {
    match result {
        Ok(s) => {
            println!(
                "verified {} records, root {}",
                s.records,
                hex::encode(s.root)
            );
            if s.signed_size < s.records {
                eprintln!(
                    "note: seq {}..{} are not yet covered by a signed tree head",
                    s.signed_size + 1,
                    s.records
                );
            }
            ExitCode::SUCCESS
        }
        Err(VerifyError::Failed(f)) => {
            eprintln!("{f}");
            ExitCode::from(1)
        }
        Err(VerifyError::Input(e)) => {
            eprintln!("samgate audit verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--config FILE`: the configured database, the audit key from
/// `keys.audit_signing` (its `.pub.pem` sibling when present, else derived
/// from the private key), origin `samgate/<deployment_id>`.
pub async fn verify_config(path: &Path) -> Result<Summary, VerifyError> {
    let config = Config::load(path).map_err(|e| VerifyError::Input(e.to_string()))?;
    let public_key = audit_public_key(&config.keys.audit_signing)?;
    let store = Store::connect_read_only(&config.storage)
        .await
        .map_err(|e| VerifyError::Input(e.to_string()))?;
    let origin = format!(
        "{}{}",
        super::checkpoint::ORIGIN_PREFIX,
        config.server.deployment_id
    );
    let result = verify::verify_store(&store, &origin, public_key).await;
    store.close().await;
    result
}

/// `--export FILE --public-key FILE`.
pub fn verify_export_file(export: &Path, public_key: &Path) -> Result<Summary, VerifyError> {
    let key = read_spki(public_key)?;
    verify::verify_export(export, key)
}

fn read_spki(path: &Path) -> Result<[u8; 32], VerifyError> {
    let key = keys::load_public_key_pem(path)
        .map_err(|e| VerifyError::Input(format!("--public-key: {e}")))?;
    if key.alg != KeyAlg::Ed25519 {
        return Err(VerifyError::Input(
            "--public-key: the audit key must be Ed25519".into(),
        ));
    }
    <[u8; 32]>::try_from(key.raw.as_slice())
        .map_err(|_| VerifyError::Input("--public-key: not a 32-byte Ed25519 key".into()))
}

/// The audit public key next to the private key file.
fn audit_public_key(private: &Path) -> Result<[u8; 32], VerifyError> {
    let sibling = private
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pem"))
        .map(|stem| private.with_file_name(format!("{stem}.pub.pem")));
    if let Some(pub_path) = sibling.filter(|p| p.exists()) {
        return read_spki(&pub_path);
    }
    keys::load_ed25519_private(private)
        .map(|k| k.public_key())
        .map_err(|e| VerifyError::Input(format!("keys.audit_signing: {e}")))
}
