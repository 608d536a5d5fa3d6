//! The [`ColumnStore`] conformance suite: every adapter (and the in-memory
//! store) runs it, so the engine can rely on the port's contract.
//!
//! An adapter provides a [`Harness`]: the store under test plus the few
//! things the port itself cannot do (create a table, write as the
//! application would). Then:
//!
//! ```
//! use manna_store::testing::{conformance, MemoryHarness};
//! conformance::run_all(&mut MemoryHarness::new());
//! ```
//!
//! Each check panics with `conformance check <name> failed: …` on the first
//! violation.
//!
//! The checks are grouped by what they exercise: scans and reads, batch
//! writes, checkpoints and layouts, the census and prefixes, fences, and
//! identity and column checks; all of them are reachable from here.

use crate::ident::Ident;
use crate::port::{
    CheckpointKey, ColumnRef, ColumnStore, IdKind, IdRange, Rewrite, Row, RowId, Value,
};
use crate::testing::memory::MemoryStore;

macro_rules! ensure {
    ($check:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            panic!("conformance check {} failed: {}", $check, format!($($msg)+));
        }
    };
}

mod census;
mod checkpoint;
mod fence;
mod identity;
mod scan;
mod write;

pub use census::{
    bytewise_under_case_insensitive_collation, census_counts, scan_unprefixed_bytewise,
};
pub use checkpoint::{
    checkpoint_commits_with_batch, checkpoints, checkpoints_listing, layouts_first_wins,
};
pub use fence::{fence_refuses_an_equal_token_from_another_holder, fence_refuses_lower_tokens};
pub use identity::{check_column_exact_spelling, check_column_info, identity_names_the_database};
pub use scan::{
    count_ranges, non_text_values, read_by_ids, scan_int_keyset, scan_text_byte_order,
    scan_uuid_order, split_partitions_every_row, text_keys_byte_order_under_case_insensitive_key,
    values_round_trip,
};
pub use write::{
    write_batch_compare_and_set, write_batch_large, write_batch_text_ids, write_batch_versions,
};

/// A table the suite asks the harness to create.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSpec {
    /// Suggested table name (the harness may prefix it; it returns the
    /// actual [`ColumnRef`]).
    pub table: String,
    /// Primary-key column name.
    pub id_column: String,
    /// The (TEXT, nullable) column the migrator rewrites.
    pub value_column: String,
    /// Another (TEXT, nullable) column that must never be touched.
    pub other_column: String,
    /// Primary-key type: `Int` (BIGINT), `Text` (TEXT) or `Uuid` (UUID,
    /// ids given as lowercase canonical text).
    pub id_kind: IdKind,
    /// Whether the table has `version INTEGER NOT NULL DEFAULT 1`.
    pub has_version: bool,
    /// Whether the value column compares text case-insensitively (SQLite
    /// `COLLATE NOCASE`, a nondeterministic PostgreSQL collation): the store
    /// must still compare values byte for byte. Stores without collations
    /// ignore it.
    pub case_insensitive: bool,
    /// Whether the (text) key column compares case-insensitively (SQLite
    /// `COLLATE NOCASE`, a nondeterministic PostgreSQL collation): the store
    /// must still scan, bound and split keys in [`RowId`] order. Only set
    /// with distinct keys that differ by more than case and accents. Stores
    /// without collations ignore it.
    pub case_insensitive_key: bool,
    /// Initial rows (version 1).
    pub rows: Vec<SpecRow>,
}

/// One initial row of a [`TableSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRow {
    /// Primary key.
    pub id: RowId,
    /// Value of the value column.
    pub value: Option<String>,
    /// Value of the other column.
    pub other: Option<String>,
}

/// What an adapter provides to run the suite.
///
/// Harness methods may panic on failure (they are test code).
pub trait Harness {
    /// The store under test.
    fn store(&self) -> &dyn ColumnStore;

    /// Creates `spec`'s table (dropping any table of that name first) with
    /// its rows; returns the reference to its value column.
    fn create_table(&mut self, spec: &TableSpec) -> ColumnRef;

