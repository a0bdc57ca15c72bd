//! Consent endpoints (DESIGN §2, §9): record, read, revoke. Every recorded
//! and revoked consent is an audit record written in the same transaction
//! as the consent row.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::model::{self, ConsentRow};
use super::verify::VerifiedConsent;
use super::ConsentError;
use crate::audit::record::{Action, AuditRecord, Decision};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{JsonBody, RequestId};
use crate::party::Role;
use crate::state::AppState;
use crate::store::Stmt;
use crate::subject::pseudonym::{Consent, Pseudonym};
use crate::subject::vault::Sealed;
use crate::subject::Subject;

/// `POST /v1/consents` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConsent {
    token: String,
}

/// `POST /v1/consents/{id}/revocation` body (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    #[serde(default)]
    reason: Option<String>,
}

/// Associated data of a sealed consent token (also used by `keys rotate-vault`).
pub fn token_aad(id: &str) -> Vec<u8> {
    let mut aad = b"consent-token\0".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// `POST /v1/consents` (role intake).
pub async fn record(
    State(state): State<AppState>,
    principal: Principal,
    rid: Option<axum::Extension<RequestId>>,
    body: JsonBody<RecordConsent>,
) -> ApiResult<Response> {
    principal.require(Role::Intake)?;
    let now = state.clock.now();
    let token = body.value.token.trim();
    let vc = state.live().consents.verify(token, now)?;
    let id = vc.id.to_string();
    if model::fetch(&state.store, &id).await?.is_some() {
        return Err(replayed());
    }
    // The subject's forms, each keyed once (DESIGN §3).
    let person =
        Subject::new(&state.crypto, vc.subject.clone(), None).map_err(ApiError::internal)?;
    let sealed = state
        .crypto
        .vault
        .seal_bytes(&token_aad(&id), token.as_bytes())
        .map_err(ApiError::internal)?;
    let now_us = crate::clock::to_us(now);
    let row = new_row(&vc, &id, person.consent(), now_us);
    // The representative's name is sealed like the token (DESIGN §13).
    let given_by_name = match &vc.given_by {
        Some(g) => Some(
            state
                .crypto
                .seal_text(&super::lifecycle::given_by_aad(&id), &g.name)
                .ok_or_else(|| ApiError::internal("cannot seal given_by"))?,
        ),
        None => None,
    };
    let mut effects = vec![insert_stmt(&row, &vc.key_id, sealed, given_by_name)?];
    // The subject's other consents move too: the new one may be chosen
    // instead of them, and its marking is the person's (see `cache`).
    effects.push(
        Stmt::new("UPDATE consents SET version = version + 1 WHERE subject = $1 AND id <> $2")
            .text(row.subject.clone())
            .text(id.clone()),
    );
    let known = |key: &str| state.vault_is_stored(key);
    let (vault_rows, vault_keys) = person.consent_vault_rows(&state.crypto, &known)?;
    effects.extend(vault_rows);
    let mut record = AuditRecord {
        request_id: rid.map(|r| r.0 .0.clone()),
        actor_party: Some(principal.party.to_string()),
        actor_user: principal.user.clone(),
        consent_id: Some(id.clone()),
        purpose: row.purposes.first().cloned(),
        ..AuditRecord::new(Action::ConsentRecorded, Decision::Permit)
    };
    record.set_subject(Some(person.audit()));
    match state.audit.append(record, effects).await {
        Ok(_) => {
            state.mark_vault_stored(vault_keys);
            state.consent_cache.invalidate(&row.subject);
        }
        Err(e) if e.is_unique_violation() => return Err(replayed()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(consent.id = %id, "consent recorded");
    let row = row.with_subject_marking(&state.store).await?;
    Ok(crate::http::extract::created(
        row.summary(state.clock.now_us()),
    ))
}

/// The stored form of a verified consent, recorded at `now_us`.
fn new_row(
    vc: &VerifiedConsent,
    id: &str,
    subject: &Pseudonym<Consent>,
    now_us: i64,
) -> ConsentRow {
    ConsentRow {
        id: id.to_owned(),
        subject: subject.as_str().to_owned(),
        issuer: vc.issuer.clone(),
        parties: vc.parties.clone(),
        purposes: vc.purposes.clone(),
        categories: vc
            .categories
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        method: vc.method.clone(),
        recorded_by: vc.recorded_by.clone(),
        not_before_us: vc.not_before.saturating_mul(1_000_000),
        expires_at_us: vc.expires_at.saturating_mul(1_000_000),
        recorded_at_us: now_us,
        revoked_at_us: None,
        given_by_role: vc.given_by.as_ref().map(|g| g.role.clone()),
        given_by_sealed: None,
        given_by: vc.given_by.clone(),
        protected_identity: vc.protected_identity,
        closure: None,
        version: 1,
    }
}

/// The `consents` row: the summary, the sealed token and the sealed name
/// of the representative.
fn insert_stmt(
    row: &ConsentRow,
    key_id: &str,
    token: Sealed,
    given_by_name: Option<String>,
) -> Result<Stmt, ApiError> {
    let json = |v: &Vec<String>| serde_json::to_string(v).map_err(ApiError::internal);
    Ok(Stmt::new(
        "INSERT INTO consents (id, subject, issuer, key_id, parties, purposes, categories, method, \
         recorded_by, not_before_us, expires_at_us, recorded_at_us, token_key_id, token_nonce, token_sealed, \
         given_by_role, given_by_name, protected_identity) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .text(row.id.clone())
    .text(row.subject.clone())
    .text(row.issuer.clone())
    .text(key_id)
    .text(json(&row.parties)?)
    .text(json(&row.purposes)?)
    .text(json(&row.categories)?)
    .text(row.method.clone())
    .text(row.recorded_by.clone())
    .int(row.not_before_us)
    .int(row.expires_at_us)
    .int(row.recorded_at_us)
    .text(token.key_id)
    .blob(token.nonce.to_vec())
    .blob(token.ciphertext)
    .opt_text(row.given_by_role.clone())
    .opt_text(given_by_name)
    .int(i64::from(row.protected_identity)))
}

fn replayed() -> ApiError {
    ConsentError::Replayed.into()
}

fn not_found() -> ApiError {
    ConsentError::NotFound.into()
}

/// `GET /v1/consents/{id}` (roles intake, auditor). An auditor's read is
/// itself an audit record (DESIGN §6: every auditor query).
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    rid: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    principal.require_any(&[Role::Intake, Role::Auditor])?;
    let row = opened(&state, &id).await?;
    if !principal.has(Role::Intake) {
        crate::audit::access::log_query(
            &state,
            &principal,
            rid,
            Action::AuditQuery,
            format!("consent {id}"),
            None,
        )
        .await?;
    }
    Ok(Json(row.summary(state.clock.now_us())).into_response())
}

/// `POST /v1/consents/{id}/revocation` (role intake). Revoking twice
/// returns the same summary.
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    principal.require(Role::Intake)?;
    let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let body = revocation_body(req, state.config.server.max_body_bytes).await?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(not_found());
    }
    let row = model::fetch(&state.store, &id)
        .await?
        .ok_or_else(not_found)?;
    if row.revoked_at_us.is_none() {
        record_revocation(&state, &principal, rid, &id, &row, body.reason).await?;
    }
    let row = opened(&state, &id).await?;
    Ok(Json(row.summary(state.clock.now_us())).into_response())
}

/// Consent `id` as its readers see it: the representative's name opened and
/// the subject's protected-identity marking applied (404 for an id that is
/// not a UUID or not recorded).
pub(super) async fn opened(state: &AppState, id: &str) -> ApiResult<ConsentRow> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    let row = model::fetch(&state.store, id)
        .await?
        .ok_or_else(not_found)?
        .open(&state.crypto)
        .with_subject_marking(&state.store)
        .await?;
    Ok(row)
}

