//! Witness cosignatures of checkpoints: C2SP `tlog-cosignature` v1, Ed25519 (DESIGN §12).
//!
//! A cosignature is one more signed-note signature line on a checkpoint:
//!
//! ```text
//! — <witness name> base64(key id (4) || timestamp (8, big-endian) || Ed25519 signature (64))
//! ```
//!
//! The key id is the first 4 bytes of `SHA-256(name || 0x0A || 0x04 || public key)` (0x04 is
//! the signature type of timestamped Ed25519 cosignatures), and the signed message is
//! `"cosignature/v1\ntime <timestamp>\n"` followed by the checkpoint's note text (its body,
//! including the last newline, without signature lines). A verifier is configured with
//! (name, key) pairs and ignores every line that does not match a name and key id it knows.
//!
//! Witness keys travel as signed-note verifier keys (`vkeys`):
//! `<name>+<8 hex digits of key id>+<base64(0x04 || public key)>`.

use std::collections::BTreeSet;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};

use super::checkpoint::{typed_key_hash, typed_vkey, Checkpoint, CheckpointError};

/// The signed-note signature type of a timestamped Ed25519 cosignature (cosignature/v1).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Start of a signature line: U+2014 EM DASH and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Bytes of a decoded cosignature: key id, timestamp, signature.
const COSIGNATURE_LEN: usize = 4 + 8 + 64;

/// Why a cosignature, a witness key or a cosigned checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignError {
    /// A key name is empty or contains a space, control character or `+`.
    #[error("invalid witness name")]
    InvalidName,
    /// A vkey is not `<name>+<hex key id>+<base64(0x04 || key)>`.
    #[error("malformed witness key: {0}")]
    BadKey(&'static str),
    /// A signature line breaks the signed-note syntax.
    #[error("malformed cosignature line: {0}")]
    Malformed(&'static str),
    /// The line is not by this witness (another name or key id).
    #[error("the line is not a cosignature of this witness")]
    OtherKey,
    /// The cosignature does not verify over the checkpoint.
    #[error("the cosignature of {0} does not verify")]
    BadSignature(String),
    /// The timestamp is not below 2^63.
    #[error("the cosignature's timestamp is out of range")]
    BadTimestamp,
    /// The checkpoint itself (the log's signature or body) was refused.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// Fewer valid cosignatures than required.
    #[error("{valid} valid cosignature(s) by the given witnesses, {required} required")]
    Quorum {
        /// Valid cosignatures by distinct known witnesses.
        valid: usize,
        /// The quorum asked for.
        required: usize,
    },
}

/// A witness's public identity: its name and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    /// The key name written in its cosignature lines.
    pub name: String,
    /// The raw Ed25519 public key.
    pub public_key: [u8; 32],
}

impl WitnessKey {
    /// A key from a name and a raw public key (the name is checked).
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, CosignError> {
        if !is_valid_name(name) {
            return Err(CosignError::InvalidName);
        }
        Ok(Self {
            name: name.to_owned(),
            public_key,
        })
    }

