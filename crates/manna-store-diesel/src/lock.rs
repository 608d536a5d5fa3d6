//! The database lock: the lock port on a lease table in the database itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Nullable, Text};
use manna_lock::{
    async_trait, holder_description, owner_value, session_of_owner, validate_request, Attempt,
    FencingToken, Lease, LockBackend, LockError, ReleaseWatch, SessionId, MAX_WAIT_CHAIN,
};
use manna_store::StoreErrorKind;

use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::pool::DbPool;
use crate::schema::{ensure_lock_table, LOCK_TABLE, LOCK_WAITS_TABLE};
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
///   deleted row does not make tokens go back — provided the clock moved on:
///   SQLite's clock counts milliseconds, so a row deleted and taken again
///   within the same millisecond can repeat its last token.
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
/// - *Deadlock detection* ([`manna_lock::LockSession`]): a session's lease
///   has the session id in its `owner` (`random@session`), and a waiting
///   session has one row in `manna_lock_waits`
///   ([`LOCK_WAITS_TABLE`](crate::schema::LOCK_WAITS_TABLE): the lock it
///   waits for, expiring by the server's clock with the wait). A session's
///   attempt runs in one write transaction: take the lock, or follow holder
///   → session → awaited lock → … over unexpired rows and refuse with
///   [`LockError::Deadlock`], or record the edge. On SQLite the
///   transactions are serialized (`BEGIN IMMEDIATE`), so exactly the second
///   of two sessions closing a cycle is told. On PostgreSQL two such
///   transactions at the same instant may not see each other's uncommitted
///   edge; the waiters' next retry (at most 250 ms later) does, and then one
///   or both fail fast with `Deadlock` — neither waits out its timeout.
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

#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    v: String,
}

enum Outcome {
    Acquired(i64),
    Held(Option<HeldRow>),
    Deadlock(Vec<String>),
}

/// A session's attempt, in the caller's transaction: take the lock (and
/// drop the session's edge on it), or refuse, after looking for a cycle and
/// recording the edge when `edge_ms` is not zero.
fn try_acquire_in_session_sql(
    conn: &mut AnyConn<'_>,
    name: &str,
    owner: &str,
    ttl: i64,
    holder: &str,
    session: &str,
    edge_ms: i64,
) -> Result<Outcome, Error> {
    let outcome = try_acquire_sql(conn, name, owner, ttl, holder)?;
    match outcome {
        Outcome::Acquired(_) => {
            end_wait_sql(conn, session, name)?;
            Ok(outcome)
        }
        Outcome::Held(_) if edge_ms == 0 => Ok(outcome),
        Outcome::Held(_) => {
            if let Some(cycle) = wait_cycle(conn, name, session)? {
                end_wait_sql(conn, session, name)?;
                return Ok(Outcome::Deadlock(cycle));
            }
            record_wait_sql(conn, session, name, edge_ms)?;
            Ok(outcome)
        }
        Outcome::Deadlock(_) => Ok(outcome),
    }
}

/// The cycle `session` would close by waiting for `name`: follows the
/// holder's session (from the owner value) and that session's unexpired
/// edge, at most [`MAX_WAIT_CHAIN`] steps.
fn wait_cycle(
    conn: &mut AnyConn<'_>,
    name: &str,
    session: &str,
) -> Result<Option<Vec<String>>, Error> {
    let d = conn.dialect();
    let mut cycle = vec![name.to_owned()];
    for _ in 0..MAX_WAIT_CHAIN {
        let lock = cycle.last().map_or(name, String::as_str);
        let mut q = Sql::new(d);
        q.push("SELECT owner AS v FROM \"")
            .push(LOCK_TABLE)
            .push("\" WHERE name = ")
            .bind(Bind::Text(lock.to_owned()))
            .push(" AND owner IS NOT NULL AND expires_at > ")
            .push(now(d));
        let owners: Vec<TextRow> = q.load(conn)?;
        let Some(holder) = owners.first().and_then(|r| session_of_owner(&r.v)) else {
            return Ok(None);
        };
        if holder == session {
            return Ok(Some(cycle));
        }
        let mut q = Sql::new(d);
        q.push("SELECT name AS v FROM \"")
            .push(LOCK_WAITS_TABLE)
            .push("\" WHERE session = ")
            .bind(Bind::Text(holder.to_owned()))
            .push(" AND expires_at > ")
            .push(now(d));
        let waits: Vec<TextRow> = q.load(conn)?;
        let Some(next) = waits.into_iter().next() else {
            return Ok(None);
        };
        cycle.push(next.v);
    }
    Ok(None)
}

