//! Writes fenced by a distributed lock's token.

use diesel::sql_types::BigInt;
use manna_lock::FencingToken;
use manna_store::Ident;

use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::schema::{ensure_fence_table, FENCE_TABLE};
use crate::sql::{Bind, Sql};

/// A fence table: one row per resource holding the highest fencing token
/// that has written to it.
///
/// A lock holder paused past its lease (GC pause, stopped VM) may wake up and
/// write after a newer holder has; its token is lower, so the fence refuses
/// the write. The check and the bump are a single upsert statement, inside
/// the same transaction as the guarded write.
///
/// ```
/// # use diesel::{Connection, SqliteConnection};
/// use manna_lock::FencingToken;
/// use manna_store_diesel::{Error, Fence};
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// let fence = Fence::new();
/// fence.create_schema(&mut conn).unwrap();
/// let ok: Result<(), Error> = fence.write(&mut conn, "items:7", FencingToken::from(5), |_conn| Ok(()));
/// assert!(ok.is_ok());
/// let stale: Result<(), Error> = fence.write(&mut conn, "items:7", FencingToken::from(4), |_conn| Ok(()));
/// assert!(matches!(stale, Err(Error::StaleToken { token: 4, highest: 5, .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    table: Ident,
}

impl Default for Fence {
    fn default() -> Self {
        Fence::new()
    }
}

#[derive(diesel::QueryableByName)]
struct TokenRow {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

impl Fence {
    /// The fence in `manna_fences`.
    pub fn new() -> Self {
        Fence {
            table: Ident::new(FENCE_TABLE).expect("the default name is a valid identifier"),
        }
    }

    /// A fence kept in another table.
    pub fn with_table(name: &str) -> Result<Self, Error> {
        Ok(Fence {
            table: Ident::new(name)?,
        })
    }

    /// Creates the fence table if needed (idempotent).
    pub fn create_schema<C: StoreConnection>(&self, conn: &mut C) -> Result<(), Error> {
        ensure_fence_table(&mut conn.any(), &self.table)
    }

    /// Runs `write` in a transaction that first records `token` for
    /// `resource`, refusing it with [`Error::StaleToken`] (and running
    /// nothing) when a higher token was already recorded. An equal token is
    /// accepted: the same holder may write several times.
    ///
    /// If `write` fails, the transaction — token included — rolls back.
    pub fn write<C, T, E, F>(
        &self,
        conn: &mut C,
        resource: &str,
        token: FencingToken,
        write: F,
    ) -> Result<T, E>
    where
        C: StoreConnection,
        F: FnOnce(&mut C) -> Result<T, E>,
        E: From<Error>,
    {
        let t = i64::try_from(token.get()).map_err(|_| Error::TokenOutOfRange(token.get()))?;
        conn.write_transaction(|conn| {
            self.check_and_bump(&mut conn.any(), resource, t)?;
            write(conn)
        })
    }

    pub(crate) fn check_and_bump(
        &self,
        conn: &mut AnyConn<'_>,
        resource: &str,
        token: i64,
    ) -> Result<(), Error> {
        // The holder writing again (the common case): on PostgreSQL a shared
        // lock on the fence row is enough, so one holder's concurrent writes
        // (the migrator's workers) do not serialize on it, while a newer
        // holder's upsert below waits for them to commit. The plain read
        // first keeps a writer from holding a shared lock it then needs to
        // upgrade (two such writers would deadlock).
        if conn.dialect() == Dialect::Postgres
            && self.read_token(conn, resource, false)? == Some(token)
        {
            match self.read_token(conn, resource, true)? {
                Some(t) if t == token => return Ok(()),
                Some(t) if t > token => return Err(stale(resource, token, t)),
                _ => {}
            }
        }
        // One statement: insert the resource, or raise its token if ours is
        // at least as high. On PostgreSQL the upsert locks the fence row, so
        // a newer holder waits for the writes in flight under the older token.
        let mut q = Sql::new(conn.dialect());
        q.push("INSERT INTO ")
            .ident(&self.table)
            .push(" (resource, token) VALUES (")
            .bind(Bind::Text(resource.to_owned()))
            .push(", ")
            .bind(Bind::Int(token))
            .push(") ON CONFLICT (resource) DO UPDATE SET token = excluded.token, updated_at = CURRENT_TIMESTAMP WHERE ")
            .ident(&self.table)
            .push(".token <= excluded.token");
        if q.execute(conn)? == 1 {
            return Ok(());
        }
        let highest = self.read_token(conn, resource, false)?.unwrap_or(0);
        Err(stale(resource, token, highest))
    }

    /// The token recorded for `resource`, under a shared row lock if `share`.
    fn read_token(
        &self,
        conn: &mut AnyConn<'_>,
        resource: &str,
        share: bool,
    ) -> Result<Option<i64>, Error> {
        let mut q = Sql::new(conn.dialect());
        q.push("SELECT token FROM ")
            .ident(&self.table)
            .push(" WHERE resource = ")
            .bind(Bind::Text(resource.to_owned()));
        if share {
            q.push(" FOR SHARE");
        }
        let rows: Vec<TokenRow> = q.load(conn)?;
        Ok(rows.first().map(|r| r.token))
    }

    /// The highest token recorded for `resource`.
    pub fn highest<C: StoreConnection>(
        &self,
        conn: &mut C,
        resource: &str,
    ) -> Result<Option<u64>, Error> {
        self.highest_any(&mut conn.any(), resource)
    }

    fn highest_any(&self, conn: &mut AnyConn<'_>, resource: &str) -> Result<Option<u64>, Error> {
        Ok(self
            .read_token(conn, resource, false)?
            .map(|t| u64::try_from(t).unwrap_or(0)))
    }

    /// Creates the fence table if needed, through any connection.
    pub(crate) fn ensure_table(&self, conn: &mut AnyConn<'_>) -> Result<(), Error> {
        ensure_fence_table(conn, &self.table)
    }
}

fn stale(resource: &str, token: i64, highest: i64) -> Error {
    Error::StaleToken {
        resource: resource.to_owned(),
        token: u64::try_from(token).unwrap_or(0),
        highest: u64::try_from(highest).unwrap_or(0),
    }
}
