#![doc = include_str!("../README.md")]

mod ident;
mod store;

pub use ident::{Ident, IdentError, MAX_IDENT_LEN};
pub use store::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Counts, IdKind, IdRange,
    Rewrite, Row, RowId, Shard, StoreError, StoreErrorKind, WriteOptions,
};
