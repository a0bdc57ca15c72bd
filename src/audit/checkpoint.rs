//! Signed tree heads: a C2SP `tlog-checkpoint` body inside a C2SP `signed-note`, signed with
//! the gateway's Ed25519 audit key (DESIGN §6, §9 "Tree heads").
//!
//! A checkpoint note looks like this (the signature line starts with U+2014 EM DASH and a
//! space; the signature covers the three body lines including the last newline):
//!
//! ```text
//! samgate/<deployment id>
//! <tree size, decimal>
//! <root hash, standard base64>
//!
//! — samgate/<deployment id> <base64(4-byte key hash || 64-byte Ed25519 signature)>
//! ```
//!
//! The key name is the origin line. The key hash is the first 4 bytes of
//! `SHA-256(key name || 0x0A || 0x01 || public key)` (signed-note, Ed25519 = type 0x01).
//! Operators give note verifiers the key as a vkey string, see [`verifier_key_string`].
//!
//! Opening follows Go's `golang.org/x/mod/sumdb/note.Open`: the text ends at the last blank
//! line, every signature line must be well formed, lines of other keys are ignored, and the
//! first line with the expected name and key hash decides. The body is then parsed strictly:
//! our checkpoints carry no extension lines, so any are refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest;
use ring::signature::{UnparsedPublicKey, ED25519};

use super::merkle::Hash;

/// Prefix of every samgate origin: `samgate/<deployment id>`.
pub const ORIGIN_PREFIX: &str = "samgate/";
/// The signed-note signature type of Ed25519.
const ALG_ED25519: u8 = 0x01;
/// Start of a signature line: U+2014 EM DASH and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Go's `note.Open` refuses notes with more signature lines than this.
const MAX_SIGNATURES: usize = 100;

/// Why a checkpoint could not be signed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A key name is empty or contains a space, control character or `+`.
    #[error("invalid key name")]
    InvalidName,
    /// The checkpoint's origin differs from the signing or verifying key name.
    #[error("checkpoint origin does not match the key name")]
    OriginMismatch,
    /// The note has no signature block (no blank line followed by signature lines).
    #[error("the note is not signed")]
    Unsigned,
    /// The note breaks the signed-note syntax, e.g. it was truncated.
    #[error("malformed signed note: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The note has more signature lines than a verifier accepts.
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// No signature line carries the expected key name and key hash.
    #[error("no signature by the expected key")]
    NoSignatureForKey,
    /// The signature line of the expected key does not verify over the note text.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signed text is not a valid samgate checkpoint body.
    #[error("malformed checkpoint body: {reason}")]
    BadBody {
        /// What is wrong.
        reason: &'static str,
    },
    /// A verifier key string is not `<name>+<hex key hash>+<base64(0x01 || key)>`.
    #[error("malformed verifier key: {reason}")]
    BadVerifierKey {
        /// What is wrong.
        reason: &'static str,
    },
}

/// A key that signs notes: the audit key, under the key name that is the log's origin.
///
/// For the keys module's signer, implement it directly or wrap it in a [`FnSigner`].
pub trait NoteSigner {
    /// The key name written in the signature line; for checkpoints, the origin.
    fn name(&self) -> &str;
    /// The raw 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// An Ed25519 signature of `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

/// A [`NoteSigner`] from a name, a public key and a signing function.
pub struct FnSigner<F: Fn(&[u8]) -> [u8; 64]> {
    /// The key name.
    pub name: String,
    /// The raw Ed25519 public key matching `sign`.
    pub public_key: [u8; 32],
    /// Produces an Ed25519 signature.
    pub sign: F,
}

impl<F: Fn(&[u8]) -> [u8; 64]> NoteSigner for FnSigner<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        (self.sign)(msg)
    }
}

/// A tree head: the log's origin, its size and its RFC 9162 root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `samgate/<deployment id>`; also the signing key's name.
    pub origin: String,
    /// Number of leaves (audit records).
    pub tree_size: u64,
    /// Merkle Tree Hash of those leaves.
    pub root_hash: Hash,
}

