//! The Redis implementation of the lock port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use manna_lock::{
    async_trait, holder_description, validate_request, Attempt, FencingToken, Lease, LockBackend,
    LockError, ReleaseNotifier, ReleaseWatch, SessionId, MAX_WAIT_CHAIN,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, RedisError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::scripts::Scripts;
use crate::RedisLockConfig;

/// Locks kept in Redis: the production backend of the lock port.
///
/// - One multiplexed, auto-reconnecting connection (`ConnectionManager`) for
///   all commands, shared by every task using this backend, plus one pub/sub
///   connection on which waiters subscribe to the locks they wait for.
/// - Acquire is one round trip: a Lua script does `SET key owner NX PX ttl`
///   and, if it succeeded, makes the fencing token
///   `max(counter + 1, server time in µs)` (so tokens keep increasing when
///   the counter goes back: a restore from an older snapshot, a failover to
///   a lagging replica); if it did not, it returns the holder's remaining
///   TTL and owner value. The script runs in a task of its own, which
///   releases a lease whose caller gave up before the answer came. Release and
///   extend are compare-and-act scripts on the owner value; release
///   publishes the lock name so waiters wake at once (no polling).
/// - The owner value is 128 random bits in hex, `;`, and the holder's
///   description ([`manna_lock::holder_description`]), which a refused
///   caller gets back in [`Attempt::Held`].
/// - Keys, with the default namespace: `manna:lock:{NAME}` (the lease) and
///   `manna:lock:{NAME}:fence` (the fencing counter, no TTL); releases are
///   published on `manna:lock:{NAME}:released`, to which only waiters
///   subscribe (an uncontended release is delivered to nobody). The braces
///   are a Redis Cluster hash tag: both keys of a lock live in the same slot.
/// - Deadlock detection ([`manna_lock::LockSession`]): a session's lease
///   carries its session id in the owner value (`random@session;holder`),
///   and a waiting session records its wait-for edge in
///   `manna:lock:waits:SESSION` (the lock name, expiring with the wait). One
///   script takes the lock or, if it is held, follows holder → session →
///   awaited lock → … and either refuses with [`LockError::Deadlock`] or
///   records the edge: atomic, so of two sessions closing a cycle exactly
///   the second is told. The walk touches keys of other locks: one Redis
///   server, not Redis Cluster.
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
    scripts: Arc<Scripts>,
    namespace: String,
    describe: String,
    /// The URL as given (with its password): only to scrub driver messages.
    url: String,
    response_timeout: Duration,
    notifier: ReleaseNotifier,
    subs: Arc<Subscriptions>,
    listener: JoinHandle<()>,
}

/// The per-lock release channels this backend's waiters are subscribed to,
/// and the sink of the pub/sub connection (`None` while disconnected).
struct Subscriptions {
    counts: std::sync::Mutex<HashMap<String, usize>>,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    listening: watch::Sender<bool>,
}

