//! The distributed-lock port.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::session::{random_hex128, session_of_owner};
use crate::{Fencing, FencingToken, LockError, SessionId};

/// A lease on a named lock, as granted by a [`LockBackend`].
///
/// `owner` is the random value the backend stored to recognise this holder;
/// release and extend only act when it still matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    name: String,
    owner: String,
    token: FencingToken,
    ttl: Duration,
}

impl Lease {
    /// A lease (backends build these).
    pub fn new(
        name: impl Into<String>,
        owner: impl Into<String>,
        token: FencingToken,
        ttl: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            owner: owner.into(),
            token,
            ttl,
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The owner value identifying this holder to the backend.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The fencing token of this lease.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// What a fenced write under this lease carries: its token and its
    /// holder id (see [`Fencing`]).
    pub fn fencing(&self) -> Fencing {
        Fencing::of_owner(self.token, &self.owner)
    }

    /// The TTL the lease was granted with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The session that holds the lease, for a lease taken by a
    /// [`LockSession`](crate::LockSession) (read from the owner value, see
    /// [`owner_value`](crate::owner_value)); `None` otherwise.
    pub fn session(&self) -> Option<&str> {
        session_of_owner(&self.owner)
    }
}

/// The answer to one acquisition attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attempt {
    /// The lock is ours.
    Acquired(Lease),
    /// Someone else holds it; it expires in `expires_in` unless renewed
    /// (`None` when the backend cannot tell).
    Held {
        /// Time left on the current holder's lease.
        expires_in: Option<Duration>,
        /// Who holds it, for people: a short description such as
        /// `host db-7 pid 4242 since 2026-11-29T20:31:05Z` (see
        /// [`holder_description`](crate::holder_description)); `None` when
        /// the backend does not know. Never contains secrets.
        holder: Option<String>,
    },
}

/// A subscription to the release events of one lock name, used by a waiter.
///
/// Obtain it with [`LockBackend::watch`]; await [`ReleaseWatch::ready`]
/// (the backend confirms the subscription), then *try again* before waiting:
/// a release that happened before the subscription took effect is then seen
/// by that attempt, and every later one wakes [`ReleaseWatch::released`].
/// Wake-ups may be spurious (callers simply try again). A backend that
/// cannot notify returns [`ReleaseWatch::unsupported`], and the
/// [`LockManager`](crate::LockManager) falls back to backoff with jitter.
pub struct ReleaseWatch {
    name: Arc<str>,
    rx: Option<broadcast::Receiver<Event>>,
    ready: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    _guard: Option<Box<dyn Send>>,
}

impl fmt::Debug for ReleaseWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseWatch")
            .field("name", &self.name)
            .field("supported", &self.is_supported())
            .field("ready", &self.ready.is_none())
            .finish()
    }
}

impl ReleaseWatch {
    /// A watch for a backend that cannot notify: it never wakes.
    pub fn unsupported() -> Self {
        Self {
            name: Arc::from(""),
            rx: None,
            ready: None,
            _guard: None,
        }
    }

    /// Makes [`ReleaseWatch::ready`] wait for `fut`, which confirms the
    /// backend subscription (`false`: it failed, and the watch becomes
    /// unsupported).
    pub fn when_ready(mut self, fut: impl Future<Output = bool> + Send + 'static) -> Self {
        self.ready = Some(Box::pin(fut));
        self
    }

    /// Keeps `guard` alive as long as the watch, and drops it with the watch
    /// (backends use this to end their subscription).
    pub fn on_drop(mut self, guard: impl Send + 'static) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// Whether this watch can wake at all.
    pub fn is_supported(&self) -> bool {
        self.rx.is_some()
    }

    /// Waits until the subscription is in effect; returns whether the watch
    /// is supported.
    pub async fn ready(&mut self) -> bool {
        if let Some(fut) = self.ready.take() {
            if !fut.await {
                self.rx = None;
            }
        }
        self.is_supported()
    }

    /// Whether the watch needs no confirmation: every event published from
    /// its creation on reaches it (the in-memory notifier, or a Redis channel
    /// this client was already subscribed to). A waiter that created such a
    /// watch *before* its attempt need not try again after
    /// [`ReleaseWatch::ready`].
    pub fn is_ready(&self) -> bool {
        self.ready.is_none() && self.is_supported()
    }

    /// Drops the events received so far and says whether one of them could
    /// concern the waiter holding `ticket`: a release of the lock, a handoff
    /// to `ticket`, or a sign that events were missed.
    ///
    /// A waiter whose attempt just found the lock held cannot tell whether
    /// such an event came before that attempt (a handoff to it that has
    /// expired since: stale) or after it (the reply and the event crossed:
    /// the lock is being handed to it now). It must not take the lease the
    /// event carries, nor drop the event and sleep: it tries again at once,
    /// and that attempt confirms a live handoff or finds the lock held.
    pub fn take_pending(&mut self, ticket: Option<&str>) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        let mut concerns = false;
        loop {
            match rx.try_recv() {
                Ok(Event::Released(released)) => concerns |= *released == *self.name,
                Ok(Event::Granted {
                    name, ticket: to, ..
                }) => concerns |= *name == *self.name && Some(&*to) == ticket,
                Ok(Event::All) | Err(broadcast::error::TryRecvError::Lagged(_)) => concerns = true,
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => return concerns,
            }
        }
    }

