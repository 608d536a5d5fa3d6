//! The wait queue: Redis commands per contended acquisition, waiters of a
//! crashed process, a restart with waiters queued.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use manna_lock::{Attempt, LockBackend, LockManager, WaitTicket};
use manna_lock_redis::{RedisBackend, RedisLockConfig};

use crate::support::{acquire_when_back, bounded, PrivateRedis};

/// `calls=` per command in `INFO commandstats` (commands run inside scripts
/// included).
async fn command_calls(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (cmd, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((cmd.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands the lock client sends (each one round trip); the rest of
/// `INFO commandstats` is what the scripts run inside Redis (`get` is not
/// here: the scripts run it too, and nothing in the test calls `is_held`).
const CLIENT_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "script|load",
    "subscribe",
    "unsubscribe",
    "ping",
];

/// Eight managers (each its own connections) take and release one lock 25
/// times each: at most 5 commands sent per acquisition (script calls and
/// subscriptions; counts, not timings). Before the queue it was 6.6–8.9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_acquisitions_send_few_commands() {
    const TASKS: usize = 8;
    const EACH: u64 = 25;
    let server = PrivateRedis::start(&[]);
    bounded(120, async {
        let mut managers = Vec::new();
        for _ in 0..TASKS {
            let backend = RedisBackend::connect(RedisLockConfig::new(server.url()))
                .await
                .unwrap();
            assert!(backend.wait_listening(Duration::from_secs(5)).await);
            managers.push(LockManager::new(Arc::new(backend)));
        }
        // Load the scripts on every connection first (a first EVALSHA
        // misses and falls back to a load).
        for m in &managers {
            m.acquire("warm-up", Duration::from_secs(10), Duration::from_secs(5))
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
        }
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
        let tasks: Vec<_> = managers
            .into_iter()
            .map(|m| {
                tokio::spawn(async move {
                    for _ in 0..EACH {
                        let g = m
                            .acquire("contended", Duration::from_secs(10), Duration::from_secs(60))
                            .await
                            .unwrap();
                        tokio::task::yield_now().await;
                        assert!(g.release().await.unwrap());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let calls = command_calls(&mut conn).await;
        let acquisitions = (TASKS as u64 * EACH) as f64;
        let sent: u64 = CLIENT_COMMANDS
            .iter()
            .filter_map(|c| calls.get(*c))
            .sum();
        let all: u64 = calls
            .iter()
            .filter(|(c, _)| !c.starts_with("config") && c.as_str() != "info")
            .map(|(_, n)| n)
            .sum();
        eprintln!(
            "{:.2} commands sent per acquisition, {:.2} with those run by the scripts: {calls:?}",
            sent as f64 / acquisitions,
            all as f64 / acquisitions
        );
        assert!(
            sent as f64 <= 5.0 * acquisitions,
            "{sent} commands sent for {acquisitions} contended acquisitions (at most 5 each): {calls:?}"
        );
    })
    .await;
}

/// A waiter of a process that died while queued (its ticket queued, never
/// cancelled): a release hands it the lock for at most what was left of its
/// wait, and the live waiter behind it gets the lock after that, well within
/// its own wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_queued_waiter_holds_up_the_queue_only_until_its_deadline() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url());
        let holder = LockManager::new(Arc::new(
            RedisBackend::connect(config.clone()).await.unwrap(),
        ));
        let dead = RedisBackend::connect(config.clone()).await.unwrap();
        let live = LockManager::new(Arc::new(
            RedisBackend::connect(config.clone()).await.unwrap(),
        ));
        let ttl = Duration::from_secs(30);
        let g = holder
            .acquire("dead-waiter", ttl, Duration::from_secs(1))
            .await
            .unwrap();
        let ticket = WaitTicket::random();
        assert!(matches!(
            dead.try_acquire_queued("dead-waiter", ttl, &ticket, Duration::from_secs(2))
                .await
                .unwrap(),
            Attempt::Held { .. }
        ));
        drop(dead); // never cancels: as if its process were killed
        let waiting = tokio::spawn(async move {
            live.acquire("dead-waiter", ttl, Duration::from_secs(20))
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = g.token();
        assert!(g.release().await.unwrap());
        let got = waiting
            .await
            .unwrap()
            .expect("the live waiter gets the lock once the dead one's handoff expires");
        assert!(got.token() > first);
        assert!(got.release().await.unwrap());
    })
    .await;
}

/// Redis restarted (queue and lease gone) while a waiter is queued: the
/// waiter is woken by the reconnection and either takes the free lock or
/// reports Redis unavailable (if its retry came too early); after that the
/// queue works as before and tokens keep increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_waiters_queued() {
    let mut server = PrivateRedis::start(&[]);
    bounded(90, async {
        let config =
            RedisLockConfig::new(server.url()).response_timeout(Duration::from_millis(500));
        let holder = LockManager::new(Arc::new(
            RedisBackend::connect(config.clone()).await.unwrap(),
        ))
        .with_renewal(false);
        let waiter = LockManager::new(Arc::new(
            RedisBackend::connect(config.clone()).await.unwrap(),
        ));
        let ttl = Duration::from_secs(30);
        let g = holder
            .acquire("restart-queue", ttl, Duration::from_secs(1))
            .await
            .unwrap();
        let w = waiter.clone();
        let waiting = tokio::spawn(async move {
            w.acquire("restart-queue", ttl, Duration::from_secs(25))
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart();
        let got = match waiting.await.unwrap() {
            Ok(got) => got,
            Err(e) if e.is_unavailable() => acquire_when_back(&waiter, "restart-queue", ttl).await,
            Err(e) => panic!("the waiter must get the lock or be told Redis is unavailable: {e}"),
        };
        assert!(
            got.token() > g.token(),
            "tokens keep increasing across the restart"
        );
        // The old lease is gone (its connection may first report the
        // restart).
        assert!(
            !matches!(g.release().await, Ok(true)),
            "the old lease is gone"
        );
        // The queue works again: a waiter gets the lock the holder releases.
        let h = holder.clone();
        let next = tokio::spawn(async move {
            h.acquire("restart-queue", ttl, Duration::from_secs(25))
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = got.token();
        assert!(got.release().await.unwrap());
        let next = next.await.unwrap().expect("handed over after the restart");
        assert!(next.token() > before);
        assert!(next.release().await.unwrap());
    })
    .await;
}
