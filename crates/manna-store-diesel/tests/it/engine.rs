//! The manna-migrate engine running on this store while the application
//! keeps writing: nothing lost, nothing clobbered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use manna_crypto::{AesKey, FernetKey, Keyring};
use manna_migrate::{ColumnRef, ColumnStore, IdRange, Migrator, Options};
use manna_store_diesel::{encrypted_column, Changes, DieselStore, Sealed, VersionedTable};

use crate::support::SPEC_FERNET_KEY;

encrypted_column!(Token = "plaid_items"."access_token");

const ROWS: i64 = 600;

both_backends! {
    fn migration_under_concurrent_application_writes(db: &TestDb) {
        let fernet = FernetKey::from_base64(SPEC_FERNET_KEY).unwrap();
        let keyring = Keyring::builder()
            .primary(AesKey::generate())
            .fernet(fernet)
            .build()
            .unwrap();
        db.exec(&format!(
            "CREATE TABLE plaid_items (id {}, access_token TEXT, version INTEGER NOT NULL DEFAULT 1)",
            db.serial()
        ));
        let mut values = Vec::new();
        for i in 1..=ROWS {
            let tok = keyring.encrypt_fernet(format!("access-{i}").as_bytes()).unwrap();
            values.push(format!("('{tok}')"));
        }
        db.exec(&format!("INSERT INTO plaid_items (access_token) VALUES {}", values.join(", ")));

        let store = Arc::new(DieselStore::new(db.pool().clone()));
        let col = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
        let mut options = Options::default();
        options.workers = 2;
        options.batch_size = 50;
        options.adaptive = false;
        // Private in-memory locks: the PostgreSQL and SQLite variants of this
        // test run in one process on the same column name.
        let locks = manna_migrate::BlockingLocks::with_own_runtime(manna_lock::LockManager::in_memory()).unwrap();
        let migrator = Migrator::new(store.clone(), keyring.clone())
            .options(options)
            .locks(Arc::new(locks));

        // The application rewrites every 7th row while the migration runs.
        let done = AtomicBool::new(false);
        let table = VersionedTable::new("plaid_items").unwrap();
        let report = std::thread::scope(|s| {
            let app = s.spawn(|| {
                let mut conn = db.conn();
                let mut round = 0;
                while !done.load(Ordering::Relaxed) || round == 0 {
                    round += 1;
                    for id in (7..=ROWS).step_by(7) {
                        let v = table.version(&mut conn, id).unwrap().unwrap();
                        let sealed = Sealed::<Token>::seal(&keyring, format!("app-{id}").as_bytes()).unwrap();
                        // The migrator leaves versions alone, so the application's
                        // versioned writes never conflict with it.
                        table.update(&mut conn, id, v, &Changes::new().set("access_token", sealed).unwrap()).unwrap();
                    }
                }
                round
            });
            let report = migrator.run_column(&col);
            // Stop the writer before anything can panic, or the scope would wait for it forever.
            done.store(true, Ordering::Relaxed);
            let rounds = app.join().unwrap();
            assert!(rounds >= 1);
            report.unwrap()
        });

        // Every row decrypts under the primary key to its expected plaintext.
        let rows = store.scan(&col, &IdRange::all(), ROWS as usize + 1).unwrap();
        assert_eq!(rows.len(), ROWS as usize);
        for r in &rows {
            let manna_migrate::RowId::Int(id) = r.id else { unreachable!() };
            let v = r.value.text().unwrap();
            assert!(!keyring.needs_reencryption(v), "row {id} still needs re-encryption");
            let pt = Sealed::<Token>::from_ciphertext(v).open(&keyring).unwrap();
            let want = if id % 7 == 0 { format!("app-{id}") } else { format!("access-{id}") };
            assert_eq!(pt.to_str().unwrap(), want, "row {id}");
        }
        assert!(report.failed.is_empty());
        assert_eq!(report.migrated + report.unchanged, ROWS as u64, "{report:?}");
    }
}
