//! Waiting, renewal and lost-lease detection on top of the port.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::validate_request;
use crate::{
    metric_names, Attempt, FencingToken, Lease, LockBackend, LockError, MemoryBackend,
    ReleaseWatch, SessionId, WaitTicket, Wake,
};

/// Default lease TTL for [`LockManager::lock_resource`]: 30 s, renewed every
/// 10 s while held.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The longest a [`LockSession`]'s wait-for edge lives without being
/// refreshed: 10 s. A waiting session records its edge for what is left of
/// its wait, at most this long, and tries again (refreshing it) at least
/// every half of it; so the edge of a waiter that crashed disappears within
/// its remaining wait and at most 10 s.
pub const MAX_WAIT_EDGE_TTL: Duration = Duration::from_secs(10);

/// Takes named locks on a [`LockBackend`], waits for them, keeps them alive
/// and tells the holder when a lease is lost.
///
/// - [`acquire`](LockManager::acquire) waits up to `wait` for the lock. It is
///   woken by the backend's release notification when there is one (no
///   polling), otherwise it retries with exponential backoff and jitter; it
///   also retries when the current holder's lease is due to expire. On a
///   backend that [queues waiters](LockBackend::queues_waiters) (Redis) it
///   waits in the lock's FIFO queue with one [`WaitTicket`], and the release
///   hands the lock to the first waiter; giving up (timeout, error, the
///   future dropped) leaves the queue ([`LockBackend::cancel_wait`]).
/// - While a [`LockGuard`] is alive a background task renews the lease every
///   third of its TTL. If renewal is refused or the backend stays unreachable
///   until the lease would have expired, the guard is marked lost:
///   [`LockGuard::is_lost`] turns `true` and [`LockGuard::lost`] resolves.
/// - Every backend call is bounded by the caller's wait: an unreachable
///   backend yields [`LockError::Unavailable`], never a hang.
///
/// Needs a Tokio runtime (any flavour). Code on a plain thread can drive it
/// with `Handle::block_on` on a multi-thread runtime it owns; renewal then
/// runs on the runtime's workers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), manna_lock::LockError> {
/// use manna_lock::LockManager;
/// use std::time::Duration;
///
/// let locks = LockManager::in_memory();
/// // The Python application's `plaid_sync_lock(item_id, timeout=30)`:
/// let guard = locks.lock_resource("plaid_sync", "item-42", Duration::from_secs(30)).await?;
/// assert_eq!(guard.name(), "plaid_sync:item-42");
/// // ... work, passing guard.token() along with every write ...
/// assert!(!guard.is_lost());
/// assert!(guard.release().await?, "still held when released");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LockManager {
    backend: Arc<dyn LockBackend>,
    default_ttl: Duration,
    renew: bool,
}

impl fmt::Debug for LockManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockManager")
            .field("backend", &self.backend.describe())
            .field("default_ttl", &self.default_ttl)
            .field("renew", &self.renew)
            .finish()
    }
}

impl LockManager {
    /// A manager on `backend`.
    pub fn new(backend: Arc<dyn LockBackend>) -> Self {
        Self {
            backend,
            default_ttl: DEFAULT_TTL,
            renew: true,
        }
    }

