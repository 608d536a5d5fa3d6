//! The migrator's [`ColumnStore`] port on PostgreSQL and SQLite.
//!
//! [`DieselStore`] and its trait implementation live here; the work is
//! split by concern:
//!
//! - `describe`: column descriptions, "did you mean", the database identity;
//! - `scan`: keyset scans and reads by key;
//! - `census`: counts, the prefix census, shard boundaries;
//! - `write`: batch writes with fence and checkpoint;
//! - `checkpoints`: checkpoints and shard layouts;
//! - `fragments` and `rows`: SQL fragments per dialect, and decoding rows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use manna_store::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Fence as LockFence, IdRange,
    LayoutKey, PrefixCensus, Rewrite, Row, RowId, StoreError, WriteOptions,
};

use crate::conn::{AnyConn, StoreConnection};
use crate::error::Error;
use crate::fence::Fence;
use crate::pool::{DbPool, PoolOptions};
use crate::schema::{ensure_checkpoint_table, ensure_layout_table, MIGRATION_FENCE_TABLE};

mod census;
mod checkpoints;
mod describe;
mod fragments;
mod rows;
mod scan;
mod write;

/// The [`ColumnStore`] the migrator scans and writes through, over a
/// [`DbPool`] of either backend.
///
/// - `scan`: keyset pagination (`t.id > last ORDER BY t.id LIMIT n`) for
///   integer, text and UUID keys. Text keys are compared and ordered
///   bytewise whatever their declared collation, matching [`RowId`]'s order:
///   on PostgreSQL with `COLLATE "C"` unless the key's collation is libc
///   `C`/`POSIX`/`C.UTF-8` (locale provider checked), on SQLite always with
///   `COLLATE BINARY`.
/// - Values are read and compared byte for byte: on SQLite as
///   `CAST(c AS BLOB)` with `typeof(c)`, so a value stored as a BLOB reads as
///   its text ([`Value::NotText`](manna_store::Value::NotText) when it is
///   not UTF-8) and no collation (`NOCASE`) ever applies; on PostgreSQL
///   under `COLLATE "C"`.
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
    /// Order and compare the key under an explicit bytewise collation: a
    /// PostgreSQL text key whose collation is not known to be bytewise (see
    /// `describe::bytewise_collation`; `COLLATE "C"` cannot use the key's
    /// index), and every SQLite text or UUID key (`COLLATE BINARY`, which
    /// uses the key's index unless the key is declared with another
    /// collation).
    collate_bytewise: bool,
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
        self.count_rows(column, range)
    }

    fn census(&self, column: &ColumnRef, range: &IdRange) -> Result<PrefixCensus, StoreError> {
        self.census_range(column, range)
    }

    fn split(&self, column: &ColumnRef, parts: u32) -> Result<Vec<IdRange>, StoreError> {
        self.split_ranges(column, parts)
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
        self.read_rows(column, ids)
    }

    fn write_batch(
        &self,
        column: &ColumnRef,
        rewrites: &[Rewrite],
        options: WriteOptions,
        checkpoint: Option<&Checkpoint>,
        fence: Option<&LockFence>,
    ) -> Result<Vec<RowId>, StoreError> {
        self.write_rewrites(column, rewrites, options, checkpoint, fence)
    }

    fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, StoreError> {
        self.load_checkpoint_row(key)
    }

    fn checkpoints(&self, column: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.list_checkpoints(column)
    }

    fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), StoreError> {
        self.delete_checkpoint(key)
    }

    fn load_layout(&self, key: &LayoutKey) -> Result<Option<Vec<RowId>>, StoreError> {
        self.load_saved_layout(key)
    }

    fn save_layout(&self, key: &LayoutKey, bounds: &[RowId]) -> Result<Vec<RowId>, StoreError> {
        self.save_first_layout(key, bounds)
    }
}
