//! Reading values: keyset scans (all values, or only those without a
//! prefix) and reads by key.

use manna_store::{ColumnRef, IdRange, Row, RowId, StoreError};

use super::fragments::{
    bind_id_array, push_id_expr, push_id_select, push_range, push_unprefixed, push_value_select,
};
use super::rows::rows_from;
use super::{Described, DieselStore};
use crate::conn::Dialect;
use crate::error::Error;
use crate::sql::push_key;
use crate::sql::{Bind, Sql};

/// SQLite's statement-parameter budget per `IN (…)` list when reading ids.
const SQLITE_IN_CHUNK: usize = 500;

/// `SELECT id, value … WHERE <range> [AND <unprefixed>] ORDER BY id LIMIT n`.
fn push_scan(
    q: &mut Sql,
    column: &ColumnRef,
    d: &Described,
    range: &IdRange,
    limit: usize,
    unprefixed: Option<&str>,
) -> Result<(), Error> {
    let kind = d.info.id_kind;
    q.push("SELECT ");
    push_id_select(q, "", column, kind);
    push_value_select(q, column);
    q.push(" FROM ").ident(&column.table);
    let has_where = push_range(q, column, kind, d.collate_bytewise, range)?;
    if let Some(prefix) = unprefixed {
        q.push(if has_where { " AND " } else { " WHERE " });
        push_unprefixed(q, column, prefix);
    }
    q.push(" ORDER BY ");
    push_id_expr(q, column, d.collate_bytewise);
    q.push(" LIMIT ")
        .bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    Ok(())
}

impl DieselStore {
    /// Rows of `range` (optionally only values not starting with `prefix`),
    /// in key order, at most `limit`.
    pub(super) fn scan_where(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        limit: usize,
        unprefixed: Option<&str>,
    ) -> Result<Vec<Row>, StoreError> {
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            let mut q = Sql::new(conn.dialect());
            push_scan(&mut q, column, &d, range, limit, unprefixed)?;
            rows_from(q, conn, kind)
        })
    }

    /// The rows of `ids` that exist, in key order.
    pub(super) fn read_rows(
        &self,
        column: &ColumnRef,
        ids: &[RowId],
    ) -> Result<Vec<Row>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.with_conn(|conn| {
            let d = self.info(conn, column)?;
            let kind = d.info.id_kind;
            let mut out = Vec::with_capacity(ids.len());
            let select = |q: &mut Sql| {
                q.push("SELECT ");
                push_id_select(q, "", column, kind);
                push_value_select(q, column);
                q.push(" FROM ")
                    .ident(&column.table)
                    .push(" WHERE ")
                    .ident(&column.id_column);
            };
            match conn.dialect() {
                Dialect::Postgres => {
                    let mut q = Sql::new(Dialect::Postgres);
                    select(&mut q);
                    q.push(" = ANY(");
                    bind_id_array(&mut q, kind, ids)?;
                    q.push(")");
                    out.extend(rows_from(q, conn, kind)?);
                }
                Dialect::Sqlite => {
                    for chunk in ids.chunks(SQLITE_IN_CHUNK) {
                        let mut q = Sql::new(Dialect::Sqlite);
                        select(&mut q);
                        q.push(" IN (");
                        for (i, id) in chunk.iter().enumerate() {
                            if i > 0 {
                                q.push(", ");
                            }
                            push_key(&mut q, kind, id)?;
                        }
                        q.push(")");
                        out.extend(rows_from(q, conn, kind)?);
                    }
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out.dedup_by(|a, b| a.id == b.id);
            Ok(out)
        })
    }
}

