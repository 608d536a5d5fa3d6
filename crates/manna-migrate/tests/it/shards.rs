use std::thread;

use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::{AadMode, ColumnStore, LayoutKey, Mode, RowId, Shard};

use crate::support::{all_under_primary, column, fresh_locks, migrator, plaintexts, seed_fernet};

#[test]
fn shards_on_parallel_machines_cover_every_row_once() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 3001);
    let before = plaintexts(&store, &keyring, AadMode::Column);
    // One lock service shared by the "machines".
    let locks = fresh_locks();
    let reports: Vec<_> = (0..3u32)
        .map(|i| {
            let (store, keyring, locks) = (store.clone(), keyring.clone(), locks.clone());
            thread::spawn(move || {
                migrator(&store, &keyring, locks, |o| {
                    o.shard = Shard { index: i, count: 3 };
                    o.batch_size = 200;
                    o.workers = 2;
                })
                .run(&[column()])
                .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let migrated: u64 = reports.iter().map(|r| r.columns[0].migrated).sum();
    let scanned: u64 = reports.iter().map(|r| r.columns[0].scanned).sum();
    assert_eq!((migrated, scanned), (3001, 3001), "disjoint and complete");
    assert!(
        reports.iter().all(|r| r.columns[0].migrated > 0),
        "work is spread"
    );
    let c = column();
    let shards: Vec<_> = reports.iter().map(|r| r.columns[0].shard.clone()).collect();
    assert_eq!(shards.len(), 3);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(plaintexts(&store, &keyring, AadMode::Column), before);
    // The layout stays saved; shard checkpoints are gone.
    let cps = store.all_checkpoints();
    assert!(cps.is_empty(), "{cps:?}");
    let layout = store
        .load_layout(&LayoutKey {
            column: c.to_string(),
            id_column: "id".into(),
            shards: 3,
        })
        .unwrap();
    assert_eq!(layout.map(|b| b.len()), Some(2));

    // Rows added later, below, between and above the boundaries, are still
    // covered by exactly one shard: the saved boundaries are reused.
    let fernet = keyring.clone();
    for id in [-10i64, 1500, 999_999] {
        store.insert(
            &c,
            id,
            Some(
                fernet
                    .encrypt_fernet(format!("late-{id}").as_bytes())
                    .unwrap(),
            ),
        );
    }
    let mut late = 0;
    for i in 0..3 {
        let r = migrator(&store, &keyring, locks.clone(), |o| {
            o.shard = Shard { index: i, count: 3 }
        })
        .run(std::slice::from_ref(&c))
        .unwrap();
        late += r.columns[0].migrated;
    }
    assert_eq!(late, 3);
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(
        plaintexts(&store, &keyring, AadMode::Column)[&RowId::Int(1500)].as_deref(),
        Some("late-1500")
    );
}

#[test]
fn read_only_shards_need_no_saved_layout() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 100);
    let mut seen = 0;
    for i in 0..4 {
        let r = migrator(&store, &keyring, fresh_locks(), |o| {
            o.mode = Mode::DryRun;
            o.shard = Shard { index: i, count: 4 };
        })
        .run(&[column()])
        .unwrap();
        seen += r.columns[0].scanned;
    }
    assert_eq!(seen, 100);
    assert!(store.all_checkpoints().is_empty(), "dry-run saved nothing");
}

#[test]
fn more_shards_than_rows_leaves_some_empty() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 2);
    let locks = fresh_locks();
    let mut migrated = 0;
    for i in 0..5 {
        let r = migrator(&store, &keyring, locks.clone(), |o| {
            o.shard = Shard { index: i, count: 5 }
        })
        .run(&[column()])
        .unwrap();
        migrated += r.columns[0].migrated;
    }
    assert_eq!(migrated, 2);
    assert!(all_under_primary(&store, &keyring));
}
