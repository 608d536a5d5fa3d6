//! Issue 9: waits that end on time with a stalled Redis, no phantom leases,
//! tokens that survive a restore from an older snapshot, and a release
//! listener that is ready when `connect` returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use manna_lock::{Attempt, LockBackend, LockManager};
use manna_lock_redis::{RedisBackend, RedisLockConfig};

use crate::support::{
    acquire_when_back, admin, bounded, eventually, numsub, queued, reset_stats, script_calls,
    PrivateRedis,
};

async fn connect(config: &RedisLockConfig) -> Arc<RedisBackend> {
    Arc::new(RedisBackend::connect(config.clone()).await.unwrap())
}

/// Polls until a client of `backend` can take `name` (the lease left by a
/// caller that gave up has been released), for at most `within`.
async fn free_within(backend: &RedisBackend, name: &str, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(Attempt::Acquired(lease)) =
            backend.try_acquire(name, Duration::from_secs(60)).await
        {
            assert!(backend.release(&lease).await.unwrap());
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Redis stops answering while a waiter waits: the waiter returns when its
/// wait runs out, not a response timeout later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_never_keeps_a_waiter_past_its_wait() {
    let server = PrivateRedis::start(&[]);
    bounded(90, async {
        // Far longer than the wait plus any delay a slow machine adds.
        let response_timeout = Duration::from_secs(20);
        let config = RedisLockConfig::new(server.url()).response_timeout(response_timeout);
        let holder = LockManager::new(connect(&config).await);
        let waiter_backend = connect(&config).await;
        let queue = waiter_backend.queue_key("stalled");
        let waiter = LockManager::new(waiter_backend);
        let admin = admin(&server.url()).await;
        let _g = holder
            .acquire("stalled", Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        let wait = Duration::from_secs(3);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            waiter
                .acquire("stalled", Duration::from_secs(60), wait)
                .await
        });
        // The waiter's first attempt was answered (it queued): it saw the
        // lock held, so the end of its wait is a `Timeout`.
        eventually("the waiter queued", || {
            let (mut admin, queue) = (admin.clone(), queue.clone());
            async move { queued(&mut admin, &queue).await == 1 }
        })
        .await;
        server.pause();
        let result = task.await.unwrap();
        let elapsed = started.elapsed();
        server.resume();
        let err = result.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(
            elapsed < wait + Duration::from_secs(5),
            "a {wait:?} wait returned after {elapsed:?} (response timeout {response_timeout:?})"
        );
    })
    .await;
}

/// A caller gives up while Redis is paused with its acquire script in
/// flight; when Redis resumes and runs the script, the backend releases the
/// lease nobody received, long before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_leaves_no_phantom_lease() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url()).response_timeout(Duration::from_secs(5));
        let m = LockManager::new(connect(&config).await);
        let other = connect(&config).await;
        // Load the scripts (a first EVALSHA would come back NOSCRIPT, and the
        // retry with EVAL would never be sent for a caller that is gone).
        assert!(free_within(&other, "warm-up", Duration::from_secs(5)).await);

        server.pause();
        let err = m
            .acquire(
                "phantom",
                Duration::from_secs(60),
                Duration::from_millis(500),
            )
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        server.resume();
        assert!(
            free_within(&other, "phantom", Duration::from_secs(10)).await,
            "the lease acquired for a caller that gave up must be released (its TTL is 60 s)"
        );
    })
    .await;
}

/// The same when the answer is lost to the client's response timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_timeout_leaves_no_phantom_lease() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        // A short response timeout for the call meant to time out only.
        let config = RedisLockConfig::new(server.url()).response_timeout(Duration::from_secs(1));
        let backend = connect(&config).await;
        let other =
            connect(&RedisLockConfig::new(server.url()).response_timeout(Duration::from_secs(5)))
                .await;
        assert!(free_within(&other, "warm-up", Duration::from_secs(5)).await);

        server.pause();
        let err = backend
            .try_acquire("lost-answer", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.resume();
        assert!(
            free_within(&other, "lost-answer", Duration::from_secs(10)).await,
            "the lease whose answer timed out must be released (its TTL is 60 s)"
        );
    })
    .await;
}

