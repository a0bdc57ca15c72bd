//! The witness configuration file (`witness.toml`), paths relative to the file.
//!
//! ```toml
//! name = "fk-witness"                 # the key name of its cosignatures
//! listen = "127.0.0.1:9201"
//! signing_key = "witness.pem"         # Ed25519 PKCS#8
//! database = "witness.db"             # SQLite, created if missing
//!
//! [tls]
//! certificate = "tls/server.pem"
//! private_key = "tls/server.key"
//! client_ca = "../../pki/ca.pem"      # the gateway's client certificate chains to it
//! client_certificate_sha256 = ["<hex SPKI SHA-256 of the gateway's client certificate>"]
//!
//! [[log]]
//! origin = "samgate/<deployment id>"
//! public_key = "../../keys/audit.pub.pem"   # SPKI PEM, or a signed-note vkey file
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitnessConfig {
    name: String,
    listen: SocketAddr,
    signing_key: PathBuf,
    database: PathBuf,
    tls: RawTls,
    #[serde(default)]
    log: Vec<RawLog>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: PathBuf,
    private_key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    client_certificate_sha256: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    origin: String,
    public_key: PathBuf,
}

/// A validated witness configuration (absolute paths).
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// The witness's key name.
    pub name: String,
    /// Where it listens (HTTPS with client certificates).
    pub listen: SocketAddr,
    /// Its Ed25519 signing key (PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// Its SQLite database file.
    pub database: PathBuf,
    /// Server certificate chain.
    pub certificate: PathBuf,
    /// Server private key.
    pub private_key: PathBuf,
    /// CA that client certificates chain to.
    pub client_ca: PathBuf,
    /// Pinned client SPKI SHA-256s; empty: any certificate chaining to `client_ca`.
    pub client_pins: Vec<[u8; 32]>,
    /// The logs it witnesses.
    pub logs: Vec<LogConfig>,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// One witnessed log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Its origin line (`samgate/<deployment id>`), also the key name of its signature.
    pub origin: String,
    /// Its Ed25519 public key.
    pub public_key: [u8; 32],
}

impl WitnessConfig {
    /// Reads and validates a witness configuration; every problem names its key.
    /// Long: one flat pass over the witness configuration that collects every
    /// issue with its key; splitting would scatter them.
    pub fn load(path: &Path) -> Result<WitnessConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let raw: RawWitnessConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut issues = Vec::new();
        if !crate::audit::cosign::is_valid_name(&raw.name) {
            issues.push("name: must be non-empty without spaces or '+'".to_owned());
        }
        let file = |key: &str, p: &Path, issues: &mut Vec<String>| {
            let full = abs(p);
            if !full.is_file() {
                issues.push(format!("{key}: file {} does not exist", full.display()));
            }
            full
        };
        let signing_key = file("signing_key", &raw.signing_key, &mut issues);
        let certificate = file("tls.certificate", &raw.tls.certificate, &mut issues);
        let private_key = file("tls.private_key", &raw.tls.private_key, &mut issues);
        let client_ca = file("tls.client_ca", &raw.tls.client_ca, &mut issues);
        let mut client_pins = Vec::new();
        for (i, pin) in raw.tls.client_certificate_sha256.iter().enumerate() {
            match hex::decode(pin.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            {
                Some(p) => client_pins.push(p),
                None => issues.push(format!(
                    "tls.client_certificate_sha256[{i}]: must be 64 hex characters"
                )),
            }
        }
        let mut logs: Vec<LogConfig> = Vec::new();
        if raw.log.is_empty() {
            issues.push("log: at least one [[log]] (origin and public_key) is needed".into());
        }
        for (i, l) in raw.log.iter().enumerate() {
            if !crate::audit::cosign::is_valid_name(&l.origin) {
                issues.push(format!("log[{i}].origin: not a valid origin"));
            }
            if logs.iter().any(|o| o.origin == l.origin) {
                issues.push(format!(
                    "log[{i}].origin: `{}` is configured twice",
                    l.origin
                ));
            }
            match load_log_key(&abs(&l.public_key), &l.origin) {
                Ok(public_key) => logs.push(LogConfig {
                    origin: l.origin.clone(),
                    public_key,
                }),
                Err(e) => issues.push(format!("log[{i}].public_key: {e}")),
            }
        }
        if !issues.is_empty() {
            return Err(format!(
                "{} is invalid:\n  {}",
                path.display(),
                issues.join("\n  ")
            ));
        }
        Ok(WitnessConfig {
            name: raw.name,
            listen: raw.listen,
            signing_key,
            database: abs(&raw.database),
            certificate,
            private_key,
            client_ca,
            client_pins,
            logs,
            max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
        })
    }
}

/// A log key: an SPKI PEM Ed25519 key, or a signed-note vkey (`origin+hash+base64(0x01||key)`).
fn load_log_key(path: &Path, origin: &str) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.trim_start().starts_with("-----BEGIN") {
        let key = crate::keys::load_public_key_pem(path).map_err(|e| e.to_string())?;
        if key.alg != crate::keys::KeyAlg::Ed25519 {
            return Err("the log key must be Ed25519".into());
        }
        return key
            .raw
            .as_slice()
            .try_into()
            .map_err(|_| "not a 32-byte Ed25519 key".to_owned());
    }
    let (name, key) =
        crate::audit::checkpoint::parse_verifier_key(text.trim()).map_err(|e| e.to_string())?;
    if name != origin {
        return Err(format!("the vkey is named `{name}`, not `{origin}`"));
    }
    Ok(key)
}
