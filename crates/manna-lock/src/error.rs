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
    /// The lock stayed held by someone else for the whole wait. The message
    /// names the holder when the backend knows it: ``timed out after 5s
    /// waiting for lock `x`: held by host db-7 pid 4242 since
    /// 2026-11-29T20:31:05Z``.
    #[error("timed out after {waited:?} waiting for lock `{name}`{}", held_by(.holder.as_deref()))]
    Timeout {
        /// The lock name.
        name: String,
        /// How long the caller waited.
        waited: Duration,
        /// The holder at the last attempt, as the backend described it
        /// ([`Attempt::Held`](crate::Attempt::Held)); `None` when unknown.
        holder: Option<String>,
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

fn held_by(holder: Option<&str>) -> String {
    holder.map_or_else(String::new, |h| format!(": held by {h}"))
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

    /// Who held the lock, for a [`LockError::Timeout`] whose backend named
    /// the holder.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::Timeout { holder, .. } => holder.as_deref(),
            _ => None,
        }
    }
}

/// Lock errors are never optimistic-lock conflicts: retrying them from a
/// fresh read does not help.
impl crate::IsConflict for LockError {
    fn is_conflict(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_names_the_holder_when_known() {
        let mut e = LockError::Timeout {
            name: "migrate:t.c".into(),
            waited: Duration::from_secs(5),
            holder: Some("host db-7 pid 4242 since 2026-11-29T20:31:05Z".into()),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 5s waiting for lock `migrate:t.c`: held by host db-7 pid 4242 since 2026-11-29T20:31:05Z"
        );
        assert_eq!(
            e.holder(),
            Some("host db-7 pid 4242 since 2026-11-29T20:31:05Z")
        );
        if let LockError::Timeout { holder, .. } = &mut e {
            *holder = None;
        }
        assert_eq!(
            e.to_string(),
            "timed out after 5s waiting for lock `migrate:t.c`"
        );
        assert_eq!(e.holder(), None);
    }
}
