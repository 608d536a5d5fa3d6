//! Batch writes: compare-and-set of every rewrite in one transaction, after
//! the fence check and before the checkpoint upsert.

use manna_store::{
    Checkpoint, ColumnRef, Fence as LockFence, IdKind, Rewrite, RowId, StoreError, WriteOptions,
};

use super::checkpoints::save_checkpoint;
use super::fragments::{bind_id_array, push_id_select};
use super::rows::ids_from;
use super::DieselStore;
use crate::conn::{AnyConn, Dialect};
use crate::error::Error;
use crate::schema::VERSION_COLUMN;
use crate::sql::push_key;
use crate::sql::{Bind, Sql};

/// Session limits of a PostgreSQL batch transaction: the server ends the
/// session of a writer idle inside it for 10 s (a batch never pauses that
/// long between its statements unless its process is stopped), and a lock
/// wait ends after 30 s with an error instead of hanging.
const PG_BATCH_TIMEOUTS: &str = "SELECT \
     set_config('idle_in_transaction_session_timeout', '10s', true), \
     set_config('lock_timeout', '30s', true)";

impl DieselStore {
    /// Writes `rewrites` whose old value still holds; the written ids, sorted.
    pub(super) fn write_rewrites(
        &self,
        column: &ColumnRef,
        rewrites: &[Rewrite],
        options: WriteOptions,
        checkpoint: Option<&Checkpoint>,
        fence: Option<&LockFence>,
    ) -> Result<Vec<RowId>, StoreError> {
        self.with_conn(|conn| {
            let info = self.info(conn, column)?.info;
            if options.bump_version && !info.has_version {
                return Err(Error::NoVersionColumn {
                    table: column.table.to_string(),
                    column: VERSION_COLUMN.to_owned(),
                });
            }
            if checkpoint.is_some() {
                self.ensure_checkpoints(conn)?;
            }
            let fence = match fence {
                Some(f) => {
                    self.ensure_fences(conn)?;
                    let token = crate::fence::sql_token(&f.fencing)?;
                    Some((f.name.as_str(), token, f.fencing.holder()))
                }
                None => None,
            };
            conn.write_transaction(|conn| {
                if conn.dialect() == Dialect::Postgres {
                    // A migrator paused inside this transaction (SIGSTOP, a
                    // stalled VM) would hold its row and fence locks for as
                    // long as it stays paused: the server ends such a session
                    // instead, and a writer waiting on locks gives up in
                    // bounded time rather than forever.
                    let mut q = Sql::new(Dialect::Postgres);
                    q.push(PG_BATCH_TIMEOUTS);
                    q.execute(conn)?;
                }
                // First: a stale holder is refused before it writes anything.
                if let Some((name, token, holder)) = fence {
                    self.fence.check_and_bump(conn, name, token, holder)?;
                }
                let mut written = if rewrites.is_empty() {
                    Vec::new()
                } else {
                    match conn.dialect() {
                        Dialect::Postgres => {
                            write_pg(conn, column, info.id_kind, rewrites, options)?
                        }
                        Dialect::Sqlite => {
                            write_sqlite(conn, column, info.id_kind, rewrites, options)?
                        }
                    }
                };
                if let Some(cp) = checkpoint {
                    save_checkpoint(conn, cp)?;
                }
                written.sort();
                written.dedup();
                Ok(written)
            })
        })
    }
}

/// One statement for the whole batch:
/// `UPDATE t SET c = v.new FROM unnest(ids, olds, news) v WHERE t.id = v.id AND t.c = v.old COLLATE "C" RETURNING t.id`.
fn write_pg(
    conn: &mut AnyConn<'_>,
    column: &ColumnRef,
    kind: IdKind,
    rewrites: &[Rewrite],
    options: WriteOptions,
) -> Result<Vec<RowId>, Error> {
    let ids: Vec<RowId> = rewrites.iter().map(|r| r.id.clone()).collect();
    let olds: Vec<String> = rewrites.iter().map(|r| r.old.clone()).collect();
    let news: Vec<String> = rewrites.iter().map(|r| r.new.clone()).collect();
    let mut q = Sql::new(Dialect::Postgres);
    q.push("UPDATE ")
        .ident(&column.table)
        .push(" AS manna_t SET ")
        .ident(&column.column)
        .push(" = manna_v.new");
    if options.bump_version {
        q.push(", \"version\" = manna_t.\"version\" + 1");
    }
    q.push(" FROM unnest(");
    bind_id_array(&mut q, kind, &ids)?;
    q.push(", CAST(")
        .bind(Bind::TextArray(olds))
        .push(" AS TEXT[]), CAST(")
        .bind(Bind::TextArray(news))
        .push(" AS TEXT[])) AS manna_v(id, old, new) WHERE manna_t.")
        .ident(&column.id_column)
        .push(" = manna_v.id AND manna_t.")
        .ident(&column.column)
        // Byte for byte, whatever the column's collation: a value the
        // application changed only in case is a conflict.
        .push(" = manna_v.old COLLATE \"C\" RETURNING ");
    push_id_select(&mut q, "manna_t.", column, kind);
    ids_from(q, conn, kind)
}

/// One cached prepared `UPDATE … WHERE id = ? AND CAST(c AS BLOB) = ?` per row, all inside
/// the caller's `BEGIN IMMEDIATE` transaction.
fn write_sqlite(
    conn: &mut AnyConn<'_>,
    column: &ColumnRef,
    kind: IdKind,
    rewrites: &[Rewrite],
    options: WriteOptions,
) -> Result<Vec<RowId>, Error> {
    let mut written = Vec::new();
    for r in rewrites {
        let mut q = Sql::new(Dialect::Sqlite);
        q.push("UPDATE ")
            .ident(&column.table)
            .push(" SET ")
            .ident(&column.column)
            .push(" = ")
            .bind(Bind::Text(r.new.clone()));
        if options.bump_version {
            q.push(", \"version\" = \"version\" + 1");
        }
        q.push(" WHERE ").ident(&column.id_column).push(" = ");
        push_key(&mut q, kind, &r.id)?;
        // Bytes against bytes: matches a value stored as a BLOB too, and no
        // collation (NOCASE) applies.
        q.push(" AND CAST(")
            .ident(&column.column)
            .push(" AS BLOB) = ")
            .bind(Bind::Bytes(r.old.as_bytes().to_vec()));
        if q.execute(conn)? > 0 {
            written.push(r.id.clone());
        }
    }
    Ok(written)
}
