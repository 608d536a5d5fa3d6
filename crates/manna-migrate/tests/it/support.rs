use std::collections::BTreeMap;
use std::sync::Arc;

use manna_crypto::Keyring;
use manna_lock::LockManager;
use manna_migrate::testing::strategies::{TestKeys, ValueKind};
use manna_migrate::{
    AadMode, BlockingLocks, ColumnRef, MigrationLocks, Migrator, Options, Report, RowId,
};
use manna_store::testing::MemoryStore;

pub fn column() -> ColumnRef {
    ColumnRef::parse("plaid_items.access_token", "id").unwrap()
}

/// Fresh in-process locks, so parallel tests never contend.
pub fn fresh_locks() -> Arc<BlockingLocks> {
    Arc::new(BlockingLocks::with_own_runtime(LockManager::in_memory()).unwrap())
}

pub fn migrator(
    store: &MemoryStore,
    keyring: &Keyring,
    locks: Arc<dyn MigrationLocks>,
    set: impl FnOnce(&mut Options),
) -> Migrator {
    let mut o = Options::default();
    // These tests drive the engine over damaged columns too; preflight has
    // its own tests.
    o.preflight = false;
    set(&mut o);
    Migrator::new(Arc::new(store.clone()), keyring.clone())
        .options(o)
        .locks(locks)
}

pub fn run(store: &MemoryStore, keyring: &Keyring, set: impl FnOnce(&mut Options)) -> Report {
    migrator(store, keyring, fresh_locks(), set)
        .run(&[column()])
        .unwrap()
}

/// Runs and checks the verdict is complete.
pub fn run_complete(store: &MemoryStore, keyring: &Keyring, set: impl FnOnce(&mut Options)) {
    let report = run(store, keyring, set);
    assert_eq!(
        report.verdict(),
        manna_migrate::Verdict::Complete,
        "{report:?}"
    );
}

/// `n` Fernet rows with secrets `secret-<id>` (ids 1..=n).
pub fn seed_fernet(keys: &TestKeys, n: usize) -> MemoryStore {
    let store = MemoryStore::new();
    let rows: Vec<(ValueKind, String)> = (1..=n)
        .map(|i| (ValueKind::Fernet, format!("secret-{i}")))
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    store
}

/// Every row's value decrypted (None for NULL); panics on a failure.
pub fn plaintexts(
    store: &MemoryStore,
    keyring: &Keyring,
    aad: AadMode,
) -> BTreeMap<RowId, Option<String>> {
    let c = column();
    store
        .rows(&c)
        .into_iter()
        .map(|r| {
            let p = r.value.text().map(|v| {
                let p = keyring
                    .decrypt(v, &aad.aad(&c, &r.id))
                    .unwrap_or_else(|e| panic!("row {}: {e}", r.id));
                String::from_utf8(p.as_bytes().to_vec()).unwrap()
            });
            (r.id, p)
        })
        .collect()
}

/// Whether every non-NULL value is an envelope under `keyring`'s primary key.
pub fn all_under_primary(store: &MemoryStore, keyring: &Keyring) -> bool {
    store.rows(&column()).iter().all(|r| {
        r.value
            .text()
            .is_none_or(|v| manna_crypto::inspect(v).key_id() == Some(keyring.primary_key_id()))
    })
}

pub fn snapshot(store: &MemoryStore) -> Vec<(RowId, Option<String>)> {
    store
        .rows(&column())
        .into_iter()
        .map(|r| (r.id, r.value.text().map(str::to_owned)))
        .collect()
}
