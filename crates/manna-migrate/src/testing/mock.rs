//! mockall mocks of the migrator's ports.
#![allow(missing_docs)]

use manna_lock::{Fencing, LockError};
use manna_store::ColumnRef;

use crate::lock::{HeldLock, MigrationLocks};
use crate::progress::{BatchProgress, Progress};
use crate::report::ColumnReport;

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
        fn fencing(&self) -> Fencing;
        fn is_lost(&self) -> bool;
        fn release(self: Box<Self>) -> Result<bool, LockError>;
    }
}
