//! mockall mocks of the ports.
#![allow(missing_docs)]

use manna_lock::{FencingToken, LockError};

use crate::lock::{HeldLock, MigrationLocks};
use crate::progress::{BatchProgress, Progress};
use crate::report::ColumnReport;
use crate::store::{
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

mockall::mock! {
    /// A mockall mock of [`Progress`].
    pub Progress {}

    impl Progress for Progress {
        fn on_start(&self, column: &ColumnRef, total: u64, done: u64);
        fn on_batch(&self, column: &ColumnRef, progress: &BatchProgress);
        fn on_finish(&self, column: &ColumnRef, report: &ColumnReport);
    }
}

mockall::mock! {
    /// A mockall mock of [`MigrationLocks`].
    pub MigrationLocks {}

    impl MigrationLocks for MigrationLocks {
        fn acquire(&self, name: &str) -> Result<Box<dyn HeldLock>, LockError>;
        fn describe(&self) -> String;
    }
}

mockall::mock! {
    /// A mockall mock of [`HeldLock`].
    pub HeldLock {}

    impl HeldLock for HeldLock {
        fn name(&self) -> &str;
        fn token(&self) -> FencingToken;
        fn is_lost(&self) -> bool;
        fn release(self: Box<Self>) -> Result<bool, LockError>;
    }
}
