//! The wait queue: Redis commands per contended acquisition, handoffs
//! delivered only to the waiter's process, waiters of a crashed or hung
//! process, a lost handoff message, a restart with waiters queued.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use manna_lock::{Attempt, LockBackend, LockManager, WaitTicket};
use manna_lock_redis::{RedisBackend, RedisLockConfig};

use crate::support::{
    acquire_when_back, admin, bounded, eventually, queued, PrivateRedis, PATIENCE,
};

/// Returns once `n` wait tickets are queued for lock `name` of the Redis
/// at `url` (in the default namespace).
async fn until_queued(url: &str, name: &str, n: u64) {
    let key = format!("manna:lock:{{{name}}}:queue");
    let conn = admin(url).await;
    eventually(&format!("{n} waiters queued for `{name}`"), || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move { queued(&mut conn, &key).await == n }
    })
    .await;
}

/// `calls=` per command in `INFO commandstats` (commands run inside scripts
/// included).
/// A lock manager on its own backend (its own connections, as another
/// process would have).
async fn manager(config: &RedisLockConfig) -> LockManager {
    LockManager::new(Arc::new(
        RedisBackend::connect(config.clone()).await.unwrap(),
    ))
}

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
/// cancelled): its pub/sub connection is closed, so the release's handoff
/// message reaches nobody, the release script takes the lock back and hands
/// it to the live waiter behind it at once (not after the dead one's wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_queued_waiter_is_skipped_at_once() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url());
        let holder = manager(&config).await;
        let dead = RedisBackend::connect(config.clone()).await.unwrap();
        let live = manager(&config).await;
        let ttl = Duration::from_secs(30);
        let g = holder.acquire("dead-waiter", ttl, PATIENCE).await.unwrap();
        let ticket = WaitTicket::random();
        // Not skipped, the dead waiter would hold the lock up for its TTL
        // (the rest of its wait is as long).
        assert!(matches!(
            dead.try_acquire_queued("dead-waiter", ttl, &ticket, ttl)
                .await
                .unwrap(),
            Attempt::Held { .. }
        ));
        drop(dead); // never cancels: as if its process were killed
        let waiting = tokio::spawn(async move {
            live.acquire("dead-waiter", ttl, Duration::from_secs(50))
                .await
        });
        until_queued(&server.url(), "dead-waiter", 2).await;
        let first = g.token();
        let released = Instant::now();
        assert!(g.release().await.unwrap());
        let got = waiting
            .await
            .unwrap()
            .expect("the live waiter gets the lock, skipping the dead one");
        assert!(
            released.elapsed() < Duration::from_secs(10),
            "handed over past the dead waiter at once, took {:?} (its handoff would last {ttl:?})",
            released.elapsed()
        );
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
        let config = RedisLockConfig::new(server.url()).response_timeout(Duration::from_secs(2));
        let holder = manager(&config).await.with_renewal(false);
        let waiter = manager(&config).await;
        let ttl = Duration::from_secs(30);
        let g = holder
            .acquire("restart-queue", ttl, PATIENCE)
            .await
            .unwrap();
        let w = waiter.clone();
        let waiting = tokio::spawn(async move {
            w.acquire("restart-queue", ttl, Duration::from_secs(25))
                .await
        });
        until_queued(&server.url(), "restart-queue", 1).await;
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
        until_queued(&server.url(), "restart-queue", 1).await;
        let before = got.token();
        assert!(got.release().await.unwrap());
        let next = next.await.unwrap().expect("handed over after the restart");
        assert!(next.token() > before);
        assert!(next.release().await.unwrap());
    })
    .await;
}

/// Messages on every channel of the default namespace, from now on.
async fn all_lock_messages(url: &str) -> impl futures_util::Stream<Item = (String, String)> {
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.psubscribe("manna:lock:*").await.unwrap();
    pubsub.into_on_message().map(|m| {
        (
            m.get_channel_name().to_owned(),
            m.get_payload::<String>().unwrap(),
        )
    })
}

