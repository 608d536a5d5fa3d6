//! [`LockSession`]: a manager seen as one thread of control, for deadlock
//! detection.

use std::time::Duration;

use super::{held_elsewhere_as_none, LockGuard, LockManager};
use crate::{LockError, SessionId};

/// A [`LockManager`] seen as one thread of control, for deadlock detection
/// among code that nests locks one at a time.
///
/// Locks taken through a session are recorded in the backend as held by
/// its [`SessionId`], and while a session waits for a lock it records a
/// *wait-for edge* "this session waits for that lock" (expiring after what
/// is left of the wait, at most [`MAX_WAIT_EDGE_TTL`](crate::MAX_WAIT_EDGE_TTL), refreshed while it
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
/// - Backends that do not support detection (see [`LockBackend`](crate::LockBackend)) make a
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
    pub(super) manager: LockManager,
    pub(super) id: SessionId,
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
