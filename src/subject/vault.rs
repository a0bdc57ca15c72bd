//! The vault's cryptography: AES-256-GCM sealing of personnummer (and other
//! small secrets such as raw consent tokens) under the vault key.
//!
//! # Contract (DESIGN §3)
//!
//! The vault maps `(domain, pseudonym) -> AES-256-GCM(personnummer)` so that
//! a reply naming a pseudonym can be routed back to a party allowed to see
//! the real identifier. This module is the pure crypto part; the `vault`
//! rows are written by [`VaultKey::rows`] only, and the re-identification
//! path ([`crate::subject::reidentify`], which always appends a
//! `reidentified` audit record) is the only reader.
//!
//! **[`VaultKey::open`] must only be called from the re-identification path,
//! which audits every call.** Nothing else may turn a pseudonym back into a
//! personnummer.
//!
//! # Decisions
//!
//! - Each seal uses a fresh random 96-bit nonce from `ring::rand::SystemRandom`.
//!   With random nonces AES-GCM stays safe up to about 2^32 seals per key,
//!   far above one row per subject and domain.
//! - The associated data of a personnummer is `domain || 0x00 || pseudonym`,
//!   binding the ciphertext to its row: moved to another row it fails to
//!   open. [`VaultKey::seal_bytes`] lets the caller choose the associated
//!   data for other uses.
//! - The plaintext of a personnummer is its canonical 12 ASCII digits.
//! - A row is named by a [`Row`]: the audit or consent form, or a party's
//!   pseudonym with that party's id, so the domain a row is filed under is
//!   the domain its pseudonym's type says.
//! - [`Sealed`] carries the key id; opening with another key fails with
//!   [`VaultError::WrongKey`] before any decryption, which lets a caller
//!   holding several keys during rotation pick the right one.
//! - The raw key bytes are zeroized once ring has built its key schedule;
//!   ring does not zeroize its own copy. `Debug` shows only the key id.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use time::Date;
use zeroize::Zeroizing;

use crate::keys::Secret32;
use crate::store::Stmt;
use crate::subject::personnummer::Personnummer;
use crate::subject::pseudonym::{Audit, Consent, Party, Pseudonym, DOMAIN_AUDIT, DOMAIN_CONSENT};

/// Errors of the vault crypto. Never contain plaintext or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The sealed value names a different key than this one.
    #[error("sealed with vault key {found}, but this is vault key {expected}")]
    WrongKey {
        /// This key's id.
        expected: String,
        /// The key id recorded with the sealed value.
        found: String,
    },
    /// Decryption failed: wrong key, wrong associated data (another row) or
    /// tampered ciphertext.
    #[error("vault entry failed authentication")]
    Authentication,
    /// The decrypted value is not a valid canonical personnummer.
    #[error("vault entry does not hold a valid personnummer")]
    Plaintext,
    /// The key could not be set up, the RNG failed or encryption failed.
    #[error("vault encryption failed")]
    Crypto,
}

/// A sealed value as stored: key id, nonce and ciphertext with its 16-byte tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the vault key that sealed it ([`Secret32::key_id`]).
    pub key_id: String,
    /// The random 96-bit nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
}

/// The vault key (`keys/vault.key`), AES-256-GCM.
pub struct VaultKey {
    key_id: String,
    key: LessSafeKey,
    rng: SystemRandom,
    /// Earlier vault keys (`[keys] vault` list after the first): they only
    /// open, never seal (rotation, issue #19).
    previous: Vec<(String, LessSafeKey)>,
}

