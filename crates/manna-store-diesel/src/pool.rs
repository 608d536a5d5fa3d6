//! r2d2 connection pools with sensible defaults.

use std::time::Duration;

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};

use crate::conn::{AnyConn, Dialect};
use crate::error::Error;
use crate::url::DatabaseUrl;

/// A PostgreSQL connection pool.
#[cfg(feature = "postgres")]
pub type PgPool = Pool<ConnectionManager<diesel::PgConnection>>;
/// A SQLite connection pool.
#[cfg(feature = "sqlite")]
pub type SqlitePool = Pool<ConnectionManager<diesel::SqliteConnection>>;

/// Pool settings. The defaults suit a service and the migrator alike.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolOptions {
    /// Most connections the pool opens (default 8; forced to 1 for in-memory SQLite,
    /// where each connection would be a separate database).
    pub max_size: u32,
    /// Connections kept open while idle (default 0: connections open on
    /// demand). A pool keeping some idle reopens them in background threads,
    /// which may still be connecting when a short program exits — and
    /// libpq's TLS library does not survive being torn down under them.
    pub min_idle: u32,
    /// How long `get` waits for a free connection (default 10 s).
    pub connection_timeout: Duration,
    /// SQLite: how long a statement waits for a lock held by another
    /// connection before failing with "database is locked" (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 8,
            min_idle: 0,
            connection_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl PoolOptions {
    /// Sets [`max_size`](Self::max_size).
    pub fn max_size(mut self, n: u32) -> Self {
        self.max_size = n.max(1);
        self
    }

    /// Sets [`min_idle`](Self::min_idle).
    pub fn min_idle(mut self, n: u32) -> Self {
        self.min_idle = n;
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout).
    pub fn connection_timeout(mut self, d: Duration) -> Self {
        self.connection_timeout = d;
        self
    }

    /// Sets [`busy_timeout`](Self::busy_timeout).
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }
}

/// Opens a PostgreSQL pool. The first connection is made eagerly, so an
/// unreachable server fails here with [`Error::Unavailable`] naming the URL
/// (password redacted) and the driver's reason.
#[cfg(feature = "postgres")]
pub fn pg_pool(url: &str, options: &PoolOptions) -> Result<PgPool, Error> {
    use diesel::Connection;
    let url = DatabaseUrl::parse(url)?;
    if url.dialect() != Dialect::Postgres {
        return Err(Error::BadUrl {
            url: url.redacted().to_owned(),
            reason: "not a postgres:// URL".into(),
        });
    }
    // Fail fast with the driver's own reason rather than a pool timeout.
    diesel::PgConnection::establish(url.target()).map_err(|e| unavailable(&url, e))?;
    Pool::builder()
        .max_size(options.max_size.max(1))
        .min_idle(Some(options.min_idle.min(options.max_size)))
        .connection_timeout(options.connection_timeout)
        .connection_customizer(Box::new(PgMessages::default()))
        .build(ConnectionManager::new(url.target()))
        .map_err(|e| unavailable(&url, e))
}

/// Asks PostgreSQL for untranslated messages on each new connection.
///
/// Diesel 2.3 hands over a PostgreSQL error's message but not its SQLSTATE
/// (diesel-rs/diesel#5232), so lock timeouts, deadlocks and missing tables
/// are told apart by message, and a server whose `lc_messages` is German
/// would turn a conflict worth retrying into a plain error. Every connection
/// therefore sets `lc_messages = 'C'`, which needs a superuser or
/// `GRANT SET ON PARAMETER lc_messages TO <role>` (PostgreSQL 15+). Where the
/// role may not and the messages are not English, the pool logs one warning
/// saying so.
#[cfg(feature = "postgres")]
#[derive(Debug, Default)]
struct PgMessages {
    warned: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "postgres")]
impl diesel::r2d2::CustomizeConnection<diesel::PgConnection, diesel::r2d2::Error> for PgMessages {
    fn on_acquire(&self, conn: &mut diesel::PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        use diesel::RunQueryDsl;
        use std::sync::atomic::Ordering;
        let setting = diesel::dsl::sql::<diesel::sql_types::Text>("current_setting('lc_messages')");
        let current: String = diesel::select(setting)
            .get_result(conn)
            .map_err(diesel::r2d2::Error::QueryError)?;
        let lower = current.to_ascii_lowercase();
        let english = ["c", "posix", "en"].iter().any(|p| {
            lower == *p
                || lower.starts_with(&format!("{p}."))
                || lower.starts_with(&format!("{p}_"))
        });
        // Only when needed: a refused SET is an error line in the server log.
        if english || conn.batch_execute("SET lc_messages TO 'C'").is_ok() {
            return Ok(());
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                lc_messages = %current,
                "PostgreSQL reports errors in another language and this role may not set \
                 lc_messages = 'C', so lock timeouts and deadlocks are not recognised as \
                 conflicts to retry; grant it with `GRANT SET ON PARAMETER lc_messages TO <role>` \
                 or set `ALTER ROLE <role> SET lc_messages = 'C'`"
            );
        }
        Ok(())
    }
}

