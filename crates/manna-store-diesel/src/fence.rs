//! Writes fenced by a distributed lock's token.

use diesel::sql_types::{BigInt, Nullable, Text};
use manna_lock::Fencing;
use manna_store::{Ident, StoreErrorKind};

use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::schema::{ensure_fence_table, upgrade_fence_table, FENCE_TABLE};
use crate::sql::{Bind, Sql};

/// A fence table: one row per resource holding the highest fencing token
/// that has written to it, and the holder id of the lease that wrote it.
///
/// A lock holder paused past its lease (GC pause, stopped VM) may wake up and
/// write after a newer holder has; its token is lower, so the fence refuses
/// the write. Two leases given one token (a lock backend whose counter went
/// back) are told apart by their holder ids: the second is refused too. The
/// check and the bump are a single upsert statement, inside the same
/// transaction as the guarded write. The rule is
/// [`Fencing::may_follow`](manna_lock::Fencing::may_follow).
///
/// ```
/// # use diesel::{Connection, SqliteConnection};
/// use manna_lock::{Fencing, FencingToken};
/// use manna_store_diesel::{Error, Fence};
/// // In a program: `guard.lease().fencing()`.
/// let lease = |token, holder: &str| Fencing::new(FencingToken::from(token), holder);
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// let fence = Fence::new();
/// fence.create_schema(&mut conn).unwrap();
/// let ok: Result<(), Error> = fence.write(&mut conn, "items:7", &lease(5, "a"), |_conn| Ok(()));
/// assert!(ok.is_ok());
/// let stale: Result<(), Error> = fence.write(&mut conn, "items:7", &lease(4, "b"), |_conn| Ok(()));
/// assert!(matches!(stale, Err(Error::StaleToken { token: 4, highest: 5, .. })));
/// let twin: Result<(), Error> = fence.write(&mut conn, "items:7", &lease(5, "c"), |_conn| Ok(()));
/// assert!(matches!(twin, Err(Error::TokenOfAnotherHolder { token: 5, .. })));
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
    #[diesel(sql_type = Nullable<Text>)]
    holder: Option<String>,
}

impl TokenRow {
    /// Whether this is what `token` of `holder` recorded.
    fn is(&self, token: i64, holder: &str) -> bool {
        self.token == token && self.holder.as_deref() == Some(holder)
    }
}

impl Fence {
    /// The fence in `manna_fences`.
    pub fn new() -> Self {
        Fence::in_table(Ident::new(FENCE_TABLE).expect("the default name is a valid identifier"))
    }

    /// A fence kept in another table.
    pub fn with_table(name: &str) -> Result<Self, Error> {
        Ok(Fence::in_table(Ident::new(name)?))
    }

    fn in_table(table: Ident) -> Self {
        Fence { table }
    }

    /// Creates the fence table if needed, or adds the `holder` column to
    /// one made before holder ids were recorded (idempotent).
    pub fn create_schema<C: StoreConnection>(&self, conn: &mut C) -> Result<(), Error> {
        self.ensure_table(&mut conn.any())
    }

    /// Runs `write` in a transaction that first records `fencing` for
    /// `resource`, refusing it (and running nothing) with
    /// [`Error::StaleToken`] when a higher token was already recorded, or
    /// with [`Error::TokenOfAnotherHolder`] when the same token was recorded
    /// for another holder. The same holder may write several times.
    ///
    /// If `write` fails, the transaction — token included — rolls back.
    ///
    /// A fence table made before holder ids were recorded gets its `holder`
    /// column when a write first fails for the want of it (its rows then
    /// pass only a higher token); the write is then tried once more.
    pub fn write<C, T, E, F>(
        &self,
        conn: &mut C,
        resource: &str,
        fencing: &Fencing,
        write: F,
    ) -> Result<T, E>
    where
        C: StoreConnection,
        F: FnOnce(&mut C) -> Result<T, E>,
        E: From<Error>,
    {
        let token = sql_token(fencing)?;
        let mut write = Some(write);
        let mut upgraded = false;
        loop {
            // Whether the fence statement failed in a way a missing
            // `holder` column would explain (`write` has not run then).
            let mut maybe_old_table = false;
            let result = conn.write_transaction(|conn| {
                if let Err(e) =
                    self.check_and_bump(&mut conn.any(), resource, token, fencing.holder())
                {
                    maybe_old_table =
                        matches!(e.kind(), StoreErrorKind::NotFound | StoreErrorKind::Other);
                    return Err(E::from(e));
                }
                match write.take() {
                    Some(write) => write(conn),
                    None => Err(E::from(Error::other("a fenced write ran twice"))),
                }
            });
            if maybe_old_table && !upgraded && upgrade_fence_table(&mut conn.any(), &self.table)? {
                upgraded = true;
                continue;
            }
            return result;
        }
    }