#[cfg(all(test, feature = "sqlite", feature = "testing"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::Text;
    use diesel::{Connection, PgConnection, SqliteConnection};
    use manna_store::{ColumnInfo, IdKind};

    use super::*;
    use crate::conn::AnyConn;

    #[derive(diesel::QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = Text)]
        #[diesel(column_name = "QUERY PLAN")]
        pg: String,
    }

    #[derive(diesel::QueryableByName)]
    struct SqlitePlanRow {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    /// The statement of a keyset scan over `table` (key `id`, value `v`),
    /// resumed after `after`, behind `EXPLAIN …`.
    fn explained(
        explain: &str,
        dialect: Dialect,
        table: &str,
        kind: IdKind,
        collate_bytewise: bool,
        after: RowId,
    ) -> Sql {
        let column = ColumnRef::parse(&format!("{table}.v"), "id").unwrap();
        let d = Described {
            info: ColumnInfo::new(kind, false),
            collate_bytewise,
        };
        let mut q = Sql::new(dialect);
        q.push(explain);
        let range = IdRange::all().resumed_after(Some(after));
        push_scan(&mut q, &column, &d, &range, 10, None).unwrap();
        q
    }

    /// On SQLite `COLLATE BINARY` on a default (BINARY) text key and an
    /// integer key search the key's index in order; on a `NOCASE` key the
    /// index cannot give byte order: a sort, the price documented where the
    /// store decides on the collation.
    #[test]
    fn sqlite_scan_uses_the_key_index() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute(
            "CREATE TABLE plain (id TEXT PRIMARY KEY, v TEXT); \
             CREATE TABLE norowid (id TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID; \
             CREATE TABLE nocase (id TEXT COLLATE NOCASE PRIMARY KEY, v TEXT); \
             CREATE TABLE ints (id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        let mut plan = |table: &str, kind: IdKind, after: RowId| {
            let q = explained(
                "EXPLAIN QUERY PLAN ",
                Dialect::Sqlite,
                table,
                kind,
                kind != IdKind::Int,
                after,
            );
            let rows: Vec<SqlitePlanRow> = q.load(&mut AnyConn::Sqlite(&mut conn)).unwrap();
            rows.into_iter()
                .map(|r| r.detail)
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (table, kind, after) in [
            ("plain", IdKind::Text, RowId::from("m")),
            ("norowid", IdKind::Text, RowId::from("m")),
            ("ints", IdKind::Int, RowId::Int(5)),
        ] {
            let p = plan(table, kind, after);
            assert!(
                p.starts_with(&format!("SEARCH {table} USING")) && !p.contains("TEMP B-TREE"),
                "{table}: {p}"
            );
        }
        let p = plan("nocase", IdKind::Text, RowId::from("m"));
        assert!(p.contains("USE TEMP B-TREE FOR ORDER BY"), "nocase: {p}");
    }

    /// On PostgreSQL the keys whose order is bytewise as declared (integer,
    /// UUID, text under `C`) are scanned through their index, never sorted.
    #[test]
    fn postgres_scan_uses_the_key_index() {
        let mut conn = PgConnection::establish(crate::testing::pg_test_url()).unwrap();
        conn.batch_execute(
            "CREATE TEMP TABLE i4 (id INTEGER PRIMARY KEY, v TEXT); \
             CREATE TEMP TABLE i8 (id BIGINT PRIMARY KEY, v TEXT); \
             CREATE TEMP TABLE u (id UUID PRIMARY KEY, v TEXT); \
             CREATE TEMP TABLE tc (id TEXT COLLATE \"C\" PRIMARY KEY, v TEXT); \
             SET enable_seqscan = off; SET enable_sort = off;",
        )
        .unwrap();
        let uuid = RowId::from("00000000-0000-4000-8000-000000000000");
        for (table, kind, after) in [
            ("i4", IdKind::Int, RowId::Int(5)),
            ("i8", IdKind::Int, RowId::Int(5)),
            ("u", IdKind::Uuid, uuid),
            ("tc", IdKind::Text, RowId::from("m")),
        ] {
            let q = explained("EXPLAIN ", Dialect::Postgres, table, kind, false, after);
            let rows: Vec<PlanRow> = q.load(&mut AnyConn::Pg(&mut conn)).unwrap();
            let p = rows
                .into_iter()
                .map(|r| r.pg)
                .collect::<Vec<_>>()
                .join("; ");
            assert!(p.contains("Index") && !p.contains("Sort"), "{table}: {p}");
        }
    }
}