/// The optional body of a revocation: none, or only whitespace, is the
/// default (no reason).
async fn revocation_body(req: Request, limit: usize) -> ApiResult<Revocation> {
    let has_body = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(http::header::TRANSFER_ENCODING);
    if !has_body {
        return Ok(Revocation::default());
    }
    crate::http::extract::check_json_content_type(req.headers())?;
    let raw = crate::http::extract::read_body(req.into_body(), limit).await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        Ok(Revocation::default())
    } else {
        Ok(crate::http::extract::parse_json(&raw)?)
    }
}

/// Revokes the (not yet revoked) consent `row`: the revocation, its
/// notices to every party that received data under it and the
/// `consent-revoked` record in one transaction, then the sweep for
/// deliveries that completed meanwhile. A concurrent revocation that won
/// (a conflict) is no error.
async fn record_revocation(
    state: &AppState,
    principal: &Principal,
    rid: Option<String>,
    id: &str,
    row: &ConsentRow,
    reason: Option<String>,
) -> ApiResult<()> {
    let id = id.to_owned();
    let now_us = state.clock.now_us();
    // The reason is staff free text (it may name the person): sealed.
    let reason = reason.and_then(|r| {
        let r: String = r.chars().take(500).collect();
        let mut aad = b"revocation-reason\0".to_vec();
        aad.extend_from_slice(id.as_bytes());
        state.crypto.seal_text(&aad, &r)
    });
    let effect = Stmt::new(
        "UPDATE consents SET revoked_at_us = $1, revocation_reason = $2, version = version + 1 \
         WHERE id = $3 AND revoked_at_us IS NULL",
    )
    .int(now_us)
    .opt_text(reason)
    .text(id.clone())
    .expect_rows();
    // The audit subject: the consent row only holds the consent-domain
    // pseudonym; the audit-domain one comes from the vault-free mapping
    // kept in the consent-recorded record.
    let subject = super::notices::audit_subject_of(state, row).await?;
    // Every party that received data under the consent is told, in the
    // same transaction (DESIGN §13; see `notices`).
    let (notices, notice_count) =
        super::notices::notice_stmts(state, row, now_us, subject.as_deref()).await?;
    let mut effects = vec![effect];
    effects.extend(notices);
    let record = AuditRecord {
        request_id: rid,
        actor_party: Some(principal.party.to_string()),
        actor_user: principal.user.clone(),
        subject,
        consent_id: Some(id.clone()),
        reason: Some("withdrawn by the participant".into()),
        ..AuditRecord::new(Action::ConsentRevoked, Decision::Permit)
    };
    match state.audit.append(record, effects).await {
        Ok(_) => {
            state.consent_cache.invalidate(&row.subject);
            if notice_count > 0 {
                state.outbox_notify.notify_one();
            }
            // Deliveries that completed after the notices were built.
            if let Err(e) = super::notices::sweep(state, &id).await {
                tracing::warn!(consent.id = %id, error = %e, "revocation sweep failed; the outbox's housekeeping sweeps again");
            }
        }
        Err(crate::audit::log::AppendError::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(consent.id = %id, notices = notice_count, "consent revoked");
    Ok(())
}
