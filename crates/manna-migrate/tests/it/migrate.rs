use std::collections::BTreeSet;

use manna_crypto::{inspect, Format, Keyring};
use manna_migrate::testing::strategies::{TestKeys, ValueKind};
use manna_migrate::{
    key_usage, AadMode, CensusKind, FailureKind, Mode, Options, OptionsError, RetiringKey, RowId,
    Status, Target,
};
use manna_store::testing::MemoryStore;

use crate::support::{
    all_under_primary, column, fresh_locks, migrator, plaintexts, run, run_complete, seed_fernet,
    snapshot,
};

#[test]
fn fernet_rows_move_to_the_primary_key_with_plaintexts_unchanged() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 1234);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let report = run(&store, &keyring, |o| {
        o.batch_size = 100;
        o.workers = 3;
    });
    let c = &report.columns[0];
    assert_eq!(c.status, Status::Completed);
    assert_eq!((c.migrated, c.unchanged, c.conflicts), (1234, 0, 0));
    assert!(c.failed.is_empty());
    assert_eq!(c.census, CensusKind::After);
    assert_eq!(c.total, 1234);
    let primary = keyring.primary_key_id().to_string();
    assert_eq!(c.by_format.aes_key(&primary), 1234);
    assert!(c.by_format.fernet.is_empty());
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
    assert!(
        store.all_checkpoints().is_empty(),
        "a completed run clears its checkpoint"
    );

    // A second run finds nothing to do and writes no row.
    let written = store.stats().rows_written;
    let again = run(&store, &keyring, |_| {});
    assert_eq!(
        (again.columns[0].migrated, again.columns[0].unchanged),
        (0, 1234)
    );
    assert_eq!(store.stats().rows_written, written);
}

#[test]
fn versions_are_not_bumped_unless_asked() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 20);
    let c = column();
    run_complete(&store, &keyring, |o| {
        o.batch_size = 7;
        o.min_batch_size = 1;
    });
    assert!((1..=20).all(|i| store.version(&c, &RowId::Int(i)) == Some(1)));

    let store = seed_fernet(&keys, 20);
    run_complete(&store, &keyring, |o| o.bump_version = true);
    assert!((1..=20).all(|i| store.version(&c, &RowId::Int(i)) == Some(2)));
}

#[test]
fn dry_run_and_verify_write_nothing() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let kinds = ValueKind::ALL;
    let rows: Vec<_> = (0..80)
        .map(|i| (kinds[i % kinds.len()], format!("s{i}")))
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    let before = snapshot(&store);
    for mode in [Mode::DryRun, Mode::VerifyOnly] {
        let report = run(&store, &keyring, |o| {
            o.mode = mode;
            o.batch_size = 9;
            o.min_batch_size = 1;
            o.workers = 2;
        });
        let c = &report.columns[0];
        assert_eq!(c.census, CensusKind::AsFound);
        assert_eq!(c.scanned, 80);
        assert_eq!(c.migrated, 0);
        // 10 of each kind; unknown key, wrong AAD and garbage fail.
        assert_eq!(c.failed.len(), 30, "{mode}");
        assert_eq!(c.null, 10);
        assert_eq!(c.by_format.fernet_total(), 10);
        assert_eq!(c.by_format.plaintext, 10);
        assert_eq!(c.by_format.unknown, 10);
        assert_eq!(
            c.by_format.aes_key(&keyring.primary_key_id().to_string()),
            10
        );
        assert_eq!(c.by_format.aes_key(&keys.previous.id().to_string()), 20);
        assert_eq!(c.by_format.aes_key(&keys.unknown.id().to_string()), 10);
        // Fernet, previous key, plaintext would be rewritten.
        assert_eq!(c.pending, 30);
        assert!(!report.is_success(), "failures make the run unsuccessful");
    }
    assert_eq!(snapshot(&store), before);
    let stats = store.stats();
    assert_eq!(
        (
            stats.write_calls,
            stats.rows_written,
            stats.checkpoint_writes
        ),
        (0, 0, 0)
    );
}

#[test]
fn verify_catches_a_primary_key_value_with_the_wrong_binding() {
    // Migrate skips values already under the primary key; verify decrypts
    // them and reports the one bound to another column.
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 5);
    let c = column();
    let misbound = keyring.encrypt(b"moved", b"other_table.token").unwrap();
    store.insert(&c, 3, Some(misbound));
    let m = run(&store, &keyring, |_| {});
    assert!(m.columns[0].failed.is_empty());
    let v = run(&store, &keyring, |o| o.mode = Mode::VerifyOnly);
    assert_eq!(v.columns[0].failed, vec![RowId::Int(3)]);
    assert_eq!(
        v.columns[0].failure_kinds.get(&FailureKind::Authentication),
        Some(&1)
    );
}

