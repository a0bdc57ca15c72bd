//! Queued messages obey the consent at delivery (DESIGN §10): before every
//! delivery attempt of an async exchange, `[delivery] expire_after` is
//! enforced and the consent is checked again, as at exchange time. A
//! failing check ends the exchange without delivery: status `expired`, or
//! `failed` with `last_error` `consent_revoked`, `consent_expired` or
//! `consent_scope`; with an `exchange-failed` record carrying that reason,
//! committed in the transaction that removes the outbox row.
//!
//! # Decisions
//!
//! - The check is of the consent the exchange was decided under (its
//!   `consent_id`), through the same [`model::decide`] as at exchange time:
//!   revoked → `consent_revoked`; expired or not yet valid →
//!   `consent_expired`; no longer naming both parties and the purpose, or
//!   no longer covering a forwarded field's category → `consent_scope`.
//!   The protected-identity marking is read from every consent of the
//!   subject, as at exchange time: a participant marked protected while a
//!   message with a `contact` field waited makes that message
//!   `consent_scope` too (its body was built before the marking).
//! - The route is looked up again too: a route removed from the
//!   configuration while the message waited ends it as `route_not_allowed`
//!   (no route, no exchange, DESIGN §4). A missing consent row ends it as
//!   `consent_missing`: fail closed. An outbox row without an exchange row,
//!   or a §13 `consent-revoked` notice, is not held to a consent.
//! - If the check itself cannot be made (storage error), nothing is sent;
//!   the claim runs out and the next attempt checks again.

use crate::audit::record::{Action, AuditRecord, Decision};
use crate::consent::model;
use crate::error::ProblemCode;
use crate::party::PartyId;
use crate::policy::route::ConsentRequirement;
use crate::state::AppState;
use crate::store::Stmt;

/// The message type of the §13 revocation notice, which is sent because
/// the consent was withdrawn and so is not held to it.
pub const REVOCATION_NOTICE_TYPE: &str = crate::consent::lifecycle::NOTICE_TYPE;

/// What the check before an attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead and deliver.
    Deliver,
    /// Past `expire_after`: status `expired`.
    Expired,
    /// The consent (or route) no longer allows it: status `failed`.
    Refused(ProblemCode),
}

/// The check before a delivery attempt of `exchange_id`.
pub async fn before_attempt(
    state: &AppState,
    exchange_id: &str,
    expires_at_us: i64,
) -> Result<Verdict, sqlx::Error> {
    let now = state.clock.now_us();
    if now >= expires_at_us {
        return Ok(Verdict::Expired);
    }
    type Row = (String, String, String, String, Option<String>, String);
    let row: Option<Row> = sqlx::query_as(
        "SELECT sender, recipient, msg_type, purpose, consent_id, forwarded FROM exchanges WHERE id = $1",
    )
    .bind(exchange_id.to_owned())
    .fetch_optional(state.store.pool())
    .await?;
    // An outbox row without an exchange row is no exchange under a consent
    // (e.g. a §13 revocation notice): there is nothing to check it against.
    let Some((sender, recipient, msg_type, purpose, consent_id, forwarded)) = row else {
        return Ok(Verdict::Deliver);
    };
    // The notice that a consent was withdrawn must reach those who hold
    // data under it (DESIGN §13), precisely because the consent is revoked.
    if msg_type == REVOCATION_NOTICE_TYPE {
        return Ok(Verdict::Deliver);
    }
    let (from, to) = (PartyId::new(sender), PartyId::new(recipient));
    let Some(route) =
        crate::policy::route::find(&state.live().config.routes, &from, &to, &msg_type, &purpose)
    else {
        return Ok(Verdict::Refused(ProblemCode::RouteNotAllowed));
    };
    if route.consent == ConsentRequirement::NotRequired {
        return Ok(Verdict::Deliver);
    }
    let Some(consent_id) = consent_id else {
        return Ok(Verdict::Refused(ProblemCode::ConsentMissing));
    };
    let Some(consent) = consent_now(state, &consent_id).await? else {
        return Ok(Verdict::Refused(ProblemCode::ConsentMissing));
    };
    let consent = match model::decide_message(
        &[consent],
        &from,
        &to,
        Some(msg_type.as_str()),
        &purpose,
        now,
    ) {
        Ok(c) => c,
        Err(denial) => return Ok(Verdict::Refused(ProblemCode::from(denial))),
    };
    if !crate::consent::lifecycle::closure_allowed(
        &state.store,
        &consent,
        &msg_type,
        &purpose,
        to.as_str(),
    )
    .await?
    {
        return Ok(Verdict::Refused(ProblemCode::ConsentScope));
    }
    if !covers_forwarded(state, &consent, &msg_type, &forwarded) {
        return Ok(Verdict::Refused(ProblemCode::ConsentScope));
    }
    Ok(Verdict::Deliver)
}

