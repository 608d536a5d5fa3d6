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

use std::collections::BTreeSet;

use crate::ident::Ident;
use crate::port::{
    Checkpoint, CheckpointKey, ColumnRef, ColumnStore, Counts, Fence, IdKind, IdRange, LayoutKey,
    Rewrite, Row, RowId, StoreErrorKind, Value, WriteOptions,
};
use crate::testing::memory::MemoryStore;

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
    checkpoints_listing(h);
    layouts_first_wins(h);
}

macro_rules! ensure {
    ($check:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            panic!("conformance check {} failed: {}", $check, format!($($msg)+));
        }
    };
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

/// `check_column` describes the table and reports missing tables and
/// columns as `NotFound`.
pub fn check_column_info(h: &mut dyn Harness) {
    const C: &str = "check_column_info";
    let s = spec("manna_conf_info", IdKind::Int, true, int_rows(1..=3));
    let c = h.create_table(&s);
    let info = h
        .store()
        .check_column(&c)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, info.id_kind == IdKind::Int, "id kind {:?}", info.id_kind);
    ensure!(C, info.has_version, "version column not reported");
    let s2 = spec(
        "manna_conf_info_nov",
        IdKind::Text,
        false,
        text_rows(&["a"]),
    );
    let c2 = h.create_table(&s2);
    let info = h
        .store()
        .check_column(&c2)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        info.id_kind == IdKind::Text,
        "id kind {:?}",
        info.id_kind
    );
    ensure!(
        C,
        !info.has_version,
        "version column reported on a table without one"
    );
    let missing_table = ColumnRef::parse("manna_conf_no_such_table.secret", "id").expect("valid");
    let missing_col = ColumnRef::new(
        c.table.clone(),
        Ident::new("no_such_column").expect("valid"),
        c.id_column.clone(),
    );
    let missing_id = ColumnRef::new(
        c.table.clone(),
        c.column.clone(),
        Ident::new("no_such_id").expect("valid"),
    );
    for (what, m) in [
        ("table", &missing_table),
        ("column", &missing_col),
        ("id column", &missing_id),
    ] {
        match h.store().check_column(m) {
            Err(e) => ensure!(
                C,
                e.kind() == StoreErrorKind::NotFound,
                "missing {what}: kind {:?} ({e})",
                e.kind()
            ),
            Ok(_) => panic!("conformance check {C} failed: missing {what} accepted"),
        }
    }
    match h.store().scan(&missing_table, &IdRange::all(), 10) {
        Err(e) => ensure!(
            C,
            e.kind() == StoreErrorKind::NotFound,
            "scan of a missing table: kind {:?}",
            e.kind()
        ),
        Ok(_) => panic!("conformance check {C} failed: scan of a missing table succeeded"),
    }
}

/// Keyset scan over integer keys: ascending order, limit, exclusive lower
/// and inclusive upper bounds, negative keys, every row exactly once.
pub fn scan_int_keyset(h: &mut dyn Harness) {
    const C: &str = "scan_int_keyset";
    let mut keys: Vec<i64> = (1..=30).map(|i| i * 10).collect();
    keys.insert(0, -5);
    let s = spec(
        "manna_conf_scan",
        IdKind::Int,
        false,
        int_rows(keys.clone()),
    );
    let c = h.create_table(&s);
    let st = h.store();
    let all = scan_all(st, &c, &IdRange::all(), 7, C);
    let expected: Vec<RowId> = keys.iter().map(|&i| RowId::Int(i)).collect();
    ensure!(C, ids(&all) == expected, "paged scan ids {:?}", ids(&all));
    for r in &all {
        let RowId::Int(i) = r.id else {
            panic!("conformance check {C} failed: text id from an integer key")
        };
        ensure!(
            C,
            r.value.text() == Some(format!("v-{i}").as_str()),
            "row {i} value mismatch"
        );
    }
    let r = IdRange {
        after: Some(RowId::Int(25)),
        until: Some(RowId::Int(60)),
    };
    let got = st.scan(&c, &r, 100).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        ids(&got) == [30, 40, 50, 60].map(RowId::Int).to_vec(),
        "range (25, 60]: {:?}",
        ids(&got)
    );
    let r = IdRange {
        after: Some(RowId::Int(30)),
        until: Some(RowId::Int(30)),
    };
    ensure!(
        C,
        st.scan(&c, &r, 100).map(|v| v.is_empty()).unwrap_or(false),
        "range (30, 30] not empty"
    );
    let r = IdRange {
        after: Some(RowId::Int(50)),
        until: Some(RowId::Int(20)),
    };
    ensure!(
        C,
        st.scan(&c, &r, 100).map(|v| v.is_empty()).unwrap_or(false),
        "inverted range not empty"
    );
    let got = st
        .scan(&c, &IdRange::all(), 3)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        ids(&got) == [-5, 10, 20].map(RowId::Int).to_vec(),
        "first page {:?}",
        ids(&got)
    );
    let r = IdRange {
        after: Some(RowId::Int(300)),
        until: None,
    };
    ensure!(
        C,
        st.scan(&c, &r, 10).map(|v| v.is_empty()).unwrap_or(false),
        "scan past the end not empty"
    );
}

