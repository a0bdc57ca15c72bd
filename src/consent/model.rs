//! Stored consents: rows, states, the summary of DESIGN §9, and the
//! consent check used by the exchange path (DESIGN §2).
//!
//! A consent row is indexed by the subject's `consent`-domain pseudonym. The
//! raw token is the evidence and is kept, sealed with the vault key (AAD
//! `consent-token\0<id>`), because it contains the personnummer in `sub`.
//! There is no cache: every check reads the database, so a revocation is
//! effective on every instance for the very next request.

use serde::Serialize;
use sqlx::Row;

use crate::clock::rfc3339_us;
use crate::config::PartyId;
use crate::error::{ApiError, ProblemCode};
use crate::schema::Category;
use crate::store::Store;

/// A consent as stored.
#[derive(Debug, Clone)]
pub struct ConsentRow {
    /// Consent id (`jti`).
    pub id: String,
    /// `consent`-domain pseudonym of the participant.
    pub subject: String,
    /// Issuer id.
    pub issuer: String,
    /// Parties.
    pub parties: Vec<String>,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Method.
    pub method: String,
    /// Who recorded it.
    pub recorded_by: String,
    /// Valid from (µs).
    pub not_before_us: i64,
    /// Valid until (µs).
    pub expires_at_us: i64,
    /// Recorded (µs).
    pub recorded_at_us: i64,
    /// Revoked (µs), if withdrawn.
    pub revoked_at_us: Option<i64>,
}

/// The consent states of DESIGN §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// Valid now.
    Active,
    /// Withdrawn.
    Revoked,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
}

impl ConsentState {
    /// As in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Active => "active",
            ConsentState::Revoked => "revoked",
            ConsentState::Expired => "expired",
            ConsentState::NotYetValid => "not_yet_valid",
        }
    }
}

/// The summary returned by the consent API (DESIGN §9).
#[derive(Debug, Serialize)]
pub struct ConsentSummary {
    id: String,
    state: &'static str,
    subject: String,
    issuer: String,
    parties: Vec<String>,
    purposes: Vec<String>,
    categories: Vec<String>,
    method: String,
    recorded_by: String,
    not_before: String,
    expires_at: String,
    recorded_at: String,
    revoked_at: Option<String>,
}

impl ConsentRow {
    /// The state at `now_us`.
    pub fn state(&self, now_us: i64) -> ConsentState {
        if self.revoked_at_us.is_some_and(|r| r <= now_us) {
            ConsentState::Revoked
        } else if now_us >= self.expires_at_us {
            ConsentState::Expired
        } else if now_us < self.not_before_us {
            ConsentState::NotYetValid
        } else {
            ConsentState::Active
        }
    }

    /// The API summary at `now_us`.
    pub fn summary(&self, now_us: i64) -> ConsentSummary {
        ConsentSummary {
            id: self.id.clone(),
            state: self.state(now_us).as_str(),
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            parties: self.parties.clone(),
            purposes: self.purposes.clone(),
            categories: self.categories.clone(),
            method: self.method.clone(),
            recorded_by: self.recorded_by.clone(),
            not_before: rfc3339_us(self.not_before_us),
            expires_at: rfc3339_us(self.expires_at_us),
            recorded_at: rfc3339_us(self.recorded_at_us),
            revoked_at: self.revoked_at_us.map(rfc3339_us),
        }
    }

    /// Whether it names both parties and the purpose.
    pub fn covers(&self, from: &PartyId, to: &PartyId, purpose: &str) -> bool {
        self.parties.iter().any(|p| p == from.as_str())
            && self.parties.iter().any(|p| p == to.as_str())
            && self.purposes.iter().any(|p| p == purpose)
    }

    /// The categories as typed values (unknown ones are skipped).
    pub fn category_set(&self) -> std::collections::BTreeSet<Category> {
        self.categories
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

const COLUMNS: &str = "id, subject, issuer, parties, purposes, categories, method, recorded_by, \
     not_before_us, expires_at_us, recorded_at_us, revoked_at_us";

fn from_row(r: &sqlx::any::AnyRow) -> Result<ConsentRow, sqlx::Error> {
    let list = |s: String| -> Vec<String> { serde_json::from_str(&s).unwrap_or_default() };
    Ok(ConsentRow {
        id: r.try_get("id")?,
        subject: r.try_get("subject")?,
        issuer: r.try_get("issuer")?,
        parties: list(r.try_get("parties")?),
        purposes: list(r.try_get("purposes")?),
        categories: list(r.try_get("categories")?),
        method: r.try_get("method")?,
        recorded_by: r.try_get("recorded_by")?,
        not_before_us: r.try_get("not_before_us")?,
        expires_at_us: r.try_get("expires_at_us")?,
        recorded_at_us: r.try_get("recorded_at_us")?,
        revoked_at_us: r.try_get("revoked_at_us")?,
    })
}

/// One consent by id.
pub async fn fetch(store: &Store, id: &str) -> Result<Option<ConsentRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM consents WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.to_owned())
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every consent of a subject (by `consent`-domain pseudonym), newest first.
pub async fn for_subject(store: &Store, subject: &str) -> Result<Vec<ConsentRow>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM consents WHERE subject = $1 ORDER BY recorded_at_us DESC");
    let rows = sqlx::query(&sql)
        .bind(subject.to_owned())
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

/// Why an exchange is not covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No consent for the subject.
    Missing,
    /// The relevant consent was withdrawn.
    Revoked,
    /// The relevant consent expired or is not yet valid.
    Expired,
    /// Active consents exist but none names both parties and the purpose.
    Scope,
}

impl Denial {
    /// The problem code.
    pub fn code(self) -> ProblemCode {
        match self {
            Denial::Missing => ProblemCode::ConsentMissing,
            Denial::Revoked => ProblemCode::ConsentRevoked,
            Denial::Expired => ProblemCode::ConsentExpired,
            Denial::Scope => ProblemCode::ConsentScope,
        }
    }

    /// The problem response.
    pub fn error(self) -> ApiError {
        let detail = match self {
            Denial::Missing => "no consent is recorded for this participant",
            Denial::Revoked => "the participant has withdrawn their consent",
            Denial::Expired => "the participant's consent is not valid at this time",
            Denial::Scope => "the consent does not cover these parties and this purpose",
        };
        ApiError::new(self.code(), detail)
    }
}

/// The consent check of the exchange path: an active consent for the
/// subject that names sender, recipient and purpose (categories are applied
/// field by field by the filter). When several cover, the most recently
/// recorded wins. When none does, the reason comes from the most relevant
/// consent: an active one that does not cover means `consent_scope`;
/// otherwise the newest consent's state (revoked or expired).
pub fn decide(
    consents: &[ConsentRow],
    from: &PartyId,
    to: &PartyId,
    purpose: &str,
    now_us: i64,
) -> Result<ConsentRow, Denial> {
    if consents.is_empty() {
        return Err(Denial::Missing);
    }
    let mut active_exists = false;
    for c in consents {
        if c.state(now_us) == ConsentState::Active {
            if c.covers(from, to, purpose) {
                return Ok(c.clone());
            }
            active_exists = true;
        }
    }
    if active_exists {
        return Err(Denial::Scope);
    }
    match consents.first().map(|c| c.state(now_us)) {
        Some(ConsentState::Revoked) => Err(Denial::Revoked),
        _ => Err(Denial::Expired),
    }
}