/// Acquires and releases `restored`; returns the token.
async fn take(m: &LockManager) -> u64 {
    let g = bounded(
        20,
        m.acquire("restored", Duration::from_secs(30), Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let token = g.token().get();
    assert!(bounded(10, g.release()).await.unwrap());
    token
}

/// Redis restarted from an older snapshot (its fencing counter went back):
/// the next token is still greater than every token granted before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_across_a_restore_from_an_older_snapshot() {
    let dir = std::env::temp_dir().join(format!(
        "manna-lock-redis-snapshot-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut server = PrivateRedis::start(&["--dir", &dir_arg, "--dbfilename", "locks.rdb"]);
    let url = server.url();
    let config = RedisLockConfig::new(&url);
    let m = LockManager::new(bounded(10, connect(&config)).await);
    let mut granted = Vec::new();
    for _ in 0..3 {
        granted.push(take(&m).await);
    }
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();
    for _ in 0..3 {
        granted.push(take(&m).await);
    }
    // SIGKILL: no save on shutdown, so the restart loads the older snapshot.
    server.restart();
    let after = acquire_when_back(&m, "restored", Duration::from_secs(30)).await;
    let max_before = granted.iter().copied().max().unwrap();
    assert!(
        granted.windows(2).all(|w| w[0] < w[1]),
        "tokens increase: {granted:?}"
    );
    assert!(
        after.token().get() > max_before,
        "token after the restore {} must exceed every token granted before {granted:?}",
        after.token()
    );
    assert!(bounded(10, after.release()).await.unwrap());
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The release listener is subscribed when `connect` returns (even on a
/// current-thread runtime, where a background task could not have run yet).
#[tokio::test(flavor = "current_thread")]
async fn the_release_listener_is_ready_when_connect_returns() {
    let server = PrivateRedis::start(&[]);
    let backend = bounded(
        10,
        RedisBackend::connect(RedisLockConfig::new(server.url())),
    )
    .await
    .unwrap();
    assert!(
        backend.is_listening(),
        "not listening when connect returned"
    );
}

/// The very first waiter after `connect` is woken by the release
/// notification, not by backoff: it subscribes, runs no script while it
/// waits, and gets the lock soon after the release, long before the
/// holder's lease (60 s) would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_waiter_after_connect_is_woken_by_pubsub() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url());
        let mut admin = admin(&server.url()).await;
        let holder = LockManager::new(connect(&config).await);
        let ttl = Duration::from_secs(60);
        let g = holder.acquire("first", ttl, Duration::ZERO).await.unwrap();
        let waiter_backend = connect(&config).await;
        let channel = waiter_backend.release_channel("first");
        let waiter = LockManager::new(waiter_backend);
        let task = tokio::spawn(async move {
            let g = waiter
                .acquire("first", ttl, Duration::from_secs(30))
                .await
                .unwrap();
            (Instant::now(), g)
        });
        // A waiter woken by notifications subscribes (one that polls never
        // does).
        eventually(
            "the waiter subscribed to the lock's release channel",
            || {
                let (mut admin, channel) = (admin.clone(), channel.clone());
                async move { numsub(&mut admin, &channel).await == 1 }
            },
        )
        .await;
        reset_stats(&mut admin).await;
        // Long enough for a polling waiter to reach its 250 ms backoff steps.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (scripts, stats) = script_calls(&mut admin).await;
        assert!(!task.is_finished(), "the waiter got a lock that is held");
        // At most the attempt right after subscribing (and its script load):
        // a polling waiter would have run one every 250 ms at most.
        assert!(
            scripts <= 3,
            "the waiter polled: {scripts} scripts ran in 1.5 s\n{stats}"
        );
        let released_at = Instant::now();
        assert!(g.release().await.unwrap());
        let (woken_at, got) = task.await.unwrap();
        let latency = woken_at.saturating_duration_since(released_at);
        // Missing the notification, the waiter would sleep until the
        // holder's lease expired (60 s, beyond its 30 s wait).
        assert!(
            latency < Duration::from_secs(2),
            "first waiter woke {latency:?} after the release (the holder's lease was {ttl:?})"
        );
        assert!(got.release().await.unwrap());
    })
    .await;
}
