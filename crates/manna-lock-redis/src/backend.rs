//! The Redis implementation of the lock port.

use std::sync::Arc;
use std::time::Duration;

use manna_lock::{
    async_trait, holder_description, validate_request, Attempt, FencingToken, Lease, LockBackend,
    LockError, ReleaseNotifier, ReleaseWatch, SessionId, WaitTicket, MAX_TTL,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::scripts::Scripts;
use crate::RedisLockConfig;
use acquire::{
    holder_of, owner_value, random_part, waiter_channel, waiter_prefix, AcquireCall, CallKind,
    LockKeys, Mode, SessionArgs,
};
use listener::{listen, SubscriptionShare, Subscriptions};

/// Locks kept in Redis: the production backend of the lock port.
///
/// - One multiplexed, auto-reconnecting connection (`ConnectionManager`) for
///   all commands, shared by every task using this backend, plus one pub/sub
///   connection, subscribed to this backend's waiter channel
///   ([`RedisBackend::waiter_channel`]) and to the release channels of the
///   locks its waiters wait for.
/// - Acquire is one round trip: a Lua script does `SET key owner NX PX ttl`
///   and, if it succeeded, makes the fencing token
///   `max(counter + 1, server time in µs)` (so tokens keep increasing when
///   the counter goes back: a restore from an older snapshot, a failover to
///   a lagging replica); if it did not, it returns the holder's remaining
///   TTL and owner value. The script runs in a task of its own, which
///   releases a lease whose caller gave up before the answer came. Release and
///   extend are compare-and-act scripts on the owner value; release
///   publishes on the lock's channel so waiters wake at once (no polling).
/// - Waiters queue ([`LockBackend::try_acquire_queued`]): a waiter's attempt
///   that finds the lock held queues its ticket in `manna:lock:{NAME}:queue`
///   (a sorted set, oldest first) with its deadline, TTL and owner value in
///   `manna:lock:{NAME}:waiters` (a hash, with its backend's id). The release
///   script hands the lock to the first queued waiter whose deadline has not
///   passed (for at most its TTL and what is left of its wait) with the next
///   fencing token, and publishes the lease,
///   `granted TICKET PX TOKEN NAME_BYTES NAME OWNER`, on that waiter's
///   backend channel only: that waiter takes it as it is (or confirms it with
///   its next attempt); no other process is told. If nobody receives it (the
///   waiter's process is gone), the script hands the lock to the next waiter.
///   With nobody queued it publishes the lock name on the release channel, as
///   before. [`LockBackend::cancel_wait`] leaves the queue, releasing a lock
///   handed over meanwhile.
/// - The owner value is 128 random bits in hex, `;`, and the holder's
///   description ([`manna_lock::holder_description`]), which a refused
///   caller gets back in [`Attempt::Held`].
/// - Keys, with the default namespace: `manna:lock:{NAME}` (the lease),
///   `manna:lock:{NAME}:fence` (the fencing counter, no TTL) and the two queue
///   keys; releases with nobody queued are published on
///   `manna:lock:{NAME}:released`, to which only waiters subscribe (an uncontended release is delivered to nobody;
///   a channel stays subscribed 5 s after its last waiter left). The braces
///   are a Redis Cluster hash tag: all keys of a lock live in the same slot.
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
    /// This backend's random id (32 hex digits): its queued waiters record
    /// it, and a release hands the lock over on [`RedisBackend::waiter_channel`].
    id: String,
}

