//! The conformance suite every [`LockBackend`] must pass.
//!
//! Each check takes a factory that returns a **new client of the same lock
//! service** (for the in-memory backend: clones of one `Arc`; for Redis: a
//! new connection to the same server). Checks use unique lock names, so they
//! can run against a shared server and in parallel. They panic on failure,
//! with a message naming the broken guarantee, and need a Tokio runtime.
//!
//! [`run_all`] includes [`holder_named`], which expects the backend to name
//! the holder of a lock it refuses (every manna backend does); a backend
//! that cannot runs the other checks one by one.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use manna_lock::{LockBackend, MemoryBackend};
//! use std::sync::Arc;
//! let shared: Arc<dyn LockBackend> = Arc::new(MemoryBackend::new());
//! manna_lock::testing::conformance::run_all(&move || Arc::clone(&shared)).await;
//! # }
//! ```
#![allow(clippy::panic, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Attempt, Lease, LockBackend};

mod deadlock;
mod lease;
mod manager;
mod probe;
mod queue;

pub use deadlock::{
    deadlock_among_three_sessions, deadlock_between_two_sessions, deadlock_detection,
    no_deadlock_without_a_cycle, sessions_of_one_manager_are_distinct,
    wait_edges_vanish_when_the_wait_ends,
};
pub use lease::{
    exclusive_and_release, expiry, extend, fencing_monotonic, invalid_requests,
    release_by_non_holder_refused,
};
pub use manager::{
    holder_named, lock_all_in_order, lost_lease_signal, mutual_exclusion_under_contention,
    renewal_keeps_lease, waiter_wakeup,
};
pub use queue::{
    abandoned_grant_is_released, dropped_waiter_does_not_block, queue_hands_over_in_order,
    queued_waiters_served_in_order, wait_queue,
};

/// Returns a new client of the lock service under test.
pub type Factory<'a> = &'a (dyn Fn() -> Arc<dyn LockBackend> + Send + Sync);

/// A lock name no other run uses.
pub fn unique_name(check: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "conformance:{check}:{}:{nanos}:{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

async fn acquired(backend: &dyn LockBackend, name: &str, ttl: Duration) -> Lease {
    match backend.try_acquire(name, ttl).await {
        Ok(Attempt::Acquired(lease)) => lease,
        Ok(other) => panic!("expected to acquire free lock `{name}`, got {other:?}"),
        Err(e) => panic!("try_acquire(`{name}`) failed: {e}"),
    }
}

/// How long a check waits for something that takes milliseconds (a spawned
/// waiter queuing, a clean-up running) before it calls it broken: generous,
/// so that a loaded machine cannot fail a check by being slow.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs every check.
pub async fn run_all(make: Factory<'_>) {
    // The checks that mostly sleep (for a TTL to pass) run alongside the
    // others.
    let sleepers = async {
        expiry(make).await;
        extend(make).await;
        renewal_keeps_lease(make).await;
    };
    let others = async {
        exclusive_and_release(make).await;
        release_by_non_holder_refused(make).await;
        fencing_monotonic(make).await;
        invalid_requests(make).await;
        waiter_wakeup(make).await;
        mutual_exclusion_under_contention(make).await;
        lost_lease_signal(make).await;
        holder_named(make).await;
        lock_all_in_order(make).await;
        deadlock_detection(make).await;
        wait_queue(make).await;
    };
    tokio::join!(sleepers, others);
}
