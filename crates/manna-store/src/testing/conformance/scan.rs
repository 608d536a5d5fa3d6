//! Scans and reads: keyset order for every key kind, values exactly as
//! stored (non-text storage included), counts, splits and reads by id.

use std::collections::BTreeSet;

use super::{ids, int_rows, rewrites_for, scan_all, spec, text_rows, Harness, SpecRow};
use crate::port::{IdKind, IdRange, RowId, Value, WriteOptions};

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

/// Text keys with mixed case, digits and non-ASCII (UTF-8) characters, under
/// a case-insensitive key collation where the harness has one (SQLite
/// `COLLATE NOCASE`, a nondeterministic PostgreSQL collation): scans return
/// every row exactly once in [`RowId`] order (bytes), range bounds compare
/// bytes, and `split` partitions the rows (every row, and every future id,
/// in exactly one range). The keys differ by more than case and accents
/// would, as the collation's uniqueness demands.
pub fn text_keys_byte_order_under_case_insensitive_key(h: &mut dyn Harness) {
    const C: &str = "text_keys_byte_order_under_case_insensitive_key";
    let mut keys: Vec<String> = [
        "b",
        "C",
        "a",
        "D9",
        "10",
        "9",
        "2b",
        "Zed",
        "_x",
        "~",
        "a b",
        "\u{e9}",
        "\u{d6}",
        "\u{f8}",
        "\u{65e5}\u{672c}",
        "\u{3a9}mega",
        "z\u{20ac}",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    for p in ["e", "F", "g", "H", "\u{e4}", "\u{dc}", "\u{4e2d}"] {
        keys.extend((0..6).map(|i| format!("{p}{i}")));
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut s = spec(
        "manna_conf_text_ci",
        IdKind::Text,
        false,
        text_rows(&key_refs),
    );
    s.case_insensitive_key = true;
    let c = h.create_table(&s);
    let mut expected: Vec<RowId> = keys.iter().map(|k| RowId::Text(k.clone())).collect();
    expected.sort();
    for page in [1, 4, 100] {
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
        after: Some(RowId::Text("C".into())),
        until: Some(RowId::Text("e3".into())),
    };
    let want: Vec<RowId> = expected
        .iter()
        .filter(|id| r.contains(id))
        .cloned()
        .collect();
    let got = scan_all(h.store(), &c, &r, 3, C);
    ensure!(
        C,
        ids(&got) == want,
        "range (C, e3]: {:?}, expected {want:?}",
        ids(&got)
    );
    let n = h
        .store()
        .count(&c, &r)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        n == want.len() as u64,
        "count of (C, e3]: {n}, expected {}",
        want.len()
    );
    let probes: Vec<RowId> = expected
        .iter()
        .cloned()
        .chain(
            ["", "B", "c", "E3", "\u{c9}", "\u{ff}", "\u{10ffff}"].map(|k| RowId::Text(k.into())),
        )
        .collect();
    for parts in [2u32, 3, 7, 50] {
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
        let mut seen = Vec::new();
        for r in &ranges {
            for row in scan_all(h.store(), &c, r, 5, C) {
                ensure!(
                    C,
                    r.contains(&row.id),
                    "{parts} parts: {} scanned outside {r:?}",
                    row.id
                );
                seen.push(row.id);
            }
        }
        seen.sort();
        ensure!(
            C,
            seen == expected,
            "{parts} parts: rows over ranges {seen:?}, expected each of {expected:?} once"
        );
        for id in &probes {
            let holders = ranges.iter().filter(|r| r.contains(id)).count();
            ensure!(
                C,
                holders == 1,
                "{parts} parts: id {id} in {holders} ranges"
            );
        }
    }
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
