//! Optimistic locking on a version column (the Python application's
//! `OptimisticLockMixin`).

use std::fmt;

use diesel::sql_types::BigInt;
use manna_lock::ConflictError;
use manna_store::{IdKind, Ident, RowId};

use crate::conn::{AnyConn, StoreConnection};
use crate::error::Error;
use crate::schema::VERSION_COLUMN;
use crate::sql::{push_key, Bind, Sql};

/// A value written by a versioned update. Always bound, never formatted
/// into SQL.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// An integer (binds as `BIGINT`).
    Int(i64),
    /// Text (binds as `TEXT`); use [`crate::Sealed`] to store ciphertext.
    Text(String),
    /// SQL `NULL`.
    Null,
}

impl fmt::Debug for Value {
    /// Only the kind: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(_) => f.write_str("Int(..)"),
            Value::Text(s) => write!(f, "Text(<{} bytes>)", s.len()),
            Value::Null => f.write_str("Null"),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i.into())
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Null, Into::into)
    }
}

/// The columns a versioned update sets. Column names are validated when
/// added, before any SQL exists.
///
/// ```
/// use manna_store_diesel::Changes;
/// let c = Changes::new().set("balance", 10).unwrap().set("note", "hi").unwrap();
/// assert_eq!(c.len(), 2);
/// assert!(Changes::new().set("balance = 0 --", 1).is_err());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Changes {
    columns: Vec<(Ident, Value)>,
}

impl Changes {
    /// No changes yet.
    pub fn new() -> Self {
        Changes::default()
    }

    /// Adds `column = value`.
    pub fn set(mut self, column: &str, value: impl Into<Value>) -> Result<Self, Error> {
        self.columns.push((Ident::new(column)?, value.into()));
        Ok(self)
    }

    /// Number of columns set.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub(crate) fn push_assignments(&self, q: &mut Sql) {
        for (i, (col, value)) in self.columns.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.ident(col).push(" = ");
            match value {
                Value::Int(v) => q.bind(Bind::Int(*v)),
                Value::Text(v) => q.bind(Bind::Text(v.clone())),
                Value::Null => q.push("NULL"),
            };
        }
    }
}

/// A table under optimistic locking: an id column and a version column
/// managed by this crate. No caller increments the version by hand.
///
/// ```
/// # use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
/// use manna_store_diesel::{Changes, Error, VersionedTable};
/// use manna_lock::ConflictKind;
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// conn.batch_execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL,
///                     version INTEGER NOT NULL DEFAULT 1);
///                     INSERT INTO accounts (id, balance) VALUES (1, 100)").unwrap();
/// let accounts = VersionedTable::new("accounts").unwrap();
/// let v = accounts.update(&mut conn, 1, 1, &Changes::new().set("balance", 90).unwrap()).unwrap();
/// assert_eq!(v, 2);
/// // A writer that read version 1 is refused:
/// match accounts.update(&mut conn, 1, 1, &Changes::new().set("balance", 80).unwrap()) {
///     Err(Error::Conflict(c)) => assert_eq!(c.kind(), ConflictKind::RowChanged),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionedTable {
    table: Ident,
    id_column: Ident,
    /// Declared key type; `None`: taken from each id (integer or text).
    id_kind: Option<IdKind>,
    version_column: Ident,
}

#[derive(diesel::QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = BigInt)]
    version: i64,
}

impl VersionedTable {
    /// `table` with id column `id` and version column `version`.
    pub fn new(table: &str) -> Result<Self, Error> {
        Ok(VersionedTable {
            table: Ident::new(table)?,
            id_column: Ident::new("id")?,
            id_kind: None,
            version_column: Ident::new(VERSION_COLUMN)?,
        })
    }

    /// Uses another id column.
    pub fn with_id_column(mut self, column: &str) -> Result<Self, Error> {
        self.id_column = Ident::new(column)?;
        Ok(self)
    }

    /// Declares the id column's type. Without it an integer id is bound as
    /// an integer and a text id as text; a `uuid` key needs
    /// [`IdKind::Uuid`] (ids given as text in any case; bound as `uuid` on
    /// PostgreSQL, as lowercase text on SQLite).
    pub fn with_id_kind(mut self, kind: IdKind) -> Self {
        self.id_kind = Some(kind);
        self
    }

    /// The key type `id` is bound as.
    fn kind_of(&self, id: &RowId) -> IdKind {
        self.id_kind.unwrap_or(match id {
            RowId::Int(_) => IdKind::Int,
            _ => IdKind::Text,
        })
    }

    /// Binds the application's `id`: a UUID given as text in any case is
    /// bound in the lowercase canonical form (as `uuid::Uuid` writes it).
    fn push_id(&self, q: &mut Sql, id: &RowId) -> Result<(), Error> {
        let kind = self.kind_of(id);
        match (kind, id) {
            (IdKind::Uuid, RowId::Text(s)) => {
                push_key(q, kind, &RowId::Text(s.to_ascii_lowercase()))
            }
            _ => push_key(q, kind, id),
        }
    }

