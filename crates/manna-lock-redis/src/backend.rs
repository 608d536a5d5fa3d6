//! The Redis implementation of the lock port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use manna_lock::{
    async_trait, holder_description, validate_request, Attempt, FencingToken, Lease, LockBackend,
    LockError, ReleaseNotifier, ReleaseWatch, SessionId, WaitTicket, MAX_TTL, MAX_WAIT_CHAIN,
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

/// How long a release channel stays subscribed after its last waiter left:
/// a lock contended again soon finds its channel already subscribed, so a
/// new waiter needs no `SUBSCRIBE`, no second attempt and no `UNSUBSCRIBE`.
const CHANNEL_LINGER: Duration = Duration::from_secs(5);

/// The per-lock release channels this backend's waiters use, and the sink
/// of the pub/sub connection (`None` while disconnected).
struct Subscriptions {
    channels: std::sync::Mutex<HashMap<String, Channel>>,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    listening: watch::Sender<bool>,
}

/// One release channel's state.
#[derive(Debug)]
struct Channel {
    /// Watches on it.
    watches: usize,
    /// A `SUBSCRIBE` was sent (it may not have been confirmed).
    requested: bool,
    /// Subscribed on the current pub/sub connection: every message from now
    /// on reaches the notifier.
    confirmed: bool,
    /// When the last watch left (meaningful while `watches` is 0).
    idle_since: tokio::time::Instant,
    /// A task will unsubscribe it once it has been idle for
    /// [`CHANNEL_LINGER`].
    sweeping: bool,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            watches: 0,
            requested: false,
            confirmed: false,
            idle_since: tokio::time::Instant::now(),
            sweeping: false,
        }
    }
}

