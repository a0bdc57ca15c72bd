//! Storage: one sqlx pool over SQLite (embedded default) or PostgreSQL
//! (scale-out), chosen by `[storage] url` (DESIGN §7).
//!
//! Queries are written once, with `$N` placeholders that both SQLite and
//! PostgreSQL accept, and run through sqlx's `Any` driver. Types crossing the
//! boundary are limited to `i64`, `String` and `Vec<u8>`; times are stored as
//! microseconds since the Unix epoch (UTC). Where the two databases need
//! different SQL (row locking for the audit sequencer and the outbox), the
//! caller branches on [`Backend`]. Migrations live in `migrations/sqlite` and
//! `migrations/postgres` with the same tables and are applied at start.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use crate::config::StorageConfig;

pub mod batch;
pub mod sqlite_thread;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file, WAL mode, one writer at a time.
    Sqlite,
    /// Shared by several gateway instances.
    Postgres,
}

/// Why storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one we support.
    #[error("storage url must start with sqlite:// or postgres://")]
    UnsupportedUrl,
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// Applying migrations failed (including a database newer than this binary).
    #[error("database migrations failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database has migrations this binary does not know: it is newer.
    #[error("the database schema (version {found}) is newer than this samgate binary knows (up to {known}); upgrade samgate")]
    TooNew {
        /// Highest version in the database.
        found: i64,
        /// Highest version this binary carries.
        known: i64,
    },
    /// Any other database error at start.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The pool plus which backend it talks to.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database file (SQLite only; `None` for `:memory:`).
    sqlite_path: Option<std::path::PathBuf>,
}

impl Store {
    /// Connects (creating the SQLite file if needed) without migrating.
    pub async fn connect(cfg: &StorageConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(&cfg.url)?;
        let (url, sqlite_path, session) = match backend {
            Backend::Sqlite => {
                let (url, path) = sqlite_rwc(&cfg.url)?;
                // WAL: readers never block the writer. synchronous=FULL: a
                // committed audit record survives power loss, not only a
                // process crash (DESIGN §6: durable before delivery).
                let pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                               PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;";
                (url, path, Some(pragmas))
            }
            Backend::Postgres => (cfg.url.clone(), None, None),
        };
        let pool = pool(&url, cfg.max_connections, cfg.acquire_timeout, session).await?;
        Ok(Store {
            pool,
            backend,
            sqlite_path,
        })
    }

    /// Connects without writing anything: a SQLite file must already exist
    /// and is opened read-only (`mode=ro`, no directory or file created), a
    /// PostgreSQL session is set to `default_transaction_read_only`. Used by
    /// `samgate audit verify --config` and `samgate check`, where a mistyped
    /// path must not leave an empty database behind.
    pub async fn connect_read_only(cfg: &StorageConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(&cfg.url)?;
        let (url, session) = match backend {
            Backend::Sqlite => (
                sqlite_read_only(&cfg.url)?,
                "PRAGMA busy_timeout=10000; PRAGMA query_only=ON;",
            ),
            Backend::Postgres => (
                cfg.url.clone(),
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            ),
        };
        let max = cfg.max_connections.min(2);
        let pool = pool(&url, max, cfg.acquire_timeout, Some(session)).await?;
        // Read-only: no audit writer runs on it, so no own connection either.
        Ok(Store {
            pool,
            backend,
            sqlite_path: None,
        })
    }

    /// The migration level of the database against this binary's:
    /// `(applied, known)` versions (applied 0 = no migrations table).
    pub async fn migration_level(&self) -> Result<(i64, i64), StoreError> {
        let applied = match self.applied_version().await {
            Ok(v) => v,
            // No migrations table: a database samgate never set up.
            Err(sqlx::Error::Database(_)) => None,
            Err(e) => return Err(StoreError::Db(e)),
        };
        Ok((applied.unwrap_or(0), self.known_version()))
    }

    /// This backend's migrations.
    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The newest migration this binary carries for the backend.
    fn known_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to the database (`None`: none yet).
    async fn applied_version(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar::<_, i64>(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE",
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Connects and applies the migrations of this backend.
    pub async fn open(cfg: &StorageConfig) -> Result<Store, StoreError> {
        let store = Self::connect(cfg).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; refuses a database newer than the binary.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let known = self.known_version();
        if let Ok(Some(found)) = self.applied_version().await {
            if found > known {
                return Err(StoreError::TooNew { found, known });
            }
        }
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The SQLite database file, when the backend is a SQLite file.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    /// True when the database answers within `timeout` (for `/readyz`).
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Backend {
    /// The backend a `[storage] url` names.
    fn of(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// A SQLite `url` that creates a missing file (`mode=rwc` unless a mode is
/// given), with its directory created, and the database file (`None` for
/// `:memory:`).
fn sqlite_rwc(url: &str) -> Result<(String, Option<std::path::PathBuf>), StoreError> {
    let mut url = url.to_owned();
    if !url.contains("mode=") && !url.contains(":memory:") {
        url.push_str(if url.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        });
    }
    let mut sqlite_path = None;
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .and_then(|r| r.split('?').next())
        .map(std::path::Path::new)
    {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Connect(sqlx::Error::Io(e)))?;
            }
        }
        if !url.contains(":memory:") {
            sqlite_path = Some(path.to_path_buf());
        }
    }
    Ok((url, sqlite_path))
}

/// A `sqlite://` `url` opened read-only (`mode=ro`, any other mode dropped);
/// the file must exist.
fn sqlite_read_only(url: &str) -> Result<String, StoreError> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return Err(StoreError::UnsupportedUrl);
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with(':') && !std::path::Path::new(path).is_file() {
        return Err(StoreError::Connect(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("database file {path} does not exist"),
        ))));
    }
    let mut url = format!("sqlite://{path}?mode=ro");
    for q in query
        .split('&')
        .filter(|q| !q.is_empty() && !q.starts_with("mode="))
    {
        url.push('&');
        url.push_str(q);
    }
    Ok(url)
}