/// Opens a SQLite pool (creating the file if needed). Every connection gets
/// `journal_mode = WAL` (file databases), `busy_timeout`, `foreign_keys = ON`
/// and `synchronous = NORMAL`.
#[cfg(feature = "sqlite")]
pub fn sqlite_pool(url: &str, options: &PoolOptions) -> Result<SqlitePool, Error> {
    let url = DatabaseUrl::parse(url)?;
    if url.dialect() != Dialect::Sqlite {
        return Err(Error::BadUrl {
            url: url.redacted().to_owned(),
            reason: "not a SQLite URL or path".into(),
        });
    }
    // Fail fast with SQLite's own reason (e.g. a missing directory).
    {
        use diesel::Connection;
        diesel::SqliteConnection::establish(url.target()).map_err(|e| unavailable(&url, e))?;
    }
    let max = if url.is_memory() {
        1
    } else {
        options.max_size.max(1)
    };
    Pool::builder()
        .max_size(max)
        .min_idle(Some(options.min_idle.min(max)))
        .connection_timeout(options.connection_timeout)
        .connection_customizer(Box::new(SqlitePragmas {
            busy_timeout_ms: u64::try_from(options.busy_timeout.as_millis()).unwrap_or(u64::MAX),
            wal: !url.is_memory(),
        }))
        .build(ConnectionManager::new(url.target()))
        .map_err(|e| unavailable(&url, e))
}

fn unavailable(url: &DatabaseUrl, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        url: url.redacted().to_owned(),
        reason: manna_lock::redact::scrub_message(e.to_string().trim(), url.target()),
    }
}

/// Applies the SQLite pragmas to each new connection.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
struct SqlitePragmas {
    busy_timeout_ms: u64,
    wal: bool,
}

#[cfg(feature = "sqlite")]
impl diesel::r2d2::CustomizeConnection<diesel::SqliteConnection, diesel::r2d2::Error>
    for SqlitePragmas
{
    fn on_acquire(&self, conn: &mut diesel::SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        // busy_timeout first: switching to WAL needs a lock other connections may hold.
        let mut sql = format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON;",
            self.busy_timeout_ms
        );
        if self.wal {
            sql.push_str(" PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
        }
        conn.batch_execute(&sql)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A pool of either backend, chosen by URL.
///
/// ```
/// use manna_store_diesel::{DbPool, PoolOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let pool = DbPool::connect(&url, &PoolOptions::default()).unwrap();
/// assert_eq!(pool.dialect().name(), "sqlite");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum DbPool {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(PgPool, DatabaseUrl),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool, DatabaseUrl),
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("dialect", &self.dialect())
            .field("url", &self.url())
            .finish()
    }
}

impl DbPool {
    /// Opens a pool for `url` (see [`DatabaseUrl`] for the accepted forms).
    pub fn connect(url: &str, options: &PoolOptions) -> Result<Self, Error> {
        let parsed = DatabaseUrl::parse(url)?;
        match parsed.dialect() {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => Ok(DbPool::Postgres(pg_pool(url, options)?, parsed)),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => Ok(DbPool::Sqlite(sqlite_pool(url, options)?, parsed)),
            #[allow(unreachable_patterns)]
            d => Err(Error::BadUrl {
                url: parsed.redacted().to_owned(),
                reason: format!(
                    "this build of manna-store-diesel lacks the `{}` feature",
                    d.name()
                ),
            }),
        }
    }

    /// The backend.
    pub fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            DbPool::Postgres(..) => Dialect::Postgres,
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(..) => Dialect::Sqlite,
        }
    }

    /// The URL, password redacted.
    pub fn url(&self) -> &str {
        match self {
            #[cfg(feature = "postgres")]
            DbPool::Postgres(_, u) => u.redacted(),
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(_, u) => u.redacted(),
        }
    }

    /// Checks out a connection.
    pub fn get(&self) -> Result<DbConnection, Error> {
        match self {
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p, u) => p
                .get()
                .map(DbConnection::Postgres)
                .map_err(|e| unavailable(u, e)),
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p, u) => p
                .get()
                .map(DbConnection::Sqlite)
                .map_err(|e| unavailable(u, e)),
        }
    }
}

/// A pooled connection of either backend; returned to the pool on drop.
#[non_exhaustive]
pub enum DbConnection {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(PooledConnection<ConnectionManager<diesel::PgConnection>>),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(PooledConnection<ConnectionManager<diesel::SqliteConnection>>),
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DbConnection")
            .field(&self.dialect_of())
            .finish()
    }
}

impl DbConnection {
    fn dialect_of(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            DbConnection::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "sqlite")]
            DbConnection::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

impl diesel::connection::SimpleConnection for DbConnection {
    fn batch_execute(&mut self, query: &str) -> diesel::QueryResult<()> {
        match self {
            #[cfg(feature = "postgres")]
            DbConnection::Postgres(c) => c.batch_execute(query),
            #[cfg(feature = "sqlite")]
            DbConnection::Sqlite(c) => c.batch_execute(query),
        }
    }
}

impl crate::conn::sealed::Sealed for DbConnection {}

impl crate::conn::StoreConnection for DbConnection {
    fn dialect(&self) -> Dialect {
        self.dialect_of()
    }

    #[allow(private_interfaces)]
    fn any(&mut self) -> AnyConn<'_> {
        match self {
            #[cfg(feature = "postgres")]
            DbConnection::Postgres(c) => AnyConn::Pg(c),
            #[cfg(feature = "sqlite")]
            DbConnection::Sqlite(c) => AnyConn::Sqlite(c),
        }
    }
}
