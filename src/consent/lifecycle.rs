//! The consent lifecycle (DESIGN §13): a representative who gave the
//! consent, the protected-identity marking, closure and follow-up, the
//! history of a consent, and the per-recipient form of its id.
//!
//! # Decisions (docs/consent.md has the full list)
//!
//! - **Closure date.** A consent is closed by the *delivery* of a `closure`
//!   exchange sent under it (sync: when the recipient accepted it; async:
//!   when the outbox delivered it), at the gateway's clock, not by the
//!   payload's `closure_date`: the sender chooses the payload, and a date in
//!   the future would stretch the follow-up period. The follow-up period
//!   ends `[consent] follow_up_months` calendar months later (same time of
//!   day; the 31st becomes the last day of a shorter month), and never
//!   after the consent's own `exp`.
//! - **What a closure limits.** Only the consent the closure was sent under
//!   (its `consent_id`), and only the first closure counts. After it, the
//!   consent covers purpose `uppfoljning` and, so that every receiving
//!   party can be told of the closure, further `closure` messages under its
//!   original purposes; anything else is `consent_scope`.
//! - **Protected identity** is a property of the person: once any consent
//!   recorded for the subject carries the marking, category `contact` is
//!   never forwarded for that subject, on any route, in any direction.

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339_us;
use crate::crypto::Crypto;
use crate::policy::SubjectMode;
use crate::store::Stmt;

/// The representative roles of `given_by.role` (DESIGN §13): vårdnadshavare,
/// god man, förvaltare, fullmakt.
pub const ROLES: &[&str] = &["guardian", "god-man", "forvaltare", "fullmakt"];

/// The purpose a closed consent still covers.
pub const FOLLOW_UP_PURPOSE: &str = "uppfoljning";
/// The message type whose delivery closes a consent.
pub const CLOSURE_TYPE: &str = "closure";
/// The type of the revocation notices the gateway itself sends.
pub const NOTICE_TYPE: &str = "consent-revoked";
/// The sender recorded for revocation notices (not a party: the gateway).
pub const NOTICE_SENDER: &str = "samgate";

/// Who gave the consent for the participant (also the `given_by` claim,
/// which holds nothing else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenBy {
    /// One of [`ROLES`].
    pub role: String,
    /// The representative's name.
    pub name: String,
}

/// The vault AAD of a consent's sealed `given_by.name`.
pub fn given_by_aad(consent_id: &str) -> Vec<u8> {
    let mut aad = b"consent-given-by\0".to_vec();
    aad.extend_from_slice(consent_id.as_bytes());
    aad
}

/// Whether an outbox delivery is a revocation notice (these are sent
/// *because* the consent is revoked, so no consent check applies to them).
pub fn is_notice(msg_type: Option<&str>) -> bool {
    msg_type == Some(NOTICE_TYPE)
}

/// The audit action of a successful outbox delivery of `msg_type`.
pub fn delivered_action(msg_type: Option<&str>) -> crate::audit::record::Action {
    if is_notice(msg_type) {
        crate::audit::record::Action::RevocationNotified
    } else {
        crate::audit::record::Action::ExchangeDelivered
    }
}

/// `us` plus `months` calendar months (UTC), the day clamped to the end of
/// a shorter month.
pub fn add_months(us: i64, months: u32) -> i64 {
    let t = crate::clock::from_us(us);
    let date = t.date();
    let total =
        i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1 + i64::from(months);
    let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
    let Ok(year) = i32::try_from(year) else {
        return i64::MAX;
    };
    let Ok(month) = u8::try_from(month0 + 1)
        .map_err(|_| ())
        .and_then(|m| time::Month::try_from(m).map_err(|_| ()))
    else {
        return i64::MAX;
    };
    let day = date.day().min(month.length(year));
    match time::Date::from_calendar_date(year, month, day) {
        Ok(d) => crate::clock::to_us(t.replace_date(d)),
        Err(_) => i64::MAX,
    }
}

/// The statement that closes the consent a delivered exchange was sent
/// under, if the exchange is a `closure` (DESIGN §13). Written in the same
/// transaction as the delivery's audit record, which is the audit record
/// of the transition. Only the first closure of a live consent counts.
pub fn closure_effect(
    now_us: i64,
    follow_up_months: u32,
    msg_type: Option<&str>,
    consent_id: Option<&str>,
    recipient: Option<&str>,
    exchange_id: &str,
) -> Vec<Stmt> {
    let (Some(CLOSURE_TYPE), Some(consent_id)) = (msg_type, consent_id) else {
        return Vec::new();
    };
    let now = now_us;
    let until = add_months(now, follow_up_months);
    let mut effects = vec![Stmt::new(
        "UPDATE consents SET closed_at_us = $1, follow_up_until_us = $2, closure_exchange_id = $3, \
         version = version + 1 WHERE id = $4 AND closed_at_us IS NULL AND revoked_at_us IS NULL",
    )
    .int(now)
    .int(until)
    .text(exchange_id)
    .text(consent_id)];
    if let Some(recipient) = recipient {
        // The party has been told of the closure (see [`closure_allowed`]).
        effects.push(
            Stmt::new(
                "INSERT INTO consent_closures (consent_id, party, exchange_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (consent_id, party) DO NOTHING",
            )
            .text(consent_id)
            .text(recipient)
            .text(exchange_id),
        );
    }
    effects
}

