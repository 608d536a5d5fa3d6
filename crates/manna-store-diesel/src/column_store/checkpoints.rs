//! The migrator's own tables: checkpoints (loaded, listed, cleared, and
//! upserted inside a batch's transaction) and shard layouts (the first saved
//! wins).

use diesel::sql_types::{BigInt, Nullable, Text};
use manna_store::{Checkpoint, CheckpointKey, Counts, LayoutKey, RowId, StoreError};

use super::rows::{count_i64, count_u64};
use super::DieselStore;
use crate::conn::AnyConn;
use crate::error::Error;
use crate::schema::{CHECKPOINT_TABLE, LAYOUT_TABLE};
use crate::sql::{Bind, Sql};

#[derive(diesel::QueryableByName)]
struct BoundsRow {
    #[diesel(sql_type = Text)]
    bounds: String,
}

#[derive(diesel::QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    partition_name: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_id_kind: Option<String>,
    #[diesel(sql_type = BigInt)]
    scanned: i64,
    #[diesel(sql_type = BigInt)]
    migrated: i64,
    #[diesel(sql_type = BigInt)]
    unchanged: i64,
    #[diesel(sql_type = BigInt)]
    conflicts: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
}

impl DieselStore {
    pub(super) fn load_checkpoint_row(
        &self,
        key: &CheckpointKey,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.with_conn(|conn| {
            self.ensure_checkpoints(conn)?;
            let mut q = Sql::new(conn.dialect());
            push_checkpoint_select(&mut q);
            push_key(&mut q, key);
            let rows: Vec<CheckpointRow> = q.load(conn)?;
            rows.into_iter().next().map(checkpoint_of).transpose()
        })
    }

    /// Every checkpoint of `column`.
    pub(super) fn list_checkpoints(&self, column: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.with_conn(|conn| {
            self.ensure_checkpoints(conn)?;
            let mut q = Sql::new(conn.dialect());
            push_checkpoint_select(&mut q);
            q.push(" WHERE column_name = ")
                .bind(Bind::Text(column.to_owned()))
                .push(" ORDER BY partition_name, target");
            let rows: Vec<CheckpointRow> = q.load(conn)?;
            rows.into_iter().map(checkpoint_of).collect()
        })
    }

    pub(super) fn delete_checkpoint(&self, key: &CheckpointKey) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            self.ensure_checkpoints(conn)?;
            let mut q = Sql::new(conn.dialect());
            q.push("DELETE FROM ")
                .push(&format!("\"{CHECKPOINT_TABLE}\""));
            push_key(&mut q, key);
            q.execute(conn)?;
            Ok(())
        })
    }

    pub(super) fn load_saved_layout(
        &self,
        key: &LayoutKey,
    ) -> Result<Option<Vec<RowId>>, StoreError> {
        self.with_conn(|conn| {
            self.ensure_layouts(conn)?;
            load_layout(conn, key)
        })
    }

    pub(super) fn save_first_layout(
        &self,
        key: &LayoutKey,
        bounds: &[RowId],
    ) -> Result<Vec<RowId>, StoreError> {
        let json = serde_json::to_string(bounds)
            .map_err(|e| Error::other(format!("cannot encode a shard layout: {e}")))?;
        self.with_conn(|conn| {
            self.ensure_layouts(conn)?;
            conn.write_transaction(|conn| {
                // The first layout saved wins; a concurrent saver waits for
                // it (primary key) and then reads it back.
                let mut q = Sql::new(conn.dialect());
                q.push(&format!(
                    "INSERT INTO \"{LAYOUT_TABLE}\" (column_name, id_column, shards, bounds) VALUES ("
                ))
                .bind(Bind::Text(key.column.clone()))
                .push(", ")
                .bind(Bind::Text(key.id_column.clone()))
                .push(", ")
                .bind(Bind::Int(i64::from(key.shards)))
                .push(", ")
                .bind(Bind::Text(json))
                .push(") ON CONFLICT (column_name, id_column, shards) DO NOTHING");
                q.execute(conn)?;
                load_layout(conn, key)?.ok_or_else(|| {
                    Error::other(format!(
                        "the shard layout of {} vanished while it was saved",
                        key.column
                    ))
                })
            })
        })
    }
}

