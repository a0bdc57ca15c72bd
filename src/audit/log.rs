//! The audit log writer: `append` is the only way in (DESIGN §6).
//!
//! One writer task per instance batches concurrent appends into one
//! transaction (group commit). Each record is written together with the
//! decision it documents (its [`Stmt`] side effects: the consent row, the
//! exchange row, the outbox row...) inside a savepoint, so an audit record
//! never exists without its decision or the other way round, and one failing
//! item does not sink the batch.
//!
//! Sequencing: the batch starts by updating the single `audit_state` row,
//! which takes the database's write lock on it (SQLite: the database write
//! lock; PostgreSQL: the row lock, held until commit). Under that lock it
//! reads `tree_size` and the Merkle frontier, assigns `seq = size + 1, ...`,
//! stores each record, its leaf hash and every perfect subtree node it
//! completes, and writes the new size and frontier back. A rollback leaves
//! nothing behind, and the next batch (of any instance) re-reads the state
//! under the lock: `seq` is gap-free and there is one tree, whatever the
//! number of instances. The caller is answered only after COMMIT returns.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Acquire;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpoint;
use super::merkle::{self, Frontier};
use super::record::AuditRecord;
use crate::clock::{rfc3339_precise, Clock};
use crate::keys::Ed25519Signer;
use crate::store::sqlite_thread::SqliteThread;
use crate::store::{Backend, Stmt, Store};

mod blocking;

/// Why an append failed. Nothing was written in either case.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// One of the item's side effects was refused by the database (e.g. a
    /// unique key: a replayed consent id).
    #[error("the decision could not be recorded: {0}")]
    Effect(EffectError),
    /// A side effect matched no row where it had to (a concurrent change).
    #[error("the decision no longer applies (a concurrent change)")]
    Conflict,
    /// Storage failed or is unreachable.
    #[error("audit storage unavailable: {0}")]
    Unavailable(String),
}

/// A side effect the database refused, from either driver.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EffectError {
    /// A unique or primary-key constraint was violated.
    pub unique: bool,
    /// The database's message (SQL errors carry no bound values).
    pub message: String,
}

impl From<sqlx::Error> for EffectError {
    fn from(e: sqlx::Error) -> Self {
        let unique = matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation());
        EffectError {
            unique,
            message: e.to_string(),
        }
    }
}

impl From<rusqlite::Error> for EffectError {
    fn from(e: rusqlite::Error) -> Self {
        let unique = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        );
        EffectError {
            unique,
            message: e.to_string(),
        }
    }
}

impl AppendError {
    /// True for a unique-constraint violation in a side effect.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, AppendError::Effect(e) if e.unique)
    }
}

/// Why a batch transaction did not commit.
enum BatchError {
    /// A side effect failed in optimistic mode: retry with savepoints.
    EffectFailed,
    /// Storage failed; nothing was written.
    Storage(String),
}

impl From<String> for BatchError {
    fn from(s: String) -> Self {
        BatchError::Storage(s)
    }
}

/// A committed append.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's time.
    pub time: String,
}

struct Job {
    record: AuditRecord,
    effects: Vec<Stmt>,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

enum Msg {
    Append(Box<Job>),
    Head(oneshot::Sender<Result<(), String>>),
}

/// Signs checkpoints with the audit key.
pub struct HeadSigner {
    /// `samgate/<deployment id>`: origin and key name.
    pub origin: String,
    /// The Ed25519 audit key.
    pub key: Arc<Ed25519Signer>,
}

impl super::checkpoint::NoteSigner for HeadSigner {
    fn name(&self) -> &str {
        &self.origin
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg)
    }
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    heads: tokio::sync::watch::Receiver<u64>,
}

