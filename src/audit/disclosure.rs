//! A participant's register extract (GDPR art. 15; DESIGN §6, §9
//! "Disclosures"): every exchange about them, from the audit log. The
//! request is itself audited (action `disclosure`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::access::log_query;
use super::api::personnummer;
use super::record::{Action, AuditRecord};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{JsonBody, RequestId};
use crate::party::Role;
use crate::state::AppState;

/// The actions that are disclosures (or refused disclosures) of data.
pub const EXCHANGE_ACTIONS: [Action; 7] = [
    Action::ExchangeForwarded,
    Action::ExchangeDenied,
    Action::ExchangeDelivered,
    Action::ExchangeFailed,
    Action::ReplyForwarded,
    Action::ReplyWithheld,
    Action::RevocationNotified,
];

/// `POST /v1/disclosures` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureRequest {
    personnummer: String,
    /// Add leaves, inclusion proofs and the cosigned checkpoint (DESIGN §12).
    #[serde(default)]
    proofs: bool,
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

/// The actions of the message from the sender to the recipient (the
/// others are the recipient's reply).
const FORWARD_ACTIONS: [Action; 4] = [
    Action::ExchangeForwarded,
    Action::ExchangeDenied,
    Action::ExchangeDelivered,
    Action::ExchangeFailed,
];

/// One item per exchange, its latest decision (DESIGN §10), from records
/// newest first. An item is built from the exchange's latest record of the
/// message itself (forwarded, denied, delivered, failed); its fields
/// `forwarded` and `withheld` are those decided when it was forwarded (the
/// outcome records repeat them). A reply the recipient sent back under the
/// exchange is part of the same item, as `reply` (`{time, from, to, type,
/// forwarded, withheld, decision, action}`), not an item of its own.
fn one_per_exchange(records: &[AuditRecord]) -> Vec<Value> {
    let mut order: Vec<String> = Vec::new();
    let mut items: std::collections::HashMap<String, (Option<Value>, Option<Value>)> =
        std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        // A record without an exchange id is an item of its own.
        let key = r.exchange_id.clone().unwrap_or_else(|| format!("\0{i}"));
        let slot = items.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (None, None)
        });
        if FORWARD_ACTIONS.contains(&r.action) {
            if slot.0.is_none() {
                slot.0 = Some(entry(r));
            }
        } else if slot.1.is_none() {
            slot.1 = Some(serde_json::json!({
                "time": r.time,
                "from": r.from,
                "to": r.to,
                "type": r.msg_type,
                "forwarded": r.forwarded,
                "withheld": r.withheld,
                "decision": r.decision,
                "action": r.action,
            }));
        }
    }
    let mut out: Vec<Value> = order
        .into_iter()
        .filter_map(|key| {
            let (item, reply) = items.remove(&key)?;
            let mut item = item.or_else(|| reply.clone())?;
            if let (Some(reply), Some(obj)) = (reply, item.as_object_mut()) {
                if obj.get("action") != reply.get("action") {
                    obj.insert("reply".into(), reply);
                }
            }
            Some(item)
        })
        .collect();
    // Newest first by the item's own time (RFC 3339 UTC sorts as text).
    out.sort_by(|a, b| {
        let t = |v: &Value| {
            v.get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        t(b).cmp(&t(a))
    });
    out
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
    let subject = state
        .crypto
        .audit_pseudonym(&pnr)
        .map_err(ApiError::internal)?;
    let marks: Vec<String> = (0..EXCHANGE_ACTIONS.len())
        .map(|i| format!("${}", i + 2))
        .collect();
    let sql = format!(
        "SELECT leaf FROM audit_records WHERE subject = $1 AND action IN ({}) ORDER BY seq DESC",
        marks.join(", ")
    );
    let mut q = sqlx::query_scalar::<_, Vec<u8>>(&sql).bind(subject.as_str().to_owned());
    for a in EXCHANGE_ACTIONS {
        q = q.bind(a.as_str());
    }
    let leaves = q.fetch_all(state.store.pool()).await?;
    let mut records = Vec::with_capacity(leaves.len());
    for leaf in &leaves {
        records.push(
            AuditRecord::from_leaf(leaf)
                .map_err(|_| ApiError::internal("a stored audit leaf does not parse"))?,
        );
    }
    let mut out = one_per_exchange(&records);
    if body.value.proofs {
        super::disclosure_proofs::attach(&state, &mut out, &leaves).await?;
    }
    log_query(
        &state,
        &principal,
        rid,
        Action::Disclosure,
        format!("register extract, {} entries", out.len()),
        Some(&subject),
    )
    .await?;
    Ok(Json(serde_json::json!({ "subject": subject, "disclosures": out })).into_response())
}
