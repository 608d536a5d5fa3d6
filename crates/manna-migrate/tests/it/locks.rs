use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use manna_lock::{FencingToken, LockError};
use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::{
    migration_lock_name, AadMode, ColumnStore, HeldLock, MigrateError, MigrationLocks, Mode, Shard,
    Status,
};

use crate::support::{
    all_under_primary, column, fresh_locks, migrator, plaintexts, run, seed_fernet,
};

#[test]
fn a_second_migrator_refuses_while_the_lock_is_held() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 10);
    let locks = fresh_locks();
    let held = locks
        .acquire(&migration_lock_name(
            &store.identity().unwrap(),
            &column(),
            Shard::ALL,
        ))
        .unwrap();
    let err = migrator(&store, &keyring, locks.clone(), |_| {})
        .run(&[column()])
        .unwrap_err();
    match &err {
        MigrateError::Locked { lock, .. } => {
            assert_eq!(
                lock,
                &format!(
                    "manna:migrate:{}:plaid_items.access_token:0/1",
                    store.identity().unwrap()
                )
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("another migrator is running"));
    assert_eq!(store.stats().rows_written, 0);
    // Read-only modes take no lock.
    let dry = migrator(&store, &keyring, locks.clone(), |o| o.mode = Mode::DryRun)
        .run(&[column()])
        .unwrap();
    assert_eq!(dry.columns[0].pending, 10);
    assert!(held.release().unwrap());
    let ok = migrator(&store, &keyring, locks, |_| {})
        .run(&[column()])
        .unwrap();
    assert_eq!(ok.columns[0].migrated, 10);
}

#[test]
fn a_second_migrator_waits_when_configured_to() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 10);
    let base = fresh_locks();
    let held = base
        .acquire(&migration_lock_name(
            &store.identity().unwrap(),
            &column(),
            Shard::ALL,
        ))
        .unwrap();
    let waiting = Arc::new((*base).clone().wait(Duration::from_secs(30)));
    let (tx, rx) = mpsc::channel();
    let t = {
        let (store, keyring) = (store.clone(), keyring.clone());
        thread::spawn(move || {
            tx.send(()).unwrap();
            migrator(&store, &keyring, waiting, |_| {}).run(&[column()])
        })
    };
    rx.recv().unwrap();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        store.stats().rows_written,
        0,
        "nothing written while the lock is held"
    );
    assert!(held.release().unwrap());
    let report = t.join().unwrap().unwrap();
    assert_eq!(report.columns[0].migrated, 10);
}

