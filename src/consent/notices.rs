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
//! # Deliveries that race the revocation
//!
//! The revocation reads who received data, then commits. A delivery that
//! completes after that read (an async attempt in flight, or a sync
//! exchange decided just before the revocation and forwarded just after)
//! is not named by its notices. Every exchange a notice names is marked
//! (`revocation_notice_marks`, one row per consent, party and exchange, in
//! the notice's own transaction), and [`sweep`] queues a further notice for
//! what a revoked consent's parties received and no notice named yet. It
//! runs after the revocation commits and after every delivery under a
//! consent (spawned, off the answer's path), so whichever of the two
//! commits last finds the other: a delivery committed before the
//! revocation is seen by the revocation's sweep, one committed after sees
//! the revocation. [`sweep_pending`] runs when the outbox starts and with
//! its housekeeping (every ten minutes), for a sweep a crash cut short. The marks'
//! primary key makes two sweeps that race name an exchange once: the
//! second's transaction fails and queues nothing. Such a late notice is
//! committed without an audit record of its own (the decision is the
//! `consent-revoked` record already in the log); its delivery is recorded
//! as `revocation-notified` like every notice.
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
use crate::audit::record::Action;
use crate::error::ApiError;
use crate::policy::SubjectMode;
use crate::state::AppState;
use crate::store::Stmt;
use crate::subject::personnummer::Personnummer;
use crate::subject::pseudonym::{Consent, Pseudonym};

/// The notices for a consent revoked at `revoked_at_us`: the statements to
/// commit with the revocation, and how many notices they queue.
pub async fn notice_stmts(
    state: &AppState,
    row: &ConsentRow,
    revoked_at_us: i64,
    audit_subject: Option<&str>,
) -> Result<(Vec<Stmt>, usize), ApiError> {
    let (groups, forms) = recipients(state, &row.id).await?;
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
    // The configuration in force now (a reload may have moved an endpoint).
    let live = state.current_live();
    let mut stmts = Vec::new();
    let mut count = 0;
    for ((party, mode), exchange_ids) in groups {
        let mode = parse_mode(Some(mode));
        let endpoint = live.config.party(&party).and_then(|p| p.endpoint.clone());
        let consent_ref = lifecycle::recipient_consent_id(&state.crypto, mode, &party, &row.id);
        let notice_id = match (endpoint, consent_ref.is_empty()) {
            (Some(endpoint), false) => {
                let notice = Notice {
                    party: &party,
                    mode,
                    consent_ref,
                    // A party that received data in several forms gets its
                    // non-`reveal` notices later and with the day only, so
                    // that their time does not join the forms (§10).
                    separate: forms.get(party.as_str()).copied().unwrap_or(0) > 1
                        && mode != SubjectMode::Reveal,
                };
                let id = notice.stmts(
                    state,
                    row,
                    revoked_at_us,
                    audit_subject,
                    subject.as_ref(),
                    &endpoint,
                    &exchange_ids,
                    &mut stmts,
                )?;
                count += 1;
                id
            }
            (endpoint, _) => unsent(row, &party, endpoint.is_none()),
        };
        mark_stmts(row, &party, &exchange_ids, &notice_id, &mut stmts);
    }
    Ok((stmts, count))
}

/// A party that only sends (it got a reply) and has no endpoint, or for
/// which no reference can be formed: it cannot be told through the outbox.
/// Logged and counted once (its exchanges are marked with the returned
/// `unsent:<reason>`), so an operator can tell it another way.
fn unsent(row: &ConsentRow, party: &str, no_endpoint: bool) -> String {
    let reason = if no_endpoint {
        "no_endpoint"
    } else {
        "no_reference"
    };
    tracing::warn!(consent.id = %row.id, party = %party, reason, "a revocation notice cannot be sent");
    metrics::counter!("samgate_revocation_notices_unsent_total", "reason" => reason).increment(1);
    format!("unsent:{reason}")
}

/// Marks each of the party's exchanges under the consent with the notice
/// that tells of it (or its `unsent:` reason).
fn mark_stmts(
    row: &ConsentRow,
    party: &str,
    exchange_ids: &BTreeSet<String>,
    notice_id: &str,
    stmts: &mut Vec<Stmt>,
) {
    for exchange_id in exchange_ids {
        stmts.push(
            Stmt::new(
                "INSERT INTO revocation_notice_marks (consent_id, party, exchange_id, notice_id) \
                 VALUES ($1, $2, $3, $4)",
            )
            .text(row.id.clone())
            .text(party.to_owned())
            .text(exchange_id.clone())
            .text(notice_id.to_owned()),
        );
    }
}

/// One notice to one party in one form.
struct Notice<'a> {
    party: &'a str,
    mode: SubjectMode,
    consent_ref: String,
    /// Sent later (1–15 minutes at random, at most a quarter of
    /// `[delivery] expire_after`) with `revoked_at` at the day.
    separate: bool,
}

