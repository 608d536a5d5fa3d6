//! Naming a lock's holder, so a refused caller can say who is in the way.

use std::sync::OnceLock;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The longest host name kept in a description (a DNS name's limit).
const MAX_HOST: usize = 253;

/// Describes this process as the holder of a lock taken now:
/// `host db-7 pid 4242 since 2026-11-29T20:31:05Z`.
///
/// Backends store this next to a lease and return it in
/// [`Attempt::Held`](crate::Attempt::Held), so that a refused caller (and
/// [`LockError::Timeout`](crate::LockError::Timeout)) can name who holds the
/// lock. The host is [`hostname`]; the time is UTC, to the second. It names a
/// machine and a process, nothing else (no user, no arguments, no secrets).
///
/// ```
/// let d = manna_lock::holder_description();
/// assert!(d.starts_with("host "));
/// assert!(d.contains(&format!(" pid {} since ", std::process::id())));
/// ```
pub fn holder_description() -> String {
    describe_holder(hostname(), std::process::id(), OffsetDateTime::now_utc())
}

/// The holder description of process `pid` on `host` that took a lock at
/// `since` (see [`holder_description`]).
///
/// ```
/// use time::macros::datetime;
/// assert_eq!(
///     manna_lock::describe_holder("db-7", 4242, datetime!(2026-11-29 20:31:05.25 UTC)),
///     "host db-7 pid 4242 since 2026-11-29T20:31:05Z",
/// );
/// ```
pub fn describe_holder(host: &str, pid: u32, since: OffsetDateTime) -> String {
    let since = since.to_offset(UtcOffset::UTC);
    let since = since.replace_nanosecond(0).unwrap_or(since);
    let since = since
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("unix {}", since.unix_timestamp()));
    format!("host {} pid {pid} since {since}", clean_host(host))
}

/// This machine's name: the `HOSTNAME` environment variable, else the first
/// line of `/etc/hostname`, else `unknown`. Read once per process; characters
/// other than letters, digits, `-`, `.` and `_` become `?`.
pub fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let from_env = std::env::var("HOSTNAME").ok();
        let from_file = || {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned))
        };
        from_env
            .filter(|h| !h.trim().is_empty())
            .or_else(from_file)
            .map(|h| clean_host(&h))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

fn clean_host(host: &str) -> String {
    host.trim()
        .chars()
        .take(MAX_HOST)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_cleaned_and_bounded() {
        assert_eq!(clean_host(" db-7.internal\n"), "db-7.internal");
        assert_eq!(clean_host("a b\u{1b}[31m"), "a?b?[31m".replace('[', "?"));
        assert_eq!(clean_host(&"x".repeat(1000)).len(), MAX_HOST);
    }

    #[test]
    fn this_process_has_a_host() {
        let h = hostname();
        assert!(!h.is_empty());
        assert!(h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._?".contains(c)));
    }

    #[test]
    fn other_offsets_are_shown_in_utc() {
        let t = time::macros::datetime!(2026-11-29 21:31:05 +01:00);
        assert_eq!(
            describe_holder("h", 1, t),
            "host h pid 1 since 2026-11-29T20:31:05Z"
        );
    }
}
