//! The database lock (`DbLockBackend`): the manna-lock conformance suite
//! (deadlock detection included) on
//! PostgreSQL and SQLite, several pools ("processes") on one database, the
//! holder's name, and busy/slow databases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use manna_lock::testing::conformance;
use manna_lock::{Attempt, Lease, LockBackend, LockError, LockManager};
use manna_store_diesel::{DbLockBackend, DbPool, PoolOptions};

use crate::support::TestDb;

/// Bounds a whole test.
async fn bounded<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test exceeded its time bound")
}

async fn acquired(backend: &DbLockBackend, name: &str, ttl: Duration) -> Lease {
    match backend.try_acquire(name, ttl).await {
        Ok(Attempt::Acquired(lease)) => lease,
        other => panic!("expected to acquire `{name}`, got {other:?}"),
    }
}

fn this_process() -> String {
    format!(
        "host {} pid {} since ",
        manna_lock::hostname(),
        std::process::id()
    )
}

/// Four clients, each on its own pool, of one database.
async fn conformance_on(db: TestDb) {
    let clients: Vec<Arc<dyn LockBackend>> = (0..4)
        .map(|_| Arc::new(DbLockBackend::new(db.reopen())) as Arc<dyn LockBackend>)
        .collect();
    let next = AtomicUsize::new(0);
    let make = move || Arc::clone(&clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()]);
    bounded(180, conformance::run_all(&make)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    conformance_on(TestDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    conformance_on(TestDb::sqlite()).await;
}

/// Two pools on one database stand for two processes: one holder at a time,
/// tokens increasing across both, and a holder that stops renewing loses the
/// lock to the other after its TTL.
async fn two_processes_on(db: TestDb) {
    let a = DbLockBackend::new(db.reopen());
    let b = DbLockBackend::new(db.reopen());
    let name = "migrate:users.token";
    let ttl = Duration::from_secs(30);
    bounded(60, async {
        // Both try at once: exactly one wins.
        for round in 0..10 {
            let (ra, rb) = tokio::join!(a.try_acquire(name, ttl), b.try_acquire(name, ttl));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            let (winner, lease, refused) = match (ra, rb) {
                (Attempt::Acquired(l), other) => (&a, l, other),
                (other, Attempt::Acquired(l)) => (&b, l, other),
                both => panic!("round {round}: nobody acquired a free lock: {both:?}"),
            };
            match refused {
                Attempt::Held { expires_in, holder } => {
                    let left = expires_in.expect("the database knows the time left");
                    assert!(left <= ttl, "{left:?}");
                    assert!(left > ttl - Duration::from_secs(10), "{left:?}");
                    let holder = holder.expect("the refusal names the holder");
                    assert!(holder.starts_with(&this_process()), "{holder}");
                }
                other => panic!("round {round}: both acquired: {other:?}"),
            }
            assert!(winner.release(&lease).await.unwrap());
        }

        // Alternating holders: tokens strictly increase across both.
        let mut last = None;
        for i in 0..20 {
            let client = if i % 2 == 0 { &a } else { &b };
            let lease = acquired(client, name, ttl).await;
            if let Some(prev) = last {
                assert!(lease.token() > prev, "{} after {prev}", lease.token());
            }
            last = Some(lease.token());
            assert!(client.release(&lease).await.unwrap());
        }

        // A holds without renewing; B is refused until A's TTL passes, then
        // takes over with a larger token, and A can no longer act. (Long
        // enough for B's refusal to come first on a slow machine.)
        let short = Duration::from_secs(3);
        let old = acquired(&a, name, short).await;
        assert!(matches!(
            b.try_acquire(name, ttl).await.unwrap(),
            Attempt::Held { .. }
        ));
        let waiter = LockManager::new(Arc::new(b.clone()));
        let started = Instant::now();
        let guard = waiter
            .acquire(name, ttl, Duration::from_secs(25))
            .await
            .expect("the lock frees up after the holder's TTL");
        assert!(
            started.elapsed() < short + Duration::from_secs(7),
            "took {:?} (the holder's TTL was {short:?})",
            started.elapsed()
        );
        assert!(guard.token() > old.token());
        assert!(!a.is_held(&old).await.unwrap());
        assert!(matches!(
            a.extend(&old, ttl).await,
            Err(LockError::NotHolder { .. })
        ));
        assert!(!a.release(&old).await.unwrap());
        assert!(b.is_held(guard.lease()).await.unwrap());
        assert!(guard.release().await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_postgres_database_exclude_each_other() {
    two_processes_on(TestDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_sqlite_file_exclude_each_other() {
    two_processes_on(TestDb::sqlite()).await;
}

/// The refusal names the holder (host, pid, since when), the waiter's
/// Timeout says it, and the row forgets the holder once released.
async fn holder_named_on(db: TestDb) {
    let backend = DbLockBackend::new(db.reopen());
    let name = "holder-check";
    bounded(30, async {
        let lease = acquired(&backend, name, Duration::from_secs(30)).await;
        let stored = db
            .scalar_text("SELECT holder AS v FROM manna_locks WHERE name = 'holder-check'")
            .expect("the holder is stored with the lease");
        assert!(stored.starts_with(&this_process()), "{stored}");
        let since = stored.rsplit(' ').next().unwrap();
        assert!(
            since.len() == 20 && since.ends_with('Z') && since.as_bytes()[10] == b'T',
            "RFC 3339 UTC to the second: {since}"
        );
        // Long enough for a first attempt to come back "held" on a slow
        // machine (a wait that ends before any answer is `Unavailable`).
        let err = LockManager::new(Arc::new(backend.clone()))
            .acquire(name, Duration::from_secs(30), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.holder(), Some(stored.as_str()), "{err}");
        assert!(
            err.to_string()
                .ends_with(&format!("waiting for lock `{name}`: held by {stored}")),
            "{err}"
        );
        assert!(backend.release(&lease).await.unwrap());
        assert_eq!(
            db.scalar_text("SELECT holder AS v FROM manna_locks WHERE name = 'holder-check'"),
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusal_names_the_holder() {
    holder_named_on(TestDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refusal_names_the_holder() {
    holder_named_on(TestDb::sqlite()).await;
}

/// Tokens never go back: not after a release (the row keeps its token) and
/// not even when an operator deletes the row (a new row starts from the
/// server's clock in microseconds).
async fn tokens_survive_a_deleted_row_on(db: TestDb) {
    let backend = DbLockBackend::new(db.reopen());
    bounded(30, async {
        let first = acquired(&backend, "deleted", Duration::from_secs(30)).await;
        assert!(backend.release(&first).await.unwrap());
        assert_eq!(
            db.scalar_i64("SELECT token AS v FROM manna_locks WHERE name = 'deleted'"),
            i64::try_from(first.token().get()).unwrap(),
            "release keeps the token"
        );
        db.exec("DELETE FROM manna_locks WHERE name = 'deleted'");
        // SQLite's clock counts milliseconds (see `DbLockBackend`'s docs).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = acquired(&backend, "deleted", Duration::from_secs(30)).await;
        assert!(second.token() > first.token());
        assert!(backend.release(&second).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tokens_survive_a_deleted_row() {
    tokens_survive_a_deleted_row_on(TestDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tokens_survive_a_deleted_row() {
    tokens_survive_a_deleted_row_on(TestDb::sqlite()).await;
}

/// SQLite held by another writer: the call waits its busy timeout, then
/// reports the database unavailable (busy) — neither a hang nor a generic
/// backend error — and works again once the writer is done. A bound shorter
/// than the busy timeout answers within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_sqlite_is_unavailable_within_the_bounds() {
    let db = TestDb::sqlite();
    let pool = |busy: Duration| {
        DbPool::connect(db.url(), &PoolOptions::default().busy_timeout(busy)).unwrap()
    };
    let quick = DbLockBackend::new(pool(Duration::from_millis(100)));
    let patient = DbLockBackend::new(pool(Duration::from_secs(30)));
    bounded(60, async {
        // Create the table and warm both up.
        for b in [&quick, &patient] {
            let l = acquired(b, "warm", Duration::from_secs(5)).await;
            assert!(b.release(&l).await.unwrap());
        }
        // A short call timeout for the call meant to time out only.
        let patient = patient.with_timeout(Duration::from_millis(300));
        let path = db.url().trim_start_matches("sqlite://").to_owned();
        let mut writer = diesel::SqliteConnection::establish(&path).unwrap();
        writer.batch_execute("BEGIN IMMEDIATE").unwrap();

        let started = Instant::now();
        match quick.try_acquire("busy", Duration::from_secs(5)).await {
            Err(LockError::Unavailable { backend, reason }) => {
                assert!(
                    backend.starts_with("sqlite lock table manna_locks at "),
                    "{backend}"
                );
                assert!(reason.contains("database is locked"), "{reason}");
            }
            other => panic!("expected Unavailable (busy), got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?} (busy timeout 100 ms)",
            started.elapsed()
        );

        let started = Instant::now();
        match patient.try_acquire("busy", Duration::from_secs(5)).await {
            Err(LockError::Unavailable { reason, .. }) => {
                assert!(reason.contains("no answer within 300ms"), "{reason}");
            }
            other => panic!("expected Unavailable (timeout), got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?} (call timeout 300 ms, busy timeout 30 s)",
            started.elapsed()
        );

        writer.batch_execute("COMMIT").unwrap();
        let l = acquired(&quick, "busy-after", Duration::from_secs(5)).await;
        assert!(quick.release(&l).await.unwrap());
    })
    .await;
}

/// The backend describes itself with the redacted URL, and calls outside a
/// Tokio runtime are refused as invalid rather than panicking.
#[test]
fn description_and_no_runtime() {
    let db = TestDb::postgres();
    let backend = DbLockBackend::new(db.reopen());
    assert!(
        backend
            .describe()
            .starts_with("postgres lock table manna_locks at postgres://"),
        "{}",
        backend.describe()
    );
    let outcome = block_on_without_runtime(backend.try_acquire("x", Duration::from_secs(1)));
    assert!(
        matches!(outcome, Err(LockError::Invalid { .. })),
        "{outcome:?}"
    );
}

/// Polls a future to completion on this thread, without any Tokio runtime.
fn block_on_without_runtime<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// No duration makes the database lock panic: `Duration::MAX` as the call
/// timeout means no deadline, and TTLs over `MAX_TTL` are invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lock_takes_any_duration_without_panicking() {
    let db = TestDb::sqlite();
    let backend = DbLockBackend::new(db.reopen()).with_timeout(Duration::MAX);
    bounded(30, async {
        let lease = acquired(&backend, "any-duration", Duration::from_secs(5)).await;
        for ttl in [
            manna_lock::MAX_TTL + Duration::from_millis(1),
            Duration::MAX,
        ] {
            assert!(matches!(
                backend.extend(&lease, ttl).await,
                Err(LockError::Invalid { .. })
            ));
            assert!(matches!(
                backend.try_acquire("any-duration-2", ttl).await,
                Err(LockError::Invalid { .. })
            ));
        }
        assert!(backend.release(&lease).await.unwrap());
        let m = LockManager::new(Arc::new(backend));
        let g = m
            .acquire("any-duration", manna_lock::MAX_TTL, Duration::MAX)
            .await
            .unwrap();
        assert!(g.release().await.unwrap());
    })
    .await;
}
