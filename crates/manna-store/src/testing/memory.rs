//! An in-memory [`ColumnStore`] with hooks for concurrent writes and failure
//! injection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::port::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Fence, IdKind, IdRange,
    LayoutKey, PrefixCensus, Rewrite, Row, RowId, StoreError, StoreErrorKind, Value, WriteOptions,
};

/// A store operation, for failure injection and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`ColumnStore::check_column`].
    CheckColumn,
    /// [`ColumnStore::count`].
    Count,
    /// [`ColumnStore::split`].
    Split,
    /// [`ColumnStore::scan`].
    Scan,
    /// [`ColumnStore::read`].
    Read,
    /// [`ColumnStore::write_batch`].
    Write,
    /// [`ColumnStore::load_checkpoint`].
    LoadCheckpoint,
    /// [`ColumnStore::clear_checkpoint`].
    ClearCheckpoint,
    /// [`ColumnStore::census`].
    Census,
    /// [`ColumnStore::save_layout`].
    SaveLayout,
    /// [`ColumnStore::raise_fence`].
    RaiseFence,
}

/// An injected failure: the `nth` call (1-based, counted from when it was
/// injected) of `op` fails with `kind`. For [`Op::Write`], `applied` makes the
/// write commit before the error is returned (a lost acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The operation that fails.
    pub op: Op,
    /// Which call fails (1 = the next one).
    pub nth: u64,
    /// The error kind returned.
    pub kind: StoreErrorKind,
    /// Whether a failing write is applied anyway.
    pub applied: bool,
}

impl Failure {
    /// The `nth` next call of `op` fails with [`StoreErrorKind::Unavailable`]
    /// without taking effect.
    pub fn nth(op: Op, nth: u64) -> Self {
        Failure {
            op,
            nth,
            kind: StoreErrorKind::Unavailable,
            applied: false,
        }
    }
}

/// Counters of the calls a [`MemoryStore`] served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Scans.
    pub scans: u64,
    /// Reads by id.
    pub reads: u64,
    /// `write_batch` calls (including checkpoint-only ones).
    pub write_calls: u64,
    /// Rows changed by `write_batch`.
    pub rows_written: u64,
    /// Checkpoints saved.
    pub checkpoint_writes: u64,
    /// Checkpoints cleared.
    pub checkpoint_clears: u64,
}

/// Called by [`MemoryStore::write_batch`] before it applies a batch, with
/// the store (to make "concurrent" application writes) and the rewrites.
pub type WriteHook = Arc<dyn Fn(&MemoryStore, &ColumnRef, &[Rewrite]) + Send + Sync>;

/// Called by [`MemoryStore::scan`] and [`MemoryStore::scan_unprefixed`]
/// with the rows a scan returns (to observe when rows were read).
pub type ScanHook = Arc<dyn Fn(&ColumnRef, &[Row]) + Send + Sync>;

#[derive(Debug, Clone)]
struct MemRow {
    values: BTreeMap<String, Value>,
    version: i64,
}

#[derive(Debug, Clone)]
struct MemTable {
    id_column: String,
    id_kind: IdKind,
    columns: BTreeSet<String>,
    has_version: bool,
    rows: BTreeMap<RowId, MemRow>,
}

#[derive(Default)]
struct Inner {
    tables: BTreeMap<String, MemTable>,
    checkpoints: HashMap<CheckpointKey, Checkpoint>,
    layouts: HashMap<LayoutKey, Vec<RowId>>,
    fences: HashMap<String, manna_lock::Fencing>,
    failures: Vec<(Failure, u64)>,
    calls: HashMap<Op, u64>,
    stats: Stats,
}

