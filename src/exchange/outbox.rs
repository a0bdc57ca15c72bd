//! The async outbox (DESIGN §5, §9 "Exchange states").
//!
//! An async exchange's signed message is committed, sealed with the vault
//! key, in the same transaction as its `exchange-forwarded` audit record.
//! A dispatcher per instance claims due rows with a lease (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`, so racing instances never claim the same row;
//! SQLite: one writer at a time) and runs each [`attempt`] in its own task
//! (at most `[delivery] workers` at once, `per_recipient` per endpoint, the
//! lease renewed while it runs); an attempt delivers and records the outcome
//! with an audit record in the same transaction that removes the row.
//! Failures back off exponentially from `backoff_initial` to `backoff_max`
//! with full jitter until `expire_after`. Delivery is at-least-once: a
//! second delivery only happens when an instance died after the recipient
//! received the message and before the outcome was committed; the lease
//! then runs out and another attempt carries the same `exchange_id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use rand::Rng;
use sqlx::Row;
use tokio::sync::Semaphore;

use super::deliver;
use crate::audit::log::AppendError;
use crate::audit::record::{Action, AuditRecord, Decision};
use crate::state::AppState;
use crate::store::{Backend, Stmt};
use crate::subject::vault::Sealed;

/// Associated data of a sealed outbox body (written in [`super::store`],
/// also used by `keys rotate-vault` and the tests).
pub use super::store::outbox_aad as aad;

/// How long a claim lasts beyond the delivery timeout before another
/// worker may retry the row: the lease must outlive one attempt and the
/// commit of its outcome (which may wait for SQLite's busy timeout).
const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// Most rows claimed per round.
const CLAIM_BATCH: i64 = 32;

struct Claimed {
    exchange_id: String,
    endpoint: String,
    sealed: Sealed,
    attempts: i64,
    expires_at_us: i64,
}

/// Runs the outbox until the task is aborted: a dispatcher claims due rows
/// while workers are free and hands each to its own task, so a slow or dead
/// recipient only ever holds its own rows. At most `[delivery] workers`
/// attempts run at once, and at most `per_recipient` towards one endpoint;
/// rows of an endpoint at its limit are not claimed. A claim's lease is
/// renewed while its attempt (delivery and outcome record) runs, so it never
/// runs out under a live attempt and no other instance re-delivers it.
pub async fn run(state: AppState) {
    let workers = Arc::new(Semaphore::new(state.config.delivery.workers));
    let busy: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut last_purge = std::time::Instant::now();
    // Revocation notices a crash or a storage error left unsent (§13).
    crate::consent::notices::sweep_pending(&state).await;
    loop {
        // Housekeeping on elapsed time, also while claims keep succeeding.
        if last_purge.elapsed() > Duration::from_secs(600) {
            super::idempotency::purge(&state, 48 * 3600 * 1_000_000).await;
            // Off the dispatcher: claims go on while it runs.
            let st = state.clone();
            tokio::spawn(async move { crate::consent::notices::sweep_pending(&st).await });
            last_purge = std::time::Instant::now();
        }
        let free = workers.available_permits();
        if free > 0 {
            let saturated: Vec<String> = busy
                .lock()
                .map(|b| {
                    b.iter()
                        .filter(|(_, n)| **n >= state.config.delivery.per_recipient)
                        .map(|(e, _)| e.clone())
                        .collect()
                })
                .unwrap_or_default();
            let limit = i64::try_from(free).unwrap_or(CLAIM_BATCH).min(CLAIM_BATCH);
            match claim(&state, limit, &saturated).await {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        dispatch(&state, &workers, &busy, row).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox claim failed"),
            }
        }
        tokio::select! {
            _ = state.outbox_notify.notified() => {},
            _ = state.outbox_freed.notified() => {},
            _ = tokio::time::sleep(Duration::from_millis(250)) => {},
        }
    }
}

