use std::sync::Arc;
use std::time::Duration;

use manna_lock::{Attempt, LockBackend, LockError, LockManager};
use manna_lock_redis::{RedisBackend, RedisLockConfig};
use redis::AsyncCommands;

use crate::support::{bounded, eventually, numsub, PrivateRedis, PATIENCE};

/// How long the backend keeps a release channel subscribed after its last
/// waiter left (`CHANNEL_LINGER` in the backend).
const CHANNEL_LINGER: Duration = Duration::from_secs(5);

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_live_in_the_namespace_and_database_of_the_url() {
    bounded(30, async {
        let server = PrivateRedis::start(&[]);
        let url = format!("redis://127.0.0.1:{}/3", server.port);
        let backend = RedisBackend::connect(RedisLockConfig::new(&url))
            .await
            .unwrap();
        let Attempt::Acquired(lease) = backend
            .try_acquire("plaid_sync:42", Duration::from_secs(30))
            .await
            .unwrap()
        else {
            panic!("free lock")
        };
        let mut db3 = raw(&url).await;
        let owner: Option<String> = db3.get("manna:lock:{plaid_sync:42}").await.unwrap();
        assert_eq!(owner.as_deref(), Some(lease.owner()));
        let ttl: i64 = db3.pttl("manna:lock:{plaid_sync:42}").await.unwrap();
        assert!(ttl > 0 && ttl <= 30_000, "PX set from the TTL: {ttl}");
        let fence: u64 = db3.get("manna:lock:{plaid_sync:42}:fence").await.unwrap();
        assert_eq!(fence, lease.token().get());
        let mut db0 = raw(&server.url()).await;
        let in_db0: bool = db0.exists("manna:lock:{plaid_sync:42}").await.unwrap();
        assert!(!in_db0, "the database number of the URL was ignored");

        let custom = RedisBackend::connect(RedisLockConfig::new(&url).namespace("app:locks:"))
            .await
            .unwrap();
        let Attempt::Acquired(other) = custom
            .try_acquire("plaid_sync:42", Duration::from_secs(30))
            .await
            .unwrap()
        else {
            panic!("another namespace is another lock")
        };
        let owner: Option<String> = db3.get("app:locks:{plaid_sync:42}").await.unwrap();
        assert_eq!(owner.as_deref(), Some(other.owner()));
        assert!(backend.release(&lease).await.unwrap());
        assert!(!db3
            .exists::<_, bool>("manna:lock:{plaid_sync:42}")
            .await
            .unwrap());
        assert!(custom.release(&other).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn password_protected_redis_works_and_errors_never_show_the_password() {
    bounded(30, async {
        let server = PrivateRedis::start(&["--requirepass", "s3cr3t-pw"]);
        let good = format!("redis://:s3cr3t-pw@127.0.0.1:{}/1", server.port);
        let backend = RedisBackend::connect(RedisLockConfig::new(&good))
            .await
            .unwrap();
        assert!(
            backend.wait_listening(Duration::from_secs(5)).await,
            "pub/sub must authenticate too"
        );
        let m = LockManager::new(Arc::new(backend));
        let g = m
            .acquire("auth", Duration::from_secs(5), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(g.release().await.unwrap());
        assert!(!format!("{m:?}").contains("s3cr3t-pw"));

        let bad = format!("redis://:wrong-pw-123@127.0.0.1:{}/1", server.port);
        let err = RedisBackend::connect(RedisLockConfig::new(&bad))
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("wrong-pw-123"), "{shown}");
        assert!(
            shown.contains(&format!("redis://***@127.0.0.1:{}/1", server.port)),
            "{shown}"
        );
    })
    .await;
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_naming_the_redacted_url() {
    bounded(30, async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("redis://app:pw-not-shown@127.0.0.1:{port}/0");
        let started = std::time::Instant::now();
        let err = RedisBackend::connect(RedisLockConfig::new(&url))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not fail fast"
        );
        match &err {
            LockError::Unavailable { backend, .. } => {
                assert_eq!(backend, &format!("redis at redis://***@127.0.0.1:{port}/0"));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with("distributed lock backend unavailable: redis at"),
            "{msg}"
        );
        assert!(!msg.contains("pw-not-shown"), "{msg}");
    })
    .await;
}

/// Issue 9: passwords holding `#`, `/`, `?`, `@` or `%` never appear in a
/// connect error or the backend's description, whether the Redis client can
/// parse the URL or not.
#[tokio::test]
async fn passwords_with_url_delimiters_never_appear_in_errors() {
    bounded(60, async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for password in [
            "hu#nter2secret",
            "hu/nter2secret",
            "hu?nter2secret",
            "hu@nter2secret",
            "hu%nter2secret",
            "a#b/c?d@e%fsecret",
        ] {
            for url in [
                format!("redis://app:{password}@127.0.0.1:{port}/0"),
                format!("redis://:{password}@127.0.0.1:{port}/0"),
            ] {
                let err = RedisBackend::connect(RedisLockConfig::new(&url))
                    .await
                    .unwrap_err();
                let shown = format!("{err} {err:?} {:?}", RedisLockConfig::new(&url));
                assert!(matches!(err, LockError::Unavailable { .. }), "{shown}");
                assert!(!shown.contains(password), "{password}: {shown}");
                assert!(!shown.contains("nter2"), "{password}: {shown}");
                assert!(!shown.contains("secret"), "{password}: {shown}");
                assert!(shown.contains("redis://***@"), "{password}: {shown}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_by_pubsub_not_by_polling() {
    bounded(60, async {
        let server = PrivateRedis::start(&[]);
        let config = RedisLockConfig::new(server.url());
        let holder_backend = RedisBackend::connect(config.clone()).await.unwrap();
        let waiter_backend = RedisBackend::connect(config.clone()).await.unwrap();
        assert!(waiter_backend.wait_listening(Duration::from_secs(5)).await);
        let holder = LockManager::new(Arc::new(holder_backend));
        let waiter = LockManager::new(Arc::new(waiter_backend));
        let mut admin = raw(&server.url()).await;

        let g = holder
            .acquire("wake", Duration::from_secs(60), PATIENCE)
            .await
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut admin)
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            waiter
                .acquire("wake", Duration::from_secs(60), Duration::from_secs(30))
                .await
        });
        // The waiter sits blocked for a while; then the holder releases.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        eventually("the waiter subscribes to the lock's channel", || {
            let mut admin = admin.clone();
            async move { numsub(&mut admin, "manna:lock:{wake}:released").await == 1 }
        })
        .await;
        assert!(!task.is_finished(), "the waiter got a lock that is held");
        let token = g.token();
        assert!(g.release().await.unwrap());
        let got = task.await.unwrap().unwrap();
        assert!(got.token() > token);
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut admin)
            .await
            .unwrap();
        let evals = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .map(|l| {
                l.split("calls=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum::<u64>();
        // First attempt, the holder's release, the attempt after the wake-up,
        // and possibly one renewal of the holder: a polling waiter would have
        // made dozens in 1.5 s.
        assert!(evals <= 5, "waiter polled: {evals} scripts ran\n{stats}");
        assert!(got.release().await.unwrap());
        // The subscription ends with the wait (after lingering a while in
        // case the lock is contended again): releases nobody waits for are
        // delivered to nobody.
        let deadline = std::time::Instant::now() + CHANNEL_LINGER + Duration::from_secs(10);
        while numsub(&mut admin, "manna:lock:{wake}:released").await != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "waiter never unsubscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A waiting session's wait-for edge is one key, `…waits:SESSION`, holding
/// the lock name and expiring within the remaining wait (a crashed waiter
/// leaves nothing permanent); it is gone once the wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_edge_is_a_key_that_expires_with_the_wait() {
    bounded(30, async {
        let url = crate::support::shared_url();
        let backend = Arc::new(crate::support::shared_backend().await);
        let locks = LockManager::new(backend.clone());
        let name = manna_lock::testing::conformance::unique_name("edge-key");
        let holder = locks.session();
        let guard = holder
            .acquire(&name, Duration::from_secs(30), PATIENCE)
            .await
            .unwrap();
        assert_eq!(guard.lease().session(), Some(holder.id().as_str()));
        let stored: String = raw(&url).await.get(backend.lock_key(&name)).await.unwrap();
        assert!(
            stored.contains(&format!("@{};", holder.id())),
            "the owner value carries the session: {stored}"
        );

        let waiter = Arc::new(locks.session());
        let key = backend.wait_key(waiter.id());
        let (w, n) = (Arc::clone(&waiter), name.clone());
        let wait = Duration::from_secs(4);
        let task = tokio::spawn(async move { w.acquire(&n, Duration::from_secs(30), wait).await });
        let mut conn = raw(&url).await;
        eventually("the waiter recorded its edge", || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move { conn.exists::<_, bool>(&key).await.unwrap() }
        })
        .await;
        let edge: Option<String> = conn.get(&key).await.unwrap();
        assert_eq!(
            edge.as_deref(),
            Some(name.as_str()),
            "the edge names the lock"
        );
        let pttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(
            pttl > 0 && pttl <= i64::try_from(wait.as_millis()).unwrap(),
            "the edge expires within the remaining wait, PTTL {pttl}"
        );
        let outcome = task.await.unwrap();
        assert!(
            matches!(outcome, Err(LockError::Timeout { .. })),
            "{outcome:?}"
        );
        eventually("the edge is gone once the wait ended", || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move { !conn.exists::<_, bool>(&key).await.unwrap() }
        })
        .await;
        assert!(guard.release().await.unwrap());
    })
    .await;
}