impl Subscriptions {
    fn new() -> Self {
        Self {
            counts: std::sync::Mutex::default(),
            sink: tokio::sync::Mutex::default(),
            listening: watch::Sender::new(false),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Updates are single inserts/removes: a poisoned map is still sound.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends a watch's share of a channel subscription; the last one out
/// unsubscribes.
struct SubscriptionShare {
    subs: Arc<Subscriptions>,
    channel: String,
    timeout: Duration,
}

impl Drop for SubscriptionShare {
    fn drop(&mut self) {
        let last = {
            let mut counts = self.subs.counts();
            match counts.get_mut(&self.channel) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    counts.remove(&self.channel);
                    true
                }
            }
        };
        if !last {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (subs, channel, timeout) = (
            Arc::clone(&self.subs),
            std::mem::take(&mut self.channel),
            self.timeout,
        );
        drop(handle.spawn(async move {
            let mut sink = subs.sink.lock().await;
            // Re-check under the sink lock: a new watch may have subscribed.
            if subs.counts().contains_key(&channel) {
                return;
            }
            if let Some(sink) = sink.as_mut() {
                let _ = tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await;
            }
        }));
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("backend", &self.describe)
            .field("namespace", &self.namespace)
            .field("listening", &self.is_listening())
            .finish()
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisBackend {
    /// Connects to Redis: the command connection, then the release
    /// listener's pub/sub connection, so that the first waiters are woken by
    /// release notifications. Must be called within a Tokio runtime.
    ///
    /// If the listener cannot subscribe within the connect timeout (the
    /// command connection works), `connect` still succeeds, logs a warning
    /// and keeps trying in the background; until then waiters fall back to
    /// backoff ([`RedisBackend::is_listening`] says which).
    ///
    /// Errors: [`LockError::Unavailable`] when the URL is invalid or the
    /// server cannot be reached within the connect timeout.
    pub async fn connect(config: RedisLockConfig) -> Result<Self, LockError> {
        let describe = config.describe();
        let unavailable = |reason: String| LockError::Unavailable {
            backend: describe.clone(),
            reason: config.scrub(&reason),
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
            config
                .connect_timeout
                .saturating_add(config.response_timeout),
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => {
                return Err(unavailable(format!(
                    "no connection within {:?}",
                    config
                        .connect_timeout
                        .saturating_add(config.response_timeout)
                )))
            }
        };
        let notifier = ReleaseNotifier::new();
        let subs = Arc::new(Subscriptions::new());
        let listener = tokio::spawn(listen(
            client,
            notifier.clone(),
            Arc::clone(&subs),
            config.connect_timeout,
        ));
        let backend = Self {
            conn,
            scripts: Arc::new(Scripts::new()),
            namespace: config.namespace,
            describe,
            url: config.url,
            response_timeout: config.response_timeout,
            notifier,
            subs,
            listener,
        };
        if !backend
            .wait_listening(
                config
                    .connect_timeout
                    .saturating_add(config.response_timeout),
            )
            .await
        {
            tracing::warn!(
                backend = %backend.describe,
                "lock release listener not subscribed yet; waiters use backoff until it is"
            );
        }
        Ok(backend)
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
        *self.subs.listening.borrow()
    }

    /// Waits up to `timeout` for the release listener to subscribe; `true`
    /// if it did. [`RedisBackend::connect`] already waits for it; this is for
    /// after a reconnection.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let mut rx = self.subs.listening.subscribe();
        let subscribed = tokio::time::timeout(timeout, rx.wait_for(|listening| *listening))
            .await
            .is_ok_and(|r| r.is_ok());
        subscribed
    }

    /// The key holding the lease of lock `name`.
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}{{{name}}}", self.namespace)
    }

    /// The key holding the fencing counter of lock `name`.
    pub fn fence_key(&self, name: &str) -> String {
        format!("{}{{{name}}}:fence", self.namespace)
    }

    /// The key holding the wait-for edge of a waiting session (its value is
    /// the name of the lock the session waits for).
    pub fn wait_key(&self, session: &SessionId) -> String {
        format!("{}waits:{session}", self.namespace)
    }

    /// The channel on which releases of lock `name` are published.
    pub fn release_channel(&self, name: &str) -> String {
        format!("{}{{{name}}}:released", self.namespace)
    }

    fn map_err(&self, e: RedisError) -> LockError {
        let reason = manna_lock::redact::scrub_message(&e.to_string(), &self.url);
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

    /// One acquire script call: the plain one, or the session-aware one
    /// with deadlock detection when `session` (id, edge TTL) is given.
    async fn attempt(
        &self,
        name: &str,
        ttl: Duration,
        session: Option<(&SessionId, Duration)>,
    ) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| LockError::Invalid {
            reason: "the Redis lock must be used from within a Tokio runtime".into(),
        })?;
        let call = AcquireCall {
            conn: self.conn.clone(),
            scripts: Arc::clone(&self.scripts),
            lock_key: self.lock_key(name),
            fence_key: self.fence_key(name),
            channel: self.release_channel(name),
            name: name.to_owned(),
            owner: owner_value(
                rand::random::<u128>(),
                session.map(|(id, _)| id),
                &holder_description(),
            ),
            ttl_ms: Self::ttl_ms(ttl),
            session: session.map(|(id, edge)| SessionArgs {
                id: id.to_string(),
                wait_key: self.wait_key(id),
                // A non-zero edge stays non-zero in milliseconds.
                edge_ms: if edge.is_zero() {
                    0
                } else {
                    Self::ttl_ms(edge).max(1)
                },
                namespace: self.namespace.clone(),
            }),
        };
        let owner = call.owner.clone();
        // The script runs in a task of its own, so that a caller who gives up
        // (its wait ran out) does not leave a lease nobody knows about: the
        // task still gets Redis's answer and releases what it acquired.
        let (tx, rx) = oneshot::channel();
        drop(handle.spawn(call.run(tx)));
        let (acquired, value, held_by, cycle) = rx
            .await
            .map_err(|_| LockError::Backend {
                backend: self.describe.clone(),
                reason: "the acquire task ended without an answer".into(),
            })?
            .map_err(|e| self.map_err(e))?;
        if acquired == 2 {
            return Err(LockError::Deadlock { cycle });
        }
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
            Ok(Attempt::Held {
                expires_in,
                holder: holder_of(&held_by).map(str::to_owned),
            })
        }
    }

    fn ttl_ms(ttl: Duration) -> u64 {
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Separates the random part of an owner value from the holder description.
const HOLDER_SEPARATOR: char = ';';

/// The owner value stored in the lock key: 32 hex digits of randomness,
/// `@` and the session id for a session's lease
/// ([`manna_lock::owner_value`]), then `;` and the holder description
/// (`…;host db-7 pid 4242 since …`). Release and extend compare the whole
/// value, so the description and the session cost no extra key and no extra
/// round trip.
fn owner_value(random: u128, session: Option<&SessionId>, holder: &str) -> String {
    let owner = manna_lock::owner_value(&format!("{random:032x}"), session);
    format!("{owner}{HOLDER_SEPARATOR}{holder}")
}

/// The holder description in an owner value (`None` for a bare random value,
/// as older clients store).
fn holder_of(owner: &str) -> Option<&str> {
    owner
        .split_once(HOLDER_SEPARATOR)
        .map(|(_, holder)| holder)
        .filter(|h| !h.is_empty())
}

/// The answer of the acquire scripts: `(1 acquired / 0 held / 2 deadlock,
/// token or PTTL, holder's owner value, cycle)`.
type AcquireReply = (i64, i64, String, Vec<String>);

/// What the session-aware acquire script needs besides the lock.
struct SessionArgs {
    id: String,
    wait_key: String,
    edge_ms: u64,
    namespace: String,
}

/// One acquire script call, owning everything it needs to run in a task of
/// its own (and to release what it acquired when nobody is waiting for it).
struct AcquireCall {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    lock_key: String,
    fence_key: String,
    channel: String,
    name: String,
    owner: String,
    ttl_ms: u64,
    session: Option<SessionArgs>,
}

impl AcquireCall {
    /// Runs the script and hands the answer to `reply`. If the lease was
    /// acquired but nobody takes the answer (the caller gave up), or the
    /// answer was lost (a response timeout: Redis may still run the script),
    /// releases this call's owner value, best effort. Releasing it is always
    /// safe: nobody else has that owner value.
    async fn run(mut self, reply: oneshot::Sender<Result<AcquireReply, RedisError>>) {
        let answer: Result<AcquireReply, RedisError> = match &self.session {
            None => self
                .scripts
                .acquire
                .key(&self.lock_key)
                .key(&self.fence_key)
                .arg(&self.owner)
                .arg(self.ttl_ms)
                .invoke_async(&mut self.conn)
                .await
                .map(|(acquired, value, owner): (i64, i64, String)| {
                    (acquired, value, owner, Vec::new())
                }),
            Some(session) => {
                self.scripts
                    .acquire_in_session
                    .key(&self.lock_key)
                    .key(&self.fence_key)
                    .key(&session.wait_key)
                    .arg(&self.owner)
                    .arg(self.ttl_ms)
                    .arg(&session.id)
                    .arg(&self.name)
                    .arg(session.edge_ms)
                    .arg(&session.namespace)
                    .arg(MAX_WAIT_CHAIN)
                    .invoke_async(&mut self.conn)
                    .await
            }
        };
        // A timeout or a connection dropped after the script was written:
        // Redis may run it later, and the lease would be nobody's.
        let answer_lost = answer
            .as_ref()
            .is_err_and(|e| e.is_timeout() || e.is_connection_dropped());
        let orphaned = match reply.send(answer) {
            Ok(()) => answer_lost,
            // Nobody took the answer: release if it was a grant.
            Err(answer) => answer_lost || answer.is_ok_and(|(acquired, ..)| acquired == 1),
        };
        if orphaned {
            self.release_orphan().await;
        }
    }

    async fn release_orphan(&mut self) {
        let released: Result<i64, RedisError> = self
            .scripts
            .release
            .key(&self.lock_key)
            .arg(&self.owner)
            .arg(&self.channel)
            .arg(&self.name)
            .invoke_async(&mut self.conn)
            .await;
        match released {
            Ok(1) => {
                tracing::debug!(lock = %self.name, "released a lease acquired for a caller that gave up")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(lock = %self.name, error = %e, "could not release a lease nobody received; it expires after its TTL")
            }
        }
    }
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        self.attempt(name, ttl, None).await
    }

    async fn try_acquire_in_session(
        &self,
        name: &str,
        ttl: Duration,
        session: &SessionId,
        wait_edge: Duration,
    ) -> Result<Attempt, LockError> {
        self.attempt(name, ttl, Some((session, wait_edge))).await
    }

    async fn end_wait(&self, session: &SessionId, name: &str) -> Result<(), LockError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .end_wait
            .key(self.wait_key(session))
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .scripts
            .release
            .key(self.lock_key(lease.name()))
            .arg(lease.owner())
            .arg(self.release_channel(lease.name()))
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
        if !self.is_listening() {
            return ReleaseWatch::unsupported();
        }
        let channel = self.release_channel(name);
        *self.subs.counts().entry(channel.clone()).or_insert(0) += 1;
        let share = SubscriptionShare {
            subs: Arc::clone(&self.subs),
            channel: channel.clone(),
            timeout: self.response_timeout,
        };
        let subs = Arc::clone(&self.subs);
        let timeout = self.response_timeout;
        self.notifier
            .watch(name)
            .when_ready(async move {
                let mut sink = subs.sink.lock().await;
                match sink.as_mut() {
                    // SUBSCRIBE is idempotent; its confirmation means every
                    // later release on the channel reaches us.
                    Some(sink) => matches!(
                        tokio::time::timeout(timeout, sink.subscribe(&channel)).await,
                        Ok(Ok(()))
                    ),
                    None => false,
                }
            })
            .on_drop(share)
    }
}

