//! A mockall mock of the column-store port.
#![allow(missing_docs)]

use crate::port::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Fence, IdRange, LayoutKey,
    PrefixCensus, Rewrite, Row, RowId, StoreError, WriteOptions,
};

mockall::mock! {
    /// A mockall mock of [`ColumnStore`]: set expectations with
    /// `expect_scan()`, `expect_write_batch()`, and so on.
    pub ColumnStore {}

    impl ColumnStore for ColumnStore {
        fn identity(&self) -> Result<String, StoreError>;
        fn census(&self, column: &ColumnRef, range: &IdRange) -> Result<PrefixCensus, StoreError>;
        fn scan_unprefixed(&self, column: &ColumnRef, range: &IdRange, limit: usize, prefix: &str) -> Result<Vec<Row>, StoreError>;
        fn checkpoints(&self, column: &str) -> Result<Vec<Checkpoint>, StoreError>;
        fn load_layout(&self, key: &LayoutKey) -> Result<Option<Vec<RowId>>, StoreError>;
        fn save_layout(&self, key: &LayoutKey, bounds: &[RowId]) -> Result<Vec<RowId>, StoreError>;
        fn check_column(&self, column: &ColumnRef) -> Result<ColumnInfo, StoreError>;
        fn count(&self, column: &ColumnRef, range: &IdRange) -> Result<u64, StoreError>;
        fn split(&self, column: &ColumnRef, parts: u32) -> Result<Vec<IdRange>, StoreError>;
        fn scan(&self, column: &ColumnRef, range: &IdRange, limit: usize) -> Result<Vec<Row>, StoreError>;
        fn read(&self, column: &ColumnRef, ids: &[RowId]) -> Result<Vec<Row>, StoreError>;
        fn write_batch<'a>(
            &self,
            column: &ColumnRef,
            rewrites: &[Rewrite],
            options: WriteOptions,
            checkpoint: Option<&'a Checkpoint>,
            fence: Option<&'a Fence>,
        ) -> Result<Vec<RowId>, StoreError>;
        fn raise_fence(&self, column: &ColumnRef, fence: &Fence) -> Result<(), StoreError>;
        fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, StoreError>;
        fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), StoreError>;
    }
}
