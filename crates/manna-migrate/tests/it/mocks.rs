use std::sync::Arc;

use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::{
    ColumnInfo, IdKind, MigrateError, Migrator, Row, RowId, StoreError, StoreErrorKind,
};
use manna_store::testing::MockColumnStore;

use crate::support::{column, fresh_locks};

fn store_with_rows(keys: &TestKeys, n: i64) -> MockColumnStore {
    let keyring = keys.keyring();
    let mut store = MockColumnStore::new();
    store
        .expect_check_column()
        .returning(|_| Ok(ColumnInfo::new(IdKind::Int, true)));
    store.expect_count().returning(move |_, _| Ok(n as u64));
    store.expect_load_checkpoint().returning(|_| Ok(None));
    store.expect_checkpoints().returning(|_| Ok(Vec::new()));
    store.expect_raise_fence().returning(|_, _| Ok(()));
    store.expect_clear_checkpoint().returning(|_| Ok(()));
    store
        .expect_identity()
        .returning(|| Ok("mock:db".to_owned()));
    store.expect_scan().returning(move |_, range, limit| {
        let start = match range.after {
            Some(RowId::Int(i)) => i + 1,
            _ => 1,
        };
        Ok((start..=n)
            .take(limit)
            .map(|i| Row::new(i, keyring.encrypt_fernet(b"x").unwrap()))
            .collect())
    });
    store
}

#[test]
fn a_panicking_store_becomes_an_error_not_a_hang() {
    let keys = TestKeys::generate();
    let mut store = store_with_rows(&keys, 500);
    store
        .expect_write_batch()
        .returning(|_, _, _, _, _| panic!("bug in the adapter"));
    let mut o = manna_migrate::Options::default();
    o.batch_size = 10;
    o.workers = 2;
    let err = Migrator::new(Arc::new(store), keys.keyring())
        .options(o)
        .locks(fresh_locks())
        .run(&[column()])
        .unwrap_err();
    assert!(matches!(err, MigrateError::WorkerPanicked { .. }), "{err}");
}

#[test]
fn store_errors_name_the_column_and_keep_their_kind() {
    let keys = TestKeys::generate();
    let mut store = store_with_rows(&keys, 30);
    store.expect_write_batch().returning(|_, _, _, _, _| {
        Err(StoreError::new(
            StoreErrorKind::Unavailable,
            "connection refused",
        ))
    });
    let err = Migrator::new(Arc::new(store), keys.keyring())
        .locks(fresh_locks())
        .run(&[column()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plaid_items.access_token: connection refused"
    );
    match err {
        MigrateError::Store { cause: source, .. } => {
            assert_eq!(source.kind(), StoreErrorKind::Unavailable)
        }
        other => panic!("{other}"),
    }
}

#[test]
fn an_unreachable_lock_backend_is_a_lock_error_naming_the_column() {
    use manna_lock::LockError;
    use manna_migrate::testing::MockMigrationLocks;

    let keys = TestKeys::generate();
    let store = store_with_rows(&keys, 3);
    let mut locks = MockMigrationLocks::new();
    locks.expect_acquire().returning(|_| {
        Err(LockError::Unavailable {
            backend: "redis at redis://127.0.0.1:6399/0 (REDIS_URL)".into(),
            reason: "connection refused".into(),
        })
    });
    let err = Migrator::new(Arc::new(store), keys.keyring())
        .locks(Arc::new(locks))
        .run(&[column()])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, MigrateError::Lock { .. }));
    assert!(
        msg.starts_with("plaid_items.access_token: distributed lock error"),
        "{msg}"
    );
    assert!(msg.contains("REDIS_URL"), "{msg}");
}

#[test]
fn the_lock_is_released_once_even_when_the_store_fails() {
    use manna_migrate::testing::{MockHeldLock, MockMigrationLocks};

    let keys = TestKeys::generate();
    let mut store = store_with_rows(&keys, 30);
    store.expect_write_batch().returning(|_, _, _, _, _| {
        Err(StoreError::new(
            StoreErrorKind::Conflict,
            "deadlock detected",
        ))
    });
    let mut locks = MockMigrationLocks::new();
    locks.expect_acquire().times(1).returning(|name| {
        assert_eq!(name, "manna:migrate:mock:db:plaid_items.access_token:0/1");
        let mut held = MockHeldLock::new();
        held.expect_is_lost().returning(|| false);
        held.expect_fencing().return_const(manna_lock::Fencing::new(
            manna_lock::FencingToken::new(1),
            "mock",
        ));
        held.expect_name().return_const("held".to_owned());
        held.expect_release().times(1).returning(|| Ok(true));
        Ok(Box::new(held))
    });
    assert!(Migrator::new(Arc::new(store), keys.keyring())
        .locks(Arc::new(locks))
        .run(&[column()])
        .is_err());
}
