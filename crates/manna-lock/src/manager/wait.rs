//! Waiting for a lock: the plain and session wait loop, the queued one, and
//! what a wait leaves behind when it gives up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::{runtime, until, LockGuard, LockManager, MAX_WAIT_EDGE_TTL};
use crate::backend::validate_request;
use crate::{
    metric_names, Attempt, Lease, LockBackend, LockError, ReleaseWatch, SessionId, WaitTicket, Wake,
};

impl LockManager {
    /// [`LockManager::acquire`], on behalf of `session` when there is one
    /// (deadlock detection, see [`LockSession`](super::LockSession)).
    pub(super) async fn acquire_as(
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
            // The lock was not ours at this attempt, so a handoff to this
            // ticket received meanwhile is not taken as it is: it may be
            // stale (announced before the attempt, expired since) or live
            // (announced after the attempt ran, its reply and the handoff
            // crossed). Nor is it dropped (a live handoff would then sit
            // unused until the nap ends, about a TTL): try again at once,
            // which confirms a live one.
            if watch.take_pending(Some(ticket.as_str())) {
                continue;
            }
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
    pub(super) fn timed_out(
        &self,
        name: &str,
        started: Instant,
        holder: Option<String>,
    ) -> LockError {
        metrics::counter!(metric_names::CONTENDED).increment(1);
        metrics::counter!(metric_names::TIMEOUTS).increment(1);
        LockError::Timeout {
            name: name.to_owned(),
            waited: started.elapsed(),
            holder,
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