impl AuditLog {
    /// Starts the writer task.
    pub fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        signer: Arc<HeadSigner>,
        max_batch: usize,
        head_interval: Duration,
    ) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4).max(64));
        let sqlite = match (store.backend(), store.sqlite_path()) {
            (Backend::Sqlite, Some(path)) => {
                match SqliteThread::open(path, "samgate-audit", SQLITE_BUSY_TIMEOUT) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        // The pool works on the same file: slower, still correct.
                        tracing::warn!(error = %e, "audit writer: own SQLite connection unavailable; using the pool");
                        None
                    }
                }
            }
            _ => None,
        };
        let (heads_tx, heads) = tokio::sync::watch::channel(0);
        let writer = Writer {
            store,
            sqlite,
            clock,
            signer,
            max_batch,
            head_interval,
            heads: heads_tx,
        };
        let task = tokio::spawn(writer.run(rx));
        (AuditLog { tx, heads }, task)
    }

    /// The seam for everything that follows signed heads (the witnesses, DESIGN §12): the
    /// size of the newest head this writer has committed, updated after each commit.
    pub fn subscribe_heads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.heads.clone()
    }

    /// Appends a record together with its side effects, durably. Returns
    /// after the transaction has committed.
    pub async fn append(
        &self,
        record: AuditRecord,
        effects: Vec<Stmt>,
    ) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Box::new(Job {
                // DESIGN §10: record strings are bounded.
                record: record.bounded(),
                effects,
                reply,
            })))
            .await
            .map_err(|_| AppendError::Unavailable("the audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| AppendError::Unavailable("the audit writer has stopped".into()))?
    }

    /// Signs a tree head now if the latest one is behind the tree.
    pub async fn sign_head(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Head(reply))
            .await
            .map_err(|_| "the audit writer has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the audit writer has stopped".to_owned())?
    }
}

struct Writer {
    store: Store,
    /// On a SQLite file: the writer's own connection, so that a batch costs
    /// one thread hand-off instead of one per statement. `None` on
    /// PostgreSQL (and for `:memory:`), where the pool is used.
    sqlite: Option<SqliteThread>,
    clock: Arc<dyn Clock>,
    signer: Arc<HeadSigner>,
    max_batch: usize,
    head_interval: Duration,
    heads: tokio::sync::watch::Sender<u64>,
}

