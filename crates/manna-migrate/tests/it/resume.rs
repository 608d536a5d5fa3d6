use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::{
    AadMode, BatchProgress, CancelToken, ColumnRef, MigrateError, Progress, RowId, Status,
    StoreErrorKind,
};
use manna_store::testing::{Failure, MemoryStore, Op};

use crate::support::{
    all_under_primary, column, fresh_locks, migrator, plaintexts, run, run_complete, seed_fernet,
};

fn migrated_rows(store: &MemoryStore, keyring: &manna_crypto::Keyring) -> usize {
    store
        .rows(&column())
        .iter()
        .filter(|r| {
            r.value.text().is_some_and(|v| {
                manna_crypto::inspect(v).key_id() == Some(keyring.primary_key_id())
            })
        })
        .count()
}

#[test]
fn a_failure_mid_run_resumes_from_the_checkpoint() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 1000);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    store.inject(Failure::nth(Op::Write, 5));
    let set = |o: &mut manna_migrate::Options| {
        o.batch_size = 100;
        o.adaptive = false;
    };
    let err = migrator(&store, &keyring, fresh_locks(), set)
        .run(&[column()])
        .unwrap_err();
    match &err {
        MigrateError::Store { cause: source, .. } => {
            assert_eq!(source.kind(), StoreErrorKind::Unavailable)
        }
        other => panic!("unexpected error {other}"),
    }
    // Batches 1–4 committed; the 4th write carried the checkpoint of 1–3.
    assert_eq!(migrated_rows(&store, &keyring), 400);
    let cps = store.all_checkpoints();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].last_id, Some(RowId::Int(300)));
    assert_eq!((cps[0].counts.scanned, cps[0].counts.migrated), (300, 300));

    let report = run(&store, &keyring, set);
    let c = &report.columns[0];
    assert!(c.resumed);
    assert_eq!(c.status, Status::Completed);
    assert_eq!(c.scanned, 700, "the resumed run starts after row 300");
    // Rows 301–400 were already done: unchanged now.
    assert_eq!((c.migrated, c.unchanged), (900, 100));
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
    assert!(store.all_checkpoints().is_empty());
}

#[test]
fn a_lost_acknowledgement_is_harmless() {
    // The write commits but the caller sees an error (crash after commit).
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 500);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    store.inject(Failure {
        applied: true,
        ..Failure::nth(Op::Write, 3)
    });
    let set = |o: &mut manna_migrate::Options| {
        o.batch_size = 50;
        o.workers = 3;
    };
    assert!(migrator(&store, &keyring, fresh_locks(), set)
        .run(&[column()])
        .is_err());
    let report = run(&store, &keyring, set);
    assert!(report.columns[0].resumed);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
}

#[test]
fn failures_on_any_store_call_keep_the_data_consistent() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    for (op, nth) in [
        (Op::Scan, 3),
        (Op::Read, 1),
        (Op::LoadCheckpoint, 1),
        (Op::Count, 1),
    ] {
        let store = seed_fernet(&keys, 200);
        let c = column();
        if op == Op::Read {
            // Force a conflict so the engine re-reads.
            let k = keys.keyring();
            store.on_write(move |s, col, rw| {
                if let Some(first) = rw.first() {
                    s.update(col, &first.id, Some(k.encrypt_fernet(b"changed").unwrap()));
                }
            });
        }
        store.inject(Failure::nth(op, nth));
        let before = plaintexts(&store, &keyring, AadMode::Column);
        let err = migrator(&store, &keyring, fresh_locks(), |o| o.batch_size = 30)
            .run(std::slice::from_ref(&c))
            .unwrap_err();
        assert!(
            err.to_string().contains("injected failure"),
            "{op:?}: {err}"
        );
        store.clear_hook();
        // Whatever was written decrypts to the same plaintexts (or the
        // application's change), and a rerun completes.
        let mid = plaintexts(&store, &keyring, AadMode::Column);
        for (id, p) in &mid {
            assert!(
                p == &before[id] || p.as_deref() == Some("changed"),
                "{op:?}: row {id}"
            );
        }
        run_complete(&store, &keyring, |o| o.batch_size = 30);
        assert!(all_under_primary(&store, &keyring), "{op:?}");
    }
}

