//! The exchange path's consent check without a database read (issue 15):
//! a per-process cache of each subject's consents, kept correct across
//! instances by a version guard in the audit batch.
//!
//! A consent row carries a change counter (`version`, migration 0020),
//! bumped in the same transaction as every change that can alter an
//! exchange's decision: a revocation and a closure bump their own row,
//! recording a new consent bumps every other consent of the same subject
//! (the new one may be chosen instead, and its protected-identity marking
//! applies to the person). Nothing else changes what
//! [`model::decide_message`] answers: states move with the clock, which the
//! decision reads at every call.
//!
//! An exchange decided from cached rows is committed with a guard effect in
//! its `exchange-forwarded` transaction: `UPDATE consents SET version =
//! version WHERE id = $1 AND version = $2`, which must match a row. If the
//! chosen consent moved since it was read, the item is refused
//! ([`crate::audit::log::AppendError::Conflict`]) and nothing of it is
//! written or sent; the exchange then decides again from the database, once
//! ([`Lookup::Fresh`], which refreshes the cache). On PostgreSQL the guard
//! takes the consent's row lock, and every audit batch of every instance
//! first takes the sequencer lock, so a concurrent revocation is ordered
//! against it; on SQLite the batch runs under the database's write lock.
//! Hence a revocation that has returned on any instance is honoured by the
//! next exchange that starts anywhere after it.
//!
//! Every decision is guarded, whether it came from the cache or from a
//! database read, which also closes the window between reading and
//! committing that the exchange path had before the cache. A refused guard
//! makes the exchange decide again from the database, guarded too, at most
//! [`MAX_DECISIONS`] times in all; if the consent keeps changing, the
//! answer is 503 `unavailable` (nothing was written or sent, and an
//! idempotency key is released), so the client tries again.
//! A decision that refuses is never taken from the cache: it is read again,
//! so a consent just recorded on another instance is seen at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::model::{self, ConsentRow};
use crate::error::ApiError;
use crate::party::PartyId;
use crate::state::AppState;
use crate::store::Stmt;
use crate::subject::pseudonym::{Consent, Pseudonym};

/// Most subjects kept (the map is cleared when it is full: a miss only
/// costs the read the cache saves).
pub const MAX_SUBJECTS: usize = 20_000;

/// How many times one exchange decides its consent before it gives up with
/// 503 (each refused decision means the consent changed meanwhile).
pub const MAX_DECISIONS: usize = 3;

/// Where the exchange path takes a subject's consents from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lookup {
    /// The cache if it holds the subject (the decision is then guarded).
    #[default]
    Cached,
    /// The database (after the guard refused a cached decision).
    Fresh,
}

/// Each subject's consents (by `consent`-domain pseudonym), newest first,
/// as last read from the database.
#[derive(Default)]
pub struct ConsentCache {
    subjects: Mutex<HashMap<String, Arc<[ConsentRow]>>>,
}

impl ConsentCache {
    fn get(&self, subject: &str) -> Option<Arc<[ConsentRow]>> {
        self.subjects.lock().ok()?.get(subject).cloned()
    }

    fn put(&self, subject: &str, rows: Arc<[ConsentRow]>) {
        if let Ok(mut map) = self.subjects.lock() {
            if map.len() >= MAX_SUBJECTS && !map.contains_key(subject) {
                map.clear();
            }
            map.insert(subject.to_owned(), rows);
        }
    }

    /// Forgets a subject (after a consent change on this instance; the
    /// guard covers the changes of other instances).
    pub fn invalidate(&self, subject: &str) {
        if let Ok(mut map) = self.subjects.lock() {
            map.remove(subject);
        }
    }
}

