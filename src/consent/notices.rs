//! Revocation notices (DESIGN §13): when a consent is revoked, every party
//! that received data under it is told, through the outbox, in a message of
//! type `consent-revoked` signed like any delivery (`Samgate-Signature`).
//!
//! The notices are built in the revocation's own transaction: an
//! `exchanges` row (sender `samgate`, status `queued`) and a sealed outbox
//! row per notice, committed with the `consent-revoked` audit record, so
//! nothing leaves without a committed record and a revocation can never
//! commit without its notices. The outbox delivers them like any async
//! exchange (retries with backoff until `[delivery] expire_after`); a
//! delivered notice is an audit record `revocation-notified`.
//!
//! # Who gets what
//!
//! - A party *received data* under the consent if an exchange under it was
//!   delivered to it (status `delivered`, or `forwarded`: a sync delivery
//!   in flight when the revocation came), or if the gateway passed it a
//!   reply (`reply-forwarded`) as the sender of an exchange under it.
//! - The notice names `consent_id` and `subject` in the form the party
//!   received them (the route's subject mode, stored per exchange): the
//!   consent id and `{"personnummer"}` on `reveal`, the party's `pc1_`
//!   reference and `{"pseudonym"}` on `pseudonymise`, the `pc1_` reference
//!   and `null` on `omit`. A party that received data in more than one
//!   form gets one notice per form, each naming only the exchanges it
//!   received in that form: one notice naming both would join what §10
//!   keeps apart.
//! - A sender that got a reply supplied the personnummer itself, so its
//!   notice uses the `reveal` form.
//!
//! Body: `{exchange_id, from: "samgate", to, type: "consent-revoked",
//! consent_id, subject, revoked_at, exchange_ids}`, where `exchange_id` is
//! the notice's own delivery id (also in `Samgate-Exchange-Id`; recipients
//! de-duplicate on it) and `exchange_ids` the sorted ids of the exchanges
//! the party received.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::lifecycle::{self, mode_name, parse_mode, NOTICE_SENDER, NOTICE_TYPE};
use super::model::ConsentRow;
use crate::audit::record::action;
use crate::error::ApiError;
use crate::policy::SubjectMode;
use crate::state::AppState;
use crate::store::Stmt;
use crate::subject::personnummer::Personnummer;
use crate::subject::pseudonym::{Pseudonym, DOMAIN_CONSENT};
use crate::subject::vault::Sealed;

/// The notices for a consent revoked at `revoked_at_us`: the statements to
/// commit with the revocation, and how many notices they queue.
pub async fn notice_stmts(
    state: &AppState,
    row: &ConsentRow,
    revoked_at_us: i64,
    audit_subject: Option<&str>,
) -> Result<(Vec<Stmt>, usize), ApiError> {
    let groups = recipients(state, &row.id).await?;
    if groups.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let needs_number = groups
        .keys()
        .any(|(_, m)| *m != mode_name(SubjectMode::Omit));
    let subject = if needs_number {
        subject_of(state, row).await?
    } else {
        None
    };
    let mut stmts = Vec::new();
    let mut count = 0;
    for ((party, mode), exchange_ids) in groups {
        let mode = parse_mode(Some(mode));
        let Some(endpoint) = state.config.party(&party).and_then(|p| p.endpoint.clone()) else {
            tracing::warn!(consent.id = %row.id, party = %party, "no endpoint for a revocation notice");
            continue;
        };
        let subject_json = match (mode, &subject) {
            (SubjectMode::Reveal, Some(p)) => json!({"personnummer": p.expose()}),
            (SubjectMode::Pseudonymise, Some(p)) => match state.crypto.pseudonym(&party, p) {
                Some(ps) => json!({"pseudonym": ps.as_str()}),
                None => Value::Null,
            },
            _ => Value::Null,
        };
        let notice_id = uuid::Uuid::now_v7().to_string();
        let body = json!({
            "exchange_id": notice_id,
            "from": NOTICE_SENDER,
            "to": party,
            "type": NOTICE_TYPE,
            "consent_id": lifecycle::recipient_consent_id(&state.crypto, mode, &party, &row.id),
            "subject": subject_json,
            "revoked_at": crate::clock::rfc3339_us(revoked_at_us),
            "exchange_ids": exchange_ids,
        });
        let bytes = serde_json::to_vec(&body).map_err(ApiError::internal)?;
        stmts.push(
            Stmt::new(
                "INSERT INTO exchanges (id, sender, recipient, msg_type, purpose, delivery, status, attempts, \
                 consent_id, subject, forwarded, withheld, created_at_us, subject_mode) \
                 VALUES ($1, $2, $3, $4, '', 'async', 'queued', 0, $5, $6, '[]', '[]', $7, $8)",
            )
            .text(notice_id.clone())
            .text(NOTICE_SENDER)
            .text(party.clone())
            .text(NOTICE_TYPE)
            .text(row.id.clone())
            .opt_text(audit_subject.map(str::to_owned))
            .int(state.clock.now_us())
            .text(mode_name(mode)),
        );
        stmts.push(crate::exchange::outbox::insert_stmt(
            state, &notice_id, &endpoint, &bytes,
        )?);
        count += 1;
    }
    Ok((stmts, count))
}

/// (party, form) → the exchanges it received under the consent.
async fn recipients(
    state: &AppState,
    consent_id: &str,
) -> Result<BTreeMap<(String, &'static str), BTreeSet<String>>, ApiError> {
    let delivered: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, recipient, subject_mode FROM exchanges \
         WHERE consent_id = $1 AND status IN ('delivered', 'forwarded') AND msg_type <> $2",
    )
    .bind(consent_id.to_owned())
    .bind(NOTICE_TYPE)
    .fetch_all(state.store.pool())
    .await?;
    let replies: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT exchange_id, to_party FROM audit_records WHERE consent_id = $1 AND action = $2",
    )
    .bind(consent_id.to_owned())
    .bind(action::REPLY_FORWARDED)
    .fetch_all(state.store.pool())
    .await?;
    let mut groups: BTreeMap<(String, &'static str), BTreeSet<String>> = BTreeMap::new();
    for (id, recipient, mode) in delivered {
        groups
            .entry((recipient, mode_name(parse_mode(mode.as_deref()))))
            .or_default()
            .insert(id);
    }
    for (id, sender) in replies {
        if let (Some(id), Some(sender)) = (id, sender) {
            groups
                .entry((sender, mode_name(SubjectMode::Reveal)))
                .or_default()
                .insert(id);
        }
    }
    Ok(groups)
}

/// The participant's personnummer, from the consent-domain vault row that
/// was written when the consent was recorded.
async fn subject_of(state: &AppState, row: &ConsentRow) -> Result<Option<Personnummer>, ApiError> {
    let Ok(ps) = Pseudonym::parse(&row.subject) else {
        return Ok(None);
    };
    let found: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, nonce, ciphertext FROM vault WHERE domain = $1 AND pseudonym = $2",
    )
    .bind(DOMAIN_CONSENT)
    .bind(ps.as_str().to_owned())
    .fetch_optional(state.store.pool())
    .await?;
    let Some((key_id, nonce, ciphertext)) = found else {
        return Ok(None);
    };
    let Ok(nonce) = <[u8; 12]>::try_from(nonce.as_slice()) else {
        return Ok(None);
    };
    let sealed = Sealed {
        key_id,
        nonce,
        ciphertext,
    };
    Ok(state.crypto.vault.open(DOMAIN_CONSENT, &ps, &sealed).ok())
}