    /// The cosignature key id: `SHA-256(name || 0x0A || 0x04 || key)[:4]`.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.public_key)
    }

    /// The vkey string `<name>+<hex key id>+<base64(0x04 || key)>`.
    pub fn to_vkey(&self) -> String {
        typed_vkey(&self.name, ALG_COSIGNATURE_V1, &self.public_key)
    }

    /// Parses a vkey string (surrounding whitespace is ignored), checking the key id.
    pub fn parse_vkey(vkey: &str) -> Result<Self, CosignError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CosignError::BadKey("expected name+keyid+key"));
        };
        if !is_valid_name(name) {
            return Err(CosignError::InvalidName);
        }
        let id: [u8; 4] = hex::decode(id_hex)
            .ok()
            .filter(|_| id_hex.len() == 8)
            .and_then(|b| b.try_into().ok())
            .ok_or(CosignError::BadKey("the key id is not 8 hex digits"))?;
        let typed = STANDARD
            .decode(key_b64)
            .map_err(|_| CosignError::BadKey("the key is not base64"))?;
        let Some((&ALG_COSIGNATURE_V1, key)) = typed.split_first() else {
            return Err(CosignError::BadKey("not a cosignature/v1 key (type 0x04)"));
        };
        let public_key: [u8; 32] = key
            .try_into()
            .map_err(|_| CosignError::BadKey("the Ed25519 key is not 32 bytes"))?;
        let k = Self::new(name, public_key)?;
        if k.key_id() != id {
            return Err(CosignError::BadKey("the key id does not match the key"));
        }
        Ok(k)
    }

    /// Reads a witness key file: a vkey line, or an SPKI PEM Ed25519 key together with
    /// `name` (the `[[witness]] name` of the configuration).
    pub fn load(path: &Path, name: Option<&str>) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.trim_start().starts_with("-----BEGIN") {
            let key = crate::keys::load_public_key_pem(path).map_err(|e| e.to_string())?;
            if key.alg != crate::keys::KeyAlg::Ed25519 {
                return Err(format!("{}: not an Ed25519 key", path.display()));
            }
            let raw: [u8; 32] = key
                .raw
                .as_slice()
                .try_into()
                .map_err(|_| format!("{}: not a 32-byte Ed25519 key", path.display()))?;
            let name = name.ok_or_else(|| {
                format!(
                    "{}: a PEM key has no witness name; give a vkey file",
                    path.display()
                )
            })?;
            return Self::new(name, raw).map_err(|e| e.to_string());
        }
        let key = Self::parse_vkey(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(name) = name {
            if key.name != name {
                return Err(format!(
                    "{}: the key is named `{}`, not `{name}`",
                    path.display(),
                    key.name
                ));
            }
        }
        Ok(key)
    }
}

/// The cosignature/v1 key id of an Ed25519 key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    typed_key_hash(name, ALG_COSIGNATURE_V1, public_key)
}

/// The message a cosigner signs: `cosignature/v1\ntime <timestamp>\n` and the note text.
pub fn signed_message(note_text: &str, timestamp: u64) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    msg.extend_from_slice(note_text.as_bytes());
    msg
}

/// A cosignature line (ending in `\n`) of `note_text` at `timestamp` by `name`, whose
/// Ed25519 key `public_key` signs with `sign`.
pub fn cosign(
    note_text: &str,
    name: &str,
    public_key: &[u8; 32],
    timestamp: u64,
    sign: impl Fn(&[u8]) -> [u8; 64],
) -> Result<String, CosignError> {
    if !is_valid_name(name) {
        return Err(CosignError::InvalidName);
    }
    if timestamp >= 1 << 63 {
        return Err(CosignError::BadTimestamp);
    }
    let sig = sign(&signed_message(note_text, timestamp));
    let mut bytes = Vec::with_capacity(COSIGNATURE_LEN);
    bytes.extend_from_slice(&key_id(name, public_key));
    bytes.extend_from_slice(&timestamp.to_be_bytes());
    bytes.extend_from_slice(&sig);
    Ok(format!(
        "{SIGNATURE_PREFIX}{name} {}\n",
        STANDARD.encode(bytes)
    ))
}

/// One signature line of a note, split into name and decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    /// The key name.
    pub name: String,
    /// The decoded signature (key id first).
    pub bytes: Vec<u8>,
    /// The line as written, without its newline.
    pub line: String,
}

/// Parses one signature line (`— <name> <base64>`, without its newline).
pub fn parse_signature_line(line: &str) -> Result<SignatureLine, CosignError> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(CosignError::Malformed(
            "a signature line starts with an em dash",
        ))?;
    let (name, b64) = rest.split_once(' ').ok_or(CosignError::Malformed(
        "a signature line has a name and a signature",
    ))?;
    if !is_valid_name(name) {
        return Err(CosignError::Malformed("invalid key name"));
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| CosignError::Malformed("the signature is not base64"))?;
    if bytes.len() < 5 {
        return Err(CosignError::Malformed("the signature is too short"));
    }
    Ok(SignatureLine {
        name: name.to_owned(),
        bytes,
        line: line.to_owned(),
    })
}

