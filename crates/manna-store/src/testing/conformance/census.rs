//! The prefix census and `scan_unprefixed`, both comparing bytes, also
//! under a case-insensitive collation.

use super::{ids, rewrites_for, spec, value_rows, Harness};
use crate::port::{ColumnRef, ColumnStore, IdKind, IdRange, Row, RowId, Value, WriteOptions};

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
