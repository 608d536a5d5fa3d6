//! The column-store port: what the migrator needs from a database.
//!
//! Adapters (`manna-store-diesel` for PostgreSQL and SQLite, the in-memory
//! store behind the `testing` feature) implement it and must pass the
//! conformance suite in [`crate::testing`] (feature `testing`).
//!
//! The port is synchronous: database drivers here are blocking, and the engine
//! runs each worker on its own thread.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ident::{Ident, IdentError, MAX_IDENT_LEN};

/// One encrypted column the migrator works on, with the primary-key column
/// that orders and identifies its rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    /// Table name.
    pub table: Ident,
    /// Column holding the encrypted values (TEXT).
    pub column: Ident,
    /// Primary-key column used for keyset pagination (`id` by default).
    pub id_column: Ident,
}

impl ColumnRef {
    /// Builds a reference from validated identifiers.
    pub fn new(table: Ident, column: Ident, id_column: Ident) -> Self {
        ColumnRef {
            table,
            column,
            id_column,
        }
    }

    /// Parses `TABLE.COLUMN` (the CLI's `--column`) with the given id column.
    ///
    /// ```
    /// use manna_store::ColumnRef;
    /// let c = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
    /// assert_eq!(c.to_string(), "plaid_items.access_token");
    /// assert!(ColumnRef::parse("plaid_items", "id").is_err());
    /// assert!(ColumnRef::parse("t.c; DROP TABLE t", "id").is_err());
    /// ```
    pub fn parse(table_column: &str, id_column: &str) -> Result<Self, IdentError> {
        let (table, column) =
            table_column
                .split_once('.')
                .ok_or_else(|| IdentError::NotTableColumn {
                    shown: table_column.chars().take(2 * MAX_IDENT_LEN).collect(),
                })?;
        Ok(ColumnRef {
            table: Ident::new(table)?,
            column: Ident::new(column)?,
            id_column: Ident::new(id_column)?,
        })
    }

    /// The column's associated data, `TABLE.COLUMN`
    /// ([`manna_crypto::aad::column`]).
    pub fn aad(&self) -> String {
        manna_crypto::aad::column(self.table.as_str(), self.column.as_str())
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.column)
    }
}

/// A row's primary key: an integer, or text (UUIDs are carried as their
/// canonical lowercase text, whose order matches the database's UUID order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RowId {
    /// Integer key (`INTEGER`, `BIGINT`, `BIGSERIAL`, SQLite rowid).
    Int(i64),
    /// Text or UUID key.
    Text(String),
}

impl Ord for RowId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (RowId::Int(a), RowId::Int(b)) => a.cmp(b),
            (RowId::Text(a), RowId::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (RowId::Int(_), RowId::Text(_)) => Ordering::Less,
            (RowId::Text(_), RowId::Int(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for RowId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowId::Int(i) => write!(f, "{i}"),
            RowId::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for RowId {
    fn from(i: i64) -> Self {
        RowId::Int(i)
    }
}

impl From<i32> for RowId {
    fn from(i: i32) -> Self {
        RowId::Int(i.into())
    }
}

impl From<&str> for RowId {
    fn from(s: &str) -> Self {
        RowId::Text(s.to_owned())
    }
}

impl From<String> for RowId {
    fn from(s: String) -> Self {
        RowId::Text(s)
    }
}

/// The kind of a table's primary key, as the store found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum IdKind {
    /// Integer key.
    Int,
    /// Text key.
    Text,
    /// UUID key (carried as [`RowId::Text`]).
    Uuid,
}

/// What the store found out about a column before the run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnInfo {
    /// The primary key's kind.
    pub id_kind: IdKind,
    /// Whether the table has a `version` column (optimistic locking).
    pub has_version: bool,
}

impl ColumnInfo {
    /// Builds a column description.
    pub fn new(id_kind: IdKind, has_version: bool) -> Self {
        ColumnInfo {
            id_kind,
            has_version,
        }
    }
}

/// A half-open key range: rows with `after < id <= until`; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// Exclusive lower bound.
    pub after: Option<RowId>,
    /// Inclusive upper bound.
    pub until: Option<RowId>,
}

impl IdRange {
    /// Every row.
    pub fn all() -> Self {
        IdRange::default()
    }

