//! Test support (feature `testing`): a mockall mock of the port, the
//! in-memory fake, the conformance suite every backend must pass, and
//! proptest strategies.
//!
//! Enable it from `[dev-dependencies]` only:
//! `manna-lock = { version = "…", features = ["testing"] }`.

pub mod conformance;
mod mock;
pub mod strategies;

pub use crate::MemoryBackend as FakeLockBackend;
pub use mock::MockLockBackend;
