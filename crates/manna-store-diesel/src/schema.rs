//! Idempotent schema helpers: version columns and the tables manna keeps
//! (operations, fences, migration checkpoints).
//!
//! Every name is validated with [`manna_store::Ident`] before any SQL is
//! built and quoted in the SQL; each helper can run at every start-up.

use diesel::sql_types::Text;
use manna_store::{Ident, StoreErrorKind};

use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::sql::{Bind, Sql};

/// Default name of the operations table ([`create_operations_table`]).
pub const OPERATIONS_TABLE: &str = "manna_operations";
/// Default name of the fence table ([`create_fence_table`]).
pub const FENCE_TABLE: &str = "manna_fences";
/// Name of the migration checkpoint table ([`create_checkpoint_table`]).
pub const CHECKPOINT_TABLE: &str = "manna_migration_checkpoints";
/// Name of the fence table of the migrator's fenced batches (the shape of
/// [`create_fence_table`]'s, one row per lock name).
pub const MIGRATION_FENCE_TABLE: &str = "manna_migration_fences";
/// Name of the shard layout table ([`create_layout_table`]).
pub const LAYOUT_TABLE: &str = "manna_shard_layouts";
/// Default name of the version column.
pub const VERSION_COLUMN: &str = "version";
/// Name of the lease table of the database lock ([`create_lock_table`],
/// [`crate::DbLockBackend`]).
pub const LOCK_TABLE: &str = "manna_locks";
/// Name of the wait-for edge table of the database lock's deadlock
/// detection ([`create_lock_table`], one row per waiting session).
pub const LOCK_WAITS_TABLE: &str = "manna_lock_waits";

/// A column of a table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct ColumnDescription {
    /// Column name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Declared type, lower-case (`bigint`, `text`, `uuid`, `integer`…).
    #[diesel(sql_type = Text)]
    pub sql_type: String,
}

/// The columns of `table` in declaration order; [`Error::Database`] with kind
/// `NotFound` when the table does not exist.
pub fn table_columns<C: StoreConnection>(
    conn: &mut C,
    table: &str,
) -> Result<Vec<ColumnDescription>, Error> {
    let table = Ident::new(table)?;
    columns_of(&mut conn.any(), &table)
}

pub(crate) fn columns_of(
    conn: &mut AnyConn<'_>,
    table: &Ident,
) -> Result<Vec<ColumnDescription>, Error> {
    let mut q = Sql::new(conn.dialect());
    match conn.dialect() {
        Dialect::Postgres => {
            q.push(
                "SELECT a.attname::text AS name, lower(format_type(a.atttypid, a.atttypmod)) AS sql_type \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass(",
            )
            .bind(Bind::Text(table.quoted()))
            .push(") AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum");
        }
        Dialect::Sqlite => {
            q.push("SELECT name, lower(type) AS sql_type FROM pragma_table_info(")
                .bind(Bind::Text(table.as_str().to_owned()))
                .push(") ORDER BY cid");
        }
    }
    let cols: Vec<ColumnDescription> = q.load(conn)?;
    if cols.is_empty() {
        return Err(Error::not_found(format!("table {table} does not exist")));
    }
    Ok(cols)
}

/// Adds `COLUMN INTEGER NOT NULL DEFAULT 1` to `table` unless it already has
/// the column; returns whether it was added. Existing rows get version 1.
///
/// ```
/// # use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
/// use manna_store_diesel::schema::add_version_column;
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// conn.batch_execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT)").unwrap();
/// assert!(add_version_column(&mut conn, "accounts", "version").unwrap());
/// assert!(!add_version_column(&mut conn, "accounts", "version").unwrap()); // idempotent
/// assert!(add_version_column(&mut conn, "accounts; DROP TABLE x", "version").is_err());
/// ```
pub fn add_version_column<C: StoreConnection>(
    conn: &mut C,
    table: &str,
    column: &str,
) -> Result<bool, Error> {
    let table = Ident::new(table)?;
    let column = Ident::new(column)?;
    let mut conn = conn.any();
    let conn = &mut conn;
    ddl_transaction(conn, |conn| {
        let exists = columns_of(conn, &table)?
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(column.as_str()));
        if exists {
            return Ok(false);
        }
        let mut q = Sql::new(conn.dialect());
        q.push("ALTER TABLE ")
            .ident(&table)
            .push(" ADD COLUMN ")
            .ident(&column)
            .push(" INTEGER NOT NULL DEFAULT 1");
        q.execute(conn)?;
        Ok(true)
    })
}