/// Starts one claimed row's attempt in its own task, or gives the claim
/// back when its endpoint is already at `per_recipient`.
async fn dispatch(
    state: &AppState,
    workers: &Arc<Semaphore>,
    busy: &Arc<Mutex<HashMap<String, usize>>>,
    row: Claimed,
) {
    let per_recipient = state.config.delivery.per_recipient;
    let admitted = busy.lock().is_ok_and(|mut b| {
        let n = b.entry(row.endpoint.clone()).or_insert(0);
        if *n >= per_recipient {
            false
        } else {
            *n += 1;
            true
        }
    });
    let permit = if admitted {
        workers.clone().try_acquire_owned().ok()
    } else {
        None
    };
    let Some(permit) = permit else {
        if admitted {
            release_slot(busy, &row.endpoint);
        }
        unclaim(state, &row.exchange_id).await;
        return;
    };
    // Unpinned: each attempt reads the configuration in force when its
    // recheck runs, and delivers on that same snapshot.
    let st = state.unpinned();
    let busy = busy.clone();
    tokio::spawn(async move {
        let endpoint = row.endpoint.clone();
        let id = row.exchange_id.clone();
        let lease = lease(&st);
        let renew = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                renew(&st, &id, lease).await;
            }
        };
        tokio::select! {
            () = attempt(&st, row) => {},
            () = renew => {},
        }
        release_slot(&busy, &endpoint);
        drop(permit);
        st.outbox_freed.notify_one();
    });
}

fn release_slot(busy: &Mutex<HashMap<String, usize>>, endpoint: &str) {
    if let Ok(mut b) = busy.lock() {
        if let Some(n) = b.get_mut(endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                b.remove(endpoint);
            }
        }
    }
}

fn lease(state: &AppState) -> Duration {
    state.config.delivery.timeout + LEASE_MARGIN
}

fn lease_until(state: &AppState, lease: Duration) -> i64 {
    state.clock.now_us() + i64::try_from(lease.as_micros()).unwrap_or(60_000_000)
}

/// Extends this instance's claim on a row whose attempt is still running.
async fn renew(state: &AppState, exchange_id: &str, lease: Duration) {
    let r = sqlx::query(
        "UPDATE outbox SET claimed_until_us = $1 WHERE exchange_id = $2 AND claimed_by = $3",
    )
    .bind(lease_until(state, lease))
    .bind(exchange_id.to_owned())
    .bind(state.instance_id.clone())
    .execute(state.store.pool())
    .await;
    if let Err(e) = r {
        tracing::warn!(exchange.id = %exchange_id, error = %e, "could not renew an outbox lease");
    }
}

/// Points a claimed row at its party's current endpoint and gives the
/// claim back (no attempt was made): it is due again at once.
async fn readdress(state: &AppState, exchange_id: &str, endpoint: &str) {
    let r = sqlx::query(
        "UPDATE outbox SET endpoint = $1, claimed_until_us = 0 WHERE exchange_id = $2 AND claimed_by = $3",
    )
    .bind(endpoint.to_owned())
    .bind(exchange_id.to_owned())
    .bind(state.instance_id.clone())
    .execute(state.store.pool())
    .await;
    if let Err(e) = r {
        tracing::warn!(exchange.id = %exchange_id, error = %e, "could not point an outbox row at its party's new endpoint; retried when the claim runs out");
    }
}

/// Gives a claim back at once (its endpoint is busy): it is due again.
async fn unclaim(state: &AppState, exchange_id: &str) {
    let _ = sqlx::query(
        "UPDATE outbox SET claimed_until_us = 0 WHERE exchange_id = $1 AND claimed_by = $2",
    )
    .bind(exchange_id.to_owned())
    .bind(state.instance_id.clone())
    .execute(state.store.pool())
    .await;
}