#[test]
fn undecryptable_rows_are_reported_by_id_and_left_untouched() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let rows: Vec<_> = ValueKind::ALL
        .iter()
        .map(|k| (*k, format!("secret-{k:?}").to_lowercase()))
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    let before = snapshot(&store);
    let id_of =
        |k: ValueKind| RowId::Int(ValueKind::ALL.iter().position(|x| *x == k).unwrap() as i64 + 1);
    let report = run(&store, &keyring, |_| {});
    let c = &report.columns[0];
    let failed: BTreeSet<_> = c.failed.iter().cloned().collect();
    let expected: BTreeSet<_> = [
        ValueKind::UnknownKey,
        ValueKind::WrongAad,
        ValueKind::Garbage,
    ]
    .map(id_of)
    .into_iter()
    .collect();
    assert_eq!(failed, expected);
    assert_eq!(c.failure_kinds.get(&FailureKind::UnknownKey), Some(&1));
    assert_eq!(c.failure_kinds.get(&FailureKind::Authentication), Some(&1));
    assert_eq!(c.failure_kinds.get(&FailureKind::UnknownFormat), Some(&1));
    // Fernet, previous, plaintext migrated; null and primary unchanged.
    assert_eq!((c.migrated, c.unchanged), (3, 2));
    let after = snapshot(&store);
    for (b, a) in before.iter().zip(&after) {
        if failed.contains(&b.0) {
            assert_eq!(b, a, "failed row {} was touched", b.0);
        }
    }
    // The report and the JSON carry ids, never values.
    let json = report.to_json();
    for (_, v) in &before {
        if let Some(v) = v {
            assert!(!json.contains(v.as_str()));
        }
    }
    assert!(!json.contains("secret-"));
    // The plaintext row now decrypts under the primary key.
    let v = store
        .value(&column(), id_of(ValueKind::Plaintext))
        .flatten()
        .unwrap();
    assert_eq!(inspect(&v).key_id(), Some(keyring.primary_key_id()));
}

#[test]
fn plaintext_fails_when_the_keyring_does_not_accept_it() {
    let keys = TestKeys::generate();
    let keyring = Keyring::builder()
        .primary(keys.primary.clone())
        .fernet(keys.fernet.clone())
        .build()
        .unwrap();
    let store = MemoryStore::new();
    keys.seed(
        &store,
        &column(),
        AadMode::Column,
        &[
            (ValueKind::Plaintext, "legacy plain".into()),
            (ValueKind::Fernet, "token".into()),
        ],
    );
    let report = run(&store, &keyring, |_| {});
    let c = &report.columns[0];
    assert_eq!(c.failed, vec![RowId::Int(1)]);
    assert_eq!(
        c.failure_kinds.get(&FailureKind::PlaintextNotAccepted),
        Some(&1)
    );
    assert_eq!(store.value(&column(), 1), Some(Some("legacy plain".into())));
}

#[test]
fn rotation_from_an_old_key_and_retirement_check() {
    let keys = TestKeys::generate();
    let store = MemoryStore::new();
    let rows: Vec<_> = (0..300)
        .map(|i| {
            (
                if i % 3 == 0 {
                    ValueKind::Primary
                } else {
                    ValueKind::Previous
                },
                format!("k{i}"),
            )
        })
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    let keyring = keys.keyring();
    let before = plaintexts(&store, &keyring, AadMode::Column);
    let old = RetiringKey::Aes(keys.previous.id());
    let usage = key_usage(&store, &keyring, &[column()], old).unwrap();
    assert!(usage.in_use());
    assert_eq!(usage.rows(), 200);
    assert_eq!(usage.columns[0].sample_ids.len(), 10);

    let report = run(&store, &keyring, |o| o.batch_size = 64);
    assert_eq!(
        (report.columns[0].migrated, report.columns[0].unchanged),
        (200, 100)
    );
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
    assert!(!key_usage(&store, &keyring, &[column()], old)
        .unwrap()
        .in_use());
    assert!(
        !key_usage(&store, &keyring, &[column()], RetiringKey::Fernet)
            .unwrap()
            .in_use()
    );
    assert_eq!(
        key_usage(
            &store,
            &keyring,
            &[column()],
            RetiringKey::Aes(keys.primary.id())
        )
        .unwrap()
        .rows(),
        300
    );
    // Once no row needs it, the old key can go: a keyring without it reads everything.
    let slim = Keyring::new(keys.primary.clone());
    assert_eq!(plaintexts(&store, &slim, AadMode::Column), before);
}

