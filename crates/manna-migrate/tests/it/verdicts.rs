//! Verdicts are statements about the table when the run ends: each test is
//! a scenario in which an earlier engine said "completed" (or "safe") when
//! it was not.

use manna_crypto::{AesKey, FernetKey, Keyring};
use manna_lock::FencingToken;
use manna_migrate::testing::strategies::{TestKeys, ValueKind};
use manna_migrate::{
    key_usage, migration_lock_name, AadMode, AcceptedFailures, CancelToken, ColumnRef, ColumnStore,
    FailureKind, Fence, IdKind, MigrateError, Mode, RetiringKey, RowId, Shard, Status, Target,
    Value, Verdict,
};
use manna_store::testing::MemoryStore;

use crate::support::{all_under_primary, column, fresh_locks, migrator, plaintexts, run};

/// A keyring with two Fernet keys (MultiFernet order: `new` first) and rows
/// under each.
fn two_fernet_keys() -> (MemoryStore, Keyring, FernetKey, FernetKey) {
    let (old, new) = (FernetKey::generate(), FernetKey::generate());
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet_keys([new.clone(), old.clone()])
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let c = column();
    store.create_table(&c, IdKind::Int, &[], true);
    for id in 1..=30i64 {
        let key = if id <= 20 { &old } else { &new };
        store.insert(&c, id, Some(key.encrypt(format!("s{id}").as_bytes())));
    }
    (store, keyring, old, new)
}

#[test]
fn the_census_counts_fernet_rows_per_key() {
    let (store, keyring, old, new) = two_fernet_keys();
    let c = column();
    // A token under a key nobody configured: a failure, not "fernet".
    store.insert(&c, 31, Some(FernetKey::generate().encrypt(b"lost")));
    let report = run(&store, &keyring, |o| o.mode = Mode::DryRun);
    let col = &report.columns[0];
    assert_eq!(col.by_format.fernet_key(&old.id().to_string()), 20);
    assert_eq!(col.by_format.fernet_key(&new.id().to_string()), 10);
    assert_eq!(col.by_format.unknown, 1);
    assert_eq!(col.failed, vec![RowId::Int(31)]);
    assert_eq!(col.failure_kinds.get(&FailureKind::UnknownKey), Some(&1));
    assert_eq!(report.verdict(), Verdict::Undecryptable);
}

#[test]
fn retire_check_names_the_rows_of_one_fernet_key() {
    let (store, keyring, old, new) = two_fernet_keys();
    let c = [column()];
    let old_key = RetiringKey::resolve(&old.id().to_string(), &keyring).unwrap();
    assert_eq!(old_key, RetiringKey::FernetKey(old.id()));
    let usage = key_usage(&store, &keyring, &c, old_key).unwrap();
    assert_eq!(usage.rows(), 20, "every old-key row needs the old key");
    let new_key = RetiringKey::FernetKey(new.id());
    assert_eq!(key_usage(&store, &keyring, &c, new_key).unwrap().rows(), 10);
    assert_eq!(
        key_usage(&store, &keyring, &c, RetiringKey::Fernet)
            .unwrap()
            .rows(),
        30
    );
    let report = run(&store, &keyring, |_| {});
    assert_eq!(report.verdict(), Verdict::Complete);
    for key in [old_key, new_key, RetiringKey::Fernet] {
        assert!(!key_usage(&store, &keyring, &c, key).unwrap().in_use());
    }
}

#[test]
fn failed_rows_make_the_run_undecryptable_until_acknowledged() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let rows: Vec<_> = (0..20)
        .map(|i| {
            let kind = if i == 7 {
                ValueKind::Garbage
            } else {
                ValueKind::Fernet
            };
            (kind, format!("s{i}"))
        })
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    let report = run(&store, &keyring, |_| {});
    let c = &report.columns[0];
    assert_eq!(c.status, Status::FailedRows);
    assert_eq!(c.failed, vec![RowId::Int(8)]);
    assert_eq!(report.verdict(), Verdict::Undecryptable);
    assert_eq!(report.verdict().exit_code(), 4);

    let accepted = AcceptedFailures::parse("plaid_items.access_token 8\n").unwrap();
    let report = run(&store, &keyring, |o| o.accepted_failures = accepted.clone());
    let c = &report.columns[0];
    assert_eq!((c.status, c.failed_accepted), (Status::Completed, 1));
    assert_eq!(c.failed, vec![RowId::Int(8)], "still reported");
    assert_eq!(report.verdict(), Verdict::Complete);
}

