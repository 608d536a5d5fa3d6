//! The database lock: the lock port on a lease table in the database itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Nullable, Text};
use manna_lock::{
    async_trait, holder_description, validate_request, Attempt, FencingToken, Lease, LockBackend,
    LockError, ReleaseWatch,
};
use manna_store::StoreErrorKind;

use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::pool::DbPool;
use crate::schema::{ensure_lock_table, LOCK_TABLE};
use crate::sql::{Bind, Sql};

/// The default bound on one lock call ([`DbLockBackend::with_timeout`]).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Locks kept in the database the data lives in: the lock port
/// ([`LockBackend`]) on a [`DbPool`], for PostgreSQL and SQLite. It is the
/// lock to use without Redis: every process that reaches the database
/// excludes the others, where the in-process `MemoryBackend` only excludes
/// tasks of one process.
///
/// **Design: a lease table.** `manna_locks` ([`crate::schema::LOCK_TABLE`],
/// created on first use) has one row per lock name: `owner` (a random value,
/// `NULL` once released), `token`, `expires_at` and `holder`.
///
/// - *Acquire* is one upsert (inside a `BEGIN IMMEDIATE` transaction on
///   SQLite): insert the row, or take it over if it is released or expired,
///   setting `token = token + 1` in the same statement. Expiry is judged by
///   the **database server's clock** (`clock_timestamp()` on PostgreSQL,
///   `julianday('now')` on SQLite), never by the clients' clocks.
/// - *Fencing*: the token column is never reset (release only clears the
///   owner), so tokens strictly increase per name for everyone using the
///   table. A new row starts at the server's clock in microseconds, so even a
///   deleted row does not make tokens go back.
/// - *Release* and *extend* are one `UPDATE … WHERE name = $1 AND owner = $2
///   AND expires_at > now`: compare-and-act on the owner value.
/// - *Held* reports the holder's remaining time from the server's clock and
///   the `holder` column ([`holder_description`]: host, pid, since when).
/// - Every call runs on Tokio's blocking pool (`spawn_blocking`) with one
///   pooled connection, and is bounded by [`DbLockBackend::with_timeout`]
///   (5 s by default): a database that does not answer gives
///   [`LockError::Unavailable`], never a hang. Driver errors map onto
///   `Unavailable` (unreachable, or busy: SQLite's "database is locked"
///   after its busy timeout, retried twice first) and [`LockError::Backend`]
///   (anything else).
/// - There is no release notification ([`LockBackend::watch`] is
///   unsupported): waiters retry with backoff and jitter (at most 250 ms
///   apart, and right when the holder's lease is due to expire).
///
/// *Why not PostgreSQL advisory locks?* A session advisory lock is held by a
/// connection, not for a time: it gives no TTL (a holder that is paused, or
/// whose connection hangs half-open, keeps it until the server notices), no
/// fencing token, no holder description, and it needs a connection kept out
/// of the pool for the whole hold. The lease table has the same semantics as
/// the Redis backend — a paused holder loses its lease after the TTL, the
/// next holder gets a larger token and fencing refuses the late writes — so
/// both pass the same conformance suite, and one design serves PostgreSQL
/// and SQLite alike.
///
/// The lease is timed by the server's clock only; the holder's
/// `LockManager` renews every third of the TTL and gives the lease up a
/// little early by its own clock, so what is assumed is that the two clocks
/// run at about the same *rate* (not that they agree).
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use manna_lock::LockManager;
/// use manna_store_diesel::{DbLockBackend, DbPool, PoolOptions};
/// use std::{sync::Arc, time::Duration};
///
/// # let dir = tempfile::tempdir()?;
/// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let pool = DbPool::connect(&url, &PoolOptions::default())?;
/// let locks = LockManager::new(Arc::new(DbLockBackend::new(pool)));
/// let guard = locks.acquire("migrate:users.token", Duration::from_secs(30), Duration::from_secs(5)).await?;
/// assert!(locks.try_acquire("migrate:users.token", Duration::from_secs(30)).await?.is_none());
/// assert!(guard.release().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DbLockBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: DbPool,
    describe: String,
    timeout: Duration,
    table_ready: AtomicBool,
}