#[test]
fn rollback_to_fernet_and_forward_again() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let rows: Vec<_> = (0..150)
        .map(|i| {
            (
                [ValueKind::Primary, ValueKind::Previous, ValueKind::Null][i % 3],
                format!("r{i}"),
            )
        })
        .collect();
    keys.seed(&store, &column(), AadMode::Row, &rows);
    let before = plaintexts(&store, &keyring, AadMode::Row);

    let back = run(&store, &keyring, |o| {
        o.target = Target::Fernet;
        o.aad = AadMode::Row;
        o.batch_size = 32;
    });
    let c = &back.columns[0];
    assert_eq!(back.target, Target::Fernet);
    assert_eq!(
        (c.migrated, c.by_format.fernet_total(), c.null),
        (100, 100, 50)
    );
    assert!(store
        .rows(&column())
        .iter()
        .all(|r| r.value.text().is_none_or(|v| inspect(v) == Format::Fernet)));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Row), before);
    assert!(
        key_usage(&store, &keyring, &[column()], RetiringKey::Fernet)
            .unwrap()
            .in_use()
    );

    let forward = run(&store, &keyring, |o| {
        o.aad = AadMode::Row;
        o.workers = 2;
    });
    assert_eq!(forward.columns[0].migrated, 100);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Row), before);
}

#[test]
fn fernet_target_without_a_fernet_key_is_refused() {
    let keys = TestKeys::generate();
    let store = seed_fernet(&keys, 3);
    let keyring = Keyring::new(keys.primary.clone());
    let err = crate::support::migrator(&store, &keyring, crate::support::fresh_locks(), |o| {
        o.target = Target::Fernet
    })
    .run(&[column()])
    .unwrap_err();
    assert!(
        matches!(&err, manna_migrate::MigrateError::Preflight(p)
            if matches!(p[..], [manna_migrate::PreflightError::NoFernetKey])),
        "{err:?}"
    );
    assert!(err.to_string().contains("needs a Fernet key"), "{err}");
}

#[test]
fn row_bound_values_cannot_move_between_rows() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 4);
    run_complete(&store, &keyring, |o| o.aad = AadMode::Row);
    let c = column();
    let one = store.value(&c, 1).flatten().unwrap();
    assert!(keyring.decrypt(&one, b"plaid_items.access_token:1").is_ok());
    assert!(keyring
        .decrypt(&one, b"plaid_items.access_token:2")
        .is_err());
    assert!(keyring.decrypt(&one, b"plaid_items.access_token").is_err());
    // Copy row 1's value into row 2: verify flags row 2.
    store.insert(&c, 2, Some(one));
    let v = run(&store, &keyring, |o| {
        o.mode = Mode::VerifyOnly;
        o.aad = AadMode::Row;
    });
    assert_eq!(v.columns[0].failed, vec![RowId::Int(2)]);
}

#[test]
fn no_aad_mode_writes_unbound_values() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 3);
    run_complete(&store, &keyring, |o| o.aad = AadMode::None);
    let v = store.value(&column(), 2).flatten().unwrap();
    assert_eq!(&*keyring.decrypt(&v, b"").unwrap(), b"secret-2");
    assert!(keyring.decrypt(&v, b"plaid_items.access_token").is_err());
}

#[test]
fn several_columns_run_in_order() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 10);
    let other = manna_migrate::ColumnRef::parse("transactions.note", "id").unwrap();
    keys.seed(
        &store,
        &other,
        AadMode::Column,
        &[(ValueKind::Fernet, "n".into())],
    );
    let report = crate::support::migrator(&store, &keyring, crate::support::fresh_locks(), |_| {})
        .run(&[column(), other.clone()])
        .unwrap();
    assert_eq!(report.columns.len(), 2);
    assert_eq!(report.columns[1].table, "transactions");
    assert_eq!(report.columns[1].migrated, 1);
    let v = store.value(&other, 1).flatten().unwrap();
    assert!(keyring.decrypt(&v, b"transactions.note").is_ok());
}

#[test]
fn adaptive_batch_size_moves_within_bounds() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 600);
    let shrink = run(&store, &keyring, |o| {
        o.batch_size = 100;
        o.min_batch_size = 5;
        o.target_batch_time = std::time::Duration::from_nanos(1);
    });
    assert_eq!(shrink.columns[0].batch_size, 5);
    let store = seed_fernet(&keys, 600);
    let grow = run(&store, &keyring, |o| {
        o.batch_size = 10;
        o.max_batch_size = 80;
        o.target_batch_time = std::time::Duration::from_secs(3600);
    });
    assert_eq!(grow.columns[0].batch_size, 80);
    let store = seed_fernet(&keys, 600);
    let fixed = run(&store, &keyring, |o| {
        o.batch_size = 37;
        o.adaptive = false;
    });
    assert_eq!(fixed.columns[0].batch_size, 37);
    // 600 rows in batches of 37: 17 scans with rows, one empty, one census pass.
    assert!(store.stats().scans >= 17);
}

