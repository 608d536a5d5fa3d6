//! Rows as the statements select them, decoded into the port's [`Row`]s
//! and [`RowId`]s, and counts between the port's `u64` and SQL's BIGINT.

use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use manna_store::{IdKind, Row, RowId, Value};

use crate::conn::{AnyConn, Dialect};
use crate::error::Error;
use crate::sql::Sql;

/// A PostgreSQL row with an integer key: TEXT values are always UTF-8 there.
#[derive(diesel::QueryableByName)]
struct IntRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// An SQLite row with an integer key: the value's bytes and storage class.
#[derive(diesel::QueryableByName)]
struct IntBytesRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
}

#[derive(diesel::QueryableByName)]
struct TextBytesRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
}

#[derive(diesel::QueryableByName)]
struct IntId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(diesel::QueryableByName)]
struct TextId {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(diesel::QueryableByName)]
pub(super) struct CountRow {
    #[diesel(sql_type = BigInt)]
    pub(super) n: i64,
}

/// An SQLite value from its storage class and bytes: text when UTF-8.
pub(super) fn sqlite_value(kind: &str, bytes: Option<Vec<u8>>) -> Value {
    match (kind, bytes) {
        ("null", _) | (_, None) => Value::Null,
        ("text" | "blob", Some(b)) => String::from_utf8(b).map_or(Value::NotText, Value::Text),
        // INTEGER or REAL: not a stored string at all.
        _ => Value::NotText,
    }
}

/// Loads rows selected with [`push_id_select`](super::fragments::push_id_select) and
/// [`push_value_select`](super::fragments::push_value_select).
pub(super) fn rows_from(q: Sql, conn: &mut AnyConn<'_>, kind: IdKind) -> Result<Vec<Row>, Error> {
    let row = |id: RowId, value: Value| Row { id, value };
    Ok(match (q.dialect(), kind) {
        (Dialect::Postgres, IdKind::Int) => q
            .load::<IntRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Int(r.id), r.value.into()))
            .collect(),
        (Dialect::Postgres, _) => q
            .load::<TextRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Text(r.id), r.value.into()))
            .collect(),
        (Dialect::Sqlite, IdKind::Int) => q
            .load::<IntBytesRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Int(r.id), sqlite_value(&r.kind, r.value)))
            .collect(),
        (Dialect::Sqlite, _) => q
            .load::<TextBytesRow>(conn)?
            .into_iter()
            .map(|r| row(RowId::Text(r.id), sqlite_value(&r.kind, r.value)))
            .collect(),
    })
}

pub(super) fn ids_from(q: Sql, conn: &mut AnyConn<'_>, kind: IdKind) -> Result<Vec<RowId>, Error> {
    Ok(match kind {
        IdKind::Int => q
            .load::<IntId>(conn)?
            .into_iter()
            .map(|r| RowId::Int(r.id))
            .collect(),
        _ => q
            .load::<TextId>(conn)?
            .into_iter()
            .map(|r| RowId::Text(r.id))
            .collect(),
    })
}

pub(super) fn count_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