fn load_layout(conn: &mut AnyConn<'_>, key: &LayoutKey) -> Result<Option<Vec<RowId>>, Error> {
    let mut q = Sql::new(conn.dialect());
    q.push(&format!(
        "SELECT bounds FROM \"{LAYOUT_TABLE}\" WHERE column_name = "
    ))
    .bind(Bind::Text(key.column.clone()))
    .push(" AND id_column = ")
    .bind(Bind::Text(key.id_column.clone()))
    .push(" AND shards = ")
    .bind(Bind::Int(i64::from(key.shards)));
    let rows: Vec<BoundsRow> = q.load(conn)?;
    rows.into_iter()
        .next()
        .map(|r| {
            serde_json::from_str(&r.bounds)
                .map_err(|e| Error::other(format!("corrupt shard layout for {}: {e}", key.column)))
        })
        .transpose()
}

fn push_checkpoint_select(q: &mut Sql) {
    q.push(
        "SELECT column_name, partition_name, target, last_id, last_id_kind, \
         scanned, migrated, unchanged, conflicts, failed FROM ",
    )
    .push(&format!("\"{CHECKPOINT_TABLE}\""));
}

fn checkpoint_of(r: CheckpointRow) -> Result<Checkpoint, Error> {
    let last_id = match (r.last_id, r.last_id_kind.as_deref()) {
        (Some(id), Some("int")) => Some(RowId::Int(id.parse().map_err(|_| {
            Error::other(format!(
                "corrupt checkpoint for {}: bad integer last id",
                r.column_name
            ))
        })?)),
        (Some(id), _) => Some(RowId::Text(id)),
        (None, _) => None,
    };
    Ok(Checkpoint {
        key: CheckpointKey {
            column: r.column_name,
            partition: r.partition_name,
            run: r.target,
        },
        last_id,
        counts: Counts {
            scanned: count_u64(r.scanned),
            migrated: count_u64(r.migrated),
            unchanged: count_u64(r.unchanged),
            conflicts: count_u64(r.conflicts),
            failed: count_u64(r.failed),
        },
    })
}

fn push_key(q: &mut Sql, key: &CheckpointKey) {
    q.push(" WHERE column_name = ")
        .bind(Bind::Text(key.column.clone()))
        .push(" AND partition_name = ")
        .bind(Bind::Text(key.partition.clone()))
        .push(" AND target = ")
        .bind(Bind::Text(key.run.clone()));
}

pub(super) fn save_checkpoint(conn: &mut AnyConn<'_>, cp: &Checkpoint) -> Result<(), Error> {
    let (last_id, kind) = match &cp.last_id {
        Some(RowId::Int(i)) => (Some(i.to_string()), Some("int".to_owned())),
        Some(RowId::Text(s)) => (Some(s.clone()), Some("text".to_owned())),
        None => (None, None),
    };
    let c = &cp.counts;
    let mut q = Sql::new(conn.dialect());
    q.push(&format!("INSERT INTO \"{CHECKPOINT_TABLE}\" "))
        .push(
            "(column_name, partition_name, target, last_id, last_id_kind, \
             scanned, migrated, unchanged, conflicts, failed, updated_at) VALUES (",
        )
        .bind(Bind::Text(cp.key.column.clone()))
        .push(", ")
        .bind(Bind::Text(cp.key.partition.clone()))
        .push(", ")
        .bind(Bind::Text(cp.key.run.clone()))
        .push(", ")
        .bind(Bind::OptText(last_id))
        .push(", ")
        .bind(Bind::OptText(kind));
    for n in [c.scanned, c.migrated, c.unchanged, c.conflicts, c.failed] {
        q.push(", ").bind(Bind::Int(count_i64(n)));
    }
    q.push(
        ", CURRENT_TIMESTAMP) ON CONFLICT (column_name, partition_name, target) DO UPDATE SET \
         last_id = excluded.last_id, last_id_kind = excluded.last_id_kind, \
         scanned = excluded.scanned, migrated = excluded.migrated, \
         unchanged = excluded.unchanged, conflicts = excluded.conflicts, \
         failed = excluded.failed, updated_at = CURRENT_TIMESTAMP",
    );
    q.execute(conn)?;
    Ok(())
}
