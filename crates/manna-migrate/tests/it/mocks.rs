use std::sync::Arc;

use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::testing::MockColumnStore;
use manna_migrate::{
    ColumnInfo, IdKind, MigrateError, Migrator, Row, RowId, StoreError, StoreErrorKind,
};

use crate::support::{column, fresh_locks};

fn store_with_rows(keys: &TestKeys, n: i64) -> MockColumnStore {
    let keyring = keys.keyring();
    let mut store = MockColumnStore::new();
    store
        .expect_check_column()
        .returning(|_| Ok(ColumnInfo::new(IdKind::Int, true)));
    store.expect_count().returning(move |_, _| Ok(n as u64));
    store.expect_load_checkpoint().returning(|_| Ok(None));
    store.expect_clear_checkpoint().returning(|_| Ok(()));
    store.expect_scan().returning(move |_, range, limit| {
        let start = match range.after {
            Some(RowId::Int(i)) => i + 1,
            _ => 1,
        };
        Ok((start..=n)
            .take(limit)
            .map(|i| Row {
                id: RowId::Int(i),
                value: Some(keyring.encrypt_fernet(b"x").unwrap()),
            })
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
        .returning(|_, _, _, _| panic!("bug in the adapter"));
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
    store.expect_write_batch().returning(|_, _, _, _| {
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
        MigrateError::Store { source, .. } => {
            assert_eq!(source.kind(), StoreErrorKind::Unavailable)
        }
        other => panic!("{other}"),
    }
}
