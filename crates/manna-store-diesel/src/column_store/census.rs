//! Whole-range questions: how many rows, the prefix census of their values,
//! and boundaries splitting the key space into shards.

use diesel::sql_types::{BigInt, Binary, Nullable};
use manna_store::{ColumnRef, IdKind, IdRange, PrefixCensus, RowId, StoreError};

use super::fragments::{push_id_expr, push_id_select, push_range};
use super::rows::{count_u64, ids_from, CountRow};
use super::DieselStore;
use crate::conn::Dialect;
use crate::sql::{Bind, Sql};

#[derive(diesel::QueryableByName)]
struct CensusRow {
    #[diesel(sql_type = Nullable<Binary>)]
    k: Option<Vec<u8>>,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    nn: i64,
}

#[derive(diesel::QueryableByName)]
struct MinMax {
    #[diesel(sql_type = Nullable<BigInt>)]
    lo: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    hi: Option<i64>,
}

impl DieselStore {
    /// The number of rows in `range`.
    pub(super) fn count_rows(
        &self,
        column: &ColumnRef,
        range: &IdRange,
    ) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            let mut q = Sql::new(conn.dialect());
            q.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
                .ident(&column.table);
            push_range(&mut q, column, kind, d.collate_bytewise, range)?;
            let rows: Vec<CountRow> = q.load(conn)?;
            Ok(rows.first().map_or(0, |r| count_u64(r.n)))
        })
    }

    /// Rows, `NULL`s and envelope headers by key id in `range`.
    pub(super) fn census_range(
        &self,
        column: &ColumnRef,
        range: &IdRange,
    ) -> Result<PrefixCensus, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let mut q = Sql::new(conn.dialect());
            // Envelope headers `mn1:<16 bytes>:`, compared as bytes; one
            // group per key id plus one (k NULL) for NULLs and the rest.
            match conn.dialect() {
                Dialect::Postgres => {
                    q.push(
                        "SELECT CASE WHEN substring(manna_b FROM 1 FOR 4) = CAST('mn1:' AS bytea) \
                         AND substring(manna_b FROM 21 FOR 1) = CAST(':' AS bytea) \
                         THEN substring(manna_b FROM 5 FOR 16) END AS k, \
                         CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(manna_b) AS BIGINT) AS nn \
                         FROM (SELECT convert_to(",
                    )
                    .ident(&column.column)
                    .push(", 'UTF8') AS manna_b FROM ")
                    .ident(&column.table);
                    push_range(&mut q, column, d.info.id_kind, d.collate_bytewise, range)?;
                    q.push(") AS manna_s GROUP BY 1");
                }
                Dialect::Sqlite => {
                    q.push("SELECT CASE WHEN substr(CAST(")
                        .ident(&column.column)
                        .push(" AS BLOB), 1, 4) = X'6d6e313a' AND substr(CAST(")
                        .ident(&column.column)
                        .push(" AS BLOB), 21, 1) = X'3a' THEN substr(CAST(")
                        .ident(&column.column)
                        .push(
                            " AS BLOB), 5, 16) END AS k, \
                             CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(",
                        )
                        .ident(&column.column)
                        .push(") AS BIGINT) AS nn FROM ")
                        .ident(&column.table);
                    push_range(&mut q, column, d.info.id_kind, d.collate_bytewise, range)?;
                    q.push(" GROUP BY 1");
                }
            }
            let mut census = PrefixCensus::default();
            for r in q.load::<CensusRow>(conn)? {
                census.total += count_u64(r.n);
                census.nulls += count_u64(r.n - r.nn);
                // A key id that is not UTF-8 belongs to a value that is not
                // text (SQLite): one of the others.
                if let Some(k) = r.k.and_then(|k| String::from_utf8(k).ok()) {
                    *census.envelopes.entry(k).or_default() += count_u64(r.n);
                }
            }
            Ok(census)
        })
    }

    /// At most `parts` ranges covering every key.
    pub(super) fn split_ranges(
        &self,
        column: &ColumnRef,
        parts: u32,
    ) -> Result<Vec<IdRange>, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            if parts <= 1 {
                return Ok(vec![IdRange::all()]);
            }
            let bounds: Vec<RowId> = match kind {
                IdKind::Int => {
                    let mut q = Sql::new(conn.dialect());
                    q.push("SELECT CAST(MIN(")
                        .ident(&column.id_column)
                        .push(") AS BIGINT) AS lo, CAST(MAX(")
                        .ident(&column.id_column)
                        .push(") AS BIGINT) AS hi FROM ")
                        .ident(&column.table);
                    let mm: Vec<MinMax> = q.load(conn)?;
                    match mm.first() {
                        Some(MinMax {
                            lo: Some(lo),
                            hi: Some(hi),
                        }) => int_bounds(*lo, *hi, parts)
                            .into_iter()
                            .map(RowId::Int)
                            .collect(),
                        _ => Vec::new(),
                    }
                }
                _ => {
                    let total = {
                        let mut q = Sql::new(conn.dialect());
                        q.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
                            .ident(&column.table);
                        let rows: Vec<CountRow> = q.load(conn)?;
                        rows.first().map_or(0, |r| r.n)
                    };
                    let mut bounds: Vec<RowId> = Vec::new();
                    for i in 1..i64::from(parts) {
                        let offset = total * i / i64::from(parts) - 1;
                        if offset < 0 {
                            continue;
                        }
                        let mut q = Sql::new(conn.dialect());
                        q.push("SELECT ");
                        push_id_select(&mut q, "", column, kind);
                        q.push(" FROM ").ident(&column.table).push(" ORDER BY ");
                        push_id_expr(&mut q, column, d.collate_bytewise);
                        q.push(" LIMIT 1 OFFSET ").bind(Bind::Int(offset));
                        if let Some(b) = ids_from(q, conn, kind)?.into_iter().next() {
                            if bounds.last().is_none_or(|last| &b > last) {
                                bounds.push(b);
                            }
                        }
                    }
                    bounds
                }
            };
            Ok(IdRange::from_bounds(bounds))
        })
    }
}