impl Subscriptions {
    fn new() -> Self {
        Self {
            channels: std::sync::Mutex::default(),
            sink: tokio::sync::Mutex::default(),
            listening: watch::Sender::new(false),
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // Updates are single field writes: a poisoned map is still sound.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks every channel subscribed (`true`, after a resubscription) or
    /// not (`false`, the connection is gone).
    fn confirm_all(&self, confirmed: bool) {
        for channel in self.channels().values_mut() {
            channel.confirmed = confirmed;
            channel.requested = confirmed;
        }
    }

    /// Unsubscribes `channel` unless a watch came back meanwhile; after
    /// `linger` of idleness first when given.
    async fn sweep(self: Arc<Self>, channel: String, linger: Option<Duration>, timeout: Duration) {
        if let Some(linger) = linger {
            loop {
                let idle_until = {
                    let mut channels = self.channels();
                    let Some(c) = channels.get_mut(&channel) else {
                        return;
                    };
                    if c.watches > 0 {
                        c.sweeping = false;
                        return;
                    }
                    c.idle_since + linger
                };
                if tokio::time::Instant::now() >= idle_until {
                    break;
                }
                tokio::time::sleep_until(idle_until).await;
            }
        }
        let mut sink = self.sink.lock().await;
        // Re-check under the sink lock: a new watch may have subscribed.
        {
            let mut channels = self.channels();
            if let Some(c) = channels.get_mut(&channel) {
                if c.watches > 0 {
                    c.sweeping = false;
                    return;
                }
            }
            channels.remove(&channel);
        }
        if let Some(sink) = sink.as_mut() {
            let _ = tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await;
        }
    }
}

/// Ends a watch's share of a channel subscription. When the last one leaves,
/// a confirmed subscription lingers for [`CHANNEL_LINGER`] before it is
/// dropped; one never sent is simply forgotten.
struct SubscriptionShare {
    subs: Arc<Subscriptions>,
    channel: String,
    timeout: Duration,
}

impl Drop for SubscriptionShare {
    fn drop(&mut self) {
        // Without a runtime (shutting down) the subscription ends with the
        // connection.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let linger = {
            let mut channels = self.subs.channels();
            let Some(c) = channels.get_mut(&self.channel) else {
                return;
            };
            c.watches = c.watches.saturating_sub(1);
            if c.watches > 0 {
                return;
            }
            c.idle_since = tokio::time::Instant::now();
            if c.confirmed {
                if c.sweeping {
                    return;
                }
                c.sweeping = true;
                Some(CHANNEL_LINGER)
            } else if c.requested {
                None
            } else {
                channels.remove(&self.channel);
                return;
            }
        };
        let subs = Arc::clone(&self.subs);
        drop(handle.spawn(subs.sweep(std::mem::take(&mut self.channel), linger, self.timeout)));
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
            config.namespace.clone(),
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
            lock_key: self.lock_key(name),
            fence_key: self.fence_key(name),
            queue_key: self.queue_key(name),
            waiters_key: self.waiters_key(name),
            channel: self.release_channel(name),
            waiter_prefix: waiter_prefix(&self.namespace),
            backend_id: self.id.clone(),
            name: name.to_owned(),
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

/// Separates the random part of an owner value from the holder description.
const HOLDER_SEPARATOR: char = ';';

/// The owner value stored in the lock key: 32 hex digits of randomness,
/// `@` and the session id for a session's lease
/// ([`manna_lock::owner_value`]), then `;` and the holder description
/// (`…;host db-7 pid 4242 since …`). Release and extend compare the whole
/// value, so the description and the session cost no extra key and no extra
/// round trip.
fn owner_value(random: &str, session: Option<&SessionId>, holder: &str) -> String {
    let owner = manna_lock::owner_value(random, session);
    format!("{owner}{HOLDER_SEPARATOR}{holder}")
}

/// The prefix of the waiter channels (see [`RedisBackend::waiter_channel`]);
/// the release and cancel scripts append the backend id of the waiter they
/// hand the lock to.
fn waiter_prefix(namespace: &str) -> String {
    format!("{namespace}waiter:")
}

/// The waiter channel of the backend `id` (see
/// [`RedisBackend::waiter_channel`]).
fn waiter_channel(namespace: &str, id: &str) -> String {
    format!("{}{id}", waiter_prefix(namespace))
}

/// The random part of a new owner value (also a backend's id): 32 hex
/// digits. A queued waiter
/// uses its [`WaitTicket`] instead, the same for its whole wait.
fn random_part() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Which acquire script an attempt runs.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// [`LockBackend::try_acquire`].
    Plain,
    /// [`LockBackend::try_acquire_in_session`]: the session and the TTL of
    /// its wait-for edge.
    Session { id: &'a SessionId, edge: Duration },
    /// [`LockBackend::try_acquire_queued`]: the waiter's ticket and what is
    /// left of its wait.
    Queued {
        ticket: &'a WaitTicket,
        wait: Duration,
    },
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

/// Which script an [`AcquireCall`] runs, with its extra arguments.
enum CallKind {
    Plain,
    Session(SessionArgs),
    Queued { ticket: String, wait_ms: u64 },
}

/// One acquire script call, owning everything it needs to run in a task of
/// its own (and to undo what it did when nobody is waiting for it).
struct AcquireCall {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    lock_key: String,
    fence_key: String,
    queue_key: String,
    waiters_key: String,
    channel: String,
    waiter_prefix: String,
    backend_id: String,
    name: String,
    owner: String,
    ttl_ms: u64,
    kind: CallKind,
}

impl AcquireCall {
    /// Runs the script and hands the answer to `reply`, then cleans up what
    /// nobody will: no phantom leases.
    ///
    /// - Plain and session attempts (a fresh owner value each): if the lease
    ///   was acquired but nobody takes the answer (the caller gave up), or
    ///   the answer was lost (a response timeout: Redis may still run the
    ///   script), releases this call's owner value, best effort. Always
    ///   safe: nobody else has that owner value.
    /// - Queued attempts (one ticket for the whole wait): if nobody takes the
    ///   answer, cancels the ticket's wait (leaving the queue, releasing a
    ///   lock acquired or handed to it). A lost answer with the caller still
    ///   there is left to the caller: its next attempt sees the ticket's
    ///   state, and its give-up cancels. (Cancelling here could release a
    ///   lock that next attempt has just confirmed.)
    async fn run(mut self, reply: oneshot::Sender<Result<AcquireReply, RedisError>>) {
        let answer: Result<AcquireReply, RedisError> = match &self.kind {
            CallKind::Plain => self
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
            CallKind::Session(session) => {
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
            CallKind::Queued { ticket, wait_ms } => self
                .scripts
                .acquire_queued
                .key(&self.lock_key)
                .key(&self.fence_key)
                .key(&self.queue_key)
                .key(&self.waiters_key)
                .arg(&self.owner)
                .arg(self.ttl_ms)
                .arg(*wait_ms)
                .arg(ticket)
                .arg(&self.backend_id)
                .invoke_async(&mut self.conn)
                .await
                .map(|(acquired, value, owner): (i64, i64, String)| {
                    (acquired, value, owner, Vec::new())
                }),
        };
        // A timeout or a connection dropped after the script was written:
        // Redis may run it later, and the lease would be nobody's.
        let answer_lost = answer
            .as_ref()
            .is_err_and(|e| e.is_timeout() || e.is_connection_dropped());
        let queued = matches!(self.kind, CallKind::Queued { .. });
        match (reply.send(answer), queued) {
            (Ok(()), true) => {}
            (Err(_), true) => self.cancel_orphan().await,
            (Ok(()), false) => {
                if answer_lost {
                    self.release_orphan().await;
                }
            }
            // Nobody took the answer: release if it was a grant.
            (Err(answer), false) => {
                if answer_lost || answer.is_ok_and(|(acquired, ..)| acquired == 1) {
                    self.release_orphan().await;
                }
            }
        }
    }

    async fn release_orphan(&mut self) {
        let released: Result<i64, RedisError> = self
            .scripts
            .release
            .key(&self.lock_key)
            .key(&self.fence_key)
            .key(&self.queue_key)
            .key(&self.waiters_key)
            .arg(&self.owner)
            .arg(&self.channel)
            .arg(&self.name)
            .arg(&self.waiter_prefix)
            .invoke_async(&mut self.conn)
            .await;
        self.log_orphan(released);
    }

    async fn cancel_orphan(&mut self) {
        let CallKind::Queued { ticket, .. } = &self.kind else {
            return;
        };
        let released: Result<i64, RedisError> = self
            .scripts
            .cancel
            .key(&self.lock_key)
            .key(&self.fence_key)
            .key(&self.queue_key)
            .key(&self.waiters_key)
            .arg(ticket)
            .arg(&self.channel)
            .arg(&self.name)
            .arg(&self.waiter_prefix)
            .invoke_async(&mut self.conn)
            .await;
        self.log_orphan(released);
    }

    fn log_orphan(&self, released: Result<i64, RedisError>) {
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
            .scripts
            .cancel
            .key(self.lock_key(name))
            .key(self.fence_key(name))
            .key(self.queue_key(name))
            .key(self.waiters_key(name))
            .arg(ticket.as_str())
            .arg(self.release_channel(name))
            .arg(name)
            .arg(waiter_prefix(&self.namespace))
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
            .scripts
            .release
            .key(self.lock_key(lease.name()))
            .key(self.fence_key(lease.name()))
            .key(self.queue_key(lease.name()))
            .key(self.waiters_key(lease.name()))
            .arg(lease.owner())
            .arg(self.release_channel(lease.name()))
            .arg(lease.name())
            .arg(waiter_prefix(&self.namespace))
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

/// Keeps a pub/sub connection open, subscribed to this backend's waiter
/// channel (always) and to the release channels that waiters need,
/// forwarding each message to the notifier (see [`Message`]); reconnects
/// with backoff and resubscribes. It reports listening only once every
/// channel is subscribed, and then wakes every watch: messages may have
/// been missed while it was away, so every waiter tries again once.
async fn listen(
    client: Client,
    namespace: String,
    waiter_channel: String,
    notifier: ReleaseNotifier,
    subs: Arc<Subscriptions>,
    connect_timeout: Duration,
) {
    let mut delay = Duration::from_millis(20);
    loop {
        let connected = tokio::time::timeout(connect_timeout, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            let mut channels: Vec<String> = subs.channels().keys().cloned().collect();
            channels.push(waiter_channel.clone());
            sink.subscribe(channels).await?;
            Ok::<_, RedisError>((sink, stream))
        })
        .await;
        match connected {
            Ok(Ok((sink, mut messages))) => {
                delay = Duration::from_millis(20);
                *subs.sink.lock().await = Some(sink);
                subs.confirm_all(true);
                subs.listening.send_replace(true);
                // Releases may have been missed while we were away.
                notifier.wake_all();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let channel = msg.get_channel_name();
                    let message = if channel == waiter_channel {
                        Message::parse_handoff(&payload)
                    } else {
                        Message::parse(&namespace, channel, &payload)
                    };
                    match message {
                        Message::Released(name) => notifier.notify(name),
                        Message::Unknown => notifier.wake_all(),
                        Message::Granted {
                            name,
                            ticket,
                            expires_in,
                            lease,
                        } => notifier.notify_granted(name, ticket, expires_in, lease),
                    }
                }
                subs.listening.send_replace(false);
                *subs.sink.lock().await = None;
                subs.confirm_all(false);
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

/// A message on a lock's release channel `NAMESPACE{NAME}:released`, or on
/// this backend's waiter channel.
#[derive(Debug, PartialEq, Eq)]
enum Message<'a> {
    /// Not understood on the waiter channel (the lock is unknown): wakes
    /// every watch, which is always safe.
    Unknown,
    /// The payload is the lock name: released with nobody queued (what
    /// every version publishes), or anything not understood (waking waiters
    /// is always safe).
    Released(&'a str),
    /// The release handed the lock to a queued waiter for PX ms (unless it
    /// confirms) with that fencing token and owner value: its lease. On this
    /// backend's waiter channel `granted TICKET PX TOKEN NAME_BYTES NAME
    /// OWNER`; on a release channel `granted TICKET PX TOKEN OWNER` (from the
    /// first queue version, or for its entries).
    Granted {
        name: &'a str,
        ticket: &'a str,
        expires_in: Duration,
        lease: Option<Lease>,
    },
}

impl<'a> Message<'a> {
    /// A message on this backend's waiter channel:
    /// `granted TICKET PX TOKEN NAME_BYTES NAME OWNER` (the lock name is
    /// length-prefixed, as names and owner values may contain spaces).
    fn parse_handoff(payload: &'a str) -> Self {
        let parsed = (|| {
            let rest = payload.strip_prefix("granted ")?;
            let (ticket, rest) = rest.split_once(' ')?;
            let (px, rest) = rest.split_once(' ')?;
            let (token, rest) = rest.split_once(' ')?;
            let (len, rest) = rest.split_once(' ')?;
            let len: usize = len.parse().ok()?;
            let name = rest.get(..len)?;
            let owner = rest.get(len..)?.strip_prefix(' ')?;
            let expires_in = Duration::from_millis(px.parse().ok()?);
            let token = FencingToken::new(token.parse().ok()?);
            Some(Self::Granted {
                name,
                ticket,
                expires_in,
                lease: Some(Lease::new(name, owner, token, expires_in)),
            })
        })();
        parsed.unwrap_or(Self::Unknown)
    }

    /// A message on a lock's release channel.
    fn parse(namespace: &str, channel: &'a str, payload: &'a str) -> Self {
        let name = channel
            .strip_prefix(namespace)
            .and_then(|c| c.strip_prefix('{'))
            .and_then(|c| c.strip_suffix("}:released"));
        let grant = payload.strip_prefix("granted ").and_then(|rest| {
            let mut parts = rest.splitn(4, ' ');
            let ticket = parts.next()?;
            let expires_in = Duration::from_millis(parts.next()?.parse().ok()?);
            let lease = match (parts.next().map(str::parse::<u64>), parts.next()) {
                (Some(Ok(token)), Some(owner)) => Some((FencingToken::new(token), owner)),
                _ => None,
            };
            Some((ticket, expires_in, lease))
        });
        match (name, grant) {
            (Some(name), Some((ticket, expires_in, lease))) if name != payload => Self::Granted {
                name,
                ticket,
                expires_in,
                lease: lease.map(|(token, owner)| Lease::new(name, owner, token, expires_in)),
            },
            _ => Self::Released(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_channel_messages() {
        let ns = "manna:lock:";
        let channel = "manna:lock:{a b}:released";
        assert_eq!(Message::parse(ns, channel, "a b"), Message::Released("a b"));
        assert_eq!(
            Message::parse(ns, channel, "granted 0f 250 17 0f;host h pid 1 since x"),
            Message::Granted {
                name: "a b",
                ticket: "0f",
                expires_in: Duration::from_millis(250),
                lease: Some(Lease::new(
                    "a b",
                    "0f;host h pid 1 since x",
                    FencingToken::new(17),
                    Duration::from_millis(250)
                )),
            }
        );
        assert_eq!(
            Message::parse(ns, channel, "granted 0f 250"),
            Message::Granted {
                name: "a b",
                ticket: "0f",
                expires_in: Duration::from_millis(250),
                lease: None,
            }
        );
        // Not understood, or a lock whose name looks like a grant: a wake-up.
        assert_eq!(
            Message::parse(ns, channel, "granted x"),
            Message::Released("granted x")
        );
        let odd = "manna:lock:{granted 0f 250}:released";
        assert_eq!(
            Message::parse(ns, odd, "granted 0f 250"),
            Message::Released("granted 0f 250")
        );
    }

    #[test]
    fn waiter_channel_messages() {
        assert_eq!(
            Message::parse_handoff("granted 0f 250 17 3 a b 0f;host h pid 1 since x"),
            Message::Granted {
                name: "a b",
                ticket: "0f",
                expires_in: Duration::from_millis(250),
                lease: Some(Lease::new(
                    "a b",
                    "0f;host h pid 1 since x",
                    FencingToken::new(17),
                    Duration::from_millis(250)
                )),
            }
        );
        // A multi-byte name: the length is in bytes.
        assert!(matches!(
            Message::parse_handoff("granted 0f 250 17 2 é 0f;h"),
            Message::Granted { name: "é", .. }
        ));
        for odd in [
            "granted 0f 250 17",
            "granted 0f 250 17 9 a 0f;h",
            "granted 0f 250 17 1 é 0f;h",
            "granted 0f x 17 1 a 0f;h",
            "a",
        ] {
            assert_eq!(Message::parse_handoff(odd), Message::Unknown, "{odd}");
        }
    }

    #[test]
    fn owner_values_carry_the_holder() {
        let owner = owner_value(
            "000000000000000000000000000000ab",
            None,
            "host db-7 pid 42 since 2026-11-29T20:31:05Z",
        );
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
        let owner = owner_value(
            "000000000000000000000000000000ab",
            Some(&session),
            "host h pid 1 since x",
        );
        assert_eq!(
            owner,
            format!("000000000000000000000000000000ab@{session};host h pid 1 since x")
        );
        assert_eq!(holder_of(&owner), Some("host h pid 1 since x"));
        assert_eq!(manna_lock::session_of_owner(&owner), Some(session.as_str()));
    }
}
