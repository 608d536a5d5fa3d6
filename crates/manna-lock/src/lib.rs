#![doc = include_str!("../README.md")]

#[cfg(feature = "async")]
mod backend;
mod conflict;
mod error;
mod holder;
#[cfg(feature = "async")]
mod manager;
#[cfg(feature = "async")]
mod memory;
pub mod metric_names;
pub mod redact;
mod retry;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod token;

#[cfg(feature = "async")]
pub use backend::{
    validate_request, Attempt, Lease, LockBackend, ReleaseNotifier, ReleaseWatch, WaitTicket, Wake,
    MAX_TTL,
};
pub use conflict::{ConflictError, ConflictKind, IsConflict};
pub use error::LockError;
pub use holder::{describe_holder, holder_description, hostname};
#[cfg(feature = "async")]
pub use manager::{
    resource_name, LockGuard, LockManager, LockSession, DEFAULT_TTL, MAX_WAIT_EDGE_TTL,
};
#[cfg(feature = "async")]
pub use memory::MemoryBackend;
pub use retry::RetryPolicy;
pub use session::{owner_value, session_of_owner, SessionId, MAX_WAIT_CHAIN, SESSION_SEPARATOR};
pub use token::{Fencing, FencingToken};

/// Re-exported so backends can implement [`LockBackend`] with the same macro
/// version.
#[cfg(feature = "async")]
pub use async_trait::async_trait;

/// The `tracing` target of audit events (a lease lost while held), the one
/// every manna crate uses (`manna_crypto::audit::TARGET`; a test in
/// manna-migrate checks they agree), so one filter routes them all.
pub const AUDIT_TARGET: &str = "manna::audit";