#[test]
fn restart_ignores_the_checkpoint() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 300);
    store.inject(Failure::nth(Op::Write, 3));
    let set = |o: &mut manna_migrate::Options| {
        o.batch_size = 50;
        o.adaptive = false;
    };
    assert!(migrator(&store, &keyring, fresh_locks(), set)
        .run(&[column()])
        .is_err());
    assert_eq!(store.all_checkpoints().len(), 1);
    let report = run(&store, &keyring, |o| {
        set(o);
        o.restart = true;
    });
    let c = &report.columns[0];
    assert!(!c.resumed);
    assert_eq!(c.scanned, 300, "restart scans from the beginning");
    // Writes 1 and 2 committed before the failure.
    assert_eq!((c.migrated, c.unchanged), (200, 100));
    assert!(store.stats().checkpoint_clears >= 1);
}

/// Cancels once `after` batches were reported.
struct CancelAfter {
    token: CancelToken,
    after: usize,
    seen: AtomicUsize,
}

impl Progress for CancelAfter {
    fn on_batch(&self, _c: &ColumnRef, _p: &BatchProgress) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.token.cancel();
        }
    }
}

#[test]
fn cancellation_stops_at_a_batch_boundary_and_saves_the_checkpoint() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 2000);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let token = CancelToken::new();
    let progress = Arc::new(CancelAfter {
        token: token.clone(),
        after: 3,
        seen: AtomicUsize::new(0),
    });
    let m = migrator(&store, &keyring, fresh_locks(), |o| {
        o.batch_size = 100;
        o.adaptive = false;
        o.workers = 2;
    })
    .progress(progress)
    .cancel_token(token);
    let report = m.run(&[column()]).unwrap();
    let c = &report.columns[0];
    assert_eq!(c.status, Status::Cancelled);
    assert!(!report.is_success());
    assert!(
        c.migrated >= 300 && c.migrated < 2000,
        "migrated {}",
        c.migrated
    );
    assert_eq!(migrated_rows(&store, &keyring) as u64, c.migrated);
    // Batches always finish whole: the count is a multiple of the batch.
    assert_eq!(c.migrated % 100, 0);
    let cps = store.all_checkpoints();
    assert_eq!(cps.len(), 1);
    assert_eq!(
        cps[0].counts.migrated, c.migrated,
        "the checkpoint covers every finished batch"
    );

    let rest = run(&store, &keyring, |o| o.batch_size = 100);
    let r = &rest.columns[0];
    assert!(r.resumed);
    assert_eq!(r.unchanged, 0, "nothing done twice");
    assert_eq!(r.migrated, 2000);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
}

#[test]
fn a_cancelled_token_before_the_run_starts_nothing() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 10);
    let token = CancelToken::new();
    token.cancel();
    let report = migrator(&store, &keyring, fresh_locks(), |_| {})
        .cancel_token(token)
        .run(&[column()])
        .unwrap();
    assert_eq!(report.columns[0].status, Status::NotStarted);
    assert_eq!(store.stats().rows_written, 0);
}

#[test]
fn a_resumed_run_reports_the_whole_partition() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 100);
    store.insert(&column(), 5, Some("gAAAAAdamaged".into()));
    store.inject(Failure::nth(Op::Write, 4));
    let set = |o: &mut manna_migrate::Options| {
        o.batch_size = 10;
        o.adaptive = false;
    };
    assert!(migrator(&store, &keyring, fresh_locks(), set)
        .run(&[column()])
        .is_err());
    let report = run(&store, &keyring, set);
    let c = &report.columns[0];
    assert!(c.resumed);
    assert_eq!(c.census, manna_migrate::CensusKind::After);
    assert_eq!(c.total, 100);
    assert_eq!(
        c.failed,
        vec![RowId::Int(5)],
        "a failure before the checkpoint is still listed"
    );
    assert_eq!(
        c.by_format.aes_key(&keyring.primary_key_id().to_string()),
        99
    );
    assert_eq!(c.by_format.unknown, 1);
}