impl VaultKey {
    /// Builds the AES-256-GCM key; the secret is dropped (zeroized) after.
    pub fn new(secret: Secret32) -> Result<VaultKey, VaultError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, secret.expose()).map_err(|_| VaultError::Crypto)?;
        Ok(VaultKey {
            key_id: secret.key_id().to_owned(),
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
            previous: Vec::new(),
        })
    }

    /// Adds earlier keys that still open what they sealed (rotation): the
    /// key built by [`VaultKey::new`] stays the only one that seals. A key
    /// whose id equals this one's or an earlier one's is skipped.
    pub fn with_previous(mut self, secrets: Vec<Secret32>) -> Result<VaultKey, VaultError> {
        for secret in secrets {
            let id = secret.key_id().to_owned();
            if id == self.key_id || self.previous.iter().any(|(k, _)| *k == id) {
                continue;
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, secret.expose()).map_err(|_| VaultError::Crypto)?;
            self.previous.push((id, LessSafeKey::new(unbound)));
        }
        Ok(self)
    }

    /// Ids of the earlier (open-only) keys, in configuration order.
    pub fn previous_key_ids(&self) -> Vec<&str> {
        self.previous.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The key id (first 8 hex characters of SHA-256 of the key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `p` for the vault row `row`.
    pub fn seal(&self, row: Row<'_>, p: &Personnummer) -> Result<Sealed, VaultError> {
        self.seal_bytes(&row_aad(row), p.expose().as_bytes())
    }

    /// Decrypts the personnummer of the vault row `row`, checked as a
    /// number on `today` (the gateway clock's date).
    /// Only the audited re-identification path may call this (module docs).
    pub fn open(
        &self,
        row: Row<'_>,
        sealed: &Sealed,
        today: Date,
    ) -> Result<Personnummer, VaultError> {
        let plain = self.open_bytes(&row_aad(row), sealed)?;
        let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Plaintext)?;
        // Only the canonical form is ever sealed; anything else is refused.
        if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VaultError::Plaintext);
        }
        Personnummer::parse_at(text, today).map_err(|_| VaultError::Plaintext)
    }

    /// The `vault` rows of `p` under each of `rows`: one idempotent insert
    /// per row not `known` to be stored, and the cache keys
    /// (`domain\0pseudonym`) of the rows written. The only writer of the
    /// `vault` table.
    pub fn rows(
        &self,
        p: &Personnummer,
        rows: &[Row<'_>],
        known: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<Stmt>, Vec<String>), VaultError> {
        let mut out = Vec::new();
        let mut keys = Vec::new();
        for &row in rows {
            let key = format!("{}\0{}", row.domain(), row.pseudonym());
            if known(&key) {
                continue;
            }
            let sealed = self.seal(row, p)?;
            out.push(
                Stmt::new(
                    "INSERT INTO vault (domain, pseudonym, key_id, nonce, ciphertext) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (domain, pseudonym) DO NOTHING",
                )
                .text(row.domain())
                .text(row.pseudonym())
                .text(sealed.key_id)
                .blob(sealed.nonce.to_vec())
                .blob(sealed.ciphertext),
            );
            keys.push(key);
        }
        Ok((out, keys))
    }

    /// Encrypts arbitrary bytes under caller-chosen associated data `aad`.
    pub fn seal_bytes(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| VaultError::Crypto)?;
        let mut ciphertext = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut ciphertext,
            )
            .map_err(|_| VaultError::Crypto)?;
        Ok(Sealed {
            key_id: self.key_id.clone(),
            nonce,
            ciphertext,
        })
    }

    /// Decrypts bytes sealed by [`VaultKey::seal_bytes`] with the same `aad`.
    /// The plaintext is zeroized when dropped.
    pub fn open_bytes(
        &self,
        aad: &[u8],
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let key = if sealed.key_id == self.key_id {
            &self.key
        } else if let Some((_, k)) = self.previous.iter().find(|(id, _)| *id == sealed.key_id) {
            k
        } else {
            return Err(VaultError::WrongKey {
                expected: self.key_id.clone(),
                found: sealed.key_id.clone(),
            });
        };
        let mut buf = Zeroizing::new(sealed.ciphertext.clone());
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(aad),
                buf.as_mut_slice(),
            )
            .map_err(|_| VaultError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultKey({})", self.key_id)
    }
}

/// A `vault` row's key `(domain, pseudonym)`; the domain follows from the
/// pseudonym's type (module docs).
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// The `audit`-domain row.
    Audit(&'a Pseudonym<Audit>),
    /// The `consent`-domain row.
    Consent(&'a Pseudonym<Consent>),
    /// The row of a party's pseudonym, in the domain of that party (its id).
    Party(&'a str, &'a Pseudonym<Party>),
}

impl Row<'_> {
    /// The domain the row is filed under.
    pub fn domain(&self) -> &str {
        match self {
            Row::Audit(_) => DOMAIN_AUDIT,
            Row::Consent(_) => DOMAIN_CONSENT,
            Row::Party(party, _) => party,
        }
    }

    /// The pseudonym the row is filed under.
    pub fn pseudonym(&self) -> &str {
        match self {
            Row::Audit(ps) => ps.as_str(),
            Row::Consent(ps) => ps.as_str(),
            Row::Party(_, ps) => ps.as_str(),
        }
    }
}

