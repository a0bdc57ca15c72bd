//! A participant's register extract (GDPR art. 15; DESIGN §6, §9
//! "Disclosures"): every exchange about them, from the audit log. The
//! request is itself audited (action `disclosure`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::api::{log_query, personnummer};
use super::record::{action, AuditRecord};
use crate::auth::Principal;
use crate::config::Role;
use crate::error::{ApiError, ApiResult};
use crate::http::{JsonBody, RequestId};
use crate::state::AppState;

/// The actions that are disclosures (or refused disclosures) of data.
pub const EXCHANGE_ACTIONS: [&str; 7] = [
    action::EXCHANGE_FORWARDED,
    action::EXCHANGE_DENIED,
    action::EXCHANGE_DELIVERED,
    action::EXCHANGE_FAILED,
    action::REPLY_FORWARDED,
    action::REPLY_WITHHELD,
    action::REVOCATION_NOTIFIED,
];

/// `POST /v1/disclosures` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureRequest {
    personnummer: String,
}

/// One line of the extract. `action` and `withheld` go beyond the fields
/// DESIGN §9 lists: they tell forwarding from delivery and what was kept back.
fn entry(r: &AuditRecord) -> Value {
    serde_json::json!({
        "exchange_id": r.exchange_id,
        "time": r.time,
        "from": r.from,
        "to": r.to,
        "type": r.msg_type,
        "purpose": r.purpose,
        "forwarded": r.forwarded,
        "withheld": r.withheld,
        "consent_id": r.consent_id,
        "decision": r.decision,
        "action": r.action,
    })
}

/// `POST /v1/disclosures` (role intake): `{subject, disclosures}`, newest first.
pub async fn disclosures(
    State(state): State<AppState>,
    principal: Principal,
    rid: Option<Extension<RequestId>>,
    body: JsonBody<DisclosureRequest>,
) -> ApiResult<Response> {
    principal.require(Role::Intake)?;
    let pnr = personnummer(&state, &body.value.personnummer)?;
    let subject = state.crypto.audit_pseudonym(&pnr);
    let marks: Vec<String> = (0..EXCHANGE_ACTIONS.len())
        .map(|i| format!("${}", i + 2))
        .collect();
    let sql = format!(
        "SELECT leaf FROM audit_records WHERE subject = $1 AND action IN ({}) ORDER BY seq DESC",
        marks.join(", ")
    );
    let mut q = sqlx::query_scalar::<_, Vec<u8>>(&sql).bind(subject.clone());
    for a in EXCHANGE_ACTIONS {
        q = q.bind(a);
    }
    let leaves = q.fetch_all(state.store.pool()).await?;
    let mut out = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let record = AuditRecord::from_leaf(&leaf)
            .map_err(|_| ApiError::internal("a stored audit leaf does not parse"))?;
        out.push(entry(&record));
    }
    log_query(
        &state,
        &principal,
        rid,
        action::DISCLOSURE,
        format!("register extract, {} entries", out.len()),
        Some(subject.clone()),
    )
    .await?;
    Ok(Json(serde_json::json!({ "subject": subject, "disclosures": out })).into_response())
}