/// What arrives on `messages` within 300 ms.
async fn drain(
    messages: &mut (impl futures_util::Stream<Item = (String, String)> + Unpin),
) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), messages.next()).await
    {
        got.push(m);
    }
    got
}

/// A handoff is published on the waiter channel of the process whose
/// waiter got the lock, and nowhere else: the other queued waiters' processes
/// hear nothing. With nobody queued, the release publishes the lock name on
/// the lock's release channel, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_is_published_only_to_the_process_of_its_waiter() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url());
        let (h, a, b) = (
            RedisBackend::connect(config.clone()).await.unwrap(),
            RedisBackend::connect(config.clone()).await.unwrap(),
            RedisBackend::connect(config.clone()).await.unwrap(),
        );
        assert_ne!(a.waiter_channel(), b.waiter_channel());
        let mut messages = Box::pin(all_lock_messages(&server.url()).await);
        let (ttl, wait) = (Duration::from_secs(10), Duration::from_secs(30));
        let Attempt::Acquired(lease) = h.try_acquire("only", ttl).await.unwrap() else {
            panic!("free lock");
        };
        let (ta, tb) = (WaitTicket::random(), WaitTicket::random());
        for (backend, ticket) in [(&a, &ta), (&b, &tb)] {
            assert!(matches!(
                backend
                    .try_acquire_queued("only", ttl, ticket, wait)
                    .await
                    .unwrap(),
                Attempt::Held { .. }
            ));
        }
        assert!(h.release(&lease).await.unwrap());
        let got = drain(&mut messages).await;
        assert_eq!(got.len(), 1, "one message, to A's process: {got:?}");
        assert_eq!(got[0].0, a.waiter_channel());
        assert!(got[0].1.starts_with(&format!("granted {ta} ")), "{got:?}");
        // `granted TICKET PX TOKEN NAME_BYTES NAME OWNER`, the owner value
        // starting with the ticket.
        assert!(got[0].1.contains(&format!(" 4 only {ta};")), "{got:?}");

        let Attempt::Acquired(lease) = a.try_acquire_queued("only", ttl, &ta, wait).await.unwrap()
        else {
            panic!("handed to A");
        };
        assert!(a.release(&lease).await.unwrap());
        let got = drain(&mut messages).await;
        assert_eq!(got.len(), 1, "one message, to B's process: {got:?}");
        assert_eq!(got[0].0, b.waiter_channel());
        assert!(got[0].1.starts_with(&format!("granted {tb} ")), "{got:?}");

        let Attempt::Acquired(lease) = b.try_acquire_queued("only", ttl, &tb, wait).await.unwrap()
        else {
            panic!("handed to B");
        };
        assert!(b.release(&lease).await.unwrap());
        let got = drain(&mut messages).await;
        assert_eq!(
            got,
            vec![(h.release_channel("only"), "only".to_owned())],
            "nobody queued: the lock name on the release channel"
        );
    })
    .await;
}

/// Two waiters of one process (one backend) on one lock: each handoff
/// reaches that process once and goes to the waiter whose ticket it names,
/// in queue order. A handoff delivered to the wrong waiter, or to none,
/// would leave the second waiting past its wait (the holder's lease is
/// 30 s, the waits 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waiters_of_one_process_each_get_their_own_handoff() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url());
        let holder = manager(&config).await;
        let shared = manager(&config).await;
        let ttl = Duration::from_secs(30);
        let g = holder.acquire("same-process", ttl, PATIENCE).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (m, order) = (shared.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let g = m
                    .acquire("same-process", ttl, Duration::from_secs(20))
                    .await
                    .expect("each waiter gets its handoff");
                order.lock().unwrap().push((i, g.token()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert!(g.release().await.unwrap());
            }));
            until_queued(&server.url(), "same-process", i + 1).await;
        }
        let first = g.token();
        let started = Instant::now();
        assert!(g.release().await.unwrap());
        for t in tasks {
            t.await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "both handoffs delivered, took {:?} (a lost one waits out the 30 s lease)",
            started.elapsed()
        );
        let order = order.lock().unwrap().clone();
        assert_eq!(order.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        assert!(order[0].1 > first && order[1].1 > order[0].1);
    })
    .await;
}