/// [`add_version_column`] with the column `version` for each of `tables`;
/// every name is validated before anything runs. Returns the tables changed.
pub fn add_version_columns<C: StoreConnection>(
    conn: &mut C,
    tables: &[&str],
) -> Result<Vec<String>, Error> {
    for t in tables {
        Ident::new(t)?;
    }
    let mut added = Vec::new();
    for t in tables {
        if add_version_column(conn, t, VERSION_COLUMN)? {
            added.push((*t).to_owned());
        }
    }
    Ok(added)
}

/// Creates the operations table used by idempotent compare-and-set
/// ([`crate::IdempotentCas`]) if it does not exist.
pub fn create_operations_table<C: StoreConnection>(conn: &mut C, name: &str) -> Result<(), Error> {
    let name = Ident::new(name)?;
    ensure_operations_table(&mut conn.any(), &name)
}

pub(crate) fn ensure_operations_table(conn: &mut AnyConn<'_>, name: &Ident) -> Result<(), Error> {
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           operation_id TEXT PRIMARY KEY, \
           entity TEXT NOT NULL, \
           row_id TEXT NOT NULL, \
           version BIGINT, \
           applied_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        name.quoted()
    );
    run_ddl(conn, &ddl)
}

/// Creates the fence table used by fenced writes ([`crate::Fence`]) if it
/// does not exist: one row per resource with the highest token seen and the
/// holder id of the lease that wrote it (a table made before holders were
/// recorded gets the `holder` column added).
pub fn create_fence_table<C: StoreConnection>(conn: &mut C, name: &str) -> Result<(), Error> {
    let name = Ident::new(name)?;
    ensure_fence_table(&mut conn.any(), &name)
}

pub(crate) fn ensure_fence_table(conn: &mut AnyConn<'_>, name: &Ident) -> Result<(), Error> {
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           resource TEXT PRIMARY KEY, \
           token BIGINT NOT NULL, \
           holder TEXT, \
           updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        name.quoted()
    );
    ddl_transaction(conn, |conn| {
        let mut q = Sql::new(conn.dialect());
        q.push(&ddl);
        q.execute(conn)?;
        add_fence_holders(conn, name).map(|_| ())
    })
}

/// Adds the `holder` column to a fence table made before holder ids were
/// recorded; whether it did (not for a table that has it or does not exist).
pub(crate) fn upgrade_fence_table(conn: &mut AnyConn<'_>, name: &Ident) -> Result<bool, Error> {
    ddl_transaction(conn, |conn| match columns_of(conn, name) {
        Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
        Ok(_) => add_fence_holders(conn, name),
    })
}

/// Adds the `holder` column unless the table has it; whether it did.
fn add_fence_holders(conn: &mut AnyConn<'_>, name: &Ident) -> Result<bool, Error> {
    let has_holder = columns_of(conn, name)?
        .iter()
        .any(|c| c.name.eq_ignore_ascii_case("holder"));
    if has_holder {
        return Ok(false);
    }
    if conn.dialect() == Dialect::Postgres {
        // The ALTER waits for every reader of the table: bounded, so that
        // fenced writers do not queue behind it for long.
        let mut q = Sql::new(Dialect::Postgres);
        q.push("SET LOCAL lock_timeout = '10s'");
        q.execute(conn)?;
    }
    let mut q = Sql::new(conn.dialect());
    q.push("ALTER TABLE ")
        .ident(name)
        .push(" ADD COLUMN holder TEXT");
    q.execute(conn)
        .map_err(Error::from)
        .map_err(|e| Error::Database {
            kind: e.kind(),
            message: format!(
                "the fence table {name} predates holder ids and could not be upgraded ({e}): run \
             `ALTER TABLE {name} ADD COLUMN holder TEXT` as its owner"
            ),
        })?;
    Ok(true)
}

/// Creates `manna_locks`, the lease table of [`crate::DbLockBackend`], if it
/// does not exist: one row per lock name with the current `owner` (`NULL`
/// when released), the fencing `token` (never reset), `expires_at` by the
/// database server's clock (`TIMESTAMPTZ` on PostgreSQL, milliseconds since
/// the Unix epoch on SQLite) and the `holder` description; and
/// `manna_lock_waits`, the wait-for edges of waiting lock sessions (one row
/// per session: the lock it waits for and when the edge expires). The
/// backend creates both on first use; this is for schemas managed ahead of
/// time.
///
/// Never delete its rows while locks may be in use: a row's token is what
/// keeps fencing tokens increasing (a re-created row restarts from the
/// server's clock in microseconds, which stays ahead unless more than a
/// million locks per second were taken on that name).
pub fn create_lock_table<C: StoreConnection>(conn: &mut C) -> Result<(), Error> {
    ensure_lock_table(&mut conn.any())
}

