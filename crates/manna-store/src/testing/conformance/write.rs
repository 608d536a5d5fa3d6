//! Batch writes: compare-and-set against changed, nulled and deleted rows,
//! version bumps, text keys and large batches.

use std::collections::BTreeSet;

use super::{ids, int_rows, other_of, rewrites_for, scan_all, spec, text_rows, Harness};
use crate::port::{IdKind, IdRange, RowId, StoreErrorKind, Value, WriteOptions};

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
