//! The Redis implementation of the lock port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use manna_lock::{
    async_trait, validate_request, Attempt, FencingToken, Lease, LockBackend, LockError,
    ReleaseNotifier, ReleaseWatch,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tokio::task::JoinHandle;

use crate::scripts::Scripts;
use crate::RedisLockConfig;

/// Locks kept in Redis: the production backend of the lock port.
///
/// - One multiplexed, auto-reconnecting connection (`ConnectionManager`) for
///   all commands, shared by every task using this backend, plus one pub/sub
///   connection that listens for releases.
/// - Acquire is one round trip: a Lua script does `SET key owner NX PX ttl`
///   and, if it succeeded, `INCR`s the lock's fencing counter. Release and
///   extend are compare-and-act scripts on the random owner value; release
///   publishes the lock name so waiters wake at once (no polling).
/// - Keys, with the default namespace: `manna:lock:{NAME}` (the lease) and
///   `manna:lock:{NAME}:fence` (the fencing counter, no TTL); channel
///   `manna:lock:released`. The braces are a Redis Cluster hash tag: both
///   keys of a lock live in the same slot.
/// - Unreachable or silent Redis: calls fail with
///   [`LockError::Unavailable`] naming the URL (password redacted) after at
///   most the response timeout.
///
/// ```no_run
/// # async fn demo() -> Result<(), manna_lock::LockError> {
/// use manna_lock::LockManager;
/// use manna_lock_redis::{RedisBackend, RedisLockConfig};
/// use std::{sync::Arc, time::Duration};
/// let backend = RedisBackend::connect(RedisLockConfig::new("redis://127.0.0.1:6379/0")).await?;
/// let locks = LockManager::new(Arc::new(backend));
/// let guard = locks.lock_resource("plaid_sync", "item-42", Duration::from_secs(30)).await?;
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub struct RedisBackend {
    conn: ConnectionManager,
    scripts: Scripts,
    namespace: String,
    channel: String,
    describe: String,
    secret: Option<String>,
    notifier: ReleaseNotifier,
    listening: Arc<AtomicBool>,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("backend", &self.describe)
            .field("namespace", &self.namespace)
            .field("listening", &self.listening.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisBackend {
    /// Connects to Redis (command connection now, release listener in the
    /// background). Must be called within a Tokio runtime.
    ///
    /// Errors: [`LockError::Unavailable`] when the URL is invalid or the
    /// server cannot be reached within the connect timeout.
    pub async fn connect(config: RedisLockConfig) -> Result<Self, LockError> {
        let describe = config.describe();
        let secret = config.secret();
        let unavailable = |reason: String| LockError::Unavailable {
            backend: describe.clone(),
            reason: scrub(reason, secret.as_deref()),
        };
        let client = Client::open(config.url.as_str())
            .map_err(|e| unavailable(format!("invalid Redis URL: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(config.connect_timeout);
        let conn = match tokio::time::timeout(
            config.connect_timeout + config.response_timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => {
                return Err(unavailable(format!(
                    "no connection within {:?}",
                    config.connect_timeout + config.response_timeout
                )))
            }
        };
        let channel = format!("{}released", config.namespace);
        let notifier = ReleaseNotifier::new();
        let listening = Arc::new(AtomicBool::new(false));
        let listener = tokio::spawn(listen(
            client,
            channel.clone(),
            notifier.clone(),
            Arc::clone(&listening),
            config.connect_timeout,
        ));
        Ok(Self {
            conn,
            scripts: Scripts::new(),
            namespace: config.namespace,
            channel,
            describe,
            secret,
            notifier,
            listening,
            listener,
        })
    }

    /// Connects with the settings of `REDIS_URL`; `Ok(None)` when it is unset.
    pub async fn from_env() -> Result<Option<Self>, LockError> {
        match RedisLockConfig::from_env() {
            Some(config) => Self::connect(config).await.map(Some),
            None => Ok(None),
        }
    }

    /// One `PING` round trip on the command connection (health checks,
    /// benchmarks).
    pub async fn ping(&self) -> Result<(), LockError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.map_err(e))
    }

    /// Whether the release listener is subscribed (waiters are woken by
    /// notification rather than backoff).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for the release listener to subscribe; `true`
    /// if it did.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_listening() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// The key holding the lease of lock `name`.
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}{{{name}}}", self.namespace)
    }

    /// The key holding the fencing counter of lock `name`.
    pub fn fence_key(&self, name: &str) -> String {
        format!("{}{{{name}}}:fence", self.namespace)
    }

    fn map_err(&self, e: RedisError) -> LockError {
        let reason = scrub(e.to_string(), self.secret.as_deref());
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            LockError::Unavailable {
                backend: self.describe.clone(),
                reason,
            }
        } else {
            LockError::Backend {
                backend: self.describe.clone(),
                reason,
            }
        }
    }

    fn ttl_ms(ttl: Duration) -> u64 {
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

fn scrub(reason: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if reason.contains(s) => reason.replace(s, "***"),
        _ => reason,
    }
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let owner = format!("{:032x}", rand::random::<u128>());
        let mut conn = self.conn.clone();
        let (acquired, value): (i64, i64) = self
            .scripts
            .acquire
            .key(self.lock_key(name))
            .key(self.fence_key(name))
            .arg(&owner)
            .arg(Self::ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        if acquired == 1 {
            let token = u64::try_from(value).map_err(|_| LockError::Backend {
                backend: self.describe.clone(),
                reason: format!("fencing counter is negative ({value})"),
            })?;
            Ok(Attempt::Acquired(Lease::new(
                name,
                owner,
                FencingToken::new(token),
                ttl,
            )))
        } else {
            // PTTL: -1 no expiry, -2 gone meanwhile (cannot happen inside the
            // script, but stay total).
            let expires_in = u64::try_from(value).ok().map(Duration::from_millis);
            Ok(Attempt::Held { expires_in })
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .scripts
            .release
            .key(self.lock_key(lease.name()))
            .arg(lease.owner())
            .arg(&self.channel)
            .arg(lease.name())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(released == 1)
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError> {
        validate_request(lease.name(), ttl)?;
        let mut conn = self.conn.clone();
        let extended: i64 = self
            .scripts
            .extend
            .key(self.lock_key(lease.name()))
            .arg(lease.owner())
            .arg(Self::ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        if extended == 1 {
            Ok(())
        } else {
            Err(LockError::NotHolder {
                name: lease.name().to_owned(),
            })
        }
    }

    async fn is_held(&self, lease: &Lease) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = redis::cmd("GET")
            .arg(self.lock_key(lease.name()))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(owner.as_deref() == Some(lease.owner()))
    }

    fn watch(&self, name: &str) -> ReleaseWatch {
        if self.is_listening() {
            self.notifier.watch(name)
        } else {
            ReleaseWatch::unsupported()
        }
    }
}

/// Keeps a pub/sub connection subscribed to the release channel, forwarding
/// each released name to the notifier; reconnects with backoff.
async fn listen(
    client: Client,
    channel: String,
    notifier: ReleaseNotifier,
    listening: Arc<AtomicBool>,
    connect_timeout: Duration,
) {
    let mut delay = Duration::from_millis(20);
    loop {
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(pubsub)) => {
                delay = Duration::from_millis(20);
                listening.store(true, Ordering::Release);
                // Releases may have been missed while we were away.
                notifier.wake_all();
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(name) = msg.get_payload::<String>() {
                        notifier.notify(&name);
                    }
                }
                listening.store(false, Ordering::Release);
                notifier.wake_all();
                tracing::warn!(%channel, "lock release listener disconnected; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "lock release listener cannot connect"),
            Err(_) => tracing::debug!("lock release listener connect timed out"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
