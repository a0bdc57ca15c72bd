//! `samgate keys rotate-vault --config FILE` (issue #19): re-seals every
//! stored sealed value under the first `[keys] vault` key.
//!
//! The sealed values (each stored with the id of the key that sealed it):
//!
//! | table | columns | associated data |
//! |---|---|---|
//! | `vault` | `key_id`, `nonce`, `ciphertext` | `domain \0 pseudonym` |
//! | `consents` | `token_key_id`, `token_nonce`, `token_sealed` | `consent-token \0 id` |
//! | `consents` | `revocation_reason` (text form) | `revocation-reason \0 id` |
//! | `outbox` | `body_key_id`, `body_nonce`, `body_sealed` | `outbox \0 exchange_id` |
//! | `idempotency_keys` | `response` (text form) | `idempotency \0 party \0 key` |
//!
//! A value is opened with whichever listed key sealed it and sealed again
//! with the first; a row is only updated if it still holds what was read
//! (a running gateway may be using it), so the command can run while the
//! gateway serves. A value that no listed key opens is counted as failed
//! (exit 1) and left as it is. Afterwards the old keys can be removed from
//! the list once no value names them (run again: 0 re-sealed).

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::config::Config;
use crate::crypto::Crypto;
use crate::party::PartyId;
use crate::store::Store;
use crate::subject::vault::Sealed;

/// Counts for one kind of sealed value.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Re-sealed under the first key.
    pub resealed: u64,
    /// Already sealed under the first key.
    pub current: u64,
    /// Could not be opened with any listed key (left unchanged).
    pub failed: u64,
}

/// The outcome per kind of sealed value.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Rotation {
    /// The key everything is sealed under now.
    pub key_id: String,
    /// `vault` rows.
    pub vault: Counts,
    /// Raw consent tokens.
    pub consent_tokens: Counts,
    /// Revocation reasons.
    pub revocation_reasons: Counts,
    /// Outbox bodies.
    pub outbox_bodies: Counts,
    /// Stored idempotent responses.
    pub idempotency_responses: Counts,
}

