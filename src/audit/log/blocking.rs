//! The SQLite engine of the audit writer: a whole batch in one call on the
//! writer's own connection ([`crate::store::sqlite_thread`]), with cached
//! prepared statements. Same transaction shape and guarantees as the sqlx
//! engine in the parent module: the write lock first (`BEGIN IMMEDIATE`),
//! then each item's side effects (in a savepoint on the second try), the
//! records, their tree nodes and the new state, then COMMIT.

use std::sync::Arc;

use rusqlite::{params, Connection, TransactionBehavior};

use super::{AppendError, Appended, BatchError, EffectError, HeadSigner, Sequencer};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::merkle::Frontier;
use crate::audit::record::AuditRecord;
use crate::store::Stmt;

/// One batch: what [`super::Writer`] hands to the SQLite thread.
pub(super) struct Batch {
    pub items: Arc<Vec<(AuditRecord, Vec<Stmt>)>>,
    pub savepoints: bool,
    pub time: String,
    pub time_us: i64,
}

fn storage(e: impl std::fmt::Display) -> BatchError {
    BatchError::Storage(e.to_string())
}

/// A database refusal of the statement itself (a constraint), as opposed to
/// storage trouble (I/O, busy, a full disk).
fn is_refusal(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Runs one group-commit transaction. Either every `Ok` in the result is
/// committed, or the call fails and nothing is.
pub(super) fn write(
    conn: &mut Connection,
    batch: &Batch,
) -> Result<Vec<Result<Appended, AppendError>>, BatchError> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let (size, frontier) = read_state(&tx)?;
    let mut seq = Sequencer::new(size, frontier, batch.items.len());
    for (record, effects) in batch.items.iter() {
        if effects.is_empty() {
            seq.admit(record, &batch.time)?;
            continue;
        }
        if !batch.savepoints {
            all_effects(&tx, effects)?;
            seq.admit(record, &batch.time)?;
            continue;
        }
        // Second try: each item's effects in a savepoint, so one refused item
        // (a replayed consent id) leaves the others.
        match item_effects(&mut tx, effects)? {
            Some(err) => seq.refuse(err),
            None => seq.admit(record, &batch.time)?,
        }
    }
    write_tree(&tx, &seq, batch.time_us)?;
    let out = seq.finish();
    tx.commit().map_err(storage)?;
    Ok(out)
}

/// The first try's effects of one item, on the transaction itself: any
/// refusal fails the whole batch, which is then retried with savepoints.
fn all_effects(tx: &Connection, effects: &[Stmt]) -> Result<(), BatchError> {
    for stmt in effects {
        match stmt.execute_blocking(tx) {
            Ok(0) if stmt.expect_rows => return Err(BatchError::EffectFailed),
            Ok(_) => {}
            Err(e) if is_refusal(&e) => return Err(BatchError::EffectFailed),
            Err(e) => return Err(storage(e)),
        }
    }
    Ok(())
}

/// One item's effects in a savepoint: `Some` with the refusal (and the
/// savepoint rolled back) if one of them was refused.
fn item_effects(
    tx: &mut rusqlite::Transaction<'_>,
    effects: &[Stmt],
) -> Result<Option<AppendError>, BatchError> {
    let sp = tx.savepoint().map_err(storage)?;
    let mut failed = None;
    for stmt in effects {
        match stmt.execute_blocking(&sp) {
            Ok(0) if stmt.expect_rows => {
                failed = Some(AppendError::Conflict);
                break;
            }
            Ok(_) => {}
            Err(e) if is_refusal(&e) => {
                failed = Some(AppendError::Effect(EffectError::from(e)));
                break;
            }
            Err(e) => return Err(storage(e)),
        }
    }
    match failed {
        Some(err) => {
            // Dropping a savepoint rolls it back.
            drop(sp);
            Ok(Some(err))
        }
        None => {
            sp.commit().map_err(storage)?;
            Ok(None)
        }
    }
}

/// The admitted records, the completed tree nodes and the new tree state.
fn write_tree(tx: &Connection, seq: &Sequencer, time_us: i64) -> Result<(), BatchError> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO audit_records (seq, time_us, action, actor_party, from_party, \
             to_party, msg_type, subject, exchange_id, consent_id, decision, leaf) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(storage)?;
    for (record, leaf) in &seq.rows {
        insert
            .execute(params![
                i64::try_from(record.seq).map_err(storage)?,
                time_us,
                record.action.as_str(),
                record.actor_party,
                record.from,
                record.to,
                record.msg_type,
                record.subject,
                record.exchange_id,
                record.consent_id,
                record.decision.as_str(),
                leaf,
            ])
            .map_err(storage)?;
    }
    let mut node = tx
        .prepare_cached("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
        .map_err(storage)?;
    for n in &seq.nodes {
        node.execute(params![
            i64::from(n.level),
            i64::try_from(n.index).map_err(storage)?,
            &n.hash[..],
        ])
        .map_err(storage)?;
    }
    tx.prepare_cached("UPDATE audit_state SET tree_size = ?1, frontier = ?2 WHERE id = 1")
        .map_err(storage)?
        .execute(params![
            i64::try_from(seq.size).map_err(storage)?,
            seq.frontier.to_bytes()
        ])
        .map_err(storage)?;
    Ok(())
}

/// Reads the tree state under the write lock `BEGIN IMMEDIATE` took.
fn read_state(tx: &Connection) -> Result<(u64, Frontier), BatchError> {
    let (size, bytes): (i64, Vec<u8>) = tx
        .prepare_cached("SELECT tree_size, frontier FROM audit_state WHERE id = 1")
        .map_err(storage)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => {
                storage("the audit_state row is missing (the migrations create it)")
            }
            other => storage(other),
        })?;
    super::checked_state(size, &bytes).map_err(BatchError::Storage)
}

/// Signs and stores a head for the current tree if it is newer than the
/// latest stored one. Returns the stored checkpoint, if one was made.
pub(super) fn sign_head(
    conn: &mut Connection,
    signer: &HeadSigner,
    now_us: i64,
) -> Result<Option<(u64, String)>, String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let (size, frontier) = read_state(&tx).map_err(|e| match e {
        BatchError::Storage(s) => s,
        BatchError::EffectFailed => "unexpected effect failure".to_owned(),
    })?;
    let latest: Option<i64> = tx
        .query_row("SELECT MAX(tree_size) FROM tree_heads", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let size_i = i64::try_from(size).map_err(|e| e.to_string())?;
    if latest.is_some_and(|l| l >= size_i) {
        return Ok(None);
    }
    let root = frontier.root();
    let cp = Checkpoint {
        origin: signer.origin.clone(),
        tree_size: size,
        root_hash: root,
    };
    let note = cp.sign(signer).map_err(|e| e.to_string())?;
    tx.execute(
        "INSERT INTO tree_heads (tree_size, root_hash, time_us, checkpoint) VALUES (?1, ?2, ?3, ?4)",
        params![size_i, &root[..], now_us, note],
    )
    .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(Some((size, note)))
}
