use std::collections::BTreeSet;
use std::sync::OnceLock;

use manna_crypto::{inspect, Format};
use manna_migrate::testing::strategies::{self, TestKeys};
use manna_migrate::{AadMode, Mode, RowId, Target};
use manna_store::testing::MemoryStore;
use proptest::prelude::*;

use crate::support::{column, run, snapshot};

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(TestKeys::generate)
}

fn aad_mode() -> impl Strategy<Value = AadMode> {
    prop_oneof![
        Just(AadMode::Column),
        Just(AadMode::Row),
        Just(AadMode::None)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every row ends in the target format with its plaintext unchanged, or
    /// is reported failed and left byte-for-byte untouched; NULLs stay NULL.
    #[test]
    fn every_row_ends_in_target_or_failed(
        rows in strategies::rows(40),
        aad in aad_mode(),
        to_fernet in any::<bool>(),
        batch in 1usize..16,
        workers in 1usize..4,
    ) {
        let keys = keys();
        let keyring = keys.keyring();
        let store = MemoryStore::new();
        let c = column();
        keys.seed(&store, &c, aad, &rows);
        let before = snapshot(&store);
        let target = if to_fernet { Target::Fernet } else { Target::Aes256Gcm };
        let report = run(&store, &keyring, |o| {
            o.aad = aad;
            o.target = target;
            o.batch_size = batch;
            o.min_batch_size = 1;
            o.workers = workers;
        });
        let r = &report.columns[0];
        let failed: BTreeSet<RowId> = r.failed.iter().cloned().collect();
        let after = snapshot(&store);
        prop_assert_eq!(after.len(), before.len());
        let mut expected_failed = BTreeSet::new();
        for (((id, old), (id2, new)), (kind, secret)) in before.iter().zip(&after).zip(&rows) {
            prop_assert_eq!(id, id2);
            if !kind.decryptable() {
                expected_failed.insert(id.clone());
                prop_assert_eq!(old, new, "failed row {} touched", id);
                continue;
            }
            match new {
                None => prop_assert!(old.is_none()),
                Some(v) => {
                    let f = inspect(v);
                    match target {
                        Target::Aes256Gcm => prop_assert_eq!(f.key_id(), Some(keyring.primary_key_id())),
                        _ => prop_assert_eq!(f, Format::Fernet),
                    }
                    let p = keyring.decrypt(v, &aad.aad(&c, id)).unwrap();
                    prop_assert_eq!(p.as_bytes(), secret.as_bytes());
                }
            }
        }
        prop_assert_eq!(failed, expected_failed);
        prop_assert_eq!(r.total, rows.len() as u64);
        prop_assert_eq!(r.by_format.total() + r.null, rows.len() as u64);
        prop_assert_eq!(r.migrated + r.unchanged + r.failed.len() as u64, rows.len() as u64);
    }

    /// Dry-run and verify-only never write, and agree with a migration on
    /// which rows fail and how many would be rewritten.
    #[test]
    fn read_only_modes_write_nothing_and_predict_the_migration(
        rows in strategies::rows(30),
        aad in aad_mode(),
    ) {
        let keys = keys();
        let keyring = keys.keyring();
        let store = MemoryStore::new();
        keys.seed(&store, &column(), aad, &rows);
        let before = snapshot(&store);
        let dry = run(&store, &keyring, |o| { o.mode = Mode::DryRun; o.aad = aad; o.batch_size = 7; o.min_batch_size = 1; });
        let verify = run(&store, &keyring, |o| { o.mode = Mode::VerifyOnly; o.aad = aad; o.batch_size = 5; o.min_batch_size = 1; });
        prop_assert_eq!(&snapshot(&store), &before);
        prop_assert_eq!(store.stats().write_calls, 0);
        let m = run(&store, &keyring, |o| o.aad = aad);
        prop_assert_eq!(&dry.columns[0].failed, &m.columns[0].failed);
        prop_assert_eq!(&verify.columns[0].failed, &m.columns[0].failed);
        prop_assert_eq!(dry.columns[0].pending, m.columns[0].migrated);
        prop_assert_eq!(&dry.columns[0].by_format, &verify.columns[0].by_format);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Shards partition any key set: every row is migrated by exactly one.
    #[test]
    fn shards_partition_any_key_set(
        ids in proptest::collection::btree_set(any::<i64>(), 0..60),
        shards in 1u32..6,
        workers in 1usize..3,
    ) {
        let keys = keys();
        let keyring = keys.keyring();
        let store = MemoryStore::new();
        let c = column();
        store.create_table(&c, manna_migrate::IdKind::Int, &[], false);
        for id in &ids {
            store.insert(&c, *id, Some(keyring.encrypt_fernet(id.to_string().as_bytes()).unwrap()));
        }
        let locks = crate::support::fresh_locks();
        let mut migrated = 0;
        for index in 0..shards {
            let r = crate::support::migrator(&store, &keyring, locks.clone(), |o| {
                o.shard = manna_migrate::Shard { index, count: shards };
                o.workers = workers;
                o.batch_size = 7;
                o.min_batch_size = 1;
            })
            .run(std::slice::from_ref(&c))
            .unwrap();
            migrated += r.columns[0].migrated;
        }
        prop_assert_eq!(migrated, ids.len() as u64);
        prop_assert!(crate::support::all_under_primary(&store, &keyring));
    }
}