async fn claim(
    state: &AppState,
    limit: i64,
    saturated: &[String],
) -> Result<Vec<Claimed>, sqlx::Error> {
    let now = state.clock.now_us();
    let until = lease_until(state, lease(state));
    // Endpoints at their per-recipient limit are left to other instances
    // (or to this one once a slot frees).
    let mut skip = String::new();
    for i in 0..saturated.len() {
        skip.push_str(if i == 0 {
            " AND endpoint NOT IN ("
        } else {
            ", "
        });
        skip.push_str(&format!("${}", i + 5));
    }
    if !saturated.is_empty() {
        skip.push(')');
    }
    let lock = match state.store.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE outbox SET claimed_until_us = $1, claimed_by = $4 WHERE exchange_id IN (SELECT exchange_id FROM outbox \
         WHERE next_attempt_us <= $2 AND claimed_until_us < $2{skip} ORDER BY next_attempt_us LIMIT $3{lock}) \
         RETURNING exchange_id, endpoint, body_key_id, body_nonce, body_sealed, attempts, expires_at_us"
    );
    let mut q = sqlx::query(&sql)
        .bind(until)
        .bind(now)
        .bind(limit)
        .bind(state.instance_id.clone());
    for e in saturated {
        q = q.bind(e.clone());
    }
    let rows = q.fetch_all(state.store.pool()).await?;
    let mut out = Vec::new();
    for r in rows {
        let nonce: Vec<u8> = r.try_get("body_nonce")?;
        let Ok(nonce) = <[u8; 12]>::try_from(nonce.as_slice()) else {
            continue;
        };
        out.push(Claimed {
            exchange_id: r.try_get("exchange_id")?,
            endpoint: r.try_get("endpoint")?,
            sealed: Sealed {
                key_id: r.try_get("body_key_id")?,
                nonce,
                ciphertext: r.try_get("body_sealed")?,
            },
            attempts: r.try_get("attempts")?,
            expires_at_us: r.try_get("expires_at_us")?,
        });
    }
    Ok(out)
}

async fn base_record(state: &AppState, exchange_id: &str) -> AuditRecord {
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT sender, recipient, msg_type, purpose, consent_id, subject, forwarded, withheld FROM exchanges WHERE id = $1",
    )
    .bind(exchange_id.to_owned())
    .fetch_optional(state.store.pool())
    .await
    .ok()
    .flatten();
    // The exchange as its forwarded record described it; each outcome
    // sets its own action and decision.
    let mut r = AuditRecord {
        exchange_id: Some(exchange_id.to_owned()),
        ..AuditRecord::new(Action::ExchangeForwarded, Decision::Permit)
    };
    if let Some((from, to, t, purpose, consent, subject, fwd, wh)) = row {
        r.actor_party = Some(from.clone());
        r.from = Some(from);
        r.to = Some(to);
        r.msg_type = Some(t);
        r.purpose = Some(purpose);
        r.consent_id = consent;
        r.subject = subject;
        r.forwarded = serde_json::from_str(&fwd).unwrap_or_default();
        r.withheld = serde_json::from_str(&wh).unwrap_or_default();
    }
    r
}