/// Upper bounds splitting `lo..=hi` into `parts` near-equal spans
/// (strictly increasing, each below `hi`).
fn int_bounds(lo: i64, hi: i64, parts: u32) -> Vec<i64> {
    let span = i128::from(hi) - i128::from(lo) + 1;
    let mut out: Vec<i64> = Vec::new();
    for i in 1..i128::from(parts) {
        let b = i128::from(lo) - 1 + span * i / i128::from(parts);
        let Ok(b) = i64::try_from(b) else { continue };
        if b >= lo && b < hi && out.last().is_none_or(|l| b > *l) {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn int_split_covers_and_is_disjoint(lo in -1_000_000i64..1_000_000, len in 0i64..100_000, parts in 2u32..17, probe in any::<i64>()) {
            let hi = lo + len;
            let ranges = IdRange::from_bounds(int_bounds(lo, hi, parts).into_iter().map(RowId::Int).collect());
            prop_assert!(ranges.len() <= parts as usize);
            let hits = ranges.iter().filter(|r| r.contains(&RowId::Int(probe))).count();
            prop_assert_eq!(hits, 1);
            let inside = lo + (probe.rem_euclid(len + 1));
            prop_assert_eq!(ranges.iter().filter(|r| r.contains(&RowId::Int(inside))).count(), 1);
        }
    }

    #[test]
    fn int_split_is_even() {
        assert_eq!(int_bounds(1, 100, 4), vec![25, 50, 75]);
        assert_eq!(int_bounds(1, 2, 4), vec![1]);
        assert!(int_bounds(5, 5, 4).is_empty());
        assert_eq!(int_bounds(i64::MIN, i64::MAX, 2), vec![-1]);
    }
}
