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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Attempt, FencingToken, Lease, LockBackend, LockError, LockGuard, LockManager};

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

/// Runs every check.
pub async fn run_all(make: Factory<'_>) {
    exclusive_and_release(make).await;
    release_by_non_holder_refused(make).await;
    fencing_monotonic(make).await;
    expiry(make).await;
    extend(make).await;
    invalid_requests(make).await;
    waiter_wakeup(make).await;
    mutual_exclusion_under_contention(make).await;
    renewal_keeps_lease(make).await;
    lost_lease_signal(make).await;
    holder_named(make).await;
    lock_all_in_order(make).await;
}

/// One holder at a time; release frees the lock for another client, and a
/// second release is a no-op.
pub async fn exclusive_and_release(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("exclusive");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    match b.try_acquire(&name, ttl).await {
        Ok(Attempt::Held { expires_in, .. }) => {
            if let Some(left) = expires_in {
                assert!(left <= ttl, "expires_in {left:?} exceeds the TTL {ttl:?}");
            }
        }
        other => panic!("mutual exclusion broken: second client got {other:?}"),
    }
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "holder lost a fresh lease"
    );
    assert!(
        a.release(&lease).await.expect("release"),
        "release by the holder must report true"
    );
    assert!(
        !a.is_held(&lease).await.expect("is_held"),
        "lease still held after release"
    );
    assert!(
        !a.release(&lease).await.expect("second release"),
        "a second release must report false"
    );
    let next = acquired(b.as_ref(), &name, ttl).await;
    assert!(next.token() > lease.token(), "token did not increase");
    assert!(b.release(&next).await.expect("release"));
}

/// Release and extend with a lease that is not the current one are refused
/// and leave the holder's lease intact.
pub async fn release_by_non_holder_refused(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("non-holder");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let forged = Lease::new(&name, "someone-else", lease.token(), ttl);
    assert!(
        !b.release(&forged).await.expect("release"),
        "release by a non-holder must report false"
    );
    match b.extend(&forged, ttl).await {
        Err(LockError::NotHolder { name: n }) => assert_eq!(n, name),
        other => panic!("extend by a non-holder must fail with NotHolder, got {other:?}"),
    }
    assert!(
        !b.is_held(&forged).await.expect("is_held"),
        "forged lease reported held"
    );
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "non-holder release removed the holder's lease"
    );
    assert!(matches!(
        b.try_acquire(&name, ttl).await,
        Ok(Attempt::Held { .. })
    ));
    assert!(a.release(&lease).await.expect("release"));
}

/// Tokens strictly increase per name across clients; names are independent.
pub async fn fencing_monotonic(make: Factory<'_>) {
    let clients = [make(), make(), make()];
    let name = unique_name("fencing");
    let other = unique_name("fencing-other");
    let ttl = Duration::from_secs(10);
    let mut last: Option<FencingToken> = None;
    for i in 0..30 {
        let c = &clients[i % clients.len()];
        let lease = acquired(c.as_ref(), &name, ttl).await;
        if let Some(prev) = last {
            assert!(
                lease.token() > prev,
                "fencing token went from {prev} to {}",
                lease.token()
            );
        }
        last = Some(lease.token());
        // Another name's activity must not matter.
        let o = acquired(c.as_ref(), &other, ttl).await;
        assert!(c.release(&o).await.expect("release"));
        assert!(c.release(&lease).await.expect("release"));
    }
}

/// A lease that is not extended expires: the lock can be taken again with a
/// higher token, and the old lease can neither extend nor release.
pub async fn expiry(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("expiry");
    let old = acquired(a.as_ref(), &name, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a.is_held(&old).await.expect("is_held"),
        "lease still held after its TTL"
    );
    assert!(
        matches!(
            a.extend(&old, Duration::from_secs(5)).await,
            Err(LockError::NotHolder { .. })
        ),
        "an expired lease must not be extendable"
    );
    let new = acquired(b.as_ref(), &name, Duration::from_secs(10)).await;
    assert!(
        new.token() > old.token(),
        "token after expiry did not increase"
    );
    assert!(
        !a.release(&old).await.expect("release"),
        "release of an expired lease must report false"
    );
    assert!(
        b.is_held(&new).await.expect("is_held"),
        "a stale release removed the new holder's lease"
    );
    assert!(b.release(&new).await.expect("release"));
}