/// Text keys are ordered by bytes (`COLLATE "C"`), as [`RowId`]'s `Ord`
/// is: keyset pagination must agree with it or rows are skipped.
pub fn scan_text_byte_order(h: &mut dyn Harness) {
    const C: &str = "scan_text_byte_order";
    let keys = [
        "b", "Z", "a", "_x", "aa", "B", "0", "~", "a b", "A-1", "ab", "9z",
    ];
    let s = spec("manna_conf_text", IdKind::Text, false, text_rows(&keys));
    let c = h.create_table(&s);
    let mut expected: Vec<RowId> = keys.iter().map(|k| RowId::Text((*k).to_owned())).collect();
    expected.sort();
    for page in [1, 5, 100] {
        let all = scan_all(h.store(), &c, &IdRange::all(), page, C);
        ensure!(
            C,
            ids(&all) == expected,
            "page {page}: order {:?}, expected byte order {:?}",
            ids(&all),
            expected
        );
    }
    let r = IdRange {
        after: Some(RowId::Text("B".into())),
        until: Some(RowId::Text("a".into())),
    };
    let got = h
        .store()
        .scan(&c, &r, 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let want: Vec<RowId> = ["Z", "_x", "a"]
        .iter()
        .map(|k| RowId::Text((*k).into()))
        .collect();
    ensure!(C, ids(&got) == want, "range (B, a]: {:?}", ids(&got));
}

/// UUID keys (carried as lowercase text) scan in the same order as their
/// text.
pub fn scan_uuid_order(h: &mut dyn Harness) {
    const C: &str = "scan_uuid_order";
    let keys = [
        "00000000-0000-4000-8000-000000000001",
        "0f000000-0000-4000-8000-000000000000",
        "a0000000-0000-4000-8000-000000000000",
        "9fffffff-ffff-4fff-bfff-ffffffffffff",
        "ffffffff-0000-4000-8000-000000000000",
    ];
    let s = spec("manna_conf_uuid", IdKind::Uuid, false, text_rows(&keys));
    let c = h.create_table(&s);
    let mut expected: Vec<RowId> = keys.iter().map(|k| RowId::Text((*k).to_owned())).collect();
    expected.sort();
    let all = scan_all(h.store(), &c, &IdRange::all(), 2, C);
    ensure!(C, ids(&all) == expected, "order {:?}", ids(&all));
    let info = h
        .store()
        .check_column(&c)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        info.id_kind == IdKind::Uuid,
        "id kind {:?}",
        info.id_kind
    );
}

/// `NULL`, empty, non-ASCII and long values come back exactly.
pub fn values_round_trip(h: &mut dyn Harness) {
    const C: &str = "values_round_trip";
    let long = "x".repeat(8192);
    let values: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("ünïcødé ✓ \"quoted\" 'single' \\ back".into()),
        Some(long),
        Some("gAAAAABlooks-like-fernet==".into()),
    ];
    let rows = values
        .iter()
        .enumerate()
        .map(|(i, v)| SpecRow {
            id: RowId::Int(i as i64 + 1),
            value: v.clone(),
            other: None,
        })
        .collect();
    let s = spec("manna_conf_values", IdKind::Int, false, rows);
    let c = h.create_table(&s);
    let got = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let vals: Vec<Option<String>> = got
        .into_iter()
        .map(|r| r.value.text().map(str::to_owned))
        .collect();
    ensure!(
        C,
        vals == values,
        "values changed on the way (lengths {:?})",
        vals.iter()
            .map(|v| v.as_ref().map(String::len))
            .collect::<Vec<_>>()
    );
}

/// `count` over ranges agrees with the rows.
pub fn count_ranges(h: &mut dyn Harness) {
    const C: &str = "count_ranges";
    let s = spec("manna_conf_count", IdKind::Int, false, int_rows(1..=50));
    let c = h.create_table(&s);
    let st = h.store();
    let n = |r: IdRange| st.count(&c, &r).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        n(IdRange::all()) == 50,
        "count all = {}",
        n(IdRange::all())
    );
    ensure!(
        C,
        n(IdRange {
            after: Some(RowId::Int(10)),
            until: Some(RowId::Int(20))
        }) == 10,
        "count (10, 20]"
    );
    ensure!(
        C,
        n(IdRange {
            after: Some(RowId::Int(45)),
            until: None
        }) == 5,
        "count (45, ..)"
    );
    ensure!(
        C,
        n(IdRange {
            after: None,
            until: Some(RowId::Int(0))
        }) == 0,
        "count (.., 0]"
    );
}

/// `split` returns at most `parts` ranges that together hold every row
/// exactly once, present and future (first unbounded below, last above).
pub fn split_partitions_every_row(h: &mut dyn Harness) {
    const C: &str = "split_partitions_every_row";
    let s = spec(
        "manna_conf_split",
        IdKind::Int,
        false,
        int_rows((1..=100).map(|i| i * 3)),
    );
    let c = h.create_table(&s);
    for parts in [1u32, 2, 3, 7, 50, 500] {
        let ranges = h
            .store()
            .split(&c, parts)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            !ranges.is_empty() && ranges.len() <= parts as usize,
            "{parts} parts: {} ranges",
            ranges.len()
        );
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for r in &ranges {
            let rows = scan_all(h.store(), &c, r, 1000, C);
            total += rows.len();
            seen.extend(ids(&rows));
        }
        ensure!(
            C,
            total == 100 && seen.len() == 100,
            "{parts} parts: {total} rows over ranges, {} distinct",
            seen.len()
        );
        for probe in [i64::MIN, -1, 0, 1, 4, 150, 299, 300, 301, i64::MAX] {
            let id = RowId::Int(probe);
            let holders = ranges.iter().filter(|r| r.contains(&id)).count();
            ensure!(
                C,
                holders == 1,
                "{parts} parts: future id {probe} in {holders} ranges"
            );
        }
    }
    // Rows inserted after the split still fall in exactly one range.
    let ranges = h
        .store()
        .split(&c, 3)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    h.app_insert(&c, &RowId::Int(0), Some("early"));
    h.app_insert(&c, &RowId::Int(1000), Some("late"));
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for r in &ranges {
        let rows = scan_all(h.store(), &c, r, 1000, C);
        total += rows.len();
        seen.extend(ids(&rows));
    }
    ensure!(
        C,
        total == 102 && seen.len() == 102,
        "after inserts: {total} rows over ranges, {} distinct",
        seen.len()
    );
    let empty = spec("manna_conf_split_empty", IdKind::Int, false, Vec::new());
    let c = h.create_table(&empty);
    let ranges = h
        .store()
        .split(&c, 4)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, !ranges.is_empty(), "empty table: no range");
    let id = RowId::Int(42);
    ensure!(
        C,
        ranges.iter().filter(|r| r.contains(&id)).count() == 1,
        "empty table: future rows not covered exactly once"
    );
}

