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
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use sqlx::Row;

use crate::config::Config;
use crate::crypto::Crypto;
use crate::party::PartyId;
use crate::store::{bind, Arg, Store};
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

/// Where a sealed value lives: the table, the columns that find its row,
/// and the value's own columns.
struct Location {
    table: &'static str,
    keys: &'static [&'static str],
    value: Form,
}

/// How a sealed value is stored.
enum Form {
    /// In three columns: key id, nonce and ciphertext.
    Binary {
        key_id: &'static str,
        nonce: &'static str,
        sealed: &'static str,
    },
    /// In one column, in its text form (`key_id:nonce:ciphertext`). Empty or
    /// NULL values hold nothing sealed (an idempotency key still in
    /// progress, a revocation without a reason) and are passed over.
    Text(&'static str),
}

impl Form {
    /// The columns read and rewritten, and those of them the update
    /// compares with what was read: the key id and nonce, or the text.
    fn columns(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        match self {
            Form::Binary {
                key_id,
                nonce,
                sealed,
            } => (vec![key_id, nonce, sealed], vec![key_id, nonce]),
            Form::Text(column) => (vec![column], vec![column]),
        }
    }

    /// The row's value (after its `n` key columns) re-sealed with `first`,
    /// counted in `counts`; `None` when there is nothing to write.
    fn reseal(
        &self,
        crypto: &Crypto,
        first: &str,
        aad: &[u8],
        row: &AnyRow,
        n: usize,
        counts: &mut Counts,
    ) -> Result<Option<Resealed>, sqlx::Error> {
        Ok(match self {
            Form::Binary { .. } => {
                let kid: String = row.try_get(n)?;
                let nonce: Vec<u8> = row.try_get(n + 1)?;
                let ct: Vec<u8> = row.try_get(n + 2)?;
                reseal(crypto, first, aad, kid.clone(), nonce.clone(), ct, counts).map(|next| {
                    let new = vec![
                        Arg::Text(Some(next.key_id)),
                        Arg::Blob(Some(next.nonce.to_vec())),
                        Arg::Blob(Some(next.ciphertext)),
                    ];
                    let read = vec![Arg::Text(Some(kid)), Arg::Blob(Some(nonce))];
                    Resealed { new, read }
                })
            }
            Form::Text(_) => {
                let Some(stored) = row
                    .try_get::<Option<String>, _>(n)?
                    .filter(|v| !v.is_empty())
                else {
                    return Ok(None);
                };
                reseal_text(crypto, first, aad, &stored, counts).map(|next| Resealed {
                    new: vec![Arg::Text(Some(next))],
                    read: vec![Arg::Text(Some(stored))],
                })
            }
        })
    }
}

/// A value re-sealed: the new values of the columns [`Form::columns`]
/// rewrites, and the compared ones as they were read.
struct Resealed {
    new: Vec<Arg>,
    read: Vec<Arg>,
}

const VAULT: Location = Location {
    table: "vault",
    keys: &["domain", "pseudonym"],
    value: Form::Binary {
        key_id: "key_id",
        nonce: "nonce",
        sealed: "ciphertext",
    },
};
const CONSENT_TOKENS: Location = Location {
    table: "consents",
    keys: &["id"],
    value: Form::Binary {
        key_id: "token_key_id",
        nonce: "token_nonce",
        sealed: "token_sealed",
    },
};
const OUTBOX_BODIES: Location = Location {
    table: "outbox",
    keys: &["exchange_id"],
    value: Form::Binary {
        key_id: "body_key_id",
        nonce: "body_nonce",
        sealed: "body_sealed",
    },
};
const REVOCATION_REASONS: Location = Location {
    table: "consents",
    keys: &["id"],
    value: Form::Text("revocation_reason"),
};
const IDEMPOTENT_RESPONSES: Location = Location {
    table: "idempotency_keys",
    keys: &["party", "key"],
    value: Form::Text("response"),
};

/// `k1 = $from <sep> k2 = $from+1 …` for these columns.
fn assign(columns: &[&str], from: usize, sep: &str) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", from + i))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Re-seals every value at `at` with the first key; `aad` gives a row's
/// associated data from its key values (module docs).
async fn reseal_column(
    crypto: &Crypto,
    first: &str,
    pool: &AnyPool,
    at: &Location,
    aad: impl Fn(&[String]) -> Vec<u8>,
) -> Result<Counts, RotateError> {
    let mut counts = Counts::default();
    let (columns, compared) = at.value.columns();
    let select = format!(
        "SELECT {}, {} FROM {}",
        at.keys.join(", "),
        columns.join(", "),
        at.table
    );
    // Only a row that still holds what was read is updated (module docs).
    let n = at.keys.len();
    let update = format!(
        "UPDATE {} SET {} WHERE {} AND {}",
        at.table,
        assign(&columns, 1, ", "),
        assign(at.keys, columns.len() + 1, " AND "),
        assign(&compared, columns.len() + n + 1, " AND "),
    );
    for row in sqlx::query(&select).fetch_all(pool).await? {
        let keys = (0..n)
            .map(|i| row.try_get::<String, _>(i))
            .collect::<Result<Vec<_>, _>>()?;
        let aad = aad(&keys);
        let Some(Resealed { new, read }) =
            at.value.reseal(crypto, first, &aad, &row, n, &mut counts)?
        else {
            continue;
        };
        let keys: Vec<Arg> = keys.into_iter().map(|k| Arg::Text(Some(k))).collect();
        let q = bind(bind(bind(sqlx::query(&update), &new), &keys), &read);
        let done = q.execute(pool).await?;
        count_update(done.rows_affected(), &mut counts);
    }
    Ok(counts)
}

fn sealed(key_id: String, nonce: Vec<u8>, ciphertext: Vec<u8>) -> Option<Sealed> {
    Some(Sealed {
        key_id,
        nonce: nonce.as_slice().try_into().ok()?,
        ciphertext,
    })
}

/// The first key value of a row (the tables' ids).
fn id(keys: &[String]) -> &str {
    keys.first().map_or("", String::as_str)
}

/// Re-seals every value (see the module docs) with `crypto`'s first vault key.
pub async fn rotate(crypto: &Crypto, store: &Store) -> Result<Rotation, RotateError> {
    let first = crypto.vault.key_id().to_owned();
    let pool = store.pool();
    let vault = reseal_column(crypto, &first, pool, &VAULT, |k| {
        let pseudonym = k.get(1).map_or("", String::as_str);
        [id(k).as_bytes(), b"\0", pseudonym.as_bytes()].concat()
    })
    .await?;
    let consent_tokens = reseal_column(crypto, &first, pool, &CONSENT_TOKENS, |k| {
        crate::consent::api::token_aad(id(k))
    })
    .await?;
    let revocation_reasons = reseal_column(crypto, &first, pool, &REVOCATION_REASONS, |k| {
        [b"revocation-reason\0".as_slice(), id(k).as_bytes()].concat()
    })
    .await?;
    let outbox_bodies = reseal_column(crypto, &first, pool, &OUTBOX_BODIES, |k| {
        crate::exchange::store::outbox_aad(id(k))
    })
    .await?;
    let idempotency_responses = reseal_column(crypto, &first, pool, &IDEMPOTENT_RESPONSES, |k| {
        let key = k.get(1).map_or("", String::as_str);
        crate::exchange::idempotency::aad(&PartyId::new(id(k)), key)
    })
    .await?;
    Ok(Rotation {
        key_id: first,
        vault,
        consent_tokens,
        revocation_reasons,
        outbox_bodies,
        idempotency_responses,
    })
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
