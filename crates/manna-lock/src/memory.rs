//! The in-memory lock backend (one process).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::backend::validate_request;
use crate::holder::holder_description;
use crate::session::{owner_value, session_of_owner, MAX_WAIT_CHAIN};
use crate::{
    Attempt, FencingToken, Lease, LockBackend, LockError, ReleaseNotifier, ReleaseWatch, SessionId,
};

/// Locks that live in this process only: the default when no `REDIS_URL` is
/// set, and the fake used in tests. It passes the same conformance suite as
/// the Redis backend.
///
/// Share one instance (behind an `Arc`) between everything that must exclude
/// each other. Every lease records [`holder_description`] (this process),
/// which [`Attempt::Held`] returns to the callers it refuses. Time is read from Tokio's clock, so tests can pause and
/// advance it. The per-name fencing counters are kept for the life of the
/// backend (a few bytes per distinct lock name).
///
/// Deadlock detection ([`LockSession`](crate::LockSession)) runs under the
/// same mutex as the leases: the session of each lease is part of its owner
/// value, and each waiting session's wait-for edge is kept with its expiry,
/// so of two sessions closing a cycle, exactly the second one is told.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), manna_lock::LockError> {
/// use manna_lock::{Attempt, LockBackend, MemoryBackend};
/// use std::time::Duration;
/// let backend = MemoryBackend::new();
/// let Attempt::Acquired(lease) = backend.try_acquire("job", Duration::from_secs(5)).await? else {
///     panic!("free lock");
/// };
/// assert!(matches!(backend.try_acquire("job", Duration::from_secs(5)).await?, Attempt::Held { .. }));
/// assert!(backend.release(&lease).await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    notifier: ReleaseNotifier,
    next_owner: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    held: HashMap<String, Held>,
    counters: HashMap<String, u64>,
    /// Wait-for edges: session id -> (lock name, expiry).
    waits: HashMap<String, (String, Instant)>,
}

#[derive(Debug)]
struct Held {
    owner: String,
    holder: String,
    expires_at: Instant,
}

impl State {
    /// The live holder of `name`, dropping an expired entry.
    fn live(&mut self, name: &str, now: Instant) -> Option<&mut Held> {
        if self.held.get(name).is_some_and(|h| h.expires_at <= now) {
            self.held.remove(name);
        }
        self.held.get_mut(name)
    }

    /// The wait-for cycle `session` would close by waiting for `name`, if
    /// any: the lock names from `name` on, following holder sessions and
    /// their unexpired edges, at most [`MAX_WAIT_CHAIN`] steps.
    fn cycle(&mut self, name: &str, session: &str, now: Instant) -> Option<Vec<String>> {
        let mut cycle = vec![name.to_owned()];
        let mut lock = name.to_owned();
        for _ in 0..MAX_WAIT_CHAIN {
            let holder = session_of_owner(&self.live(&lock, now)?.owner)?.to_owned();
            if holder == session {
                return Some(cycle);
            }
            let (waits_for, until) = self.waits.get(&holder)?;
            if *until <= now {
                self.waits.remove(&holder);
                return None;
            }
            lock.clone_from(waits_for);
            cycle.push(lock.clone());
        }
        None
    }

    /// Removes `session`'s edge if it is on `name`.
    fn end_wait(&mut self, session: &str, name: &str) {
        if self.waits.get(session).is_some_and(|(n, _)| n == name) {
            self.waits.remove(session);
        }
    }

    /// Grants `name` (free at `now`) to a new owner.
    fn grant(
        &mut self,
        name: &str,
        ttl: Duration,
        now: Instant,
        owner: String,
    ) -> Result<Attempt, LockError> {
        let expires_at = deadline(now, ttl)?;
        // Tokens follow the wall clock (µs since the epoch) and never repeat:
        // a store fence keeps the highest token across processes, so a new
        // process must not start again from 1 below an earlier one's.
        let counter = self.counters.entry(name.to_owned()).or_insert(0);
        let token = FencingToken::next_after(*counter);
        *counter = token.get();
        self.held.insert(
            name.to_owned(),
            Held {
                owner: owner.clone(),
                holder: holder_description(),
                expires_at,
            },
        );
        Ok(Attempt::Acquired(Lease::new(name, owner, token, ttl)))
    }
}

/// The refusal for a lock held by `h`.
fn held(h: &Held, now: Instant) -> Attempt {
    Attempt::Held {
        expires_in: Some(h.expires_at.saturating_duration_since(now)),
        holder: Some(h.holder.clone()),
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent
        // (every update is a single insert/remove), so a poisoned lock is
        // still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `now + ttl`, or `Invalid` when the clock cannot represent it (never a
/// panic, whatever TTL gets past validation).
fn deadline(now: Instant, ttl: Duration) -> Result<Instant, LockError> {
    now.checked_add(ttl).ok_or_else(|| LockError::Invalid {
        reason: format!("lock TTL {ttl:?} is too long for this clock"),
    })
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn describe(&self) -> String {
        "in-memory".to_owned()
    }

    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let now = Instant::now();
        let mut state = self.state();
        if let Some(h) = state.live(name, now) {
            return Ok(held(h, now));
        }
        let owner = format!("mem-{}", self.next_owner.fetch_add(1, Ordering::Relaxed));
        state.grant(name, ttl, now, owner)
    }

    async fn try_acquire_in_session(
        &self,
        name: &str,
        ttl: Duration,
        session: &SessionId,
        wait_edge: Duration,
    ) -> Result<Attempt, LockError> {
        validate_request(name, ttl)?;
        let now = Instant::now();
        let sid = session.as_str();
        let mut state = self.state();
        if let Some(h) = state.live(name, now) {
            let refusal = held(h, now);
            if wait_edge.is_zero() {
                return Ok(refusal);
            }
            if let Some(cycle) = state.cycle(name, sid, now) {
                state.end_wait(sid, name);
                return Err(LockError::Deadlock { cycle });
            }
            let until = deadline(now, wait_edge)?;
            if state.waits.len() >= 1024 {
                // Forget the edges of waiters that vanished without a word.
                state.waits.retain(|_, (_, u)| *u > now);
            }
            state.waits.insert(sid.to_owned(), (name.to_owned(), until));
            return Ok(refusal);
        }
        let random = format!("mem-{}", self.next_owner.fetch_add(1, Ordering::Relaxed));
        let granted = state.grant(name, ttl, now, owner_value(&random, Some(session)))?;
        state.end_wait(sid, name);
        Ok(granted)
    }

    async fn end_wait(&self, session: &SessionId, name: &str) -> Result<(), LockError> {
        self.state().end_wait(session.as_str(), name);
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let now = Instant::now();
        let released = {
            let mut state = self.state();
            match state.live(lease.name(), now) {
                Some(h) if h.owner == lease.owner() => {
                    state.held.remove(lease.name());
                    true
                }
                _ => false,
            }
        };
        if released {
            self.notifier.notify(lease.name());
        }
        Ok(released)
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError> {
        validate_request(lease.name(), ttl)?;
        let now = Instant::now();
        let mut state = self.state();
        match state.live(lease.name(), now) {
            Some(h) if h.owner == lease.owner() => {
                h.expires_at = deadline(now, ttl)?;
                Ok(())
            }
            _ => Err(LockError::NotHolder {
                name: lease.name().to_owned(),
            }),
        }
    }

    async fn is_held(&self, lease: &Lease) -> Result<bool, LockError> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(state
            .live(lease.name(), now)
            .is_some_and(|h| h.owner == lease.owner()))
    }

    fn watch(&self, name: &str) -> ReleaseWatch {
        self.notifier.watch(name)
    }
}