#[test]
fn values_that_are_not_text_are_failed_rows_not_aborts() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let c = column();
    store.create_table(&c, IdKind::Int, &[], true);
    for id in 1..=10i64 {
        store.insert(&c, id, Some(keyring.encrypt_fernet(b"x").unwrap()));
    }
    store.insert_value(&c, 5, Value::NotText);
    let report = run(&store, &keyring, |_| {});
    let col = &report.columns[0];
    assert_eq!(col.failed, vec![RowId::Int(5)]);
    assert_eq!(col.failure_kinds.get(&FailureKind::NotText), Some(&1));
    assert_eq!((col.migrated, col.total), (9, 10));
    assert_eq!(report.verdict(), Verdict::Undecryptable);
}

#[test]
fn a_cancelled_run_is_incomplete() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = crate::support::seed_fernet(&keys, 500);
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    store.on_write(move |_, _, rw| {
        if !rw.is_empty() {
            trigger.cancel();
        }
    });
    let report = migrator(&store, &keyring, fresh_locks(), |o| {
        o.batch_size = 50;
        o.adaptive = false;
    })
    .cancel_token(cancel)
    .run(&[column()])
    .unwrap();
    assert_eq!(report.columns[0].status, Status::Cancelled);
    assert_eq!(report.verdict(), Verdict::Incomplete);
    assert!(!report.is_success());
}

/// Forward run interrupted, a complete rollback, then forward again: the
/// forward run must not resume its stale checkpoint (which would skip
/// every row before it, all Fernet again after the rollback).
#[test]
fn interrupt_rollback_forward_does_not_reuse_the_stale_checkpoint() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = crate::support::seed_fernet(&keys, 300);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let set = |o: &mut manna_migrate::Options| {
        o.batch_size = 50;
        o.adaptive = false;
    };
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    store.on_write(move |_, _, rw| {
        if rw.first().is_some_and(|r| r.id == RowId::Int(151)) {
            trigger.cancel();
        }
    });
    let first = migrator(&store, &keyring, fresh_locks(), set)
        .cancel_token(cancel)
        .run(&[column()])
        .unwrap();
    store.clear_hook();
    assert_eq!(first.columns[0].status, Status::Cancelled);
    assert_eq!(store.all_checkpoints().len(), 1);

    let back = run(&store, &keyring, |o| {
        set(o);
        o.target = Target::Fernet;
    });
    assert_eq!(back.verdict(), Verdict::Complete);
    assert!(
        store.all_checkpoints().is_empty(),
        "a complete run clears the column's checkpoints in every direction"
    );

    let forward = run(&store, &keyring, set);
    let c = &forward.columns[0];
    assert!(!c.resumed);
    assert_eq!((c.status, c.migrated), (Status::Completed, 300));
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
}

/// A checkpoint left by a run with other parameters (here: another AAD
/// mode) is not resumed: the run starts over and says why.
#[test]
fn a_checkpoint_of_other_parameters_is_not_resumed() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = crate::support::seed_fernet(&keys, 200);
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    store.on_write(move |_, _, rw| {
        if !rw.is_empty() {
            trigger.cancel();
        }
    });
    let first = migrator(&store, &keyring, fresh_locks(), |o| {
        o.batch_size = 50;
        o.adaptive = false;
        o.aad = AadMode::Row;
    })
    .cancel_token(cancel)
    .run(&[column()])
    .unwrap();
    store.clear_hook();
    assert_eq!(first.columns[0].status, Status::Cancelled);

    let again = run(&store, &keyring, |o| o.batch_size = 50);
    let c = &again.columns[0];
    assert!(!c.resumed);
    assert!(c
        .checkpoint_ignored
        .as_deref()
        .is_some_and(|why| why.contains("aad row")));
    assert_eq!(c.scanned, 200, "started over from the first row");
    assert_eq!(c.status, Status::Completed);
    assert!(store.all_checkpoints().is_empty());
}