/// `read` returns the existing rows asked for, in key order.
pub fn read_by_ids(h: &mut dyn Harness) {
    const C: &str = "read_by_ids";
    let s = spec("manna_conf_read", IdKind::Int, false, int_rows(1..=10));
    let c = h.create_table(&s);
    h.app_write(&c, &RowId::Int(4), None);
    let want = [RowId::Int(7), RowId::Int(2), RowId::Int(99), RowId::Int(4)];
    let got = h
        .store()
        .read(&c, &want)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        ids(&got) == [2, 4, 7].map(RowId::Int).to_vec(),
        "ids {:?}",
        ids(&got)
    );
    ensure!(
        C,
        got[0].value.text() == Some("v-2") && got[1].value.is_null(),
        "values mismatch"
    );
    let none = h
        .store()
        .read(&c, &[])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_empty(), "read of no ids returned rows");
}

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

/// Compare-and-set: rows changed, nulled or deleted between scan and write
/// are not written and not reported; the other column and the version are
/// untouched.
pub fn write_batch_compare_and_set(h: &mut dyn Harness) {
    const C: &str = "write_batch_compare_and_set";
    let s = spec("manna_conf_cas", IdKind::Int, true, int_rows(1..=10));
    let c = h.create_table(&s);
    let other = other_of(&c, &s);
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let rewrites = rewrites_for(&scanned);
    h.app_write(&c, &RowId::Int(3), Some("app-3"));
    h.app_write(&c, &RowId::Int(7), Some("app-7"));
    h.app_write(&c, &RowId::Int(5), None);
    h.app_delete(&c, &RowId::Int(9));
    let versions_before: Vec<Option<i64>> =
        (1..=10).map(|i| h.version(&c, &RowId::Int(i))).collect();
    let written = h
        .store()
        .write_batch(&c, &rewrites, WriteOptions::default(), None, None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let written: BTreeSet<RowId> = written.into_iter().collect();
    let expected: BTreeSet<RowId> = [1, 2, 4, 6, 8, 10].map(RowId::Int).into_iter().collect();
    ensure!(
        C,
        written == expected,
        "written ids {written:?}, expected {expected:?}"
    );
    let now = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    for r in &now {
        let RowId::Int(i) = r.id else {
            panic!("conformance check {C} failed: text id")
        };
        let want = match i {
            3 => Some("app-3".to_owned()),
            7 => Some("app-7".to_owned()),
            5 => None,
            _ => Some(format!("new-{i}")),
        };
        ensure!(
            C,
            r.value == Value::from(want),
            "row {i}: concurrent write lost or rewrite missing"
        );
    }
    ensure!(C, ids(&now).len() == 9, "deleted row came back");
    let notes = h
        .store()
        .scan(&other, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    for r in &notes {
        ensure!(
            C,
            r.value == Value::Text(format!("note-{}", r.id)),
            "other column of row {} changed",
            r.id
        );
    }
    let versions_after: Vec<Option<i64>> =
        (1..=10).map(|i| h.version(&c, &RowId::Int(i))).collect();
    ensure!(
        C,
        versions_before == versions_after,
        "versions changed without bump_version: {versions_before:?} -> {versions_after:?}"
    );
    let again = h
        .store()
        .write_batch(&c, &rewrites, WriteOptions::default(), None, None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        again.is_empty(),
        "a repeated batch wrote again: {again:?}"
    );
    let none = h
        .store()
        .write_batch(&c, &[], WriteOptions::default(), None, None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_empty(), "empty batch wrote rows");
}

/// `bump_version` bumps exactly the written rows; without a version column
/// it is refused as `Unsupported` and nothing is written.
pub fn write_batch_versions(h: &mut dyn Harness) {
    const C: &str = "write_batch_versions";
    let s = spec("manna_conf_ver", IdKind::Int, true, int_rows(1..=4));
    let c = h.create_table(&s);
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let rewrites = rewrites_for(&scanned);
    h.app_write(&c, &RowId::Int(2), Some("app"));
    let before: Vec<Option<i64>> = (1..=4).map(|i| h.version(&c, &RowId::Int(i))).collect();
    let written = h
        .store()
        .write_batch(&c, &rewrites, WriteOptions::bump_version(true), None, None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, written.len() == 3, "written {written:?}");
    for i in 1..=4 {
        let b = before[i as usize - 1].unwrap_or_else(|| panic!("{C}: row {i} has no version"));
        let a = h
            .version(&c, &RowId::Int(i))
            .unwrap_or_else(|| panic!("{C}: row {i} has no version"));
        let want = if i == 2 { b } else { b + 1 };
        ensure!(C, a == want, "row {i}: version {b} -> {a}, expected {want}");
    }
    let s = spec("manna_conf_nover", IdKind::Int, false, int_rows(1..=2));
    let c = h.create_table(&s);
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    match h.store().write_batch(
        &c,
        &rewrites_for(&scanned),
        WriteOptions::bump_version(true),
        None,
        None,
    ) {
        Err(e) => ensure!(
            C,
            e.kind() == StoreErrorKind::Unsupported,
            "kind {:?} ({e})",
            e.kind()
        ),
        Ok(w) => panic!(
            "conformance check {C} failed: bump_version without a version column wrote {w:?}"
        ),
    }
    let now = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        now.iter()
            .all(|r| r.value.text().is_some_and(|v| v.starts_with("v-"))),
        "refused batch wrote values"
    );
}

/// Compare-and-set by text key.
pub fn write_batch_text_ids(h: &mut dyn Harness) {
    const C: &str = "write_batch_text_ids";
    let s = spec(
        "manna_conf_cas_text",
        IdKind::Text,
        false,
        text_rows(&["a", "B", "c-1", "Z"]),
    );
    let c = h.create_table(&s);
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 100)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    h.app_write(&c, &RowId::Text("c-1".into()), Some("app"));
    let written = h
        .store()
        .write_batch(
            &c,
            &rewrites_for(&scanned),
            WriteOptions::default(),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let written: BTreeSet<RowId> = written.into_iter().collect();
    let want: BTreeSet<RowId> = ["a", "B", "Z"]
        .iter()
        .map(|k| RowId::Text((*k).into()))
        .collect();
    ensure!(C, written == want, "written {written:?}");
}

/// A batch of 5,000 rows is written by one call (parameter limits).
pub fn write_batch_large(h: &mut dyn Harness) {
    const C: &str = "write_batch_large";
    let s = spec("manna_conf_large", IdKind::Int, false, int_rows(1..=5000));
    let c = h.create_table(&s);
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 10_000)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, scanned.len() == 5000, "scanned {}", scanned.len());
    let written = h
        .store()
        .write_batch(
            &c,
            &rewrites_for(&scanned),
            WriteOptions::default(),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, written.len() == 5000, "wrote {} of 5000", written.len());
    let now = scan_all(h.store(), &c, &IdRange::all(), 2000, C);
    ensure!(
        C,
        now.iter()
            .all(|r| r.value == Value::Text(format!("new-{}", r.id))),
        "values not rewritten"
    );
}