    /// Whether `id` lies in the range.
    pub fn contains(&self, id: &RowId) -> bool {
        self.after.as_ref().is_none_or(|a| id > a) && self.until.as_ref().is_none_or(|u| id <= u)
    }

    /// The same range, continuing after `id` (keyset pagination).
    pub fn resumed_after(&self, id: Option<RowId>) -> Self {
        IdRange {
            after: id.or_else(|| self.after.clone()),
            until: self.until.clone(),
        }
    }

    /// The ranges `(-∞, b1], (b1, b2], …, (bk, +∞)` cut at ascending
    /// `bounds`: disjoint, and together covering every key, present or
    /// future (what [`ColumnStore::split`] returns). Repeated bounds are
    /// ignored.
    ///
    /// ```
    /// use manna_store::{IdRange, RowId};
    /// let r = IdRange::from_bounds(vec![RowId::Int(10), RowId::Int(20)]);
    /// assert_eq!(r.len(), 3);
    /// assert!(r[0].contains(&RowId::Int(-5)) && r[1].contains(&RowId::Int(20)));
    /// assert!(r[2].contains(&RowId::Int(21)));
    /// ```
    pub fn from_bounds(mut bounds: Vec<RowId>) -> Vec<IdRange> {
        bounds.dedup();
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut after = None;
        for b in bounds {
            ranges.push(IdRange {
                after: after.clone(),
                until: Some(b.clone()),
            });
            after = Some(b);
        }
        ranges.push(IdRange { after, until: None });
        ranges
    }
}

/// A stored value as a scan found it.
///
/// Its `Debug` never shows the text (only its length): values are
/// ciphertext, but may be legacy plaintext.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// Text, exactly as stored (adapters read values stored with another
    /// storage class, e.g. an SQLite BLOB holding UTF-8, as their text).
    Text(String),
    /// Bytes that are not UTF-8 text (possible on SQLite): the row cannot be
    /// migrated and is reported as failed by id.
    NotText,
}

impl Value {
    /// The text, if the value is text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Null | Value::NotText => None,
        }
    }

    /// Whether the value is SQL `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Text(s) => write!(f, "Text(len {})", s.len()),
            Value::NotText => f.write_str("NotText"),
        }
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

/// One scanned row.
///
/// The value is ciphertext (or legacy plaintext) exactly as stored; its
/// `Debug` shows only its length so a row can be logged safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Primary key.
    pub id: RowId,
    /// Stored value.
    pub value: Value,
}

impl Row {
    /// A row holding `value`.
    pub fn new(id: impl Into<RowId>, value: impl Into<Value>) -> Self {
        Row {
            id: id.into(),
            value: value.into(),
        }
    }
}

/// A compare-and-set rewrite: set the column to `new` where the row still
/// holds `old`.
#[derive(Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Primary key of the row.
    pub id: RowId,
    /// The value the row held when it was scanned.
    pub old: String,
    /// The re-encrypted value.
    pub new: String,
}

impl fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rewrite")
            .field("id", &self.id)
            .field("old_len", &self.old.len())
            .field("new_len", &self.new.len())
            .finish()
    }
}

/// Options of a batch write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Also set `version = version + 1` on written rows. Off by default: the
    /// logical value did not change, so concurrent optimistic writers need not
    /// be disturbed.
    pub bump_version: bool,
}

impl WriteOptions {
    /// Options with `bump_version` set as given.
    pub fn bump_version(bump: bool) -> Self {
        WriteOptions { bump_version: bump }
    }
}

/// Running counts of one migration partition, persisted in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Rows scanned.
    pub scanned: u64,
    /// Rows rewritten.
    pub migrated: u64,
    /// Rows already in the target format (or `NULL`).
    pub unchanged: u64,
    /// Rows changed concurrently between scan and write (not overwritten).
    pub conflicts: u64,
    /// Rows that could not be decrypted (left untouched).
    pub failed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.scanned += o.scanned;
        self.migrated += o.migrated;
        self.unchanged += o.unchanged;
        self.conflicts += o.conflicts;
        self.failed += o.failed;
    }
}

