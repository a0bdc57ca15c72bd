//! The delivery step of a sync exchange (DESIGN §5, §10): commit the
//! decision, deliver, record the outcome, process the reply, and store the
//! idempotent answer, all in a task of its own.
//!
//! A sync exchange finishes when its client leaves. From the commit of the
//! forwarded record on, the work runs in its own task that the request only
//! awaits: if hyper drops the request (the client disconnected, reset the
//! stream, or shutdown passed its grace), the delivery, its outcome record
//! and the stored idempotent answer still happen, so a retry with the same
//! key sees the final result.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Value};

use super::deliver::{self, Delivered, DeliveryError};
use super::error::ExchangeError;
use super::{idempotency, reply, ExchangeCtx};
use crate::audit::record::{Action, AuditRecord, Decision as AuditDecision};
use crate::consent::model::ConsentRow;
use crate::error::ApiError;
use crate::party::PartyId;
use crate::state::AppState;
use crate::store::Stmt;
use crate::subject::Subject;

/// Everything committed with the decision, and the message to deliver.
pub(super) struct Decision {
    pub(super) record: AuditRecord,
    pub(super) effects: Vec<Stmt>,
    pub(super) vault_keys: Vec<String>,
    /// The effects hold the consent cache's guard (`consent::cache`).
    pub(super) guarded: bool,
    pub(super) endpoint: String,
    pub(super) body: Bytes,
}

/// Everything a sync exchange needs after its decision, owned, so that it
/// can run to the end in its own task.
pub(super) struct SyncTail {
    pub(super) state: AppState,
    pub(super) ctx: ExchangeCtx,
    pub(super) decision: Decision,
    pub(super) recipient_id: PartyId,
    pub(super) purpose: String,
    pub(super) consent: Option<ConsentRow>,
    pub(super) subject: Option<Subject>,
    pub(super) forwarded: Vec<String>,
    pub(super) withheld: Vec<String>,
}

/// The consent cache's guard refused the commit: nothing was written or
/// sent, and the request decides again.
pub(super) struct Stale;

/// Runs `tail` in its own task and awaits it.
pub(super) async fn finish(tail: SyncTail) -> Result<Result<(StatusCode, Value), ApiError>, Stale> {
    match tokio::spawn(tail.run()).await {
        Ok(result) => result,
        Err(e) => Ok(Err(ApiError::internal(e))),
    }
}

impl SyncTail {
    /// Commits, delivers, records the outcome and stores the idempotent
    /// answer (the request's own `finish` is skipped for this exchange).
    /// [`Stale`] when the consent cache's guard refused the commit.
    async fn run(mut self) -> Result<Result<(StatusCode, Value), ApiError>, Stale> {
        // The effects (vault rows among them) are moved, not cloned:
        // nothing after the commit needs them. The record is small and has
        // no empty default to leave behind, so it is copied.
        let record = self.decision.record.clone();
        let effects = std::mem::take(&mut self.decision.effects);
        let result = match self.state.audit.append(record, effects).await {
            Ok(_) => self.deliver().await,
            Err(e) if crate::consent::cache::refused(&e, self.decision.guarded) => {
                return Err(Stale)
            }
            Err(e) => Err(e.into()),
        };
        if let Some(key) = &self.ctx.idempotency_key {
            let (status, body) = match &result {
                Ok((status, body)) => (*status, body.clone()),
                Err(e) => (e.code.status(), e.body()),
            };
            let party = &self.ctx.principal.party;
            idempotency::finish(&self.state, party, key, status, &body).await;
        }
        Ok(result)
    }

