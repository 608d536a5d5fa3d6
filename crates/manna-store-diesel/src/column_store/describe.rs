//! What the store learns from the catalog: a column's description (key kind,
//! version column, whether text keys need `COLLATE "C"`) with "did you mean"
//! for misspelled names, and the database's identity.

use std::sync::atomic::Ordering;

use diesel::sql_types::{Nullable, Text};
use manna_store::{ColumnInfo, ColumnRef, IdKind, Ident};

use super::{Described, DieselStore};
use crate::conn::{AnyConn, Dialect, StoreConnection};
use crate::error::Error;
use crate::schema::{columns_of, ColumnDescription, VERSION_COLUMN};
use crate::sql::{Bind, Sql};

#[derive(diesel::QueryableByName)]
struct Collation {
    #[diesel(sql_type = Nullable<Text>)]
    collation: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct IdentityRow {
    #[diesel(sql_type = Text)]
    v: String,
}

impl DieselStore {
    pub(super) fn describe(
        &self,
        conn: &mut AnyConn<'_>,
        column: &ColumnRef,
    ) -> Result<Described, Error> {
        let dialect = conn.dialect();
        let cols = exact_columns(conn, column)?;
        let find = |name: &str| {
            cols.iter()
                .find(|c| c.name == name)
                .map(|c| c.sql_type.clone())
        };
        let id_type = find(column.id_column.as_str())
            .ok_or_else(|| missing_column(&column.table, column.id_column.as_str(), &cols))?;
        let value_type = find(column.column.as_str())
            .ok_or_else(|| missing_column(&column.table, column.column.as_str(), &cols))?;
        // SQLite resolves column names case-insensitively (so does the
        // quoted `"version"` it is written as); PostgreSQL does not.
        let has_version = cols.iter().any(|c| match dialect {
            Dialect::Postgres => c.name == VERSION_COLUMN,
            Dialect::Sqlite => c.name.eq_ignore_ascii_case(VERSION_COLUMN),
        });
        let id_kind = id_kind(dialect, &id_type).ok_or_else(|| {
            Error::unsupported(format!(
                "key column {}.{} has type {id_type}: only integer, text and UUID keys are supported",
                column.table, column.id_column
            ))
        })?;
        if !is_text(dialect, &value_type) {
            return Err(Error::unsupported(format!(
                "column {column} has type {value_type}: encrypted values live in TEXT columns"
            )));
        }
        let collate_bytewise = match dialect {
            Dialect::Postgres => id_kind == IdKind::Text && !bytewise_collation(conn, column)?,
            // Always, for text (and text-stored UUID) keys: a key declared
            // `COLLATE NOCASE` orders `a, b, C`, and `id > 'C'` would skip
            // `a` and `b`. On a BINARY key (the default) `COLLATE BINARY`
            // matches the key's index, which still serves the scan. On a
            // NOCASE (or RTRIM) key the index cannot: each batch reads the
            // rest of the table and sorts it ("USE TEMP B-TREE FOR ORDER
            // BY"), quadratic over a migration; an index on
            // `(id COLLATE BINARY)` serves it again.
            Dialect::Sqlite => matches!(id_kind, IdKind::Text | IdKind::Uuid),
        };
        Ok(Described {
            info: ColumnInfo::new(id_kind, has_version),
            collate_bytewise,
        })
    }

    pub(super) fn query_identity(&self) -> Result<String, Error> {
        let mut conn = self.pool.get()?;
        let mut conn = conn.any();
        let mut q = Sql::new(conn.dialect());
        match conn.dialect() {
            Dialect::Postgres => {
                q.push(
                    // The schema too: unqualified table names resolve in
                    // it, so two schemas' `items` are two tables.
                    "SELECT 'postgres:' || CAST(system_identifier AS TEXT) || '/' || current_database() \
                     || '/' || COALESCE(current_schema(), '') AS v FROM pg_control_system()",
                );
                let rows: Vec<IdentityRow> = q.load(&mut conn)?;
                rows.into_iter()
                    .next()
                    .map(|r| r.v)
                    .ok_or_else(|| Error::other("pg_control_system() returned no row"))
            }
            Dialect::Sqlite => {
                q.push("SELECT file AS v FROM pragma_database_list WHERE name = 'main'");
                let rows: Vec<IdentityRow> = q.load(&mut conn)?;
                let file = rows.into_iter().next().map(|r| r.v).unwrap_or_default();
                if file.is_empty() {
                    // An in-memory or temporary database belongs to this
                    // store's pool alone.
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    return Ok(format!(
                        "sqlite::memory:{}:{}",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::Relaxed)
                    ));
                }
                let path = std::fs::canonicalize(&file).map_err(|e| {
                    Error::other(format!("cannot resolve the SQLite database file: {e}"))
                })?;
                Ok(format!("sqlite:{}", path.display()))
            }
        }
    }
}

