//! `POST /v1/exchanges` and `GET /v1/exchanges/{id}` (DESIGN §5).
//!
//! The handlers authenticate, read the body and keep the idempotency key;
//! the steps of DESIGN §5 run in [`super::flow`], in the contract's order.
//! Every refusal after authentication is itself an audit record
//! (`exchange-denied`) with the problem code as its reason.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{flow, idempotency, ExchangeCtx};
use crate::audit::record::Action;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::RequestId;
use crate::party::Role;
use crate::state::AppState;

/// `POST /v1/exchanges` (role agency).
pub async fn post(State(state): State<AppState>, principal: Principal, req: Request) -> Response {
    let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    if let Err(e) = principal.require(Role::Agency) {
        return ApiError::from(e).into_response();
    }
    let headers = req.headers().clone();
    let idem_key = match idempotency::key_from(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    // Stored and compared only as a keyed digest (DESIGN §10): the key is
    // the caller's text and may hold anything, a personnummer included.
    let idem_key = idem_key.map(|k| {
        state
            .crypto
            .idempotency_digest(principal.party.as_str(), &k)
    });
    let mut ctx = ExchangeCtx::new(principal.clone(), rid);
    ctx.idempotency_key = idem_key.clone();
    let raw = match read(&state, &headers, req).await {
        Ok(b) => b,
        Err(e) => return flow::refuse(&state, &ctx, e).await.into_response(),
    };
    // Keyed digest: the body holds a personnummer (see Crypto::payload_digest).
    let request_hash = state.crypto.payload_digest(&raw);
    ctx.payload_sha256 = Some(request_hash.clone());
    if let Some(key) = &idem_key {
        match idempotency::begin(&state, &principal.party, key, &request_hash).await {
            Ok(idempotency::Begin::Proceed) => {}
            Ok(idempotency::Begin::Replay(rsp)) => return rsp,
            Err(e) => return e.into_response(),
        }
    }
    let mut result = flow::run(&state, &mut ctx, &raw).await;
    for _ in 1..crate::consent::cache::MAX_DECISIONS {
        if !ctx.consent_stale {
            break;
        }
        // The consent changed since it was read (consent::cache): nothing
        // was written or sent; decide again from the database.
        ctx.retry_fresh();
        result = flow::run(&state, &mut ctx, &raw).await;
    }
    let result = match result {
        Ok(r) => Ok(r),
        Err(e) => Err(flow::refuse(&state, &ctx, e).await),
    };
    let (status, body) = match &result {
        Ok((status, body)) => (*status, body.clone()),
        Err(e) => (e.code.status(), e.body()),
    };
    if let (Some(key), false) = (&idem_key, ctx.idempotency_finished) {
        idempotency::finish(&state, &principal.party, key, status, &body).await;
    }
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn read(state: &AppState, headers: &HeaderMap, req: Request) -> Result<Bytes, ApiError> {
    crate::http::extract::check_json_content_type(headers)?;
    let limit = state.config.server.max_body_bytes;
    Ok(crate::http::extract::read_body(req.into_body(), limit).await?)
}

/// `GET /v1/exchanges/{id}` (the sender, or an auditor).
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    rid: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    principal.require_any(&[Role::Agency, Role::Auditor])?;
    let not_found = || ApiError::from(super::error::ExchangeError::NotFound);
    let row = super::store::status(&state.store, &id)
        .await?
        .ok_or_else(not_found)?;
    if row.sender != principal.party.as_str() {
        if !principal.has(Role::Auditor) {
            return Err(not_found());
        }
        // An auditor's read is itself an audit record (DESIGN §6).
        crate::audit::access::log_query(
            &state,
            &principal,
            rid,
            Action::AuditQuery,
            format!("exchange {id}"),
            None,
        )
        .await?;
    }
    Ok(Json(json!({
        "exchange_id": id,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created_at": crate::clock::rfc3339_us(row.created_at_us),
        "delivered_at": row.delivered_at_us.map(crate::clock::rfc3339_us),
    }))
    .into_response())
}