    /// Uses another version column.
    pub fn with_version_column(mut self, column: &str) -> Result<Self, Error> {
        self.version_column = Ident::new(column)?;
        Ok(self)
    }

    /// The table name.
    pub fn table(&self) -> &Ident {
        &self.table
    }

    /// The id column.
    pub fn id_column(&self) -> &Ident {
        &self.id_column
    }

    /// The version column.
    pub fn version_column(&self) -> &Ident {
        &self.version_column
    }

    /// Sets `changes` and `version = version + 1` on row `id` if its version is
    /// still `expected`, in one statement; returns the new version.
    ///
    /// Zero rows matched is [`Error::Conflict`] with the table and id:
    /// [`RowGone`](manna_lock::ConflictKind::RowGone) when the row no longer
    /// exists, [`RowChanged`](manna_lock::ConflictKind::RowChanged) otherwise.
    /// A table without the version column is [`Error::NoVersionColumn`].
    pub fn update<C: StoreConnection>(
        &self,
        conn: &mut C,
        id: impl Into<RowId>,
        expected: i64,
        changes: &Changes,
    ) -> Result<i64, Error> {
        self.update_any(&mut conn.any(), &id.into(), expected, changes)
    }

    pub(crate) fn update_any(
        &self,
        conn: &mut AnyConn<'_>,
        id: &RowId,
        expected: i64,
        changes: &Changes,
    ) -> Result<i64, Error> {
        let mut q = Sql::new(conn.dialect());
        q.push("UPDATE ").ident(&self.table).push(" SET ");
        changes.push_assignments(&mut q);
        if !changes.is_empty() {
            q.push(", ");
        }
        q.ident(&self.version_column)
            .push(" = ")
            .ident(&self.version_column)
            .push(" + 1 WHERE ")
            .ident(&self.id_column)
            .push(" = ");
        self.push_id(&mut q, id)?;
        q.push(" AND ")
            .ident(&self.version_column)
            .push(" = ")
            .bind(Bind::Int(expected));
        // The statement matched `version = expected` and set it one higher,
        // so the new version is known without a RETURNING round of decoding.
        match q.execute(conn).map_err(|e| self.map_err(e.into()))? {
            0 => Err(self.conflict(conn, id)?.into()),
            _ => Ok(expected + 1),
        }
    }

    /// Deletes row `id` if its version is still `expected`; zero rows is
    /// [`Error::Conflict`] exactly as for [`update`](Self::update).
    pub fn delete<C: StoreConnection>(
        &self,
        conn: &mut C,
        id: impl Into<RowId>,
        expected: i64,
    ) -> Result<(), Error> {
        let conn = &mut conn.any();
        let id = id.into();
        let mut q = Sql::new(conn.dialect());
        q.push("DELETE FROM ")
            .ident(&self.table)
            .push(" WHERE ")
            .ident(&self.id_column)
            .push(" = ");
        self.push_id(&mut q, &id)?;
        q.push(" AND ")
            .ident(&self.version_column)
            .push(" = ")
            .bind(Bind::Int(expected));
        let n = q.execute(conn).map_err(|e| self.map_err(e.into()))?;
        if n == 0 {
            return Err(self.conflict(conn, &id)?.into());
        }
        Ok(())
    }

    /// The current version of row `id`, `None` if the row does not exist.
    pub fn version<C: StoreConnection>(
        &self,
        conn: &mut C,
        id: impl Into<RowId>,
    ) -> Result<Option<i64>, Error> {
        self.version_any(&mut conn.any(), &id.into())
    }

    pub(crate) fn version_any(
        &self,
        conn: &mut AnyConn<'_>,
        id: &RowId,
    ) -> Result<Option<i64>, Error> {
        let mut q = Sql::new(conn.dialect());
        q.push("SELECT CAST(")
            .ident(&self.version_column)
            .push(" AS BIGINT) AS version FROM ")
            .ident(&self.table)
            .push(" WHERE ")
            .ident(&self.id_column)
            .push(" = ");
        self.push_id(&mut q, id)?;
        let rows: Vec<VersionRow> = q.load(conn).map_err(|e| self.map_err(e.into()))?;
        Ok(rows.first().map(|r| r.version))
    }

    /// Why a guarded statement matched no row.
    pub(crate) fn conflict(
        &self,
        conn: &mut AnyConn<'_>,
        id: &RowId,
    ) -> Result<ConflictError, Error> {
        Ok(match self.version_any(conn, id)? {
            None => ConflictError::row_gone(self.table.as_str(), id.to_string()),
            Some(_) => ConflictError::row_changed(self.table.as_str(), id.to_string()),
        })
    }

    fn map_err(&self, e: Error) -> Error {
        e.or_no_version(self.table.as_str(), self.version_column.as_str())
    }
}
