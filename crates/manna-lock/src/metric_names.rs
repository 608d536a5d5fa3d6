//! Names of the metrics this crate records (through the `metrics` facade;
//! install any recorder to collect them).

/// Counter: optimistic-lock conflicts seen by [`RetryPolicy`](crate::RetryPolicy).
pub const CONFLICTS: &str = "manna_conflicts_total";
/// Counter: retries made after a conflict.
pub const CONFLICT_RETRIES: &str = "manna_conflict_retries_total";
/// Counter: operations that still conflicted when the retry budget ran out.
pub const CONFLICT_RETRIES_EXHAUSTED: &str = "manna_conflict_retries_exhausted_total";
/// Counter: locks acquired.
pub const ACQUISITIONS: &str = "manna_lock_acquisitions_total";
/// Counter: acquisitions (or timeouts) that found the lock held.
pub const CONTENDED: &str = "manna_lock_contended_total";
/// Counter: waits that ended in a timeout.
pub const TIMEOUTS: &str = "manna_lock_timeouts_total";
/// Counter: session acquires refused because their wait would close a
/// wait-for cycle ([`LockError::Deadlock`](crate::LockError::Deadlock)).
pub const DEADLOCKS: &str = "manna_lock_deadlocks_total";
/// Counter: acquisitions that failed because the backend was unavailable.
pub const UNAVAILABLE: &str = "manna_lock_unavailable_total";
/// Histogram (seconds): time from the acquire call to the lease.
pub const WAIT_SECONDS: &str = "manna_lock_wait_seconds";
/// Histogram (seconds): time a lock was held until explicit release.
pub const HELD_SECONDS: &str = "manna_lock_held_seconds";
/// Counter: successful background renewals.
pub const RENEWALS: &str = "manna_lock_renewals_total";
/// Counter: renewals that failed with an error other than "not holder".
pub const RENEWAL_FAILURES: &str = "manna_lock_renewal_failures_total";
/// Counter: leases reported lost to their holder.
pub const LOST: &str = "manna_lock_lost_leases_total";

/// Every metric name this crate records.
pub const ALL: &[&str] = &[
    CONFLICTS,
    CONFLICT_RETRIES,
    CONFLICT_RETRIES_EXHAUSTED,
    ACQUISITIONS,
    CONTENDED,
    TIMEOUTS,
    DEADLOCKS,
    UNAVAILABLE,
    WAIT_SECONDS,
    HELD_SECONDS,
    RENEWALS,
    RENEWAL_FAILURES,
    LOST,
];
