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
    /// Waiting for the lock would close a cycle of sessions waiting for each
    /// other ([`LockSession`](crate::LockSession)): the caller's session
    /// would wait for `cycle[0]`, whose holder's session waits for
    /// `cycle[1]`, … and the holder of the last one is the caller's own
    /// session. Returned at once instead of waiting out the timeout; release
    /// a lock of the cycle (usually everything this session holds) and try
    /// again. Only lock names, never owner values or secrets.
    #[error("deadlock: waiting for lock `{}` would close the wait-for cycle {}", .cycle.first().map_or("", String::as_str), show_cycle(.cycle))]
    Deadlock {
        /// The lock names of the cycle, in wait-for order, starting with the
        /// one the caller asked for.
        cycle: Vec<String>,
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

/// `` `x` -> `y` -> `x` ``: the cycle, closed on its first lock.
fn show_cycle(cycle: &[String]) -> String {
    let mut out = String::new();
    for name in cycle.iter().chain(cycle.first()) {
        if !out.is_empty() {
            out.push_str(" -> ");
        }
        out.push('`');
        out.push_str(name);
        out.push('`');
    }
    out
}

impl LockError {
    /// `true` for [`LockError::Deadlock`].
    pub fn is_deadlock(&self) -> bool {
        matches!(self, Self::Deadlock { .. })
    }

    /// The lock names of a [`LockError::Deadlock`]'s cycle (empty for any
    /// other error).
    pub fn cycle(&self) -> &[String] {
        match self {
            Self::Deadlock { cycle } => cycle,
            _ => &[],
        }
    }

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
    fn deadlock_names_the_cycle() {
        let e = LockError::Deadlock {
            cycle: vec!["x".into(), "y".into()],
        };
        assert_eq!(
            e.to_string(),
            "deadlock: waiting for lock `x` would close the wait-for cycle `x` -> `y` -> `x`"
        );
        assert!(e.is_deadlock() && !e.is_timeout());
        assert_eq!(e.cycle(), ["x", "y"]);
    }

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
