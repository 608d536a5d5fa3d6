//! Waits and TTLs at their limits: no attempt past the wait, no panic on any
//! duration, the local deadline of a lease.

use std::sync::Arc;
use std::time::Duration;

use manna_lock::{
    Attempt, Lease, LockBackend, LockError, LockManager, MemoryBackend, ReleaseNotifier,
    ReleaseWatch, MAX_TTL,
};
use proptest::prelude::*;
use tokio::time::Instant;

/// Says "held" until `stall_from`, then never answers (a Redis that stops
/// exactly when the waiter's wait runs out). Its release watch is supported
/// and never fires, so the waiter sleeps until its deadline.
struct StallsAt {
    stall_from: Instant,
    notifier: ReleaseNotifier,
}

#[manna_lock::async_trait]
impl LockBackend for StallsAt {
    fn describe(&self) -> String {
        "stalls".into()
    }
    async fn try_acquire(&self, _name: &str, _ttl: Duration) -> Result<Attempt, LockError> {
        if Instant::now() >= self.stall_from {
            std::future::pending::<()>().await;
        }
        Ok(Attempt::Held {
            expires_in: Some(Duration::from_secs(3600)),
            holder: Some("someone".into()),
        })
    }
    async fn release(&self, _lease: &Lease) -> Result<bool, LockError> {
        Ok(false)
    }
    async fn extend(&self, lease: &Lease, _ttl: Duration) -> Result<(), LockError> {
        Err(LockError::NotHolder {
            name: lease.name().to_owned(),
        })
    }
    async fn is_held(&self, _lease: &Lease) -> Result<bool, LockError> {
        Ok(false)
    }
    fn watch(&self, name: &str) -> ReleaseWatch {
        self.notifier.watch(name)
    }
}

/// The attempt that would be made when the wait has run out is not made
/// (it used to go out with no bound and wait on the stalled backend).
#[tokio::test(start_paused = true)]
async fn a_waiting_acquire_never_runs_past_its_wait() {
    let started = Instant::now();
    let wait = Duration::from_millis(1500);
    let m = LockManager::new(Arc::new(StallsAt {
        stall_from: started + wait,
        notifier: ReleaseNotifier::new(),
    }));
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        m.acquire("s", Duration::from_secs(10), wait),
    )
    .await
    .expect("acquire must return when its wait runs out")
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.holder(), Some("someone"));
    assert!(
        started.elapsed() <= wait + Duration::from_millis(1),
        "returned after {:?}",
        started.elapsed()
    );
}

/// `Duration::MAX` as a wait is "wait forever", not a panic.
#[tokio::test(start_paused = true)]
async fn a_wait_of_duration_max_waits_forever() {
    let m = LockManager::in_memory().with_renewal(false);
    let first = m
        .acquire("forever", Duration::from_secs(30), Duration::MAX)
        .await
        .unwrap();
    // Held for 30 s (never released): the waiter gets it when it expires.
    let second = m
        .acquire("forever", Duration::from_secs(30), Duration::MAX)
        .await
        .unwrap();
    assert!(second.token() > first.token());
    assert!(first.is_lost());
}

/// An impossible TTL is an invalid request, in the manager and the backend.
#[tokio::test]
async fn ttls_over_a_year_are_invalid() {
    let m = LockManager::in_memory();
    for ttl in [MAX_TTL + Duration::from_nanos(1), Duration::MAX] {
        let err = m.acquire("t", ttl, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, LockError::Invalid { .. }), "{err:?}");
        let err = m.backend().try_acquire("t", ttl).await.unwrap_err();
        assert!(matches!(err, LockError::Invalid { .. }), "{err:?}");
    }
    let g = m.acquire("t", MAX_TTL, Duration::ZERO).await.unwrap();
    let err = m
        .backend()
        .extend(g.lease(), Duration::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Invalid { .. }), "{err:?}");
    assert!(g.release().await.unwrap());
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(MAX_TTL),
        Just(MAX_TTL + Duration::from_nanos(1)),
        (0u64..=5_000).prop_map(Duration::from_millis),
        any::<Duration>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the TTL and the wait, acquire, try_acquire, extend and
    /// release answer (or are still waiting) without panicking.
    #[test]
    fn no_duration_makes_the_lock_panic(ttl in any_duration(), wait in any_duration(), renew in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let m = LockManager::in_memory().with_renewal(renew);
            let first = m.acquire("p", ttl, wait).await;
            if let Ok(g) = &first {
                let _ = g.is_lost();
                let _ = m.backend().extend(g.lease(), ttl).await;
                let _ = m.backend().extend(g.lease(), wait).await;
            }
            // A second client waits for the held lock (bounded by the test).
            let _ = tokio::time::timeout(Duration::from_secs(5), m.acquire("p", ttl, wait)).await;
            let _ = m.try_acquire("p", wait).await;
            if let Ok(g) = first {
                let _ = g.is_lost();
                let _ = g.release().await;
            }
        });
    }
}

/// A process paused past its lease (here: the runtime's only thread blocked)
/// sees the lease lost the moment it runs again, before the watchdog had a
/// chance to run.
#[tokio::test(flavor = "current_thread")]
async fn a_guard_paused_past_its_ttl_is_lost_on_waking() {
    for renew in [true, false] {
        let m = LockManager::new(Arc::new(MemoryBackend::new())).with_renewal(renew);
        // Long enough not to be lost before the first check on a slow
        // machine.
        let ttl = Duration::from_secs(2);
        let g = m.acquire("paused", ttl, Duration::ZERO).await.unwrap();
        assert!(!g.is_lost(), "renew {renew}: lost at once");
        std::thread::sleep(ttl + Duration::from_millis(500));
        assert!(
            g.is_lost(),
            "renew {renew}: not lost after a pause past the TTL"
        );
        // It stays lost, and `lost()` resolves, even if the watchdog's
        // renewal had been in flight.
        tokio::time::timeout(Duration::from_secs(5), g.lost())
            .await
            .expect("lost() resolves once is_lost() said so");
        assert!(g.is_lost());
        assert!(
            !g.release().await.unwrap(),
            "renew {renew}: the lease expired"
        );
    }
}