/// The columns of `column.table`, found only under the catalog's exact
/// spelling of the table; a table that exists under another case is
/// `NotFound` with "did you mean" and the catalog's spelling.
fn exact_columns(
    conn: &mut AnyConn<'_>,
    column: &ColumnRef,
) -> Result<Vec<ColumnDescription>, Error> {
    let mut q = Sql::new(conn.dialect());
    match conn.dialect() {
        Dialect::Postgres => {
            // Tables visible through the search_path, as `to_regclass` finds them.
            q.push(
                "SELECT c.relname::text AS v FROM pg_class c \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_table_is_visible(c.oid) \
                 AND lower(c.relname::text) = lower(",
            )
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(") ORDER BY c.relname::text = ")
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(" DESC, 1");
        }
        Dialect::Sqlite => {
            q.push(
                "SELECT name AS v FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name = ",
            )
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(" COLLATE NOCASE ORDER BY name = ")
            .bind(Bind::Text(column.table.as_str().to_owned()))
            .push(" DESC, 1");
        }
    }
    let names: Vec<IdentityRow> = q.load(conn)?;
    let Some(spelled) = names.into_iter().next().map(|r| r.v) else {
        return Err(Error::not_found(format!(
            "table {} does not exist",
            column.table
        )));
    };
    if spelled != column.table.as_str() {
        // Suggest the column as the catalog spells it too, when it exists.
        let suggested_column = Ident::new(&spelled)
            .ok()
            .and_then(|t| columns_of(conn, &t).ok())
            .and_then(|cols| {
                cols.into_iter()
                    .find(|c| c.name.eq_ignore_ascii_case(column.column.as_str()))
                    .map(|c| c.name)
            })
            .unwrap_or_else(|| column.column.to_string());
        return Err(Error::not_found(format!(
            "table {} does not exist; did you mean `{spelled}.{suggested_column}`?",
            column.table
        )));
    }
    columns_of(conn, &column.table)
}

/// `NotFound` for a column missing under its exact spelling, with "did you
/// mean" when the catalog has it under another case.
fn missing_column(table: &Ident, name: &str, cols: &[ColumnDescription]) -> Error {
    match cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
        Some(c) => Error::not_found(format!(
            "column {table}.{name} does not exist; did you mean `{table}.{}`?",
            c.name
        )),
        None => Error::not_found(format!("column {table}.{name} does not exist")),
    }
}

/// Whether the key column's collation orders text bytewise: a libc collation
/// `C`, `POSIX` or `C.UTF-8`. Then the key's index serves keyset scans
/// directly.
///
/// The provider matters as much as the name: on PostgreSQL 15+ a database
/// created with `LOCALE_PROVIDER icu` reports `datcollate = 'C'` (libc's
/// setting, used for nothing but `LC_COLLATE`) while its text sorts by the
/// ICU locale (`a < A < b`). Anything not known to be bytewise (ICU,
/// PostgreSQL 17's builtin provider) counts as not bytewise: `COLLATE "C"`
/// then keeps the order right at the cost of the index.
fn bytewise_collation(conn: &mut AnyConn<'_>, column: &ColumnRef) -> Result<bool, Error> {
    let mut q = Sql::new(Dialect::Postgres);
    // `provider:collation`. `datlocprovider` exists from PostgreSQL 15 on;
    // read through `to_jsonb` so older servers (always libc) get `c`.
    q.push(
        "SELECT CASE WHEN c.collprovider = 'd' \
           THEN (SELECT COALESCE(to_jsonb(d) ->> 'datlocprovider', 'c') || ':' || d.datcollate::text \
                 FROM pg_database d WHERE d.datname = current_database()) \
           ELSE c.collprovider::text || ':' || COALESCE(c.collcollate::text, '') END AS collation \
         FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = to_regclass(",
    )
    .bind(Bind::Text(column.table.quoted()))
    .push(") AND a.attname = ")
    .bind(Bind::Text(column.id_column.as_str().to_owned()));
    let rows: Vec<Collation> = q.load(conn)?;
    Ok(rows
        .first()
        .and_then(|r| r.collation.as_deref())
        .is_some_and(is_bytewise))
}

/// Whether `provider:collation` (as [`bytewise_collation`] reads it) orders
/// text bytewise.
fn is_bytewise(provider_collation: &str) -> bool {
    matches!(
        provider_collation.to_ascii_lowercase().as_str(),
        "c:c" | "c:posix" | "c:c.utf-8" | "c:c.utf8"
    )
}

fn id_kind(dialect: Dialect, ty: &str) -> Option<IdKind> {
    match dialect {
        Dialect::Postgres => match ty {
            "bigint" | "integer" | "smallint" => Some(IdKind::Int),
            "uuid" => Some(IdKind::Uuid),
            t if t == "text" || t.starts_with("character") => Some(IdKind::Text),
            _ => None,
        },
        Dialect::Sqlite => {
            if ty.contains("int") {
                Some(IdKind::Int)
            } else if ty.contains("uuid") {
                Some(IdKind::Uuid)
            } else if ty.contains("char") || ty.contains("clob") || ty.contains("text") {
                Some(IdKind::Text)
            } else {
                None
            }
        }
    }
}

fn is_text(dialect: Dialect, ty: &str) -> bool {
    match dialect {
        Dialect::Postgres => ty == "text" || ty.starts_with("character"),
        Dialect::Sqlite => {
            ty.is_empty() || ty.contains("char") || ty.contains("clob") || ty.contains("text")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_bytewise;

    #[test]
    fn only_libc_c_collations_are_bytewise() {
        for yes in ["c:C", "c:POSIX", "c:C.UTF-8", "c:c.utf8"] {
            assert!(is_bytewise(yes), "{yes}");
        }
        // An ICU database reports `datcollate = 'C'` but sorts `a < A < b`.
        for no in ["i:C", "i:", "b:C", "c:en_US.UTF-8", "d:C", ""] {
            assert!(!is_bytewise(no), "{no}");
        }
    }
}