#[test]
fn throttle_limits_rows_per_scan() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 60);
    let report = run(&store, &keyring, |o| {
        o.batch_size = 1000;
        o.max_rows_per_sec = Some(20_000);
    });
    assert_eq!(report.columns[0].migrated, 60);
    assert_eq!(report.columns[0].census, CensusKind::After);
    let store = seed_fernet(&keys, 20);
    run_complete(&store, &keyring, |o| {
        o.batch_size = 1000;
        o.max_rows_per_sec = Some(10);
        o.adaptive = false;
    });
    // At most 10 rows per scan: 2 scans with rows plus the empty one.
    assert_eq!(store.stats().scans, 3);
}

/// Issue 11: `max_rows_per_sec` is a ceiling at every moment of the run:
/// the rows written by time t never exceed rate × t (a batch used to go out
/// on credit, running ahead by one batch). And after a full batch, the next
/// is *read* when its rows are due, so the rows read by t, the pass's first
/// batch aside, never exceed rate × t either: rows do not age while the run
/// waits for the rate (they were read a whole batch early and compared-and-
/// set up to a second later, lost to live writers). Not a timing assertion:
/// the bounds hold however slow the machine is.
#[test]
fn a_throttled_run_never_runs_ahead_of_its_rate() {
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(f64, usize)>>>;
    /// Adds `n` rows at the time elapsed since `started`.
    fn record(log: &Log, started: std::time::Instant, n: usize) {
        let mut log = log.lock().unwrap();
        let before = log.last().map_or(0, |(_, total)| *total);
        log.push((started.elapsed().as_secs_f64(), before + n));
    }
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 30);
    let (scans, writes, started) = (Log::default(), Log::default(), std::time::Instant::now());
    let log = scans.clone();
    store.on_scan(move |_, rows| record(&log, started, rows.len()));
    let log = writes.clone();
    store.on_write(move |_, _, rewrites| record(&log, started, rewrites.len()));
    let report = migrator(&store, &keyring, fresh_locks(), |o| {
        *o = std::mem::take(o).with_batch_size(10);
        o.adaptive = false;
        o.max_rows_per_sec = Some(20);
    })
    .run(&[column()])
    .unwrap();
    assert_eq!(report.columns[0].migrated, 30);
    for (what, log, skip) in [("read", scans, 1), ("written", writes, 0)] {
        let log = log.lock().unwrap();
        let moved: Vec<_> = log.iter().filter(|(_, n)| *n > 0).collect();
        assert!(moved.len() >= 3, "{what}: {log:?}");
        for (t, rows) in moved.into_iter().skip(skip) {
            assert!(
                *rows as f64 <= 20.0 * t,
                "{rows} rows {what} after {t:.3} s"
            );
        }
    }
}

/// A first batch size outside `min_batch_size..=max_batch_size` is refused
/// by the library (it used to be clamped silently to the bounds);
/// `Options::with_batch_size` widens the bounds and the run uses exactly
/// that size.
#[test]
fn a_batch_size_outside_the_bounds_is_an_error_not_clamped() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 30);
    for size in [20_000, 3] {
        let mut o = Options::default();
        o.batch_size = size;
        let err = o.validate().unwrap_err();
        assert!(
            matches!(err, OptionsError::BatchOutsideBounds { size: s, .. } if s == size),
            "{err}"
        );
        let err = migrator(&store, &keyring, fresh_locks(), |o| o.batch_size = size)
            .run(&[column()])
            .unwrap_err();
        assert!(
            matches!(&err, manna_migrate::MigrateError::Preflight(p)
                if matches!(p[..], [manna_migrate::PreflightError::Options(_)])),
            "{err:?}"
        );
    }
    assert_eq!(store.stats().write_calls, 0);

    let report = migrator(&store, &keyring, fresh_locks(), |o| {
        *o = std::mem::take(o).with_batch_size(3);
        o.adaptive = false;
    })
    .run(&[column()])
    .unwrap();
    assert_eq!(report.columns[0].batch_size, 3);
    assert_eq!(report.columns[0].migrated, 30);
    // Batches of 3 rows (clamped to the default minimum of 10, there were 3).
    assert!(store.stats().write_calls >= 10, "{:?}", store.stats());
}