/// A newer holder of the lock raised the fence: this migrator's next write
/// is refused and it stops, lease lost; nothing it would have written after
/// that lands.
#[test]
fn a_superseded_migrator_is_fenced_off() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = crate::support::seed_fernet(&keys, 400);
    let name = migration_lock_name(&store.identity().unwrap(), &column(), Shard::ALL);
    let fence_name = name.clone();
    store.on_write(move |s, c, rw| {
        if rw.first().is_some_and(|r| r.id == RowId::Int(101)) {
            // Another migrator took the lock over (a higher token) and
            // raised the fence while this one was between batches.
            let newer = Fence {
                name: fence_name.clone(),
                fencing: manna_lock::Fencing::new(FencingToken::new(u64::MAX / 2), "newer"),
            };
            s.raise_fence(c, &newer).unwrap();
        }
    });
    let report = migrator(&store, &keyring, fresh_locks(), |o| {
        o.batch_size = 50;
        o.adaptive = false;
    })
    .run(&[column()])
    .unwrap();
    let c = &report.columns[0];
    assert_eq!(c.status, Status::LeaseLost);
    assert_eq!(report.verdict(), Verdict::Incomplete);
    assert_eq!(c.migrated, 100, "the two batches before the takeover");
    let migrated = store
        .rows(&column())
        .iter()
        .filter(|r| r.value.text().is_some_and(|v| v.starts_with("mn1:")))
        .count();
    assert_eq!(migrated, 100);
    assert_eq!(
        store.fence(&name),
        Some(FencingToken::new(u64::MAX / 2)),
        "the newer token stands"
    );
}

#[test]
fn a_name_spelled_with_another_case_is_refused_with_the_catalog_spelling() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = crate::support::seed_fernet(&keys, 10);
    let shouted = ColumnRef::parse("PLAID_ITEMS.ACCESS_TOKEN", "id").unwrap();
    let err = migrator(&store, &keyring, fresh_locks(), |_| {})
        .run(&[shouted])
        .unwrap_err();
    assert!(matches!(err, MigrateError::Store { .. }), "{err}");
    assert!(
        err.to_string().contains("did you mean `plaid_items"),
        "{err}"
    );
    assert_eq!(store.stats().rows_written, 0);
}

/// Fencing tokens outlive the process that held the lock (the store keeps
/// the highest): a later process with in-memory locks of its own must not
/// be fenced off by an earlier one's tokens.
#[test]
fn a_later_process_with_its_own_in_memory_locks_is_not_fenced_off() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = crate::support::seed_fernet(&keys, 20);
    let first_process = fresh_locks();
    for _ in 0..3 {
        let report = migrator(&store, &keyring, first_process.clone(), |_| {})
            .run(&[column()])
            .unwrap();
        assert_eq!(report.verdict(), Verdict::Complete);
    }
    store.insert(&column(), 21, Some(keyring.encrypt_fernet(b"new").unwrap()));
    let report = migrator(&store, &keyring, fresh_locks(), |_| {})
        .run(&[column()])
        .unwrap();
    let c = &report.columns[0];
    assert_eq!((c.status, c.migrated), (Status::Completed, 1));
}