    /// Writes as the application would: sets the value column of row `id`
    /// and bumps its version when the table has one.
    fn app_write(&mut self, column: &ColumnRef, id: &RowId, value: Option<&str>);

    /// Inserts a new row (other column `NULL`, version 1).
    fn app_insert(&mut self, column: &ColumnRef, id: &RowId, value: Option<&str>);

    /// Deletes row `id`.
    fn app_delete(&mut self, column: &ColumnRef, id: &RowId);

    /// The version of row `id` (`None` if the row or the column is missing).
    fn version(&mut self, column: &ColumnRef, id: &RowId) -> Option<i64>;

    /// Whether the adapter supports primary keys of `kind`. The suite always
    /// runs `Int` and `Text`; `Uuid` only when this says so.
    fn supports(&self, kind: IdKind) -> bool {
        matches!(kind, IdKind::Int | IdKind::Text)
    }

    /// Stores `bytes` in the value column of row `id` with the backend's
    /// non-text storage (an SQLite BLOB), as a client that binds bytes
    /// would. Returns `false` when the backend cannot hold bytes in a text
    /// column (PostgreSQL): the checks that need it are skipped.
    fn app_write_bytes(&mut self, _column: &ColumnRef, _id: &RowId, _bytes: &[u8]) -> bool {
        false
    }

    /// Another store on the same database as [`store`](Harness::store)
    /// (a new pool, another spelling of the path…), for the identity check;
    /// `None` skips that part.
    fn same_database(&self) -> Option<Box<dyn ColumnStore>> {
        None
    }

    /// A store on another database of the same backend, for the identity
    /// check; `None` skips that part.
    fn other_database(&self) -> Option<Box<dyn ColumnStore>> {
        None
    }
}

/// Runs every check.
pub fn run_all(h: &mut dyn Harness) {
    check_column_info(h);
    scan_int_keyset(h);
    scan_text_byte_order(h);
    text_keys_byte_order_under_case_insensitive_key(h);
    if h.supports(IdKind::Uuid) {
        scan_uuid_order(h);
    }
    values_round_trip(h);
    count_ranges(h);
    split_partitions_every_row(h);
    read_by_ids(h);
    write_batch_compare_and_set(h);
    write_batch_versions(h);
    write_batch_text_ids(h);
    write_batch_large(h);
    checkpoints(h);
    checkpoint_commits_with_batch(h);
    identity_names_the_database(h);
    check_column_exact_spelling(h);
    census_counts(h);
    scan_unprefixed_bytewise(h);
    bytewise_under_case_insensitive_collation(h);
    non_text_values(h);
    fence_refuses_lower_tokens(h);
    fence_refuses_an_equal_token_from_another_holder(h);
    checkpoints_listing(h);
    layouts_first_wins(h);
}

fn spec(table: &str, id_kind: IdKind, has_version: bool, rows: Vec<SpecRow>) -> TableSpec {
    TableSpec {
        table: table.to_owned(),
        id_column: "id".to_owned(),
        value_column: "secret".to_owned(),
        other_column: "note".to_owned(),
        id_kind,
        has_version,
        case_insensitive: false,
        case_insensitive_key: false,
        rows,
    }
}

fn value_rows(values: &[Option<&str>]) -> Vec<SpecRow> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| SpecRow {
            id: RowId::Int(i as i64 + 1),
            value: v.map(str::to_owned),
            other: None,
        })
        .collect()
}

fn int_rows(ids: impl IntoIterator<Item = i64>) -> Vec<SpecRow> {
    ids.into_iter()
        .map(|i| SpecRow {
            id: RowId::Int(i),
            value: Some(format!("v-{i}")),
            other: Some(format!("note-{i}")),
        })
        .collect()
}

fn text_rows(ids: &[&str]) -> Vec<SpecRow> {
    ids.iter()
        .map(|i| SpecRow {
            id: RowId::Text((*i).to_owned()),
            value: Some(format!("v-{i}")),
            other: Some(format!("note-{i}")),
        })
        .collect()
}