/// The consent row as it stands now, with the subject's protected-identity
/// marking; `None` if the row is gone.
async fn consent_now(
    state: &AppState,
    consent_id: &str,
) -> Result<Option<model::ConsentRow>, sqlx::Error> {
    let Some(mut consent) = model::fetch(&state.store, consent_id).await? else {
        return Ok(None);
    };
    // The protected-identity marking is a property of the person, on any
    // of their consents (DESIGN §13): a marking recorded while the message
    // waited takes `contact` out of what may leave.
    if !consent.protected_identity {
        consent.protected_identity = model::for_subject(&state.store, &consent.subject)
            .await?
            .iter()
            .any(|c| c.protected_identity);
    }
    Ok(Some(consent))
}

/// Whether the consent still covers the category of every field the
/// exchange forwarded (`forwarded` is the stored JSON list of pointers). A
/// field the schema no longer knows is not covered.
fn covers_forwarded(
    state: &AppState,
    consent: &model::ConsentRow,
    msg_type: &str,
    forwarded: &str,
) -> bool {
    let categories = consent.category_set();
    let forwarded: Vec<String> = serde_json::from_str(forwarded).unwrap_or_default();
    let schema = state.schemas.get(msg_type);
    !forwarded.iter().any(|pointer| {
        schema
            .and_then(|s| s.field(pointer))
            .is_none_or(|f| !categories.contains(&f.category))
    })
}

/// Ends a queued exchange that the check refused: removes its outbox row
/// (only while this instance holds the claim), sets the status and records
/// `exchange-failed` with the reason, in one transaction. `record` is the
/// exchange's base record (parties, type, purpose, consent, subject).
pub async fn end(state: &AppState, exchange_id: &str, verdict: Verdict, mut record: AuditRecord) {
    let (status, reason) = match verdict {
        Verdict::Deliver => return,
        Verdict::Expired => ("expired", "expired"),
        Verdict::Refused(code) => ("failed", code.as_str()),
    };
    record.action = Action::ExchangeFailed;
    record.decision = if verdict == Verdict::Expired {
        Decision::Expired
    } else {
        Decision::Failed
    };
    record.reason = Some(reason.to_owned());
    let effects = vec![
        super::store::outbox_release(state, exchange_id),
        Stmt::new("UPDATE exchanges SET status = $1, last_error = $2 WHERE id = $3")
            .text(status)
            .text(reason)
            .text(exchange_id.to_owned()),
    ];
    match state.audit.append(record, effects).await {
        Ok(_) => {
            tracing::info!(exchange.id = %exchange_id, status, reason, "queued exchange ended before delivery");
            metrics::counter!("samgate_exchanges_total", "outcome" => status, "reason" => reason)
                .increment(1);
        }
        Err(e) => {
            tracing::warn!(exchange.id = %exchange_id, error = %e, "could not end the queued exchange; the claim will run out and it is checked again");
        }
    }
}
