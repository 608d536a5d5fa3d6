//! The migrator's [`ColumnStore`] port on PostgreSQL and SQLite.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use manna_store::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Counts, Fence as LockFence,
    IdKind, IdRange, Ident, LayoutKey, PrefixCensus, Rewrite, Row, RowId, StoreError, Value,
    WriteOptions,
};

use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::fence::Fence;
use crate::pool::{DbPool, PoolOptions};
use crate::schema::{
    columns_of, ensure_checkpoint_table, ensure_layout_table, ColumnDescription, CHECKPOINT_TABLE,
    LAYOUT_TABLE, MIGRATION_FENCE_TABLE, VERSION_COLUMN,
};
use crate::sql::{Bind, Sql};

/// Session limits of a PostgreSQL batch transaction: the server ends the
/// session of a writer idle inside it for 10 s (a batch never pauses that
/// long between its statements unless its process is stopped), and a lock
/// wait ends after 30 s with an error instead of hanging.
const PG_BATCH_TIMEOUTS: &str = "SELECT \
     set_config('idle_in_transaction_session_timeout', '10s', true), \
     set_config('lock_timeout', '30s', true)";

/// SQLite's statement-parameter budget per `IN (…)` list when reading ids.
const SQLITE_IN_CHUNK: usize = 500;

/// The [`ColumnStore`] the migrator scans and writes through, over a
/// [`DbPool`] of either backend.
///
/// - `scan`: keyset pagination (`id > last ORDER BY id LIMIT n`) for integer,
///   text and UUID keys. Text keys are ordered bytewise (`COLLATE "C"` on
///   PostgreSQL), matching [`RowId`]'s order.
/// - Values are read and compared byte for byte: on SQLite as
///   `CAST(c AS BLOB)` with `typeof(c)`, so a value stored as a BLOB reads as
///   its text ([`Value::NotText`] when it is not UTF-8) and no collation
///   (`NOCASE`) ever applies; on PostgreSQL under `COLLATE "C"`.
/// - `write_batch`: PostgreSQL runs **one** `UPDATE … FROM unnest($1, $2, $3)
///   … RETURNING id` per batch, comparing each row with the old ciphertext;
///   SQLite runs one cached prepared `UPDATE` per row inside a single
///   `BEGIN IMMEDIATE` transaction. In the same transaction the fence
///   (`manna_migration_fences`, the logic of [`Fence`]) is checked first and
///   the checkpoint row in `manna_migration_checkpoints` is upserted last.
/// - `census`: one aggregate query grouping envelope headers by key id.
/// - `save_layout`: `INSERT … ON CONFLICT DO NOTHING` into
///   `manna_shard_layouts`, then read back, in one transaction.
/// - `identity`: `postgres:<system identifier>/<database>` or
///   `sqlite:<canonical path of the main database file>`.
/// - `split`: integer keys by arithmetic on `MIN`/`MAX`, text and UUID keys
///   by quantile boundaries.
///
/// ```
/// use manna_store::{ColumnRef, ColumnStore, IdRange, Rewrite, RowId, WriteOptions};
/// use manna_store_diesel::DieselStore;
/// # use diesel::connection::SimpleConnection;
/// let dir = tempfile::tempdir().unwrap();
/// let store = DieselStore::connect(dir.path().join("app.db").to_str().unwrap()).unwrap();
/// store.pool().get().unwrap().batch_execute(
///     "CREATE TABLE items (id INTEGER PRIMARY KEY, token TEXT);
///      INSERT INTO items VALUES (1, 'old-1'), (2, 'old-2')").unwrap();
/// let col = ColumnRef::parse("items.token", "id").unwrap();
/// let rows = store.scan(&col, &IdRange::all(), 10).unwrap();
/// assert_eq!(rows.len(), 2);
/// let written = store.write_batch(&col, &[
///     Rewrite { id: RowId::Int(1), old: "old-1".into(), new: "new-1".into() },
///     Rewrite { id: RowId::Int(2), old: "changed meanwhile".into(), new: "new-2".into() },
/// ], WriteOptions::default(), None, None).unwrap();
/// assert_eq!(written, vec![RowId::Int(1)]); // row 2 is a conflict, left alone
/// ```
#[derive(Debug)]
pub struct DieselStore {
    pool: DbPool,
    info: Mutex<HashMap<ColumnRef, Described>>,
    identity: OnceLock<String>,
    fence: Fence,
    checkpoint_table_ready: AtomicBool,
    fence_table_ready: AtomicBool,
    layout_table_ready: AtomicBool,
}

/// What the store knows about a column.
#[derive(Debug, Clone)]
struct Described {
    info: ColumnInfo,
    /// PostgreSQL text key whose collation is not bytewise: order and compare
    /// it with `COLLATE "C"` (which cannot use the key's index).
    collate_c: bool,
}

#[derive(diesel::QueryableByName)]
struct Collation {
    #[diesel(sql_type = Nullable<Text>)]
    collation: Option<String>,
}

/// A PostgreSQL row with an integer key: TEXT values are always UTF-8 there.
#[derive(diesel::QueryableByName)]
struct IntRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// An SQLite row with an integer key: the value's bytes and storage class.
#[derive(diesel::QueryableByName)]
struct IntBytesRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
}

#[derive(diesel::QueryableByName)]
struct TextBytesRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
}

#[derive(diesel::QueryableByName)]
struct CensusRow {
    #[diesel(sql_type = Nullable<Binary>)]
    k: Option<Vec<u8>>,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    nn: i64,
}