    /// Waits for the next event on the lock (forever for an unsupported
    /// watch): a release, or a handoff to a queued waiter. Waits for
    /// [`ReleaseWatch::ready`] first.
    pub async fn next(&mut self) -> Wake {
        self.ready().await;
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match rx.recv().await {
                Ok(Event::Released(released)) if *released == *self.name => return Wake::Released,
                Ok(Event::Granted {
                    name,
                    ticket,
                    expires_in,
                    lease,
                }) if *name == *self.name => {
                    return Wake::Granted {
                        ticket: ticket.to_string(),
                        expires_in,
                        lease: lease.map(|l| (*l).clone()),
                    }
                }
                Ok(Event::All) => return Wake::Released,
                Ok(Event::Released(_) | Event::Granted { .. }) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return Wake::Released,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// Waits for the next event on the lock, whatever it is (forever for an
    /// unsupported watch). Call [`ReleaseWatch::ready`] first.
    pub async fn released(&mut self) {
        let _ = self.next().await;
    }
}

/// What woke a [`ReleaseWatch`] (see [`ReleaseWatch::next`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// The lock was released with nobody queued, or events may have been
    /// missed: try again.
    Released,
    /// A release handed the lock to the queued waiter `ticket` (see
    /// [`LockBackend::try_acquire_queued`]); that waiter holds it for at most
    /// `expires_in` unless it confirms by trying again. A backend may tell
    /// only that waiter's process (the Redis backend does); other waiters
    /// must not rely on hearing of it (they retry at the expiry of the
    /// holder their last attempt saw).
    Granted {
        /// The [`WaitTicket`] of the waiter the lock was handed to.
        ticket: String,
        /// How long the handed-over lock lasts unconfirmed.
        expires_in: Duration,
        /// The lease itself, when the backend announces it (its owner
        /// value, fencing token, and `expires_in` as its TTL, counted from
        /// the handoff): the waiter may take it without another attempt.
        lease: Option<Lease>,
    },
}

/// The identity of one waiting acquire: the same for every attempt of one
/// [`LockManager::acquire`](crate::LockManager::acquire) call, so that a
/// backend that queues waiters recognises the waiter across its attempts
/// (its place in the queue, a lock handed over to it). 32 random hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WaitTicket(String);

impl WaitTicket {
    /// A fresh random ticket.
    pub fn random() -> Self {
        Self(random_hex128())
    }

    /// The ticket as text (32 hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WaitTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// In-process fan-out of "lock NAME was released" events, for backends to
/// build [`ReleaseWatch`]es on (the in-memory backend publishes to it
/// directly; the Redis backend forwards its pub/sub messages to it).
#[derive(Clone, Debug)]
pub struct ReleaseNotifier {
    tx: broadcast::Sender<Event>,
}

#[derive(Clone, Debug)]
enum Event {
    Released(Arc<str>),
    Granted {
        name: Arc<str>,
        ticket: Arc<str>,
        expires_in: Duration,
        lease: Option<Arc<Lease>>,
    },
    All,
}

impl Default for ReleaseNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ReleaseNotifier {
    /// A notifier with room for 1024 undelivered events per watcher (a
    /// watcher that falls further behind is simply woken).
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    /// Announces that lock `name` was released.
    pub fn notify(&self, name: &str) {
        // No receiver is not an error: nobody is waiting.
        let _ = self.tx.send(Event::Released(Arc::from(name)));
    }

    /// Announces that a release of lock `name` handed it to the queued
    /// waiter `ticket`, for at most `expires_in` unless confirmed, with the
    /// lease when the backend knows it (see [`Wake::Granted`]).
    pub fn notify_granted(
        &self,
        name: &str,
        ticket: &str,
        expires_in: Duration,
        lease: Option<Lease>,
    ) {
        let _ = self.tx.send(Event::Granted {
            name: Arc::from(name),
            ticket: Arc::from(ticket),
            expires_in,
            lease: lease.map(Arc::new),
        });
    }

    /// Wakes every watch (for example after a notification channel was
    /// interrupted and events may have been missed).
    pub fn wake_all(&self) {
        let _ = self.tx.send(Event::All);
    }