/// The consent check of `POST /v1/exchanges` ([`model::decide_message`]):
/// the consent relied on, and the guard to commit with the decision when it
/// came from the cache.
pub async fn check(
    state: &AppState,
    lookup: Lookup,
    subject: &Pseudonym<Consent>,
    from: &PartyId,
    to: &PartyId,
    msg_type: &str,
    purpose: &str,
) -> Result<(ConsentRow, Option<Stmt>), ApiError> {
    let now_us = state.clock.now_us();
    let decide = |rows: &[ConsentRow]| {
        model::decide_message(rows, from, to, Some(msg_type), purpose, now_us)
    };
    if lookup == Lookup::Cached {
        if let Some(rows) = state.consent_cache.get(subject.as_str()) {
            if let Ok(c) = decide(&rows) {
                let guard = guard(&c);
                return Ok((c, Some(guard)));
            }
        }
    }
    metrics::counter!("samgate_consent_cache_misses_total").increment(1);
    let rows: Arc<[ConsentRow]> = model::for_subject(&state.store, subject.as_str())
        .await?
        .into();
    // Subjects without any consent are not kept: a sender cycling numbers
    // nobody consented for must not push the real subjects out.
    if !rows.is_empty() {
        state.consent_cache.put(subject.as_str(), rows.clone());
    }
    let c = decide(&rows)?;
    // Every decision is guarded, also one read from the database: a change
    // that commits between this read and the `exchange-forwarded` commit
    // then refuses it and the exchange decides again (at most
    // `MAX_DECISIONS` times, then 503), so nothing is forwarded under a
    // consent that a concurrent change made not cover.
    let guard = guard(&c);
    Ok((c, Some(guard)))
}

/// The guard effect: the consent is still at the version the decision read.
fn guard(c: &ConsentRow) -> Stmt {
    Stmt::new("UPDATE consents SET version = version WHERE id = $1 AND version = $2")
        .text(c.id.clone())
        .int(c.version)
        .expect_rows()
}

/// True when a guarded `exchange-forwarded` append was refused because the
/// consent moved (its other effects never expect rows).
pub fn refused(e: &crate::audit::log::AppendError, guarded: bool) -> bool {
    guarded && matches!(e, crate::audit::log::AppendError::Conflict)
}

/// What a refused guard answers if it were ever shown (it is not: the
/// exchange decides again from the database, where no guard is written).
pub fn stale_error() -> ApiError {
    metrics::counter!("samgate_consent_cache_stale_total").increment(1);
    super::ConsentError::Changed.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> ConsentRow {
        ConsentRow {
            id: id.into(),
            subject: "s".into(),
            issuer: "i".into(),
            parties: vec![],
            purposes: vec![],
            categories: vec![],
            method: "written".into(),
            recorded_by: "r".into(),
            not_before_us: 0,
            expires_at_us: 1,
            recorded_at_us: 0,
            revoked_at_us: None,
            given_by_role: None,
            given_by_sealed: None,
            given_by: None,
            protected_identity: false,
            closure: None,
            version: 3,
        }
    }

    #[test]
    fn a_revocation_counts_whatever_this_instances_clock_says() {
        // Revoked on an instance whose clock is ahead of this one.
        let mut c = row("c");
        c.expires_at_us = i64::MAX;
        c.revoked_at_us = Some(2_000);
        assert_eq!(c.state(1_000), model::ConsentState::Revoked);
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_on_invalidation() {
        let cache = ConsentCache::default();
        for i in 0..MAX_SUBJECTS {
            cache.put(&i.to_string(), Arc::from(vec![row("c")]));
        }
        assert!(cache.get("0").is_some());
        cache.put("new", Arc::from(vec![row("c")]));
        assert!(cache.get("0").is_none(), "a full map is cleared");
        assert_eq!(cache.get("new").unwrap()[0].version, 3);
        cache.invalidate("new");
        assert!(cache.get("new").is_none());
    }

    #[test]
    fn the_guard_names_the_consent_and_its_version() {
        let g = guard(&row("c-1"));
        assert!(g.expect_rows);
        assert!(g
            .sql
            .starts_with("UPDATE consents SET version = version WHERE"));
        assert!(
            matches!(&g.args[..], [crate::store::Arg::Text(Some(id)), crate::store::Arg::I64(Some(3))] if id == "c-1")
        );
    }
}
