//! `samgate audit verify` (DESIGN §8.2, §9 "Export and verify"): verifies a
//! deployment's database (`--config`) or an NDJSON export (`--export` with
//! `--public-key`) offline. Exit 0 and `verified <n> records, root <hex>`;
//! exit 1 and `seq <n>: <reason>` on stderr; exit 2 for usage, configuration
//! and I/O problems. The database is only read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::cosign::WitnessKey;
use super::verify::{self, KeptCheckpoint, Summary, VerifyError};
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

/// Every option of `samgate audit verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--export FILE`.
    pub export: Option<PathBuf>,
    /// `--public-key FILE`.
    pub public_key: Option<PathBuf>,
    /// `--checkpoint FILE`.
    pub checkpoint: Option<PathBuf>,
    /// `--witness-key FILE`, repeatable.
    pub witness_keys: Vec<PathBuf>,
    /// `--quorum K`.
    pub quorum: Option<usize>,
    /// `--disclosure FILE`.
    pub disclosure: Option<PathBuf>,
}

/// `samgate audit verify` with every option (DESIGN §8.2, §12).
pub async fn verify_with(opts: VerifyOptions) -> ExitCode {
    if let Some(file) = opts.disclosure.clone() {
        return match verify_disclosure(&opts, &file).await {
            Ok(s) => {
                let by = if s.cosigned_by.is_empty() {
                    String::new()
                } else {
                    format!(", cosigned by {}", s.cosigned_by.join(", "))
                };
                let sizes: Vec<String> = s.tree_sizes.iter().map(u64::to_string).collect();
                println!(
                    "verified {} disclosures against the checkpoint of tree size {}{by}",
                    s.items,
                    sizes.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => report(Err(e)),
        };
    }
    let kept = match kept_checkpoint(&opts) {
        Ok(k) => k,
        Err(e) => return report(Err(e)),
    };
    let result = match (&opts.config, &opts.export, &opts.public_key) {
        (Some(config), None, _) => verify_config_kept(config, kept.as_ref()).await,
        (None, Some(export), Some(key)) => {
            read_spki(key).and_then(|k| verify::verify_export_kept(export, k, kept.as_ref()))
        }
        _ => Err(VerifyError::Input(
            "give --config FILE, or --export FILE.ndjson with --public-key FILE".into(),
        )),
    };
    let ok = result.is_ok();
    let code = report(result);
    if let (true, Some(k)) = (ok, &kept) {
        let size = k.note.split('\n').nth(1).unwrap_or("?");
        println!(
            "the log contains the kept checkpoint of tree size {size} ({} cosignature(s) required)",
            k.quorum
        );
    }
    code
}

/// Witness keys and quorum from the options (or, with `--config`, its `[[witness]]`).
fn witnesses(opts: &VerifyOptions) -> Result<(Vec<WitnessKey>, usize), VerifyError> {
    let mut keys = Vec::new();
    for path in &opts.witness_keys {
        keys.push(
            WitnessKey::load(path, None)
                .map_err(|e| VerifyError::Input(format!("--witness-key: {e}")))?,
        );
    }
    let mut default_quorum = if keys.is_empty() {
        0
    } else {
        keys.len() / 2 + 1
    };
    if keys.is_empty() {
        if let Some(config) = &opts.config {
            let config = Config::load(config).map_err(|e| VerifyError::Input(e.to_string()))?;
            for w in &config.witnesses {
                keys.push(
                    WitnessKey::load(&w.public_key, Some(&w.name)).map_err(VerifyError::Input)?,
                );
            }
            default_quorum = config.audit.witness_quorum;
        }
    }
    let quorum = opts.quorum.unwrap_or(default_quorum);
    if quorum > keys.len() {
        return Err(VerifyError::Input(format!(
            "--quorum {quorum} but only {} witness key(s) given",
            keys.len()
        )));
    }
    Ok((keys, quorum))
}

/// Reads `--checkpoint`: a signed note, or a JSON tree head (`checkpoint` or
/// `tree_head.checkpoint`).
fn kept_checkpoint(opts: &VerifyOptions) -> Result<Option<KeptCheckpoint>, VerifyError> {
    let Some(path) = &opts.checkpoint else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| VerifyError::Input(format!("--checkpoint {}: {e}", path.display())))?;
    let note = if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| VerifyError::Input(format!("--checkpoint: {e}")))?;
        v.get("checkpoint")
            .or_else(|| v.get("tree_head").and_then(|h| h.get("checkpoint")))
            .and_then(|c| c.as_str())
            .map(str::to_owned)
            .ok_or_else(|| VerifyError::Input("--checkpoint: no `checkpoint` in the JSON".into()))?
    } else {
        text
    };
    let (witnesses, quorum) = witnesses(opts)?;
    Ok(Some(KeptCheckpoint {
        note,
        witnesses,
        quorum,
    }))
}

async fn verify_disclosure(
    opts: &VerifyOptions,
    file: &Path,
) -> Result<super::disclosure_proofs::DisclosureSummary, VerifyError> {
    let key = match (&opts.public_key, &opts.config) {
        (Some(k), _) => read_spki(k)?,
        (None, Some(c)) => {
            let config = Config::load(c).map_err(|e| VerifyError::Input(e.to_string()))?;
            audit_public_key(&config.keys.audit_signing)?
        }
        (None, None) => {
            return Err(VerifyError::Input(
                "--disclosure needs --public-key FILE (the audit key) or --config FILE".into(),
            ))
        }
    };
    let (witnesses, quorum) = witnesses(opts)?;
    super::disclosure_proofs::verify_file(file, &key, &witnesses, quorum)
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
    verify_config_kept(path, None).await
}

/// [`verify_config`] with a kept checkpoint that the log must contain.
pub async fn verify_config_kept(
    path: &Path,
    kept: Option<&KeptCheckpoint>,
) -> Result<Summary, VerifyError> {
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
    let result = verify::verify_store_kept(&store, &origin, public_key, kept).await;
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
