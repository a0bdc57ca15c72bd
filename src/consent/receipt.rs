//! `GET /v1/consents/{id}/receipt` (role intake, DESIGN §13): the consent
//! as a record after ISO/IEC TS 27560:2023, with the W3C DPV terms that
//! the DPV guide to 27560 maps its fields to. docs/consent.md documents
//! every field against both.
//!
//! The receipt is derived from the stored consent at the time of the
//! request; it holds no personal data beyond what the summary holds (the
//! subject is the `consent`-domain pseudonym), and for a protected
//! identity nothing of the `contact` category.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::lifecycle::FOLLOW_UP_PURPOSE;
use super::model::{ConsentRow, ConsentState};
use crate::auth::Principal;
use crate::clock::rfc3339_us;
use crate::config::Config;
use crate::error::ApiResult;
use crate::party::Role;
use crate::schema::Category;
use crate::state::AppState;

/// `schema_version` of the receipt (27560 "schema version").
pub const SCHEMA_VERSION: &str = "samgate-consent-receipt/1";
/// The profile the receipt follows.
pub const CONFORMS_TO: &str = "https://w3id.org/dpv/schema/dpv-27560#receipt-full";

/// `GET /v1/consents/{id}/receipt`.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    principal.require(Role::Intake)?;
    let row = super::api::opened(&state, &id).await?;
    let now = state.clock.now_us();
    Ok(Json(receipt(&state.config, &row, now)).into_response())
}

/// The DPV consent status of a samgate state.
pub fn dpv_status(s: ConsentState) -> &'static str {
    match s {
        ConsentState::Active | ConsentState::Closed | ConsentState::NotYetValid => {
            "dpv:ConsentGiven"
        }
        ConsentState::Revoked => "dpv:ConsentWithdrawn",
        ConsentState::Expired => "dpv:ConsentExpired",
    }
}

fn event_status(event: &str) -> &'static str {
    match event {
        "revoked" => "dpv:ConsentWithdrawn",
        "expired" => "dpv:ConsentExpired",
        _ => "dpv:ConsentGiven",
    }
}

/// The receipt of `row` at `now_us`.
/// Long: one receipt document; most of its length is the JSON literal in the
/// receipt's field order.
pub fn receipt(config: &Config, row: &ConsentRow, now_us: i64) -> Value {
    let state = row.state(now_us);
    let party = |id: &String| {
        let p = config.party(id);
        json!({
            "party_id": id,
            "party_name": p.map(|p| p.name.clone()),
            "party_type": p.and_then(|p| serde_json::to_value(p.kind).ok()),
            "party_role": "dpv:JointDataControllers",
        })
    };
    let controllers: Vec<Value> = row.parties.iter().map(party).collect();
    let purposes: Vec<Value> = row
        .purposes
        .iter()
        .map(|p| {
            let in_force = state.usable() && (row.closure.is_none() || p == FOLLOW_UP_PURPOSE);
            let mut v = json!({"purpose": p, "in_force": in_force});
            if row.closure.is_some() && p != FOLLOW_UP_PURPOSE {
                if let Some(o) = v.as_object_mut() {
                    o.insert("ended_by".into(), json!("closure"));
                }
            }
            v
        })
        .collect();
    // Nothing of the contact category for a protected identity (DESIGN §13;
    // the caller gives the row its subject's marking).
    let categories: Vec<Value> = row
        .shown_categories()
        .map(|c| {
            let special = c == Category::Health.as_str();
            json!({"pii_type": c, "special_category": special})
        })
        .collect();
    let history: Vec<Value> = row
        .history(now_us)
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("event_state".into(), json!(event_status(e.event)));
            }
            v
        })
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "conforms_to": CONFORMS_TO,
        "receipt_id": uuid::Uuid::new_v4().to_string(),
        "receipt_time": rfc3339_us(now_us),
        "record_id": row.id,
        "consent_id": row.id,
        "subject": row.subject,
        "language": "sv",
        "controllers": controllers,
        "recipients": row.parties,
        "purposes": purposes,
        "data_categories": categories,
        "legal_basis": {
            "dpv": "dpv:ExplicitlyExpressedConsent",
            "description": "the participant's consent, which lifts the agencies' secrecy towards each other \
                (offentlighets- och sekretesslagen (2009:400) 12 kap. 2 §) for cooperation under \
                lag (2003:1210) om finansiell samordning av rehabiliteringsinsatser",
        },
        "method": row.method,
        "given_by": row.given_by_json().map(|mut g| {
            if let Some(o) = g.as_object_mut() {
                o.insert("dpv".into(), json!("dpv:Representative"));
            }
            g
        }),
        "recorded_by": row.recorded_by,
        "issuer": row.issuer,
        "protected_identity": row.protected_identity,
        "validity": {
            "not_before": rfc3339_us(row.not_before_us),
            "expires_at": rfc3339_us(row.expires_at_us),
            "valid_until": rfc3339_us(row.valid_until_us()),
        },
        "state": state.as_str(),
        "consent_status": dpv_status(state),
        "withdrawal_method": "ask the intake (remissgrupp) that recorded the consent; it revokes it with \
            POST /v1/consents/{id}/revocation, effective for every exchange that starts after that",
        "history": history,
    })
}
