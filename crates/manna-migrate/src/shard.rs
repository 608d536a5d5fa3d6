//! Shards: disjoint parts of a column's keys, one per machine.

use std::fmt;
use std::str::FromStr;

/// One of `count` disjoint parts of a column's keys, written `i/n`
/// (0-based index, `i < n`).
///
/// ```
/// use manna_migrate::Shard;
/// let s: Shard = "1/4".parse().unwrap();
/// assert_eq!((s.index, s.count), (1, 4));
/// assert_eq!(s.to_string(), "1/4");
/// assert!("4/4".parse::<Shard>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// The single shard covering everything.
    pub const ALL: Shard = Shard { index: 0, count: 1 };
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a string is not a shard `i/n`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard {given:?}: expected i/n with 0 <= i < n")]
pub struct ParseShardError {
    /// What was given (shard specifications are not secret).
    pub given: String,
}

impl FromStr for Shard {
    type Err = ParseShardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseShardError {
            given: s.chars().take(64).collect(),
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}