/// How long the writer's SQLite connection waits for another writer (a
/// second process on the same file, or the pool's consent writes).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut last_head = std::time::Instant::now();
        let mut dirty = true; // sign once at start if the tree moved while we were down
        let mut tick = tokio::time::interval(self.head_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = tick.tick() => {
                    if dirty && last_head.elapsed() >= self.head_interval && self.sign_head().await.is_ok() {
                        dirty = false;
                        last_head = std::time::Instant::now();
                    }
                    continue;
                }
            };
            let mut jobs = Vec::new();
            let mut heads = Vec::new();
            let push = |m: Msg, jobs: &mut Vec<Job>, heads: &mut Vec<_>| match m {
                Msg::Append(j) => jobs.push(*j),
                Msg::Head(h) => heads.push(h),
            };
            push(first, &mut jobs, &mut heads);
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(m) => push(m, &mut jobs, &mut heads),
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                self.write_batch(jobs).await;
                dirty = true;
                metrics::counter!("samgate_audit_batches_total").increment(1);
            }
            if !heads.is_empty() || (dirty && last_head.elapsed() >= self.head_interval) {
                let r = self.sign_head().await;
                if r.is_ok() {
                    dirty = false;
                    last_head = std::time::Instant::now();
                }
                for h in heads {
                    let _ = h.send(r.clone());
                }
            }
        }
        // Channel closed: graceful stop. Sign the final head.
        if dirty {
            let _ = self.sign_head().await;
        }
    }

    async fn write_batch(&self, jobs: Vec<Job>) {
        let (replies, items): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| (j.reply, (j.record, j.effects)))
            .unzip();
        let items = Arc::new(items);
        // Optimistic first: side effects run without savepoints. If one fails
        // (rare: a replayed consent id, a concurrent revocation), the whole
        // transaction is rolled back and the batch runs again with a
        // savepoint per item, so only the failing item is refused.
        let first = self.batch_tx(&items, false).await;
        let outcome = match first {
            Err(BatchError::EffectFailed) => self.batch_tx(&items, true).await,
            other => other,
        };
        match outcome.map_err(|e| match e {
            BatchError::Storage(s) => s,
            BatchError::EffectFailed => "a side effect failed twice".to_owned(),
        }) {
            Ok(results) => {
                let ok = results.iter().filter(|r| r.is_ok()).count();
                metrics::counter!("samgate_audit_records_total").increment(ok as u64);
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, records = replies.len(), "audit batch failed; nothing was written");
                for reply in replies {
                    let _ = reply.send(Err(AppendError::Unavailable(e.clone())));
                }
            }
        }
    }

    /// One group-commit transaction. Either every `Ok` in the result is
    /// committed, or the whole call fails and nothing is.
    async fn batch_tx(
        &self,
        items: &Arc<Vec<(AuditRecord, Vec<Stmt>)>>,
        savepoints: bool,
    ) -> Result<Vec<Result<Appended, AppendError>>, BatchError> {
        let now = self.clock.now();
        let time = rfc3339_precise(now);
        let time_us = crate::clock::to_us(now);
        if let Some(thread) = &self.sqlite {
            let batch = blocking::Batch {
                items: items.clone(),
                savepoints,
                time,
                time_us,
            };
            return thread
                .call(move |conn| blocking::write(conn, &batch))
                .await
                .map_err(|e| BatchError::Storage(e.to_string()))?;
        }
        let (mut tx, size, frontier) = self.begin_locked().await?;
        let mut seq = Sequencer::new(size, frontier, items.len());
        if !savepoints {
            // Optimistic: every effect of the batch, identical one-row
            // inserts merged into multi-row ones (one round trip each).
            optimistic_effects(&mut tx, items).await?;
        }
        for (record, effects) in items.iter() {
            if !effects.is_empty() && savepoints {
                // The decision's side effects run in a savepoint so that one
                // refused item (e.g. a replayed consent id) leaves the others.
                if let Some(err) = item_effects(&mut tx, effects).await? {
                    seq.refuse(err);
                    continue;
                }
            }
            seq.admit(record, &time)?;
        }
        write_tree(&mut tx, &seq, time_us).await?;
        let out = seq.finish();
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Signs and stores a head for the current tree if it is newer than the
    /// latest stored head.
    async fn sign_head(&self) -> Result<(), String> {
        if let Some(thread) = &self.sqlite {
            let signer = self.signer.clone();
            let now_us = self.clock.now_us();
            let signed = thread
                .call(move |conn| blocking::sign_head(conn, &signer, now_us))
                .await
                .map_err(|e| e.to_string())??;
            // A new head goes to the witnesses (see `subscribe_heads`).
            if let Some((size, _)) = signed {
                self.heads.send_replace(size);
            }
            return Ok(());
        }
        let (mut tx, size, frontier) = self.begin_locked().await?;
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(tree_size) FROM tree_heads")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        if latest.is_some_and(|l| l >= i64::try_from(size).unwrap_or(i64::MAX)) {
            tx.rollback().await.map_err(|e| e.to_string())?;
            return Ok(());
        }
        let root = frontier.root();
        let cp = Checkpoint {
            origin: self.signer.origin.clone(),
            tree_size: size,
            root_hash: root,
        };
        let note = cp.sign(&*self.signer).map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO tree_heads (tree_size, root_hash, time_us, checkpoint) VALUES ($1, $2, $3, $4)")
            .bind(i64::try_from(size).map_err(|e| e.to_string())?)
            .bind(root.to_vec())
            .bind(self.clock.now_us())
            .bind(note)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        self.heads.send_replace(size);
        Ok(())
    }
}

