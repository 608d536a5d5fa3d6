use std::sync::Arc;
use std::time::Duration;

use manna_lock::{
    Attempt, Lease, LockBackend, LockError, LockManager, MemoryBackend, ReleaseWatch,
};

#[tokio::test]
async fn lock_resource_names_the_lock_kind_colon_id() {
    let m = LockManager::in_memory();
    let g = m
        .lock_resource("plaid_sync", "item-1", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(g.name(), "plaid_sync:item-1");
    assert_eq!(g.lease().ttl(), manna_lock::DEFAULT_TTL);
    assert!(m
        .try_acquire("plaid_sync:item-1", Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    assert!(m
        .try_acquire("plaid_sync:item-2", Duration::from_secs(1))
        .await
        .unwrap()
        .is_some());
    assert!(g.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn acquire_times_out_while_held() {
    let m = LockManager::in_memory();
    let _g = m
        .acquire("x", Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    let err = m
        .acquire("x", Duration::from_secs(60), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(": held by host "),
        "the refusal names the holder: {err}"
    );
    match err {
        LockError::Timeout {
            name,
            waited,
            holder,
        } => {
            assert_eq!(name, "x");
            let holder = holder.expect("the in-memory backend names the holder");
            let this = format!(
                "host {} pid {} since ",
                manna_lock::hostname(),
                std::process::id()
            );
            assert!(holder.starts_with(&this), "{holder}");
            assert!(
                waited >= Duration::from_secs(5),
                "gave up early: {waited:?}"
            );
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn waiter_gets_lock_when_holder_lease_expires_without_release() {
    // Renewal off: the holder behaves like a crashed process.
    let holder = LockManager::in_memory().with_renewal(false);
    let waiter = LockManager::new(Arc::clone(holder.backend()));
    let g = holder
        .acquire("y", Duration::from_secs(2), Duration::ZERO)
        .await
        .unwrap();
    let got = waiter
        .acquire("y", Duration::from_secs(2), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(got.token() > g.token());
    assert!(
        g.is_lost(),
        "unrenewed lease past its TTL must be reported lost"
    );
    assert!(!g.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn without_renewal_the_guard_reports_lost_after_the_ttl() {
    let m = LockManager::in_memory().with_renewal(false);
    let g = m
        .acquire("z", Duration::from_secs(3), Duration::ZERO)
        .await
        .unwrap();
    assert!(!g.is_lost());
    tokio::time::timeout(Duration::from_secs(4), g.lost())
        .await
        .expect("lost after TTL");
    assert!(g.is_lost());
}

#[tokio::test(start_paused = true)]
async fn with_renewal_the_guard_outlives_many_ttls() {
    let m = LockManager::in_memory();
    let g = m
        .acquire("r", Duration::from_secs(3), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(60), g.lost())
            .await
            .is_err(),
        "lease lost while renewed"
    );
    assert!(m
        .try_acquire("r", Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    assert!(g.release().await.unwrap());
}

#[tokio::test]
async fn dropping_a_guard_releases_in_the_background() {
    let m = LockManager::in_memory();
    let g = m
        .acquire("d", Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    let first = g.token();
    drop(g);
    // TTL is 60 s: only the background release can let this through.
    let g2 = m
        .acquire("d", Duration::from_secs(60), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(g2.token() > first);
}

#[test]
fn guards_work_from_a_std_thread_on_a_caller_owned_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = Arc::new(MemoryBackend::new());
    let manager = LockManager::new(backend);
    let handle = rt.handle().clone();
    let m = manager.clone();
    let worker = std::thread::spawn(move || {
        // Renewed every second: in time on a slow machine too.
        let ttl = Duration::from_secs(3);
        let g = handle
            .block_on(m.acquire("sync-engine", ttl, Duration::from_secs(10)))
            .unwrap();
        // Blocking work on this thread for several TTLs: renewal runs on
        // the runtime's workers.
        std::thread::sleep(ttl * 2 + Duration::from_millis(500));
        assert!(!g.is_lost(), "renewal did not run while the thread blocked");
        let other = handle
            .block_on(m.try_acquire("sync-engine", Duration::from_secs(1)))
            .unwrap();
        assert!(other.is_none(), "lease expired while held");
        let token = g.token();
        // Dropped on a non-runtime thread: must still release.
        drop(g);
        token
    });
    let token = worker.join().unwrap();
    let next = rt
        .block_on(manager.acquire(
            "sync-engine",
            Duration::from_secs(60),
            Duration::from_secs(10),
        ))
        .unwrap();
    assert!(next.token() > token);
    assert!(rt.block_on(next.release()).unwrap());
}

#[test]
fn acquire_outside_a_runtime_is_an_invalid_request() {
    let m = LockManager::in_memory();
    let r = futures_lite_block_on(m.acquire("n", Duration::from_secs(1), Duration::ZERO));
    assert!(matches!(r, Err(LockError::Invalid { .. })), "{r:?}");
}

#[tokio::test]
async fn invalid_arguments_are_rejected() {
    let m = LockManager::in_memory();
    assert!(matches!(
        m.acquire("", Duration::from_secs(1), Duration::ZERO).await,
        Err(LockError::Invalid { .. })
    ));
    assert!(matches!(
        m.acquire("a", Duration::ZERO, Duration::ZERO).await,
        Err(LockError::Invalid { .. })
    ));
    assert!(matches!(
        m.lock_resource("", "1", Duration::ZERO).await,
        Err(LockError::Invalid { .. })
    ));
}

/// A backend whose every call takes `delay` (a database behind a slow link).
struct Slow {
    inner: MemoryBackend,
    delay: Duration,
}

#[manna_lock::async_trait]
impl LockBackend for Slow {
    fn describe(&self) -> String {
        "slow".into()
    }
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        tokio::time::sleep(self.delay).await;
        self.inner.try_acquire(name, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError> {
        self.inner.extend(lease, ttl).await
    }
    async fn is_held(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.is_held(lease).await
    }
    fn watch(&self, _name: &str) -> ReleaseWatch {
        ReleaseWatch::unsupported()
    }
}

/// When the wait runs out in the middle of a retry of a held lock, the
/// caller gets Timeout naming the holder, not Unavailable: the backend
/// answered every attempt it had time for.
#[tokio::test(start_paused = true)]
async fn wait_running_out_during_a_slow_retry_is_a_timeout() {
    let backend = Arc::new(Slow {
        inner: MemoryBackend::new(),
        delay: Duration::from_millis(40),
    });
    let m = LockManager::new(backend);
    let _g = m
        .acquire("s", Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap();
    for wait in [50, 100, 130, 250, 1000] {
        let err = m
            .acquire("s", Duration::from_secs(60), Duration::from_millis(wait))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "wait {wait} ms: {err:?}");
        assert!(err.holder().is_some(), "wait {wait} ms: {err:?}");
    }
}

/// Polls a future to completion on this thread without any Tokio context.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
