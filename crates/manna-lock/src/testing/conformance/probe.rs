//! A client that counts what a waiter did, so that a check can wait for it.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Factory, PATIENCE};
use crate::{Attempt, Lease, LockBackend, LockError, ReleaseWatch, SessionId, WaitTicket};

/// What a [`Probe`]d client has done so far.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Waiting attempts answered "held": each queued its ticket
    /// ([`LockBackend::try_acquire_queued`]) or recorded its session's
    /// wait-for edge ([`LockBackend::try_acquire_in_session`] with an edge).
    waiting: AtomicU64,
    /// Completed [`LockBackend::cancel_wait`] calls.
    cancelled: AtomicU64,
    /// Completed [`LockBackend::end_wait`] calls.
    ended: AtomicU64,
}

impl Seen {
    pub(super) fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    pub(super) fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub(super) fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }
}

/// Polls `done` until it holds, for up to [`PATIENCE`](super::PATIENCE);
/// panics naming `what` otherwise.
pub(super) async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client that counts what it was asked to do (see [`Seen`]), so that a
/// check can wait until a spawned waiter has queued, recorded its edge or
/// cleaned up, instead of sleeping and hoping it has.
struct Probe {
    inner: Arc<dyn LockBackend>,
    seen: Arc<Seen>,
}

/// A new client of the service under test, with what it does counted.
pub(super) fn probed(make: Factory<'_>) -> (Arc<dyn LockBackend>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let probe = Probe {
        inner: make(),
        seen: Arc::clone(&seen),
    };
    (Arc::new(probe), seen)
}

#[async_trait]
impl LockBackend for Probe {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        self.inner.try_acquire(name, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError> {
        self.inner.extend(lease, ttl).await
    }

    async fn is_held(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.is_held(lease).await
    }

    async fn try_acquire_in_session(
        &self,
        name: &str,
        ttl: Duration,
        session: &SessionId,
        wait_edge: Duration,
    ) -> Result<Attempt, LockError> {
        let attempt = self
            .inner
            .try_acquire_in_session(name, ttl, session, wait_edge)
            .await;
        if !wait_edge.is_zero() && matches!(attempt, Ok(Attempt::Held { .. })) {
            self.seen.waiting.fetch_add(1, Ordering::SeqCst);
        }
        attempt
    }

    async fn end_wait(&self, session: &SessionId, name: &str) -> Result<(), LockError> {
        let ended = self.inner.end_wait(session, name).await;
        self.seen.ended.fetch_add(1, Ordering::SeqCst);
        ended
    }

    fn queues_waiters(&self) -> bool {
        self.inner.queues_waiters()
    }

    async fn try_acquire_queued(
        &self,
        name: &str,
        ttl: Duration,
        ticket: &WaitTicket,
        wait: Duration,
    ) -> Result<Attempt, LockError> {
        let attempt = self.inner.try_acquire_queued(name, ttl, ticket, wait).await;
        if matches!(attempt, Ok(Attempt::Held { .. })) {
            self.seen.waiting.fetch_add(1, Ordering::SeqCst);
        }
        attempt
    }

    async fn cancel_wait(&self, name: &str, ticket: &WaitTicket) -> Result<(), LockError> {
        let cancelled = self.inner.cancel_wait(name, ticket).await;
        self.seen.cancelled.fetch_add(1, Ordering::SeqCst);
        cancelled
    }

    fn watch(&self, name: &str) -> ReleaseWatch {
        self.inner.watch(name)
    }
}
