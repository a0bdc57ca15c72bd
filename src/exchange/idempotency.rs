//! `Idempotency-Key` (DESIGN §5): per sending party, kept at least 24 h.
//! Same key and same body: the first result, and nothing sent twice. Same
//! key, different body: 409 `idempotency_conflict`.
//!
//! The key is claimed with an insert before the exchange runs, so two
//! concurrent requests with one key cannot both deliver: the second sees the
//! claim and gets 409 until the first has finished (a claim older than
//! [`STALE_CLAIM_SECS`] is taken over: its request died mid-way, before any
//! result was stored). Server errors (5xx) release the key so the client's
//! retry runs again.
//!
//! The stored response is sealed with the vault key (a sync response can
//! carry a reply payload with personal data), bound to (party, key).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ExchangeError;
use crate::error::ApiError;
use crate::party::PartyId;
use crate::state::AppState;

/// A claim older than this (seconds) belongs to a request that died.
pub const STALE_CLAIM_SECS: i64 = 120;

/// Outcome of claiming a key.
pub enum Begin {
    /// First use: run the exchange.
    Proceed,
    /// Seen before with the same body: the stored response.
    Replay(Response),
}

/// The `Idempotency-Key` header, if any (1–255 visible ASCII characters).
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ExchangeError::BadIdempotencyKey.into());
    }
    Ok(Some(s.to_owned()))
}

/// Claims the key or finds its earlier result.
pub async fn begin(
    state: &AppState,
    party: &PartyId,
    key: &str,
    hash: &str,
) -> Result<Begin, ApiError> {
    let now = state.clock.now_us();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (party, key, request_sha256, status, response, created_at_us) \
         VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (party, key) DO NOTHING",
    )
    .bind(party.to_string())
    .bind(key.to_owned())
    .bind(hash.to_owned())
    .bind(now)
    .execute(state.store.pool())
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Begin::Proceed);
    }
    let row: Option<(String, i64, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT request_sha256, status, response, created_at_us, exchange_id FROM idempotency_keys WHERE party = $1 AND key = $2",
    )
    .bind(party.to_string())
    .bind(key.to_owned())
    .fetch_optional(state.store.pool())
    .await?;
    let Some((stored_hash, status, response, created, exchange_id)) = row else {
        return Err(ExchangeError::IdempotencyRace.into());
    };
    if stored_hash != hash {
        return Err(ExchangeError::IdempotencyReused.into());
    }
    if status == 0 {
        if let Some(id) = exchange_id {
            // The first request committed its exchange but never stored its
            // answer (it crashed, or is still delivering): answer from the
            // exchange itself; nothing is sent again.
            return Ok(Begin::Replay(from_exchange(state, &id).await?));
        }
        if created < now - STALE_CLAIM_SECS * 1_000_000 {
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET created_at_us = $1 WHERE party = $2 AND key = $3 AND status = 0 AND created_at_us = $4",
            )
            .bind(now)
            .bind(party.to_string())
            .bind(key.to_owned())
            .bind(created)
            .execute(state.store.pool())
            .await?
            .rows_affected();
            if taken == 1 {
                return Ok(Begin::Proceed);
            }
        }
        return Err(ExchangeError::IdempotencyInProgress.into());
    }
    let status =
        StatusCode::from_u16(u16::try_from(status).unwrap_or(500)).unwrap_or(StatusCode::OK);
    let response = open(state, party, key, &response).ok_or_else(|| {
        ApiError::internal("a stored idempotent response could not be opened (vault key rotated?)")
    })?;
    let mut rsp = (status, response).into_response();
    let ct = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    rsp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    rsp.headers_mut()
        .insert("idempotent-replay", HeaderValue::from_static("true"));
    Ok(Begin::Replay(rsp))
}

async fn from_exchange(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM exchanges WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(state.store.pool())
        .await?;
    let status = status.unwrap_or_else(|| "queued".to_owned());
    let code = if status == "queued" || status == "forwarded" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut rsp = (
        code,
        axum::Json(serde_json::json!({"exchange_id": id, "status": status})),
    )
        .into_response();
    rsp.headers_mut()
        .insert("idempotent-replay", HeaderValue::from_static("true"));
    Ok(rsp)
}

/// Stores the result (or releases the key after a server error).
pub async fn finish(
    state: &AppState,
    party: &PartyId,
    key: &str,
    status: StatusCode,
    body: &Value,
) {
    // 500 and 503 mean nothing was decided: the key is released for the
    // retry. 502 is a decision (the exchange is recorded as failed, and the
    // recipient may have received it): it is kept like any other answer.
    let release =
        status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE;
    let result = if release {
        sqlx::query("DELETE FROM idempotency_keys WHERE party = $1 AND key = $2")
            .bind(party.to_string())
            .bind(key.to_owned())
            .execute(state.store.pool())
            .await
    } else {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 WHERE party = $3 AND key = $4",
        )
        .bind(i64::from(status.as_u16()))
        .bind(seal(state, party, key, body.to_string().as_bytes()))
        .bind(party.to_string())
        .bind(key.to_owned())
        .execute(state.store.pool())
        .await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not store the idempotency result");
    }
}

/// Removes keys older than `max_age_us` (called by the outbox worker).
pub async fn purge(state: &AppState, max_age_us: i64) {
    let cutoff = state.clock.now_us() - max_age_us;
    let _ = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_us < $1 AND status <> 0")
        .bind(cutoff)
        .execute(state.store.pool())
        .await;
}

/// Associated data of a sealed idempotent response (also used by `keys rotate-vault`).
pub fn aad(party: &PartyId, key: &str) -> Vec<u8> {
    format!("idempotency\0{party}\0{key}").into_bytes()
}

fn seal(state: &AppState, party: &PartyId, key: &str, plain: &[u8]) -> String {
    let text = String::from_utf8_lossy(plain);
    state
        .crypto
        .seal_text(&aad(party, key), &text)
        .unwrap_or_default()
}

fn open(state: &AppState, party: &PartyId, key: &str, stored: &str) -> Option<String> {
    state.crypto.open_text(&aad(party, key), stored)
}