impl Rotation {
    /// Every kind with its name.
    pub fn kinds(&self) -> [(&'static str, &Counts); 5] {
        [
            ("vault", &self.vault),
            ("consent_tokens", &self.consent_tokens),
            ("revocation_reasons", &self.revocation_reasons),
            ("outbox_bodies", &self.outbox_bodies),
            ("idempotency_responses", &self.idempotency_responses),
        ]
    }
    /// Values that no key opened.
    pub fn failed(&self) -> u64 {
        self.kinds().iter().map(|(_, c)| c.failed).sum()
    }
}

/// Why rotation could not run.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A key file or the configuration.
    #[error("{0}")]
    Config(String),
    /// The database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The command.
pub async fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("samgate keys rotate-vault: {e}");
            return ExitCode::from(2);
        }
    };
    match rotate_config(&config).await {
        Ok(r) => {
            println!("re-sealed under vault key {}", r.key_id);
            for (name, c) in r.kinds() {
                println!(
                    "{name}: {} re-sealed, {} already current, {} failed",
                    c.resealed, c.current, c.failed
                );
            }
            if r.failed() > 0 {
                eprintln!(
                    "samgate keys rotate-vault: {} values could not be opened with any listed key; they were left unchanged",
                    r.failed()
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("samgate keys rotate-vault: {e}");
            ExitCode::from(2)
        }
    }
}

/// Loads the keys and the database of `config` and rotates.
pub async fn rotate_config(config: &Config) -> Result<Rotation, RotateError> {
    let crypto = Crypto::load(config).map_err(|e| RotateError::Config(e.to_string()))?;
    let store = Store::connect(&config.storage)
        .await
        .map_err(|e| RotateError::Config(e.to_string()))?;
    match store.migration_level().await {
        Ok((applied, known)) if applied == known => {}
        Ok((applied, known)) => {
            store.close().await;
            return Err(RotateError::Config(format!(
                "the database is at migration {applied}, this binary expects {known}"
            )));
        }
        Err(e) => return Err(RotateError::Config(e.to_string())),
    }
    let r = rotate(&crypto, &store).await;
    store.close().await;
    r
}

/// `vault`: domain, pseudonym, key id, nonce, ciphertext.
type VaultRow = (String, String, String, Vec<u8>, Vec<u8>);
/// `consents`: id, token key id, nonce, sealed token, revocation reason.
type ConsentSealRow = (String, String, Vec<u8>, Vec<u8>, Option<String>);

fn sealed(key_id: String, nonce: Vec<u8>, ciphertext: Vec<u8>) -> Option<Sealed> {
    Some(Sealed {
        key_id,
        nonce: nonce.as_slice().try_into().ok()?,
        ciphertext,
    })
}

/// Re-seals every value (see the module docs) with `crypto`'s first vault key.
pub async fn rotate(crypto: &Crypto, store: &Store) -> Result<Rotation, RotateError> {
    let first = crypto.vault.key_id().to_owned();
    let pool = store.pool();
    let mut out = Rotation {
        key_id: first.clone(),
        ..Rotation::default()
    };

    // Binary columns: (table, key columns, sealed columns, aad).
    let rows: Vec<VaultRow> =
        sqlx::query_as("SELECT domain, pseudonym, key_id, nonce, ciphertext FROM vault")
            .fetch_all(pool)
            .await?;
    for (domain, ps, kid, nonce, ct) in rows {
        let aad = [domain.as_bytes(), b"\0", ps.as_bytes()].concat();
        let Some(next) = reseal(
            crypto,
            &first,
            &aad,
            kid.clone(),
            nonce.clone(),
            ct,
            &mut out.vault,
        ) else {
            continue;
        };
        let done = sqlx::query(
            "UPDATE vault SET key_id = $1, nonce = $2, ciphertext = $3 \
             WHERE domain = $4 AND pseudonym = $5 AND key_id = $6 AND nonce = $7",
        )
        .bind(next.key_id)
        .bind(next.nonce.to_vec())
        .bind(next.ciphertext)
        .bind(domain)
        .bind(ps)
        .bind(kid)
        .bind(nonce)
        .execute(pool)
        .await?;
        count_update(done.rows_affected(), &mut out.vault);
    }

    let rows: Vec<ConsentSealRow> = sqlx::query_as(
        "SELECT id, token_key_id, token_nonce, token_sealed, revocation_reason FROM consents",
    )
    .fetch_all(pool)
    .await?;
    for (id, kid, nonce, ct, reason) in rows {
        let aad = crate::consent::api::token_aad(&id);
        if let Some(next) = reseal(
            crypto,
            &first,
            &aad,
            kid.clone(),
            nonce.clone(),
            ct,
            &mut out.consent_tokens,
        ) {
            let done = sqlx::query(
                "UPDATE consents SET token_key_id = $1, token_nonce = $2, token_sealed = $3 \
                 WHERE id = $4 AND token_key_id = $5 AND token_nonce = $6",
            )
            .bind(next.key_id)
            .bind(next.nonce.to_vec())
            .bind(next.ciphertext)
            .bind(id.clone())
            .bind(kid)
            .bind(nonce)
            .execute(pool)
            .await?;
            count_update(done.rows_affected(), &mut out.consent_tokens);
        }
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            let aad = [b"revocation-reason\0".as_slice(), id.as_bytes()].concat();
            if let Some(next) =
                reseal_text(crypto, &first, &aad, &reason, &mut out.revocation_reasons)
            {
                let done = sqlx::query(
                    "UPDATE consents SET revocation_reason = $1 WHERE id = $2 AND revocation_reason = $3",
                )
                .bind(next)
                .bind(id)
                .bind(reason)
                .execute(pool)
                .await?;
                count_update(done.rows_affected(), &mut out.revocation_reasons);
            }
        }
    }

    let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT exchange_id, body_key_id, body_nonce, body_sealed FROM outbox")
            .fetch_all(pool)
            .await?;
    for (id, kid, nonce, ct) in rows {
        let aad = crate::exchange::outbox::aad(&id);
        let Some(next) = reseal(
            crypto,
            &first,
            &aad,
            kid.clone(),
            nonce.clone(),
            ct,
            &mut out.outbox_bodies,
        ) else {
            continue;
        };
        let done = sqlx::query(
            "UPDATE outbox SET body_key_id = $1, body_nonce = $2, body_sealed = $3 \
             WHERE exchange_id = $4 AND body_key_id = $5 AND body_nonce = $6",
        )
        .bind(next.key_id)
        .bind(next.nonce.to_vec())
        .bind(next.ciphertext)
        .bind(id)
        .bind(kid)
        .bind(nonce)
        .execute(pool)
        .await?;
        count_update(done.rows_affected(), &mut out.outbox_bodies);
    }

    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT party, key, response FROM idempotency_keys")
            .fetch_all(pool)
            .await?;
    for (party, key, response) in rows {
        if response.is_empty() {
            continue; // still in progress: nothing sealed yet
        }
        let aad = crate::exchange::idempotency::aad(&PartyId::new(party.clone()), &key);
        let Some(next) = reseal_text(
            crypto,
            &first,
            &aad,
            &response,
            &mut out.idempotency_responses,
        ) else {
            continue;
        };
        let done = sqlx::query(
            "UPDATE idempotency_keys SET response = $1 WHERE party = $2 AND key = $3 AND response = $4",
        )
        .bind(next)
        .bind(party)
        .bind(key)
        .bind(response)
        .execute(pool)
        .await?;
        count_update(done.rows_affected(), &mut out.idempotency_responses);
    }
    Ok(out)
}

/// A row changed under us (delivered, finished) is not an error: whatever
/// replaced it was sealed by the running gateway.
fn count_update(rows: u64, c: &mut Counts) {
    if rows > 0 {
        c.resealed += 1;
    } else {
        c.current += 1;
    }
}

fn reseal(
    crypto: &Crypto,
    first: &str,
    aad: &[u8],
    kid: String,
    nonce: Vec<u8>,
    ct: Vec<u8>,
    c: &mut Counts,
) -> Option<Sealed> {
    if kid == first {
        c.current += 1;
        return None;
    }
    let next = sealed(kid, nonce, ct)
        .and_then(|s| crypto.vault.open_bytes(aad, &s).ok())
        .and_then(|plain| crypto.vault.seal_bytes(aad, &plain).ok());
    if next.is_none() {
        c.failed += 1;
    }
    next
}

fn reseal_text(
    crypto: &Crypto,
    first: &str,
    aad: &[u8],
    stored: &str,
    c: &mut Counts,
) -> Option<String> {
    if stored.split(':').next() == Some(first) {
        c.current += 1;
        return None;
    }
    let next = crypto
        .open_text(aad, stored)
        .and_then(|plain| crypto.seal_text(aad, &plain));
    if next.is_none() {
        c.failed += 1;
    }
    next
}