/// Extending a lease keeps it past its original TTL.
pub async fn extend(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("extend");
    let lease = acquired(a.as_ref(), &name, Duration::from_millis(1000)).await;
    a.extend(&lease, Duration::from_secs(10))
        .await
        .expect("holder extends");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "extended lease expired at its original TTL"
    );
    assert!(matches!(
        b.try_acquire(&name, Duration::from_secs(1)).await,
        Ok(Attempt::Held { .. })
    ));
    assert!(a.release(&lease).await.expect("release"));
}

/// Empty names, sub-millisecond TTLs and TTLs over [`MAX_TTL`](crate::MAX_TTL)
/// are rejected as invalid.
pub async fn invalid_requests(make: Factory<'_>) {
    let a = make();
    assert!(matches!(
        a.try_acquire("", Duration::from_secs(1)).await,
        Err(LockError::Invalid { .. })
    ));
    assert!(matches!(
        a.try_acquire(&unique_name("invalid"), Duration::ZERO).await,
        Err(LockError::Invalid { .. })
    ));
    for ttl in [crate::MAX_TTL + Duration::from_millis(1), Duration::MAX] {
        assert!(
            matches!(
                a.try_acquire(&unique_name("invalid"), ttl).await,
                Err(LockError::Invalid { .. })
            ),
            "a TTL of {ttl:?} (over MAX_TTL) must be an invalid request"
        );
    }
}

/// A waiter blocked in [`LockManager::acquire`] gets the lock after the holder
/// releases it, long before the holder's TTL would have expired.
pub async fn waiter_wakeup(make: Factory<'_>) {
    let holder = LockManager::new(make());
    let waiter = LockManager::new(make());
    let name = unique_name("wakeup");
    let ttl = Duration::from_secs(30);
    let g = holder
        .acquire(&name, ttl, Duration::from_secs(1))
        .await
        .expect("holder acquires");
    let first = g.token();
    let n = name.clone();
    let task = tokio::spawn(async move { waiter.acquire(&n, ttl, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "waiter got a lock that is held");
    assert!(g.release().await.expect("release"), "holder still held it");
    let got = task
        .await
        .expect("waiter task")
        .expect("waiter acquires after the release (TTL is 30 s, wait 10 s)");
    assert!(got.token() > first);
    assert!(got.release().await.expect("release"));
}

/// Several managers on separate clients increment a plain shared counter
/// under the lock; every write checks the fencing token; nothing is lost.
pub async fn mutual_exclusion_under_contention(make: Factory<'_>) {
    const WORKERS: usize = 4;
    const EACH: u64 = 15;
    let name = unique_name("contention");
    let state = Arc::new(Mutex::new((0u64, FencingToken::new(0))));
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let manager = LockManager::new(make());
        let (name, state, inside) = (name.clone(), Arc::clone(&state), Arc::clone(&inside));
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let g = manager
                    .acquire(&name, Duration::from_secs(10), Duration::from_secs(30))
                    .await
                    .expect("acquire under contention");
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two holders inside the critical section"
                );
                let read = state.lock().expect("state").0;
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                {
                    let mut s = state.lock().expect("state");
                    assert!(g.token() > s.1, "stale token {} after {}", g.token(), s.1);
                    *s = (read + 1, g.token());
                }
                inside.store(false, Ordering::SeqCst);
                assert!(g.release().await.expect("release"), "lease lost mid-work");
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    assert_eq!(
        state.lock().expect("state").0,
        WORKERS as u64 * EACH,
        "increments lost"
    );
}

/// Background renewal keeps a lease alive well past its TTL.
pub async fn renewal_keeps_lease(make: Factory<'_>) {
    let manager = LockManager::new(make());
    let other = make();
    let name = unique_name("renewal");
    let g = manager
        .acquire(&name, Duration::from_millis(900), Duration::from_secs(1))
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!g.is_lost(), "renewed lease reported lost");
    assert!(
        matches!(
            other.try_acquire(&name, Duration::from_secs(1)).await,
            Ok(Attempt::Held { .. })
        ),
        "renewed lease expired"
    );
    assert!(
        g.release().await.expect("release"),
        "renewed lease not held at release"
    );
}

