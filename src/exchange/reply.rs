//! Replies (DESIGN §9 "Replies"): a recipient's 2xx JSON reply
//! `{"type": T, "payload": {...}}` is a message of type T from the recipient
//! back to the sender, validated and filtered through the route
//! `from = recipient, to = sender, type = T` under the same consent, and
//! audited. With no such route (or an invalid reply) it is withheld.
//!
//! An identifier field in a reply may carry the recipient's own pseudonym.
//! It is resolved to the personnummer through the vault only when the
//! reverse route reveals the subject, and that re-identification is itself
//! an audit record (`reidentified`, appended by [`crate::subject::reidentify`]
//! when the number is opened); otherwise the field is removed.

use serde::Deserialize;
use serde_json::{json, Value};

use super::deliver::Delivered;
use super::ExchangeCtx;
use crate::audit::record::{Action, AuditRecord, Decision};
use crate::consent::model::ConsentRow;
use crate::error::ApiError;
use crate::party::PartyId;
use crate::policy::route::ConsentRequirement;
use crate::policy::{self, FilterInput, SubjectMode};
use crate::state::AppState;
use crate::subject::personnummer::Personnummer;
use crate::subject::pseudonym::{Party, Pseudonym};
use crate::subject::Subject;

/// The `reason` of a reply withheld because its `type` is no message type.
pub const UNKNOWN_TYPE: &str = "unknown_type";

#[derive(Deserialize)]
struct ReplyMessage {
    #[serde(rename = "type")]
    msg_type: String,
    payload: Value,
}

/// Processes a delivery's reply: `(reply, reply_withheld)`.
pub async fn process(
    state: &AppState,
    ctx: &ExchangeCtx,
    recipient: &PartyId,
    purpose: &str,
    consent: Option<&ConsentRow>,
    subject: Option<&Subject>,
    delivered: &Delivered,
) -> Result<(Value, bool), ApiError> {
    if delivered.body.iter().all(u8::is_ascii_whitespace) || !delivered.json {
        return Ok((Value::Null, false));
    }
    let Ok(reply) = serde_json::from_slice::<ReplyMessage>(&delivered.body) else {
        return Ok((Value::Null, false));
    };
    let sender = ctx.principal.party.clone();
    let today = state.clock.now().date();
    let mut record = reply_record(ctx, recipient);
    // The type is the recipient's text: it enters the record (and the
    // permanent log) only once it is known to be a message type (DESIGN §10).
    let Some(schema) = state.schemas.get(&reply.msg_type) else {
        return withhold(state, record, UNKNOWN_TYPE).await;
    };
    record.msg_type = Some(reply.msg_type.clone());
    // The reverse route must list the forward exchange's purpose (DESIGN §10).
    let route = crate::policy::route::find(
        &state.live().config.routes,
        recipient,
        &sender,
        &reply.msg_type,
        purpose,
    );
    let Some(route) = route else {
        return withhold(state, record, "no reverse route").await;
    };
    // Identifier fields first: a reply may carry the recipient's pseudonym
    // where the schema expects a personnummer.
    let mut payload = reply.payload;
    resolve_identifiers(
        state,
        ctx,
        schema,
        recipient,
        route.subject,
        subject,
        &mut payload,
    )
    .await?;
    if schema.validate(&payload).is_err() {
        return withhold(state, record, "schema_violation").await;
    }
    let consent_ok = match route.consent {
        ConsentRequirement::NotRequired => true,
        ConsentRequirement::Required => {
            consent.is_some_and(|c| c.covers(recipient, &sender, purpose))
        }
    };
    if !consent_ok {
        return withhold(state, record, "consent_scope").await;
    }
    let categories = consent.map(ConsentRow::category_set);
    let mut ident =
        |p: &Personnummer| crate::subject::recipient_form(&state.crypto, route.subject, &sender, p);
    let mut filtered = match policy::filter(
        FilterInput {
            schema,
            payload: &payload,
            allow: &route.fields,
            consent_categories: categories.as_ref(),
            today,
        },
        &mut ident,
    ) {
        Ok(f) => f,
        Err(e) => return withhold(state, record, ApiError::from(e).code.as_str()).await,
    };
    let numbers_withheld = route.subject != SubjectMode::Reveal
        && super::numbers::withhold_numbers(schema, &mut filtered, today);
    forward(state, record, &reply.msg_type, filtered, numbers_withheld).await
}

