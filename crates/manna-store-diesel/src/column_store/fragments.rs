//! SQL fragments the statements share, per dialect: the key as an ordering
//! expression, a selected value and a bound value; key ranges; the selected
//! value; "does not start with"; key arrays for PostgreSQL.

use manna_store::{ColumnRef, IdKind, IdRange, RowId};

use crate::conn::Dialect;
use crate::error::Error;
use crate::sql::push_key;
use crate::sql::{Bind, Sql};

/// The key as an ordering and comparison expression: with an explicit
/// bytewise collation when `collate_bytewise` (`COLLATE "C"` on PostgreSQL,
/// `COLLATE BINARY` on SQLite), so the key's declared collation cannot change
/// the order.
///
/// Qualified by its table: the statements select the key as
/// `CAST(key AS …) AS id`, and a bare `ORDER BY id` (or, on SQLite, any
/// `id` in `ORDER BY`) names that output column, a cast the key's index
/// cannot serve; every batch would then read and sort the rest of the table.
pub(super) fn push_id_expr(q: &mut Sql, column: &ColumnRef, collate_bytewise: bool) {
    q.ident(&column.table).push(".").ident(&column.id_column);
    if collate_bytewise {
        match q.dialect() {
            Dialect::Postgres => q.push(" COLLATE \"C\""),
            Dialect::Sqlite => q.push(" COLLATE BINARY"),
        };
    }
}

/// The key as a selected value named `id` (BIGINT or TEXT).
pub(super) fn push_id_select(q: &mut Sql, prefix: &str, column: &ColumnRef, kind: IdKind) {
    let cast = match kind {
        IdKind::Int => "BIGINT",
        _ => "TEXT",
    };
    q.push("CAST(")
        .push(prefix)
        .ident(&column.id_column)
        .push(" AS ")
        .push(cast)
        .push(") AS id");
}

/// ` WHERE …` for `range` (nothing when unbounded).
pub(super) fn push_range(
    q: &mut Sql,
    column: &ColumnRef,
    kind: IdKind,
    collate_bytewise: bool,
    range: &IdRange,
) -> Result<bool, Error> {
    let mut first = true;
    let mut clause = |q: &mut Sql| {
        q.push(if first { " WHERE " } else { " AND " });
        first = false;
    };
    if let Some(after) = &range.after {
        clause(q);
        push_id_expr(q, column, collate_bytewise);
        q.push(" > ");
        push_key(q, kind, after)?;
    }
    if let Some(until) = &range.until {
        clause(q);
        push_id_expr(q, column, collate_bytewise);
        q.push(" <= ");
        push_key(q, kind, until)?;
    }
    Ok(!first)
}

/// `, value` (PostgreSQL) or `, kind, value` (SQLite: the storage class and
/// the bytes, whatever the storage class and the column's collation).
pub(super) fn push_value_select(q: &mut Sql, column: &ColumnRef) {
    match q.dialect() {
        Dialect::Postgres => {
            q.push(", ").ident(&column.column).push(" AS value");
        }
        Dialect::Sqlite => {
            q.push(", typeof(")
                .ident(&column.column)
                .push(") AS kind, CAST(")
                .ident(&column.column)
                .push(" AS BLOB) AS value");
        }
    }
}

/// The value is not `NULL` and does not start with the bytes of `prefix`
/// (no `LIKE`: it has wildcards, and ignores case on SQLite).
pub(super) fn push_unprefixed(q: &mut Sql, column: &ColumnRef, prefix: &str) {
    q.ident(&column.column).push(" IS NOT NULL AND ");
    match q.dialect() {
        Dialect::Postgres => {
            q.push("NOT starts_with(")
                .ident(&column.column)
                .push(" COLLATE \"C\", ")
                .bind(Bind::Text(prefix.to_owned()))
                .push(")");
        }
        Dialect::Sqlite => {
            // substr() of an empty BLOB is NULL, not X''.
            q.push("COALESCE(substr(CAST(")
                .ident(&column.column)
                .push(" AS BLOB), 1, ")
                .bind(Bind::Int(i64::try_from(prefix.len()).unwrap_or(i64::MAX)))
                .push("), X'') <> ")
                .bind(Bind::Bytes(prefix.as_bytes().to_vec()));
        }
    }
}

pub(super) fn bind_id_array(q: &mut Sql, kind: IdKind, ids: &[RowId]) -> Result<(), Error> {
    let mismatch = || {
        Error::unsupported(format!(
            "row ids do not match the key column's type ({kind:?})"
        ))
    };
    match kind {
        IdKind::Int => {
            let v = ids
                .iter()
                .map(|i| match i {
                    RowId::Int(i) => Ok(*i),
                    RowId::Text(_) => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            q.push("CAST(")
                .bind(Bind::IntArray(v))
                .push(" AS BIGINT[])");
        }
        _ => {
            let v = ids
                .iter()
                .map(|i| match i {
                    RowId::Text(s) => Ok(s.clone()),
                    RowId::Int(_) => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let cast = if kind == IdKind::Uuid {
                "UUID[]"
            } else {
                "TEXT[]"
            };
            q.push("CAST(")
                .bind(Bind::TextArray(v))
                .push(" AS ")
                .push(cast)
                .push(")");
        }
    }
    Ok(())
}
