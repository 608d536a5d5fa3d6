#![doc = include_str!("../README.md")]

mod ident;
mod port;
#[cfg(feature = "testing")]
pub mod testing;

pub use ident::{Ident, IdentError, MAX_IDENT_LEN};
pub use port::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Counts, Fence, IdKind, IdRange,
    LayoutKey, PrefixCensus, Rewrite, Row, RowId, StoreError, StoreErrorKind, Value, WriteOptions,
};