fn other_of(c: &ColumnRef, spec: &TableSpec) -> ColumnRef {
    ColumnRef::new(
        c.table.clone(),
        Ident::new(&spec.other_column).expect("valid column name"),
        c.id_column.clone(),
    )
}

fn scan_all(
    store: &dyn ColumnStore,
    c: &ColumnRef,
    range: &IdRange,
    page: usize,
    check: &str,
) -> Vec<Row> {
    let mut out = Vec::new();
    let mut r = range.clone();
    loop {
        let rows = store
            .scan(c, &r, page)
            .unwrap_or_else(|e| panic!("conformance check {check} failed: scan: {e}"));
        ensure!(
            check,
            rows.len() <= page,
            "scan returned {} rows for limit {page}",
            rows.len()
        );
        let Some(last) = rows.last() else { break };
        r = r.resumed_after(Some(last.id.clone()));
        out.extend(rows);
    }
    out
}

fn ids(rows: &[Row]) -> Vec<RowId> {
    rows.iter().map(|r| r.id.clone()).collect()
}

/// Rewrites of every text row to `new-<id>`, expecting its current value.
fn rewrites_for(rows: &[Row]) -> Vec<Rewrite> {
    rows.iter()
        .filter_map(|r| {
            r.value.text().map(|old| Rewrite {
                id: r.id.clone(),
                old: old.to_owned(),
                new: format!("new-{}", r.id),
            })
        })
        .collect()
}

/// The checkpoint key of `column` for `partition` and `run`.
fn key(column: &ColumnRef, partition: &str, run: &str) -> CheckpointKey {
    CheckpointKey {
        column: column.to_string(),
        partition: partition.to_owned(),
        run: run.to_owned(),
    }
}

/// The [`Harness`] of the in-memory store.
#[derive(Debug, Clone, Default)]
pub struct MemoryHarness {
    store: MemoryStore,
}

impl MemoryHarness {
    /// A harness over a fresh [`MemoryStore`].
    pub fn new() -> Self {
        MemoryHarness::default()
    }

    /// The store under test.
    pub fn memory(&self) -> &MemoryStore {
        &self.store
    }
}

impl Harness for MemoryHarness {
    fn store(&self) -> &dyn ColumnStore {
        &self.store
    }

    fn create_table(&mut self, spec: &TableSpec) -> ColumnRef {
        let c = ColumnRef::new(
            Ident::new(&spec.table).expect("valid table name"),
            Ident::new(&spec.value_column).expect("valid column name"),
            Ident::new(&spec.id_column).expect("valid column name"),
        );
        self.store.create_table(
            &c,
            spec.id_kind,
            &[spec.other_column.as_str()],
            spec.has_version,
        );
        let other = other_of(&c, spec);
        for r in &spec.rows {
            self.store.insert(&c, r.id.clone(), r.value.clone());
            self.store.insert(&other, r.id.clone(), r.other.clone());
        }
        c
    }

    fn app_write(&mut self, column: &ColumnRef, id: &RowId, value: Option<&str>) {
        assert!(
            self.store.update(column, id, value.map(str::to_owned)),
            "app_write to a missing row"
        );
    }

    fn app_insert(&mut self, column: &ColumnRef, id: &RowId, value: Option<&str>) {
        self.store
            .insert(column, id.clone(), value.map(str::to_owned));
    }

    fn app_delete(&mut self, column: &ColumnRef, id: &RowId) {
        self.store.delete(column, id);
    }

    fn version(&mut self, column: &ColumnRef, id: &RowId) -> Option<i64> {
        self.store.version(column, id)
    }

    fn supports(&self, _kind: IdKind) -> bool {
        true
    }

    fn app_write_bytes(&mut self, column: &ColumnRef, id: &RowId, bytes: &[u8]) -> bool {
        let value = match std::str::from_utf8(bytes) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::NotText,
        };
        self.store.insert_value(column, id.clone(), value);
        true
    }

    fn same_database(&self) -> Option<Box<dyn ColumnStore>> {
        Some(Box::new(self.store.clone()))
    }

    fn other_database(&self) -> Option<Box<dyn ColumnStore>> {
        Some(Box::new(MemoryStore::new()))
    }
}