impl Notice<'_> {
    /// Pushes the notice's exchange row and outbox row; returns its id.
    #[expect(
        clippy::too_many_arguments,
        reason = "one notice from the parts notice_stmts holds"
    )]
    fn stmts(
        &self,
        state: &AppState,
        row: &ConsentRow,
        revoked_at_us: i64,
        audit_subject: Option<&str>,
        subject: Option<&Personnummer>,
        endpoint: &str,
        exchange_ids: &BTreeSet<String>,
        stmts: &mut Vec<Stmt>,
    ) -> Result<String, ApiError> {
        let subject_json = match (self.mode, subject) {
            (SubjectMode::Reveal, Some(p)) => json!({"personnummer": p.expose()}),
            (SubjectMode::Pseudonymise, Some(p)) => match state.crypto.pseudonym(self.party, p) {
                Some(ps) => json!({"pseudonym": ps.as_str()}),
                None => Value::Null,
            },
            _ => Value::Null,
        };
        const DAY_US: i64 = 86_400_000_000;
        let (revoked_at, delay_us) = if self.separate {
            use rand::Rng;
            // Never more than a quarter of `[delivery] expire_after`, so
            // that the delay cannot make the notice expire unsent.
            let quarter = i64::try_from(state.config.delivery.expire_after.as_micros() / 4)
                .unwrap_or(i64::MAX);
            let max_us = (900 * 1_000_000_i64).min(quarter).max(1);
            let min_us = (60 * 1_000_000_i64).min(max_us);
            let delay_us = rand::thread_rng().gen_range(min_us..=max_us);
            (revoked_at_us - revoked_at_us.rem_euclid(DAY_US), delay_us)
        } else {
            (revoked_at_us, 0)
        };
        // A random id (v4): a v7 id carries its creation time to the
        // millisecond, which would pair the notices of one revocation.
        let notice_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "exchange_id": notice_id,
            "from": NOTICE_SENDER,
            "to": self.party,
            "type": NOTICE_TYPE,
            "consent_id": self.consent_ref,
            "subject": subject_json,
            "revoked_at": crate::clock::rfc3339_us(revoked_at),
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
            .text(self.party)
            .text(NOTICE_TYPE)
            .text(row.id.clone())
            .opt_text(audit_subject.map(str::to_owned))
            .int(state.clock.now_us())
            .text(mode_name(self.mode)),
        );
        stmts.push(crate::exchange::store::outbox_insert(
            state, &notice_id, endpoint, &bytes,
        )?);
        if delay_us > 0 {
            stmts.push(
                Stmt::new("UPDATE outbox SET next_attempt_us = next_attempt_us + $1 WHERE exchange_id = $2")
                    .int(delay_us)
                    .text(notice_id.clone()),
            );
        }
        Ok(notice_id)
    }
}

