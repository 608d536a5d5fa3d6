//! Deadlock detection among [`LockSession`](crate::LockSession)s.

use std::sync::Arc;
use std::time::Duration;

use super::probe::{eventually, probed, Seen};
use super::{unique_name, Factory, PATIENCE};
use crate::{LockError, LockGuard, LockManager};

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

/// A session on a new probed client.
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
