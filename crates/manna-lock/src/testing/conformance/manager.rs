//! Through the [`LockManager`](crate::LockManager): waiting, renewal, lost
//! leases, the holder's name and `lock_all`.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::{acquired, unique_name, Factory, PATIENCE};
use crate::{Attempt, FencingToken, LockError, LockGuard, LockManager};

/// A waiter blocked in [`LockManager::acquire`] gets the lock after the holder
/// releases it, long before the holder's TTL would have expired.
pub async fn waiter_wakeup(make: Factory<'_>) {
    let holder = LockManager::new(make());
    let waiter = LockManager::new(make());
    let name = unique_name("wakeup");
    let ttl = Duration::from_secs(30);
    let g = holder
        .acquire(&name, ttl, PATIENCE)
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
    // Renewed every second; long enough that a renewal delayed by a slow
    // machine still comes in time.
    let ttl = Duration::from_secs(3);
    let g = manager
        .acquire(&name, ttl, PATIENCE)
        .await
        .expect("acquire");
    tokio::time::sleep(ttl * 2 + Duration::from_millis(500)).await;
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
    // Renewed every second.
    let g = manager
        .acquire(&name, Duration::from_secs(3), PATIENCE)
        .await
        .expect("acquire");
    // Simulate the lease expiring behind the holder's back.
    assert!(thief.release(g.lease()).await.expect("release"));
    let new = acquired(thief.as_ref(), &name, Duration::from_secs(30)).await;
    tokio::time::timeout(PATIENCE, g.lost())
        .await
        .expect("the guard must report the lost lease at its next renewal (within a second)");
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
    // A wait long enough for a first attempt to come back "held" on a slow
    // machine (a wait that ends before any answer is `Unavailable`), far
    // shorter than the holder's TTL.
    match LockManager::new(b)
        .acquire(&name, ttl, Duration::from_secs(2))
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
        .lock_all(&[&c, &a, &b, &a], ttl, PATIENCE)
        .await
        .expect("lock_all on free locks");
    let names: Vec<&str> = held.iter().map(LockGuard::name).collect();
    assert_eq!(names, [&a, &b, &c], "canonical order, duplicates dropped");

    // A free lock sorting before a held one: taken, then given back.
    let free_first = format!("{base}:0");
    // Long enough for an attempt on the held lock to come back "held" on a
    // slow machine (else the wait ends `Unavailable`), far below the TTL.
    let err = second
        .lock_all(&[&c, &free_first], ttl, Duration::from_secs(2))
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