/// Queues a notice for what the parties of a revoked consent received and
/// no notice has named yet (see the module's "Deliveries that race the
/// revocation"). Returns how many notices it queued; 0 when the consent is
/// not revoked, nothing is pending, or a concurrent sweep named it first.
pub async fn sweep(state: &AppState, consent_id: &str) -> Result<usize, ApiError> {
    let Some(row) = super::model::fetch(&state.store, consent_id).await? else {
        return Ok(0);
    };
    let Some(revoked_at_us) = row.revoked_at_us else {
        return Ok(0);
    };
    let subject = audit_subject_of(state, &row).await?;
    // Twice at most: a mark that a concurrent sweep committed first makes
    // the transaction fail; read the marks again and queue what is left.
    let mut count = 0;
    for _ in 0..2 {
        let (stmts, n) = notice_stmts(state, &row, revoked_at_us, subject.as_deref()).await?;
        if stmts.is_empty() {
            return Ok(0);
        }
        match commit(state, &stmts).await {
            Ok(()) => {
                count = n;
                break;
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tracing::debug!(consent.id = %consent_id, "a concurrent sweep named some exchanges first");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if count == 0 {
        return Ok(0);
    }
    tracing::info!(consent.id = %consent_id, notices = count, "late revocation notices queued");
    state.outbox_notify.notify_one();
    Ok(count)
}

/// Runs `stmts` in one transaction.
async fn commit(state: &AppState, stmts: &[Stmt]) -> Result<(), sqlx::Error> {
    let mut tx = state.store.pool().begin().await?;
    for stmt in stmts {
        stmt.execute(&mut tx).await?;
    }
    tx.commit().await
}

/// After a delivery under `consent_id`: if the consent was revoked in the
/// meantime, the recipient is told (spawned, off the answer's path).
pub fn after_delivery(state: &AppState, consent_id: Option<&str>, msg_type: Option<&str>) {
    let Some(consent_id) = consent_id else {
        return;
    };
    if lifecycle::is_notice(msg_type) {
        return;
    }
    let (state, consent_id) = (state.clone(), consent_id.to_owned());
    tokio::spawn(async move {
        if let Err(e) = sweep(&state, &consent_id).await {
            tracing::warn!(consent.id = %consent_id, error = %e, "revocation sweep after a delivery failed; the outbox's housekeeping sweeps again");
        }
    });
}

/// Sweeps every revoked consent that has a received exchange no notice
/// named (a sweep that a crash or a storage error cut short).
pub async fn sweep_pending(state: &AppState) {
    let pending = pending_consents(state).await;
    match pending {
        Ok(ids) => {
            for id in ids {
                if let Err(e) = sweep(state, &id).await {
                    tracing::warn!(consent.id = %id, error = %e, "revocation sweep failed");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for unsent revocation notices"),
    }
}

/// Revoked consents with a received exchange, or a reply passed to its
/// sender, that no notice has named.
async fn pending_consents(state: &AppState) -> Result<Vec<String>, sqlx::Error> {
    let mut ids: BTreeSet<String> = sqlx::query_scalar(
        "SELECT DISTINCT e.consent_id FROM exchanges e JOIN consents c ON c.id = e.consent_id \
         WHERE c.revoked_at_us IS NOT NULL \
         AND (e.status IN ('delivered', 'forwarded') OR e.possibly_received = 1) \
         AND e.msg_type <> $1 AND NOT EXISTS (SELECT 1 FROM revocation_notice_marks m \
         WHERE m.consent_id = e.consent_id AND m.party = e.recipient AND m.exchange_id = e.id)",
    )
    .bind(NOTICE_TYPE)
    .fetch_all(state.store.pool())
    .await?
    .into_iter()
    .collect();
    let replies: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT a.consent_id FROM audit_records a JOIN consents c ON c.id = a.consent_id \
         WHERE a.action = $1 AND c.revoked_at_us IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM revocation_notice_marks m WHERE m.consent_id = a.consent_id \
         AND m.party = a.to_party AND m.exchange_id = a.exchange_id)",
    )
    .bind(Action::ReplyForwarded.as_str())
    .fetch_all(state.store.pool())
    .await?;
    ids.extend(replies);
    Ok(ids.into_iter().collect())
}

/// The audit-domain subject of a consent, from its consent-recorded record
/// (the consent row only holds the consent-domain pseudonym).
pub async fn audit_subject_of(
    state: &AppState,
    row: &ConsentRow,
) -> Result<Option<String>, ApiError> {
    let subject: Option<Option<String>> = sqlx::query_scalar(
        "SELECT subject FROM audit_records WHERE consent_id = $1 AND action = $2 ORDER BY seq LIMIT 1",
    )
    .bind(row.id.clone())
    .bind(Action::ConsentRecorded.as_str())
    .fetch_optional(state.store.pool())
    .await?;
    Ok(subject.flatten())
}

/// What each party received under the consent and no notice has named
/// yet, and in how many forms each party received the subject in all
/// (named exchanges included: a late notice must not give away the form
/// that an earlier notice already named).
type Groups = BTreeMap<(String, &'static str), BTreeSet<String>>;

async fn recipients(
    state: &AppState,
    consent_id: &str,
) -> Result<(Groups, BTreeMap<String, usize>), ApiError> {
    let delivered: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, recipient, subject_mode FROM exchanges \
         WHERE consent_id = $1 AND (status IN ('delivered', 'forwarded') OR possibly_received = 1) \
         AND msg_type <> $2",
    )
    .bind(consent_id.to_owned())
    .bind(NOTICE_TYPE)
    .fetch_all(state.store.pool())
    .await?;
    let replies: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT exchange_id, to_party FROM audit_records WHERE consent_id = $1 AND action = $2",
    )
    .bind(consent_id.to_owned())
    .bind(Action::ReplyForwarded.as_str())
    .fetch_all(state.store.pool())
    .await?;
    let named: BTreeSet<(String, String)> = sqlx::query_as::<_, (String, String)>(
        "SELECT party, exchange_id FROM revocation_notice_marks WHERE consent_id = $1",
    )
    .bind(consent_id.to_owned())
    .fetch_all(state.store.pool())
    .await?
    .into_iter()
    .collect();
    let mut all: Groups = BTreeMap::new();
    for (id, recipient, mode) in delivered {
        all.entry((recipient, mode_name(parse_mode(mode.as_deref()))))
            .or_default()
            .insert(id);
    }
    for (id, sender) in replies {
        if let (Some(id), Some(sender)) = (id, sender) {
            all.entry((sender, mode_name(SubjectMode::Reveal)))
                .or_default()
                .insert(id);
        }
    }
    let mut forms: BTreeMap<String, usize> = BTreeMap::new();
    for (party, _) in all.keys() {
        *forms.entry(party.clone()).or_insert(0) += 1;
    }
    let mut groups = Groups::new();
    for ((party, mode), ids) in all {
        let ids: BTreeSet<String> = ids
            .into_iter()
            .filter(|id| !named.contains(&(party.clone(), id.clone())))
            .collect();
        if !ids.is_empty() {
            groups.insert((party, mode), ids);
        }
    }
    Ok((groups, forms))
}

/// The participant's personnummer, from the consent-domain vault row that
/// was written when the consent was recorded.
async fn subject_of(state: &AppState, row: &ConsentRow) -> Result<Option<Personnummer>, ApiError> {
    let Ok(ps) = Pseudonym::<Consent>::parse(&row.subject) else {
        return Ok(None);
    };
    let row = crate::subject::vault::Row::Consent(&ps);
    Ok(crate::subject::open_vault_row(state, row).await?)
}
