//! Test support for adapters and users (feature `testing`; enable it only
//! from `[dev-dependencies]`):
//!
//! - [`MemoryStore`]: an in-memory [`ColumnStore`](crate::ColumnStore) with
//!   a hook to simulate application writes between a migrator's scan and its
//!   write, and failure injection;
//! - [`conformance`]: the suite every `ColumnStore` adapter runs;
//! - [`MockColumnStore`]: a mockall mock of the port.

pub mod conformance;
mod memory;
mod mock;

pub use conformance::MemoryHarness;
pub use memory::{Failure, MemoryStore, Op, ScanHook, Stats, WriteHook};
pub use mock::MockColumnStore;