/// After a closure, a further `closure` under the consent may go only to a
/// party that no delivered closure has told yet (DESIGN §13: the exception
/// exists so that each receiving party can be told once, not to keep the
/// original purposes open to one party). Anything else passes, and so does
/// a closure under the follow-up purpose, which covers every type.
/// Checked at exchange time and again before each async attempt.
pub async fn closure_allowed(
    store: &crate::store::Store,
    consent: &super::model::ConsentRow,
    msg_type: &str,
    purpose: &str,
    recipient: &str,
) -> Result<bool, sqlx::Error> {
    if consent.closure.is_none() || msg_type != CLOSURE_TYPE || purpose == FOLLOW_UP_PURPOSE {
        return Ok(true);
    }
    let told: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM consent_closures WHERE consent_id = $1 AND party = $2")
            .bind(consent.id.clone())
            .bind(recipient.to_owned())
            .fetch_optional(store.pool())
            .await?;
    Ok(told.is_none())
}

/// The `consent_id` a recipient gets (DESIGN §5, §10): the exchange
/// path's own [`Crypto::recipient_consent_id`], so exchanges and
/// revocation notices always agree.
pub fn recipient_consent_id(
    crypto: &Crypto,
    mode: SubjectMode,
    recipient: &str,
    consent_id: &str,
) -> String {
    crypto
        .recipient_consent_id(
            mode,
            &crate::party::PartyId::new(recipient),
            Some(consent_id),
        )
        .unwrap_or_default()
}

/// A stored subject mode (`exchanges.subject_mode`). Rows from before the
/// column existed (or an unknown value) count as `omit`: the notice then
/// names no subject and the `pc1_` reference, which tells the party nothing
/// it did not hold (a pseudonym would be new, linkable information to a
/// party that received none); its `exchange_ids` still say which messages
/// are meant.
pub fn parse_mode(s: Option<&str>) -> SubjectMode {
    match s {
        Some("reveal") => SubjectMode::Reveal,
        Some("pseudonymise") => SubjectMode::Pseudonymise,
        _ => SubjectMode::Omit,
    }
}

/// The stored name of a subject mode.
pub fn mode_name(mode: SubjectMode) -> &'static str {
    match mode {
        SubjectMode::Reveal => "reveal",
        SubjectMode::Pseudonymise => "pseudonymise",
        SubjectMode::Omit => "omit",
    }
}

/// The closure of a consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The delivered `closure` exchange.
    pub exchange_id: String,
    /// When it was delivered (µs).
    pub closed_at_us: i64,
    /// End of the follow-up period (µs).
    pub follow_up_until_us: i64,
}

/// One event of a consent's history (summary `history`, receipt).
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEvent {
    /// `recorded`, `closure`, `revoked` or `expired`.
    pub event: &'static str,
    /// When (RFC 3339 UTC).
    pub time: String,
    /// The closure exchange (`closure` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_id: Option<String>,
    /// End of the follow-up period (`closure` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow_up_until: Option<String>,
    /// Microseconds, for ordering.
    #[serde(skip)]
    pub time_us: i64,
}

impl HistoryEvent {
    fn at(event: &'static str, time_us: i64) -> Self {
        Self {
            event,
            time: rfc3339_us(time_us),
            exchange_id: None,
            follow_up_until: None,
            time_us,
        }
    }
}

/// The history of a consent at `now_us`, oldest first: recorded; the
/// closure; the revocation; the expiry, once passed (if it came before any
/// revocation).
pub fn history(row: &super::model::ConsentRow, now_us: i64) -> Vec<HistoryEvent> {
    let mut out = vec![HistoryEvent::at("recorded", row.recorded_at_us)];
    if let Some(c) = &row.closure {
        let mut e = HistoryEvent::at("closure", c.closed_at_us);
        e.exchange_id = Some(c.exchange_id.clone());
        e.follow_up_until = Some(rfc3339_us(c.follow_up_until_us));
        out.push(e);
    }
    let until = row.valid_until_us();
    let revoked = row.revoked_at_us.filter(|r| *r <= now_us);
    if let Some(r) = revoked {
        out.push(HistoryEvent::at("revoked", r));
    }
    if until <= now_us && revoked.is_none_or(|r| until < r) {
        out.push(HistoryEvent::at("expired", until));
    }
    out.sort_by_key(|e| e.time_us);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        crate::clock::to_us(t)
    }

    #[test]
    fn months_are_calendar_months_with_the_day_clamped() {
        for (from, months, want) in [
            ("2026-12-01T21:00:00Z", 12, "2027-12-01T21:00:00Z"),
            ("2027-01-31T08:30:00Z", 1, "2027-02-28T08:30:00Z"),
            ("2027-08-31T00:00:00Z", 6, "2028-02-29T00:00:00Z"),
            ("2026-11-15T12:00:00Z", 14, "2028-01-15T12:00:00Z"),
        ] {
            assert_eq!(
                rfc3339_us(add_months(us(from), months)),
                want,
                "{from} + {months}"
            );
        }
    }

    #[test]
    fn stored_subject_modes_round_trip() {
        for m in [
            SubjectMode::Reveal,
            SubjectMode::Pseudonymise,
            SubjectMode::Omit,
        ] {
            assert_eq!(parse_mode(Some(mode_name(m))), m);
        }
        assert_eq!(parse_mode(None), SubjectMode::Omit);
        assert_eq!(parse_mode(Some("other")), SubjectMode::Omit);
    }
}
