//! Fencing tokens.

use std::fmt;

/// A number handed out with every lease that strictly increases per lock
/// name, across all holders and processes.
///
/// A lease is not a mutex: a holder can be paused (GC, swap, `SIGSTOP`, a VM
/// migration) past its TTL while another process takes the lock. Stores
/// protect themselves by remembering the highest token they have seen for a
/// resource and refusing writes that carry a lower one.
///
/// ```
/// use manna_lock::FencingToken;
/// let old = FencingToken::new(7);
/// let new = FencingToken::new(8);
/// assert!(new > old);
/// assert_eq!(new.get(), 8);
/// assert_eq!(new.to_string(), "8");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token value (as stored by a backend or read back from a
    /// database column).
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The token after `last` by the rule every backend follows:
    /// `max(last + 1, the Unix clock in µs)`, so tokens keep increasing even
    /// when a counter starts again from zero (a restart, a deleted row).
    ///
    /// ```
    /// use manna_lock::FencingToken;
    /// assert!(FencingToken::next_after(0).get() > 1_700_000_000_000_000);
    /// assert_eq!(FencingToken::next_after(u64::MAX - 1).get(), u64::MAX);
    /// ```
    pub fn next_after(last: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self(last.saturating_add(1).max(now))
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FencingToken> for u64 {
    fn from(token: FencingToken) -> Self {
        token.0
    }
}

impl From<u64> for FencingToken {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

/// What a fenced write carries: the lease's [`FencingToken`] and a short id
/// of the lease that holds it ([`Lease::fencing`](crate::Lease::fencing)).
///
/// A fence records both. It accepts a higher token, and the token it last
/// recorded when the same holder writes again; it refuses a lower token, and
/// an *equal* token from another holder. Two leases can be given one token
/// only when a backend's counter went back (Redis restarted from an older
/// snapshot within a burst faster than its clock, see docs/locking.md); the
/// holder id keeps the fence from taking the second lease for the first.
///
/// The holder id is 16 hex digits derived from the lease's owner value (a
/// 64-bit FNV-1a digest of it: not cryptographic, but the owner values are
/// random and far longer, so the fence table never holds, nor lets anyone
/// read back, the value that releases the lock). A process that writes for a lease another process holds (the
/// command `manna lock` runs, say) needs both parts.
///
/// ```
/// use manna_lock::{Fencing, FencingToken, Lease};
/// use std::time::Duration;
/// let lease = Lease::new("jobs", "owner-a", FencingToken::new(7), Duration::from_secs(30));
/// let fencing = lease.fencing();
/// assert_eq!(fencing.token(), FencingToken::new(7));
/// assert_eq!(fencing.holder().len(), 16);
/// let other = Lease::new("jobs", "owner-b", FencingToken::new(7), Duration::from_secs(30));
/// assert_ne!(other.fencing(), fencing, "one token, two holders: told apart");
/// assert_eq!(Fencing::new(FencingToken::new(7), fencing.holder()), fencing);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fencing {
    token: FencingToken,
    holder: String,
}

impl Fencing {
    /// A token and the holder id it was granted to (as read from
    /// [`Fencing::holder`] of the lease, e.g. passed to another process).
    pub fn new(token: FencingToken, holder: impl Into<String>) -> Self {
        Self {
            token,
            holder: holder.into(),
        }
    }

    /// The fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The holder id: 16 lowercase hex digits for a lease's own.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The fence rule: whether a write carrying `self` may pass a fence that
    /// has recorded `recorded` — a higher token, or the same token from the
    /// same holder. (The database fences state the same rule in SQL.)
    ///
    /// ```
    /// use manna_lock::{Fencing, FencingToken};
    /// let f = |t, h: &str| Fencing::new(FencingToken::new(t), h);
    /// assert!(f(8, "b").may_follow(&f(7, "a")));
    /// assert!(f(7, "a").may_follow(&f(7, "a")));
    /// assert!(!f(7, "b").may_follow(&f(7, "a")));
    /// assert!(!f(6, "a").may_follow(&f(7, "a")));
    /// ```
    pub fn may_follow(&self, recorded: &Fencing) -> bool {
        self.token > recorded.token
            || (self.token == recorded.token && self.holder == recorded.holder)
    }

    /// `token` held by the lease whose owner value is `owner` (what
    /// [`Lease::fencing`](crate::Lease::fencing) returns; for lock
    /// implementations outside the [`LockBackend`](crate::LockBackend) port).
    pub fn of_owner(token: FencingToken, owner: &str) -> Self {
        Self::new(token, Self::holder_of(owner))
    }

    /// The holder id of a lease whose owner value is `owner`: FNV-1a (64
    /// bits) of its bytes, in hex. Not a secret and not a MAC: it only tells
    /// two leases apart (owner values are random).
    fn holder_of(owner: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in owner.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::Fencing;

    #[test]
    fn holder_ids_are_fnv1a_in_hex() {
        // FNV-1a 64 of "" and "a", the published check values.
        assert_eq!(Fencing::holder_of(""), "cbf29ce484222325");
        assert_eq!(Fencing::holder_of("a"), "af63dc4c8601ec8c");
    }
}