    /// A manager on a fresh [`MemoryBackend`] (locks within this process).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryBackend::new()))
    }

    /// The TTL [`LockManager::lock_resource`] uses (default [`DEFAULT_TTL`]).
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Turns background renewal on (default) or off. Without renewal a lease
    /// simply expires after its TTL, and the guard reports it lost then.
    pub fn with_renewal(mut self, on: bool) -> Self {
        self.renew = on;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// The TTL used by [`LockManager::lock_resource`].
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// A new [`LockSession`] on this manager, with a fresh random
    /// [`SessionId`]: for code that nests locks one at a time and wants a
    /// wait that would deadlock to fail fast. Give each task (each thread of
    /// control) its own session.
    pub fn session(&self) -> LockSession {
        LockSession {
            manager: self.clone(),
            id: SessionId::random(),
        }
    }

    /// Acquires `name` with a lease of `ttl`, waiting up to `wait` while
    /// someone else holds it.
    ///
    /// Errors: [`LockError::Timeout`] when it stayed held for the whole wait
    /// (naming the holder when the backend does);
    /// [`LockError::Unavailable`] when the backend is unreachable or does not
    /// answer within the wait; [`LockError::Invalid`] for an empty name, a
    /// TTL under 1 ms, or no Tokio runtime.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        self.acquire_as(None, name, ttl, wait).await
    }

    /// [`LockManager::acquire`], on behalf of `session` when there is one
    /// (deadlock detection, see [`LockSession`]).
    async fn acquire_as(
        &self,
        session: Option<&SessionId>,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        validate_request(name, ttl)?;
        if session.is_none() && !wait.is_zero() && self.backend.queues_waiters() {
            return self.acquire_queued(name, ttl, wait).await;
        }
        let handle = runtime()?;
        let started = Instant::now();
        // `None`: wait forever (`Duration::MAX`, or any wait the clock
        // cannot represent).
        let deadline = started.checked_add(wait);
        let mut backoff = backoff(ttl);
        let mut contended = false;
        let mut holder: Option<String> = None;
        let mut watch: Option<ReleaseWatch> = None;
        // Removes the session's wait-for edge when the wait ends without the
        // lock (timeout, error, or this future dropped); disarmed when the
        // backend removed it itself (granted, deadlock).
        let mut edge: Option<GiveUp> = None;
        loop {
            let attempt_started = Instant::now();
            // A try without wait (`wait` zero) is bounded by the backend's
            // own response timeout; every attempt of a waiting acquire by
            // what is left of the wait, and none is made once it is spent.
            let bound = if wait.is_zero() { None } else { deadline };
            if contended && bound.is_some_and(|d| attempt_started >= d) {
                return Err(self.timed_out(name, started, holder));
            }
            let attempt = match session {
                None => {
                    self.bounded(bound, wait, self.backend.try_acquire(name, ttl))
                        .await
                }
                Some(session) => {
                    let edge_ttl = edge_ttl(wait, deadline, attempt_started);
                    let attempt = self
                        .bounded(
                            bound,
                            wait,
                            self.backend
                                .try_acquire_in_session(name, ttl, session, edge_ttl),
                        )
                        .await;
                    if edge.is_none()
                        && !edge_ttl.is_zero()
                        && matches!(attempt, Ok(Attempt::Held { .. }))
                    {
                        edge = Some(wait_edge(&self.backend, &handle, session, name));
                    }
                    attempt
                }
            };
            match attempt {
                Ok(Attempt::Acquired(lease)) => {
                    // The backend dropped the edge in the same step.
                    edge.iter_mut().for_each(GiveUp::disarm);
                    return Ok(self.guard(lease, handle, started, attempt_started, contended));
                }
                Ok(Attempt::Held {
                    expires_in,
                    holder: held_by,
                }) => {
                    contended = true;
                    if held_by.is_some() {
                        holder = held_by;
                    }
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(self.timed_out(name, started, holder));
                    }
                    let Some(w) = watch.as_mut() else {
                        // Subscribe, then try again at once: a release that
                        // happened before the subscription took effect is
                        // seen by that attempt, every later one wakes us.
                        let mut w = self.backend.watch(name);
                        let _ = until(deadline, w.ready()).await;
                        watch = Some(w);
                        continue;
                    };
                    // Retry just after the holder's lease would expire (a
                    // crashed holder never releases), or on a release event.
                    let nap = nap(expires_in, w.is_supported(), &mut backoff);
                    // A session refreshes its wait-for edge before it
                    // expires.
                    let nap = if edge.is_some() {
                        nap.min(MAX_WAIT_EDGE_TTL / 2)
                    } else {
                        nap
                    };
                    let wake = match (now.checked_add(nap), deadline) {
                        (Some(t), Some(d)) => Some(t.min(d)),
                        (t, d) => t.or(d),
                    };
                    tokio::select! {
                        () = w.released() => {}
                        _ = until(wake, std::future::pending::<()>()) => {}
                    }
                }
                Err(e) => {
                    if e.is_deadlock() {
                        // The backend dropped the edge in the same step.
                        edge.iter_mut().for_each(GiveUp::disarm);
                        metrics::counter!(metric_names::DEADLOCKS).increment(1);
                        tracing::debug!(lock = name, error = %e, "deadlock detected");
                    }
                    return Err(self.failed(name, e, contended, deadline, started, holder));
                }
            }
        }
    }

    /// [`LockManager::acquire`] (without a session, with a wait) on a
    /// backend that [queues waiters](LockBackend::queues_waiters): one
    /// [`WaitTicket`] for the whole wait; the release hands the lock over and
    /// says to whom ([`Wake::Granted`]). That waiter takes the announced
    /// lease (no round trip), or confirms the handoff with an attempt when
    /// there is no lease in the announcement or less than half its TTL would
    /// be left counted from its last attempt. Other waiters keep waiting: no
    /// thundering herd, and a waiter need not hear of handoffs to others:
    /// it tries again when the holder its last attempt saw would expire
    /// (that attempt learns the current holder's expiry), at its deadline,
    /// and on every other event (a release with nobody queued, a missed
    /// notification), as in the plain loop.
    async fn acquire_queued(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        let handle = runtime()?;
        let started = Instant::now();
        let deadline = started.checked_add(wait);
        let ticket = WaitTicket::random();
        let mut backoff = backoff(ttl);
        // Created before the first attempt: a watch ready at once (this
        // client already listens to the lock) sees every handoff made after
        // that attempt, so nothing needs trying again. Otherwise the waiter
        // subscribes once it finds the lock held, then tries again.
        let mut watch = self.backend.watch(name);
        let mut subscribed = watch.is_ready();
        // Armed from the first attempt on: an attempt may queue the ticket
        // even if its answer never arrives.
        let mut give_up = queued_wait(&self.backend, &handle, name, &ticket);
        let mut contended = false;
        let mut holder: Option<String> = None;
        loop {
            let attempt_started = Instant::now();
            if contended && deadline.is_some_and(|d| attempt_started >= d) {
                return Err(self.timed_out(name, started, holder));
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(attempt_started)
            });
            let attempt = self
                .bounded(
                    deadline,
                    wait,
                    self.backend.try_acquire_queued(name, ttl, &ticket, left),
                )
                .await;
            let expires_in = match attempt {
                Ok(Attempt::Acquired(lease)) => {
                    give_up.disarm();
                    return Ok(self.guard(lease, handle, started, attempt_started, contended));
                }
                Ok(Attempt::Held {
                    expires_in,
                    holder: held_by,
                }) => {
                    contended = true;
                    if held_by.is_some() {
                        holder = held_by;
                    }
                    expires_in
                }
                Err(e) => return Err(self.failed(name, e, contended, deadline, started, holder)),
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(self.timed_out(name, started, holder));
            }
            // The lock was not ours at this attempt: a handoff announced
            // before it (to this ticket, since expired) is stale, and must not
            // be taken for the next one.
            watch.discard_pending();
            if !subscribed {
                // Subscribe, then try again at once: a handoff made before the
                // subscription took effect is seen by that attempt.
                let _ = until(deadline, watch.ready()).await;
                subscribed = true;
                continue;
            }
            // Try again just after the holder's lease would expire (a crashed
            // holder never releases), on a handoff to us, or on a release.
            let nap = nap(expires_in, watch.is_supported(), &mut backoff);
            let retry_at = now.checked_add(nap);
            loop {
                let wake = match (retry_at, deadline) {
                    (Some(t), Some(d)) => Some(t.min(d)),
                    (t, d) => t.or(d),
                };
                tokio::select! {
                    event = watch.next() => match event {
                        Wake::Granted { ticket: to, lease: Some(lease), .. }
                            if to == ticket.as_str()
                                && lease.name() == name
                                && lease.ttl() >= ttl
                                && attempt_started
                                    .checked_add(lease.ttl() / 2)
                                    .is_some_and(|t| Instant::now() < t) =>
                        {
                            // Handed to us with the lease: take it, counting
                            // its TTL from the start of our last attempt
                            // (the handoff came after it). After a long wait
                            // that would leave too little, or when the lease
                            // was cut short to our wait's end, we confirm
                            // with an attempt instead (a fresh, full TTL).
                            give_up.disarm();
                            return Ok(self.guard(lease, handle, started, attempt_started, contended));
                        }
                        // Handed to another waiter (a backend may announce
                        // handoffs to other waiters of this process, or not at
                        // all): keep waiting. Nothing here depends on being
                        // told: `retry_at` stays the expiry of the holder our
                        // last attempt saw, and each retry learns the current
                        // holder's (a waiter the lock was handed to and that is
                        // gone holds it at most until its own deadline).
                        Wake::Granted { ticket: to, .. } if to != ticket.as_str() => {}
                        _ => break,
                    },
                    _ = until(wake, std::future::pending::<()>()) => break,
                }
            }
        }
    }

    /// The guard of a lease just acquired (with its metrics and log line).
    fn guard(
        &self,
        lease: Lease,
        handle: Handle,
        started: Instant,
        requested_at: Instant,
        contended: bool,
    ) -> LockGuard {
        let waited = started.elapsed();
        metrics::counter!(metric_names::ACQUISITIONS).increment(1);
        metrics::histogram!(metric_names::WAIT_SECONDS).record(waited.as_secs_f64());
        if contended {
            metrics::counter!(metric_names::CONTENDED).increment(1);
        }
        tracing::debug!(lock = lease.name(), token = %lease.token(), ?waited, "lock acquired");
        LockGuard::start(
            lease,
            Arc::clone(&self.backend),
            handle,
            requested_at,
            self.renew,
        )
    }

    /// The error an acquire returns for a failed attempt: a `Timeout` when
    /// the wait ran out during a retry of a lock it saw held (an attempt's
    /// budget is what is left of the wait: the caller waited its whole wait
    /// for a held lock), else the error itself.
    fn failed(
        &self,
        name: &str,
        e: LockError,
        contended: bool,
        deadline: Option<Instant>,
        started: Instant,
        holder: Option<String>,
    ) -> LockError {
        if contended && e.is_unavailable() && deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::debug!(lock = name, error = %e, "the wait ran out during a retry");
            return self.timed_out(name, started, holder);
        }
        if e.is_unavailable() {
            metrics::counter!(metric_names::UNAVAILABLE).increment(1);
        }
        e
    }

    /// The `Timeout` of a waiter that saw the lock held for its whole wait.
    fn timed_out(&self, name: &str, started: Instant, holder: Option<String>) -> LockError {
        metrics::counter!(metric_names::CONTENDED).increment(1);
        metrics::counter!(metric_names::TIMEOUTS).increment(1);
        LockError::Timeout {
            name: name.to_owned(),
            waited: started.elapsed(),
            holder,
        }
    }

    /// Acquires every lock in `names`, all or nothing, within one `wait`.
    ///
    /// The locks are taken one after the other in one canonical order
    /// (sorted, duplicates dropped), so two callers asking for overlapping
    /// sets in any order cannot deadlock. Each lock waits for what is left
    /// of the common wait (a `wait` of zero tries each once). On any failure
    /// the locks already taken are released before the error is returned.
    /// The guards come back in the canonical order, each with its own
    /// fencing token; an empty `names` gives no guards.
    ///
    /// Errors: as [`LockManager::acquire`]; a `Timeout` names the lock that
    /// stayed held and the time waited in total.
    pub async fn lock_all<S: AsRef<str>>(
        &self,
        names: &[S],
        ttl: Duration,
        wait: Duration,
    ) -> Result<Vec<LockGuard>, LockError> {
        let mut order: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        order.sort_unstable();
        order.dedup();
        let started = Instant::now();
        let deadline = started.checked_add(wait);
        let mut guards = Vec::with_capacity(order.len());
        for name in order {
            let step = if wait.is_zero() {
                Ok(Duration::ZERO)
            } else {
                match deadline {
                    None => Ok(Duration::MAX),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            Err(self.timed_out(name, started, None))
                        } else {
                            Ok(left)
                        }
                    }
                }
            };
            let taken = match step {
                Ok(step) => self.acquire(name, ttl, step).await,
                Err(e) => Err(e),
            };
            match taken {
                Ok(guard) => guards.push(guard),
                Err(e) => {
                    for guard in guards {
                        if let Err(release) = guard.release().await {
                            tracing::warn!(error = %release, "lock_all: releasing a lock taken before the failure failed; it expires after its TTL");
                        }
                    }
                    return Err(match e {
                        LockError::Timeout { name, holder, .. } => LockError::Timeout {
                            name,
                            waited: started.elapsed(),
                            holder,
                        },
                        other => other,
                    });
                }
            }
        }
        Ok(guards)
    }

    /// One attempt, no waiting: `Ok(None)` when someone else holds `name`.
    ///
    /// Errors: as [`LockManager::acquire`], without `Timeout`.
    pub async fn try_acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        held_elsewhere_as_none(self.acquire(name, ttl, Duration::ZERO).await)
    }

    /// Locks the resource `id` of kind `kind` (lock name `kind:id`) with the
    /// default TTL, waiting up to `wait`: the Python application's
    /// `plaid_sync_lock(item_id, timeout=30)` is
    /// `lock_resource("plaid_sync", item_id, Duration::from_secs(30))`.
    pub async fn lock_resource(
        &self,
        kind: &str,
        id: &str,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        if kind.is_empty() {
            return Err(LockError::Invalid {
                reason: "resource kind is empty".into(),
            });
        }
        self.acquire(&resource_name(kind, id), self.default_ttl, wait)
            .await
    }

    /// Runs a backend call, giving up with `Unavailable` at `deadline`
    /// (the end of the caller's `wait`). Without a deadline (a try without
    /// wait, or waiting forever) the backend's own response timeout bounds
    /// the call.
    async fn bounded<T>(
        &self,
        deadline: Option<Instant>,
        wait: Duration,
        call: impl Future<Output = Result<T, LockError>>,
    ) -> Result<T, LockError> {
        match until(deadline, call).await {
            Some(r) => r,
            None => Err(LockError::Unavailable {
                backend: self.backend.describe(),
                reason: format!("no answer within the wait ({wait:?})"),
            }),
        }
    }
}

