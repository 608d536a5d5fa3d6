use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use manna_lock::testing::MockLockBackend;
use manna_lock::{Attempt, FencingToken, Lease, LockBackend, LockError, LockManager, ReleaseWatch};

fn unavailable() -> LockError {
    LockError::Unavailable {
        backend: "mock".into(),
        reason: "connection refused".into(),
    }
}

#[tokio::test]
async fn unavailable_backend_is_reported_not_retried() {
    let mut mock = MockLockBackend::new();
    mock.expect_watch()
        .returning(|_| ReleaseWatch::unsupported());
    mock.expect_try_acquire()
        .times(1)
        .returning(|_, _| Err(unavailable()));
    let m = LockManager::new(Arc::new(mock));
    let err = m
        .acquire("a", Duration::from_secs(1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err, unavailable());
}

#[tokio::test(start_paused = true)]
async fn without_notifications_the_manager_backs_off_and_retries() {
    let mut mock = MockLockBackend::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    mock.expect_watch()
        .returning(|_| ReleaseWatch::unsupported());
    mock.expect_try_acquire()
        .times(4)
        .returning(move |name, ttl| {
            if c.fetch_add(1, Ordering::SeqCst) < 3 {
                Ok(Attempt::Held {
                    expires_in: None,
                    holder: None,
                })
            } else {
                Ok(Attempt::Acquired(Lease::new(
                    name,
                    "me",
                    FencingToken::new(9),
                    ttl,
                )))
            }
        });
    mock.expect_extend().returning(|_, _| Ok(()));
    mock.expect_release().times(1).returning(|_| Ok(true));
    mock.expect_describe().returning(|| "mock".into());
    let m = LockManager::new(Arc::new(mock));
    let g = m
        .acquire("a", Duration::from_secs(10), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(g.token(), FencingToken::new(9));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(g.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn renewal_refused_marks_the_guard_lost() {
    let mut mock = MockLockBackend::new();
    mock.expect_watch()
        .returning(|_| ReleaseWatch::unsupported());
    mock.expect_try_acquire().returning(|name, ttl| {
        Ok(Attempt::Acquired(Lease::new(
            name,
            "me",
            FencingToken::new(1),
            ttl,
        )))
    });
    mock.expect_extend().times(1).returning(|lease, _| {
        Err(LockError::NotHolder {
            name: lease.name().into(),
        })
    });
    mock.expect_release().returning(|_| Ok(false));
    let m = LockManager::new(Arc::new(mock));
    let g = m
        .acquire("a", Duration::from_secs(3), Duration::ZERO)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), g.lost())
        .await
        .expect("lost after first renewal");
    assert!(!g.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn renewal_errors_until_expiry_mark_the_guard_lost() {
    let mut mock = MockLockBackend::new();
    mock.expect_watch()
        .returning(|_| ReleaseWatch::unsupported());
    mock.expect_try_acquire().returning(|name, ttl| {
        Ok(Attempt::Acquired(Lease::new(
            name,
            "me",
            FencingToken::new(1),
            ttl,
        )))
    });
    mock.expect_extend().returning(|_, _| Err(unavailable()));
    mock.expect_release().returning(|_| Err(unavailable()));
    let m = LockManager::new(Arc::new(mock));
    let g = m
        .acquire("a", Duration::from_secs(3), Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!g.is_lost(), "still within the TTL");
    tokio::time::timeout(Duration::from_secs(2), g.lost())
        .await
        .expect("lost at expiry");
    assert_eq!(g.release().await.unwrap_err(), unavailable());
}

/// A backend that never answers, like a paused Redis.
struct Silent;

#[async_trait]
impl LockBackend for Silent {
    fn describe(&self) -> String {
        "silent test backend".into()
    }
    async fn try_acquire(&self, _: &str, _: Duration) -> Result<Attempt, LockError> {
        std::future::pending().await
    }
    async fn release(&self, _: &Lease) -> Result<bool, LockError> {
        std::future::pending().await
    }
    async fn extend(&self, _: &Lease, _: Duration) -> Result<(), LockError> {
        std::future::pending().await
    }
    async fn is_held(&self, _: &Lease) -> Result<bool, LockError> {
        std::future::pending().await
    }
    fn watch(&self, _: &str) -> ReleaseWatch {
        ReleaseWatch::unsupported()
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_backend_is_unavailable_at_the_callers_deadline() {
    let m = LockManager::new(Arc::new(Silent));
    let err = m
        .acquire("a", Duration::from_secs(1), Duration::from_secs(3))
        .await
        .unwrap_err();
    match err {
        LockError::Unavailable { backend, reason } => {
            assert_eq!(backend, "silent test backend");
            assert!(reason.contains("no answer"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
