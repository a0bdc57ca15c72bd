//! Stored consents: rows, states, the summary of DESIGN §9, and the
//! consent check used by the exchange path (DESIGN §2).
//!
//! A consent row is indexed by the subject's `consent`-domain pseudonym. The
//! raw token is the evidence and is kept, sealed with the vault key (AAD
//! `consent-token\0<id>`), because it contains the personnummer in `sub`.
//! The exchange path reads a subject's consents through the per-process
//! cache of [`super::cache`], whose version guard keeps a revocation on any
//! instance effective for the very next exchange; everything else reads the
//! database.

use serde::Serialize;
use sqlx::Row;

use super::lifecycle::{self, Closure, GivenBy, HistoryEvent};
use crate::clock::rfc3339_us;
use crate::party::PartyId;
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
    /// The representative's role (`given_by.role`), if one gave it.
    pub given_by_role: Option<String>,
    /// The representative's name as stored (sealed, see [`ConsentRow::open`]).
    pub given_by_sealed: Option<String>,
    /// The representative, once opened with the vault key.
    pub given_by: Option<GivenBy>,
    /// The protected-identity marking (DESIGN §13).
    pub protected_identity: bool,
    /// The delivered closure, if any (DESIGN §13).
    pub closure: Option<Closure>,
    /// The change counter the consent cache's guard compares (migration
    /// 0020): bumped with every change that can alter a decision.
    pub version: i64,
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
    /// A closure was delivered: valid for follow-up only (DESIGN §13).
    Closed,
}

impl ConsentState {
    /// As in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Active => "active",
            ConsentState::Revoked => "revoked",
            ConsentState::Expired => "expired",
            ConsentState::NotYetValid => "not_yet_valid",
            ConsentState::Closed => "closed",
        }
    }

    /// Whether exchanges may rely on a consent in this state.
    pub fn usable(self) -> bool {
        matches!(self, ConsentState::Active | ConsentState::Closed)
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
    given_by: Option<serde_json::Value>,
    protected_identity: bool,
    closure: Option<serde_json::Value>,
    history: Vec<HistoryEvent>,
}

impl ConsentRow {
    /// The state at `now_us`.
    pub fn state(&self, now_us: i64) -> ConsentState {
        // Revoked from the moment the row says so, whatever this instance's
        // clock says: another instance's clock may be ahead of it.
        if self.revoked_at_us.is_some() {
            ConsentState::Revoked
        } else if now_us >= self.valid_until_us() {
            ConsentState::Expired
        } else if now_us < self.not_before_us {
            ConsentState::NotYetValid
        } else if self.closure.is_some() {
            ConsentState::Closed
        } else {
            ConsentState::Active
        }
    }

    /// When it stops being valid: its `exp`, or the end of the follow-up
    /// period after a closure if that comes first.
    pub fn valid_until_us(&self) -> i64 {
        match &self.closure {
            Some(c) => self.expires_at_us.min(c.follow_up_until_us),
            None => self.expires_at_us,
        }
    }

    /// Opens the sealed representative's name with the vault key.
    pub fn open(mut self, crypto: &crate::crypto::Crypto) -> Self {
        if let (Some(role), Some(sealed)) = (&self.given_by_role, &self.given_by_sealed) {
            if let Some(name) = crypto.open_text(&lifecycle::given_by_aad(&self.id), sealed) {
                self.given_by = Some(GivenBy {
                    role: role.clone(),
                    name,
                });
            }
        }
        self
    }

