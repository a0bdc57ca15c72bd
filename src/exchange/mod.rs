//! Exchanges (DESIGN §4, §5): the handlers (`api`), the steps of one
//! exchange (`flow`), its SQL (`store`), the sync delivery (`sync`),
//! delivery with a detached signature (`deliver`), replies through the
//! reverse route (`reply`), the async outbox and idempotency keys.

pub mod api;
pub mod deliver;
pub mod error;
mod flow;
pub mod idempotency;
pub mod numbers;
pub mod outbox;
pub mod recheck;
pub mod reply;
pub(crate) mod store;
mod sync;

use serde::Deserialize;

use crate::audit::record::{Action, AuditRecord, Decision};
use crate::auth::Principal;
use crate::ids::{ConsentId, ExchangeId};
use crate::subject::pseudonym::{Audit, Pseudonym};

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
    pub exchange_id: ExchangeId,
    /// Recipient id as requested.
    pub to: Option<String>,
    /// Message type as requested.
    pub msg_type: Option<String>,
    /// Purpose as requested.
    pub purpose: Option<String>,
    /// Audit-domain pseudonym of the subject.
    pub subject_audit: Option<Pseudonym<Audit>>,
    /// The consent relied on.
    pub consent_id: Option<ConsentId>,
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
    /// The guard to commit with the decision, when the consent came from
    /// the cache.
    pub consent_guard: Option<crate::store::Stmt>,
}

impl ExchangeCtx {
    /// A fresh context with a new exchange id.
    pub fn new(principal: Principal, request_id: Option<String>) -> Self {
        Self {
            principal,
            request_id,
            exchange_id: ExchangeId::new(),
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
            consent_guard: None,
        }
    }

    /// The context for deciding again from the database after the consent
    /// cache's guard refused: what the first attempt learnt is dropped; the
    /// request's own facts and the exchange id (nothing of the first
    /// attempt was committed) are kept.
    pub fn retry_fresh(&mut self) {
        let principal = self.principal.clone();
        let mut fresh = ExchangeCtx::new(principal, self.request_id.take());
        fresh.exchange_id = self.exchange_id.clone();
        fresh.payload_sha256 = self.payload_sha256.take();
        fresh.idempotency_key = self.idempotency_key.take();
        fresh.consent_lookup = crate::consent::cache::Lookup::Fresh;
        *self = fresh;
    }

    /// An audit record of this exchange.
    pub fn record(&self, action: Action, decision: Decision) -> AuditRecord {
        let mut record = AuditRecord {
            request_id: self.request_id.clone(),
            actor_party: Some(self.principal.party.to_string()),
            actor_user: self.principal.user.clone(),
            from: Some(self.principal.party.to_string()),
            to: self.to.clone(),
            msg_type: self.msg_type.clone(),
            purpose: self.purpose.clone(),
            consent_id: self.consent_id.clone().map(String::from),
            exchange_id: Some(self.exchange_id.to_string()),
            forwarded: self.forwarded.clone(),
            withheld: self.withheld.clone(),
            reason: None,
            payload_sha256: self.payload_sha256.clone(),
            ..AuditRecord::new(action, decision)
        };
        record.set_subject(self.subject_audit.as_ref());
        record
    }
}