#[derive(diesel::QueryableByName)]
struct IdentityRow {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(diesel::QueryableByName)]
struct BoundsRow {
    #[diesel(sql_type = Text)]
    bounds: String,
}

#[derive(diesel::QueryableByName)]
struct IntId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(diesel::QueryableByName)]
struct TextId {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(diesel::QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct MinMax {
    #[diesel(sql_type = Nullable<BigInt>)]
    lo: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    hi: Option<i64>,
}

#[derive(diesel::QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    partition_name: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_id_kind: Option<String>,
    #[diesel(sql_type = BigInt)]
    scanned: i64,
    #[diesel(sql_type = BigInt)]
    migrated: i64,
    #[diesel(sql_type = BigInt)]
    unchanged: i64,
    #[diesel(sql_type = BigInt)]
    conflicts: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
}

impl DieselStore {
    /// A store over `pool`.
    pub fn new(pool: DbPool) -> Self {
        DieselStore {
            pool,
            info: Mutex::new(HashMap::new()),
            identity: OnceLock::new(),
            fence: Fence::with_table(MIGRATION_FENCE_TABLE)
                .expect("the fence table's name is a valid identifier"),
            checkpoint_table_ready: AtomicBool::new(false),
            fence_table_ready: AtomicBool::new(false),
            layout_table_ready: AtomicBool::new(false),
        }
    }

    /// Opens a pool for `url` with default [`PoolOptions`].
    pub fn connect(url: &str) -> Result<Self, Error> {
        Ok(DieselStore::new(DbPool::connect(
            url,
            &PoolOptions::default(),
        )?))
    }

    /// The pool (for schema set-up or application queries).
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    fn describe(&self, conn: &mut AnyConn<'_>, column: &ColumnRef) -> Result<Described, Error> {
        let dialect = conn.dialect();
        let cols = exact_columns(conn, column)?;
        let find = |name: &str| {
            cols.iter()
                .find(|c| c.name == name)
                .map(|c| c.sql_type.clone())
        };
        let id_type = find(column.id_column.as_str())
            .ok_or_else(|| missing_column(&column.table, column.id_column.as_str(), &cols))?;
        let value_type = find(column.column.as_str())
            .ok_or_else(|| missing_column(&column.table, column.column.as_str(), &cols))?;
        // SQLite resolves column names case-insensitively (so does the
        // quoted `"version"` it is written as); PostgreSQL does not.
        let has_version = cols.iter().any(|c| match dialect {
            Dialect::Postgres => c.name == VERSION_COLUMN,
            Dialect::Sqlite => c.name.eq_ignore_ascii_case(VERSION_COLUMN),
        });
        let id_kind = id_kind(dialect, &id_type).ok_or_else(|| {
            Error::unsupported(format!(
                "key column {}.{} has type {id_type}: only integer, text and UUID keys are supported",
                column.table, column.id_column
            ))
        })?;
        if !is_text(dialect, &value_type) {
            return Err(Error::unsupported(format!(
                "column {column} has type {value_type}: encrypted values live in TEXT columns"
            )));
        }
        let collate_c = dialect == Dialect::Postgres
            && id_kind == IdKind::Text
            && !bytewise_collation(conn, column)?;
        Ok(Described {
            info: ColumnInfo::new(id_kind, has_version),
            collate_c,
        })
    }

    fn info(&self, conn: &mut AnyConn<'_>, column: &ColumnRef) -> Result<Described, Error> {
        if let Some(i) = self.cache().get(column) {
            return Ok(i.clone());
        }
        let info = self.describe(conn, column)?;
        self.cache().insert(column.clone(), info.clone());
        Ok(info)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<ColumnRef, Described>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut AnyConn<'_>) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        f(&mut conn.any()).map_err(StoreError::from)
    }

    fn ensure_checkpoints(&self, conn: &mut AnyConn<'_>) -> Result<(), Error> {
        ensure_once(&self.checkpoint_table_ready, || {
            ensure_checkpoint_table(conn)
        })
    }

    fn ensure_fences(&self, conn: &mut AnyConn<'_>) -> Result<(), Error> {
        ensure_once(&self.fence_table_ready, || self.fence.ensure_table(conn))
    }

    fn ensure_layouts(&self, conn: &mut AnyConn<'_>) -> Result<(), Error> {
        ensure_once(&self.layout_table_ready, || ensure_layout_table(conn))
    }

    /// Rows of `range` (optionally only values not starting with `prefix`),
    /// in key order, at most `limit`.
    fn scan_where(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
        unprefixed: Option<&str>,
    ) -> Result<Vec<Row>, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            let mut q = Sql::new(conn.dialect());
            q.push("SELECT ");
            push_id_select(&mut q, "", column, kind);
            push_value_select(&mut q, column);
            q.push(" FROM ").ident(&column.table);
            let has_where = push_range(&mut q, column, kind, d.collate_c, range)?;
            if let Some(prefix) = unprefixed {
                q.push(if has_where { " AND " } else { " WHERE " });
                push_unprefixed(&mut q, column, prefix);
            }
            q.push(" ORDER BY ");
            push_id_expr(&mut q, "", column, d.collate_c);
            q.push(" LIMIT ")
                .bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
            rows_from(q, conn, kind)
        })
    }

    fn query_identity(&self) -> Result<String, Error> {
        let mut conn = self.pool.get()?;
        let mut conn = conn.any();
        let mut q = Sql::new(conn.dialect());
        match conn.dialect() {
            Dialect::Postgres => {
                q.push(
                    // The schema too: unqualified table names resolve in
                    // it, so two schemas' `items` are two tables.
                    "SELECT 'postgres:' || CAST(system_identifier AS TEXT) || '/' || current_database() \
                     || '/' || COALESCE(current_schema(), '') AS v FROM pg_control_system()",
                );
                let rows: Vec<IdentityRow> = q.load(&mut conn)?;
                rows.into_iter()
                    .next()
                    .map(|r| r.v)
                    .ok_or_else(|| Error::other("pg_control_system() returned no row"))
            }
            Dialect::Sqlite => {
                q.push("SELECT file AS v FROM pragma_database_list WHERE name = 'main'");
                let rows: Vec<IdentityRow> = q.load(&mut conn)?;
                let file = rows.into_iter().next().map(|r| r.v).unwrap_or_default();
                if file.is_empty() {
                    // An in-memory or temporary database belongs to this
                    // store's pool alone.
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    return Ok(format!(
                        "sqlite::memory:{}:{}",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::Relaxed)
                    ));
                }
                let path = std::fs::canonicalize(&file).map_err(|e| {
                    Error::other(format!("cannot resolve the SQLite database file: {e}"))
                })?;
                Ok(format!("sqlite:{}", path.display()))
            }
        }
    }
}