fn key(column: &ColumnRef, partition: &str, run: &str) -> CheckpointKey {
    CheckpointKey {
        column: column.to_string(),
        partition: partition.to_owned(),
        run: run.to_owned(),
    }
}

/// Checkpoints: saved with an empty batch, loaded back exactly (integer and
/// text ids, no id, large counts), distinct by column, partition and run,
/// overwritten, cleared.
pub fn checkpoints(h: &mut dyn Harness) {
    const C: &str = "checkpoints";
    let s = spec("manna_conf_ckpt", IdKind::Int, false, int_rows(1..=2));
    let c = h.create_table(&s);
    let keys = [
        key(&c, "shard 0/1", "aes256gcm:00112233"),
        key(&c, "shard 1/2", "aes256gcm:00112233"),
        key(&c, "shard 0/1", "fernet"),
        CheckpointKey {
            column: format!("{c}_other"),
            partition: "shard 0/1".into(),
            run: "fernet".into(),
        },
    ];
    let st = h.store();
    for k in &keys {
        st.clear_checkpoint(k)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            st.load_checkpoint(k)
                .unwrap_or_else(|e| panic!("{C}: {e}"))
                .is_none(),
            "cleared checkpoint still there"
        );
    }
    let counts = Counts {
        scanned: 1 << 40,
        migrated: 7,
        unchanged: 0,
        conflicts: 3,
        failed: 2,
    };
    let cps = [
        Checkpoint {
            key: keys[0].clone(),
            last_id: Some(RowId::Int(-42)),
            counts,
        },
        Checkpoint {
            key: keys[1].clone(),
            last_id: Some(RowId::Text("ab-Z".into())),
            counts: Counts::default(),
        },
        Checkpoint {
            key: keys[2].clone(),
            last_id: None,
            counts,
        },
        Checkpoint {
            key: keys[3].clone(),
            last_id: Some(RowId::Int(i64::MAX)),
            counts,
        },
    ];
    for cp in &cps {
        let w = st
            .write_batch(&c, &[], WriteOptions::default(), Some(cp), None)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(C, w.is_empty(), "checkpoint-only batch wrote rows");
    }
    for cp in &cps {
        let got = st
            .load_checkpoint(&cp.key)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            got.as_ref() == Some(cp),
            "checkpoint {:?} came back as {got:?}",
            cp.key
        );
    }
    let newer = Checkpoint {
        key: keys[0].clone(),
        last_id: Some(RowId::Int(100)),
        counts: Counts {
            scanned: 5,
            ..counts
        },
    };
    st.write_batch(&c, &[], WriteOptions::default(), Some(&newer), None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let got = st
        .load_checkpoint(&keys[0])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        got.as_ref() == Some(&newer),
        "overwritten checkpoint came back as {got:?}"
    );
    st.clear_checkpoint(&keys[0])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        st.load_checkpoint(&keys[0])
            .unwrap_or_else(|e| panic!("{C}: {e}"))
            .is_none(),
        "clear did not clear"
    );
    let other = st
        .load_checkpoint(&keys[1])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        other.as_ref() == Some(&cps[1]),
        "clear removed another key's checkpoint"
    );
    st.clear_checkpoint(&keys[0])
        .unwrap_or_else(|e| panic!("{C}: clearing a missing checkpoint: {e}"));
    for k in &keys {
        st.clear_checkpoint(k)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
    }
}

/// A checkpoint given with a batch is saved with it.
pub fn checkpoint_commits_with_batch(h: &mut dyn Harness) {
    const C: &str = "checkpoint_commits_with_batch";
    let s = spec("manna_conf_ckpt_batch", IdKind::Int, false, int_rows(1..=5));
    let c = h.create_table(&s);
    let k = key(&c, "shard 0/1", "fernet");
    h.store()
        .clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 3)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let cp = Checkpoint {
        key: k.clone(),
        last_id: Some(RowId::Int(3)),
        counts: Counts {
            scanned: 3,
            migrated: 3,
            ..Counts::default()
        },
    };
    let w = h
        .store()
        .write_batch(
            &c,
            &rewrites_for(&scanned),
            WriteOptions::default(),
            Some(&cp),
            None,
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, w.len() == 3, "wrote {w:?}");
    let got = h
        .store()
        .load_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, got.as_ref() == Some(&cp), "checkpoint {got:?}");
    h.store()
        .clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
}