pub(crate) fn ensure_lock_table(conn: &mut AnyConn<'_>) -> Result<(), Error> {
    let expires_at = match conn.dialect() {
        Dialect::Postgres => "TIMESTAMPTZ",
        Dialect::Sqlite => "INTEGER",
    };
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS \"{LOCK_TABLE}\" (\
           name TEXT PRIMARY KEY, \
           owner TEXT, \
           token BIGINT NOT NULL, \
           expires_at {expires_at} NOT NULL, \
           holder TEXT)"
    );
    run_ddl(conn, &ddl)?;
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS \"{LOCK_WAITS_TABLE}\" (\
           session TEXT PRIMARY KEY, \
           name TEXT NOT NULL, \
           expires_at {expires_at} NOT NULL)"
    );
    run_ddl(conn, &ddl)
}

/// Creates `manna_migration_checkpoints` if it does not exist: one row per
/// (column, partition, run) with the last id processed, the counts and
/// `updated_at`. The `target` column holds the run key
/// ([`manna_store::CheckpointKey::run`]: the run's parameters); rows written
/// by older versions, which held only the target format there, simply never
/// match a current run and are started over.
pub fn create_checkpoint_table<C: StoreConnection>(conn: &mut C) -> Result<(), Error> {
    ensure_checkpoint_table(&mut conn.any())
}

pub(crate) fn ensure_checkpoint_table(conn: &mut AnyConn<'_>) -> Result<(), Error> {
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS \"{CHECKPOINT_TABLE}\" (\
           column_name TEXT NOT NULL, \
           partition_name TEXT NOT NULL, \
           target TEXT NOT NULL, \
           last_id TEXT, \
           last_id_kind TEXT, \
           scanned BIGINT NOT NULL DEFAULT 0, \
           migrated BIGINT NOT NULL DEFAULT 0, \
           unchanged BIGINT NOT NULL DEFAULT 0, \
           conflicts BIGINT NOT NULL DEFAULT 0, \
           failed BIGINT NOT NULL DEFAULT 0, \
           updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP, \
           PRIMARY KEY (column_name, partition_name, target))"
    );
    run_ddl(conn, &ddl)
}

/// Creates `manna_shard_layouts` if it does not exist: one row per
/// (column, id column, shard count) with the boundaries (a JSON array of row
/// ids) and `created_at`. The first layout saved for a key is kept.
pub fn create_layout_table<C: StoreConnection>(conn: &mut C) -> Result<(), Error> {
    ensure_layout_table(&mut conn.any())
}

pub(crate) fn ensure_layout_table(conn: &mut AnyConn<'_>) -> Result<(), Error> {
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS \"{LAYOUT_TABLE}\" (\
           column_name TEXT NOT NULL, \
           id_column TEXT NOT NULL, \
           shards BIGINT NOT NULL, \
           bounds TEXT NOT NULL, \
           created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP, \
           PRIMARY KEY (column_name, id_column, shards))"
    );
    run_ddl(conn, &ddl)
}

fn run_ddl(conn: &mut AnyConn<'_>, ddl: &str) -> Result<(), Error> {
    ddl_transaction(conn, |conn| {
        let mut q = Sql::new(conn.dialect());
        q.push(ddl);
        q.execute(conn)?;
        Ok(())
    })
}

/// Runs schema changes in a transaction; on PostgreSQL under a transaction
/// advisory lock, because concurrent `CREATE TABLE IF NOT EXISTS` can still
/// collide in the catalog.
fn ddl_transaction<T>(
    conn: &mut AnyConn<'_>,
    f: impl FnOnce(&mut AnyConn<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    conn.write_transaction(|conn| {
        if conn.dialect() == Dialect::Postgres {
            let mut q = Sql::new(Dialect::Postgres);
            // An arbitrary constant key: "manna" in ASCII.
            q.push("SELECT pg_advisory_xact_lock(478560349793)");
            q.execute(conn)?;
        }
        f(conn)
    })
}
