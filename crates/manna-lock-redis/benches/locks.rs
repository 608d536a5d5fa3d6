//! Lock benchmarks against the Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379/0`).
//!
//! - `lock_uncontended`: acquire + release with no contention, next to the
//!   cost of one and two `PING` round trips on the same connection, and the
//!   same loop with the `rslock` crate.
//! - `lock_handoff`: time from a holder's release to a waiting acquirer
//!   holding the lock.
//! - `lock_contended`: two contenders (separate connections) each take and
//!   release the same lock; one iteration = one acquisition by each. manna
//!   waits on release notifications; rslock retries after a random delay
//!   (default: up to 200 ms; also measured with 5 ms).
//! - `lock_contended_8`: eight tasks (each its own connection) repeatedly
//!   take and release ONE lock; one iteration = one acquisition by each
//!   (throughput in acquisitions). Next to it, the same eight acquisitions
//!   made by one task without contention (`manna_uncontended_8_in_a_row`,
//!   the rate a lock that never idles would reach), and `rslock` with eight
//!   contenders retrying every 5 ms (with its default retry delay, up to
//!   200 ms between tries, the group would take far longer; not measured).
//!   Before the group, one fixed run of each contended variant prints the
//!   Redis commands per acquisition (from `INFO commandstats`: those the
//!   clients send, and all of them counting the commands scripts run;
//!   anything else using the same Redis meanwhile counts too), then a 2 s
//!   run of each prints how many acquisitions each task made (starvation:
//!   each relative to the mean).
//!
//! `cargo bench -p manna-lock-redis --bench locks`
#![allow(missing_docs, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use manna_lock::{Attempt, LockBackend, LockManager};
use manna_lock_redis::{RedisBackend, RedisLockConfig};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn backend() -> Arc<RedisBackend> {
    let b = RedisBackend::connect(RedisLockConfig::new(url()))
        .await
        .expect("the benches need Redis: start redis-server on 127.0.0.1:6379 or set REDIS_URL");
    assert!(b.wait_listening(Duration::from_secs(5)).await);
    Arc::new(b)
}

fn uncontended(c: &mut Criterion) {
    // One thread: no cross-thread wake-ups, so the figures measure the
    // round trips and the code, not the scheduler of a busy machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let backend = rt.block_on(backend());
    let manager = LockManager::new(backend.clone() as Arc<dyn LockBackend>);
    let ttl = Duration::from_secs(10);
    let rslock = rslock::LockManager::new(vec![url()]);

    let mut g = c.benchmark_group("lock_uncontended");
    g.bench_function("redis_ping", |b| {
        b.to_async(&rt)
            .iter(|| async { backend.ping().await.expect("ping") })
    });
    g.bench_function("redis_ping_x2", |b| {
        b.to_async(&rt).iter(|| async {
            backend.ping().await.expect("ping");
            backend.ping().await.expect("ping");
        })
    });
    g.bench_function("manna_backend_acquire_release", |b| {
        b.to_async(&rt).iter(|| async {
            let Ok(Attempt::Acquired(lease)) = backend.try_acquire("bench:port", ttl).await else {
                panic!("lock is free")
            };
            assert!(backend.release(&lease).await.expect("release"));
        })
    });
    g.bench_function("manna_manager_acquire_release", |b| {
        b.to_async(&rt).iter(|| async {
            let guard = manager
                .acquire("bench:manager", ttl, Duration::from_secs(1))
                .await
                .expect("acquire");
            assert!(guard.release().await.expect("release"));
        })
    });
    g.bench_function("rslock_lock_unlock", |b| {
        b.to_async(&rt).iter(|| async {
            let lock = rslock.lock("bench:rslock", ttl).await.expect("rslock lock");
            rslock.unlock(&lock).await;
        })
    });
    g.finish();
}

