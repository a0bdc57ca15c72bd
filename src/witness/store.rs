//! The witness's SQLite store: the latest cosigned checkpoint of each log, and the
//! checkpoints it refused although they carried a valid log signature (evidence of a fork
//! or a rollback, kept for the agency).
//!
//! [`WitnessStore::advance`] checks the old size against the stored one and writes the new
//! size and root in one `BEGIN IMMEDIATE` transaction (and the caller serialises requests),
//! so two concurrent requests can never roll the stored tree back (C2SP tlog-witness).

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqlitePool};

use crate::audit::merkle::Hash;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS checkpoints (
        origin     TEXT PRIMARY KEY,
        tree_size  INTEGER NOT NULL,
        root_hash  BLOB    NOT NULL,
        checkpoint TEXT    NOT NULL,
        updated_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS refusals (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        time       INTEGER NOT NULL,
        origin     TEXT    NOT NULL,
        old_size   INTEGER NOT NULL,
        tree_size  INTEGER NOT NULL,
        status     INTEGER NOT NULL,
        reason     TEXT    NOT NULL,
        checkpoint TEXT    NOT NULL
    )",
];

/// The latest checkpoint a witness cosigned for a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// Its tree size.
    pub tree_size: u64,
    /// Its root hash.
    pub root_hash: Hash,
}

/// One request to advance a log's checkpoint (every value of it, for
/// [`WitnessStore::advance`]).
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The log.
    pub origin: &'a str,
    /// The size the client believes is stored (0 for a new log).
    pub old: u64,
    /// The new checkpoint's size and root.
    pub size: u64,
    /// The new root.
    pub root: &'a Hash,
    /// The checkpoint note as received.
    pub checkpoint: &'a str,
    /// Unix seconds, stored as `updated_at`.
    pub now: i64,
}

/// What [`WitnessStore::advance`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Stored (or the same tree again): cosign it.
    Stored,
    /// The old size is not the stored size (409 with the stored size).
    Conflict(u64),
    /// Same size as stored, another root: a fork (422, as C2SP tlog-witness says).
    Fork(u64),
    /// The check of the new tree against the stored one failed (422).
    Inconsistent(String),
}

/// The witness database.
#[derive(Clone)]
pub struct WitnessStore {
    pool: SqlitePool,
}

impl WitnessStore {
    /// Opens (creating if missing) the database file.
    pub async fn open(path: &Path) -> Result<WitnessStore, String> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(|e| e.to_string())?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for stmt in SCHEMA {
            sqlx::query(stmt)
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(WitnessStore { pool })
    }

    /// The latest cosigned checkpoint of `origin`, if any.
    pub async fn latest(&self, origin: &str) -> Result<Option<Latest>, String> {
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        latest_in(&mut conn, origin).await
    }

    /// Atomically: if the stored size of `origin` is `old` (0 when none) and `check` accepts
    /// the stored root, store `(size, root, checkpoint)`. `check` gets the stored latest
    /// checkpoint (None for a new log) and returns an error text if the new tree does not
    /// extend it.
    pub async fn advance(
        &self,
        step: &Step<'_>,
        check: impl FnOnce(Option<&Latest>) -> Result<(), String>,
    ) -> Result<Advance, String> {
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let result = advance_in(&mut conn, step, check).await;
        let end = if matches!(result, Ok(Advance::Stored)) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = sqlx::query(end).execute(&mut *conn).await;
        if let Err(e) = ended {
            // The connection may be mid-transaction: do not hand it back to the pool.
            let _ = conn.detach().close().await;
            return Err(e.to_string());
        }
        result
    }

    /// Records a refused checkpoint that carried a valid log signature.
    #[allow(clippy::too_many_arguments)] // one row: every column of the refusal
    pub async fn refused(
        &self,
        origin: &str,
        old: u64,
        size: u64,
        status: u16,
        reason: &str,
        checkpoint: &str,
        now: i64,
    ) -> Result<(), String> {
        sqlx::query(
            "INSERT INTO refusals (time, origin, old_size, tree_size, status, reason, checkpoint) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now)
        .bind(origin)
        .bind(i64::try_from(old).unwrap_or(i64::MAX))
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(i64::from(status))
        .bind(reason)
        .bind(checkpoint)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Number of refused checkpoints recorded (tests, operators).
    pub async fn refusal_count(&self) -> Result<u64, String> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refusals")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The latest stored checkpoint of `origin` on this connection.
async fn latest_in(
    conn: &mut sqlx::SqliteConnection,
    origin: &str,
) -> Result<Option<Latest>, String> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT tree_size, root_hash FROM checkpoints WHERE origin = ?")
            .bind(origin)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    row.map(|(size, root)| {
        Ok(Latest {
            tree_size: u64::try_from(size).map_err(|e| e.to_string())?,
            root_hash: Hash::try_from(root).map_err(|_| "stored root is not 32 bytes")?,
        })
    })
    .transpose()
}

async fn advance_in(
    conn: &mut sqlx::SqliteConnection,
    step: &Step<'_>,
    check: impl FnOnce(Option<&Latest>) -> Result<(), String>,
) -> Result<Advance, String> {
    let Step {
        origin,
        old,
        size,
        root,
        checkpoint,
        now,
    } = *step;
    let latest = latest_in(conn, origin).await?;
    let stored = latest.as_ref().map_or(0, |l| l.tree_size);
    if old != stored {
        return Ok(Advance::Conflict(stored));
    }
    if let Some(l) = &latest {
        if l.tree_size == size && l.root_hash != *root {
            return Ok(Advance::Fork(stored));
        }
    }
    if let Err(reason) = check(latest.as_ref()) {
        return Ok(Advance::Inconsistent(reason));
    }
    let size_i = i64::try_from(size).map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO checkpoints (origin, tree_size, root_hash, checkpoint, updated_at) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (origin) DO UPDATE SET tree_size = excluded.tree_size, \
         root_hash = excluded.root_hash, checkpoint = excluded.checkpoint, \
         updated_at = excluded.updated_at",
    )
    .bind(origin)
    .bind(size_i)
    .bind(root.to_vec())
    .bind(checkpoint)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    Ok(Advance::Stored)
}