fn ensure_once(
    ready: &AtomicBool,
    create: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    if !ready.load(Ordering::Acquire) {
        create()?;
        ready.store(true, Ordering::Release);
    }
    Ok(())
}

/// The columns of `column.table`, found only under the catalog's exact
/// spelling of the table; a table that exists under another case is
/// `NotFound` with "did you mean" and the catalog's spelling.
fn exact_columns(
    conn: &mut AnyConn<'_>,
    column: &ColumnRef,
) -> Result<Vec<ColumnDescription>, Error> {
    let mut q = Sql::new(conn.dialect());
    match conn.dialect() {
        Dialect::Postgres => {
            // Tables visible through the search_path, as `to_regclass` finds them.
            q.push(
                "SELECT c.relname::text AS v FROM pg_class c \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_table_is_visible(c.oid) \
                 AND lower(c.relname::text) = lower(",
            )
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(") ORDER BY c.relname::text = ")
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(" DESC, 1");
        }
        Dialect::Sqlite => {
            q.push(
                "SELECT name AS v FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name = ",
            )
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(" COLLATE NOCASE ORDER BY name = ")
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(" DESC, 1");
        }
    }
    let names: Vec<IdentityRow> = q.load(conn)?;
    let Some(spelled) = names.into_iter().next().map(|r| r.v) else {
        return Err(Error::not_found(format!(
            "table {} does not exist",
            column.table
        )));
    };
    if spelled != column.table.as_str() {
        // Suggest the column as the catalog spells it too, when it exists.
        let suggested_column = Ident::new(&spelled)
            .ok()
            .and_then(|t| columns_of(conn, &t).ok())
            .and_then(|cols| {
                cols.into_iter()
                    .find(|c| c.name.eq_ignore_ascii_case(column.column.as_str()))
                    .map(|c| c.name)
            })
            .unwrap_or_else(|| column.column.to_string());
        return Err(Error::not_found(format!(
            "table {} does not exist; did you mean `{spelled}.{suggested_column}`?",
            column.table
        )));
    }
    columns_of(conn, &column.table)
}

/// `NotFound` for a column missing under its exact spelling, with "did you
/// mean" when the catalog has it under another case.
fn missing_column(table: &Ident, name: &str, cols: &[ColumnDescription]) -> Error {
    match cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
        Some(c) => Error::not_found(format!(
            "column {table}.{name} does not exist; did you mean `{table}.{}`?",
            c.name
        )),
        None => Error::not_found(format!("column {table}.{name} does not exist")),
    }
}

/// Whether the key column's collation orders text bytewise (`C`, `POSIX`,
/// `C.UTF-8`): then the key's index serves keyset scans directly.
fn bytewise_collation(conn: &mut AnyConn<'_>, column: &ColumnRef) -> Result<bool, Error> {
    let mut q = Sql::new(Dialect::Postgres);
    q.push(
        "SELECT CASE WHEN c.collname = 'default' \
           THEN (SELECT datcollate::text FROM pg_database WHERE datname = current_database()) \
           ELSE c.collcollate::text END AS collation \
         FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = to_regclass(",
    )
    .bind(Bind::Text(column.table.quoted()))
    .push(") AND a.attname = ")
    .bind(Bind::Text(column.id_column.as_str().to_owned()));
    let rows: Vec<Collation> = q.load(conn)?;
    Ok(rows
        .first()
        .and_then(|r| r.collation.as_deref())
        .is_some_and(|c| {
            matches!(
                c.to_ascii_lowercase().as_str(),
                "c" | "posix" | "c.utf-8" | "c.utf8"
            )
        }))
}

fn id_kind(dialect: Dialect, ty: &str) -> Option<IdKind> {
    match dialect {
        Dialect::Postgres => match ty {
            "bigint" | "integer" | "smallint" => Some(IdKind::Int),
            "uuid" => Some(IdKind::Uuid),
            t if t == "text" || t.starts_with("character") => Some(IdKind::Text),
            _ => None,
        },
        Dialect::Sqlite => {
            if ty.contains("int") {
                Some(IdKind::Int)
            } else if ty.contains("uuid") {
                Some(IdKind::Uuid)
            } else if ty.contains("char") || ty.contains("clob") || ty.contains("text") {
                Some(IdKind::Text)
            } else {
                None
            }
        }
    }
}

