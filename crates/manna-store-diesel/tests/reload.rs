//! Issue 11: a running process rotates the keys of its `Encrypted` columns
//! without a restart. Its own test binary: the default keyring is process
//! state.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use diesel::prelude::*;
use manna_crypto::testing::AuditLog;
use manna_crypto::{AesKey, FileKeySource, Keyring};
use manna_store_diesel::{
    default_keyring, encrypted_column, install_default_keyring, reload_default_keyring,
    replace_default_keyring, Encrypted, EncryptedColumn, Error,
};

diesel::table! {
    notes (id) {
        id -> BigInt,
        body -> Text,
    }
}

encrypted_column!(NoteBody => notes::body);

fn key_file(path: &std::path::Path, primary: &AesKey, previous: Option<&AesKey>) {
    let mut text = format!(
        "[[keys]]\nkey = \"{}\"\nstatus = \"primary\"\n",
        &*primary.to_base64()
    );
    if let Some(old) = previous {
        text += &format!(
            "[[keys]]\nkey = \"{}\"\nstatus = \"decrypt_only\"\n",
            &*old.to_base64()
        );
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn keys_rotate_in_a_running_process() {
    let log = AuditLog::capture();

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let (k1, k2) = (AesKey::generate(), AesKey::generate());
    key_file(&keys, &k1, None);
    let source = FileKeySource::new(&keys);

    // Nothing to replace before the first install.
    assert!(matches!(
        replace_default_keyring(Keyring::new(AesKey::generate())),
        Err(Error::NoDefaultKeyring)
    ));
    install_default_keyring(manna_crypto::KeySource::load(&source).unwrap()).unwrap();

    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    diesel::sql_query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut conn)
        .unwrap();
    let write = |conn: &mut SqliteConnection, id: i64| {
        diesel::insert_into(notes::table)
            .values((
                notes::id.eq(id),
                notes::body.eq(Encrypted::<NoteBody>::new(format!("note {id}"))),
            ))
            .execute(conn)
            .unwrap();
    };
    let stored = |conn: &mut SqliteConnection, id: i64| -> String {
        diesel::sql_query(format!("SELECT body FROM notes WHERE id = {id}"))
            .load::<RawBody>(conn)
            .unwrap()
            .remove(0)
            .body
    };
    write(&mut conn, 1);
    assert!(stored(&mut conn, 1).starts_with(&format!("mn1:{}:", k1.id())));

    // Readers and writers keep working while the keys are swapped under them.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let keyring = || default_keyring().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let k = keyring();
                    let token = k.encrypt(b"x", NoteBody::AAD.as_bytes()).unwrap();
                    assert_eq!(
                        keyring()
                            .decrypt(&token, NoteBody::AAD.as_bytes())
                            .unwrap()
                            .as_bytes(),
                        b"x"
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Rotate while the workers run: K2 becomes primary, K1 stays to decrypt;
    // reload from the file. The workers must have run before the swap and
    // must go on after it (waited for, not assumed: threads start late on a
    // busy machine).
    let wait_past = |mark: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while done.load(Ordering::Relaxed) < mark + 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "the workers stopped making progress"
            );
            std::thread::yield_now();
        }
        done.load(Ordering::Relaxed)
    };
    let before = wait_past(0);
    key_file(&keys, &k2, Some(&k1));
    reload_default_keyring(&source).unwrap();
    wait_past(before);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    write(&mut conn, 2);
    assert!(stored(&mut conn, 2).starts_with(&format!("mn1:{}:", k2.id())));
    let rows: Vec<(i64, Encrypted<NoteBody>)> =
        notes::table.order(notes::id).load(&mut conn).unwrap();
    assert_eq!(
        rows[0].1.expose(),
        b"note 1",
        "written under K1, read after the rotation"
    );
    assert_eq!(rows[1].1.expose(), b"note 2");

    // A broken key file leaves the installed keyring in place.
    std::fs::write(&keys, "[[keys]]\nstatus = \"primary\"\n").unwrap();
    assert!(matches!(
        reload_default_keyring(&source),
        Err(Error::KeyReload { .. })
    ));
    assert_eq!(default_keyring().unwrap().primary_key_id(), k2.id());

    // Audited: loaded, then the primary change — ids, never keys.
    let text = log.text();
    assert!(text.contains("primary_changed"), "{text}");
    assert!(
        text.contains(&format!("old={}", k1.id())) && text.contains(&format!("new={}", k2.id())),
        "{text}"
    );
    for key in [&k1, &k2] {
        assert!(
            !text.contains(&*key.to_base64()),
            "a key reached the audit log"
        );
    }
}

#[derive(QueryableByName)]
struct RawBody {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
}
