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
