//! The conformance suite every [`LockBackend`] must pass.
//!
//! Each check takes a factory that returns a **new client of the same lock
//! service** (for the in-memory backend: clones of one `Arc`; for Redis: a
//! new connection to the same server). Checks use unique lock names, so they
//! can run against a shared server and in parallel. They panic on failure,
//! with a message naming the broken guarantee, and need a Tokio runtime.
//!
//! [`run_all`] includes [`holder_named`], which expects the backend to name
//! the holder of a lock it refuses (every manna backend does); a backend
//! that cannot runs the other checks one by one.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use manna_lock::{LockBackend, MemoryBackend};
//! use std::sync::Arc;
//! let shared: Arc<dyn LockBackend> = Arc::new(MemoryBackend::new());
//! manna_lock::testing::conformance::run_all(&move || Arc::clone(&shared)).await;
//! # }
//! ```
#![allow(clippy::panic, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{
    Attempt, FencingToken, Lease, LockBackend, LockError, LockGuard, LockManager, ReleaseWatch,
    SessionId, WaitTicket,
};

/// Returns a new client of the lock service under test.
pub type Factory<'a> = &'a (dyn Fn() -> Arc<dyn LockBackend> + Send + Sync);

/// A lock name no other run uses.
pub fn unique_name(check: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "conformance:{check}:{}:{nanos}:{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

async fn acquired(backend: &dyn LockBackend, name: &str, ttl: Duration) -> Lease {
    match backend.try_acquire(name, ttl).await {
        Ok(Attempt::Acquired(lease)) => lease,
        Ok(other) => panic!("expected to acquire free lock `{name}`, got {other:?}"),
        Err(e) => panic!("try_acquire(`{name}`) failed: {e}"),
    }
}

/// How long a check waits for something that takes milliseconds (a spawned
/// waiter queuing, a clean-up running) before it calls it broken: generous,
/// so that a loaded machine cannot fail a check by being slow.
const PATIENCE: Duration = Duration::from_secs(10);

/// What a [`Probe`]d client has done so far.
#[derive(Debug, Default)]
struct Seen {
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
    fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }
}

