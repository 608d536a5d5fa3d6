//! Test support for users (feature `testing`; enable it only from
//! `[dev-dependencies]`):
//!
//! - [`strategies`]: proptest strategies for rows and the keys behind them;
//! - [`MockProgress`], [`MockMigrationLocks`] and [`MockHeldLock`]: mockall
//!   mocks of the migrator's ports.
//!
//! The in-memory column store, its conformance suite and the store mock live
//! with the port, in `manna_store::testing`.

mod mock;
pub mod strategies;

pub use mock::{MockHeldLock, MockMigrationLocks, MockProgress};