    /// A watch on `name`, receiving every [`ReleaseNotifier::notify`] for it
    /// (and every [`ReleaseNotifier::wake_all`]) from now on. Ready at once
    /// unless the backend adds [`ReleaseWatch::when_ready`].
    pub fn watch(&self, name: &str) -> ReleaseWatch {
        ReleaseWatch {
            name: Arc::from(name),
            rx: Some(self.tx.subscribe()),
            ready: None,
            _guard: None,
        }
    }

    /// How many watches exist (for tests and diagnostics).
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// The distributed-lock port: named leases with a TTL and a fencing token.
///
/// Implementations must guarantee, for each lock name:
/// - **mutual exclusion**: at most one unexpired lease at a time;
/// - **fencing**: every granted lease carries a token strictly greater than
///   every token granted before for that name, by any client of the same
///   lock service;
/// - **expiry**: a lease not extended within its TTL expires and the lock can
///   be acquired again;
/// - **compare-and-act**: release and extend act only if the caller's lease
///   (its owner value) is still the current one.
///
/// Errors: every method may return [`LockError::Unavailable`] when the
/// backend cannot be reached or does not answer in time; it must never hang
/// indefinitely. The per-method docs list the other errors.
///
/// **Deadlock detection** (optional): a backend that implements
/// [`try_acquire_in_session`](LockBackend::try_acquire_in_session) and
/// [`end_wait`](LockBackend::end_wait) records which session holds each
/// lease and which lock each waiting session waits for (a *wait-for edge*
/// that expires on its own), and refuses with [`LockError::Deadlock`] an
/// attempt whose wait would close a cycle. The default implementations are
/// "unsupported": no session is recorded, no edge, never a `Deadlock`;
/// session acquires then behave exactly like plain ones (a cycle waits out
/// its timeouts). Every manna backend supports it.
///
/// Most code uses the [`LockManager`](crate::LockManager), which adds waiting,
/// renewal and lost-lease detection on top of this trait.
#[async_trait]
pub trait LockBackend: Send + Sync {
    /// Describes the backend for error messages (never containing
    /// credentials), e.g. `in-memory` or `redis at redis://host:6379/0`.
    fn describe(&self) -> String;

    /// One acquisition attempt, without waiting.
    ///
    /// Returns [`Attempt::Acquired`] with a new lease (and a fresh, larger
    /// fencing token) or [`Attempt::Held`] when someone else holds an
    /// unexpired lease, naming the holder when the backend recorded one
    /// (backends store [`holder_description`](crate::holder_description)
    /// with each lease they grant). Errors: [`LockError::Unavailable`];
    /// [`LockError::Invalid`] for an empty name or a TTL under 1 ms or over
    /// [`MAX_TTL`].
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError>;

    /// Releases the lease if it is still the current one, and wakes the
    /// lock's watchers.
    ///
    /// Returns `Ok(true)` if this call released it, `Ok(false)` if the lease
    /// had already expired or been taken over (nothing is touched then).
    /// Errors: [`LockError::Unavailable`].
    async fn release(&self, lease: &Lease) -> Result<bool, LockError>;

    /// Resets the lease's time to live to `ttl` from now, if it is still the
    /// current one.
    ///
    /// Errors: [`LockError::NotHolder`] when the lease expired or was taken
    /// over; [`LockError::Unavailable`]; [`LockError::Invalid`] for a TTL
    /// under 1 ms or over [`MAX_TTL`].
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError>;

    /// Whether the lease is still the current, unexpired one.
    ///
    /// Errors: [`LockError::Unavailable`].
    async fn is_held(&self, lease: &Lease) -> Result<bool, LockError>;

    /// One acquisition attempt on behalf of `session`, with deadlock
    /// detection. Answers like [`LockBackend::try_acquire`], and in the same
    /// atomic step (one critical section, script or transaction):
    ///
    /// - **granted**: the lease's owner value records the session
    ///   ([`owner_value`](crate::owner_value), so [`Lease::session`] returns
    ///   it), and the session's wait-for edge on `name`, if any, is removed;
    /// - **held, `wait_edge` zero** (a try that will not wait): nothing else;
    /// - **held, `wait_edge` not zero**: starting from the holder's session,
    ///   follow "session → the lock it waits for → that lock's holder's
    ///   session → …" over unexpired leases and edges, at most
    ///   [`MAX_WAIT_CHAIN`](crate::MAX_WAIT_CHAIN) steps. If it reaches
    ///   `session`, fail with [`LockError::Deadlock`] naming the locks in
    ///   order (`name` first) and drop the session's edge on `name`.
    ///   Otherwise record (or replace) the edge "`session` waits for
    ///   `name`", expiring after `wait_edge`, and return [`Attempt::Held`].
    ///
    /// A session waits for one lock at a time: recording an edge replaces
    /// the session's previous one. Leases without a session end every walk
    /// (their holders are not known to wait). If two sessions close a cycle
    /// at the same moment, a backend may fail both (never neither, once
    /// each has retried).
    ///
    /// Errors: as [`LockBackend::try_acquire`], plus
    /// [`LockError::Deadlock`]. The default implementation ignores the
    /// session (unsupported: see the trait docs).
    async fn try_acquire_in_session(
        &self,
        name: &str,
        ttl: Duration,
        session: &SessionId,
        wait_edge: Duration,
    ) -> Result<Attempt, LockError> {
        let _ = (session, wait_edge);
        self.try_acquire(name, ttl).await
    }