fn is_text(dialect: Dialect, ty: &str) -> bool {
    match dialect {
        Dialect::Postgres => ty == "text" || ty.starts_with("character"),
        Dialect::Sqlite => {
            ty.is_empty() || ty.contains("char") || ty.contains("clob") || ty.contains("text")
        }
    }
}

/// The key as an ordering expression: bytewise for PostgreSQL text.
fn push_id_expr(q: &mut Sql, prefix: &str, column: &ColumnRef, collate_c: bool) {
    q.push(prefix).ident(&column.id_column);
    if collate_c {
        q.push(" COLLATE \"C\"");
    }
}

/// The key as a selected value named `id` (BIGINT or TEXT).
fn push_id_select(q: &mut Sql, prefix: &str, column: &ColumnRef, kind: IdKind) {
    let cast = match kind {
        IdKind::Int => "BIGINT",
        _ => "TEXT",
    };
    q.push("CAST(")
        .push(prefix)
        .ident(&column.id_column)
        .push(" AS ")
        .push(cast)
        .push(") AS id");
}

/// A bound key value of the column's kind.
fn push_id_value(q: &mut Sql, kind: IdKind, id: &RowId) -> Result<(), Error> {
    match (kind, id) {
        (IdKind::Int, RowId::Int(i)) => {
            q.bind(Bind::Int(*i));
        }
        (IdKind::Uuid, RowId::Text(s)) if q.dialect() == Dialect::Postgres => {
            q.push("CAST(")
                .bind(Bind::Text(s.clone()))
                .push(" AS uuid)");
        }
        (IdKind::Text | IdKind::Uuid, RowId::Text(s)) => {
            q.bind(Bind::Text(s.clone()));
        }
        _ => {
            return Err(Error::unsupported(format!(
                "row id {id} does not match the key column's type ({kind:?})"
            )))
        }
    }
    Ok(())
}

/// ` WHERE …` for `range` (nothing when unbounded).
fn push_range(
    q: &mut Sql,
    column: &ColumnRef,
    kind: IdKind,
    collate_c: bool,
    range: &IdRange,
) -> Result<bool, Error> {
    let mut first = true;
    let mut clause = |q: &mut Sql| {
        q.push(if first { " WHERE " } else { " AND " });
        first = false;
    };
    if let Some(after) = &range.after {
        clause(q);
        push_id_expr(q, "", column, collate_c);
        q.push(" > ");
        push_id_value(q, kind, after)?;
    }
    if let Some(until) = &range.until {
        clause(q);
        push_id_expr(q, "", column, collate_c);
        q.push(" <= ");
        push_id_value(q, kind, until)?;
    }
    Ok(!first)
}

/// `, value` (PostgreSQL) or `, kind, value` (SQLite: the storage class and
/// the bytes, whatever the storage class and the column's collation).
fn push_value_select(q: &mut Sql, column: &ColumnRef) {
    match q.dialect() {
        Dialect::Postgres => {
            q.push(", ").ident(&column.column).push(" AS value");
        }
        Dialect::Sqlite => {
            q.push(", typeof(")
                .ident(&column.column)
                .push(") AS kind, CAST(")
                .ident(&column.column)
                .push(" AS BLOB) AS value");
        }
    }
}

/// The value is not `NULL` and does not start with the bytes of `prefix`
/// (no `LIKE`: it has wildcards, and ignores case on SQLite).
fn push_unprefixed(q: &mut Sql, column: &ColumnRef, prefix: &str) {
    q.ident(&column.column).push(" IS NOT NULL AND ");
    match q.dialect() {
        Dialect::Postgres => {
            q.push("NOT starts_with(")
                .ident(&column.column)
                .push(" COLLATE \"C\", ")
                .bind(Bind::Text(prefix.to_owned()))
                .push(")");
        }
        Dialect::Sqlite => {
            // substr() of an empty BLOB is NULL, not X''.
            q.push("COALESCE(substr(CAST(")
                .ident(&column.column)
                .push(" AS BLOB), 1, ")
                .bind(Bind::Int(i64::try_from(prefix.len()).unwrap_or(i64::MAX)))
                .push("), X'') <> ")
                .bind(Bind::Bytes(prefix.as_bytes().to_vec()));
        }
    }
}

/// An SQLite value from its storage class and bytes: text when UTF-8.
fn sqlite_value(kind: &str, bytes: Option<Vec<u8>>) -> Value {
    match (kind, bytes) {
        ("null", _) | (_, None) => Value::Null,
        ("text" | "blob", Some(b)) => String::from_utf8(b).map_or(Value::NotText, Value::Text),
        // INTEGER or REAL: not a stored string at all.
        _ => Value::NotText,
    }
}

/// Loads rows selected with [`push_id_select`] and [`push_value_select`].
fn rows_from(q: Sql, conn: &mut AnyConn<'_>, kind: IdKind) -> Result<Vec<Row>, Error> {
    let row = |id: RowId, value: Value| Row { id, value };
    Ok(match (q.dialect(), kind) {
        (Dialect::Postgres, IdKind::Int) => q
            .load::<IntRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Int(r.id), r.value.into()))
            .collect(),
        (Dialect::Postgres, _) => q
            .load::<TextRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Text(r.id), r.value.into()))
            .collect(),
        (Dialect::Sqlite, IdKind::Int) => q
            .load::<IntBytesRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Int(r.id), sqlite_value(&r.kind, r.value)))
            .collect(),
        (Dialect::Sqlite, _) => q
            .load::<TextBytesRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Text(r.id), sqlite_value(&r.kind, r.value)))
            .collect(),
    })
}