/// Polls `done` until it holds, for up to [`PATIENCE`]; panics naming
/// `what` otherwise.
async fn eventually(what: &str, done: impl Fn() -> bool) {
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
fn probed(make: Factory<'_>) -> (Arc<dyn LockBackend>, Arc<Seen>) {
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

/// Runs every check.
pub async fn run_all(make: Factory<'_>) {
    // The checks that mostly sleep (for a TTL to pass) run alongside the
    // others.
    let sleepers = async {
        expiry(make).await;
        extend(make).await;
        renewal_keeps_lease(make).await;
    };
    let others = async {
        exclusive_and_release(make).await;
        release_by_non_holder_refused(make).await;
        fencing_monotonic(make).await;
        invalid_requests(make).await;
        waiter_wakeup(make).await;
        mutual_exclusion_under_contention(make).await;
        lost_lease_signal(make).await;
        holder_named(make).await;
        lock_all_in_order(make).await;
        deadlock_detection(make).await;
        wait_queue(make).await;
    };
    tokio::join!(sleepers, others);
}

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

/// Every deadlock-detection check ([`LockSession`](crate::LockSession)):
/// [`deadlock_between_two_sessions`], [`deadlock_among_three_sessions`],
/// [`no_deadlock_without_a_cycle`], [`sessions_of_one_manager_are_distinct`]
/// and [`wait_edges_vanish_when_the_wait_ends`]. A backend that keeps the
/// default (unsupported) session methods fails them.
pub async fn deadlock_detection(make: Factory<'_>) {
    deadlock_between_two_sessions(make).await;
    deadlock_among_three_sessions(make).await;
    no_deadlock_without_a_cycle(make).await;
    sessions_of_one_manager_are_distinct(make).await;
    wait_edges_vanish_when_the_wait_ends(make).await;
}

/// "Fails fast": a `Deadlock` must come well within this, although the
/// caller was ready to wait [`LONG_WAIT`].
const FAST: Duration = Duration::from_secs(10);
const LONG_WAIT: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(30);

async fn session_holds(session: &crate::LockSession, name: &str) -> LockGuard {
    session
        .acquire(name, TTL, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("a session acquires free lock `{name}`: {e}"))
}

/// A session on a new [`Probe`]d client.
fn probed_session(make: Factory<'_>) -> (Arc<crate::LockSession>, Arc<Seen>) {
    let (backend, seen) = probed(make);
    (Arc::new(LockManager::new(backend).session()), seen)
}

/// Spawns `session` (on the client `seen` watches) waiting (up to
/// [`LONG_WAIT`]) for `name`, and returns once its wait-for edge is
/// recorded (an attempt of it was answered "held").
async fn waiting_for(
    session: Arc<crate::LockSession>,
    seen: &Seen,
    name: &str,
) -> tokio::task::JoinHandle<Result<LockGuard, LockError>> {
    let before = seen.waiting();
    let n = name.to_owned();
    let task = tokio::spawn(async move { session.acquire(&n, TTL, LONG_WAIT).await });
    eventually(
        &format!("a waiter for lock `{name}` recorded its edge"),
        || seen.waiting() > before || task.is_finished(),
    )
    .await;
    if task.is_finished() {
        let outcome = task.await.map(|r| r.map(|g| g.token()));
        panic!("a waiter for lock `{name}`, which is held, did not wait: {outcome:?}");
    }
    task
}

/// `session` asks for `name` and must get a `Deadlock` naming `cycle`, fast.
async fn expect_deadlock(session: &crate::LockSession, name: &str, cycle: &[&str]) {
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(LONG_WAIT * 2, session.acquire(name, TTL, LONG_WAIT))
        .await
        .unwrap_or_else(|_| panic!("acquiring `{name}` hung past its wait"));
    let waited = started.elapsed();
    match outcome {
        Err(LockError::Deadlock { cycle: got }) => {
            assert_eq!(got, cycle, "the Deadlock must name the cycle in order");
        }
        Err(e) => panic!("expected a Deadlock on `{name}` (cycle {cycle:?}), got the error {e} after {waited:?}"),
        Ok(g) => panic!("expected a Deadlock on `{name}` (cycle {cycle:?}), got the lock (token {}) after {waited:?}", g.token()),
    }
    assert!(
        waited < FAST,
        "the Deadlock came after {waited:?}: it must fail fast, not wait"
    );
}

async fn released(guard: LockGuard) {
    let name = guard.name().to_owned();
    assert!(
        guard.release().await.expect("release"),
        "lock `{name}` was lost before its release"
    );
}

async fn got(task: tokio::task::JoinHandle<Result<LockGuard, LockError>>, what: &str) -> LockGuard {
    tokio::time::timeout(FAST, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting {FAST:?} after the release"))
        .expect("waiter task")
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A holds X and waits for Y; B holds Y and asks for X: B is told
/// `Deadlock` naming X then Y, well before its 30 s wait; once B releases
/// Y, A gets it.
pub async fn deadlock_between_two_sessions(make: Factory<'_>) {
    let (a, a_seen) = probed_session(make);
    let b = LockManager::new(make()).session();
    let base = unique_name("deadlock2");
    let (x, y) = (format!("{base}:x"), format!("{base}:y"));
    let gx = session_holds(&a, &x).await;
    let gy = session_holds(&b, &y).await;
    let a_waits = waiting_for(Arc::clone(&a), &a_seen, &y).await;
    expect_deadlock(&b, &x, &[&x, &y]).await;
    released(gy).await;
    let a_got_y = got(a_waits, "A gets Y once B released it").await;
    released(a_got_y).await;
    released(gx).await;
}

/// A holds X waits Y, B holds Y waits Z, C holds Z and asks for X:
/// `Deadlock` naming X, Y, Z; then the chain unwinds as C releases.
pub async fn deadlock_among_three_sessions(make: Factory<'_>) {
    let (a, a_seen) = probed_session(make);
    let (b, b_seen) = probed_session(make);
    let c = LockManager::new(make()).session();
    let base = unique_name("deadlock3");
    let (x, y, z) = (
        format!("{base}:x"),
        format!("{base}:y"),
        format!("{base}:z"),
    );
    let gx = session_holds(&a, &x).await;
    let gy = session_holds(&b, &y).await;
    let gz = session_holds(&c, &z).await;
    let a_waits = waiting_for(Arc::clone(&a), &a_seen, &y).await;
    let b_waits = waiting_for(Arc::clone(&b), &b_seen, &z).await;
    expect_deadlock(&c, &x, &[&x, &y, &z]).await;
    released(gz).await;
    let b_got_z = got(b_waits, "B gets Z once C released it").await;
    released(b_got_z).await;
    released(gy).await;
    let a_got_y = got(a_waits, "A gets Y once B released it").await;
    released(a_got_y).await;
    released(gx).await;
}

/// A chain without a cycle waits normally: A holds X waits Y, B holds Y
/// waits Z, C holds Z and asks for W (free), then for nothing held by the
/// chain; and a session waiting behind a lock taken outside any session is
/// no deadlock either. Everybody gets their lock as the chain unwinds.
pub async fn no_deadlock_without_a_cycle(make: Factory<'_>) {
    let (a, a_seen) = probed_session(make);
    let (b, b_seen) = probed_session(make);
    let (c, c_seen) = probed_session(make);
    let plain = LockManager::new(make());
    let base = unique_name("chain");
    let [x, y, z, w] = ["x", "y", "z", "w"].map(|s| format!("{base}:{s}"));
    let gx = session_holds(&a, &x).await;
    let gy = session_holds(&b, &y).await;
    let gz = session_holds(&c, &z).await;
    let a_waits = waiting_for(Arc::clone(&a), &a_seen, &y).await;
    let b_waits = waiting_for(Arc::clone(&b), &b_seen, &z).await;
    // C is at the head of the chain: taking another lock is no cycle.
    let gw = session_holds(&c, &w).await;
    // A plain holder (no session) of W2, waited for by C: no edge to follow.
    let w2 = format!("{base}:w2");
    let plain_w2 = plain
        .acquire(&w2, TTL, PATIENCE)
        .await
        .expect("plain acquire");
    let c_waits = waiting_for(Arc::clone(&c), &c_seen, &w2).await;
    released(plain_w2).await;
    let c_got_w2 = got(c_waits, "C gets W2 (a chain is no cycle)").await;
    released(c_got_w2).await;
    released(gw).await;
    released(gz).await;
    let b_got_z = got(b_waits, "B gets Z (a chain is no cycle)").await;
    released(b_got_z).await;
    released(gy).await;
    let a_got_y = got(a_waits, "A gets Y (a chain is no cycle)").await;
    released(a_got_y).await;
    released(gx).await;
}

/// Two tasks of one manager are two sessions, not one identity: task 1's
/// session holds X, task 2's waits for it and gets it after the release,
/// with no `Deadlock`.
pub async fn sessions_of_one_manager_are_distinct(make: Factory<'_>) {
    let (backend, seen) = probed(make);
    let manager = LockManager::new(backend);
    let (one, two) = (manager.session(), Arc::new(manager.session()));
    assert_ne!(one.id(), two.id(), "each session has its own id");
    let x = unique_name("same-manager");
    let gx = session_holds(&one, &x).await;
    assert_eq!(
        gx.lease().session(),
        Some(one.id().as_str()),
        "the lease records its session"
    );
    let two_waits = waiting_for(Arc::clone(&two), &seen, &x).await;
    released(gx).await;
    let two_got_x = got(two_waits, "task 2 gets X after task 1 released it").await;
    released(two_got_x).await;
}

/// A wait-for edge disappears when its wait ends: after a timeout, and
/// after the waiting future is dropped. B (holding Y) asking for X (held by
/// A) afterwards is then a plain wait (`Timeout`), not a `Deadlock` on the
/// edge A used to have on Y.
pub async fn wait_edges_vanish_when_the_wait_ends(make: Factory<'_>) {
    let (a, a_seen) = probed_session(make);
    let b = LockManager::new(make()).session();
    let base = unique_name("edges");
    let (x, y) = (format!("{base}:x"), format!("{base}:y"));
    let gx = session_holds(&a, &x).await;
    let gy = session_holds(&b, &y).await;
    // Long enough for a first attempt to come back "held" on a slow
    // machine (a wait that ends before any answer is `Unavailable`, not a
    // `Timeout`), far shorter than the holders' TTL.
    let short = Duration::from_millis(1500);
    let expect_plain_wait = |what: &'static str| {
        let (b, x) = (&b, &x);
        async move {
            match b.acquire(x, TTL, short).await {
                Err(LockError::Timeout { .. }) => {}
                other => panic!("{what}: B waiting for X must time out normally, got {other:?}"),
            }
        }
    };

    // A's wait for Y times out.
    let ended = a_seen.ended();
    match a.acquire(&y, TTL, short).await {
        Err(LockError::Timeout { .. }) => {}
        other => panic!("A's wait for Y (held) must time out, got {other:?}"),
    }
    // Its edge is removed in the background.
    eventually("A's edge removed after its wait timed out", || {
        a_seen.ended() > ended
    })
    .await;
    expect_plain_wait("after A's wait timed out").await;

    // A's waiting future is dropped long before its 30 s wait is over.
    let ended = a_seen.ended();
    let a_waits = waiting_for(Arc::clone(&a), &a_seen, &y).await;
    a_waits.abort();
    assert!(a_waits.await.is_err_and(|e| e.is_cancelled()));
    eventually(
        "A's edge removed after its waiting future was dropped",
        || a_seen.ended() > ended,
    )
    .await;
    expect_plain_wait("after A's waiting future was dropped").await;

    released(gy).await;
    released(gx).await;
}

/// One holder at a time; release frees the lock for another client, and a
/// second release is a no-op.
pub async fn exclusive_and_release(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("exclusive");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    match b.try_acquire(&name, ttl).await {
        Ok(Attempt::Held { expires_in, .. }) => {
            if let Some(left) = expires_in {
                assert!(left <= ttl, "expires_in {left:?} exceeds the TTL {ttl:?}");
            }
        }
        other => panic!("mutual exclusion broken: second client got {other:?}"),
    }
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "holder lost a fresh lease"
    );
    assert!(
        a.release(&lease).await.expect("release"),
        "release by the holder must report true"
    );
    assert!(
        !a.is_held(&lease).await.expect("is_held"),
        "lease still held after release"
    );
    assert!(
        !a.release(&lease).await.expect("second release"),
        "a second release must report false"
    );
    let next = acquired(b.as_ref(), &name, ttl).await;
    assert!(next.token() > lease.token(), "token did not increase");
    assert!(b.release(&next).await.expect("release"));
}

/// Release and extend with a lease that is not the current one are refused
/// and leave the holder's lease intact.
pub async fn release_by_non_holder_refused(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("non-holder");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let forged = Lease::new(&name, "someone-else", lease.token(), ttl);
    assert!(
        !b.release(&forged).await.expect("release"),
        "release by a non-holder must report false"
    );
    match b.extend(&forged, ttl).await {
        Err(LockError::NotHolder { name: n }) => assert_eq!(n, name),
        other => panic!("extend by a non-holder must fail with NotHolder, got {other:?}"),
    }
    assert!(
        !b.is_held(&forged).await.expect("is_held"),
        "forged lease reported held"
    );
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "non-holder release removed the holder's lease"
    );
    assert!(matches!(
        b.try_acquire(&name, ttl).await,
        Ok(Attempt::Held { .. })
    ));
    assert!(a.release(&lease).await.expect("release"));
}

/// Tokens strictly increase per name across clients; names are independent.
pub async fn fencing_monotonic(make: Factory<'_>) {
    let clients = [make(), make(), make()];
    let name = unique_name("fencing");
    let other = unique_name("fencing-other");
    let ttl = Duration::from_secs(10);
    let mut last: Option<FencingToken> = None;
    for i in 0..30 {
        let c = &clients[i % clients.len()];
        let lease = acquired(c.as_ref(), &name, ttl).await;
        if let Some(prev) = last {
            assert!(
                lease.token() > prev,
                "fencing token went from {prev} to {}",
                lease.token()
            );
        }
        last = Some(lease.token());
        // Another name's activity must not matter.
        let o = acquired(c.as_ref(), &other, ttl).await;
        assert!(c.release(&o).await.expect("release"));
        assert!(c.release(&lease).await.expect("release"));
    }
}

/// A lease that is not extended expires: the lock can be taken again with a
/// higher token, and the old lease can neither extend nor release.
pub async fn expiry(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("expiry");
    let old = acquired(a.as_ref(), &name, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a.is_held(&old).await.expect("is_held"),
        "lease still held after its TTL"
    );
    assert!(
        matches!(
            a.extend(&old, Duration::from_secs(5)).await,
            Err(LockError::NotHolder { .. })
        ),
        "an expired lease must not be extendable"
    );
    let new = acquired(b.as_ref(), &name, Duration::from_secs(10)).await;
    assert!(
        new.token() > old.token(),
        "token after expiry did not increase"
    );
    assert!(
        !a.release(&old).await.expect("release"),
        "release of an expired lease must report false"
    );
    assert!(
        b.is_held(&new).await.expect("is_held"),
        "a stale release removed the new holder's lease"
    );
    assert!(b.release(&new).await.expect("release"));
}

/// Extending a lease keeps it past its original TTL.
pub async fn extend(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("extend");
    // Long enough for the extend to come before it ends on a slow machine.
    let original = Duration::from_secs(3);
    let lease = acquired(a.as_ref(), &name, original).await;
    // The lease was granted before this: `original` from now is past its
    // original end.
    let granted_by = tokio::time::Instant::now();
    a.extend(&lease, Duration::from_secs(30))
        .await
        .expect("holder extends");
    tokio::time::sleep_until(granted_by + original + Duration::from_millis(500)).await;
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "extended lease expired at its original TTL"
    );
    assert!(matches!(
        b.try_acquire(&name, Duration::from_secs(1)).await,
        Ok(Attempt::Held { .. })
    ));
    assert!(a.release(&lease).await.expect("release"));
}