/// Where a migration partition got to; written in the same transaction as
/// each batch so a crash never loses or repeats acknowledged work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Identity of the run this checkpoint belongs to.
    pub key: CheckpointKey,
    /// Last primary key fully processed (`None`: nothing yet).
    pub last_id: Option<RowId>,
    /// Counts so far.
    pub counts: Counts,
}

/// Identity of a checkpoint: column, partition, and the parameters of the
/// run that wrote it.
///
/// A run only resumes from a checkpoint whose key equals its own: a run with
/// another id column, AAD mode, target format (or primary key) or shard
/// layout starts over instead (its rows would be ordered, bound or judged
/// differently). Starting over is always safe: rows already in the target
/// format are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckpointKey {
    /// `TABLE.COLUMN`.
    pub column: String,
    /// Partition label, e.g. `shard 0/1`.
    pub partition: String,
    /// The run's parameters, e.g. `to aes256gcm:<key id> id id aad column`.
    pub run: String,
}

/// Identity of a saved shard layout: the boundaries that split a column's
/// keys into `shards` ranges, in the order of `id_column`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayoutKey {
    /// `TABLE.COLUMN`.
    pub column: String,
    /// The key column the boundaries are values of.
    pub id_column: String,
    /// Number of shards.
    pub shards: u32,
}

/// The fence a write must pass: the store refuses the write, in the same
/// transaction, when under `name` it has recorded a higher token (a newer
/// holder of the migration lock has written) or the same token from another
/// holder (two leases given one token: a lock backend's counter went back).
/// The same holder passes again with its token: one holder writes many
/// batches. The rule is [`manna_lock::Fencing::may_follow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The fence's name (the migration lock's name).
    pub name: String,
    /// The lease's token and holder id ([`manna_lock::Lease::fencing`]).
    pub fencing: manna_lock::Fencing,
}

/// Counts of a column's values by their envelope header, from one aggregate
/// query ([`ColumnStore::census`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixCensus {
    /// Rows in the range.
    pub total: u64,
    /// `NULL` values.
    pub nulls: u64,
    /// Values that start like an AES-256-GCM text envelope
    /// (`mn1:<16 hex digits>:`), by the 16 hex digits of the key id (as
    /// stored).
    pub envelopes: std::collections::BTreeMap<String, u64>,
}

impl PrefixCensus {
    /// Values that are neither `NULL` nor envelope-shaped (Fernet tokens,
    /// plaintext, damaged values): the ones a census must read.
    pub fn others(&self) -> u64 {
        self.total - self.nulls - self.envelopes.values().sum::<u64>()
    }
}

/// The kind of a [`StoreError`]; adapters map driver errors onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A concurrent transaction conflicted (serialization failure, deadlock, busy); retryable.
    Conflict,
    /// The database cannot be reached or the connection broke; retryable later.
    Unavailable,
    /// A constraint was violated.
    Constraint,
    /// A table or column does not exist.
    NotFound,
    /// The request cannot work against this schema (e.g. no version column, unsupported key type).
    Unsupported,
    /// A write carried a fencing token lower than one already seen: a newer
    /// holder of the lock has written, this writer's lease is gone.
    Fenced,
    /// Anything else.
    Other,
}

/// An error from a [`ColumnStore`]. The message never contains stored values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

impl StoreError {
    /// A new error; `message` must not contain stored values or keys.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// The error's kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

/// The database side of a migration.
///
/// # Contract
/// - Identifiers in [`ColumnRef`] are validated; implementations still quote
///   them, and always bind values.
/// - Values are compared byte for byte (never under a collation), and a
///   value stored with another storage class (an SQLite BLOB) is read as its
///   text, or as [`Value::NotText`] when it is not UTF-8: no row is ever
///   skipped or aborts a scan.
/// - [`scan`](ColumnStore::scan) returns rows of `range` in ascending key
///   order, at most `limit` of them (keyset pagination: `id > after ORDER BY
///   id LIMIT limit`). Text keys are compared and ordered by their bytes
///   whatever the key column's collation (PostgreSQL: `COLLATE "C"`, SQLite:
///   `COLLATE BINARY`), as [`RowId`]'s `Ord` is; otherwise pagination skips
///   rows, and [`split`](ColumnStore::split) bounds and
///   [`IdRange::contains`] disagree with the scan.
/// - [`write_batch`](ColumnStore::write_batch) writes each [`Rewrite`] only if
///   the row still holds `old` (compare-and-set), in one transaction that also
///   checks `fence` and stores `checkpoint`, and returns exactly the ids it
///   wrote; the others were changed concurrently and are conflicts. It never
///   touches other columns (except `version` when asked; without a version
///   column that request is [`StoreErrorKind::Unsupported`]). With no
///   rewrites it still checks the fence and saves the checkpoint. A fence
///   lower than one seen before is [`StoreErrorKind::Fenced`], and nothing
///   is written.
/// - Errors carry a [`StoreErrorKind`]; no driver type leaks through.
pub trait ColumnStore: Send + Sync {
    /// A stable name of the database (not the connection), for lock names:
    /// two stores on the same database answer the same, stores on different
    /// databases answer differently. Where one database holds several
    /// namespaces (PostgreSQL schemas), the namespace unqualified table names
    /// resolve in is part of it. Never contains credentials.
    fn identity(&self) -> Result<String, StoreError>;