#[test]
fn two_migrators_started_together_never_both_write() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 2000);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let locks = fresh_locks();
    let barrier = Arc::new(Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (store, keyring, locks, barrier) = (
                store.clone(),
                keyring.clone(),
                locks.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                migrator(&store, &keyring, locks, |o| o.batch_size = 50).run(&[column()])
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut migrated = 0;
    let mut completed = 0;
    for r in &runs {
        match r {
            Ok(report) => {
                completed += 1;
                migrated += report.columns[0].migrated;
            }
            Err(MigrateError::Locked { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(completed >= 1);
    assert_eq!(migrated, 2000, "every row rewritten exactly once");
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
}

/// Locks whose lease is reported lost after a number of checks.
struct FlakyLocks {
    checks_left: Arc<AtomicU64>,
}

struct FlakyGuard {
    checks_left: Arc<AtomicU64>,
}

impl MigrationLocks for FlakyLocks {
    fn acquire(&self, _name: &str) -> Result<Box<dyn HeldLock>, LockError> {
        Ok(Box::new(FlakyGuard {
            checks_left: self.checks_left.clone(),
        }))
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

impl HeldLock for FlakyGuard {
    fn name(&self) -> &str {
        "flaky"
    }
    fn fencing(&self) -> manna_lock::Fencing {
        manna_lock::Fencing::new(FencingToken::new(1), "flaky")
    }
    fn is_lost(&self) -> bool {
        self.checks_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
    }
    fn release(self: Box<Self>) -> Result<bool, LockError> {
        Ok(!self.is_lost())
    }
}

#[test]
fn a_lost_lease_stops_the_run_at_a_batch_boundary() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 1000);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let locks = Arc::new(FlakyLocks {
        checks_left: Arc::new(AtomicU64::new(6)),
    });
    let report = migrator(&store, &keyring, locks, |o| {
        o.batch_size = 100;
        o.adaptive = false;
    })
    .run(&[column()])
    .unwrap();
    let c = &report.columns[0];
    assert_eq!(c.status, Status::LeaseLost);
    assert!(!report.is_success());
    assert!(
        c.migrated > 0 && c.migrated < 1000,
        "migrated {}",
        c.migrated
    );
    assert_eq!(c.migrated % 100, 0, "whole batches only");
    let written = store.stats().rows_written;
    assert_eq!(written, c.migrated);
    // The next holder continues from the checkpoint and finishes.
    let rest = run(&store, &keyring, |o| o.batch_size = 100);
    assert!(rest.columns[0].resumed);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
}

#[test]
fn the_lock_is_released_after_the_run() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 5);
    let locks = fresh_locks();
    let report = migrator(&store, &keyring, locks.clone(), |_| {})
        .run(&[column()])
        .unwrap();
    assert!(report.is_success());
    let again = locks
        .acquire(&migration_lock_name(
            &store.identity().unwrap(),
            &column(),
            Shard::ALL,
        ))
        .unwrap();
    assert!(!again.is_lost());
    assert!(again.release().unwrap());
}

/// A real lease expiring mid-run (a pause past the TTL without renewal) while
/// another migrator takes the lock over: the run stops at the next batch
/// boundary and the new holder finishes.
#[test]
fn an_expired_manna_lock_lease_stops_the_run() {
    use std::sync::Mutex;

    use manna_lock::LockManager;
    use manna_migrate::BlockingLocks;

    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 1000);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let locks = Arc::new(
        BlockingLocks::with_own_runtime(LockManager::in_memory().with_renewal(false))
            .unwrap()
            .ttl(Duration::from_millis(100)),
    );
    let usurper: Arc<Mutex<Option<Box<dyn HeldLock>>>> = Arc::new(Mutex::new(None));
    {
        let (other, usurper) = (
            Arc::new((*locks).clone().wait(Duration::from_secs(30))),
            usurper.clone(),
        );
        store.on_write(move |s, _, rewrites| {
            let mut slot = usurper.lock().unwrap();
            if rewrites.is_empty() || slot.is_some() {
                return;
            }
            // The first migrator "pauses" here; a second one takes the lock
            // as soon as the first lease expires.
            let name = migration_lock_name(&s.identity().unwrap(), &column(), Shard::ALL);
            *slot = Some(other.acquire(&name).unwrap());
        });
    }
    let report = migrator(&store, &keyring, locks.clone(), |o| {
        o.batch_size = 100;
        o.adaptive = false;
    })
    .run(&[column()])
    .unwrap();
    store.clear_hook();
    let c = &report.columns[0];
    assert_eq!(c.status, Status::LeaseLost);
    assert!(c.migrated < 1000);
    assert_eq!(store.stats().rows_written, c.migrated);
    // (On a very slow machine the lease may expire before the first write,
    // and nobody needed to take it over.)
    if let Some(usurper) = usurper.lock().unwrap().take() {
        assert!(usurper.fencing().token() > FencingToken::new(0));
        assert!(usurper.release().unwrap());
    }
    // (A renewing lock this time: the one above never renews.)
    let rest = migrator(&store, &keyring, fresh_locks(), |o| o.batch_size = 100)
        .run(&[column()])
        .unwrap();
    assert_eq!(rest.columns[0].status, Status::Completed);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
}

/// A migrator given no locks uses the in-process [`ProcessLocks`]: another
/// holder of the partition's name in this process keeps it out, and it runs
/// once the name is given back.
#[test]
fn a_migrator_without_locks_is_excluded_by_another_in_this_process() {
    use manna_migrate::{Migrator, ProcessLocks};

    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 20);
    let name = migration_lock_name(&store.identity().unwrap(), &column(), Shard::ALL);
    let held = ProcessLocks::new().acquire(&name).unwrap();
    let plain = || Migrator::new(Arc::new(store.clone()), keyring.clone());
    match plain().run(&[column()]).unwrap_err() {
        MigrateError::Locked { lock, holder, .. } => {
            assert_eq!(lock, name);
            assert!(holder.unwrap().contains("this process"));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Two migrators without locks, one after the other on the same column:
    // the first's lock is given back when its run ends.
    assert!(held.release().unwrap());
    let first = plain().run(&[column()]).unwrap();
    assert_eq!(first.columns[0].status, Status::Completed);
    let second = plain().run(&[column()]).unwrap();
    assert_eq!(second.columns[0].migrated, 0);
    assert!(all_under_primary(&store, &keyring));
}

/// Two migrators without locks running at once on one column: exactly one
/// runs, the other is refused with `Locked`; the rows are migrated once.
#[test]
fn two_migrators_without_locks_exclude_each_other() {
    use manna_migrate::Migrator;

    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 400);
    // The writes of whichever migrator gets the lock wait until the other
    // one has given up, so the two runs overlap for sure.
    let go = Arc::new(AtomicBool::new(false));
    let hook_go = go.clone();
    store.on_write(move |_, _, _| {
        let started = std::time::Instant::now();
        while !hook_go.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (store, keyring, tx) = (store.clone(), keyring.clone(), tx.clone());
            thread::spawn(move || {
                let mut o = manna_migrate::Options::default();
                o.batch_size = 50;
                let m = Migrator::new(Arc::new(store), keyring).options(o);
                tx.send(m.run(&[column()])).unwrap();
            })
        })
        .collect();
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    go.store(true, Ordering::SeqCst);
    let second = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        matches!(first, Err(MigrateError::Locked { .. })),
        "{first:?}"
    );
    let ran = [second.unwrap()];
    assert_eq!(ran[0].columns[0].migrated, 400);
    assert!(all_under_primary(&store, &keyring));
}

/// A migrator given no locks starts no async runtime (no thread of its own):
/// checked in a child process that runs only this scenario, so no other
/// test's threads are counted.
#[cfg(target_os = "linux")]
#[test]
fn a_migrator_without_locks_starts_no_runtime() {
    const CHILD: &str = "MANNA_TEST_NO_RUNTIME_CHILD";
    let threads = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|t| {
                let comm = t.unwrap().path().join("comm");
                std::fs::read_to_string(comm).unwrap().trim().to_owned()
            })
            .collect()
    };
    if std::env::var_os(CHILD).is_some() {
        assert!(tokio::runtime::Handle::try_current().is_err());
        let before = threads();
        let keys = TestKeys::generate();
        let keyring = keys.keyring();
        let store = seed_fernet(&keys, 30);
        let report = manna_migrate::Migrator::new(Arc::new(store.clone()), keyring.clone())
            .run(&[column()])
            .unwrap();
        assert_eq!(report.columns[0].status, Status::Completed);
        assert!(all_under_primary(&store, &keyring));
        let after = threads();
        assert_eq!(before, after, "the run left threads behind");
        assert!(
            !after
                .iter()
                .any(|t| t.starts_with("manna-migrate") || t.starts_with("tokio")),
            "{after:?}"
        );
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "locks::a_migrator_without_locks_starts_no_runtime",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the child ran the scenario: {text}"
    );
}

/// `ProcessLocks::wait`: a second taker waits for the name to be given back
/// (woken by the release, not by its deadline), and times out naming this
/// process when it is not.
#[test]
fn process_locks_wait_for_a_release_then_time_out() {
    use manna_migrate::ProcessLocks;

    let name = "manna:migrate:process-locks-wait:t.c:0/1";
    let first = ProcessLocks::new().acquire(name).unwrap();
    let token = first.fencing().token();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        assert!(first.release().unwrap());
    });
    let started = std::time::Instant::now();
    let second = ProcessLocks::new()
        .wait(Duration::from_secs(30))
        .acquire(name)
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(second.fencing().token() > token, "tokens increase");
    releaser.join().unwrap();

    let err = match ProcessLocks::new()
        .wait(Duration::from_millis(50))
        .acquire(name)
    {
        Err(e) => e,
        Ok(_) => panic!("the name is held"),
    };
    assert!(err.is_timeout(), "{err}");
    assert!(err.holder().unwrap().contains("this process"), "{err}");
    // Dropping a held lock gives the name back too.
    drop(second);
    assert!(ProcessLocks::new().acquire(name).is_ok());
}