fn ids_from(q: Sql, conn: &mut AnyConn<'_>, kind: IdKind) -> Result<Vec<RowId>, Error> {
    Ok(match kind {
        IdKind::Int => q
            .load::<IntId>(conn)?
            .into_iter()
            .map(|r| RowId::Int(r.id))
            .collect(),
        _ => q
            .load::<TextId>(conn)?
            .into_iter()
            .map(|r| RowId::Text(r.id))
            .collect(),
    })
}

fn count_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl ColumnStore for DieselStore {
    fn identity(&self) -> Result<String, StoreError> {
        if let Some(id) = self.identity.get() {
            return Ok(id.clone());
        }
        let id = self.query_identity()?;
        Ok(self.identity.get_or_init(|| id).clone())
    }

    fn check_column(&self, column: &ColumnRef) -> Result<ColumnInfo, StoreError> {
        self.with_conn(|conn| {
            let d = self.describe(conn, column)?;
            self.cache().insert(column.clone(), d.clone());
            Ok(d.info)
        })
    }

    fn count(&self, column: &ColumnRef, range: &IdRange) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            let mut q = Sql::new(conn.dialect());
            q.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
                .ident(&column.table);
            push_range(&mut q, column, kind, d.collate_c, range)?;
            let rows: Vec<CountRow> = q.load(conn)?;
            Ok(rows.first().map_or(0, |r| count_u64(r.n)))
        })
    }

    fn census(&self, column: &ColumnRef, range: &IdRange) -> Result<PrefixCensus, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let mut q = Sql::new(conn.dialect());
            // Envelope headers `mn1:<16 bytes>:`, compared as bytes; one
            // group per key id plus one (k NULL) for NULLs and the rest.
            match conn.dialect() {
                Dialect::Postgres => {
                    q.push(
                        "SELECT CASE WHEN substring(manna_b FROM 1 FOR 4) = CAST('mn1:' AS bytea) \
                         AND substring(manna_b FROM 21 FOR 1) = CAST(':' AS bytea) \
                         THEN substring(manna_b FROM 5 FOR 16) END AS k, \
                         CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(manna_b) AS BIGINT) AS nn \
                         FROM (SELECT convert_to(",
                    )
                    .ident(&column.column)
                    .push(", 'UTF8') AS manna_b FROM ")
                    .ident(&column.table);
                    push_range(&mut q, column, d.info.id_kind, d.collate_c, range)?;
                    q.push(") AS manna_s GROUP BY 1");
                }
                Dialect::Sqlite => {
                    q.push("SELECT CASE WHEN substr(CAST(")
                        .ident(&column.column)
                        .push(" AS BLOB), 1, 4) = X'6d6e313a' AND substr(CAST(")
                        .ident(&column.column)
                        .push(" AS BLOB), 21, 1) = X'3a' THEN substr(CAST(")
                        .ident(&column.column)
                        .push(
                            " AS BLOB), 5, 16) END AS k, \
                             CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(",
                        )
                        .ident(&column.column)
                        .push(") AS BIGINT) AS nn FROM ")
                        .ident(&column.table);
                    push_range(&mut q, column, d.info.id_kind, d.collate_c, range)?;
                    q.push(" GROUP BY 1");
                }
            }
            let mut census = PrefixCensus::default();
            for r in q.load::<CensusRow>(conn)? {
                census.total += count_u64(r.n);
                census.nulls += count_u64(r.n - r.nn);
                // A key id that is not UTF-8 belongs to a value that is not
                // text (SQLite): one of the others.
                if let Some(k) = r.k.and_then(|k| String::from_utf8(k).ok()) {
                    *census.envelopes.entry(k).or_default() += count_u64(r.n);
                }
            }
            Ok(census)
        })
    }

    fn split(&self, column: &ColumnRef, parts: u32) -> Result<Vec<IdRange>, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            if parts <= 1 {
                return Ok(vec![IdRange::all()]);
            }
            let bounds: Vec<RowId> = match kind {
                IdKind::Int => {
                    let mut q = Sql::new(conn.dialect());
                    q.push("SELECT CAST(MIN(")
                        .ident(&column.id_column)
                        .push(") AS BIGINT) AS lo, CAST(MAX(")
                        .ident(&column.id_column)
                        .push(") AS BIGINT) AS hi FROM ")
                        .ident(&column.table);
                    let mm: Vec<MinMax> = q.load(conn)?;
                    match mm.first() {
                        Some(MinMax {
                            lo: Some(lo),
                            hi: Some(hi),
                        }) => int_bounds(*lo, *hi, parts)
                            .into_iter()
                            .map(RowId::Int)
                            .collect(),
                        _ => Vec::new(),
                    }
                }
                _ => {
                    let total = {
                        let mut q = Sql::new(conn.dialect());
                        q.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
                            .ident(&column.table);
                        let rows: Vec<CountRow> = q.load(conn)?;
                        rows.first().map_or(0, |r| r.n)
                    };
                    let mut bounds: Vec<RowId> = Vec::new();
                    for i in 1..i64::from(parts) {
                        let offset = total * i / i64::from(parts) - 1;
                        if offset < 0 {
                            continue;
                        }
                        let mut q = Sql::new(conn.dialect());
                        q.push("SELECT ");
                        push_id_select(&mut q, "", column, kind);
                        q.push(" FROM ").ident(&column.table).push(" ORDER BY ");
                        push_id_expr(&mut q, "", column, d.collate_c);
                        q.push(" LIMIT 1 OFFSET ").bind(Bind::Int(offset));
                        if let Some(b) = ids_from(q, conn, kind)?.into_iter().next() {
                            if bounds.last().is_none_or(|last| &b > last) {
                                bounds.push(b);
                            }
                        }
                    }
                    bounds
                }
            };
            Ok(IdRange::from_bounds(bounds))
        })
    }

    fn scan(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        self.scan_where(column, range, limit, None)
    }

    fn scan_unprefixed(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
        prefix: &str,
    ) -> Result<Vec<Row>, StoreError> {
        self.scan_where(column, range, limit, Some(prefix))
    }

    fn read(&self, column: &ColumnRef, ids: &[RowId]) -> Result<Vec<Row>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            let mut out = Vec::with_capacity(ids.len());
            let select = |q: &mut Sql| {
                q.push("SELECT ");
                push_id_select(q, "", column, kind);
                push_value_select(q, column);
                q.push(" FROM ")
                    .ident(&column.table)
                    .push(" WHERE ")
                    .ident(&column.id_column);
            };
            match conn.dialect() {
                Dialect::Postgres => {
                    let mut q = Sql::new(Dialect::Postgres);
                    select(&mut q);
                    q.push(" = ANY(");
                    bind_id_array(&mut q, kind, ids)?;
                    q.push(")");
                    out.extend(rows_from(q, conn, kind)?);
                }
                Dialect::Sqlite => {
                    for chunk in ids.chunks(SQLITE_IN_CHUNK) {
                        let mut q = Sql::new(Dialect::Sqlite);
                        select(&mut q);
                        q.push(" IN (");
                        for (i, id) in chunk.iter().enumerate() {
                            if i > 0 {
                                q.push(", ");
                            }
                            push_id_value(&mut q, kind, id)?;
                        }
                        q.push(")");
                        out.extend(rows_from(q, conn, kind)?);
                    }
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out.dedup_by(|a, b| a.id == b.id);
            Ok(out)
        })
    }

    fn write_batch(
        &self,
        column: &ColumnRef,
        rewrites: &[Rewrite],
        options: WriteOptions,
        checkpoint: Option<&Checkpoint>,
        fence: Option<&LockFence>,
    ) -> Result<Vec<RowId>, StoreError> {
        self.with_conn(|conn| {
            let info = self.info(conn, column)?.info;
            if options.bump_version && !info.has_version {
                return Err(Error::NoVersionColumn {
                    table: column.table.to_string(),
                    column: VERSION_COLUMN.to_owned(),
                });
            }
            if checkpoint.is_some() {
                self.ensure_checkpoints(conn)?;
            }
            let fence = match fence {
                Some(f) => {
                    self.ensure_fences(conn)?;
                    let token = f.token.get();
                    let token = i64::try_from(token).map_err(|_| Error::TokenOutOfRange(token))?;
                    Some((f.name.as_str(), token))
                }
                None => None,
            };
            conn.write_transaction(|conn| {
                if conn.dialect() == Dialect::Postgres {
                    // A migrator paused inside this transaction (SIGSTOP, a
                    // stalled VM) would hold its row and fence locks for as
                    // long as it stays paused: the server ends such a session
                    // instead, and a writer waiting on locks gives up in
                    // bounded time rather than forever.
                    let mut q = Sql::new(Dialect::Postgres);
                    q.push(PG_BATCH_TIMEOUTS);
                    q.execute(conn)?;
                }
                // First: a stale holder is refused before it writes anything.
                if let Some((name, token)) = fence {
                    self.fence.check_and_bump(conn, name, token)?;
                }
                let mut written = if rewrites.is_empty() {
                    Vec::new()
                } else {
                    match conn.dialect() {
                        Dialect::Postgres => {
                            write_pg(conn, column, info.id_kind, rewrites, options)?
                        }
                        Dialect::Sqlite => {
                            write_sqlite(conn, column, info.id_kind, rewrites, options)?
                        }
                    }
                };
                if let Some(cp) = checkpoint {
                    save_checkpoint(conn, cp)?;
                }
                written.sort();
                written.dedup();
                Ok(written)
            })
        })
    }

    fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, StoreError> {
        self.with_conn(|conn| {
            self.ensure_checkpoints(conn)?;
            let mut q = Sql::new(conn.dialect());
            push_checkpoint_select(&mut q);
            push_key(&mut q, key);
            let rows: Vec<CheckpointRow> = q.load(conn)?;
            rows.into_iter().next().map(checkpoint_of).transpose()
        })
    }

    fn checkpoints(&self, column: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.with_conn(|conn| {
            self.ensure_checkpoints(conn)?;
            let mut q = Sql::new(conn.dialect());
            push_checkpoint_select(&mut q);
            q.push(" WHERE column_name = ")
                .bind(Bind::Text(column.to_owned()))
                .push(" ORDER BY partition_name, target");
            let rows: Vec<CheckpointRow> = q.load(conn)?;
            rows.into_iter().map(checkpoint_of).collect()
        })
    }

    fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            self.ensure_checkpoints(conn)?;
            let mut q = Sql::new(conn.dialect());
            q.push("DELETE FROM ")
                .push(&format!("\"{CHECKPOINT_TABLE}\""));
            push_key(&mut q, key);
            q.execute(conn)?;
            Ok(())
        })
    }

    fn load_layout(&self, key: &LayoutKey) -> Result<Option<Vec<RowId>>, StoreError> {
        self.with_conn(|conn| {
            self.ensure_layouts(conn)?;
            load_layout(conn, key)
        })
    }

    fn save_layout(&self, key: &LayoutKey, bounds: &[RowId]) -> Result<Vec<RowId>, StoreError> {
        let json = serde_json::to_string(bounds)
            .map_err(|e| Error::other(format!("cannot encode a shard layout: {e}")))?;
        self.with_conn(|conn| {
            self.ensure_layouts(conn)?;
            conn.write_transaction(|conn| {
                // The first layout saved wins; a concurrent saver waits for
                // it (primary key) and then reads it back.
                let mut q = Sql::new(conn.dialect());
                q.push(&format!(
                    "INSERT INTO \"{LAYOUT_TABLE}\" (column_name, id_column, shards, bounds) VALUES ("
                ))
                .bind(Bind::Text(key.column.clone()))
                .push(", ")
                .bind(Bind::Text(key.id_column.clone()))
                .push(", ")
                .bind(Bind::Int(i64::from(key.shards)))
                .push(", ")
                .bind(Bind::Text(json))
                .push(") ON CONFLICT (column_name, id_column, shards) DO NOTHING");
                q.execute(conn)?;
                load_layout(conn, key)?.ok_or_else(|| {
                    Error::other(format!(
                        "the shard layout of {} vanished while it was saved",
                        key.column
                    ))
                })
            })
        })
    }
}

