//! The exchange's own SQL: the `exchanges` row in each of its states, the
//! idempotency key's link to its exchange, and the status read of
//! `GET /v1/exchanges/{id}`. Every write here is a [`Stmt`] committed with
//! the audit record of the decision it belongs to (DESIGN §5).

use super::{Delivery, ExchangeCtx};
use crate::error::ApiError;
use crate::party::PartyId;
use crate::policy::SubjectMode;
use crate::state::AppState;
use crate::store::{Stmt, Store};

fn delivery_name(d: Delivery) -> &'static str {
    match d {
        Delivery::Async => "async",
        Delivery::Sync => "sync",
    }
}

/// The row of a refused exchange (status `denied`, the problem code as its
/// `last_error`), so the sender can look it up and quote it.
pub fn denied_row(ctx: &ExchangeCtx, code: &str, now_us: i64) -> Stmt {
    Stmt::new(
        "INSERT INTO exchanges (id, sender, recipient, msg_type, purpose, delivery, status, attempts, \
         consent_id, subject, forwarded, withheld, last_error, created_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, 'denied', 0, $7, $8, '[]', '[]', $9, $10)",
    )
    .text(ctx.exchange_id.clone())
    .text(ctx.principal.party.to_string())
    .text(ctx.to.clone().unwrap_or_default())
    .text(ctx.msg_type.clone().unwrap_or_default())
    .text(ctx.purpose.clone().unwrap_or_default())
    .text(delivery_name(ctx.delivery))
    .opt_text(ctx.consent_id.clone().map(String::from))
    .opt_text(ctx.subject_audit.as_ref().map(|s| s.as_str().to_owned()))
    .text(code)
    .int(now_us)
}

/// The row of a forwarded exchange (`queued` or `forwarded`) with the form
/// the subject travels in, kept for revocation notices (§13).
pub fn forwarded_rows(
    ctx: &ExchangeCtx,
    to: &PartyId,
    status: &str,
    mode: SubjectMode,
    now_us: i64,
) -> Result<Vec<Stmt>, serde_json::Error> {
    let row = Stmt::new(
        "INSERT INTO exchanges (id, sender, recipient, msg_type, purpose, delivery, status, attempts, \
         consent_id, subject, forwarded, withheld, created_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12)",
    )
    .text(ctx.exchange_id.clone())
    .text(ctx.principal.party.to_string())
    .text(to.to_string())
    .text(ctx.msg_type.clone().unwrap_or_default())
    .text(ctx.purpose.clone().unwrap_or_default())
    .text(delivery_name(ctx.delivery))
    .text(status)
    .opt_text(ctx.consent_id.clone().map(String::from))
    .opt_text(ctx.subject_audit.as_ref().map(|s| s.as_str().to_owned()))
    .text(serde_json::to_string(&ctx.forwarded)?)
    .text(serde_json::to_string(&ctx.withheld)?)
    .int(now_us);
    let mode = Stmt::new("UPDATE exchanges SET subject_mode = $1 WHERE id = $2")
        .text(crate::consent::lifecycle::mode_name(mode))
        .text(ctx.exchange_id.clone());
    Ok(vec![row, mode])
}

/// The idempotency key learns its exchange in the same transaction as the
/// decision: a retry after a crash answers from the exchange instead of
/// running it again.
pub fn link_idempotency_key(ctx: &ExchangeCtx, key: &str) -> Stmt {
    Stmt::new("UPDATE idempotency_keys SET exchange_id = $1 WHERE party = $2 AND key = $3")
        .text(ctx.exchange_id.clone())
        .text(ctx.principal.party.to_string())
        .text(key)
}

/// A sync exchange the recipient accepted.
pub fn delivered(exchange_id: &str, now_us: i64) -> Stmt {
    Stmt::new(
        "UPDATE exchanges SET status = 'delivered', attempts = 1, delivered_at_us = $1 WHERE id = $2",
    )
    .int(now_us)
    .text(exchange_id)
}

/// A sync exchange the recipient did not accept (`possibly_received`:
/// the message may have arrived all the same).
pub fn failed(exchange_id: &str, error: &str, possibly_received: bool) -> Stmt {
    Stmt::new(
        "UPDATE exchanges SET status = 'failed', attempts = 1, last_error = $1, possibly_received = $2 WHERE id = $3",
    )
    .text(error)
    .int(i64::from(possibly_received))
    .text(exchange_id)
}

/// What `GET /v1/exchanges/{id}` shows of an exchange.
pub struct Status {
    /// The sending party.
    pub sender: String,
    /// `denied`, `queued`, `forwarded`, `delivered`, `failed`, ...
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The last delivery error (or the problem code of a refusal).
    pub last_error: Option<String>,
    /// Created (µs).
    pub created_at_us: i64,
    /// Delivered (µs).
    pub delivered_at_us: Option<i64>,
}

/// The status of exchange `id`, if it exists.
pub async fn status(store: &Store, id: &str) -> Result<Option<Status>, sqlx::Error> {
    type Row = (String, String, i64, Option<String>, i64, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT sender, status, attempts, last_error, created_at_us, delivered_at_us FROM exchanges WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(
        |(sender, status, attempts, last_error, created_at_us, delivered_at_us)| Status {
            sender,
            status,
            attempts,
            last_error,
            created_at_us,
            delivered_at_us,
        },
    ))
}

/// Associated data of a sealed outbox body (also used by `keys rotate-vault`).
pub fn outbox_aad(exchange_id: &str) -> Vec<u8> {
    let mut a = b"outbox\0".to_vec();
    a.extend_from_slice(exchange_id.as_bytes());
    a
}

/// The outbox row for an async exchange (written with its audit record).
pub fn outbox_insert(
    state: &AppState,
    exchange_id: &str,
    endpoint: &str,
    body: &[u8],
) -> Result<Stmt, ApiError> {
    let sealed = state
        .crypto
        .vault
        .seal_bytes(&outbox_aad(exchange_id), body)
        .map_err(ApiError::internal)?;
    let now = state.clock.now_us();
    let expires =
        now + i64::try_from(state.config.delivery.expire_after.as_micros()).unwrap_or(i64::MAX / 2);
    Ok(Stmt::new(
        "INSERT INTO outbox (exchange_id, endpoint, body_key_id, body_nonce, body_sealed, signature, attempts, \
         next_attempt_us, expires_at_us, claimed_until_us) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, 0)",
    )
    .text(exchange_id)
    .text(endpoint)
    .text(sealed.key_id)
    .blob(sealed.nonce.to_vec())
    .blob(sealed.ciphertext)
    // The signature is not stored (DESIGN §10): with the published delivery
    // key it would let a database thief test guesses of a small sealed
    // body. It is recomputed from the opened body at each attempt.
    .text("")
    .int(now)
    .int(expires))
}

/// Removes a claimed row from the outbox, only while this instance holds
/// the claim (the statement must remove it, else the item is refused): the
/// end of an async exchange, delivered, expired or refused before delivery.
pub fn outbox_release(state: &AppState, exchange_id: &str) -> Stmt {
    Stmt::new("DELETE FROM outbox WHERE exchange_id = $1 AND claimed_by = $2")
        .text(exchange_id.to_owned())
        .text(state.instance_id.clone())
        .expect_rows()
}
