//! A queued waiter and a handoff that cross: the backend hands the lock to
//! the waiter while the waiter's attempt reply ("held") is on its way. The
//! waiter must neither take the announced lease as it is (it may be stale)
//! nor drop the announcement and sleep until the holder it saw would expire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use manna_lock::{
    Attempt, Lease, LockBackend, LockError, LockManager, ReleaseNotifier, ReleaseWatch, WaitTicket,
};

/// A queueing backend whose first queued attempt answers "held, for an hour"
/// after it has already announced a handoff of the lock to that very ticket
/// (the release ran between the attempt's script and its reply). Once handed
/// over, the lock is the ticket's: the next attempt confirms it.
#[derive(Default)]
struct Crossing {
    notifier: ReleaseNotifier,
    handed: Mutex<Option<Lease>>,
    attempts: Mutex<u32>,
}

#[manna_lock::async_trait]
impl LockBackend for Crossing {
    fn describe(&self) -> String {
        "crossing".into()
    }
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError> {
        self.try_acquire_queued(name, ttl, &WaitTicket::random(), ttl)
            .await
    }
    async fn release(&self, _lease: &Lease) -> Result<bool, LockError> {
        Ok(self.handed.lock().unwrap().take().is_some())
    }
    async fn extend(&self, _lease: &Lease, _ttl: Duration) -> Result<(), LockError> {
        Ok(())
    }
    async fn is_held(&self, _lease: &Lease) -> Result<bool, LockError> {
        Ok(self.handed.lock().unwrap().is_some())
    }
    fn queues_waiters(&self) -> bool {
        true
    }
    async fn try_acquire_queued(
        &self,
        name: &str,
        ttl: Duration,
        ticket: &WaitTicket,
        _wait: Duration,
    ) -> Result<Attempt, LockError> {
        *self.attempts.lock().unwrap() += 1;
        let mut handed = self.handed.lock().unwrap();
        if let Some(lease) = handed.as_ref() {
            // The lock is this ticket's: confirmed.
            return Ok(Attempt::Acquired(lease.clone()));
        }
        let lease = Lease::new(name, ticket.as_str(), 7u64.into(), ttl);
        *handed = Some(lease.clone());
        self.notifier
            .notify_granted(name, ticket.as_str(), ttl, Some(lease));
        Ok(Attempt::Held {
            expires_in: Some(Duration::from_secs(3600)),
            holder: Some("the holder before".into()),
        })
    }
    fn watch(&self, name: &str) -> ReleaseWatch {
        self.notifier.watch(name)
    }
}

/// The waiter confirms at once (one more attempt) and holds the lock well
/// within its wait. It used to discard the announcement and sleep until the
/// hour the "held" reply named, so its 5 s wait ran out.
#[tokio::test(start_paused = true)]
async fn a_handoff_that_crosses_the_held_reply_is_confirmed_at_once() {
    let backend = Arc::new(Crossing::default());
    let m = LockManager::new(backend.clone());
    let guard = m
        .acquire("crossed", Duration::from_secs(30), Duration::from_secs(5))
        .await
        .expect("the lock was handed to this waiter");
    assert_eq!(guard.token().get(), 7);
    assert_eq!(
        *backend.attempts.lock().unwrap(),
        2,
        "one attempt, one confirmation"
    );
    assert!(guard.release().await.unwrap());
}
