//! Test support (feature `testing`): [`redis_test_url`], and a register kept in Redis whose writes
//! are fenced by lock tokens, standing in for a store that checks fencing
//! tokens (as `manna-store-diesel` does in SQL).

use manna_lock::{FencingToken, LockError};
use redis::aio::ConnectionManager;
use redis::{Client, Script};

use crate::RedisLockConfig;

/// KEYS[1] register; ARGV[1] token, ARGV[2] value. Refuses (0) a token lower
/// than the highest one accepted so far; otherwise stores both (1).
const FENCED_WRITE: &str = r"
local seen = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
if tonumber(ARGV[1]) < seen then
  return 0
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'value', ARGV[2])
return 1
";

/// A `u64` register in a Redis hash that only accepts writes carrying a
/// fencing token at least as high as every token it accepted before.
#[derive(Clone)]
pub struct FencedRegister {
    conn: ConnectionManager,
    key: String,
    script: Script,
}

impl std::fmt::Debug for FencedRegister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedRegister")
            .field("key", &self.key)
            .finish()
    }
}

fn unavailable(config: &RedisLockConfig, e: &redis::RedisError) -> LockError {
    LockError::Unavailable {
        backend: config.describe(),
        reason: e.to_string(),
    }
}

impl FencedRegister {
    /// Opens the register stored at `key`.
    pub async fn open(config: &RedisLockConfig, key: impl Into<String>) -> Result<Self, LockError> {
        let client = Client::open(config.url.as_str()).map_err(|e| unavailable(config, &e))?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(|e| unavailable(config, &e))?;
        Ok(Self {
            conn,
            key: key.into(),
            script: Script::new(FENCED_WRITE),
        })
    }

    /// The current value and the highest accepted token (0, 0 when empty).
    pub async fn read(&self) -> Result<(u64, u64), redis::RedisError> {
        let mut conn = self.conn.clone();
        let (value, token): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&self.key)
            .arg("value")
            .arg("token")
            .query_async(&mut conn)
            .await?;
        Ok((value.unwrap_or(0), token.unwrap_or(0)))
    }

    /// Writes `value` if `token` is not stale; `Ok(false)` when refused.
    pub async fn write(&self, token: FencingToken, value: u64) -> Result<bool, redis::RedisError> {
        let mut conn = self.conn.clone();
        let accepted: i64 = self
            .script
            .key(&self.key)
            .arg(token.get())
            .arg(value)
            .invoke_async(&mut conn)
            .await?;
        Ok(accepted == 1)
    }

    /// Deletes the register.
    pub async fn clear(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(&self.key)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
    }
}

/// The Redis server tests use: `MANNA_TEST_REDIS_URL`, else
/// `redis://127.0.0.1:6379/0`. Panics, saying what to start, when nothing
/// listens there: a test that needs Redis fails loudly, it never skips.
pub fn redis_test_url() -> String {
    let url = std::env::var("MANNA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let authority = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if std::net::TcpStream::connect(addr).is_err() {
        panic!(
            "Redis is not reachable at {addr}: start it with `redis-server --daemonize yes \
             --port 6379 --save '' --appendonly no` (or run `bash .ci/run`), or set \
             MANNA_TEST_REDIS_URL"
        );
    }
    url
}