fn handoff(c: &mut Criterion) {
    let rt = runtime();
    let holder = LockManager::new(rt.block_on(backend()) as Arc<dyn LockBackend>);
    let waiter = LockManager::new(rt.block_on(backend()) as Arc<dyn LockBackend>);
    let ttl = Duration::from_secs(30);
    let mut g = c.benchmark_group("lock_handoff");
    g.bench_function("release_to_waiter_acquired", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (holder, waiter) = (holder.clone(), waiter.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let guard = holder
                        .acquire("bench:handoff", ttl, Duration::from_secs(5))
                        .await
                        .expect("holder");
                    let w = waiter.clone();
                    let task = tokio::spawn(async move {
                        let g = w
                            .acquire("bench:handoff", ttl, Duration::from_secs(5))
                            .await
                            .expect("waiter");
                        let at = Instant::now();
                        assert!(g.release().await.expect("release"));
                        at
                    });
                    // Let the waiter find the lock held and block on its watch.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let released = Instant::now();
                    assert!(guard.release().await.expect("release"));
                    let acquired = task.await.expect("waiter task");
                    total += acquired - released;
                }
                total
            }
        })
    });
    let rs_holder = Arc::new(rslock::LockManager::new(vec![url()]));
    let rs_waiter = Arc::new(rslock::LockManager::new(vec![url()]));
    g.sample_size(10);
    g.bench_function("rslock_release_to_waiter_acquired", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (holder, waiter) = (rs_holder.clone(), rs_waiter.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let guard = holder
                        .acquire("bench:rslock-handoff", ttl)
                        .await
                        .expect("holder");
                    let w = waiter.clone();
                    let task = tokio::spawn(async move {
                        let g = w
                            .acquire("bench:rslock-handoff", ttl)
                            .await
                            .expect("waiter");
                        let at = Instant::now();
                        g.release().await;
                        at
                    });
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let released = Instant::now();
                    guard.release().await;
                    let acquired = task.await.expect("waiter task");
                    total += acquired - released;
                }
                total
            }
        })
    });
    g.finish();
}

