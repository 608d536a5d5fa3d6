//! The [`ColumnStore`] conformance suite: every adapter (and the in-memory
//! store) runs it, so the engine can rely on the port's contract.
//!
//! An adapter provides a [`Harness`]: the store under test plus the few
//! things the port itself cannot do (create a table, write as the
//! application would). Then:
//!
//! ```
//! use manna_migrate::testing::{conformance, MemoryHarness};
//! conformance::run_all(&mut MemoryHarness::new());
//! ```
//!
//! Each check panics with `conformance check <name> failed: …` on the first
//! violation.

use std::collections::BTreeSet;

use crate::ident::Ident;
use crate::store::{
    Checkpoint, CheckpointKey, ColumnRef, ColumnStore, Counts, IdKind, IdRange, Rewrite, Row,
    RowId, StoreErrorKind, WriteOptions,
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
        rows,
    }
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
            r.value.as_deref() == Some(format!("v-{i}").as_str()),
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
    let vals: Vec<Option<String>> = got.into_iter().map(|r| r.value).collect();
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
        got[0].value.as_deref() == Some("v-2") && got[1].value.is_none(),
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
            r.value.as_ref().map(|old| Rewrite {
                id: r.id.clone(),
                old: old.clone(),
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
        .write_batch(&c, &rewrites, WriteOptions::default(), None)
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
            r.value == want,
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
            r.value == Some(format!("note-{}", r.id)),
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
        .write_batch(&c, &rewrites, WriteOptions::default(), None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        again.is_empty(),
        "a repeated batch wrote again: {again:?}"
    );
    let none = h
        .store()
        .write_batch(&c, &[], WriteOptions::default(), None)
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
        .write_batch(&c, &rewrites, WriteOptions::bump_version(true), None)
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
            .all(|r| r.value.as_deref().is_some_and(|v| v.starts_with("v-"))),
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
        .write_batch(&c, &rewrites_for(&scanned), WriteOptions::default(), None)
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
        .write_batch(&c, &rewrites_for(&scanned), WriteOptions::default(), None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, written.len() == 5000, "wrote {} of 5000", written.len());
    let now = scan_all(h.store(), &c, &IdRange::all(), 2000, C);
    ensure!(
        C,
        now.iter().all(|r| r.value == Some(format!("new-{}", r.id))),
        "values not rewritten"
    );
}

fn key(column: &ColumnRef, partition: &str, target: &str) -> CheckpointKey {
    CheckpointKey {
        column: column.to_string(),
        partition: partition.to_owned(),
        target: target.to_owned(),
    }
}

/// Checkpoints: saved with an empty batch, loaded back exactly (integer and
/// text ids, no id, large counts), distinct by column, partition and target,
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
            target: "fernet".into(),
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
            .write_batch(&c, &[], WriteOptions::default(), Some(cp))
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
    st.write_batch(&c, &[], WriteOptions::default(), Some(&newer))
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
}