impl std::fmt::Debug for DbLockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbLockBackend")
            .field("backend", &self.inner.describe)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl DbLockBackend {
    /// Locks in the database of `pool` (PostgreSQL or SQLite), in the table
    /// `manna_locks`, created on first use. Cheap: nothing is done until the
    /// first call. Share the pool with the application if you like; each call
    /// holds one connection for one or two statements.
    pub fn new(pool: DbPool) -> Self {
        let describe = format!(
            "{} lock table {LOCK_TABLE} at {}",
            pool.dialect().name(),
            pool.url()
        );
        Self {
            inner: Arc::new(Inner {
                pool,
                describe,
                timeout: DEFAULT_LOCK_TIMEOUT,
                table_ready: AtomicBool::new(false),
            }),
        }
    }

    /// Bounds each call (connection checkout and statements) to `timeout`,
    /// after which it fails with [`LockError::Unavailable`] (default
    /// [`DEFAULT_LOCK_TIMEOUT`], 5 s). A call that times out may still
    /// complete in the database; an acquisition nobody received then simply
    /// expires after its TTL.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let inner = Inner {
            pool: self.inner.pool.clone(),
            describe: self.inner.describe.clone(),
            timeout: timeout.max(Duration::from_millis(1)),
            table_ready: AtomicBool::new(self.inner.table_ready.load(Ordering::Acquire)),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The pool the locks live in.
    pub fn pool(&self) -> &DbPool {
        &self.inner.pool
    }

    /// Runs `op` with a pooled connection on Tokio's blocking pool, bounded by
    /// the timeout.
    async fn run<T, F>(&self, op: F) -> Result<T, LockError>
    where
        T: Send + 'static,
        F: Fn(&mut AnyConn<'_>) -> Result<T, Error> + Send + 'static,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| LockError::Invalid {
            reason: "the database lock must be used from within a Tokio runtime".into(),
        })?;
        let inner = Arc::clone(&self.inner);
        // `None`: a timeout the clock cannot add (`Duration::MAX`): no deadline.
        let deadline = Instant::now().checked_add(inner.timeout);
        let task = handle.spawn_blocking(move || inner.call(deadline, op));
        match tokio::time::timeout(self.inner.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(LockError::Backend {
                backend: self.inner.describe.clone(),
                reason: format!("the database call did not complete: {e}"),
            }),
            Err(_) => Err(LockError::Unavailable {
                backend: self.inner.describe.clone(),
                reason: format!("no answer within {:?}", self.inner.timeout),
            }),
        }
    }
}