/// `identity` is stable, the same for two stores on one database and
/// different for another database.
pub fn identity_names_the_database(h: &mut dyn Harness) {
    const C: &str = "identity_names_the_database";
    let first = h.store().identity().unwrap_or_else(|e| panic!("{C}: {e}"));
    let again = h.store().identity().unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, !first.is_empty(), "empty identity");
    ensure!(C, first == again, "identity changed between calls");
    if let Some(same) = h.same_database() {
        let id = same.identity().unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            id == first,
            "two stores on one database differ: {first:?} vs {id:?}"
        );
    }
    if let Some(other) = h.other_database() {
        let id = other.identity().unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            id != first,
            "stores on different databases share the identity {id:?}"
        );
    }
}

fn expect_did_you_mean(h: &mut dyn Harness, check: &str, asked: &ColumnRef, suggestion: &str) {
    match h.store().check_column(asked) {
        Err(e) => {
            ensure!(
                check,
                e.kind() == StoreErrorKind::NotFound,
                "{asked} (id {}): kind {:?} ({e})",
                asked.id_column,
                e.kind()
            );
            let want = format!("did you mean `{suggestion}`?");
            ensure!(
                check,
                e.to_string().contains(&want),
                "{asked} (id {}): message {:?} lacks {want:?}",
                asked.id_column,
                e.to_string()
            );
        }
        Ok(_) => panic!(
            "conformance check {check} failed: {asked} (id {}) accepted although the catalog spells it {suggestion}",
            asked.id_column
        ),
    }
}

/// `check_column` wants the catalog's exact spelling: a table, value column
/// or id column that matches only when case is ignored is `NotFound`, and
/// the message suggests the catalog's spelling.
pub fn check_column_exact_spelling(h: &mut dyn Harness) {
    const C: &str = "check_column_exact_spelling";
    let mut s = spec("manna_conf_Case", IdKind::Int, false, int_rows(1..=2));
    s.value_column = "Tok".to_owned();
    let c = h.create_table(&s);
    h.store()
        .check_column(&c)
        .unwrap_or_else(|e| panic!("conformance check {C} failed: exact spelling refused: {e}"));
    let ident = |s: &str| Ident::new(s).expect("valid identifier");
    let lower_table = ColumnRef::new(
        ident(&c.table.as_str().to_ascii_lowercase()),
        c.column.clone(),
        c.id_column.clone(),
    );
    expect_did_you_mean(h, C, &lower_table, &format!("{}.{}", c.table, c.column));
    let upper_table = ColumnRef::new(
        ident(&c.table.as_str().to_ascii_uppercase()),
        c.column.clone(),
        c.id_column.clone(),
    );
    expect_did_you_mean(h, C, &upper_table, &format!("{}.{}", c.table, c.column));
    let lower_column = ColumnRef::new(
        c.table.clone(),
        ident(&c.column.as_str().to_ascii_lowercase()),
        c.id_column.clone(),
    );
    expect_did_you_mean(h, C, &lower_column, &format!("{}.{}", c.table, c.column));
    let upper_id = ColumnRef::new(
        c.table.clone(),
        c.column.clone(),
        ident(&c.id_column.as_str().to_ascii_uppercase()),
    );
    expect_did_you_mean(h, C, &upper_id, &format!("{}.{}", c.table, c.id_column));
    // Scans go through the same check.
    match h.store().scan(&lower_column, &IdRange::all(), 10) {
        Err(e) => ensure!(
            C,
            e.kind() == StoreErrorKind::NotFound,
            "scan of a case-differing column: kind {:?}",
            e.kind()
        ),
        Ok(_) => panic!("conformance check {C} failed: scan of a case-differing column succeeded"),
    }
}

const KEY_A: &str = "00112233aabbccdd";
const KEY_B: &str = "ffeeddcc00000001";

/// `census` counts rows, `NULL`s and envelope-shaped values by key id,
/// comparing bytes (case matters, the header must be complete).
pub fn census_counts(h: &mut dyn Harness) {
    const C: &str = "census_counts";
    let a1 = format!("mn1:{KEY_A}:payload-1");
    let a2 = format!("mn1:{KEY_A}:payload-2");
    let a3 = format!("mn1:{KEY_A}:");
    let b1 = format!("mn1:{KEY_B}:x");
    let upper_key = format!("mn1:{}:x", KEY_A.to_ascii_uppercase());
    let upper_tag = format!("MN1:{KEY_A}:x");
    let no_colon = format!("mn1:{KEY_A}x");
    let short = format!("mn1:{}:", &KEY_A[..15]);
    let values: Vec<Option<&str>> = vec![
        None,
        Some(&a1),
        Some("gAAAAABlooks-like-fernet=="),
        Some(&a2),
        None,
        Some(&b1),
        Some(&upper_tag),
        Some(&a3),
        Some(&no_colon),
        Some(&short),
        Some(""),
        Some(&upper_key),
        Some("plain text"),
    ];
    let s = spec("manna_conf_census", IdKind::Int, false, value_rows(&values));
    let c = h.create_table(&s);
    let census = h
        .store()
        .census(&c, &IdRange::all())
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let mut want = std::collections::BTreeMap::new();
    want.insert(KEY_A.to_owned(), 3);
    want.insert(KEY_B.to_owned(), 1);
    want.insert(KEY_A.to_ascii_uppercase(), 1);
    ensure!(C, census.total == 13, "total {}", census.total);
    ensure!(C, census.nulls == 2, "nulls {}", census.nulls);
    ensure!(
        C,
        census.envelopes == want,
        "envelopes {:?}",
        census.envelopes
    );
    ensure!(C, census.others() == 6, "others {}", census.others());
    let part = h
        .store()
        .census(
            &c,
            &IdRange {
                after: Some(RowId::Int(1)),
                until: Some(RowId::Int(5)),
            },
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        part.total == 4 && part.nulls == 1 && part.envelopes.get(KEY_A) == Some(&2),
        "range (1, 5]: {part:?}"
    );
    let empty = h
        .store()
        .census(
            &c,
            &IdRange {
                after: Some(RowId::Int(100)),
                until: None,
            },
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        empty == crate::port::PrefixCensus::default(),
        "empty range: {empty:?}"
    );
    if h.app_write_bytes(&c, &RowId::Int(13), &[0xff, 0xfe, b'm']) {
        let census = h
            .store()
            .census(&c, &IdRange::all())
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            census.total == 13 && census.others() == 6,
            "with a non-text value: {census:?}"
        );
    }
}