async fn attempt(state: &AppState, row: Claimed) {
    let attempts = row.attempts + 1;
    let now = state.clock.now_us();
    let id = row.exchange_id.clone();
    // DESIGN §10: consent, scope and expiry are checked before every attempt.
    match super::recheck::before_attempt(state, &id, row.expires_at_us).await {
        Ok(super::recheck::Verdict::Deliver) => {}
        Ok(verdict) => {
            let record = base_record(state, &id).await;
            return super::recheck::end(state, &id, verdict, record).await;
        }
        Err(e) => {
            tracing::warn!(exchange.id = %id, error = %e, "cannot check the consent before delivery; not sent, retried when the claim runs out");
            return;
        }
    }
    let record = base_record(state, &id).await;
    // The recipient's pinned client (DESIGN §10 "Recipients are pinned too").
    // The party's endpoint and client in the configuration in force now
    // (DESIGN §10 "Recipients are pinned too"): a party that moved gets its
    // queued messages at its new endpoint; one the configuration no longer
    // has gets no client, and the attempt fails (retried until the party is
    // back or the message expires), never sent with a weaker check.
    // The same snapshot the recheck above decided on.
    let live = state.live_arc();
    let target = live
        .delivery_clients
        .for_delivery(record.to.as_deref().unwrap_or_default());
    if let Ok((_, endpoint)) = &target {
        if *endpoint != row.endpoint {
            // The party moved since the row was queued: the row takes the
            // new endpoint and is claimed again, so the per-endpoint slot it
            // counts against is always the one it goes to.
            readdress(state, &id, endpoint).await;
            return;
        }
    }
    if state.is_halted() {
        // The instance was stopped at once (a crash, in tests): an attempt
        // spawned before that sends nothing afterwards.
        return;
    }
    let started = std::time::Instant::now();
    let result = send(state, target, &row, &id).await;
    let may_have_arrived = matches!(&result, Err((true, _)));
    let result = result.map_err(|(_, e)| e);
    crate::observe::delivery(record.to.as_deref(), "async", started.elapsed(), &result);
    let outcome = match result {
        Ok(_) => record_delivered(state, &id, attempts, record).await,
        Err(err) if now >= row.expires_at_us => {
            record_expired(state, &id, attempts, record, err, may_have_arrived).await
        }
        Err(err) => {
            let retry = Retry {
                attempts,
                now,
                err,
                may_have_arrived,
            };
            Ok(schedule_retry(state, &id, &record, retry).await)
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(exchange.id = %id, error = %e, "could not record the delivery outcome; the lease will expire and it is retried");
    }
}

/// Opens the sealed message, signs it and posts it to the recipient's
/// endpoint. The error says whether the message may have arrived anyway.
async fn send(
    state: &AppState,
    target: Result<(&reqwest::Client, &str), deliver::DeliveryError>,
    row: &Claimed,
    id: &str,
) -> Result<deliver::Delivered, (bool, String)> {
    let (client, endpoint) = target.map_err(|e| (false, e.to_string()))?;
    match state
        .crypto
        .vault
        .open_bytes(&super::store::outbox_aad(id), &row.sealed)
    {
        Ok(body) => {
            let signature = deliver::sign_detached(&state.crypto.delivery_signer, &body);
            deliver::post(client, endpoint, id, &signature, Bytes::from(body.to_vec()))
                .await
                .map_err(|e| (e.may_have_arrived(), e.to_string()))
        }
        Err(e) => Err((false, format!("cannot open the sealed message: {e}"))),
    }
}

/// Records a delivered attempt: the outbox row goes, the exchange is
/// `delivered`, and a revocation notice or closure has its effect.
async fn record_delivered(
    state: &AppState,
    id: &str,
    attempts: i64,
    mut record: AuditRecord,
) -> Result<&'static str, AppendError> {
    // A revocation notice is recorded as `revocation-notified`, and
    // a delivered closure limits its consent (DESIGN §13).
    record.action = crate::consent::lifecycle::delivered_action(record.msg_type.as_deref());
    record.decision = Decision::Delivered;
    let closure = crate::consent::lifecycle::closure_effect(
        state.clock.now_us(),
        state.config.consent.follow_up_months,
        record.msg_type.as_deref(),
        record.consent_id.as_deref(),
        record.to.as_deref(),
        id,
    );
    let mut effects = vec![
        super::store::outbox_release(state, id),
        Stmt::new("UPDATE exchanges SET status = 'delivered', attempts = $1, delivered_at_us = $2, last_error = NULL WHERE id = $3")
            .int(attempts)
            .int(state.clock.now_us())
            .text(id.to_owned()),
    ];
    effects.extend(closure);
    let (consent_id, msg_type) = (record.consent_id.clone(), record.msg_type.clone());
    let done = state.audit.append(record, effects).await;
    if done.is_err() {
        // Delivered but not recorded: the retry may be refused by
        // its consent check, and the party still holds the message.
        possibly_received(state, id).await;
    }
    // A revocation that came while this attempt was in flight.
    crate::consent::notices::after_delivery(state, consent_id.as_deref(), msg_type.as_deref());
    done.map(|_| "delivered")
}