mod acquire;
mod listener;

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
    /// listener's pub/sub connection, subscribed to this backend's waiter
    /// channel, so that the first waiters are handed the lock and woken by
    /// notifications. Must be called within a Tokio runtime.
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
        let id = random_part();
        let listener = tokio::spawn(listen(
            client,
            waiter_channel(&config.namespace, &id),
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
            id,
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

    /// Whether the release listener is subscribed, to this backend's waiter
    /// channel at least (waiters are handed the lock and woken by
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

    /// Every key and channel of lock `name` the scripts take.
    fn keys(&self, name: &str) -> LockKeys {
        LockKeys {
            name: name.to_owned(),
            lock: self.lock_key(name),
            fence: self.fence_key(name),
            queue: self.queue_key(name),
            waiters: self.waiters_key(name),
            channel: self.release_channel(name),
            waiter_prefix: waiter_prefix(&self.namespace),
        }
    }

    /// The key holding the lease of lock `name`.
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}{{{name}}}", self.namespace)
    }

    /// The key holding the fencing counter of lock `name`.
    pub fn fence_key(&self, name: &str) -> String {
        format!("{}{{{name}}}:fence", self.namespace)
    }

    /// The key holding the wait queue of lock `name`: a sorted set of wait
    /// tickets, oldest first (score: arrival, server time in µs).
    pub fn queue_key(&self, name: &str) -> String {
        format!("{}{{{name}}}:queue", self.namespace)
    }

    /// The key holding the details of the queued waiters of lock `name`: a
    /// hash from ticket to `DEADLINE_MS TTL_MS BACKEND_ID OWNER` (the wait
    /// deadline in server time, the TTL it asked for, the id of the backend
    /// whose channel hears its handoff, its owner value).
    pub fn waiters_key(&self, name: &str) -> String {
        format!("{}{{{name}}}:waiters", self.namespace)
    }

    /// The key holding the wait-for edge of a waiting session (its value is
    /// the name of the lock the session waits for).
    pub fn wait_key(&self, session: &SessionId) -> String {
        format!("{}waits:{session}", self.namespace)
    }

    /// The channel on which releases of lock `name` are published when
    /// nobody live is queued (the lock name; sessions and older clients
    /// listen to it).
    pub fn release_channel(&self, name: &str) -> String {
        format!("{}{{{name}}}:released", self.namespace)
    }

    /// This backend's own channel, `NAMESPACE` `waiter:` `ID`, on which a
    /// release hands a lock over to one of its queued waiters
    /// (`granted TICKET PX TOKEN NAME_BYTES NAME OWNER`). The listener
    /// subscribes to it on every (re)connection, before
    /// [`RedisBackend::is_listening`] turns true.
    pub fn waiter_channel(&self) -> String {
        waiter_channel(&self.namespace, &self.id)
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

    /// One acquire script call: the plain one, the session-aware one with
    /// deadlock detection, or the queued one (see [`Mode`]).
    async fn attempt(
        &self,
        name: &str,
        ttl: Duration,
        mode: Mode<'_>,
    ) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| LockError::Invalid {
            reason: "the Redis lock must be used from within a Tokio runtime".into(),
        })?;
        let (random, session) = match mode {
            Mode::Plain => (random_part(), None),
            Mode::Session { id, .. } => (random_part(), Some(id)),
            Mode::Queued { ticket, .. } => (ticket.to_string(), None),
        };
        let call = AcquireCall {
            conn: self.conn.clone(),
            scripts: Arc::clone(&self.scripts),
            keys: self.keys(name),
            backend_id: self.id.clone(),
            owner: owner_value(&random, session, &holder_description()),
            ttl_ms: Self::ttl_ms(ttl),
            kind: match mode {
                Mode::Plain => CallKind::Plain,
                Mode::Session { id, edge } => CallKind::Session(SessionArgs {
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
                Mode::Queued { ticket, wait } => CallKind::Queued {
                    ticket: ticket.to_string(),
                    // What the port accepts as a TTL bounds the wait too.
                    wait_ms: Self::ttl_ms(wait.min(MAX_TTL)),
                },
            },
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
            // The queued script names the owner value it granted (a lock
            // handed over keeps the one its waiter queued with).
            let owner = if held_by.is_empty() { owner } else { held_by };
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

#[async_trait]
impl LockBackend for RedisBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        self.attempt(name, ttl, Mode::Plain).await
    }

    fn queues_waiters(&self) -> bool {
        true
    }

    async fn try_acquire_queued(
        &self,
        name: &str,
        ttl: Duration,
        ticket: &WaitTicket,
        wait: Duration,
    ) -> Result<Attempt, LockError> {
        self.attempt(name, ttl, Mode::Queued { ticket, wait }).await
    }

    async fn cancel_wait(&self, name: &str, ticket: &WaitTicket) -> Result<(), LockError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .keys(name)
            .hand_over(&self.scripts.cancel, ticket.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    async fn try_acquire_in_session(
        &self,
        name: &str,
        ttl: Duration,
        session: &SessionId,
        wait_edge: Duration,
    ) -> Result<Attempt, LockError> {
        self.attempt(
            name,
            ttl,
            Mode::Session {
                id: session,
                edge: wait_edge,
            },
        )
        .await
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
            .keys(lease.name())
            .hand_over(&self.scripts.release, lease.owner())
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
        let confirmed = {
            let mut channels = self.subs.channels();
            let c = channels.entry(channel.clone()).or_default();
            c.watches += 1;
            c.confirmed
        };
        let share = SubscriptionShare {
            subs: Arc::clone(&self.subs),
            channel: channel.clone(),
            timeout: self.response_timeout,
        };
        let watch = self.notifier.watch(name).on_drop(share);
        if confirmed {
            // Already subscribed: ready at once, no round trip.
            return watch;
        }
        let subs = Arc::clone(&self.subs);
        let timeout = self.response_timeout;
        watch.when_ready(async move {
            let mut sink = subs.sink.lock().await;
            let Some(sink) = sink.as_mut() else {
                return false;
            };
            if let Some(c) = subs.channels().get_mut(&channel) {
                c.requested = true;
            }
            // SUBSCRIBE is idempotent; its confirmation means every later
            // message on the channel reaches us.
            let subscribed = matches!(
                tokio::time::timeout(timeout, sink.subscribe(&channel)).await,
                Ok(Ok(()))
            );
            if subscribed {
                if let Some(c) = subs.channels().get_mut(&channel) {
                    c.confirmed = true;
                }
            }
            subscribed
        })
    }
}
