use manna_crypto::{FernetKey, Keyring};
use manna_migrate::testing::strategies::{TestKeys, ValueKind};
use manna_migrate::{AadMode, ColumnRef, IdKind, MigrateError, PreflightError, Target};
use manna_store::testing::MemoryStore;

use crate::support::{column, fresh_locks, migrator, seed_fernet};

fn problems(err: MigrateError) -> Vec<PreflightError> {
    match err {
        MigrateError::Preflight(p) => p,
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_healthy_setup_passes() {
    let keys = TestKeys::generate();
    let store = seed_fernet(&keys, 50);
    migrator(&store, &keys.keyring(), fresh_locks(), |_| {})
        .preflight(&[column()])
        .unwrap();
}

#[test]
fn missing_columns_and_keys_are_each_one_line() {
    let keys = TestKeys::generate();
    let store = seed_fernet(&keys, 5);
    let keyring = Keyring::new(keys.primary.clone());
    let missing = ColumnRef::parse("plaid_items.nope", "id").unwrap();
    let no_table = ColumnRef::parse("nothing.here", "id").unwrap();
    let err = migrator(&store, &keyring, fresh_locks(), |o| {
        o.target = Target::Fernet;
        o.workers = 0;
    })
    .preflight(&[missing, no_table])
    .unwrap_err();
    let p = problems(err);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(matches!(p[0], PreflightError::Options(_)));
    assert!(matches!(p[1], PreflightError::NoFernetKey));
    assert!(
        matches!(&p[2], PreflightError::ColumnMissing { column, .. } if column == "plaid_items.nope")
    );
    assert!(
        matches!(&p[3], PreflightError::ColumnMissing { column, .. } if column == "nothing.here")
    );
    for e in &p {
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn a_wrong_or_missing_fernet_key_is_caught_from_a_sample() {
    let keys = TestKeys::generate();
    let store = seed_fernet(&keys, 300);
    let wrong = Keyring::builder()
        .primary(keys.primary.clone())
        .fernet(FernetKey::generate())
        .build()
        .unwrap();
    let p = problems(
        migrator(&store, &wrong, fresh_locks(), |o| o.preflight_sample = 40)
            .preflight(&[column()])
            .unwrap_err(),
    );
    match &p[..] {
        [PreflightError::Undecryptable {
            sampled,
            failed,
            ids,
            ..
        }] => {
            assert_eq!((*sampled, *failed), (40, 40));
            assert_eq!(ids.len(), 40);
        }
        other => panic!("{other:?}"),
    }
    let line = p[0].to_string();
    assert!(line.starts_with("plaid_items.access_token: 40 of 40 sampled values cannot be decrypted (rows 1, 2, 3, 4, 5)"), "{line}");
    // Fernet binds no AAD: the key is what is missing (issue 11).
    assert!(line.contains("no configured Fernet key opens"), "{line}");
    assert!(!line.contains("AAD"), "{line}");

    let none = Keyring::new(keys.primary.clone());
    let p = problems(
        migrator(&store, &none, fresh_locks(), |_| {})
            .preflight(&[column()])
            .unwrap_err(),
    );
    assert!(
        p[0].to_string()
            .ends_with("value is a legacy Fernet token but no Fernet key is configured"),
        "{}",
        p[0]
    );
    // The cause is typed, for a front end to say which setting fixes it.
    assert!(
        matches!(
            &p[0],
            PreflightError::Undecryptable {
                cause: Some(manna_crypto::DecryptError::NoFernetKey),
                ..
            }
        ),
        "{:?}",
        p[0]
    );
}

#[test]
fn a_few_damaged_rows_do_not_block_the_run() {
    let keys = TestKeys::generate();
    let store = MemoryStore::new();
    let rows: Vec<_> = (0..100)
        .map(|i| {
            (
                if i % 10 == 0 {
                    ValueKind::Garbage
                } else {
                    ValueKind::Fernet
                },
                format!("s{i}"),
            )
        })
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    migrator(&store, &keys.keyring(), fresh_locks(), |_| {})
        .preflight(&[column()])
        .unwrap();
}

#[test]
fn a_wrong_aad_mode_is_caught() {
    let keys = TestKeys::generate();
    let store = MemoryStore::new();
    let rows: Vec<_> = (0..20)
        .map(|i| (ValueKind::Previous, format!("s{i}")))
        .collect();
    keys.seed(&store, &column(), AadMode::Row, &rows);
    let p = problems(
        migrator(&store, &keys.keyring(), fresh_locks(), |o| {
            o.aad = AadMode::Column
        })
        .preflight(&[column()])
        .unwrap_err(),
    );
    assert!(matches!(
        &p[0],
        PreflightError::Undecryptable { failed: 20, .. }
    ));
    migrator(&store, &keys.keyring(), fresh_locks(), |o| {
        o.aad = AadMode::Row
    })
    .preflight(&[column()])
    .unwrap();
}

#[test]
fn bumping_versions_needs_a_version_column() {
    let keys = TestKeys::generate();
    let store = MemoryStore::new();
    let c = column();
    store.create_table(&c, IdKind::Int, &[], false);
    store.insert(&c, 1, Some(keys.keyring().encrypt_fernet(b"x").unwrap()));
    let p = problems(
        migrator(&store, &keys.keyring(), fresh_locks(), |o| {
            o.bump_version = true
        })
        .preflight(std::slice::from_ref(&c))
        .unwrap_err(),
    );
    assert!(matches!(&p[0], PreflightError::NoVersionColumn { .. }));
    let err = migrator(&store, &keys.keyring(), fresh_locks(), |o| {
        o.bump_version = true
    })
    .run(&[c])
    .unwrap_err();
    assert!(
        matches!(&err, MigrateError::Preflight(p) if matches!(p[..], [PreflightError::NoVersionColumn { .. }])),
        "{err}"
    );
}

/// The engine's errors state facts; which flag or variable fixes them is
/// the front end's to say.
#[test]
fn messages_carry_no_cli_hints() {
    for m in [manna_migrate::MigrateError::from(PreflightError::NoFernetKey).to_string()] {
        for hint in ["MANNA_", "xtask", "--"] {
            assert!(!m.contains(hint), "{m:?} contains {hint:?}");
        }
    }
}
