//! Encrypted column types through Diesel on both backends.

use diesel::prelude::*;
use manna_store_diesel::{encrypted_column, Encrypted, EncryptedColumn, Error, Sealed};

use crate::support::{keys, TestDb, SPEC_FERNET_TOKEN};

diesel::table! {
    secrets (id) {
        id -> BigInt,
        token -> Text,
        other -> Nullable<Text>,
    }
}

encrypted_column!(
    /// `secrets.token`
    SecretToken => secrets::token
);
encrypted_column!(
    /// `secrets.other`
    SecretOther => secrets::other
);

diesel::table! {
    blobs (id) {
        id -> BigInt,
        secret -> Binary,
    }
}

encrypted_column!(
    /// `blobs.secret`
    BlobSecret => blobs::secret
);

#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = blobs)]
struct Blob {
    id: i64,
    secret: Encrypted<BlobSecret>,
}

#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = secrets)]
struct Secret {
    id: i64,
    token: Encrypted<SecretToken>,
    other: Option<Encrypted<SecretOther>>,
}

fn setup(db: &TestDb) {
    keys();
    db.exec("CREATE TABLE secrets (id BIGINT PRIMARY KEY, token TEXT NOT NULL, other TEXT)");
}

fn raw_insert(db: &TestDb, id: i64, token: &str) {
    on_conn!(db, |c| diesel::insert_into(secrets::table)
        .values((secrets::id.eq(id), secrets::token.eq(token)))
        .execute(c)
        .unwrap());
}

fn raw_token(db: &TestDb, id: i64) -> String {
    on_conn!(db, |c| secrets::table
        .find(id)
        .select(secrets::token)
        .first::<String>(c)
        .unwrap())
}

fn load(db: &TestDb, id: i64) -> QueryResult<Secret> {
    on_conn!(db, |c| secrets::table.find(id).first::<Secret>(c))
}

both_backends! {
    fn round_trip_stores_ciphertext_bound_to_the_column(db: &TestDb) {
        setup(db);
        let row = Secret {
            id: 1,
            token: Encrypted::new("access-sandbox-1"),
            other: Some(Encrypted::new("other-secret")),
        };
        on_conn!(db, |c| diesel::insert_into(secrets::table).values(&row).execute(c).unwrap());
        let stored = raw_token(db, 1);
        assert!(!stored.contains("access-sandbox"), "stored encrypted");
        assert_eq!(keys().keyring.inspect(&stored).label(), "aes256gcm");
        let back = load(db, 1).unwrap();
        assert_eq!(back.token.expose_str(), Some("access-sandbox-1"));
        assert_eq!(back.other.as_ref().and_then(|o| o.expose_str()), Some("other-secret"));
        // Debug never shows the plaintext.
        let dbg = format!("{back:?}");
        assert!(!dbg.contains("access-sandbox") && !dbg.contains("other-secret"), "{dbg}");
        // NULL stays None.
        on_conn!(db, |c| diesel::insert_into(secrets::table)
            .values(&Secret { id: 2, token: Encrypted::new(""), other: None })
            .execute(c)
            .unwrap());
        let empty = load(db, 2).unwrap();
        assert!(empty.other.is_none());
        assert_eq!(empty.token.expose(), b"");
    }
}

both_backends! {
    fn reads_legacy_fernet_and_previous_key_values(db: &TestDb) {
        setup(db);
        raw_insert(db, 1, SPEC_FERNET_TOKEN);
        let old = keys().old.encrypt(b"before-rotation", SecretToken::AAD.as_bytes()).unwrap();
        raw_insert(db, 2, &old);
        assert_eq!(load(db, 1).unwrap().token.expose_str(), Some("hello"));
        assert_eq!(load(db, 2).unwrap().token.expose_str(), Some("before-rotation"));
        // Writing back re-encrypts under the primary key.
        on_conn!(db, |c| diesel::update(secrets::table.find(2))
            .set(secrets::token.eq(Encrypted::<SecretToken>::new("after")))
            .execute(c)
            .unwrap());
        let stored = raw_token(db, 2);
        assert!(!keys().keyring.needs_reencryption(&stored));
        assert_ne!(stored, old);
    }
}