    /// After the forwarded record committed: delivers and records the outcome.
    async fn deliver(&self) -> Result<(StatusCode, Value), ApiError> {
        let (state, d) = (&self.state, &self.decision);
        let exchange_id = self.ctx.exchange_id.clone();
        state.mark_vault_stored(d.vault_keys.clone());
        metrics::counter!("samgate_exchanges_total", "outcome" => "forwarded", "reason" => "none")
            .increment(1);
        let live = state.live_arc();
        let signature = deliver::sign_detached(&state.crypto.delivery_signer, &d.body);
        let started = std::time::Instant::now();
        let delivered = match live
            .delivery_clients
            .for_delivery(self.recipient_id.as_str())
        {
            // The endpoint is the one the decision named, from this same
            // snapshot.
            Ok((client, _)) => {
                deliver::post(
                    client,
                    &d.endpoint,
                    &exchange_id,
                    &signature,
                    d.body.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        crate::observe::delivery(
            Some(self.recipient_id.as_str()),
            "sync",
            started.elapsed(),
            &delivered,
        );
        match delivered {
            Ok(delivered) => self.delivered(&delivered).await,
            Err(err) => Err(self.failed(&err).await),
        }
    }

    /// The recipient accepted: the outcome record, the closure a delivered
    /// `closure` causes (§13), then the reply. From here on the sender is
    /// told the message was delivered, whatever happens to the reply (a
    /// reply that cannot be processed or audited is withheld, never an error
    /// that invites a resend).
    async fn delivered(&self, d: &Delivered) -> Result<(StatusCode, Value), ApiError> {
        let (state, ctx) = (&self.state, &self.ctx);
        let exchange_id = ctx.exchange_id.clone();
        let record = ctx.record(Action::ExchangeDelivered, AuditDecision::Delivered);
        let mut outcome = vec![super::store::delivered(&exchange_id, state.clock.now_us())];
        outcome.extend(crate::consent::lifecycle::closure_effect(
            state.clock.now_us(),
            state.config.consent.follow_up_months,
            ctx.msg_type.as_deref(),
            ctx.consent_id.as_deref(),
            Some(self.recipient_id.as_str()),
            &exchange_id,
        ));
        record_outcome(state, record, outcome).await;
        let processed = reply::process(
            state,
            ctx,
            &self.recipient_id,
            &self.purpose,
            self.consent.as_ref(),
            self.subject.as_ref(),
            d,
        )
        .await;
        let (reply, reply_withheld) = processed.unwrap_or_else(|e| {
            tracing::warn!(exchange.id = %exchange_id, error = %e, "reply withheld: it could not be processed");
            (Value::Null, true)
        });
        let mut out = json!({
            "exchange_id": exchange_id,
            "status": "delivered",
            "forwarded": self.forwarded,
            "withheld": self.withheld,
            "reply": reply,
        });
        if let (true, Some(obj)) = (reply_withheld, out.as_object_mut()) {
            obj.insert("reply_withheld".into(), Value::Bool(true));
        }
        // A revocation that came after the consent was decided (§13).
        crate::consent::notices::after_delivery(
            state,
            ctx.consent_id.as_deref(),
            ctx.msg_type.as_deref(),
        );
        Ok((StatusCode::OK, out))
    }

    /// The recipient did not accept: the exchange is recorded as failed
    /// (502), and when the message may have arrived all the same, it counts
    /// as received for revocation notices (§13).
    async fn failed(&self, err: &DeliveryError) -> ApiError {
        let (state, ctx) = (&self.state, &self.ctx);
        let exchange_id = ctx.exchange_id.clone();
        let mut record = ctx.record(Action::ExchangeFailed, AuditDecision::Failed);
        record.reason = Some(err.to_string());
        let failed = super::store::failed(&exchange_id, &err.to_string(), err.may_have_arrived());
        record_outcome(state, record, vec![failed]).await;
        tracing::warn!(exchange.id = %exchange_id, error = %err, "sync delivery failed");
        if err.may_have_arrived() {
            crate::consent::notices::after_delivery(
                state,
                ctx.consent_id.as_deref(),
                ctx.msg_type.as_deref(),
            );
        }
        ExchangeError::RecipientFailed {
            error: err.to_string(),
            exchange_id,
        }
        .into()
    }
}

/// Records the outcome of a delivery that has already happened. The
/// decision itself (`exchange-forwarded`) was committed before the message
/// left; if the outcome cannot be written now (storage just went away), the
/// caller is still told the truth about the delivery and the record is
/// retried in the background for up to ten minutes.
async fn record_outcome(state: &AppState, record: AuditRecord, effects: Vec<Stmt>) {
    if appended(state, &record, &effects).await {
        return;
    }
    let st = state.clone();
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(delay).await;
            if appended(&st, &record, &effects).await {
                return;
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
        tracing::error!(exchange.id = ?record.exchange_id, action = %record.action, "could not record a delivery outcome");
    });
}

/// One attempt to append the outcome record with its effects.
async fn appended(state: &AppState, record: &AuditRecord, effects: &[Stmt]) -> bool {
    state
        .audit
        .append(record.clone(), effects.to_vec())
        .await
        .is_ok()
}