fn load_layout(conn: &mut AnyConn<'_>, key: &LayoutKey) -> Result<Option<Vec<RowId>>, Error> {
    let mut q = Sql::new(conn.dialect());
    q.push(&format!(
        "SELECT bounds FROM \"{LAYOUT_TABLE}\" WHERE column_name = "
    ))
    .bind(Bind::Text(key.column.clone()))
    .push(" AND id_column = ")
    .bind(Bind::Text(key.id_column.clone()))
    .push(" AND shards = ")
    .bind(Bind::Int(i64::from(key.shards)));
    let rows: Vec<BoundsRow> = q.load(conn)?;
    rows.into_iter()
        .next()
        .map(|r| {
            serde_json::from_str(&r.bounds)
                .map_err(|e| Error::other(format!("corrupt shard layout for {}: {e}", key.column)))
        })
        .transpose()
}

fn push_checkpoint_select(q: &mut Sql) {
    q.push(
        "SELECT column_name, partition_name, target, last_id, last_id_kind, \
         scanned, migrated, unchanged, conflicts, failed FROM ",
    )
    .push(&format!("\"{CHECKPOINT_TABLE}\""));
}

fn checkpoint_of(r: CheckpointRow) -> Result<Checkpoint, Error> {
    let last_id = match (r.last_id, r.last_id_kind.as_deref()) {
        (Some(id), Some("int")) => Some(RowId::Int(id.parse().map_err(|_| {
            Error::other(format!(
                "corrupt checkpoint for {}: bad integer last id",
                r.column_name
            ))
        })?)),
        (Some(id), _) => Some(RowId::Text(id)),
        (None, _) => None,
    };
    Ok(Checkpoint {
        key: CheckpointKey {
            column: r.column_name,
            partition: r.partition_name,
            run: r.target,
        },
        last_id,
        counts: Counts {
            scanned: count_u64(r.scanned),
            migrated: count_u64(r.migrated),
            unchanged: count_u64(r.unchanged),
            conflicts: count_u64(r.conflicts),
            failed: count_u64(r.failed),
        },
    })
}