fn scan_unprefixed_all(
    store: &dyn ColumnStore,
    c: &ColumnRef,
    page: usize,
    prefix: &str,
    check: &str,
) -> Vec<Row> {
    let mut out = Vec::new();
    let mut r = IdRange::all();
    loop {
        let rows = store
            .scan_unprefixed(c, &r, page, prefix)
            .unwrap_or_else(|e| panic!("conformance check {check} failed: scan_unprefixed: {e}"));
        ensure!(
            check,
            rows.len() <= page,
            "scan_unprefixed returned {} rows for limit {page}",
            rows.len()
        );
        let Some(last) = rows.last() else { break };
        r = r.resumed_after(Some(last.id.clone()));
        out.extend(rows);
    }
    out
}

/// `scan_unprefixed` returns the non-`NULL` values that do not start with
/// the prefix's bytes: no wildcards, case matters, in key order, paged.
pub fn scan_unprefixed_bytewise(h: &mut dyn Harness) {
    const C: &str = "scan_unprefixed_bytewise";
    let values: Vec<Option<&str>> = vec![
        None,            // 1
        Some("mn1:abc"), // 2 prefixed
        Some("MN1:abc"), // 3
        Some("mn1"),     // 4 shorter than the prefix
        Some("mn1:"),    // 5 exactly the prefix
        Some("xmn1:"),   // 6
        Some("ümn1:"),   // 7
        Some("mn1:ü"),   // 8 prefixed
        Some(""),        // 9
        Some("a_%x"),    // 10
        Some("abc"),     // 11
        Some("mn1;"),    // 12
    ];
    let s = spec(
        "manna_conf_unprefixed",
        IdKind::Int,
        false,
        value_rows(&values),
    );
    let c = h.create_table(&s);
    for page in [1, 3, 100] {
        let got = scan_unprefixed_all(h.store(), &c, page, "mn1:", C);
        let want: Vec<RowId> = [3, 4, 6, 7, 9, 10, 11, 12].map(RowId::Int).to_vec();
        ensure!(C, ids(&got) == want, "page {page}: ids {:?}", ids(&got));
        for r in &got {
            let RowId::Int(i) = r.id else { unreachable!() };
            ensure!(
                C,
                r.value.text() == values[i as usize - 1],
                "row {i}: value changed on the way"
            );
        }
    }
    // `_` and `%` are bytes, not wildcards.
    let got = scan_unprefixed_all(h.store(), &c, 100, "a_%", C);
    ensure!(
        C,
        !ids(&got).contains(&RowId::Int(10)) && ids(&got).contains(&RowId::Int(11)),
        "prefix a_%: ids {:?}",
        ids(&got)
    );
    let got = h
        .store()
        .scan_unprefixed(
            &c,
            &IdRange {
                after: Some(RowId::Int(3)),
                until: Some(RowId::Int(7)),
            },
            100,
            "mn1:",
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        ids(&got) == [4, 6, 7].map(RowId::Int).to_vec(),
        "range (3, 7]: ids {:?}",
        ids(&got)
    );
    let none = scan_unprefixed_all(h.store(), &c, 100, "", C);
    ensure!(
        C,
        none.is_empty(),
        "empty prefix: every value starts with it"
    );
    if h.app_write_bytes(&c, &RowId::Int(2), &[b'm', b'n', 0xff]) {
        let got = scan_unprefixed_all(h.store(), &c, 100, "mn1:", C);
        ensure!(
            C,
            got.first()
                .is_some_and(|r| r.id == RowId::Int(2) && r.value == Value::NotText),
            "a non-text value is not reported: ids {:?}",
            ids(&got)
        );
    }
}

/// Under a case-insensitive collation the store still compares bytes: a
/// value the application changed only in case is a conflict, never
/// overwritten; census and `scan_unprefixed` tell cases apart.
pub fn bytewise_under_case_insensitive_collation(h: &mut dyn Harness) {
    const C: &str = "bytewise_under_case_insensitive_collation";
    let env = format!("mn1:{KEY_A}:x");
    let upper = format!("MN1:{}:X", KEY_A.to_ascii_uppercase());
    let mut s = spec(
        "manna_conf_nocase",
        IdKind::Int,
        true,
        value_rows(&[Some(&env), Some(&upper), Some("secret-abc"), Some("token")]),
    );
    s.case_insensitive = true;
    let c = h.create_table(&s);
    let census = h
        .store()
        .census(&c, &IdRange::all())
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        census.envelopes.len() == 1 && census.envelopes.get(KEY_A) == Some(&1),
        "census {census:?}"
    );
    let got = scan_unprefixed_all(h.store(), &c, 10, "mn1:", C);
    ensure!(
        C,
        ids(&got) == [2, 3, 4].map(RowId::Int).to_vec(),
        "scan_unprefixed ids {:?}",
        ids(&got)
    );
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 10)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    h.app_write(&c, &RowId::Int(3), Some("SECRET-ABC"));
    h.app_write(&c, &RowId::Int(4), Some("Token"));
    let written = h
        .store()
        .write_batch(
            &c,
            &rewrites_for(&scanned),
            WriteOptions::default(),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        written == [1, 2].map(RowId::Int).to_vec(),
        "written {written:?}: a case-only application change was overwritten"
    );
    let now = h
        .store()
        .read(&c, &[RowId::Int(3), RowId::Int(4)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        now.len() == 2
            && now[0].value.text() == Some("SECRET-ABC")
            && now[1].value.text() == Some("Token"),
        "application values lost"
    );
}