impl Inner {
    /// Checks out a connection, makes sure the table exists, and runs `op`.
    /// A transient conflict (SQLite busy after its busy timeout, a deadlock,
    /// a serialization failure) is retried twice, 10 then 20 ms later, if
    /// there is time left; then it is `Unavailable`.
    fn call<T>(
        &self,
        deadline: Option<Instant>,
        op: impl Fn(&mut AnyConn<'_>) -> Result<T, Error>,
    ) -> Result<T, LockError> {
        let mut conn = self.pool.get().map_err(|e| self.map_err(e))?;
        let mut conn = conn.any();
        let mut pauses = [Duration::from_millis(10), Duration::from_millis(20)].into_iter();
        loop {
            let result = self.ensure_table(&mut conn).and_then(|()| op(&mut conn));
            match result {
                Err(e) if e.kind() == StoreErrorKind::Conflict => match pauses.next() {
                    Some(pause)
                        if deadline.is_none_or(|d| {
                            Instant::now().checked_add(pause).is_some_and(|t| t < d)
                        }) =>
                    {
                        tracing::debug!(error = %e, "database lock: transient conflict, retrying");
                        std::thread::sleep(pause);
                    }
                    _ => return Err(self.map_err(e)),
                },
                other => return other.map_err(|e| self.map_err(e)),
            }
        }
    }

    fn ensure_table(&self, conn: &mut AnyConn<'_>) -> Result<(), Error> {
        if !self.table_ready.load(Ordering::Acquire) {
            ensure_lock_table(conn)?;
            self.table_ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Unreachable or busy (after the retries) is `Unavailable`; anything
    /// else the database said is `Backend`.
    fn map_err(&self, e: Error) -> LockError {
        let backend = self.describe.clone();
        match e {
            Error::Unavailable { reason, .. } => LockError::Unavailable { backend, reason },
            e => match e.kind() {
                StoreErrorKind::Unavailable => LockError::Unavailable {
                    backend,
                    reason: e.to_string(),
                },
                StoreErrorKind::Conflict => LockError::Unavailable {
                    backend,
                    reason: format!("database busy: {e}"),
                },
                _ => LockError::Backend {
                    backend,
                    reason: e.to_string(),
                },
            },
        }
    }
}

/// Runs `f` as one write transaction on SQLite (`BEGIN IMMEDIATE`: the write
/// lock is taken up front, waiting up to the busy timeout, so the statement
/// never fails to upgrade a read lock); on PostgreSQL the statements are
/// atomic on their own and run without a transaction.
fn write<T>(
    conn: &mut AnyConn<'_>,
    f: impl FnOnce(&mut AnyConn<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    match conn.dialect() {
        Dialect::Sqlite => conn.write_transaction(f),
        Dialect::Postgres => f(conn),
    }
}

/// The server's current time, in the type of `expires_at`.
fn now(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "clock_timestamp()",
        // Milliseconds since the Unix epoch; 'now' is fixed for the whole
        // statement.
        Dialect::Sqlite => "((julianday('now') - 2440587.5) * 86400000.0)",
    }
}

/// Appends "the server's time plus `ms` milliseconds".
fn push_now_plus(q: &mut Sql, ms: i64) {
    match q.dialect() {
        Dialect::Postgres => {
            q.push("clock_timestamp() + CAST(")
                .bind(Bind::Int(ms))
                .push(" AS DOUBLE PRECISION) * INTERVAL '1 millisecond'");
        }
        Dialect::Sqlite => {
            q.push("CAST(")
                .push(now(Dialect::Sqlite))
                .push(" + ")
                .bind(Bind::Int(ms))
                .push(" AS INTEGER)");
        }
    }
}

/// The first token of a lock name: the server's clock in microseconds.
fn first_token(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

#[derive(diesel::QueryableByName)]
struct TokenRow {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

#[derive(diesel::QueryableByName)]
struct HeldRow {
    #[diesel(sql_type = Nullable<Text>)]
    holder: Option<String>,
    #[diesel(sql_type = BigInt)]
    expires_in_ms: i64,
}

enum Outcome {
    Acquired(i64),
    Held(Option<HeldRow>),
}

fn try_acquire_sql(
    conn: &mut AnyConn<'_>,
    name: &str,
    owner: &str,
    ttl: i64,
    holder: &str,
) -> Result<Outcome, Error> {
    let d = conn.dialect();
    let mut q = Sql::new(d);
    q.push("INSERT INTO \"")
        .push(LOCK_TABLE)
        .push("\" AS l (name, owner, token, expires_at, holder) VALUES (")
        .bind(Bind::Text(name.to_owned()))
        .push(", ")
        .bind(Bind::Text(owner.to_owned()))
        .push(", ")
        .push(first_token(d))
        .push(", ");
    push_now_plus(&mut q, ttl);
    q.push(", ")
        .bind(Bind::Text(holder.to_owned()))
        .push(
            ") ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
             token = l.token + 1, expires_at = excluded.expires_at, holder = excluded.holder \
             WHERE l.owner IS NULL OR l.expires_at <= ",
        )
        .push(now(d))
        .push(" RETURNING token");
    let rows: Vec<TokenRow> = q.load(conn)?;
    if let Some(row) = rows.first() {
        return Ok(Outcome::Acquired(row.token));
    }
    let mut q = Sql::new(d);
    match d {
        Dialect::Postgres => q.push(
            "SELECT holder, GREATEST(0, CAST(CEIL(EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000) AS BIGINT)) AS expires_in_ms FROM \"",
        ),
        Dialect::Sqlite => q
            .push("SELECT holder, MAX(0, CAST(expires_at - ")
            .push(now(d))
            .push(" + 0.999 AS INTEGER)) AS expires_in_ms FROM \""),
    };
    q.push(LOCK_TABLE)
        .push("\" WHERE name = ")
        .bind(Bind::Text(name.to_owned()))
        .push(" AND owner IS NOT NULL");
    let mut rows: Vec<HeldRow> = q.load(conn)?;
    Ok(Outcome::Held(rows.pop()))
}

/// `UPDATE "manna_locks" SET <set> WHERE name = $ AND owner = $ AND expires_at > now`.
fn update_current(
    conn: &mut AnyConn<'_>,
    lease: &Lease,
    set: impl FnOnce(&mut Sql),
) -> Result<bool, Error> {
    let d = conn.dialect();
    let mut q = Sql::new(d);
    q.push("UPDATE \"").push(LOCK_TABLE).push("\" SET ");
    set(&mut q);
    push_current(&mut q, lease);
    Ok(q.execute(conn)? == 1)
}

/// ` WHERE` the lease is the current, unexpired one.
fn push_current(q: &mut Sql, lease: &Lease) {
    let d = q.dialect();
    q.push(" WHERE name = ")
        .bind(Bind::Text(lease.name().to_owned()))
        .push(" AND owner = ")
        .bind(Bind::Text(lease.owner().to_owned()))
        .push(" AND expires_at > ")
        .push(now(d));
}

#[async_trait]
impl LockBackend for DbLockBackend {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let owner = format!("{:032x}", rand::random::<u128>());
        let holder = holder_description();
        let ms = ttl_ms(ttl);
        let (n, o) = (name.to_owned(), owner.clone());
        let outcome = self
            .run(move |conn| write(conn, |conn| try_acquire_sql(conn, &n, &o, ms, &holder)))
            .await?;
        match outcome {
            Outcome::Acquired(token) => {
                let token = u64::try_from(token).map_err(|_| LockError::Backend {
                    backend: self.describe(),
                    reason: format!("fencing token of lock `{name}` is negative ({token})"),
                })?;
                Ok(Attempt::Acquired(Lease::new(
                    name,
                    owner,
                    FencingToken::new(token),
                    ttl,
                )))
            }
            Outcome::Held(row) => Ok(match row {
                Some(row) => Attempt::Held {
                    expires_in: Some(Duration::from_millis(
                        u64::try_from(row.expires_in_ms).unwrap_or(0),
                    )),
                    holder: row.holder,
                },
                // Released between the two statements: try again at once.
                None => Attempt::Held {
                    expires_in: Some(Duration::ZERO),
                    holder: None,
                },
            }),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let lease = lease.clone();
        self.run(move |conn| {
            write(conn, |conn| {
                update_current(conn, &lease, |q| {
                    // The token stays: the next holder's is larger.
                    let d = q.dialect();
                    q.push("owner = NULL, holder = NULL, expires_at = ");
                    match d {
                        Dialect::Postgres => q.push(now(d)),
                        Dialect::Sqlite => q.push("CAST(").push(now(d)).push(" AS INTEGER)"),
                    };
                })
            })
        })
        .await
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError> {
        validate_request(lease.name(), ttl)?;
        let ms = ttl_ms(ttl);
        let l = lease.clone();
        let extended = self
            .run(move |conn| {
                write(conn, |conn| {
                    update_current(conn, &l, |q| {
                        q.push("expires_at = ");
                        push_now_plus(q, ms);
                    })
                })
            })
            .await?;
        if extended {
            Ok(())
        } else {
            Err(LockError::NotHolder {
                name: lease.name().to_owned(),
            })
        }
    }

    async fn is_held(&self, lease: &Lease) -> Result<bool, LockError> {
        let lease = lease.clone();
        self.run(move |conn| {
            let mut q = Sql::new(conn.dialect());
            q.push("SELECT token FROM \"").push(LOCK_TABLE).push("\"");
            push_current(&mut q, &lease);
            let rows: Vec<TokenRow> = q.load(conn)?;
            Ok(!rows.is_empty())
        })
        .await
    }

    /// Unsupported: waiters back off and retry (see the type's docs).
    fn watch(&self, _name: &str) -> ReleaseWatch {
        ReleaseWatch::unsupported()
    }
}