/// The retry delays of a waiter whose backend cannot notify: exponential
/// from 2 ms, with jitter, at most a quarter second (or the TTL).
fn backoff(ttl: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(2))
        .with_max_delay(ttl.clamp(Duration::from_millis(2), Duration::from_millis(250)))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long a session's wait-for edge recorded by an attempt at `now` lives:
/// zero for a try without wait (no edge), else what is left of the wait, at
/// most [`MAX_WAIT_EDGE_TTL`] and at least 1 ms.
fn edge_ttl(wait: Duration, deadline: Option<Instant>, now: Instant) -> Duration {
    if wait.is_zero() {
        return Duration::ZERO;
    }
    let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
    left.clamp(Duration::from_millis(1), MAX_WAIT_EDGE_TTL)
}

/// Backend clean-up for a wait that ends without the lock (timeout, error,
/// or the acquire future dropped): run in the background when dropped
/// armed, best effort (what it cleans up also expires on its own). A
/// runtime shutting down drops the task.
struct GiveUp {
    handle: Handle,
    cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl GiveUp {
    fn new(handle: Handle, cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            handle,
            cleanup: Some(Box::pin(cleanup)),
        }
    }

    /// Nothing to clean up any more (the lock was granted, or the backend
    /// cleaned up itself).
    fn disarm(&mut self) {
        self.cleanup = None;
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            drop(self.handle.spawn(cleanup));
        }
    }
}