/// A column full of undecryptable rows: every one is counted and decides
/// the verdict, but only the first [`FAILED_IDS_LISTED`] ids are kept; the
/// final census of a migration counts them without the pass's list.
#[test]
fn failed_rows_past_the_listing_bound_are_counted_not_listed() {
    use manna_migrate::FAILED_IDS_LISTED;
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let c = column();
    store.create_table(&c, IdKind::Int, &[], true);
    let damaged = FAILED_IDS_LISTED as i64 + 25;
    for id in 1..=damaged {
        store.insert(&c, id, Some(format!("gAAAAAdamaged{id}")));
    }
    for id in damaged + 1..=damaged + 10 {
        store.insert(&c, id, Some(keyring.encrypt_fernet(b"y").unwrap()));
    }
    for mode in [Mode::DryRun, Mode::VerifyOnly, Mode::Migrate] {
        let report = run(&store, &keyring, |o| o.mode = mode);
        let col = &report.columns[0];
        assert_eq!(col.failed_total, damaged as u64, "{mode}");
        assert_eq!(col.failed.len(), FAILED_IDS_LISTED, "{mode}");
        assert_eq!(col.failure_kinds.values().sum::<u64>(), damaged as u64);
        assert_eq!(report.failed_count(), damaged as u64);
        assert_eq!(report.verdict(), Verdict::Undecryptable, "{mode}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["columns"][0]["failed_total"], damaged, "{mode}");
    }

    // Acknowledging only the listed ids leaves the rest open.
    let listed = run(&store, &keyring, |o| o.mode = Mode::DryRun).columns[0]
        .failed
        .iter()
        .map(|id| format!("{id}\n"))
        .collect::<String>();
    let accepted = AcceptedFailures::parse(&listed).unwrap();
    let report = run(&store, &keyring, |o| o.accepted_failures = accepted.clone());
    let col = &report.columns[0];
    assert_eq!(col.failed_accepted, FAILED_IDS_LISTED as u64);
    assert_eq!(col.status, Status::FailedRows);
    assert_eq!(report.verdict(), Verdict::Undecryptable);
}

/// Issue 9 item 14: past the keyring's `fernet_until`, Fernet rows cannot be
/// read: every mode counts them as failed (`fernet_ended`), still under
/// their Fernet key in the census, the run is not complete, preflight does
/// not mistake them for wrong keys, retire-check still says they need the
/// key, and a rollback to Fernet is refused.
#[test]
fn fernet_rows_after_fernet_until_are_failed_rows_not_completion() {
    let (store, _, old, new) = two_fernet_keys();
    let c = column();
    let ended = Keyring::builder()
        .primary(AesKey::generate())
        .fernet_keys([new.clone(), old.clone()])
        .fernet_until(time::macros::datetime!(2026-01-01 0:00 UTC))
        .build()
        .unwrap();
    // Rows 31..=35: plaintext-free AES values under the primary already.
    for id in 31..=35i64 {
        let v = ended
            .encrypt(b"aes", &AadMode::Column.aad(&c, &RowId::Int(id)))
            .unwrap();
        store.insert(&c, id, Some(v));
    }
    for mode in [Mode::DryRun, Mode::Migrate, Mode::VerifyOnly] {
        let report = migrator(&store, &ended, fresh_locks(), |o| {
            o.mode = mode;
            o.preflight = true;
        })
        .run(std::slice::from_ref(&c))
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let col = &report.columns[0];
        assert_eq!(
            col.failure_kinds.get(&FailureKind::FernetEnded),
            Some(&30),
            "{mode:?}"
        );
        assert_eq!(col.failed.len(), 30, "{mode:?}");
        assert_eq!(col.by_format.fernet_key(&old.id().to_string()), 20);
        assert_eq!(col.by_format.fernet_key(&new.id().to_string()), 10);
        assert_eq!(col.by_format.unknown, 0, "{mode:?}");
        assert_ne!(col.status, Status::Completed, "{mode:?}");
        assert_eq!(report.verdict(), Verdict::Undecryptable, "{mode:?}");
    }
    // Nothing was rewritten: the Fernet rows are as they were.
    let fernet_rows = store
        .rows(&c)
        .into_iter()
        .filter(|r| r.value.text().is_some_and(|v| v.starts_with("gAAAAA")))
        .count();
    assert_eq!(fernet_rows, 30);
    // The rows still need the Fernet keys.
    let usage = key_usage(
        &store,
        &ended,
        std::slice::from_ref(&c),
        RetiringKey::Fernet,
    )
    .unwrap();
    assert_eq!(usage.rows(), 30);
    // Rolling back to Fernet would write what can no longer be read.
    let err = migrator(&store, &ended, fresh_locks(), |o| o.target = Target::Fernet)
        .run(&[c])
        .unwrap_err();
    assert!(matches!(err, MigrateError::Keys(_)), "{err}");
    assert!(
        err.to_string()
            .contains("Fernet ended at 2026-01-01T00:00:00Z"),
        "{err}"
    );
}