/// An in-memory [`ColumnStore`]: tables of rows keyed by [`RowId`], a
/// checkpoint table, a hook to simulate application writes between a
/// migrator's scan and its write, and failure injection. Passes the
/// conformance suite ([`crate::testing::conformance`]).
///
/// ```
/// use manna_store::testing::MemoryStore;
/// use manna_store::{ColumnRef, ColumnStore, IdKind, IdRange};
/// let store = MemoryStore::new();
/// let c = ColumnRef::parse("items.secret", "id").unwrap();
/// store.create_table(&c, IdKind::Int, &["note"], true);
/// store.insert(&c, 1, Some("a".into()));
/// store.insert(&c, 2, None);
/// assert_eq!(store.scan(&c, &IdRange::all(), 10).unwrap().len(), 2);
/// assert_eq!(store.value(&c, 1), Some(Some("a".into())));
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    identity: Arc<str>,
    inner: Arc<Mutex<Inner>>,
    hook: Arc<Mutex<Option<WriteHook>>>,
    scan_hook: Arc<Mutex<Option<ScanHook>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("tables", &inner.tables.keys().collect::<Vec<_>>())
            .field("stats", &inner.stats)
            .finish()
    }
}

fn not_found(what: String) -> StoreError {
    StoreError::new(StoreErrorKind::NotFound, what)
}

/// `BTreeMap::range` panics on inverted bounds: such a range is empty.
fn is_empty(range: &IdRange) -> bool {
    matches!((&range.after, &range.until), (Some(a), Some(u)) if a >= u)
}

fn range_bounds(range: &IdRange) -> (Bound<&RowId>, Bound<&RowId>) {
    (
        range
            .after
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Excluded),
        range
            .until
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Included),
    )
}

impl MemoryStore {
    /// An empty store. Each store is its own database: clones share it
    /// (and its [`ColumnStore::identity`]), new stores do not.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        MemoryStore {
            identity: Arc::from(format!("memory:{}:{n}", std::process::id())),
            inner: Arc::default(),
            hook: Arc::default(),
            scan_hook: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates (or replaces, empty) the table of `column` with its id column,
    /// the value column, `other_columns`, and a `version` column if
    /// `has_version`.
    pub fn create_table(
        &self,
        column: &ColumnRef,
        id_kind: IdKind,
        other_columns: &[&str],
        has_version: bool,
    ) {
        let mut columns: BTreeSet<String> = other_columns.iter().map(|c| (*c).to_owned()).collect();
        columns.insert(column.column.to_string());
        self.lock().tables.insert(
            column.table.to_string(),
            MemTable {
                id_column: column.id_column.to_string(),
                id_kind,
                columns,
                has_version,
                rows: BTreeMap::new(),
            },
        );
    }

    /// Sets `column` of row `id` to `value` without touching the version,
    /// creating the row if needed (other columns `NULL`, version 1).
    ///
    /// # Panics
    /// If the table or column does not exist.
    pub fn insert(&self, column: &ColumnRef, id: impl Into<RowId>, value: Option<String>) {
        self.insert_value(column, id, value.into());
    }

    /// Like [`MemoryStore::insert`], with any [`Value`] (e.g.
    /// [`Value::NotText`], bytes that are not UTF-8).
    ///
    /// # Panics
    /// If the table or column does not exist.
    pub fn insert_value(&self, column: &ColumnRef, id: impl Into<RowId>, value: Value) {
        let mut inner = self.lock();
        let table = inner
            .tables
            .get_mut(column.table.as_str())
            .expect("insert into a table that was not created");
        assert!(
            table.columns.contains(column.column.as_str()),
            "insert into a column that was not created"
        );
        let row = table.rows.entry(id.into()).or_insert_with(|| MemRow {
            values: BTreeMap::new(),
            version: 1,
        });
        row.values.insert(column.column.to_string(), value);
    }

    /// An application write: sets `column` of row `id` to `value` and bumps
    /// the version (when the table has one). Returns `false` if the row does
    /// not exist.
    pub fn update(&self, column: &ColumnRef, id: &RowId, value: Option<String>) -> bool {
        let mut inner = self.lock();
        let Some(table) = inner.tables.get_mut(column.table.as_str()) else {
            return false;
        };
        let Some(row) = table.rows.get_mut(id) else {
            return false;
        };
        row.values.insert(column.column.to_string(), value.into());
        row.version += 1;
        true
    }

    /// Deletes row `id` of `column`'s table; `false` if it did not exist.
    pub fn delete(&self, column: &ColumnRef, id: &RowId) -> bool {
        let mut inner = self.lock();
        inner
            .tables
            .get_mut(column.table.as_str())
            .is_some_and(|t| t.rows.remove(id).is_some())
    }