/// When the lease is taken away, the guard reports it lost, the new holder
/// has a higher token, and the old guard's release reports `false`.
pub async fn lost_lease_signal(make: Factory<'_>) {
    let manager = LockManager::new(make());
    let thief = make();
    let name = unique_name("lost");
    let g = manager
        .acquire(&name, Duration::from_millis(900), Duration::from_secs(1))
        .await
        .expect("acquire");
    // Simulate the lease expiring behind the holder's back.
    assert!(thief.release(g.lease()).await.expect("release"));
    let new = acquired(thief.as_ref(), &name, Duration::from_secs(10)).await;
    tokio::time::timeout(Duration::from_secs(5), g.lost())
        .await
        .expect("the guard must report the lost lease within one renewal period");
    assert!(g.is_lost());
    assert!(new.token() > g.token());
    assert!(
        !g.release().await.expect("release"),
        "release of a lost lease must report false"
    );
    assert!(
        thief.is_held(&new).await.expect("is_held"),
        "old guard's release removed the new lease"
    );
    assert!(thief.release(&new).await.expect("release"));
}

/// A refused attempt names the holder, and so does the [`LockError::Timeout`]
/// of a waiter that gave up: a short, single-line description that mentions
/// the holder's process (all clients here run in this process, so it is
/// this process's id, as in [`holder_description`](crate::holder_description)).
pub async fn holder_named(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("holder");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let pid = format!("pid {}", std::process::id());
    let held = match b.try_acquire(&name, ttl).await {
        Ok(Attempt::Held { holder, .. }) => holder.expect("a refused attempt must name the holder"),
        other => panic!("mutual exclusion broken: second client got {other:?}"),
    };
    assert!(
        !held.trim().is_empty() && !held.contains('\n') && held.len() <= 512,
        "the holder description must be one short line, got {held:?}"
    );
    assert!(
        held.contains(&pid),
        "holder {held:?} does not name process {pid}"
    );
    match LockManager::new(b)
        .acquire(&name, ttl, Duration::from_millis(50))
        .await
    {
        Err(e @ LockError::Timeout { .. }) => {
            assert_eq!(
                e.holder(),
                Some(held.as_str()),
                "Timeout must name the holder"
            );
            assert!(
                e.to_string().contains(&held),
                "the Timeout message must show the holder: {e}"
            );
        }
        other => panic!("expected a Timeout naming the holder, got {other:?}"),
    }
    assert!(a.release(&lease).await.expect("release"));
}

/// [`LockManager::lock_all`]: all or nothing in one canonical order. Takes
/// a set given in any order with duplicates, refuses (and releases what it
/// took) when one lock of the set is held, and two callers asking for the
/// same locks in opposite orders never deadlock.
pub async fn lock_all_in_order(make: Factory<'_>) {
    let (first, second) = (LockManager::new(make()), LockManager::new(make()));
    let base = unique_name("lock_all");
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|s| format!("{base}:{s}"));
    let ttl = Duration::from_secs(10);
    let held = first
        .lock_all(&[&c, &a, &b, &a], ttl, Duration::from_secs(5))
        .await
        .expect("lock_all on free locks");
    let names: Vec<&str> = held.iter().map(LockGuard::name).collect();
    assert_eq!(names, [&a, &b, &c], "canonical order, duplicates dropped");

    // A free lock sorting before a held one: taken, then given back.
    let free_first = format!("{base}:0");
    let err = second
        .lock_all(&[&c, &free_first], ttl, Duration::from_millis(200))
        .await
        .expect_err("one lock of the set is held");
    assert!(err.is_timeout(), "expected Timeout, got {err:?}");
    let again = second
        .try_acquire(&free_first, ttl)
        .await
        .expect("try_acquire")
        .expect("lock_all must release what it took before failing");
    assert!(again.release().await.expect("release"));

    for g in held {
        assert!(g.release().await.expect("release"), "still held");
    }

    // Opposite orders, many rounds: canonical ordering means no deadlock.
    let rounds = 10;
    let run = |m: LockManager, set: [String; 2]| async move {
        for _ in 0..rounds {
            let gs = m
                .lock_all(&set, Duration::from_secs(10), Duration::from_secs(20))
                .await
                .expect("lock_all in contention");
            for g in gs {
                g.release().await.expect("release");
            }
        }
    };
    let one = tokio::spawn(run(first, [c.clone(), d.clone()]));
    let two = tokio::spawn(run(second, [d.clone(), c.clone()]));
    tokio::time::timeout(Duration::from_secs(60), async {
        one.await.expect("task");
        two.await.expect("task");
    })
    .await
    .expect("lock_all in opposite orders must not deadlock");
}