/// A queued waiter whose process hangs but stays connected (its waiter
/// channel still has a subscriber, so the handoff is "heard"): the lock
/// stays with it for at most `min(TTL, what was left of its wait)` (here
/// 5 s), and the live waiter behind it, which is not told of that handoff,
/// tries again when the lease its last attempt saw would expire (here the
/// holder's, 5 s), then when the hung one's would, and gets the lock then:
/// bounded, not blocked until the end of its 60 s wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_queued_waiter_holds_up_the_queue_at_most_until_the_lease_others_saw() {
    let server = PrivateRedis::start(&[]);
    bounded(60, async {
        let config = RedisLockConfig::new(server.url());
        let holder = manager(&config).await;
        let hung = RedisBackend::connect(config.clone()).await.unwrap();
        // Something still subscribed to the hung process's channel.
        let mut deaf = redis::Client::open(server.url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        deaf.subscribe(hung.waiter_channel()).await.unwrap();
        let live = manager(&config).await;
        let ttl = Duration::from_secs(5);
        let live_wait = Duration::from_secs(60);
        let g = holder
            .acquire("hung-waiter", ttl, PATIENCE)
            .await
            .unwrap();
        let ticket = WaitTicket::random();
        assert!(matches!(
            hung.try_acquire_queued("hung-waiter", Duration::from_secs(30), &ticket, ttl)
                .await
                .unwrap(),
            Attempt::Held { .. }
        ));
        drop(hung);
        let waiting = tokio::spawn(async move { live.acquire("hung-waiter", ttl, live_wait).await });
        until_queued(&server.url(), "hung-waiter", 2).await;
        let first = g.token();
        let started = Instant::now();
        assert!(g.release().await.unwrap());
        let got = waiting
            .await
            .unwrap()
            .expect("the live waiter gets the lock once the lease it saw expires");
        assert!(
            started.elapsed() < ttl + Duration::from_secs(10),
            "bounded by the leases the live waiter saw ({ttl:?}), took {:?} (its wait was {live_wait:?})",
            started.elapsed()
        );
        assert!(got.token() > first);
        assert!(got.release().await.unwrap());
        drop(deaf);
    })
    .await;
}

/// The listener's connection is killed around a handoff: a message
/// published while it was away reaches nobody (the release script then
/// hands the lock on, or leaves it free), and the listener wakes every
/// waiter once it is subscribed again, so the waiter tries again and gets
/// the lock well before the holder's lease (30 s) would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_while_the_listener_reconnects_is_not_lost() {
    let server = PrivateRedis::start(&[]);
    bounded(120, async {
        let config = RedisLockConfig::new(server.url());
        let holder = manager(&config).await;
        let waiter = manager(&config).await;
        let ttl = Duration::from_secs(30);
        for round in 0..5 {
            let g = holder.acquire("reconnect", ttl, PATIENCE).await.unwrap();
            let w = waiter.clone();
            let waiting =
                tokio::spawn(
                    async move { w.acquire("reconnect", ttl, Duration::from_secs(25)).await },
                );
            until_queued(&server.url(), "reconnect", 1).await;
            let mut admin = redis::Client::open(server.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut admin)
                .await
                .unwrap();
            // Release at varying moments of the reconnection.
            tokio::time::sleep(Duration::from_millis(10 * round)).await;
            let first = g.token();
            let started = Instant::now();
            assert!(g.release().await.unwrap());
            let got = waiting
                .await
                .unwrap()
                .expect("the waiter gets the lock after the listener is back");
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "round {round}: took {:?} (the holder's lease was {ttl:?})",
                started.elapsed()
            );
            assert!(got.token() > first);
            assert!(got.release().await.unwrap());
        }
    })
    .await;
}