/// Values stored with another storage class: UTF-8 bytes read as their
/// text (and compare-and-set matches them), other bytes as
/// [`Value::NotText`]; no scan or read fails. Skipped when the harness
/// cannot store bytes.
pub fn non_text_values(h: &mut dyn Harness) {
    const C: &str = "non_text_values";
    let s = spec("manna_conf_bytes", IdKind::Int, false, int_rows(1..=4));
    let c = h.create_table(&s);
    if !h.app_write_bytes(&c, &RowId::Int(2), "blob-ü".as_bytes()) {
        return;
    }
    ensure!(
        C,
        h.app_write_bytes(&c, &RowId::Int(3), &[0x80, 0x61, 0xc3]),
        "the harness stored one value as bytes but not another"
    );
    let got = scan_all(h.store(), &c, &IdRange::all(), 2, C);
    ensure!(C, got.len() == 4, "scan returned {} of 4 rows", got.len());
    ensure!(
        C,
        got[1].value.text() == Some("blob-ü"),
        "UTF-8 bytes not read as text: {:?}",
        got[1].value
    );
    ensure!(
        C,
        got[2].value == Value::NotText,
        "non-UTF-8 bytes read as {:?}",
        got[2].value
    );
    ensure!(
        C,
        got[3].value.text() == Some("v-4"),
        "row after a non-text value"
    );
    let read = h
        .store()
        .read(&c, &[RowId::Int(3), RowId::Int(2)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        read.len() == 2
            && read[0].value.text() == Some("blob-ü")
            && read[1].value == Value::NotText,
        "read {:?}",
        read
    );
    let written = h
        .store()
        .write_batch(&c, &rewrites_for(&got), WriteOptions::default(), None, None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        written == [1, 2, 4].map(RowId::Int).to_vec(),
        "written {written:?}: a value stored as bytes must match its text"
    );
    let after = h
        .store()
        .read(&c, &[RowId::Int(2), RowId::Int(3)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        after[0].value.text() == Some("new-2") && after[1].value == Value::NotText,
        "after the write: {after:?}"
    );
}

fn fence(name: &str, token: u64) -> Fence {
    Fence {
        name: name.to_owned(),
        token: manna_lock::FencingToken::from(token),
    }
}

/// A write carrying a fencing token lower than one seen under the same name
/// is refused as `Fenced` and writes nothing, checkpoint included; equal and
/// higher tokens pass; fences of other names are independent.
pub fn fence_refuses_lower_tokens(h: &mut dyn Harness) {
    const C: &str = "fence_refuses_lower_tokens";
    let s = spec("manna_conf_fence", IdKind::Int, false, int_rows(1..=4));
    let c = h.create_table(&s);
    let name = format!("manna-conf-fence:{c}");
    let k = key(&c, "shard 0/1", "fence");
    let st = h.store();
    st.clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let cp = |last: i64, migrated: u64| Checkpoint {
        key: k.clone(),
        last_id: Some(RowId::Int(last)),
        counts: Counts {
            scanned: migrated,
            migrated,
            ..Counts::default()
        },
    };
    let rw = |i: i64, old: &str, new: &str| Rewrite {
        id: RowId::Int(i),
        old: old.to_owned(),
        new: new.to_owned(),
    };
    let w = st
        .write_batch(
            &c,
            &[rw(1, "v-1", "five-1")],
            WriteOptions::default(),
            Some(&cp(1, 1)),
            Some(&fence(&name, 5)),
        )
        .unwrap_or_else(|e| panic!("{C}: token 5: {e}"));
    ensure!(C, w == vec![RowId::Int(1)], "token 5 wrote {w:?}");
    let w = st
        .write_batch(
            &c,
            &[rw(2, "v-2", "seven-2")],
            WriteOptions::default(),
            Some(&cp(2, 2)),
            Some(&fence(&name, 7)),
        )
        .unwrap_or_else(|e| panic!("{C}: token 7: {e}"));
    ensure!(C, w == vec![RowId::Int(2)], "token 7 wrote {w:?}");
    for rewrites in [vec![rw(3, "v-3", "five-3")], Vec::new()] {
        match st.write_batch(
            &c,
            &rewrites,
            WriteOptions::default(),
            Some(&cp(3, 9)),
            Some(&fence(&name, 5)),
        ) {
            Err(e) => ensure!(
                C,
                e.kind() == StoreErrorKind::Fenced,
                "stale token: kind {:?} ({e})",
                e.kind()
            ),
            Ok(w) => panic!("conformance check {C} failed: a stale token wrote {w:?}"),
        }
    }
    let row3 = st
        .read(&c, &[RowId::Int(3)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        row3.first().and_then(|r| r.value.text()) == Some("v-3"),
        "a fenced batch wrote its row"
    );
    let saved = st
        .load_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        saved == Some(cp(2, 2)),
        "a fenced batch saved its checkpoint: {saved:?}"
    );
    // The same holder writes again; another fence name is independent.
    let w = st
        .write_batch(
            &c,
            &[rw(3, "v-3", "seven-3")],
            WriteOptions::default(),
            Some(&cp(3, 3)),
            Some(&fence(&name, 7)),
        )
        .unwrap_or_else(|e| panic!("{C}: equal token refused: {e}"));
    ensure!(C, w == vec![RowId::Int(3)], "equal token wrote {w:?}");
    let w = st
        .write_batch(
            &c,
            &[rw(4, "v-4", "other-4")],
            WriteOptions::default(),
            None,
            Some(&fence(&format!("{name}:other"), 1)),
        )
        .unwrap_or_else(|e| panic!("{C}: another fence name: {e}"));
    ensure!(C, w == vec![RowId::Int(4)], "another fence wrote {w:?}");
    // Unfenced writes are not checked.
    st.write_batch(&c, &[], WriteOptions::default(), None, None)
        .unwrap_or_else(|e| panic!("{C}: unfenced: {e}"));
    // A newer holder fences the old one off for good.
    st.write_batch(
        &c,
        &[],
        WriteOptions::default(),
        None,
        Some(&fence(&name, 8)),
    )
    .unwrap_or_else(|e| panic!("{C}: token 8: {e}"));
    match st.write_batch(
        &c,
        &[],
        WriteOptions::default(),
        None,
        Some(&fence(&name, 7)),
    ) {
        Err(e) => ensure!(C, e.kind() == StoreErrorKind::Fenced, "kind {:?}", e.kind()),
        Ok(_) => panic!("conformance check {C} failed: token 7 passed after token 8"),
    }
    st.clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
}

/// `checkpoints(column)` lists every checkpoint of that column, whatever
/// partition or run wrote it, and nothing else.
pub fn checkpoints_listing(h: &mut dyn Harness) {
    const C: &str = "checkpoints_listing";
    let s = spec("manna_conf_ckpt_list", IdKind::Int, false, int_rows(1..=2));
    let c = h.create_table(&s);
    let st = h.store();
    let column = c.to_string();
    let other_column = format!("{c}_other");
    for col in [&column, &other_column] {
        for cp in st.checkpoints(col).unwrap_or_else(|e| panic!("{C}: {e}")) {
            st.clear_checkpoint(&cp.key)
                .unwrap_or_else(|e| panic!("{C}: {e}"));
        }
    }
    let none = st
        .checkpoints(&column)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_empty(), "cleared checkpoints listed: {none:?}");
    let cps = vec![
        Checkpoint {
            key: key(&c, "shard 0/2", "to aes256gcm:00 id id aad column"),
            last_id: Some(RowId::Int(7)),
            counts: Counts {
                scanned: 9,
                ..Counts::default()
            },
        },
        Checkpoint {
            key: key(&c, "shard 1/2", "to aes256gcm:00 id id aad column"),
            last_id: Some(RowId::Text("k".into())),
            counts: Counts::default(),
        },
        Checkpoint {
            key: key(&c, "shard 0/2", "to fernet id id aad column"),
            last_id: None,
            counts: Counts::default(),
        },
    ];
    let foreign = Checkpoint {
        key: CheckpointKey {
            column: other_column.clone(),
            partition: "shard 0/1".into(),
            run: "to fernet".into(),
        },
        last_id: None,
        counts: Counts::default(),
    };
    for cp in cps.iter().chain([&foreign]) {
        st.write_batch(&c, &[], WriteOptions::default(), Some(cp), None)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
    }
    let sorted = |mut v: Vec<Checkpoint>| {
        v.sort_by(|a, b| (&a.key.partition, &a.key.run).cmp(&(&b.key.partition, &b.key.run)));
        v
    };
    let got = sorted(
        st.checkpoints(&column)
            .unwrap_or_else(|e| panic!("{C}: {e}")),
    );
    ensure!(
        C,
        got == sorted(cps.clone()),
        "listed {got:?}, expected {cps:?}"
    );
    for cp in cps.iter().chain([&foreign]) {
        st.clear_checkpoint(&cp.key)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
    }
    let none = st
        .checkpoints(&column)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_empty(), "cleared checkpoints listed: {none:?}");
}

