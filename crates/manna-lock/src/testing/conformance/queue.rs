//! The wait queue: handoffs in order, abandoned and dropped waiters.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::probe::{eventually, probed};
use super::{acquired, unique_name, Factory, PATIENCE};
use crate::{Attempt, LockBackend, LockManager, WaitTicket};

/// Every wait-queue check, for a backend that
/// [queues waiters](LockBackend::queues_waiters) (each returns at once for
/// one that does not, such as the in-memory backend):
/// [`queue_hands_over_in_order`], [`queued_waiters_served_in_order`],
/// [`abandoned_grant_is_released`] and [`dropped_waiter_does_not_block`].
pub async fn wait_queue(make: Factory<'_>) {
    queue_hands_over_in_order(make).await;
    queued_waiters_served_in_order(make).await;
    abandoned_grant_is_released(make).await;
    dropped_waiter_does_not_block(make).await;
}

/// An attempt that queues `ticket` (the lock must be held).
async fn queued(backend: &dyn LockBackend, name: &str, ticket: &WaitTicket) {
    match backend
        .try_acquire_queued(
            name,
            Duration::from_secs(10),
            ticket,
            Duration::from_secs(30),
        )
        .await
    {
        Ok(Attempt::Held { .. }) => {}
        other => panic!("expected `{name}` held (the ticket queued), got {other:?}"),
    }
}

/// The port level, step by step: a release hands the lock to the first
/// queued ticket, and only to it (nobody else gets it, not even the second
/// ticket); that ticket's next attempt gets it with a larger token; its
/// release hands it to the second one.
pub async fn queue_hands_over_in_order(make: Factory<'_>) {
    let (a, b, c) = (make(), make(), make());
    if !a.queues_waiters() {
        return;
    }
    let name = unique_name("queue-order");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let (first, second) = (WaitTicket::random(), WaitTicket::random());
    queued(b.as_ref(), &name, &first).await;
    queued(c.as_ref(), &name, &second).await;
    assert!(a.release(&lease).await.expect("release"));
    assert!(
        matches!(a.try_acquire(&name, ttl).await, Ok(Attempt::Held { .. })),
        "the release must hand the lock to the first queued waiter, not leave it free"
    );
    queued(c.as_ref(), &name, &second).await;
    let Ok(Attempt::Acquired(got)) = b
        .try_acquire_queued(&name, ttl, &first, Duration::from_secs(30))
        .await
    else {
        panic!("the first queued waiter must get the lock handed to it");
    };
    assert!(
        got.token() > lease.token(),
        "token did not increase on handoff"
    );
    assert!(b.release(&got).await.expect("release"));
    let Ok(Attempt::Acquired(next)) = c
        .try_acquire_queued(&name, ttl, &second, Duration::from_secs(30))
        .await
    else {
        panic!("the second queued waiter must get the lock after the first released it");
    };
    assert!(
        next.token() > got.token(),
        "token did not increase on handoff"
    );
    assert!(c.release(&next).await.expect("release"));
}

/// Through the [`LockManager`]: waiters that started waiting one after the
/// other get the lock in that order.
pub async fn queued_waiters_served_in_order(make: Factory<'_>) {
    const WAITERS: usize = 4;
    let holder = LockManager::new(make());
    if !holder.backend().queues_waiters() {
        return;
    }
    let name = unique_name("queue-fifo");
    let ttl = Duration::from_secs(30);
    let g = holder
        .acquire(&name, ttl, PATIENCE)
        .await
        .expect("holder acquires");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let (backend, seen) = probed(make);
        let (manager, name, order) = (LockManager::new(backend), name.clone(), Arc::clone(&order));
        let task = tokio::spawn(async move {
            let g = manager
                .acquire(&name, ttl, Duration::from_secs(30))
                .await
                .expect("queued waiter acquires");
            order.lock().expect("order").push(i);
            assert!(g.release().await.expect("release"));
        });
        // This waiter queues before the next one starts.
        eventually(&format!("waiter {i} queued behind the holder"), || {
            seen.waiting() > 0 || task.is_finished()
        })
        .await;
        assert!(!task.is_finished(), "waiter {i} got a lock that is held");
        tasks.push(task);
    }
    assert!(g.release().await.expect("release"));
    for t in tasks {
        t.await.expect("waiter");
    }
    assert_eq!(
        *order.lock().expect("order"),
        (0..WAITERS).collect::<Vec<_>>(),
        "queued waiters must get the lock first come, first served"
    );
}

/// A waiter that gives up after the lock was handed to it (before it
/// confirmed) releases it: the next waiter gets it, nobody holds a lease
/// nobody knows about.
pub async fn abandoned_grant_is_released(make: Factory<'_>) {
    let (a, b, c) = (make(), make(), make());
    if !a.queues_waiters() {
        return;
    }
    let name = unique_name("queue-abandoned");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let (gone, next) = (WaitTicket::random(), WaitTicket::random());
    queued(b.as_ref(), &name, &gone).await;
    queued(c.as_ref(), &name, &next).await;
    assert!(a.release(&lease).await.expect("release"));
    // Handed to `gone`, which gives up without confirming.
    b.cancel_wait(&name, &gone).await.expect("cancel_wait");
    let Ok(Attempt::Acquired(got)) = c
        .try_acquire_queued(&name, ttl, &next, Duration::from_secs(30))
        .await
    else {
        panic!("cancelling a handed-over wait must hand the lock on to the next waiter");
    };
    assert!(c.release(&got).await.expect("release"));
    // Cancelling again, or a ticket never queued, changes nothing.
    b.cancel_wait(&name, &gone)
        .await
        .expect("cancel_wait again");
    let free = acquired(a.as_ref(), &name, ttl).await;
    assert!(a.release(&free).await.expect("release"));
}

/// A waiter whose acquire future is dropped while it is queued (its wait
/// far from over) does not hold up the waiter behind it: the lock goes to
/// that one when the holder releases.
pub async fn dropped_waiter_does_not_block(make: Factory<'_>) {
    let holder = LockManager::new(make());
    if !holder.backend().queues_waiters() {
        return;
    }
    let name = unique_name("queue-dropped");
    let ttl = Duration::from_secs(30);
    let g = holder
        .acquire(&name, ttl, PATIENCE)
        .await
        .expect("holder acquires");
    let ((gone_client, gone_seen), (next_client, next_seen)) = (probed(make), probed(make));
    let (gone, next) = (LockManager::new(gone_client), LockManager::new(next_client));
    let n = name.clone();
    let gone = tokio::spawn(async move { gone.acquire(&n, ttl, Duration::from_secs(120)).await });
    eventually("the first waiter queued", || {
        gone_seen.waiting() > 0 || gone.is_finished()
    })
    .await;
    let n = name.clone();
    let next = tokio::spawn(async move { next.acquire(&n, ttl, Duration::from_secs(20)).await });
    eventually("the second waiter queued", || {
        next_seen.waiting() > 0 || next.is_finished()
    })
    .await;
    assert!(
        !gone.is_finished() && !next.is_finished(),
        "a waiter got a lock that is held"
    );
    gone.abort();
    assert!(gone.await.is_err_and(|e| e.is_cancelled()));
    // Its clean-up runs in the background.
    eventually("the dropped waiter left the queue", || {
        gone_seen.cancelled() > 0
    })
    .await;
    assert!(g.release().await.expect("release"));
    let got = next.await.expect("waiter task").expect(
        "the next waiter acquires (a 30 s handoff to the dropped one would exceed its 20 s wait)",
    );
    assert!(got.release().await.expect("release"));
}