impl Checkpoint {
    /// The checkpoint of deployment `deployment_id` (origin `samgate/<deployment_id>`).
    pub fn new(deployment_id: &str, tree_size: u64, root_hash: Hash) -> Self {
        Self {
            origin: format!("{ORIGIN_PREFIX}{deployment_id}"),
            tree_size,
            root_hash,
        }
    }

    /// The `tlog-checkpoint` body: origin, decimal size and base64 root, each ending in `\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            STANDARD.encode(self.root_hash)
        )
    }

    /// The signed note: body, blank line and the signer's signature line.
    ///
    /// The signer's name must be valid and equal to the origin, so that [`Checkpoint::open`]
    /// with the same name and key accepts the result.
    pub fn sign(&self, signer: &dyn NoteSigner) -> Result<String, CheckpointError> {
        if signer.name() != self.origin {
            return Err(CheckpointError::OriginMismatch);
        }
        sign_note(&self.body(), signer)
    }

    /// Verifies `note` against the key `key_name`/`public_key` and parses its body.
    ///
    /// The body's origin must equal `key_name`.
    pub fn open(
        note: &str,
        key_name: &str,
        public_key: &[u8; 32],
    ) -> Result<Self, CheckpointError> {
        let text = open_note(note, key_name, public_key)?;
        let checkpoint = Self::parse_body(text)?;
        if checkpoint.origin != key_name {
            return Err(CheckpointError::OriginMismatch);
        }
        Ok(checkpoint)
    }

    /// Parses exactly three lines: origin, size in decimal without leading zeros, and the
    /// standard base64 of a 32-byte root hash.
    fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let bad = |reason| CheckpointError::BadBody { reason };
        let text = text
            .strip_suffix('\n')
            .ok_or(bad("must end with a newline"))?;
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("must have exactly three lines"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("tree size is not a decimal number"));
        }
        if size.len() > 1 && size.starts_with('0') {
            return Err(bad("tree size has leading zeros"));
        }
        let tree_size = size.parse().map_err(|_| bad("tree size is too large"))?;
        let root_hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or(bad("root hash is not the base64 of 32 bytes"))?;
        Ok(Self {
            origin: origin.to_owned(),
            tree_size,
            root_hash,
        })
    }
}

/// The signed-note key hash of an Ed25519 key:
/// the first 4 bytes of `SHA-256(name || 0x0A || 0x01 || public key)`.
pub fn key_hash(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    typed_key_hash(name, ALG_ED25519, public_key)
}

/// The note verifier key string `<name>+<8 hex digits of key hash>+<base64(0x01 || key)>`,
/// as read by Go's `note.NewVerifier` and other signed-note verifiers.
pub fn verifier_key_string(name: &str, public_key: &[u8; 32]) -> String {
    typed_vkey(name, ALG_ED25519, public_key)
}

/// The key hash of a signed-note key of type `alg` (`0x01` note signer, `0x04`
/// cosignature/v1): the first 4 bytes of `SHA-256(name || 0x0A || alg || key)`.
pub(crate) fn typed_key_hash(name: &str, alg: u8, public_key: &[u8; 32]) -> [u8; 4] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[alg]);
    ctx.update(public_key);
    let mut out = [0u8; 4];
    if let Some((first, _)) = ctx.finish().as_ref().split_first_chunk::<4>() {
        out = *first;
    }
    out
}

/// The vkey string of a key of type `alg`:
/// `<name>+<8 hex digits of its key hash>+<base64(alg || key)>`.
pub(crate) fn typed_vkey(name: &str, alg: u8, public_key: &[u8; 32]) -> String {
    let mut typed = Vec::with_capacity(33);
    typed.push(alg);
    typed.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(typed_key_hash(name, alg, public_key)),
        STANDARD.encode(typed)
    )
}

