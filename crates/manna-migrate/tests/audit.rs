//! Issue 11: audit events under `manna::audit` — migration start and
//! finish, decryption failures, retire-check verdicts — carry ids, counts
//! and kinds, never a value or a key. Its own test binary: `tracing`
//! caches which call sites are enabled per process, so a subscriber
//! captured on one test's thread must not race other tests' call sites.

#![allow(clippy::unwrap_used)]

use manna_crypto::testing::AuditLog;
use manna_crypto::FernetKey;
use std::sync::Arc;

use manna_migrate::{key_usage, BlockingLocks, ColumnRef, IdKind, Migrator, RetiringKey};
use manna_store::testing::MemoryStore;

/// One audit target across the crates: manna-lock cannot name manna-crypto's.
#[test]
fn every_crate_audits_under_one_target() {
    assert_eq!(manna_lock::AUDIT_TARGET, manna_crypto::audit::TARGET);
}

fn column() -> ColumnRef {
    ColumnRef::parse("plaid_items.access_token", "id").unwrap()
}

#[test]
fn a_migration_is_audited_without_values_or_keys() {
    let log = AuditLog::capture();

    let fernet = FernetKey::generate();
    let keyring = manna_crypto::Keyring::builder()
        .primary(manna_crypto::AesKey::generate())
        .fernet(fernet.clone())
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let c = column();
    store.create_table(&c, IdKind::Int, &[], true);
    let mut tokens = Vec::new();
    for id in 1..=5i64 {
        let token = fernet.encrypt(format!("PLAINTEXT-SECRET-{id}").as_bytes());
        tokens.push(token.clone());
        store.insert(&c, id, Some(token));
    }
    let lost = FernetKey::generate().encrypt(b"PLAINTEXT-SECRET-LOST");
    store.insert(&c, 6, Some(lost.clone()));

    let locks = BlockingLocks::with_own_runtime(manna_lock::LockManager::in_memory()).unwrap();
    let report = Migrator::new(Arc::new(store.clone()), keyring.clone())
        .locks(Arc::new(locks))
        .run(std::slice::from_ref(&c))
        .unwrap();
    assert_eq!(report.columns[0].failed_total, 1);
    let usage = key_usage(
        &store,
        &keyring,
        std::slice::from_ref(&c),
        RetiringKey::Fernet,
    )
    .unwrap();
    assert!(
        !usage.in_use(),
        "the only Fernet row left is one no key opens"
    );

    let text = log.text();
    for event in [
        "migration_started",
        "migration_finished",
        "decrypt_failed",
        "retire_check",
    ] {
        assert!(text.contains(event), "no {event} event in:\n{text}");
    }
    assert!(text.contains("plaid_items.access_token"), "{text}");
    assert!(text.contains("kind=unknown_key"), "{text}");
    assert!(
        !text.contains("PLAINTEXT-SECRET"),
        "a plaintext reached the audit log"
    );
    for token in tokens.iter().chain([&lost]) {
        assert!(
            !text.contains(&token[..24]),
            "a stored value reached the audit log"
        );
    }
    assert!(
        !text.contains(&*fernet.to_base64()),
        "a key reached the audit log"
    );
}
