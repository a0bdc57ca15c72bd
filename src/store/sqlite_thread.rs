//! A SQLite connection owned by one OS thread, for work that must not pay a
//! thread hand-off per statement.
//!
//! sqlx runs each SQLite statement on the connection's worker thread and
//! hands the statement and its result across a channel, waking a thread each
//! way; the audit writer issues a dozen statements per batch, so most of its
//! time went into those hand-offs (docs/performance.md). Here the caller
//! hands over a whole closure (a batch transaction) and waits once: one
//! hand-off per batch, prepared statements cached on the connection.
//!
//! The connection uses the same file and pragmas as the sqlx pool (WAL,
//! `synchronous=FULL`, a busy timeout), so both see one database and
//! SQLite's own locking orders their writes.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Work sent to the thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Prepared statements kept per connection (the writer uses about ten).
const STATEMENT_CACHE: usize = 64;

/// Handle to the thread; cloning shares the one connection.
#[derive(Clone)]
pub struct SqliteThread {
    tx: std::sync::mpsc::Sender<Job>,
}

/// The thread has gone (its connection failed to open or it was stopped).
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer thread has stopped")]
pub struct ThreadGone;

impl SqliteThread {
    /// Opens `path` (which must exist: the pool created and migrated it) on
    /// a new thread named `name`.
    pub fn open(path: &Path, name: &str, busy_timeout: Duration) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut conn = conn;
                // Ends when every handle is dropped.
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot start the SQLite thread: {e}")),
                )
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` on the thread's connection and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, ThreadGone>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> R + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| ThreadGone)?;
        rx.await.map_err(|_| ThreadGone)
    }
}