/// Records (or replaces) "`session` waits for `name`" for `edge_ms`, and
/// forgets expired edges (of waiters that vanished without a word).
fn record_wait_sql(
    conn: &mut AnyConn<'_>,
    session: &str,
    name: &str,
    edge_ms: i64,
) -> Result<(), Error> {
    let d = conn.dialect();
    let mut q = Sql::new(d);
    q.push("DELETE FROM \"")
        .push(LOCK_WAITS_TABLE)
        .push("\" WHERE expires_at <= ")
        .push(now(d));
    q.execute(conn)?;
    let mut q = Sql::new(d);
    q.push("INSERT INTO \"")
        .push(LOCK_WAITS_TABLE)
        .push("\" (session, name, expires_at) VALUES (")
        .bind(Bind::Text(session.to_owned()))
        .push(", ")
        .bind(Bind::Text(name.to_owned()))
        .push(", ");
    push_now_plus(&mut q, edge_ms);
    q.push(
        ") ON CONFLICT (session) DO UPDATE SET name = excluded.name, \
         expires_at = excluded.expires_at",
    );
    q.execute(conn)?;
    Ok(())
}

/// Drops `session`'s edge if it is on `name`.
fn end_wait_sql(conn: &mut AnyConn<'_>, session: &str, name: &str) -> Result<(), Error> {
    let mut q = Sql::new(conn.dialect());
    q.push("DELETE FROM \"")
        .push(LOCK_WAITS_TABLE)
        .push("\" WHERE session = ")
        .bind(Bind::Text(session.to_owned()))
        .push(" AND name = ")
        .bind(Bind::Text(name.to_owned()));
    q.execute(conn)?;
    Ok(())
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

impl DbLockBackend {
    /// The answer of an acquire attempt made with `owner`.
    fn attempt(
        &self,
        name: &str,
        ttl: Duration,
        owner: String,
        outcome: Outcome,
    ) -> Result<Attempt, LockError> {
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
            Outcome::Deadlock(cycle) => Err(LockError::Deadlock { cycle }),
        }
    }
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
        self.attempt(name, ttl, owner, outcome)
    }

    async fn try_acquire_in_session(
        &self,
        name: &str,
        ttl: Duration,
        session: &SessionId,
        wait_edge: Duration,
    ) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let owner = owner_value(&format!("{:032x}", rand::random::<u128>()), Some(session));
        let holder = holder_description();
        let ms = ttl_ms(ttl);
        // A non-zero edge stays non-zero in milliseconds.
        let edge_ms = if wait_edge.is_zero() {
            0
        } else {
            ttl_ms(wait_edge).max(1)
        };
        let (n, o, s) = (name.to_owned(), owner.clone(), session.to_string());
        let outcome = self
            .run(move |conn| {
                // One transaction on both databases: the walk and the edge
                // go with the attempt.
                conn.write_transaction(|conn| {
                    try_acquire_in_session_sql(conn, &n, &o, ms, &holder, &s, edge_ms)
                })
            })
            .await?;
        self.attempt(name, ttl, owner, outcome)
    }

    async fn end_wait(&self, session: &SessionId, name: &str) -> Result<(), LockError> {
        let (s, n) = (session.to_string(), name.to_owned());
        self.run(move |conn| write(conn, |conn| end_wait_sql(conn, &s, &n)))
            .await
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
