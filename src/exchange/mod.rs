//! Exchanges (DESIGN §4, §5): the endpoint, delivery with a detached
//! signature, replies through the reverse route, the async outbox and
//! idempotency keys.

pub mod api;
pub mod deliver;
pub mod idempotency;
pub mod numbers;
pub mod outbox;
pub mod recheck;
pub mod reply;

use serde::Deserialize;

use crate::audit::record::AuditRecord;
use crate::auth::Principal;
use crate::config::PartyId;
use crate::state::AppState;
use crate::store::Stmt;

/// `delivery` in the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Deliver now, answer with the recipient's reply.
    Sync,
    /// Commit to the outbox, answer 202, deliver in the background.
    Async,
}

/// What is known about an exchange as it passes the steps; every audit
/// record of the exchange is built from it.
#[derive(Clone)]
pub struct ExchangeCtx {
    /// The sender.
    pub principal: Principal,
    /// The request id.
    pub request_id: Option<String>,
    /// The exchange id (stable across retries and deliveries).
    pub exchange_id: String,
    /// Recipient id as requested.
    pub to: Option<String>,
    /// Message type as requested.
    pub msg_type: Option<String>,
    /// Purpose as requested.
    pub purpose: Option<String>,
    /// Audit-domain pseudonym of the subject.
    pub subject_audit: Option<String>,
    /// The consent relied on.
    pub consent_id: Option<String>,
    /// SHA-256 of the request body.
    pub payload_sha256: Option<String>,
    /// Forwarded field paths.
    pub forwarded: Vec<String>,
    /// Withheld field paths.
    pub withheld: Vec<String>,
    /// Sync or async.
    pub delivery: Delivery,
    /// The request's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// The answer was stored under the key by the exchange's own task (a
    /// sync exchange that must finish even if its client leaves, §10).
    pub idempotency_finished: bool,
    /// Where the consent check reads the subject's consents from.
    pub consent_lookup: crate::consent::cache::Lookup,
    /// The consent cache's guard refused the decision (see
    /// [`crate::consent::cache`]): nothing was written; decide again.
    pub consent_stale: bool,
}

impl ExchangeCtx {
    /// A fresh context with a new exchange id.
    pub fn new(principal: Principal, request_id: Option<String>) -> Self {
        Self {
            principal,
            request_id,
            exchange_id: uuid::Uuid::now_v7().to_string(),
            to: None,
            msg_type: None,
            purpose: None,
            subject_audit: None,
            consent_id: None,
            payload_sha256: None,
            forwarded: Vec::new(),
            withheld: Vec::new(),
            delivery: Delivery::Sync,
            idempotency_key: None,
            idempotency_finished: false,
            consent_lookup: crate::consent::cache::Lookup::Cached,
            consent_stale: false,
        }
    }

    /// The context for deciding again from the database after the consent
    /// cache's guard refused: what the first attempt learnt is dropped; the
    /// request's own facts and the exchange id (nothing of the first
    /// attempt was committed) are kept.
    pub fn retry_fresh(&mut self) {
        let principal = self.principal.clone();
        let mut fresh = ExchangeCtx::new(principal, self.request_id.take());
        fresh.exchange_id = std::mem::take(&mut self.exchange_id);
        fresh.payload_sha256 = self.payload_sha256.take();
        fresh.idempotency_key = self.idempotency_key.take();
        fresh.consent_lookup = crate::consent::cache::Lookup::Fresh;
        *self = fresh;
    }

    /// An audit record of this exchange.
    pub fn record(&self, action: &str, decision: &str) -> AuditRecord {
        AuditRecord {
            request_id: self.request_id.clone(),
            action: action.to_owned(),
            actor_party: Some(self.principal.party.to_string()),
            actor_user: self.principal.user.clone(),
            from: Some(self.principal.party.to_string()),
            to: self.to.clone(),
            msg_type: self.msg_type.clone(),
            purpose: self.purpose.clone(),
            subject: self.subject_audit.clone(),
            consent_id: self.consent_id.clone(),
            exchange_id: Some(self.exchange_id.clone()),
            forwarded: self.forwarded.clone(),
            withheld: self.withheld.clone(),
            decision: decision.to_owned(),
            reason: None,
            payload_sha256: self.payload_sha256.clone(),
            ..AuditRecord::default()
        }
    }

    /// The `exchanges` row written with the forwarded record.
    pub fn exchange_row_stmt(
        &self,
        state: &AppState,
        to: &PartyId,
        status: &str,
        fwd: &str,
        wh: &str,
    ) -> Stmt {
        Stmt::new(
            "INSERT INTO exchanges (id, sender, recipient, msg_type, purpose, delivery, status, attempts, \
             consent_id, subject, forwarded, withheld, created_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12)",
        )
        .text(self.exchange_id.clone())
        .text(self.principal.party.to_string())
        .text(to.to_string())
        .text(self.msg_type.clone().unwrap_or_default())
        .text(self.purpose.clone().unwrap_or_default())
        .text(if self.delivery == Delivery::Async { "async" } else { "sync" })
        .text(status)
        .opt_text(self.consent_id.clone())
        .opt_text(self.subject_audit.clone())
        .text(fwd)
        .text(wh)
        .int(state.clock.now_us())
    }
}
