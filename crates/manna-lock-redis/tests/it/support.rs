use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manna_lock_redis::{RedisBackend, RedisLockConfig};

/// The shared test Redis.
pub(crate) fn shared_url() -> String {
    manna_lock_redis::testing::redis_test_url()
}

pub(crate) async fn shared_backend() -> RedisBackend {
    let url = shared_url();
    let backend = RedisBackend::connect(RedisLockConfig::new(&url))
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach the test Redis ({e}); start one with `redis-server --port 6379 --daemonize yes` or set REDIS_URL")
        });
    assert!(
        backend.wait_listening(Duration::from_secs(5)).await,
        "release listener did not subscribe"
    );
    backend
}

/// Several clients (separate connections) of the shared Redis.
pub(crate) async fn shared_clients(n: usize) -> Vec<Arc<RedisBackend>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Arc::new(shared_backend().await));
    }
    v
}

/// A redis-server process of our own, on a free port, killed on drop.
pub(crate) struct PrivateRedis {
    pub(crate) port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl PrivateRedis {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed (apt-get install redis-server) for the fault tests",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                // Any reply (even NOAUTH) means the server is serving.
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 64];
                    if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "private redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGSTOP: the server stops answering but keeps its sockets.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (data is gone: no persistence).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Bounds a whole test.
pub(crate) async fn bounded<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test exceeded its time bound")
}

/// Acquires `name` once Redis answers again (after a restart), retrying
/// while it is unavailable; at most 30 s.
pub(crate) async fn acquire_when_back(
    m: &manna_lock::LockManager,
    name: &str,
    ttl: Duration,
) -> manna_lock::LockGuard {
    bounded(30, async {
        loop {
            match m.acquire(name, ttl, Duration::from_secs(1)).await {
                Ok(g) => break g,
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
}

/// A plain connection to the Redis at `url`, for inspecting it.
pub(crate) async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// How long a test waits for something that takes milliseconds (a spawned
/// waiter queuing or subscribing) before it calls it broken: generous, so
/// that a loaded machine cannot fail a test by being slow.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `true`, for up to [`PATIENCE`]; panics
/// naming `what` otherwise.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many wait tickets are queued in `queue_key` (a sorted set).
pub(crate) async fn queued(admin: &mut redis::aio::MultiplexedConnection, queue_key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(queue_key)
        .query_async(admin)
        .await
        .unwrap()
}

/// How many clients are subscribed to `channel`.
pub(crate) async fn numsub(admin: &mut redis::aio::MultiplexedConnection, channel: &str) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(admin)
        .await
        .unwrap();
    n
}

/// `CONFIG RESETSTAT`: the command counts start again from zero.
pub(crate) async fn reset_stats(admin: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(admin)
        .await
        .unwrap();
}

/// How many scripts ran (`EVALSHA` and `EVAL` calls) since the last
/// [`reset_stats`], with the whole `INFO commandstats` for a failure
/// message.
pub(crate) async fn script_calls(admin: &mut redis::aio::MultiplexedConnection) -> (u64, String) {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    let calls = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (calls, stats)
}