/// `save_layout` keeps the first layout saved for a key and returns it to
/// every later caller; keys differ by column, id column and shard count;
/// integer, text and empty bounds come back exactly.
pub fn layouts_first_wins(h: &mut dyn Harness) {
    const C: &str = "layouts_first_wins";
    // Layouts cannot be deleted through the port: a key of its own per run.
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = format!(
        "{}-{nanos}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let lk = |column: &str, shards: u32| LayoutKey {
        column: format!("{column}.{run}"),
        id_column: "id".to_owned(),
        shards,
    };
    let st = h.store();
    let k = lk("manna_conf_layout.secret", 3);
    let none = st.load_layout(&k).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_none(), "unsaved layout loaded: {none:?}");
    let first = vec![RowId::Int(-10), RowId::Int(20)];
    let saved = st
        .save_layout(&k, &first)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, saved == first, "first save returned {saved:?}");
    let second = st
        .save_layout(&k, &[RowId::Int(15), RowId::Int(30)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        second == first,
        "second save returned {second:?}, not the first layout"
    );
    let loaded = st.load_layout(&k).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, loaded.as_ref() == Some(&first), "loaded {loaded:?}");
    let text = vec![
        RowId::Text("5".into()),
        RowId::Text("a b".into()),
        RowId::Text("ü\"'".into()),
    ];
    let mut other_id = lk("manna_conf_layout.secret", 3);
    other_id.id_column = "handle".into();
    for (key, bounds) in [
        (
            lk("manna_conf_layout.secret", 4),
            vec![RowId::Int(i64::MAX)],
        ),
        (other_id, text),
        (lk("manna_conf_layout_other.secret", 3), Vec::new()),
    ] {
        let saved = st
            .save_layout(&key, &bounds)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(C, saved == bounds, "{key:?}: saved {saved:?}");
        let loaded = st.load_layout(&key).unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            loaded.as_ref() == Some(&bounds),
            "{key:?}: loaded {loaded:?}"
        );
    }
    let still = st.load_layout(&k).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        still.as_ref() == Some(&first),
        "other keys changed {still:?}"
    );
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