/// Every manager takes and releases lock `name` `iters` times, all at once;
/// the wall time of the round.
async fn manna_round(managers: Vec<LockManager>, iters: u64, name: &'static str) -> Duration {
    let ttl = Duration::from_secs(10);
    let started = Instant::now();
    let tasks: Vec<_> = managers
        .into_iter()
        .map(|m| {
            tokio::spawn(async move {
                for _ in 0..iters {
                    let g = m
                        .acquire(name, ttl, Duration::from_secs(60))
                        .await
                        .expect("acquire");
                    tokio::task::yield_now().await;
                    assert!(g.release().await.expect("release"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("contender");
    }
    started.elapsed()
}

/// The same round with rslock.
async fn rslock_round(
    locks: Vec<Arc<rslock::LockManager>>,
    iters: u64,
    name: &'static str,
) -> Duration {
    let ttl = Duration::from_secs(10);
    let started = Instant::now();
    let tasks: Vec<_> = locks
        .into_iter()
        .map(|m| {
            tokio::spawn(async move {
                for _ in 0..iters {
                    let guard = m.acquire(name, ttl).await.expect("rslock acquire");
                    tokio::task::yield_now().await;
                    guard.release().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("contender");
    }
    started.elapsed()
}

fn contended(c: &mut Criterion) {
    let rt = runtime();
    let managers = [
        LockManager::new(rt.block_on(backend()) as Arc<dyn LockBackend>),
        LockManager::new(rt.block_on(backend()) as Arc<dyn LockBackend>),
    ];
    let mut g = c.benchmark_group("lock_contended");
    g.sample_size(10);
    g.bench_function("manna_2_contenders", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| manna_round(managers.to_vec(), iters, "bench:contended"))
    });
    for (label, delay) in [
        ("rslock_default_2_contenders", None),
        (
            "rslock_retry_5ms_2_contenders",
            Some(Duration::from_millis(5)),
        ),
    ] {
        let locks: Vec<Arc<rslock::LockManager>> = (0..2)
            .map(|_| {
                let mut m = rslock::LockManager::new(vec![url()]);
                if let Some(d) = delay {
                    m.set_retry(3, d);
                }
                Arc::new(m)
            })
            .collect();
        g.bench_function(label, |b| {
            b.to_async(&rt)
                .iter_custom(|iters| rslock_round(locks.clone(), iters, "bench:rslock-contended"))
        });
    }
    g.finish();
}

/// Sum of `calls=` per command in `INFO commandstats`.
async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (cmd, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((cmd.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

const CONTENDERS: usize = 8;

/// The commands a manna client sends (one round trip each); the others in
/// `INFO commandstats` are run by the scripts inside Redis. For `rslock`,
/// its `SET NX` too.
const SENT: &[&str] = &["evalsha", "eval", "script|load", "subscribe", "unsubscribe"];

/// How long the fairness run lets the contenders compete.
const FAIRNESS_RUN: Duration = Duration::from_secs(2);

/// Every manager takes and releases lock `name` as often as it can for
/// `run`; how many times each did.
async fn manna_timed(managers: Vec<LockManager>, run: Duration, name: &'static str) -> Vec<u64> {
    let ttl = Duration::from_secs(10);
    let until = Instant::now() + run;
    let tasks: Vec<_> = managers
        .into_iter()
        .map(|m| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    let g = m
                        .acquire(name, ttl, Duration::from_secs(60))
                        .await
                        .expect("acquire");
                    tokio::task::yield_now().await;
                    assert!(g.release().await.expect("release"));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.expect("contender"));
    }
    counts
}

/// The same with rslock.
async fn rslock_timed(
    locks: Vec<Arc<rslock::LockManager>>,
    run: Duration,
    name: &'static str,
) -> Vec<u64> {
    let ttl = Duration::from_secs(10);
    let until = Instant::now() + run;
    let tasks: Vec<_> = locks
        .into_iter()
        .map(|m| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    let guard = m.acquire(name, ttl).await.expect("rslock acquire");
                    tokio::task::yield_now().await;
                    guard.release().await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.expect("contender"));
    }
    counts
}

fn contended_8(c: &mut Criterion) {
    let rt = runtime();
    let managers: Vec<LockManager> = (0..CONTENDERS)
        .map(|_| LockManager::new(rt.block_on(backend()) as Arc<dyn LockBackend>))
        .collect();
    let rslocks: Vec<Arc<rslock::LockManager>> = (0..CONTENDERS)
        .map(|_| {
            let mut m = rslock::LockManager::new(vec![url()]);
            m.set_retry(3, Duration::from_millis(5));
            Arc::new(m)
        })
        .collect();
    let ttl = Duration::from_secs(10);

    // Redis commands per acquisition and fairness, once, outside the
    // measurements.
    rt.block_on(async {
        let mut conn = redis::Client::open(url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        let per_task = 100u64;
        let acquisitions = per_task * CONTENDERS as u64;
        for (label, run) in [("manna", 0), ("rslock_retry_5ms", 1)] {
            let before = command_calls(&mut conn).await;
            let took = if run == 0 {
                manna_round(managers.clone(), per_task, "bench:contended-8-count").await
            } else {
                rslock_round(rslocks.clone(), per_task, "bench:rslock-contended-8").await
            };
            let after = command_calls(&mut conn).await;
            let mut parts = Vec::new();
            let (mut total, mut sent) = (0u64, 0u64);
            for (cmd, n) in &after {
                let d = n - before.get(cmd).copied().unwrap_or(0);
                if d > 0 && cmd != "info" {
                    total += d;
                    if SENT.contains(&cmd.as_str()) || (run == 1 && cmd == "set") {
                        sent += d;
                    }
                    parts.push(format!("{cmd} {:.2}", d as f64 / acquisitions as f64));
                }
            }
            eprintln!(
                "lock_contended_8/{label}: {acquisitions} acquisitions by {CONTENDERS} tasks in {took:?}; Redis commands per acquisition: {:.2} sent by clients, {:.2} counting those run inside scripts ({})",
                sent as f64 / acquisitions as f64,
                total as f64 / acquisitions as f64,
                parts.join(", ")
            );
        }
        // Starvation: every task takes the lock as often as it can for the
        // same time; each task's count relative to the mean.
        for (label, counts) in [
            (
                "manna",
                manna_timed(managers.clone(), FAIRNESS_RUN, "bench:contended-8-fair").await,
            ),
            (
                "rslock_retry_5ms",
                rslock_timed(rslocks.clone(), FAIRNESS_RUN, "bench:rslock-contended-8-fair").await,
            ),
        ] {
            let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
            let min = counts.iter().copied().min().unwrap_or(0) as f64;
            let max = counts.iter().copied().max().unwrap_or(0) as f64;
            eprintln!(
                "lock_contended_8/{label}: acquisitions per task in {FAIRNESS_RUN:?}: {counts:?}; min {:.2}x, max {:.2}x the mean",
                min / mean,
                max / mean
            );
        }
    });

    let mut g = c.benchmark_group("lock_contended_8");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CONTENDERS as u64));
    g.bench_function("manna_uncontended_8_in_a_row", |b| {
        let m = managers[0].clone();
        b.to_async(&rt).iter(|| {
            let m = m.clone();
            async move {
                for _ in 0..CONTENDERS {
                    let g = m
                        .acquire("bench:uncontended-8", ttl, Duration::from_secs(1))
                        .await
                        .expect("acquire");
                    assert!(g.release().await.expect("release"));
                }
            }
        })
    });
    g.bench_function("manna_8_contenders", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| manna_round(managers.clone(), iters, "bench:contended-8"))
    });
    g.bench_function("rslock_retry_5ms_8_contenders", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| rslock_round(rslocks.clone(), iters, "bench:rslock-contended-8"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = uncontended, handoff, contended, contended_8
}
criterion_main!(benches);