/// Removes the wait-for edge "`session` waits for `name`" when dropped
/// armed.
fn wait_edge(
    backend: &Arc<dyn LockBackend>,
    handle: &Handle,
    session: &SessionId,
    name: &str,
) -> GiveUp {
    let (backend, session, name) = (Arc::clone(backend), session.clone(), name.to_owned());
    GiveUp::new(handle.clone(), async move {
        if let Err(e) = backend.end_wait(&session, &name).await {
            tracing::debug!(lock = %name, error = %e, "removing a wait-for edge failed; it expires on its own");
        }
    })
}

/// Leaves the queue of `name` (releasing a lock handed over to `ticket`
/// meanwhile) when dropped armed.
fn queued_wait(
    backend: &Arc<dyn LockBackend>,
    handle: &Handle,
    name: &str,
    ticket: &WaitTicket,
) -> GiveUp {
    let (backend, name, ticket) = (Arc::clone(backend), name.to_owned(), ticket.clone());
    GiveUp::new(handle.clone(), async move {
        if let Err(e) = backend.cancel_wait(&name, &ticket).await {
            tracing::debug!(lock = %name, error = %e, "leaving a lock's wait queue failed; the entry expires at its deadline");
        }
    })
}

/// A [`LockManager`] seen as one thread of control, for deadlock detection
/// among code that nests locks one at a time.
///
/// Locks taken through a session are recorded in the backend as held by
/// its [`SessionId`], and while a session waits for a lock it records a
/// *wait-for edge* "this session waits for that lock" (expiring after what
/// is left of the wait, at most [`MAX_WAIT_EDGE_TTL`], refreshed while it
/// waits, removed when the wait ends). An acquire whose wait would close a
/// cycle — the lock's holder's session waits for a lock whose holder's
/// session … waits for a lock this session holds — fails at once with
/// [`LockError::Deadlock`] naming the locks of the cycle, instead of every
/// side waiting out its timeout.
///
/// - Detection is only among sessions on the same lock service (one Redis,
///   one database, one `MemoryBackend`): a lock taken without a session, or
///   on another backend, ends the walk (no edges, exactly as before).
/// - A session is one thread of control: two tasks of one
///   [`LockManager`] are *not* one identity (task 1 waiting for a lock
///   task 2 holds is no deadlock), so give each task its own session. A
///   session waits for one lock at a time.
/// - When two sessions close a cycle at the same moment, both may get
///   `Deadlock`; neither waits out its timeout.
/// - A session that asks for a lock it already holds gets `Deadlock` (a
///   cycle of one), since it would wait for itself.
/// - Backends that do not support detection (see [`LockBackend`]) make a
///   session behave like the manager itself.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), manna_lock::LockError> {
/// use manna_lock::{LockError, LockManager};
/// use std::time::Duration;
///
/// let locks = LockManager::in_memory();
/// let (a, b) = (locks.session(), locks.session());
/// let ttl = Duration::from_secs(30);
/// let x = a.acquire("x", ttl, Duration::from_secs(5)).await?;
/// let y = b.acquire("y", ttl, Duration::from_secs(5)).await?;
/// // `a` holds x and waits for y ...
/// let waiting = tokio::spawn(async move { a.acquire("y", ttl, Duration::from_secs(30)).await });
/// # tokio::time::sleep(Duration::from_millis(50)).await;
/// // ... so `b`, holding y, would deadlock waiting for x: it is told at once.
/// let err = b.acquire("x", ttl, Duration::from_secs(30)).await.unwrap_err();
/// assert!(matches!(&err, LockError::Deadlock { cycle } if cycle == &["x", "y"]));
/// y.release().await?; // `b` backs off; `a` gets y
/// let y_for_a = waiting.await.expect("task")?;
/// # y_for_a.release().await?; x.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LockSession {
    manager: LockManager,
    id: SessionId,
}