    /// The text of `column` in row `id`: `None` if there is no such row,
    /// `Some(None)` for `NULL` (and for [`Value::NotText`]: see
    /// [`MemoryStore::stored`]).
    pub fn value(&self, column: &ColumnRef, id: impl Into<RowId>) -> Option<Option<String>> {
        self.stored(column, id).map(|v| v.text().map(str::to_owned))
    }

    /// The stored value of `column` in row `id`, `None` if there is no such
    /// row.
    pub fn stored(&self, column: &ColumnRef, id: impl Into<RowId>) -> Option<Value> {
        let id = id.into();
        let inner = self.lock();
        let row = inner.tables.get(column.table.as_str())?.rows.get(&id)?;
        Some(value_of(row, column))
    }

    /// Every row of `column`'s table with the value of `column`, in key order.
    pub fn rows(&self, column: &ColumnRef) -> Vec<Row> {
        let inner = self.lock();
        inner
            .tables
            .get(column.table.as_str())
            .map(|t| {
                t.rows
                    .iter()
                    .map(|(id, r)| Row {
                        id: id.clone(),
                        value: value_of(r, column),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The version of row `id` in `column`'s table.
    pub fn version(&self, column: &ColumnRef, id: &RowId) -> Option<i64> {
        let inner = self.lock();
        inner
            .tables
            .get(column.table.as_str())?
            .rows
            .get(id)
            .map(|r| r.version)
    }

    /// Calls served so far.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Every checkpoint saved, of every column (for assertions).
    pub fn all_checkpoints(&self) -> Vec<Checkpoint> {
        self.lock().checkpoints.values().cloned().collect()
    }

    /// The highest fencing token a write carried under `name`.
    pub fn fence(&self, name: &str) -> Option<manna_lock::FencingToken> {
        self.lock().fences.get(name).map(manna_lock::Fencing::token)
    }

    /// Injects a failure (see [`Failure`]).
    pub fn inject(&self, failure: Failure) {
        let mut inner = self.lock();
        let seen = inner.calls.get(&failure.op).copied().unwrap_or(0);
        inner.failures.push((failure, seen + failure.nth));
    }

    /// Removes every injected failure not yet triggered.
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Installs `hook`, called by every `write_batch` before it applies its
    /// rewrites (outside the store's lock, so the hook may write).
    pub fn on_write(
        &self,
        hook: impl Fn(&MemoryStore, &ColumnRef, &[Rewrite]) + Send + Sync + 'static,
    ) {
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// Removes the write hook.
    pub fn clear_hook(&self) {
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Installs `hook`, called with the rows of every scan once it has
    /// read them (outside the store's lock).
    pub fn on_scan(&self, hook: impl Fn(&ColumnRef, &[Row]) + Send + Sync + 'static) {
        *self
            .scan_hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// Hands the rows of a scan to the scan hook, if any.
    fn scanned(&self, column: &ColumnRef, rows: Vec<Row>) -> Vec<Row> {
        let hook = self
            .scan_hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(column, &rows);
        }
        rows
    }

    /// Counts a call of `op`; `Some(failure)` if an injected failure fires.
    fn call(inner: &mut Inner, op: Op) -> Option<Failure> {
        let n = {
            let c = inner.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let pos = inner
            .failures
            .iter()
            .position(|(f, at)| f.op == op && *at == n)?;
        Some(inner.failures.remove(pos).0)
    }

    fn injected(op: Op, f: Failure) -> StoreError {
        StoreError::new(f.kind, format!("injected failure of {op:?}"))
    }

    fn check(inner: &mut Inner, op: Op) -> Result<(), StoreError> {
        match Self::call(inner, op) {
            Some(f) => Err(Self::injected(op, f)),
            None => Ok(()),
        }
    }

    fn pass_fence(inner: &mut Inner, f: &Fence) -> Result<(), StoreError> {
        match inner.fences.get(&f.name) {
            Some(seen) if !f.fencing.may_follow(seen) => Err(StoreError::new(
                StoreErrorKind::Fenced,
                format!(
                    "write fenced off: `{}` has seen token {} of holder {}, this writer holds {} of holder {}",
                    f.name,
                    seen.token(),
                    seen.holder(),
                    f.fencing.token(),
                    f.fencing.holder()
                ),
            )),
            _ => {
                inner.fences.insert(f.name.clone(), f.fencing.clone());
                Ok(())
            }
        }
    }

    fn table<'a>(inner: &'a Inner, column: &ColumnRef) -> Result<&'a MemTable, StoreError> {
        let Some(t) = inner.tables.get(column.table.as_str()) else {
            let spelled = inner
                .tables
                .keys()
                .find(|t| t.eq_ignore_ascii_case(column.table.as_str()));
            return Err(not_found(match spelled {
                Some(t) => format!(
                    "table {} does not exist; did you mean `{t}.{}`?",
                    column.table, column.column
                ),
                None => format!("table {} does not exist", column.table),
            }));
        };
        let missing = |name: &str, candidates: Vec<&String>| {
            let spelled = candidates
                .into_iter()
                .find(|c| c.eq_ignore_ascii_case(name));
            not_found(match spelled {
                Some(c) => format!(
                    "column {}.{name} does not exist; did you mean `{}.{c}`?",
                    column.table, column.table
                ),
                None => format!("column {}.{name} does not exist", column.table),
            })
        };
        if !t.columns.contains(column.column.as_str()) {
            return Err(missing(
                column.column.as_str(),
                t.columns.iter().chain([&t.id_column]).collect(),
            ));
        }
        if t.id_column != column.id_column.as_str() {
            return Err(missing(
                column.id_column.as_str(),
                std::iter::once(&t.id_column).chain(&t.columns).collect(),
            ));
        }
        Ok(t)
    }

    fn rows_in<'a>(
        t: &'a MemTable,
        column: &'a ColumnRef,
        range: &'a IdRange,
    ) -> impl Iterator<Item = Row> + 'a {
        let rows = if is_empty(range) {
            None
        } else {
            Some(t.rows.range(range_bounds(range)))
        };
        rows.into_iter().flatten().map(|(id, r)| Row {
            id: id.clone(),
            value: value_of(r, column),
        })
    }
}

fn value_of(row: &MemRow, column: &ColumnRef) -> Value {
    row.values
        .get(column.column.as_str())
        .cloned()
        .unwrap_or(Value::Null)
}

impl ColumnStore for MemoryStore {
    fn identity(&self) -> Result<String, StoreError> {
        Ok(self.identity.to_string())
    }

    fn check_column(&self, column: &ColumnRef) -> Result<ColumnInfo, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::CheckColumn)?;
        let t = Self::table(&inner, column)?;
        Ok(ColumnInfo::new(t.id_kind, t.has_version))
    }

    fn count(&self, column: &ColumnRef, range: &IdRange) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::Count)?;
        let t = Self::table(&inner, column)?;
        Ok(Self::rows_in(t, column, range).count() as u64)
    }