    /// The history of events at `now_us` (DESIGN §13).
    pub fn history(&self, now_us: i64) -> Vec<HistoryEvent> {
        lifecycle::history(self, now_us)
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
            categories: self.shown_categories().cloned().collect(),
            method: self.method.clone(),
            recorded_by: self.recorded_by.clone(),
            not_before: rfc3339_us(self.not_before_us),
            expires_at: rfc3339_us(self.valid_until_us()),
            recorded_at: rfc3339_us(self.recorded_at_us),
            revoked_at: self.revoked_at_us.map(rfc3339_us),
            given_by: self.given_by_json(),
            protected_identity: self.protected_identity,
            closure: self.closure.as_ref().map(|c| {
                serde_json::json!({
                    "exchange_id": c.exchange_id,
                    "closed_at": rfc3339_us(c.closed_at_us),
                    "follow_up_until": rfc3339_us(c.follow_up_until_us),
                })
            }),
            history: self.history(now_us),
        }
    }

    /// `given_by` as shown: role and name once opened, the role alone
    /// otherwise (the name is never shown sealed).
    pub fn given_by_json(&self) -> Option<serde_json::Value> {
        match (&self.given_by, &self.given_by_role) {
            (Some(g), _) => Some(serde_json::json!({"role": g.role, "name": g.name})),
            (None, Some(role)) => Some(serde_json::json!({ "role": role })),
            (None, None) => None,
        }
    }

    /// Whether it names both parties and the purpose; after a closure the
    /// only purpose left is `uppfoljning` (DESIGN §13).
    pub fn covers(&self, from: &PartyId, to: &PartyId, purpose: &str) -> bool {
        self.covers_message(from, to, None, purpose)
    }

    /// [`ConsentRow::covers`] for a message of `msg_type`: after a closure,
    /// further `closure` messages keep the original purposes, so that every
    /// receiving party can be told (see `lifecycle`).
    pub fn covers_message(
        &self,
        from: &PartyId,
        to: &PartyId,
        msg_type: Option<&str>,
        purpose: &str,
    ) -> bool {
        let purpose_ok = self.purposes.iter().any(|p| p == purpose)
            && (self.closure.is_none()
                || purpose == lifecycle::FOLLOW_UP_PURPOSE
                || msg_type == Some(lifecycle::CLOSURE_TYPE));
        self.parties.iter().any(|p| p == from.as_str())
            && self.parties.iter().any(|p| p == to.as_str())
            && purpose_ok
    }

    /// The categories as shown in the summary and the receipt: for a
    /// protected identity nothing of `contact` (DESIGN §13).
    pub fn shown_categories(&self) -> impl Iterator<Item = &String> {
        self.categories
            .iter()
            .filter(|c| !(self.protected_identity && c.as_str() == Category::Contact.as_str()))
    }

    /// The row with its subject's marking: the protected identity is a
    /// property of the person, so a consent of a marked subject is shown as
    /// marked even when it was recorded without the flag (like
    /// [`decide_message`] on the exchange path). The stored claim is left
    /// as it was.
    pub async fn with_subject_marking(mut self, store: &Store) -> Result<Self, sqlx::Error> {
        if !self.protected_identity {
            self.protected_identity = subject_protected(store, &self.subject).await?;
        }
        Ok(self)
    }

    /// The categories as typed values (unknown ones are skipped). For a
    /// protected identity `contact` is never among them (DESIGN §13).
    pub fn category_set(&self) -> std::collections::BTreeSet<Category> {
        self.categories
            .iter()
            .filter_map(|c| c.parse().ok())
            .filter(|c| !(self.protected_identity && *c == Category::Contact))
            .collect()
    }
}

const COLUMNS: &str = "id, subject, issuer, parties, purposes, categories, method, recorded_by, \
     not_before_us, expires_at_us, recorded_at_us, revoked_at_us, given_by_role, given_by_name, \
     protected_identity, closure_exchange_id, closed_at_us, follow_up_until_us, version";

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
        given_by_role: r.try_get("given_by_role")?,
        given_by_sealed: r.try_get("given_by_name")?,
        given_by: None,
        protected_identity: r.try_get::<i64, _>("protected_identity")? != 0,
        closure: match (
            r.try_get::<Option<String>, _>("closure_exchange_id")?,
            r.try_get::<Option<i64>, _>("closed_at_us")?,
            r.try_get::<Option<i64>, _>("follow_up_until_us")?,
        ) {
            (Some(exchange_id), Some(closed_at_us), Some(follow_up_until_us)) => Some(Closure {
                exchange_id,
                closed_at_us,
                follow_up_until_us,
            }),
            _ => None,
        },
        version: r.try_get("version")?,
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

/// Whether any consent of `subject` (by `consent`-domain pseudonym)
/// carries the protected-identity marking.
pub async fn subject_protected(store: &Store, subject: &str) -> Result<bool, sqlx::Error> {
    let marked: Option<i64> = sqlx::query_scalar(
        "SELECT protected_identity FROM consents WHERE subject = $1 AND protected_identity <> 0 LIMIT 1",
    )
    .bind(subject.to_owned())
    .fetch_optional(store.pool())
    .await?;
    Ok(marked.is_some())
}

/// Why an exchange is not covered (the message is the problem's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No consent for the subject.
    #[error("no consent is recorded for this participant")]
    Missing,
    /// The relevant consent was withdrawn.
    #[error("the participant has withdrawn their consent")]
    Revoked,
    /// The relevant consent expired or is not yet valid.
    #[error("the participant's consent is not valid at this time")]
    Expired,
    /// Active consents exist but none names both parties and the purpose.
    #[error("the consent does not cover these parties and this purpose")]
    Scope,
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
    decide_message(consents, from, to, None, purpose, now_us)
}

/// [`decide`] for a message of a known type (a closed consent still covers
/// `closure` messages, see [`ConsentRow::covers_message`]). The consent
/// returned carries the subject's protected-identity marking if any of
/// the subject's consents has it (DESIGN §13: a property of the person).
pub fn decide_message(
    consents: &[ConsentRow],
    from: &PartyId,
    to: &PartyId,
    msg_type: Option<&str>,
    purpose: &str,
    now_us: i64,
) -> Result<ConsentRow, Denial> {
    if consents.is_empty() {
        return Err(Denial::Missing);
    }
    let protected = consents.iter().any(|c| c.protected_identity);
    let mut active_exists = false;
    for c in consents {
        if c.state(now_us).usable() {
            if c.covers_message(from, to, msg_type, purpose) {
                let mut chosen = c.clone();
                chosen.protected_identity |= protected;
                return Ok(chosen);
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