/// The audit writer's PostgreSQL (or pooled) transaction.
type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Runs every effect of the batch at once (the optimistic first try): any
/// refusal fails the whole batch, which is then retried with savepoints.
async fn optimistic_effects(
    tx: &mut Tx,
    items: &[(AuditRecord, Vec<Stmt>)],
) -> Result<(), BatchError> {
    let effects = crate::store::batch::group(items.iter().flat_map(|(_, e)| e.iter()));
    for stmt in &effects {
        match stmt.execute(tx).await {
            Ok(rows) if stmt.expect_rows && rows == 0 => return Err(BatchError::EffectFailed),
            Ok(_) => {}
            Err(sqlx::Error::Database(_)) => return Err(BatchError::EffectFailed),
            Err(e) => return Err(BatchError::Storage(e.to_string())),
        }
    }
    Ok(())
}

/// Runs one item's effects in a savepoint: `Some` with the refusal (and
/// the savepoint rolled back) if one of them was refused.
async fn item_effects(tx: &mut Tx, effects: &[Stmt]) -> Result<Option<AppendError>, BatchError> {
    let mut sp = tx.begin().await.map_err(|e| e.to_string())?;
    let mut failed = None;
    for stmt in effects {
        match stmt.execute(&mut sp).await {
            Ok(rows) if stmt.expect_rows && rows == 0 => {
                failed = Some(AppendError::Conflict);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                failed = Some(AppendError::Effect(e.into()));
                break;
            }
        }
    }
    if let Some(err) = failed {
        sp.rollback().await.map_err(|e| e.to_string())?;
        return Ok(Some(err));
    }
    sp.commit().await.map_err(|e| e.to_string())?;
    Ok(None)
}

