//! Session identities for deadlock detection.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest wait-for chain a backend follows looking for a cycle: 64
/// steps. A longer chain is treated as no cycle (the waiter then waits, as
/// without detection).
pub const MAX_WAIT_CHAIN: usize = 64;

/// Separates the random part of an owner value from the session id
/// (`<random>@<session>`).
pub const SESSION_SEPARATOR: char = '@';

/// Who waits, for deadlock detection: the identity of one
/// [`LockSession`](crate::LockSession), 32 random hex digits.
///
/// Not a secret and not a credential: it only tells leases and waits of one
/// session apart from another's. Backends store it inside the owner value of
/// each lease the session holds ([`owner_value`]) and with each wait-for
/// edge.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new, random session id (unique in practice: 128 bits from the
    /// process's randomly keyed hasher over a counter, the time and the pid).
    pub fn random() -> Self {
        Self(random_hex128())
    }

    /// The id as text (hex digits only).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The owner value of a lease: `random`, then `@` and the session id when
/// the lease is taken in a session. `random` must not contain `@` or `;`.
pub fn owner_value(random: &str, session: Option<&SessionId>) -> String {
    match session {
        Some(s) => format!("{random}{SESSION_SEPARATOR}{s}"),
        None => random.to_owned(),
    }
}

/// The session id in an owner value built by [`owner_value`] (anything after
/// a `;` is ignored: the Redis backend appends the holder description there);
/// `None` for a lease taken outside a session.
pub fn session_of_owner(owner: &str) -> Option<&str> {
    let owner = owner.split_once(';').map_or(owner, |(o, _)| o);
    owner
        .split_once(SESSION_SEPARATOR)
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

/// 32 hex digits, unique in practice: 128 bits from the process's randomly
/// keyed hasher over a counter, the time and the pid (for session ids and
/// wait tickets).
pub(crate) fn random_hex128() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(seq);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let (a, b) = (SessionId::random(), SessionId::random());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn owner_values_carry_the_session() {
        let s = SessionId::random();
        let owner = owner_value("ab12", Some(&s));
        assert_eq!(session_of_owner(&owner), Some(s.as_str()));
        assert_eq!(
            session_of_owner(&format!("{owner};host h pid 1 since x@y")),
            Some(s.as_str())
        );
        assert_eq!(owner_value("ab12", None), "ab12");
        assert_eq!(session_of_owner("ab12"), None);
        assert_eq!(session_of_owner("ab12;host x@y"), None);
    }
}