fn bind_id_array(q: &mut Sql, kind: IdKind, ids: &[RowId]) -> Result<(), Error> {
    let mismatch = || {
        Error::unsupported(format!(
            "row ids do not match the key column's type ({kind:?})"
        ))
    };
    match kind {
        IdKind::Int => {
            let v = ids
                .iter()
                .map(|i| match i {
                    RowId::Int(i) => Ok(*i),
                    RowId::Text(_) => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            q.push("CAST(")
                .bind(Bind::IntArray(v))
                .push(" AS BIGINT[])");
        }
        _ => {
            let v = ids
                .iter()
                .map(|i| match i {
                    RowId::Text(s) => Ok(s.clone()),
                    RowId::Int(_) => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let cast = if kind == IdKind::Uuid {
                "UUID[]"
            } else {
                "TEXT[]"
            };
            q.push("CAST(")
                .bind(Bind::TextArray(v))
                .push(" AS ")
                .push(cast)
                .push(")");
        }
    }
    Ok(())
}

/// One statement for the whole batch:
/// `UPDATE t SET c = v.new FROM unnest(ids, olds, news) v WHERE t.id = v.id AND t.c = v.old COLLATE "C" RETURNING t.id`.
fn write_pg(
    conn: &mut AnyConn<'_>,
    column: &ColumnRef,
    kind: IdKind,
    rewrites: &[Rewrite],
    options: WriteOptions,
) -> Result<Vec<RowId>, Error> {
    let ids: Vec<RowId> = rewrites.iter().map(|r| r.id.clone()).collect();
    let olds: Vec<String> = rewrites.iter().map(|r| r.old.clone()).collect();
    let news: Vec<String> = rewrites.iter().map(|r| r.new.clone()).collect();
    let mut q = Sql::new(Dialect::Postgres);
    q.push("UPDATE ")
        .ident(&column.table)
        .push(" AS manna_t SET ")
        .ident(&column.column)
        .push(" = manna_v.new");
    if options.bump_version {
        q.push(", \"version\" = manna_t.\"version\" + 1");
    }
    q.push(" FROM unnest(");
    bind_id_array(&mut q, kind, &ids)?;
    q.push(", CAST(")
        .bind(Bind::TextArray(olds))
        .push(" AS TEXT[]), CAST(")
        .bind(Bind::TextArray(news))
        .push(" AS TEXT[])) AS manna_v(id, old, new) WHERE manna_t.")
        .ident(&column.id_column)
        .push(" = manna_v.id AND manna_t.")
        .ident(&column.column)
        // Byte for byte, whatever the column's collation: a value the
        // application changed only in case is a conflict.
        .push(" = manna_v.old COLLATE \"C\" RETURNING ");
    push_id_select(&mut q, "manna_t.", column, kind);
    ids_from(q, conn, kind)
}

/// One cached prepared `UPDATE … WHERE id = ? AND CAST(c AS BLOB) = ?` per row, all inside
/// the caller's `BEGIN IMMEDIATE` transaction.
fn write_sqlite(
    conn: &mut AnyConn<'_>,
    column: &ColumnRef,
    kind: IdKind,
    rewrites: &[Rewrite],
    options: WriteOptions,
) -> Result<Vec<RowId>, Error> {
    let mut written = Vec::new();
    for r in rewrites {
        let mut q = Sql::new(Dialect::Sqlite);
        q.push("UPDATE ")
            .ident(&column.table)
            .push(" SET ")
            .ident(&column.column)
            .push(" = ")
            .bind(Bind::Text(r.new.clone()));
        if options.bump_version {
            q.push(", \"version\" = \"version\" + 1");
        }
        q.push(" WHERE ").ident(&column.id_column).push(" = ");
        push_id_value(&mut q, kind, &r.id)?;
        // Bytes against bytes: matches a value stored as a BLOB too, and no
        // collation (NOCASE) applies.
        q.push(" AND CAST(")
            .ident(&column.column)
            .push(" AS BLOB) = ")
            .bind(Bind::Bytes(r.old.as_bytes().to_vec()));
        if q.execute(conn)? > 0 {
            written.push(r.id.clone());
        }
    }
    Ok(written)
}

fn push_key(q: &mut Sql, key: &CheckpointKey) {
    q.push(" WHERE column_name = ")
        .bind(Bind::Text(key.column.clone()))
        .push(" AND partition_name = ")
        .bind(Bind::Text(key.partition.clone()))
        .push(" AND target = ")
        .bind(Bind::Text(key.run.clone()));
}

fn save_checkpoint(conn: &mut AnyConn<'_>, cp: &Checkpoint) -> Result<(), Error> {
    let (last_id, kind) = match &cp.last_id {
        Some(RowId::Int(i)) => (Some(i.to_string()), Some("int".to_owned())),
        Some(RowId::Text(s)) => (Some(s.clone()), Some("text".to_owned())),
        None => (None, None),
    };
    let c = &cp.counts;
    let mut q = Sql::new(conn.dialect());
    q.push(&format!("INSERT INTO \"{CHECKPOINT_TABLE}\" "))
        .push(
            "(column_name, partition_name, target, last_id, last_id_kind, \
             scanned, migrated, unchanged, conflicts, failed, updated_at) VALUES (",
        )
        .bind(Bind::Text(cp.key.column.clone()))
        .push(", ")
        .bind(Bind::Text(cp.key.partition.clone()))
        .push(", ")
        .bind(Bind::Text(cp.key.run.clone()))
        .push(", ")
        .bind(Bind::OptText(last_id))
        .push(", ")
        .bind(Bind::OptText(kind));
    for n in [c.scanned, c.migrated, c.unchanged, c.conflicts, c.failed] {
        q.push(", ").bind(Bind::Int(count_i64(n)));
    }
    q.push(
        ", CURRENT_TIMESTAMP) ON CONFLICT (column_name, partition_name, target) DO UPDATE SET \
         last_id = excluded.last_id, last_id_kind = excluded.last_id_kind, \
         scanned = excluded.scanned, migrated = excluded.migrated, \
         unchanged = excluded.unchanged, conflicts = excluded.conflicts, \
         failed = excluded.failed, updated_at = CURRENT_TIMESTAMP",
    );
    q.execute(conn)?;
    Ok(())
}

/// Upper bounds splitting `lo..=hi` into `parts` near-equal spans
/// (strictly increasing, each below `hi`).
fn int_bounds(lo: i64, hi: i64, parts: u32) -> Vec<i64> {
    let span = i128::from(hi) - i128::from(lo) + 1;
    let mut out: Vec<i64> = Vec::new();
    for i in 1..i128::from(parts) {
        let b = i128::from(lo) - 1 + span * i / i128::from(parts);
        let Ok(b) = i64::try_from(b) else { continue };
        if b >= lo && b < hi && out.last().is_none_or(|l| b > *l) {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn int_split_covers_and_is_disjoint(lo in -1_000_000i64..1_000_000, len in 0i64..100_000, parts in 2u32..17, probe in any::<i64>()) {
            let hi = lo + len;
            let ranges = IdRange::from_bounds(int_bounds(lo, hi, parts).into_iter().map(RowId::Int).collect());
            prop_assert!(ranges.len() <= parts as usize);
            let hits = ranges.iter().filter(|r| r.contains(&RowId::Int(probe))).count();
            prop_assert_eq!(hits, 1);
            let inside = lo + (probe.rem_euclid(len + 1));
            prop_assert_eq!(ranges.iter().filter(|r| r.contains(&RowId::Int(inside))).count(), 1);
        }
    }

    #[test]
    fn int_split_is_even() {
        assert_eq!(int_bounds(1, 100, 4), vec![25, 50, 75]);
        assert_eq!(int_bounds(1, 2, 4), vec![1]);
        assert!(int_bounds(5, 5, 4).is_empty());
        assert_eq!(int_bounds(i64::MIN, i64::MAX, 2), vec![-1]);
    }
}