/// Writes the admitted records, the completed tree nodes and the new tree
/// state, with multi-row inserts.
async fn write_tree(tx: &mut Tx, seq: &Sequencer, time_us: i64) -> Result<(), BatchError> {
    // Records and tree nodes go in with multi-row inserts: a handful of
    // statements per batch instead of several per record.
    for chunk in seq.rows.chunks(RECORDS_PER_INSERT) {
        let sql = multi_insert(
            "INSERT INTO audit_records (seq, time_us, action, actor_party, from_party, to_party, \
             msg_type, subject, exchange_id, consent_id, decision, leaf) VALUES ",
            12,
            chunk.len(),
        );
        let mut q = sqlx::query(&sql);
        for (record, leaf) in chunk {
            q = q
                .bind(i64::try_from(record.seq).map_err(|e| e.to_string())?)
                .bind(time_us)
                .bind(record.action.as_str())
                .bind(record.actor_party.clone())
                .bind(record.from.clone())
                .bind(record.to.clone())
                .bind(record.msg_type.clone())
                .bind(record.subject.clone())
                .bind(record.exchange_id.clone())
                .bind(record.consent_id.clone())
                .bind(record.decision.as_str())
                .bind(leaf.clone());
        }
        q.execute(&mut **tx).await.map_err(|e| e.to_string())?;
    }
    for chunk in seq.nodes.chunks(NODES_PER_INSERT) {
        let sql = multi_insert(
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES ",
            3,
            chunk.len(),
        );
        let mut q = sqlx::query(&sql);
        for node in chunk {
            q = q
                .bind(i64::from(node.level))
                .bind(i64::try_from(node.index).map_err(|e| e.to_string())?)
                .bind(node.hash.to_vec());
        }
        q.execute(&mut **tx).await.map_err(|e| e.to_string())?;
    }
    sqlx::query("UPDATE audit_state SET tree_size = $1, frontier = $2 WHERE id = 1")
        .bind(i64::try_from(seq.size).map_err(|e| e.to_string())?)
        .bind(seq.frontier.to_bytes())
        .execute(&mut **tx)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Assigns sequence numbers and grows the tree for the records of one batch,
/// in order; both engines use it between their effects and their inserts.
struct Sequencer {
    size: u64,
    frontier: Frontier,
    /// Admitted records (with `seq` and `time` set) and their leaf bytes.
    rows: Vec<(AuditRecord, Vec<u8>)>,
    /// Perfect subtree nodes completed by the admitted leaves.
    nodes: Vec<merkle::Node>,
    out: Vec<Result<Appended, AppendError>>,
}

impl Sequencer {
    fn new(size: u64, frontier: Frontier, items: usize) -> Self {
        Sequencer {
            size,
            frontier,
            rows: Vec::with_capacity(items),
            nodes: Vec::with_capacity(items * 2),
            out: Vec::with_capacity(items),
        }
    }

    /// The next record goes into the log.
    fn admit(&mut self, record: &AuditRecord, time: &str) -> Result<(), BatchError> {
        let mut record = record.clone();
        record.seq = self.size + 1;
        record.time = time.to_owned();
        let leaf = record.leaf_bytes();
        self.nodes.extend(
            self.frontier
                .push(merkle::leaf_hash(&leaf))
                .map_err(|e| BatchError::Storage(e.to_string()))?,
        );
        self.size += 1;
        self.out.push(Ok(Appended {
            seq: record.seq,
            time: time.to_owned(),
        }));
        self.rows.push((record, leaf));
        Ok(())
    }

    /// The next item's decision was refused; it gets no record.
    fn refuse(&mut self, err: AppendError) {
        self.out.push(Err(err));
    }

    /// Each item's result, in order.
    fn finish(&mut self) -> Vec<Result<Appended, AppendError>> {
        std::mem::take(&mut self.out)
    }
}

/// Checks the stored tree state: its size must match its frontier.
fn checked_state(size: i64, bytes: &[u8]) -> Result<(u64, Frontier), String> {
    let frontier = Frontier::from_bytes(bytes).map_err(|e| e.to_string())?;
    let size = u64::try_from(size).map_err(|e| e.to_string())?;
    if frontier.size() != size {
        return Err(format!(
            "audit state is inconsistent: tree_size {size} but frontier of {}",
            frontier.size()
        ));
    }
    Ok((size, frontier))
}

/// Rows per multi-row insert (well under SQLite's 32,766 bound parameters).
const RECORDS_PER_INSERT: usize = 100;
/// Tree nodes per multi-row insert.
const NODES_PER_INSERT: usize = 300;

/// `prefix` followed by `rows` groups of `cols` `$N` placeholders.
fn multi_insert(prefix: &str, cols: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * cols * 5);
    sql.push_str(prefix);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&n.to_string());
            n += 1;
        }
        sql.push(')');
    }
    sql
}

impl Writer {
    /// A transaction that holds the log's lock, with the log's state as
    /// it read it (the size and the frontier of the tree).
    async fn begin_locked(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Any>, u64, Frontier), String> {
        let mut tx = self.store.pool().begin().await.map_err(|e| e.to_string())?;
        let (size, frontier) = lock_state(&mut tx, self.store.backend()).await?;
        Ok((tx, size, frontier))
    }
}

/// Takes the sequencer lock and reads the tree state (see the module doc).
async fn lock_state(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    _backend: Backend,
) -> Result<(u64, Frontier), String> {
    // The no-op UPDATE is the lock on both databases: SQLite takes its write
    // lock (waiting up to busy_timeout), PostgreSQL locks the row until
    // commit. Reading first would risk SQLite's SQLITE_BUSY_SNAPSHOT.
    // RETURNING reads the state in the same statement.
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "UPDATE audit_state SET tree_size = tree_size WHERE id = 1 RETURNING tree_size, frontier",
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| e.to_string())?;
    let (size, bytes) =
        row.ok_or_else(|| "the audit_state row is missing (the migrations create it)".to_owned())?;
    checked_state(size, &bytes)
}