    pub(crate) fn check_and_bump(
        &self,
        conn: &mut AnyConn<'_>,
        resource: &str,
        token: i64,
        holder: &str,
    ) -> Result<(), Error> {
        // The holder writing again (the common case): on PostgreSQL a shared
        // lock on the fence row is enough, so one holder's concurrent writes
        // (the migrator's workers) do not serialize on it, while a newer
        // holder's upsert below waits for them to commit. The plain read
        // first keeps a writer from holding a shared lock it then needs to
        // upgrade (two such writers would deadlock).
        if conn.dialect() == Dialect::Postgres
            && self
                .read_token(conn, resource, false)?
                .is_some_and(|r| r.is(token, holder))
        {
            match self.read_token(conn, resource, true)? {
                Some(r) if r.is(token, holder) => return Ok(()),
                Some(r) if r.token >= token => return Err(refused(resource, token, &r)),
                _ => {}
            }
        }
        // One statement: insert the resource, or record our token if it is
        // higher, or the same one of the same holder. On PostgreSQL the
        // upsert locks the fence row, so a newer holder waits for the writes
        // in flight under the older token.
        let mut q = Sql::new(conn.dialect());
        q.push("INSERT INTO ")
            .ident(&self.table)
            .push(" (resource, token, holder) VALUES (")
            .bind(Bind::Text(resource.to_owned()))
            .push(", ")
            .bind(Bind::Int(token))
            .push(", ")
            .bind(Bind::Text(holder.to_owned()))
            .push(") ON CONFLICT (resource) DO UPDATE SET token = excluded.token, holder = excluded.holder, updated_at = CURRENT_TIMESTAMP WHERE ")
            .ident(&self.table)
            .push(".token < excluded.token OR (")
            .ident(&self.table)
            .push(".token = excluded.token AND ")
            .ident(&self.table)
            .push(".holder = excluded.holder)");
        if q.execute(conn)? == 1 {
            return Ok(());
        }
        match self.read_token(conn, resource, false)? {
            Some(r) => Err(refused(resource, token, &r)),
            None => Err(stale(resource, token, 0)),
        }
    }

    /// What is recorded for `resource`, under a shared row lock if `share`.
    fn read_token(
        &self,
        conn: &mut AnyConn<'_>,
        resource: &str,
        share: bool,
    ) -> Result<Option<TokenRow>, Error> {
        let mut q = Sql::new(conn.dialect());
        q.push("SELECT token, holder FROM ")
            .ident(&self.table)
            .push(" WHERE resource = ")
            .bind(Bind::Text(resource.to_owned()));
        if share {
            q.push(" FOR SHARE");
        }
        let mut rows: Vec<TokenRow> = q.load(conn)?;
        Ok((!rows.is_empty()).then(|| rows.swap_remove(0)))
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
            .map(|r| u64::try_from(r.token).unwrap_or(0)))
    }

    /// Creates the fence table if needed, through any connection.
    pub(crate) fn ensure_table(&self, conn: &mut AnyConn<'_>) -> Result<(), Error> {
        ensure_fence_table(conn, &self.table)
    }
}

/// A fencing token as the fence tables store it (`BIGINT`).
pub(crate) fn sql_token(fencing: &Fencing) -> Result<i64, Error> {
    let token = fencing.token().get();
    i64::try_from(token).map_err(|_| Error::TokenOutOfRange(token))
}

/// Why `token` was refused, given what the fence recorded.
fn refused(resource: &str, token: i64, recorded: &TokenRow) -> Error {
    if recorded.token == token {
        Error::TokenOfAnotherHolder {
            resource: resource.to_owned(),
            token: u64::try_from(token).unwrap_or(0),
        }
    } else {
        stale(resource, token, recorded.token)
    }
}

fn stale(resource: &str, token: i64, highest: i64) -> Error {
    Error::StaleToken {
        resource: resource.to_owned(),
        token: u64::try_from(token).unwrap_or(0),
        highest: u64::try_from(highest).unwrap_or(0),
    }
}