impl LockSession {
    /// The session's identity in the backend.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The manager this session takes its locks through.
    pub fn manager(&self) -> &LockManager {
        &self.manager
    }

    /// [`LockManager::acquire`] on behalf of this session, with deadlock
    /// detection.
    ///
    /// Errors: as [`LockManager::acquire`], plus [`LockError::Deadlock`]
    /// when waiting would close a wait-for cycle (returned at once, well
    /// before `wait`).
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        self.manager
            .acquire_as(Some(&self.id), name, ttl, wait)
            .await
    }

    /// One attempt, no waiting (and so no wait-for edge): `Ok(None)` when
    /// someone else holds `name`; a lock taken is recorded as this
    /// session's.
    ///
    /// Errors: as [`LockManager::try_acquire`].
    pub async fn try_acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        held_elsewhere_as_none(self.acquire(name, ttl, Duration::ZERO).await)
    }
}

/// Runs `fut` until `deadline` (`None`: no deadline); `None` if the deadline
/// came first.
async fn until<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The lock name [`LockManager::lock_resource`] uses: `kind:id`.
pub fn resource_name(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

fn runtime() -> Result<Handle, LockError> {
    Handle::try_current().map_err(|_| LockError::Invalid {
        reason: "LockManager must be used from within a Tokio runtime".into(),
    })
}

/// A held lock. Renewed in the background while alive.
///
/// Call [`LockGuard::release`] when done: it reports whether the lease was
/// still held. Dropping the guard without releasing stops renewal and
/// releases in the background (best effort; the TTL covers the rest).
///
/// A lease can be lost while held (the process was paused past the TTL, the
/// backend was unreachable for a whole TTL, the key was deleted): check
/// [`LockGuard::is_lost`] or await [`LockGuard::lost`] and stop working, and
/// pass [`LockGuard::token`] with every write so the store can refuse writes
/// from a holder that did not notice in time.
pub struct LockGuard {
    lease: Lease,
    backend: Arc<dyn LockBackend>,
    handle: Handle,
    state: Arc<LeaseState>,
    renewal: Option<JoinHandle<()>>,
    released: bool,
    acquired_at: Instant,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.lease.name())
            .field("token", &self.lease.token())
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LockGuard {
    fn start(
        lease: Lease,
        backend: Arc<dyn LockBackend>,
        handle: Handle,
        requested_at: Instant,
        renew: bool,
    ) -> Self {
        let state = Arc::new(LeaseState::new(&lease, requested_at));
        let renewal = handle.spawn(watchdog(
            lease.clone(),
            Arc::clone(&backend),
            Arc::clone(&state),
            requested_at,
            renew,
        ));
        Self {
            lease,
            backend,
            handle,
            state,
            renewal: Some(renewal),
            released: false,
            acquired_at: Instant::now(),
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        self.lease.name()
    }

    /// The fencing token: pass it with every write done under this lock.
    pub fn token(&self) -> FencingToken {
        self.lease.token()
    }

    /// The underlying lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// `true` once the lease is known (or must be assumed) lost: renewal was
    /// refused or not confirmed in time, or the local clock says the lease
    /// has run out (the last grant or renewal was *requested* more than the
    /// TTL, less a 1 % + 2 ms margin for drift, ago). The second check means
    /// a process paused past its lease sees it lost the moment it runs
    /// again, before the background renewal gets a chance to notice. Once
    /// `true`, it stays `true`.
    pub fn is_lost(&self) -> bool {
        self.state.check(Instant::now())
    }

    /// Resolves when the lease is lost; never resolves while it is held.
    /// Select on it next to the work to stop the work in time.
    pub async fn lost(&self) {
        let mut rx = self.state.lost.subscribe();
        if rx.wait_for(|lost| *lost).await.is_err() {
            // The sender lives in `self`: unreachable while we borrow it.
            std::future::pending::<()>().await;
        }
    }

    /// Releases the lock. `Ok(true)` if the lease was still held (the release
    /// took effect), `Ok(false)` if it had already been lost.
    ///
    /// Errors: [`LockError::Unavailable`] (the lease then expires after its
    /// TTL since renewal has stopped).
    pub async fn release(mut self) -> Result<bool, LockError> {
        self.released = true;
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        metrics::histogram!(metric_names::HELD_SECONDS)
            .record(self.acquired_at.elapsed().as_secs_f64());
        let held = self.backend.release(&self.lease).await?;
        if !held {
            tracing::warn!(lock = self.lease.name(), token = %self.lease.token(), "released a lease that was already lost");
        }
        Ok(held)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if !self.released {
            let backend = Arc::clone(&self.backend);
            let lease = self.lease.clone();
            // Spawning on a runtime that is shutting down drops the task,
            // which is fine: the lease expires after its TTL.
            drop(self.handle.spawn(async move {
                if let Err(e) = backend.release(&lease).await {
                    tracing::warn!(lock = lease.name(), error = %e, "background release of a dropped guard failed");
                }
            }));
        }
    }
}

/// What the guard and its watchdog share: the lost flag, and until when the
/// lease is valid by the local clock.
struct LeaseState {
    lost: watch::Sender<bool>,
    /// The start of the request that last granted or renewed the lease, plus
    /// the TTL less a margin for drift. Guarded together with `lost` so that
    /// a lease seen lost is never renewed back to life.
    valid_until: std::sync::Mutex<Instant>,
    /// TTL less the margin.
    validity: Duration,
}

impl LeaseState {
    fn new(lease: &Lease, requested_at: Instant) -> Self {
        let ttl = lease.ttl();
        // Assume the lease expires a little early: clocks drift, and the grant
        // was made some time after `requested_at`.
        let drift = ttl / 100 + Duration::from_millis(2);
        let validity = ttl.saturating_sub(drift);
        let (lost, _) = watch::channel(false);
        Self {
            lost,
            // A lease the clock cannot represent the end of is treated as
            // already expired (validation keeps TTLs far from that).
            valid_until: std::sync::Mutex::new(
                requested_at.checked_add(validity).unwrap_or(requested_at),
            ),
            validity,
        }
    }

    fn valid_until(&self) -> std::sync::MutexGuard<'_, Instant> {
        // Updates are single assignments: a poisoned lock is still sound.
        self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deadline(&self) -> Instant {
        *self.valid_until()
    }

    /// Whether the lease is lost at `now`; marks it lost once its local
    /// validity has run out.
    fn check(&self, now: Instant) -> bool {
        let until = self.valid_until();
        if *self.lost.borrow() {
            return true;
        }
        if now >= *until {
            self.lost.send_replace(true);
            return true;
        }
        false
    }

    /// Records a renewal requested at `sent`; `false` if the lease was
    /// already marked lost (it stays lost).
    fn renewed(&self, sent: Instant) -> bool {
        let mut until = self.valid_until();
        if *self.lost.borrow() {
            return false;
        }
        *until = sent.checked_add(self.validity).unwrap_or(sent);
        true
    }
}

/// Keeps the lease alive every `ttl / 3`; marks it lost when renewal is
/// refused or cannot be confirmed before the lease would expire.
async fn watchdog(
    lease: Lease,
    backend: Arc<dyn LockBackend>,
    state: Arc<LeaseState>,
    requested_at: Instant,
    renew: bool,
) {
    let ttl = lease.ttl();
    let period = (ttl / 3).max(Duration::from_millis(1));
    let retry_step = (ttl / 10).max(Duration::from_millis(1));
    let after = |t: Instant, d: Duration| t.checked_add(d).unwrap_or(t);
    let mut next = after(requested_at, period);
    loop {
        let valid_until = state.deadline();
        if !renew {
            tokio::time::sleep_until(valid_until).await;
            break;
        }
        tokio::time::sleep_until(next.min(valid_until)).await;
        let sent = Instant::now();
        if state.check(sent) {
            break;
        }
        match tokio::time::timeout_at(valid_until, backend.extend(&lease, ttl)).await {
            Ok(Ok(())) => {
                if !state.renewed(sent) {
                    break;
                }
                metrics::counter!(metric_names::RENEWALS).increment(1);
                next = after(sent, period);
            }
            Ok(Err(LockError::NotHolder { .. })) => {
                tracing::warn!(lock = lease.name(), token = %lease.token(), "lease taken over or expired");
                break;
            }
            Ok(Err(e)) => {
                metrics::counter!(metric_names::RENEWAL_FAILURES).increment(1);
                tracing::warn!(lock = lease.name(), error = %e, "lease renewal failed; retrying until the lease would expire");
                next = after(Instant::now(), retry_step);
            }
            Err(_) => break,
        }
    }
    metrics::counter!(metric_names::LOST).increment(1);
    tracing::warn!(lock = lease.name(), token = %lease.token(), "lease lost");
    tracing::warn!(target: crate::AUDIT_TARGET, event = "lock_lost", lock = lease.name(),
        token = %lease.token(), "a lock's lease was lost while held");
    state.lost.send_replace(true);
}

/// How long a waiter sleeps before trying again: until just after the
/// holder's lease would expire (a crashed holder never releases) — woken
/// earlier by a release event where the backend has them, or by the next
/// backoff step where it has not.
fn nap(
    expires_in: Option<Duration>,
    woken_by_events: bool,
    backoff: &mut impl Iterator<Item = Duration>,
) -> Duration {
    let at_expiry = expires_in.map(|e| e.saturating_add(Duration::from_millis(1)));
    if woken_by_events {
        at_expiry.unwrap_or(Duration::MAX)
    } else {
        let step = backoff.next().unwrap_or(Duration::from_millis(250));
        at_expiry.map_or(step, |e| e.min(step))
    }
}

/// A one-attempt acquire's answer: refused (a zero wait timed out) is `None`.
fn held_elsewhere_as_none(r: Result<LockGuard, LockError>) -> Result<Option<LockGuard>, LockError> {
    match r {
        Ok(guard) => Ok(Some(guard)),
        Err(LockError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