    fn census(&self, column: &ColumnRef, range: &IdRange) -> Result<PrefixCensus, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::Census)?;
        let t = Self::table(&inner, column)?;
        let mut census = PrefixCensus::default();
        for row in Self::rows_in(t, column, range) {
            census.total += 1;
            match &row.value {
                Value::Null => census.nulls += 1,
                Value::Text(v) => {
                    if let Some(k) = manna_crypto::text_header_key(v) {
                        *census.envelopes.entry(k.to_owned()).or_default() += 1;
                    }
                }
                Value::NotText => {}
            }
        }
        Ok(census)
    }

    fn split(&self, column: &ColumnRef, parts: u32) -> Result<Vec<IdRange>, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::Split)?;
        let t = Self::table(&inner, column)?;
        let keys: Vec<&RowId> = t.rows.keys().collect();
        let parts = (parts.max(1) as usize).min(keys.len().max(1));
        let bounds: Vec<RowId> = (1..parts)
            .map(|k| keys[keys.len() * k / parts - 1].clone())
            .collect();
        Ok(IdRange::from_bounds(bounds))
    }

    fn scan(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let rows = {
            let mut inner = self.lock();
            Self::check(&mut inner, Op::Scan)?;
            inner.stats.scans += 1;
            let t = Self::table(&inner, column)?;
            Self::rows_in(t, column, range).take(limit).collect()
        };
        Ok(self.scanned(column, rows))
    }

    fn scan_unprefixed(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
        prefix: &str,
    ) -> Result<Vec<Row>, StoreError> {
        let rows = {
            let mut inner = self.lock();
            Self::check(&mut inner, Op::Scan)?;
            inner.stats.scans += 1;
            let t = Self::table(&inner, column)?;
            Self::rows_in(t, column, range)
                .filter(|r| match &r.value {
                    Value::Null => false,
                    Value::Text(v) => !v.as_bytes().starts_with(prefix.as_bytes()),
                    Value::NotText => true,
                })
                .take(limit)
                .collect()
        };
        Ok(self.scanned(column, rows))
    }

    fn read(&self, column: &ColumnRef, ids: &[RowId]) -> Result<Vec<Row>, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::Read)?;
        inner.stats.reads += 1;
        let t = Self::table(&inner, column)?;
        let wanted: BTreeSet<&RowId> = ids.iter().collect();
        Ok(wanted
            .into_iter()
            .filter_map(|id| {
                t.rows.get(id).map(|r| Row {
                    id: id.clone(),
                    value: value_of(r, column),
                })
            })
            .collect())
    }

    fn write_batch(
        &self,
        column: &ColumnRef,
        rewrites: &[Rewrite],
        options: WriteOptions,
        checkpoint: Option<&Checkpoint>,
        fence: Option<&Fence>,
    ) -> Result<Vec<RowId>, StoreError> {
        let hook = self
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(self, column, rewrites);
        }
        let mut inner = self.lock();
        let failure = Self::call(&mut inner, Op::Write);
        if let Some(f) = failure {
            if !f.applied {
                return Err(Self::injected(Op::Write, f));
            }
        }
        inner.stats.write_calls += 1;
        let t = Self::table(&inner, column)?;
        if options.bump_version && !t.has_version {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                format!("table {} has no version column", column.table),
            ));
        }
        if let Some(f) = fence {
            Self::pass_fence(&mut inner, f)?;
        }
        let inner = &mut *inner;
        let table = inner
            .tables
            .get_mut(column.table.as_str())
            .expect("checked above");
        let mut written = Vec::new();
        for rw in rewrites {
            let Some(row) = table.rows.get_mut(&rw.id) else {
                continue;
            };
            let slot = row
                .values
                .entry(column.column.to_string())
                .or_insert(Value::Null);
            if slot.text() == Some(rw.old.as_str()) {
                *slot = Value::Text(rw.new.clone());
                if options.bump_version {
                    row.version += 1;
                }
                written.push(rw.id.clone());
            }
        }
        inner.stats.rows_written += written.len() as u64;
        if let Some(c) = checkpoint {
            inner.checkpoints.insert(c.key.clone(), c.clone());
            inner.stats.checkpoint_writes += 1;
        }
        match failure {
            Some(f) => Err(Self::injected(Op::Write, f)),
            None => Ok(written),
        }
    }

    fn raise_fence(&self, column: &ColumnRef, fence: &Fence) -> Result<(), StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::RaiseFence)?;
        Self::table(&inner, column)?;
        Self::pass_fence(&mut inner, fence)
    }

    fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::LoadCheckpoint)?;
        Ok(inner.checkpoints.get(key).cloned())
    }

    fn checkpoints(&self, column: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::LoadCheckpoint)?;
        let mut found: Vec<Checkpoint> = inner
            .checkpoints
            .values()
            .filter(|c| c.key.column == column)
            .cloned()
            .collect();
        found.sort_by(|a, b| (&a.key.partition, &a.key.run).cmp(&(&b.key.partition, &b.key.run)));
        Ok(found)
    }

    fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::ClearCheckpoint)?;
        inner.stats.checkpoint_clears += 1;
        inner.checkpoints.remove(key);
        Ok(())
    }

    fn load_layout(&self, key: &LayoutKey) -> Result<Option<Vec<RowId>>, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::LoadCheckpoint)?;
        Ok(inner.layouts.get(key).cloned())
    }

    fn save_layout(&self, key: &LayoutKey, bounds: &[RowId]) -> Result<Vec<RowId>, StoreError> {
        let mut inner = self.lock();
        Self::check(&mut inner, Op::SaveLayout)?;
        Ok(inner
            .layouts
            .entry(key.clone())
            .or_insert_with(|| bounds.to_vec())
            .clone())
    }
}
