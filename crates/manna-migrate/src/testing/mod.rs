//! Test support for users and adapters (feature `testing`; enable it only
//! from `[dev-dependencies]`):
//!
//! - [`MemoryStore`]: an in-memory [`ColumnStore`](crate::ColumnStore) with
//!   a hook to simulate application writes between a migrator's scan and its
//!   write, and failure injection;
//! - [`conformance`]: the suite every `ColumnStore` adapter runs;
//! - [`strategies`]: proptest strategies for rows and the keys behind them;
//! - [`MockColumnStore`], [`MockProgress`], [`MockMigrationLocks`] and
//!   [`MockHeldLock`]: mockall mocks of the ports.

pub mod conformance;
mod memory;
mod mock;
pub mod strategies;

pub use conformance::MemoryHarness;
pub use memory::{Failure, MemoryStore, Op, Stats, WriteHook};
pub use mock::{MockColumnStore, MockHeldLock, MockMigrationLocks, MockProgress};
