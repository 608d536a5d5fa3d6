use std::sync::Arc;
use std::time::Duration;

use manna_lock::{LockError, LockManager};
use manna_lock_redis::testing::FencedRegister;
use manna_lock_redis::{RedisBackend, RedisLockConfig};

use crate::support::{acquire_when_back, bounded, PrivateRedis, PATIENCE};

/// A holder whose Redis is paused past the TTL observes the lost lease; a
/// second holder gets a higher token; the stale holder's write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_past_the_ttl() {
    let mut server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url()).response_timeout(Duration::from_secs(2));
        let first = LockManager::new(Arc::new(
            RedisBackend::connect(config.clone()).await.unwrap(),
        ));
        let second = LockManager::new(Arc::new(
            RedisBackend::connect(config.clone()).await.unwrap(),
        ));
        let register = FencedRegister::open(&config, "paused:register")
            .await
            .unwrap();

        // Renewed every second: in time on a slow machine too.
        let ttl = Duration::from_secs(3);
        let g1 = first.acquire("paused", ttl, PATIENCE).await.unwrap();
        let (value, _) = register.read().await.unwrap();
        assert!(
            register.write(g1.token(), value + 1).await.unwrap(),
            "the holder's first write"
        );
        let read_before_pause = register.read().await.unwrap().0;

        server.pause();
        // The holder cannot renew: its lease must be reported lost (by the
        // end of its TTL).
        tokio::time::timeout(ttl + Duration::from_secs(10), g1.lost())
            .await
            .expect("holder must observe the lost lease while Redis is paused");
        // Keep Redis stopped past the TTL (Redis expires by its own clock).
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.resume();

        let g2 = second
            .acquire("paused", Duration::from_secs(10), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            g2.token() > g1.token(),
            "second holder must get a higher token"
        );
        let (v, _) = register.read().await.unwrap();
        assert!(
            register.write(g2.token(), v + 10).await.unwrap(),
            "current holder's write"
        );

        // The paused holder wakes up and writes from its stale read.
        assert!(
            !register
                .write(g1.token(), read_before_pause + 1)
                .await
                .unwrap(),
            "a write with the stale token must be refused"
        );
        assert_eq!(
            register.read().await.unwrap(),
            (1 + 10, g2.token().get()),
            "nothing lost, nothing double-applied"
        );
        assert!(
            !g1.release().await.unwrap(),
            "stale release must not free the new lease"
        );
        assert!(g2.release().await.unwrap());
    })
    .await;
    server.kill();
}

/// Redis killed: calls fail fast with Unavailable; after a restart (data
/// gone) locks work again and tokens still increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted() {
    let mut server = PrivateRedis::start(&[]);
    let url = server.url();
    let backend = Arc::new(
        bounded(10, RedisBackend::connect(RedisLockConfig::new(&url)))
            .await
            .unwrap(),
    );
    let m = LockManager::new(backend.clone());
    let g = bounded(20, m.acquire("killed", Duration::from_secs(5), PATIENCE))
        .await
        .unwrap();
    let before = g.token();
    assert!(bounded(10, g.release()).await.unwrap());

    server.kill();
    let started = std::time::Instant::now();
    let wait = Duration::from_secs(5);
    let err = bounded(20, m.acquire("killed", Duration::from_secs(5), wait))
        .await
        .unwrap_err();
    match &err {
        LockError::Unavailable { backend, .. } => assert!(backend.contains(&url), "{backend}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < wait + Duration::from_secs(5),
        "must not hang past the caller's wait ({wait:?}), took {:?}",
        started.elapsed()
    );
    let err = bounded(10, m.try_acquire("killed", Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    server.restart();
    let after = acquire_when_back(&m, "killed", Duration::from_secs(5)).await;
    assert!(
        after.token() > before,
        "tokens must keep increasing across a restart that lost the data"
    );
    assert!(
        bounded(20, backend.wait_listening(Duration::from_secs(15))).await,
        "the release listener must reconnect after the restart"
    );
    assert!(bounded(10, after.release()).await.unwrap());
}
