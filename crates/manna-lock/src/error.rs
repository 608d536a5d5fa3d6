//! Errors of the lock port.

use std::time::Duration;

/// What can go wrong taking, keeping or giving back a distributed lock.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock backend cannot be reached or did not answer. `backend`
    /// describes it (for Redis: the URL with any password redacted and the
    /// variable it came from); `reason` is the underlying cause.
    #[error("distributed lock backend unavailable: {backend}: {reason}")]
    Unavailable {
        /// Which backend (never containing credentials).
        backend: String,
        /// What failed.
        reason: String,
    },
    /// The backend answered, but with an error that is not about
    /// reachability (a misconfigured server, a key of the wrong type).
    #[error("distributed lock backend error: {backend}: {reason}")]
    Backend {
        /// Which backend (never containing credentials).
        backend: String,
        /// The backend's error.
        reason: String,
    },
    /// The lock stayed held by someone else for the whole wait.
    #[error("timed out after {waited:?} waiting for lock `{name}`")]
    Timeout {
        /// The lock name.
        name: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The caller's lease is no longer the current one (it expired, or the
    /// lock was taken over).
    #[error("not the holder of lock `{name}`: the lease expired or was taken over")]
    NotHolder {
        /// The lock name.
        name: String,
    },
    /// The request itself is invalid (empty name, zero TTL, no Tokio
    /// runtime).
    #[error("invalid lock request: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

impl LockError {
    /// `true` for [`LockError::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// `true` for [`LockError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// Lock errors are never optimistic-lock conflicts: retrying them from a
/// fresh read does not help.
impl crate::IsConflict for LockError {
    fn is_conflict(&self) -> bool {
        false
    }
}
