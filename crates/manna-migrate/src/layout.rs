//! Shard layouts: the boundaries that split a column's keys between
//! machines (`--shard i/n`).

use crate::engine::Migrator;
use crate::error::MigrateError;
use manna_store::{ColumnRef, IdRange, LayoutKey, RowId};

impl Migrator {
    /// This shard's key range (`None`: the layout has fewer ranges than
    /// shards and this one is empty).
    ///
    /// With more than one shard the boundaries are chosen once from
    /// [`ColumnStore::split`](crate::ColumnStore::split) and saved
    /// insert-if-absent, so every machine uses the ones saved first whatever
    /// rows were added since: any set of boundaries partitions the whole key
    /// space, so no row falls between shards.
    pub(crate) fn shard_range(&self, column: &ColumnRef) -> Result<Option<IdRange>, MigrateError> {
        let shard = self.current_options().shard;
        if shard.count <= 1 {
            return Ok(Some(IdRange::all()));
        }
        let st = |e| MigrateError::store(column, e);
        let key = LayoutKey {
            column: column.to_string(),
            id_column: column.id_column.to_string(),
            shards: shard.count,
        };
        let bounds = match self.store().load_layout(&key).map_err(st)? {
            Some(b) => b,
            None => {
                let computed = self.compute_layout(column, shard.count)?;
                if self.current_options().mode.writes() {
                    let saved = self.store().save_layout(&key, &computed).map_err(st)?;
                    if saved == computed {
                        tracing::info!(%column, shards = shard.count, boundaries = saved.len(), "saved shard layout");
                    }
                    saved
                } else {
                    // Read-only modes never write: an unsaved layout is
                    // computed for this run only.
                    computed
                }
            }
        };
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(MigrateError::Layout {
                column: column.to_string(),
                shards: shard.count,
                reason: "boundaries are not ascending".to_owned(),
            });
        }
        let i = shard.index as usize;
        if i > bounds.len() {
            return Ok(None);
        }
        Ok(Some(IdRange {
            after: if i == 0 {
                None
            } else {
                Some(bounds[i - 1].clone())
            },
            until: bounds.get(i).cloned(),
        }))
    }

    fn compute_layout(&self, column: &ColumnRef, shards: u32) -> Result<Vec<RowId>, MigrateError> {
        let ranges = self
            .store()
            .split(column, shards)
            .map_err(|e| MigrateError::store(column, e))?;
        let mut bounds: Vec<RowId> = ranges.into_iter().filter_map(|r| r.until).collect();
        bounds.sort();
        bounds.dedup();
        bounds.truncate(shards as usize - 1);
        Ok(bounds)
    }
}