both_backends! {
    fn ciphertext_moved_to_another_column_does_not_decrypt(db: &TestDb) {
        setup(db);
        on_conn!(db, |c| diesel::insert_into(secrets::table)
            .values(&Secret { id: 1, token: Encrypted::new("top-secret-value"), other: None })
            .execute(c)
            .unwrap());
        let ct = raw_token(db, 1);
        on_conn!(db, |c| diesel::update(secrets::table.find(1))
            .set(secrets::other.eq(Some(ct)))
            .execute(c)
            .unwrap());
        let err = load(db, 1).unwrap_err();
        // Diesel wraps our error ("Error deserializing field 'other'"): walk the chain.
        let mut msg = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            msg.push_str(" / ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        assert!(msg.contains("secrets.other"), "{msg}");
        assert!(!msg.contains("top-secret-value"), "{msg}");
        // The intact column still reads.
        let token: Encrypted<SecretToken> = on_conn!(db, |c| secrets::table
            .find(1)
            .select(secrets::token)
            .first(c)
            .unwrap());
        assert_eq!(token.expose_str(), Some("top-secret-value"));
    }
}

both_backends! {
    fn sealed_values_with_an_explicit_keyring_and_row_aad(db: &TestDb) {
        setup(db);
        let k = &keys().keyring;
        let sealed = Sealed::<SecretToken>::seal_for_row(k, b"row-bound", 5).unwrap();
        on_conn!(db, |c| diesel::insert_into(secrets::table)
            .values((secrets::id.eq(5_i64), secrets::token.eq(&sealed)))
            .execute(c)
            .unwrap());
        let loaded: Sealed<SecretToken> = on_conn!(db, |c| secrets::table
            .find(5)
            .select(secrets::token)
            .first(c)
            .unwrap());
        assert_eq!(&*loaded.open_for_row(k, 5).unwrap(), b"row-bound");
        assert!(matches!(loaded.open_for_row(k, 6), Err(Error::Decrypt { .. })));
        assert!(matches!(loaded.open(k), Err(Error::Decrypt { .. })), "column-only AAD differs");
        // Loading it as a column-bound Encrypted fails too (row-bound AAD).
        assert!(load(db, 5).is_err());
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        secret -> Text,
        legacy -> Text,
    }
}

encrypted_column!(
    /// `api_keys.secret`: never Fernet.
    ApiSecret => api_keys::secret, fernet = false
);
encrypted_column!(
    /// `api_keys.legacy`: Fernet accepted (the default).
    ApiLegacy = "api_keys"."legacy"
);

both_backends! {
    /// Issue 9 item 14: a column declared with `fernet = false` never
    /// accepts a Fernet token, though the default keyring has its key; the
    /// failure is the opaque decryption error. Its own values still read.
    fn a_column_without_fernet_refuses_fernet_tokens(db: &TestDb) {
        keys();
        db.exec("CREATE TABLE api_keys (id BIGINT PRIMARY KEY, secret TEXT NOT NULL, legacy TEXT NOT NULL)");
        const { assert!(!ApiSecret::ACCEPTS_FERNET && ApiLegacy::ACCEPTS_FERNET) };
        on_conn!(db, |c| diesel::insert_into(api_keys::table)
            .values((
                api_keys::id.eq(1_i64),
                api_keys::secret.eq(SPEC_FERNET_TOKEN),
                api_keys::legacy.eq(SPEC_FERNET_TOKEN),
            ))
            .execute(c)
            .unwrap());
        let legacy: Encrypted<ApiLegacy> = on_conn!(db, |c| api_keys::table
            .find(1)
            .select(api_keys::legacy)
            .first(c)
            .unwrap());
        assert_eq!(legacy.expose_str(), Some("hello"));
        let refused: QueryResult<Encrypted<ApiSecret>> = on_conn!(db, |c| api_keys::table
            .find(1)
            .select(api_keys::secret)
            .first(c));
        let err = refused.unwrap_err();
        let mut cause = std::error::Error::source(&err);
        let mut found = false;
        while let Some(e) = cause {
            if let Some(Error::Decrypt { column, cause: inner }) = e.downcast_ref::<Error>() {
                assert_eq!(column, "api_keys.secret");
                assert_eq!(*inner, manna_crypto::DecryptError::Authentication);
                found = true;
            }
            cause = e.source();
        }
        assert!(found, "{err}");
        assert!(!format!("{err:?}").contains("hello"));
        let sealed: Sealed<ApiSecret> = on_conn!(db, |c| api_keys::table
            .find(1)
            .select(api_keys::secret)
            .first(c)
            .unwrap());
        assert!(matches!(sealed.open(&keys().keyring), Err(Error::Decrypt { .. })));
        assert!(matches!(sealed.open_for_row(&keys().keyring, 1), Err(Error::Decrypt { .. })));

        // The column's own values read and write as usual.
        on_conn!(db, |c| diesel::update(api_keys::table.find(1))
            .set(api_keys::secret.eq(Encrypted::<ApiSecret>::new("sk-live-1")))
            .execute(c)
            .unwrap());
        let own: Encrypted<ApiSecret> = on_conn!(db, |c| api_keys::table
            .find(1)
            .select(api_keys::secret)
            .first(c)
            .unwrap());
        assert_eq!(own.expose_str(), Some("sk-live-1"));
    }
}

#[test]
fn second_install_is_refused() {
    keys();
    let again = manna_store_diesel::install_default_keyring(manna_crypto::Keyring::new(
        manna_crypto::AesKey::generate(),
    ));
    assert!(matches!(again, Err(Error::KeyringAlreadyInstalled)));
    assert!(manna_store_diesel::default_keyring().is_some());
}

both_backends! {
    fn binary_columns_store_the_binary_envelope(db: &TestDb) {
        keys();
        let blob = if db.is_pg() { "BYTEA" } else { "BLOB" };
        db.exec(&format!("CREATE TABLE blobs (id BIGINT PRIMARY KEY, secret {blob} NOT NULL)"));
        on_conn!(db, |c| diesel::insert_into(blobs::table)
            .values(&Blob { id: 1, secret: Encrypted::new(vec![0_u8, 159, 146, 150]) })
            .execute(c)
            .unwrap());
        let raw: Vec<u8> = on_conn!(db, |c| blobs::table.find(1).select(blobs::secret).first(c).unwrap());
        assert!(raw.len() > 4 && !raw.windows(4).any(|w| w == [0, 159, 146, 150]));
        let back: Blob = on_conn!(db, |c| blobs::table.find(1).first(c).unwrap());
        assert_eq!(back.secret.expose(), &[0, 159, 146, 150]);
        // A legacy text token stored as bytes still reads.
        on_conn!(db, |c| diesel::insert_into(blobs::table)
            .values((blobs::id.eq(2_i64), blobs::secret.eq(SPEC_FERNET_TOKEN.as_bytes())))
            .execute(c)
            .unwrap());
        let legacy: Blob = on_conn!(db, |c| blobs::table.find(2).first(c).unwrap());
        assert_eq!(legacy.secret.expose(), b"hello");
    }
}

diesel::table! {
    /// Rust names differ from the SQL names.
    #[sql_name = "plaid_items"]
    items (id) {
        id -> BigInt,
        #[sql_name = "access_token"]
        token -> Text,
    }
}

encrypted_column!(
    /// `plaid_items.access_token`, declared through Rust names.
    ItemToken => items::token
);

#[derive(Insertable)]
#[diesel(table_name = items)]
struct Item {
    id: i64,
    token: Encrypted<ItemToken>,
}

both_backends! {
    fn sql_names_bind_the_aad_so_the_migrator_reads_what_the_app_wrote(db: &TestDb) {
        use manna_migrate::{ColumnRef, ColumnStore, IdRange};
        keys();
        db.exec("CREATE TABLE plaid_items (id BIGINT PRIMARY KEY, access_token TEXT NOT NULL)");
        assert_eq!(ItemToken::AAD, "plaid_items.access_token");
        on_conn!(db, |c| diesel::insert_into(items::table)
            .values(&Item { id: 1, token: Encrypted::new("access-sandbox-9") })
            .execute(c)
            .unwrap());
        // The migrator's view: SQL names, ColumnRef's AAD.
        let col = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
        let store = manna_store_diesel::DieselStore::new(db.pool().clone());
        let rows = store.scan(&col, &IdRange::all(), 10).unwrap();
        assert_eq!(rows.len(), 1);
        let stored = rows[0].value.text().unwrap();
        let pt = keys().keyring.decrypt(stored, col.aad().as_bytes()).unwrap();
        assert_eq!(pt.to_str().unwrap(), "access-sandbox-9");
        // The Rust names are not the AAD.
        assert!(keys().keyring.decrypt(stored, b"items.token").is_err());
        // And what the migrator writes, the application reads.
        let sealed = keys().keyring.encrypt(b"from-the-migrator", col.aad().as_bytes()).unwrap();
        on_conn!(db, |c| diesel::update(items::table.find(1))
            .set(items::token.eq(&sealed))
            .execute(c)
            .unwrap());
        let back: Encrypted<ItemToken> = on_conn!(db, |c| items::table
            .find(1)
            .select(items::token)
            .first(c)
            .unwrap());
        assert_eq!(back.expose_str(), Some("from-the-migrator"));
    }
}