/// Keeps a pub/sub connection open, subscribed to the release channels that
/// waiters need, forwarding each released name to the notifier; reconnects
/// with backoff and resubscribes.
async fn listen(
    client: Client,
    notifier: ReleaseNotifier,
    subs: Arc<Subscriptions>,
    connect_timeout: Duration,
) {
    let mut delay = Duration::from_millis(20);
    loop {
        let connected = tokio::time::timeout(connect_timeout, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            let channels: Vec<String> = subs.counts().keys().cloned().collect();
            if !channels.is_empty() {
                sink.subscribe(channels).await?;
            }
            Ok::<_, RedisError>((sink, stream))
        })
        .await;
        match connected {
            Ok(Ok((sink, mut messages))) => {
                delay = Duration::from_millis(20);
                *subs.sink.lock().await = Some(sink);
                subs.listening.send_replace(true);
                // Releases may have been missed while we were away.
                notifier.wake_all();
                while let Some(msg) = messages.next().await {
                    if let Ok(name) = msg.get_payload::<String>() {
                        notifier.notify(&name);
                    }
                }
                subs.listening.send_replace(false);
                *subs.sink.lock().await = None;
                notifier.wake_all();
                tracing::warn!("lock release listener disconnected; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "lock release listener cannot connect"),
            Err(_) => tracing::debug!("lock release listener connect timed out"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_carry_the_holder() {
        let owner = owner_value(0xab, None, "host db-7 pid 42 since 2026-11-29T20:31:05Z");
        assert_eq!(
            owner,
            "000000000000000000000000000000ab;host db-7 pid 42 since 2026-11-29T20:31:05Z"
        );
        assert_eq!(
            holder_of(&owner),
            Some("host db-7 pid 42 since 2026-11-29T20:31:05Z")
        );
        assert_eq!(holder_of("000000000000000000000000000000ab"), None);
        assert_eq!(holder_of(""), None);
        let session = SessionId::random();
        let owner = owner_value(0xab, Some(&session), "host h pid 1 since x");
        assert_eq!(
            owner,
            format!("000000000000000000000000000000ab@{session};host h pid 1 since x")
        );
        assert_eq!(holder_of(&owner), Some("host h pid 1 since x"));
        assert_eq!(manna_lock::session_of_owner(&owner), Some(session.as_str()));
    }
}