/// A pool on `url` that runs `session` (if any) on every new connection.
async fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    session: Option<&'static str>,
) -> Result<AnyPool, StoreError> {
    let opts = AnyConnectOptions::from_str(url).map_err(StoreError::Connect)?;
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if let Some(sql) = session {
                    conn.execute(sql).await?;
                }
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(StoreError::Connect)
}

/// A sqlx query with its arguments.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `q` with `args` bound after its arguments, in order.
pub fn bind<'q>(mut q: AnyQuery<'q>, args: &[Arg]) -> AnyQuery<'q> {
    for a in args {
        q = match a {
            Arg::I64(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.clone()),
            Arg::Blob(v) => q.bind(v.clone()),
        };
    }
    q
}

/// Binds `args` to `sql` in order and runs it on a sqlx connection; returns
/// the number of affected rows.
async fn execute_sqlx(
    sql: &str,
    args: &[Arg],
    conn: &mut sqlx::AnyConnection,
) -> Result<u64, sqlx::Error> {
    Ok(bind(sqlx::query(sql), args)
        .execute(conn)
        .await?
        .rows_affected())
}

/// `$1` ... `$24`, so that binding a statement's usual arguments formats
/// nothing (the exchange path's statements have at most 18).
const PLACEHOLDERS: [&str; 24] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16", "$17", "$18", "$19", "$20", "$21", "$22", "$23", "$24",
];

/// A bound argument of a [`Stmt`].
#[derive(Debug, Clone)]
pub enum Arg {
    /// Integer (or NULL).
    I64(Option<i64>),
    /// Text (or NULL).
    Text(Option<String>),
    /// Bytes (or NULL).
    Blob(Option<Vec<u8>>),
}

/// A statement written in the same transaction as an audit record: the
/// decision the record documents (see [`crate::audit::log`]).
#[derive(Debug, Clone)]
pub struct Stmt {
    /// SQL with `$N` placeholders.
    pub sql: &'static str,
    /// Arguments in order.
    pub args: Vec<Arg>,
    /// When true, matching no row fails the item (a concurrent change).
    pub expect_rows: bool,
}

impl Stmt {
    /// A statement without arguments yet.
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql,
            args: Vec::new(),
            expect_rows: false,
        }
    }
    /// Binds an integer.
    pub fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::I64(Some(v)));
        self
    }
    /// Binds an optional integer.
    pub fn opt_int(mut self, v: Option<i64>) -> Self {
        self.args.push(Arg::I64(v));
        self
    }
    /// Binds text.
    pub fn text(mut self, v: impl Into<String>) -> Self {
        self.args.push(Arg::Text(Some(v.into())));
        self
    }
    /// Binds optional text.
    pub fn opt_text(mut self, v: Option<String>) -> Self {
        self.args.push(Arg::Text(v));
        self
    }
    /// Binds bytes.
    pub fn blob(mut self, v: Vec<u8>) -> Self {
        self.args.push(Arg::Blob(Some(v)));
        self
    }
    /// Requires at least one affected row.
    pub fn expect_rows(mut self) -> Self {
        self.expect_rows = true;
        self
    }
    /// Runs it; returns the number of affected rows.
    pub async fn execute(&self, conn: &mut sqlx::AnyConnection) -> Result<u64, sqlx::Error> {
        execute_sqlx(self.sql, &self.args, conn).await
    }

    /// Runs it on a rusqlite connection (the SQLite audit writer's own, see
    /// [`sqlite_thread`]), through the connection's statement cache.
    /// Placeholders are bound by name (`$1`, `$2`, ...), so their order in
    /// the SQL does not matter.
    pub fn execute_blocking(&self, conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
        let mut st = conn.prepare_cached(self.sql)?;
        for (i, a) in self.args.iter().enumerate() {
            let owned;
            let name = match PLACEHOLDERS.get(i) {
                Some(n) => *n,
                None => {
                    owned = format!("${}", i + 1);
                    owned.as_str()
                }
            };
            let Some(idx) = st.parameter_index(name)? else {
                return Err(rusqlite::Error::InvalidParameterName(name.to_owned()));
            };
            match a {
                Arg::I64(v) => st.raw_bind_parameter(idx, v)?,
                Arg::Text(v) => st.raw_bind_parameter(idx, v)?,
                Arg::Blob(v) => st.raw_bind_parameter(idx, v)?,
            }
        }
        let n = st.raw_execute()?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}