    /// Removes the wait-for edge "`session` waits for `name`", if that is
    /// the session's current edge (best effort: the edge expires on its own
    /// anyway). Called when a session's wait ends without the lock.
    ///
    /// Errors: [`LockError::Unavailable`]. The default does nothing.
    async fn end_wait(&self, session: &SessionId, name: &str) -> Result<(), LockError> {
        let _ = (session, name);
        Ok(())
    }

    /// Whether this backend keeps a FIFO queue of waiters and hands the lock
    /// over to the first live one inside the release (see
    /// [`LockBackend::try_acquire_queued`]). The default is `false`: waiters
    /// then retry on release notifications and compete.
    fn queues_waiters(&self) -> bool {
        false
    }

    /// One acquisition attempt by a waiter that will wait up to `wait` more,
    /// identified by `ticket` across all the attempts of its wait, for a
    /// backend that [queues waiters](LockBackend::queues_waiters).
    ///
    /// In one atomic step: if the lock was handed to `ticket` (by a release,
    /// [`Wake::Granted`]) or is free, the caller gets it
    /// ([`Attempt::Acquired`] with the full `ttl` from now and a fresh,
    /// larger fencing token); otherwise the ticket is queued at the end of
    /// the lock's FIFO queue (or keeps its place, its deadline refreshed to
    /// `wait` from now) and the answer is [`Attempt::Held`]. A release then
    /// hands the lock to the first queued ticket whose deadline has not
    /// passed, for at most its TTL and what is left of its wait, and
    /// announces it ([`Wake::Granted`], possibly with the lease and its
    /// token: the waiter may take that lease as it is, counting its TTL
    /// from before the handoff, e.g. from the start of its last attempt).
    ///
    /// A waiter that stops waiting without the lock must call
    /// [`LockBackend::cancel_wait`]. Errors: as [`LockBackend::try_acquire`].
    /// The default ignores the ticket and the wait: a plain
    /// [`LockBackend::try_acquire`].
    async fn try_acquire_queued(
        &self,
        name: &str,
        ttl: Duration,
        ticket: &WaitTicket,
        wait: Duration,
    ) -> Result<Attempt, LockError> {
        let _ = (ticket, wait);
        self.try_acquire(name, ttl).await
    }

    /// Ends the wait of `ticket` on `name` without the lock: removes it from
    /// the queue and, if a release handed it the lock meanwhile, releases it
    /// (handing it to the next waiter). Idempotent; best effort (a queued
    /// ticket also leaves at its deadline).
    ///
    /// Errors: [`LockError::Unavailable`]. The default does nothing.
    async fn cancel_wait(&self, name: &str, ticket: &WaitTicket) -> Result<(), LockError> {
        let _ = (name, ticket);
        Ok(())
    }

    /// A subscription to the releases of `name`, for a waiter; see
    /// [`ReleaseWatch`] for the protocol (ready, try again, then wait).
    /// Infallible and cheap to create (any I/O happens in
    /// [`ReleaseWatch::ready`]); a backend that cannot notify right now
    /// returns [`ReleaseWatch::unsupported`].
    fn watch(&self, name: &str) -> ReleaseWatch;
}

/// The longest lease TTL the port accepts: 365 days. Longer TTLs are
/// [`LockError::Invalid`] (a lease is not meant to outlive its holder by
/// years, and every backend can represent this one in milliseconds).
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Checks the arguments every backend must reject: an empty name, a TTL
/// under 1 ms or over [`MAX_TTL`].
pub fn validate_request(name: &str, ttl: Duration) -> Result<(), LockError> {
    if name.is_empty() {
        return Err(LockError::Invalid {
            reason: "lock name is empty".into(),
        });
    }
    if ttl < Duration::from_millis(1) {
        return Err(LockError::Invalid {
            reason: format!("lock TTL must be at least 1 ms, got {ttl:?}"),
        });
    }
    if ttl > MAX_TTL {
        return Err(LockError::Invalid {
            reason: format!("lock TTL must be at most {MAX_TTL:?} (365 days), got {ttl:?}"),
        });
    }
    Ok(())
}