/// The record of a reply: from the recipient back to the sender, acted by
/// the recipient; withheld until [`forward`] says otherwise.
fn reply_record(ctx: &ExchangeCtx, recipient: &PartyId) -> AuditRecord {
    let mut record = ctx.record(Action::ReplyWithheld, Decision::Deny);
    record.from = Some(recipient.to_string());
    record.to = Some(ctx.principal.party.to_string());
    record.msg_type = None;
    record.actor_party = Some(recipient.to_string());
    record.actor_user = None;
    record.forwarded = Vec::new();
    record.withheld = Vec::new();
    record
}

/// Records the forwarded reply (`reply-forwarded`) and answers with it.
async fn forward(
    state: &AppState,
    record: AuditRecord,
    msg_type: &str,
    filtered: policy::Filtered,
    numbers_withheld: bool,
) -> Result<(Value, bool), ApiError> {
    let mut ok = record;
    ok.action = Action::ReplyForwarded;
    ok.decision = Decision::Permit;
    ok.forwarded = filtered.forwarded.clone();
    ok.withheld = filtered.withheld.clone();
    if numbers_withheld {
        ok.reason = Some(super::numbers::REASON.to_owned());
    }
    state.audit.append(ok, Vec::new()).await?;
    Ok((
        json!({
            "type": msg_type,
            "payload": filtered.payload,
            "forwarded": filtered.forwarded,
            "withheld": filtered.withheld,
        }),
        false,
    ))
}

/// Records a withheld reply (`reply-withheld`, with its reason) and answers
/// that the reply was withheld.
async fn withhold(
    state: &AppState,
    mut record: AuditRecord,
    reason: impl Into<String>,
) -> Result<(Value, bool), ApiError> {
    record.reason = Some(reason.into());
    state.audit.append(record, Vec::new()).await?;
    Ok((Value::Null, true))
}

/// Identifier fields of a reply may only name the exchange's own subject:
/// either as the recipient's pseudonym of that subject (resolved through the
/// vault only when the route reveals, by [`crate::subject::reidentify`],
/// which appends the `reidentified` record) or as the subject's
/// personnummer. Any other value — another person's pseudonym or number —
/// is removed, so a reply can never re-identify or introduce a participant
/// whose consent was not checked for this exchange.
async fn resolve_identifiers(
    state: &AppState,
    ctx: &ExchangeCtx,
    schema: &crate::schema::MessageSchema,
    recipient: &PartyId,
    mode: SubjectMode,
    subject: Option<&Subject>,
    payload: &mut Value,
) -> Result<(), ApiError> {
    let Some(obj) = payload.as_object_mut() else {
        return Ok(());
    };
    let expected = subject.and_then(Subject::recipient_pseudonym);
    let today = state.clock.now().date();
    let names: Vec<String> = obj.keys().cloned().collect();
    for name in names {
        let pointer = crate::schema::field_pointer(&name);
        if !schema.field(&pointer).is_some_and(|f| f.identifier) {
            continue;
        }
        let value = obj.get(&name).and_then(Value::as_str).unwrap_or("");
        let own_number =
            subject.is_some_and(|s| Personnummer::parse_at(value, today).is_ok_and(|v| s.is(&v)));
        if own_number {
            continue;
        }
        let own_pseudonym = Pseudonym::<Party>::parse(value)
            .ok()
            .filter(|ps| expected == Some(ps));
        let resolved = match (own_pseudonym, mode) {
            (Some(ps), SubjectMode::Reveal) => {
                let mut r = ctx.record(Action::Reidentified, Decision::Permit);
                r.actor_party = Some(recipient.to_string());
                r.actor_user = None;
                r.reason = Some(format!(
                    "reply field {pointer} resolved for {}",
                    ctx.principal.party
                ));
                r.forwarded = vec![pointer.clone()];
                r.withheld = Vec::new();
                let row = crate::subject::vault::Row::Party(recipient.as_str(), &ps);
                crate::subject::reidentify(state, row, r).await?
            }
            _ => None,
        };
        match resolved {
            Some(p) => {
                obj.insert(name, Value::String(p.expose().to_owned()));
            }
            None => {
                obj.remove(&name);
            }
        }
    }
    Ok(())
}
