//! Idempotent compare-and-set keyed by an operation id (the Python application's
//! `safe_cursor_update`).

use diesel::sql_types::{BigInt, Nullable, Text};
use manna_lock::ConflictError;
use manna_store::{Ident, RowId};

use crate::conn::{AnyConn, StoreConnection};
use crate::error::Error;
use crate::schema::{ensure_operations_table, OPERATIONS_TABLE};
use crate::sql::{Bind, Sql};
use crate::versioned::{Changes, VersionedTable};

/// What an idempotent compare-and-set did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CasOutcome {
    /// The change was applied now; the row's new version.
    Applied {
        /// The row's version after the update.
        version: i64,
    },
    /// This operation id was applied before; nothing changed now.
    AlreadyApplied {
        /// The version the original application produced.
        version: Option<i64>,
    },
    /// The row changed (or disappeared) since it was read; nothing was
    /// applied or recorded, so the caller may re-read and retry with the
    /// same operation id.
    Conflict(ConflictError),
}

/// Compare-and-set on a versioned table that records each caller-chosen
/// operation id in the same transaction, so a retried call (after a timeout,
/// a crash, a redelivered message) applies at most once.
///
/// ```
/// # use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
/// use manna_store_diesel::{CasOutcome, Changes, IdempotentCas, VersionedTable};
/// let mut conn = SqliteConnection::establish(":memory:").unwrap();
/// conn.batch_execute("CREATE TABLE items (id INTEGER PRIMARY KEY, cursor TEXT,
///                     version INTEGER NOT NULL DEFAULT 1);
///                     INSERT INTO items (id) VALUES (7)").unwrap();
/// let cas = IdempotentCas::new(VersionedTable::new("items").unwrap());
/// cas.create_schema(&mut conn).unwrap();
/// let set = Changes::new().set("cursor", "c-2").unwrap();
/// assert_eq!(cas.apply(&mut conn, "sync-42", 7, 1, &set).unwrap(), CasOutcome::Applied { version: 2 });
/// // The same call again (e.g. a retry after a lost reply) does nothing:
/// assert_eq!(cas.apply(&mut conn, "sync-42", 7, 1, &set).unwrap(),
///            CasOutcome::AlreadyApplied { version: Some(2) });
/// // A different operation computed from version 1 is a conflict:
/// assert!(matches!(cas.apply(&mut conn, "sync-43", 7, 1, &set).unwrap(), CasOutcome::Conflict(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentCas {
    table: VersionedTable,
    operations: Ident,
}

#[derive(diesel::QueryableByName)]
struct OperationRow {
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = Text)]
    row_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    version: Option<i64>,
}

enum TxError {
    Store(Error),
    Conflict(ConflictError),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Store(e.into())
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Store(e)
    }
}

impl IdempotentCas {
    /// Compare-and-set on `table`, recording operations in `manna_operations`.
    pub fn new(table: VersionedTable) -> Self {
        IdempotentCas {
            table,
            operations: Ident::new(OPERATIONS_TABLE)
                .expect("the default name is a valid identifier"),
        }
    }

    /// Records operations in another table.
    pub fn with_operations_table(mut self, name: &str) -> Result<Self, Error> {
        self.operations = Ident::new(name)?;
        Ok(self)
    }

    /// Creates the operations table if needed (idempotent).
    pub fn create_schema<C: StoreConnection>(&self, conn: &mut C) -> Result<(), Error> {
        ensure_operations_table(&mut conn.any(), &self.operations)
    }

    /// In one transaction: records `operation_id`, then sets `changes` and
    /// bumps the version of row `id` if its version is still `expected`.
    ///
    /// - first call, version matches: [`CasOutcome::Applied`];
    /// - `operation_id` already recorded for this row: [`CasOutcome::AlreadyApplied`]
    ///   (whatever the row's version is now);
    /// - version moved or row gone: [`CasOutcome::Conflict`], and the operation
    ///   id is *not* recorded.
    ///
    /// An operation id recorded for a different row is [`Error::OperationReused`].
    /// Two concurrent calls with the same id serialize on the operations
    /// table's primary key: exactly one applies.
    pub fn apply<C: StoreConnection>(
        &self,
        conn: &mut C,
        operation_id: &str,
        id: impl Into<RowId>,
        expected: i64,
        changes: &Changes,
    ) -> Result<CasOutcome, Error> {
        let id = id.into();
        let conn = &mut conn.any();
        let res =
            conn.write_transaction(|c| self.apply_in(c, operation_id, &id, expected, changes));
        match res {
            Ok(outcome) => Ok(outcome),
            Err(TxError::Conflict(c)) => Ok(CasOutcome::Conflict(c)),
            Err(TxError::Store(e)) => Err(e),
        }
    }

    fn apply_in(
        &self,
        c: &mut AnyConn<'_>,
        operation_id: &str,
        id: &RowId,
        expected: i64,
        changes: &Changes,
    ) -> Result<CasOutcome, TxError> {
        let entity = self.table.table().as_str();
        let row_id = id.to_string();
        let mut ins = Sql::new(c.dialect());
        ins.push("INSERT INTO ")
            .ident(&self.operations)
            .push(" (operation_id, entity, row_id) VALUES (")
            .bind(Bind::Text(operation_id.to_owned()))
            .push(", ")
            .bind(Bind::Text(entity.to_owned()))
            .push(", ")
            .bind(Bind::Text(row_id.clone()))
            .push(") ON CONFLICT (operation_id) DO NOTHING");
        if ins.execute(c)? == 0 {
            let mut sel = Sql::new(c.dialect());
            sel.push("SELECT entity, row_id, version FROM ")
                .ident(&self.operations)
                .push(" WHERE operation_id = ")
                .bind(Bind::Text(operation_id.to_owned()));
            let rows: Vec<OperationRow> = sel.load(c)?;
            let row = rows
                .into_iter()
                .next()
                .ok_or_else(|| Error::other("operation record vanished while being read"))?;
            if row.entity != entity || row.row_id != row_id {
                return Err(Error::OperationReused {
                    operation_id: operation_id.to_owned(),
                    entity: row.entity,
                    id: row.row_id,
                }
                .into());
            }
            return Ok(CasOutcome::AlreadyApplied {
                version: row.version,
            });
        }
        let version = match self.table.update_any(c, id, expected, changes) {
            Ok(v) => v,
            Err(Error::Conflict(conflict)) => return Err(TxError::Conflict(conflict)),
            Err(e) => return Err(e.into()),
        };
        let mut rec = Sql::new(c.dialect());
        rec.push("UPDATE ")
            .ident(&self.operations)
            .push(" SET version = ")
            .bind(Bind::Int(version))
            .push(" WHERE operation_id = ")
            .bind(Bind::Text(operation_id.to_owned()));
        rec.execute(c)?;
        Ok(CasOutcome::Applied { version })
    }
}