/// `domain || 0x00 || pseudonym`: binds a sealed personnummer to its row.
fn row_aad(row: Row<'_>) -> Vec<u8> {
    let (domain, pseudonym) = (row.domain(), row.pseudonym());
    let mut aad = Vec::with_capacity(domain.len() + 1 + pseudonym.len());
    aad.extend_from_slice(domain.as_bytes());
    aad.push(0);
    aad.extend_from_slice(pseudonym.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_key_opens_but_only_the_first_seals() {
        let old = key(1);
        let sealed = old.seal_bytes(b"aad", b"secret").expect("seal");
        let new = key(2)
            .with_previous(vec![Secret32::new([1; 32])])
            .expect("ring");
        assert_eq!(
            &new.open_bytes(b"aad", &sealed).expect("open")[..],
            b"secret"
        );
        let resealed = new.seal_bytes(b"aad", b"secret").expect("seal");
        assert_eq!(resealed.key_id, new.key_id());
        assert!(matches!(
            old.open_bytes(b"aad", &resealed),
            Err(VaultError::WrongKey { .. })
        ));
        assert!(matches!(
            new.open_bytes(b"other", &sealed),
            Err(VaultError::Authentication)
        ));
    }
    use crate::subject::pseudonym::PseudonymMaster;
    use time::macros::date;

    const TODAY: Date = date!(2026 - 06 - 15);

    fn key(byte: u8) -> VaultKey {
        VaultKey::new(Secret32::new([byte; 32])).expect("key")
    }

    fn alva() -> Personnummer {
        Personnummer::parse_at("200203149828", TODAY).expect("valid")
    }

    fn pseudonym(domain: &str, p: &Personnummer) -> Pseudonym<Party> {
        PseudonymMaster::new(Secret32::new([9; 32]))
            .pseudonymise(domain, p)
            .expect("derive")
    }

    /// Alva, her `fk` pseudonym, and her number sealed by `k` in that row.
    fn alva_sealed_for_fk(k: &VaultKey) -> (Personnummer, Pseudonym<Party>, Sealed) {
        let p = alva();
        let ps = pseudonym("fk", &p);
        let sealed = k.seal(Row::Party("fk", &ps), &p).expect("seal");
        (p, ps, sealed)
    }

    #[test]
    fn a_sealed_personnummer_opens_in_its_own_row() {
        let k = key(1);
        let (p, ps, sealed) = alva_sealed_for_fk(&k);
        assert_eq!(sealed.key_id, k.key_id());
        assert_eq!(sealed.ciphertext.len(), 12 + 16);
        assert_eq!(
            k.open(Row::Party("fk", &ps), &sealed, TODAY).expect("open"),
            p
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let k = key(1);
        let (p, ps, a) = alva_sealed_for_fk(&k);
        let b = k.seal(Row::Party("fk", &ps), &p).expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let k = key(1);
        let (_, ps, sealed) = alva_sealed_for_fk(&k);
        let other = Personnummer::parse_at("198209239865", TODAY).expect("valid");
        assert_eq!(
            k.open(Row::Party("af", &ps), &sealed, TODAY),
            Err(VaultError::Authentication)
        );
        assert_eq!(
            k.open(Row::Party("fk", &pseudonym("fk", &other)), &sealed, TODAY),
            Err(VaultError::Authentication)
        );
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let k = key(1);
        let (_, ps, sealed) = alva_sealed_for_fk(&k);
        for i in 0..sealed.ciphertext.len() {
            let mut t = sealed.clone();
            t.ciphertext[i] ^= 1;
            assert_eq!(
                k.open(Row::Party("fk", &ps), &t, TODAY),
                Err(VaultError::Authentication)
            );
        }
        let mut t = sealed.clone();
        t.nonce[0] ^= 1;
        assert_eq!(
            k.open(Row::Party("fk", &ps), &t, TODAY),
            Err(VaultError::Authentication)
        );

        let other = key(2);
        assert!(matches!(
            other.open(Row::Party("fk", &ps), &sealed, TODAY),
            Err(VaultError::WrongKey { .. })
        ));
        // A different key that claims the same id still fails authentication.
        let mut t = sealed.clone();
        t.key_id = other.key_id().to_owned();
        assert_eq!(
            other.open(Row::Party("fk", &ps), &t, TODAY),
            Err(VaultError::Authentication)
        );
    }

    #[test]
    fn bytes_round_trip_with_caller_chosen_aad() {
        let k = key(3);
        let token = b"eyJhbGciOiJFZERTQSJ9.e30.c2ln";
        let sealed = k.seal_bytes(b"consent-token\0c-1", token).expect("seal");
        let plain = k.open_bytes(b"consent-token\0c-1", &sealed).expect("open");
        assert_eq!(plain.as_slice(), token);
        assert_eq!(
            k.open_bytes(b"consent-token\0c-2", &sealed),
            Err(VaultError::Authentication)
        );
        // Bytes that are not a personnummer are refused by `open`.
        let p = alva();
        let ps = pseudonym("fk", &p);
        let mut aad = b"fk\0".to_vec();
        aad.extend_from_slice(ps.as_str().as_bytes());
        let junk = k.seal_bytes(&aad, b"0203149828  ").expect("seal");
        assert_eq!(
            k.open(Row::Party("fk", &ps), &junk, TODAY),
            Err(VaultError::Plaintext)
        );
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let k = key(1);
        assert_eq!(format!("{k:?}"), format!("VaultKey({})", k.key_id()));
        assert_eq!(k.key_id().len(), 8);
    }
}
