//! Waiting, renewal and lost-lease detection on top of the port.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::{LockBackend, LockError, MemoryBackend, SessionId};

mod guard;
mod session;
mod wait;

pub use guard::LockGuard;
pub use session::LockSession;

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
///   waits in the lock's FIFO queue with one [`WaitTicket`](crate::WaitTicket), and the release
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

/// A one-attempt acquire's answer: refused (a zero wait timed out) is `None`.
fn held_elsewhere_as_none(r: Result<LockGuard, LockError>) -> Result<Option<LockGuard>, LockError> {
    match r {
        Ok(guard) => Ok(Some(guard)),
        Err(LockError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