    /// Checks that the table and both columns exist, spelled exactly as the
    /// catalog spells them, and describes them. A missing table or column is
    /// [`StoreErrorKind::NotFound`]; a name that matches only when case is
    /// ignored is `NotFound` too, with "did you mean" and the catalog's
    /// spelling in the message.
    fn check_column(&self, column: &ColumnRef) -> Result<ColumnInfo, StoreError>;

    /// Number of rows in `range`.
    fn count(&self, column: &ColumnRef, range: &IdRange) -> Result<u64, StoreError>;

    /// Counts the values of `range` by envelope header in one aggregate
    /// query, without reading them.
    fn census(&self, column: &ColumnRef, range: &IdRange) -> Result<PrefixCensus, StoreError>;

    /// Splits the table's keys into at most `parts` disjoint ranges that
    /// together cover every row (present and future). Fewer ranges may be
    /// returned when there are few rows.
    fn split(&self, column: &ColumnRef, parts: u32) -> Result<Vec<IdRange>, StoreError>;

    /// Up to `limit` rows of `range` in ascending key order.
    fn scan(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError>;

    /// Like [`scan`](ColumnStore::scan), but only rows whose value is not
    /// `NULL` and does not start with the bytes of `prefix` (values that are
    /// not text are included).
    fn scan_unprefixed(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
        prefix: &str,
    ) -> Result<Vec<Row>, StoreError>;

    /// The current rows for `ids` (missing rows are left out), in key order.
    fn read(&self, column: &ColumnRef, ids: &[RowId]) -> Result<Vec<Row>, StoreError>;

    /// Checks `fence`, compare-and-sets `rewrites` and saves `checkpoint`, in
    /// one transaction; returns the ids written.
    fn write_batch(
        &self,
        column: &ColumnRef,
        rewrites: &[Rewrite],
        options: WriteOptions,
        checkpoint: Option<&Checkpoint>,
        fence: Option<&Fence>,
    ) -> Result<Vec<RowId>, StoreError>;

    /// Raises `fence` without writing anything else: from now on, writes
    /// carrying a lower token under its name are refused. A fence already
    /// higher is [`StoreErrorKind::Fenced`]. The default implementation is an
    /// empty [`write_batch`](ColumnStore::write_batch) carrying the fence.
    fn raise_fence(&self, column: &ColumnRef, fence: &Fence) -> Result<(), StoreError> {
        self.write_batch(column, &[], WriteOptions::default(), None, Some(fence))
            .map(|_| ())
    }

    /// The saved checkpoint for `key`, if any.
    fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, StoreError>;

    /// Every saved checkpoint of `column` (`TABLE.COLUMN`), whatever run
    /// wrote it.
    fn checkpoints(&self, column: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// Forgets the checkpoint for `key`.
    fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), StoreError>;

    /// The saved shard layout for `key`: the ascending boundaries.
    fn load_layout(&self, key: &LayoutKey) -> Result<Option<Vec<RowId>>, StoreError>;

    /// Saves `bounds` as the layout for `key` unless one is saved already,
    /// atomically, and returns the saved one: every caller gets the same
    /// boundaries, whoever came first.
    fn save_layout(&self, key: &LayoutKey, bounds: &[RowId]) -> Result<Vec<RowId>, StoreError>;
}