/// Empty names, sub-millisecond TTLs and TTLs over [`MAX_TTL`](crate::MAX_TTL)
/// are rejected as invalid.
pub async fn invalid_requests(make: Factory<'_>) {
    let a = make();
    assert!(matches!(
        a.try_acquire("", Duration::from_secs(1)).await,
        Err(LockError::Invalid { .. })
    ));
    assert!(matches!(
        a.try_acquire(&unique_name("invalid"), Duration::ZERO).await,
        Err(LockError::Invalid { .. })
    ));
    for ttl in [crate::MAX_TTL + Duration::from_millis(1), Duration::MAX] {
        assert!(
            matches!(
                a.try_acquire(&unique_name("invalid"), ttl).await,
                Err(LockError::Invalid { .. })
            ),
            "a TTL of {ttl:?} (over MAX_TTL) must be an invalid request"
        );
    }
}

/// A waiter blocked in [`LockManager::acquire`] gets the lock after the holder
/// releases it, long before the holder's TTL would have expired.
pub async fn waiter_wakeup(make: Factory<'_>) {
    let holder = LockManager::new(make());
    let waiter = LockManager::new(make());
    let name = unique_name("wakeup");
    let ttl = Duration::from_secs(30);
    let g = holder
        .acquire(&name, ttl, PATIENCE)
        .await
        .expect("holder acquires");
    let first = g.token();
    let n = name.clone();
    let task = tokio::spawn(async move { waiter.acquire(&n, ttl, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "waiter got a lock that is held");
    assert!(g.release().await.expect("release"), "holder still held it");
    let got = task
        .await
        .expect("waiter task")
        .expect("waiter acquires after the release (TTL is 30 s, wait 10 s)");
    assert!(got.token() > first);
    assert!(got.release().await.expect("release"));
}

/// Several managers on separate clients increment a plain shared counter
/// under the lock; every write checks the fencing token; nothing is lost.
pub async fn mutual_exclusion_under_contention(make: Factory<'_>) {
    const WORKERS: usize = 4;
    const EACH: u64 = 15;
    let name = unique_name("contention");
    let state = Arc::new(Mutex::new((0u64, FencingToken::new(0))));
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let manager = LockManager::new(make());
        let (name, state, inside) = (name.clone(), Arc::clone(&state), Arc::clone(&inside));
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let g = manager
                    .acquire(&name, Duration::from_secs(10), Duration::from_secs(30))
                    .await
                    .expect("acquire under contention");
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two holders inside the critical section"
                );
                let read = state.lock().expect("state").0;
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                {
                    let mut s = state.lock().expect("state");
                    assert!(g.token() > s.1, "stale token {} after {}", g.token(), s.1);
                    *s = (read + 1, g.token());
                }
                inside.store(false, Ordering::SeqCst);
                assert!(g.release().await.expect("release"), "lease lost mid-work");
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    assert_eq!(
        state.lock().expect("state").0,
        WORKERS as u64 * EACH,
        "increments lost"
    );
}

/// Background renewal keeps a lease alive well past its TTL.
pub async fn renewal_keeps_lease(make: Factory<'_>) {
    let manager = LockManager::new(make());
    let other = make();
    let name = unique_name("renewal");
    // Renewed every second; long enough that a renewal delayed by a slow
    // machine still comes in time.
    let ttl = Duration::from_secs(3);
    let g = manager
        .acquire(&name, ttl, PATIENCE)
        .await
        .expect("acquire");
    tokio::time::sleep(ttl * 2 + Duration::from_millis(500)).await;
    assert!(!g.is_lost(), "renewed lease reported lost");
    assert!(
        matches!(
            other.try_acquire(&name, Duration::from_secs(1)).await,
            Ok(Attempt::Held { .. })
        ),
        "renewed lease expired"
    );
    assert!(
        g.release().await.expect("release"),
        "renewed lease not held at release"
    );
}

/// When the lease is taken away, the guard reports it lost, the new holder
/// has a higher token, and the old guard's release reports `false`.
pub async fn lost_lease_signal(make: Factory<'_>) {
    let manager = LockManager::new(make());
    let thief = make();
    let name = unique_name("lost");
    // Renewed every second.
    let g = manager
        .acquire(&name, Duration::from_secs(3), PATIENCE)
        .await
        .expect("acquire");
    // Simulate the lease expiring behind the holder's back.
    assert!(thief.release(g.lease()).await.expect("release"));
    let new = acquired(thief.as_ref(), &name, Duration::from_secs(30)).await;
    tokio::time::timeout(PATIENCE, g.lost())
        .await
        .expect("the guard must report the lost lease at its next renewal (within a second)");
    assert!(g.is_lost());
    assert!(new.token() > g.token());
    assert!(
        !g.release().await.expect("release"),
        "release of a lost lease must report false"
    );
    assert!(
        thief.is_held(&new).await.expect("is_held"),
        "old guard's release removed the new lease"
    );
    assert!(thief.release(&new).await.expect("release"));
}

/// A refused attempt names the holder, and so does the [`LockError::Timeout`]
/// of a waiter that gave up: a short, single-line description that mentions
/// the holder's process (all clients here run in this process, so it is
/// this process's id, as in [`holder_description`](crate::holder_description)).
pub async fn holder_named(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("holder");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let pid = format!("pid {}", std::process::id());
    let held = match b.try_acquire(&name, ttl).await {
        Ok(Attempt::Held { holder, .. }) => holder.expect("a refused attempt must name the holder"),
        other => panic!("mutual exclusion broken: second client got {other:?}"),
    };
    assert!(
        !held.trim().is_empty() && !held.contains('\n') && held.len() <= 512,
        "the holder description must be one short line, got {held:?}"
    );
    assert!(
        held.contains(&pid),
        "holder {held:?} does not name process {pid}"
    );
    // A wait long enough for a first attempt to come back "held" on a slow
    // machine (a wait that ends before any answer is `Unavailable`), far
    // shorter than the holder's TTL.
    match LockManager::new(b)
        .acquire(&name, ttl, Duration::from_secs(2))
        .await
    {
        Err(e @ LockError::Timeout { .. }) => {
            assert_eq!(
                e.holder(),
                Some(held.as_str()),
                "Timeout must name the holder"
            );
            assert!(
                e.to_string().contains(&held),
                "the Timeout message must show the holder: {e}"
            );
        }
        other => panic!("expected a Timeout naming the holder, got {other:?}"),
    }
    assert!(a.release(&lease).await.expect("release"));
}

/// [`LockManager::lock_all`]: all or nothing in one canonical order. Takes
/// a set given in any order with duplicates, refuses (and releases what it
/// took) when one lock of the set is held, and two callers asking for the
/// same locks in opposite orders never deadlock.
pub async fn lock_all_in_order(make: Factory<'_>) {
    let (first, second) = (LockManager::new(make()), LockManager::new(make()));
    let base = unique_name("lock_all");
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|s| format!("{base}:{s}"));
    let ttl = Duration::from_secs(10);
    let held = first
        .lock_all(&[&c, &a, &b, &a], ttl, PATIENCE)
        .await
        .expect("lock_all on free locks");
    let names: Vec<&str> = held.iter().map(LockGuard::name).collect();
    assert_eq!(names, [&a, &b, &c], "canonical order, duplicates dropped");

    // A free lock sorting before a held one: taken, then given back.
    let free_first = format!("{base}:0");
    // Long enough for an attempt on the held lock to come back "held" on a
    // slow machine (else the wait ends `Unavailable`), far below the TTL.
    let err = second
        .lock_all(&[&c, &free_first], ttl, Duration::from_secs(2))
        .await
        .expect_err("one lock of the set is held");
    assert!(err.is_timeout(), "expected Timeout, got {err:?}");
    let again = second
        .try_acquire(&free_first, ttl)
        .await
        .expect("try_acquire")
        .expect("lock_all must release what it took before failing");
    assert!(again.release().await.expect("release"));

    for g in held {
        assert!(g.release().await.expect("release"), "still held");
    }

    // Opposite orders, many rounds: canonical ordering means no deadlock.
    let rounds = 10;
    let run = |m: LockManager, set: [String; 2]| async move {
        for _ in 0..rounds {
            let gs = m
                .lock_all(&set, Duration::from_secs(10), Duration::from_secs(20))
                .await
                .expect("lock_all in contention");
            for g in gs {
                g.release().await.expect("release");
            }
        }
    };
    let one = tokio::spawn(run(first, [c.clone(), d.clone()]));
    let two = tokio::spawn(run(second, [d.clone(), c.clone()]));
    tokio::time::timeout(Duration::from_secs(60), async {
        one.await.expect("task");
        two.await.expect("task");
    })
    .await
    .expect("lock_all in opposite orders must not deadlock");
}
