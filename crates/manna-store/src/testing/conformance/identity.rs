//! Identity and column checks: `check_column` describes tables and wants the
//! catalog's exact spelling; `identity` names the database.

use super::{int_rows, spec, text_rows, Harness};
use crate::ident::Ident;
use crate::port::{ColumnRef, IdKind, IdRange, StoreErrorKind};

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