/// Records a failed attempt past the exchange's expiry: the outbox row
/// goes and the exchange is `expired`.
async fn record_expired(
    state: &AppState,
    id: &str,
    attempts: i64,
    mut record: AuditRecord,
    err: String,
    may_have_arrived: bool,
) -> Result<&'static str, AppendError> {
    record.action = Action::ExchangeFailed;
    record.decision = Decision::Expired;
    record.reason = Some(format!("expired after {attempts} attempts: {err}"));
    let effects = vec![
        super::store::outbox_release(state, id),
        Stmt::new(
            "UPDATE exchanges SET status = 'expired', attempts = $1, last_error = $2 WHERE id = $3",
        )
        .int(attempts)
        .text(err)
        .text(id.to_owned()),
    ];
    let (consent_id, msg_type) = (record.consent_id.clone(), record.msg_type.clone());
    if may_have_arrived {
        possibly_received(state, id).await;
        crate::consent::notices::after_delivery(state, consent_id.as_deref(), msg_type.as_deref());
    }
    state.audit.append(record, effects).await.map(|_| "expired")
}

/// A failed attempt before the exchange's expiry.
struct Retry {
    attempts: i64,
    now: i64,
    err: String,
    may_have_arrived: bool,
}

/// Releases the claim of a failed attempt for a retry after the backoff;
/// `"retry-unrecorded"` when either row could not be written.
async fn schedule_retry(
    state: &AppState,
    id: &str,
    record: &AuditRecord,
    retry: Retry,
) -> &'static str {
    let Retry {
        attempts,
        now,
        err,
        may_have_arrived,
    } = retry;
    let delay = backoff(state, attempts);
    let next = now + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 4);
    // The exchange row first: a mark that the message may have
    // arrived is written before the row is released for a retry
    // (whose consent check may then refuse it).
    let r2 = sqlx::query(
        "UPDATE exchanges SET attempts = $1, last_error = $2, \
         possibly_received = CASE WHEN $3 = 1 THEN 1 ELSE possibly_received END WHERE id = $4",
    )
    .bind(attempts)
    .bind(err)
    .bind(i64::from(may_have_arrived))
    .bind(id.to_owned())
    .execute(state.store.pool())
    .await;
    let r1 = sqlx::query("UPDATE outbox SET attempts = $1, next_attempt_us = $2, claimed_until_us = 0 WHERE exchange_id = $3 AND claimed_by = $4")
        .bind(attempts)
        .bind(next)
        .bind(id.to_owned())
        .bind(state.instance_id.clone())
        .execute(state.store.pool())
        .await;
    if may_have_arrived {
        crate::consent::notices::after_delivery(
            state,
            record.consent_id.as_deref(),
            record.msg_type.as_deref(),
        );
    }
    tracing::info!(exchange.id = %id, attempts, retry_in_ms = delay.as_millis() as u64, "async delivery failed; will retry");
    match (r1, r2) {
        (Ok(_), Ok(_)) => "retry",
        _ => "retry-unrecorded",
    }
}

/// Marks an exchange whose message may have reached its recipient without
/// an acknowledged delivery (see [`super::deliver::DeliveryError::may_have_arrived`]):
/// revocation notices count it as received. Best effort: if it cannot be
/// written, it is logged.
pub async fn possibly_received(state: &AppState, exchange_id: &str) {
    let r = sqlx::query("UPDATE exchanges SET possibly_received = 1 WHERE id = $1")
        .bind(exchange_id.to_owned())
        .execute(state.store.pool())
        .await;
    if let Err(e) = r {
        tracing::warn!(exchange.id = %exchange_id, error = %e, "could not mark an exchange as possibly received");
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(max, initial·2^(n-1))].
fn backoff(state: &AppState, attempts: i64) -> Duration {
    let d = &state.config.delivery;
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let cap = d
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(exp))
        .min(d.backoff_max);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}
