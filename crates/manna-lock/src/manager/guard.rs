//! [`LockGuard`]: a held lock, its renewal watchdog and lost-lease
//! detection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{metric_names, FencingToken, Lease, LockBackend, LockError};

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
    /// Starts the renewal watchdog of a lease just granted.
    pub(super) fn start(
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
