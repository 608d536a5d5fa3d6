//! Reading values: keyset scans (all values, or only those without a
//! prefix) and reads by key.

use manna_store::{ColumnRef, IdRange, Row, RowId, StoreError};

use super::fragments::{
    bind_id_array, push_id_expr, push_id_select, push_id_value, push_range, push_unprefixed,
    push_value_select,
};
use super::rows::rows_from;
use super::DieselStore;
use crate::conn::Dialect;
use crate::sql::{Bind, Sql};

/// SQLite's statement-parameter budget per `IN (…)` list when reading ids.
const SQLITE_IN_CHUNK: usize = 500;

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
            q.push("SELECT ");
            push_id_select(&mut q, "", column, kind);
            push_value_select(&mut q, column);
            q.push(" FROM ").ident(&column.table);
            let has_where = push_range(&mut q, column, kind, d.collate_bytewise, range)?;
            if let Some(prefix) = unprefixed {
                q.push(if has_where { " AND " } else { " WHERE " });
                push_unprefixed(&mut q, column, prefix);
            }
            q.push(" ORDER BY ");
            push_id_expr(&mut q, "", column, d.collate_bytewise);
            q.push(" LIMIT ")
                .bind(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
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
                            push_id_value(&mut q, kind, id)?;
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