/// Splits a signed note into its text (ending in `\n`) and its signature lines.
pub fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine>), CosignError> {
    let split = note
        .rfind("\n\n")
        .ok_or(CosignError::Malformed("the note has no signature block"))?;
    let text = note
        .get(..=split)
        .ok_or(CosignError::Malformed("the note has no text"))?;
    let sigs = note
        .get(split + 2..)
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or(CosignError::Malformed(
            "the signature block must end with a newline",
        ))?;
    let lines = sigs
        .split('\n')
        .map(parse_signature_line)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((text, lines))
}

/// Verifies one line as a cosignature of `note_text` by `key`; returns its timestamp.
pub fn verify_line(
    note_text: &str,
    line: &SignatureLine,
    key: &WitnessKey,
) -> Result<u64, CosignError> {
    let Some((id, rest)) = line.bytes.split_first_chunk::<4>() else {
        return Err(CosignError::OtherKey);
    };
    if line.name != key.name || *id != key.key_id() {
        return Err(CosignError::OtherKey);
    }
    let Some((ts, sig)) = rest.split_first_chunk::<8>() else {
        return Err(CosignError::Malformed("a cosignature is 76 bytes"));
    };
    if sig.len() != 64 {
        return Err(CosignError::Malformed("a cosignature is 76 bytes"));
    }
    let timestamp = u64::from_be_bytes(*ts);
    if timestamp >= 1 << 63 {
        return Err(CosignError::BadTimestamp);
    }
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(&signed_message(note_text, timestamp), sig)
        .map_err(|_| CosignError::BadSignature(key.name.clone()))?;
    Ok(timestamp)
}

/// A valid cosignature found on a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The witness name.
    pub witness: String,
    /// The witness's timestamp (seconds since the epoch).
    pub timestamp: u64,
    /// The signature line (without newline).
    pub line: String,
}

/// The valid cosignatures by `witnesses` on `note` (one per witness, the first valid line).
/// A line that claims a known witness's name and key id but does not verify is an error:
/// someone tampered with the checkpoint.
///
/// One public key counts once, whatever names it is given under: an Ed25519 cosignature
/// does not commit to the witness name (C2SP tlog-cosignature), so a line of one witness
/// can be re-labelled under another name that carries the same key.
pub fn cosignatures(note: &str, witnesses: &[WitnessKey]) -> Result<Vec<Cosigned>, CosignError> {
    let (text, lines) = split_note(note)?;
    let mut out: Vec<Cosigned> = Vec::new();
    let mut keys_seen: Vec<[u8; 32]> = Vec::new();
    for line in &lines {
        for key in witnesses {
            match verify_line(text, line, key) {
                Ok(timestamp) => {
                    if !out.iter().any(|c| c.witness == key.name)
                        && !keys_seen.contains(&key.public_key)
                    {
                        keys_seen.push(key.public_key);
                        out.push(Cosigned {
                            witness: key.name.clone(),
                            timestamp,
                            line: line.line.clone(),
                        });
                    }
                }
                Err(CosignError::OtherKey) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Opens a checkpoint signed by the log (`origin`, `log_key`) and demands `quorum` valid
/// cosignatures by distinct `witnesses`. Returns the checkpoint and the cosignatures.
pub fn open_cosigned(
    note: &str,
    origin: &str,
    log_key: &[u8; 32],
    witnesses: &[WitnessKey],
    quorum: usize,
) -> Result<(Checkpoint, Vec<Cosigned>), CosignError> {
    let checkpoint = Checkpoint::open(note, origin, log_key)?;
    let found = cosignatures(note, witnesses)?;
    let distinct: BTreeSet<&str> = found.iter().map(|c| c.witness.as_str()).collect();
    if distinct.len() < quorum {
        return Err(CosignError::Quorum {
            valid: distinct.len(),
            required: quorum,
        });
    }
    Ok((checkpoint, found))
}

/// `note` with `lines` (signature lines, with or without newline) appended to its
/// signature block, skipping lines it already has.
pub fn append_lines<'a>(note: &str, lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = note.to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    for line in lines {
        let line = line.trim_end_matches('\n');
        if line.is_empty() || out.split('\n').any(|l| l == line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A valid signed-note key name: non-empty, no whitespace, no control characters, no `+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

#[cfg(test)]
mod tests;