/// Parses a [`verifier_key_string`] into the key name and Ed25519 public key, checking the
/// key hash.
pub fn parse_verifier_key(vkey: &str) -> Result<(String, [u8; 32]), CheckpointError> {
    let bad = |reason| CheckpointError::BadVerifierKey { reason };
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(hash_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected name+hash+key"));
    };
    if !is_valid_name(name) {
        return Err(CheckpointError::InvalidName);
    }
    let hash: [u8; 4] = hex::decode(hash_hex)
        .ok()
        .filter(|_| hash_hex.len() == 8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(bad("key hash is not 8 hex digits"))?;
    let typed = STANDARD
        .decode(key_b64)
        .map_err(|_| bad("key is not base64"))?;
    let Some((&ALG_ED25519, key)) = typed.split_first() else {
        return Err(bad("not an Ed25519 key"));
    };
    let public_key: [u8; 32] = key
        .try_into()
        .map_err(|_| bad("Ed25519 key is not 32 bytes"))?;
    if key_hash(name, &public_key) != hash {
        return Err(bad("key hash does not match the key"));
    }
    Ok((name.to_owned(), public_key))
}

/// A valid signed-note key name: non-empty, no whitespace, no control characters, no `+`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// Signs `text` (non-empty, ending in `\n`, no blank line) as a note with one signature.
fn sign_note(text: &str, signer: &dyn NoteSigner) -> Result<String, CheckpointError> {
    let name = signer.name();
    if !is_valid_name(name) {
        return Err(CheckpointError::InvalidName);
    }
    if !text.ends_with('\n') || text.contains("\n\n") || has_forbidden_control(text) {
        return Err(CheckpointError::Malformed {
            reason: "text must end with a newline and have no blank line or control character",
        });
    }
    let mut sig = Vec::with_capacity(68);
    sig.extend_from_slice(&key_hash(name, &signer.public_key()));
    sig.extend_from_slice(&signer.sign(text.as_bytes()));
    Ok(format!(
        "{text}\n{SIGNATURE_PREFIX}{name} {}\n",
        STANDARD.encode(sig)
    ))
}

/// Verifies `note` against one key and returns its signed text (including the last `\n`).
fn open_note<'a>(
    note: &'a str,
    key_name: &str,
    public_key: &[u8; 32],
) -> Result<&'a str, CheckpointError> {
    let malformed = |reason| CheckpointError::Malformed { reason };
    if !is_valid_name(key_name) {
        return Err(CheckpointError::InvalidName);
    }
    if has_forbidden_control(note) {
        return Err(malformed("control character"));
    }
    let split = note.rfind("\n\n").ok_or(CheckpointError::Unsigned)?;
    let (text, signatures) = (note.get(..=split), note.get(split + 2..));
    let (Some(text), Some(signatures)) = (text, signatures) else {
        return Err(CheckpointError::Unsigned);
    };
    if signatures.is_empty() {
        return Err(CheckpointError::Unsigned);
    }
    let Some(signatures) = signatures.strip_suffix('\n') else {
        return Err(malformed("signature block must end with a newline"));
    };

    let want_hash = key_hash(key_name, public_key);
    let mut candidate: Option<Vec<u8>> = None;
    for (count, line) in signatures.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures);
        }
        let line = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(malformed("signature line must start with an em dash"))?;
        let (name, b64) = line
            .split_once(' ')
            .ok_or(malformed("signature line needs a name and a signature"))?;
        let sig = STANDARD
            .decode(b64)
            .map_err(|_| malformed("signature is not base64"))?;
        if !is_valid_name(name) || sig.len() < 5 {
            return Err(malformed("invalid signature line"));
        }
        let Some((hash, sig)) = sig.split_first_chunk::<4>() else {
            return Err(malformed("invalid signature line"));
        };
        // Like Go's note.Open, the first line of the expected key decides.
        if candidate.is_none() && name == key_name && *hash == want_hash {
            candidate = Some(sig.to_vec());
        }
    }
    let sig = candidate.ok_or(CheckpointError::NoSignatureForKey)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(text.as_bytes(), &sig)
        .map_err(|_| CheckpointError::BadSignature)?;
    Ok(text)
}

/// Signed notes allow no ASCII control characters other than newline.
fn has_forbidden_control(text: &str) -> bool {
    text.chars().any(|c| c < '\u{20}' && c != '\n')
}

#[cfg(test)]
mod tests;
