//! Databases for the tests.

use std::sync::OnceLock;

pub(crate) use manna_store_diesel::testing::TestDb;

/// Runs `body` with `c` bound to the concrete Diesel connection of `db`.
macro_rules! on_conn {
    ($db:expr, |$c:ident| $body:expr) => {{
        let mut __conn = $db.conn();
        match &mut __conn {
            manna_store_diesel::DbConnection::Postgres(p) => {
                let $c: &mut diesel::PgConnection = &mut **p;
                $body
            }
            manna_store_diesel::DbConnection::Sqlite(p) => {
                let $c: &mut diesel::SqliteConnection = &mut **p;
                $body
            }
            _ => unreachable!("both backends are enabled in tests"),
        }
    }};
}

/// Declares one test per backend: `mod NAME { fn postgres(); fn sqlite(); }`.
macro_rules! both_backends {
    ($(#[$m:meta])* fn $name:ident($db:ident: &TestDb) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($db: &$crate::support::TestDb) $body
            $(#[$m])*
            #[test]
            fn postgres() {
                run(&$crate::support::TestDb::postgres());
            }
            $(#[$m])*
            #[test]
            fn sqlite() {
                run(&$crate::support::TestDb::sqlite());
            }
        }
    };
}

/// The keys behind the process-wide default keyring of this test binary.
pub(crate) struct TestKeys {
    /// The keyring installed as default: primary, one previous AES key, the
    /// Fernet spec key.
    pub(crate) keyring: manna_crypto::Keyring,
    /// A keyring whose primary is the previous key (a value written before rotation).
    pub(crate) old: manna_crypto::Keyring,
}

/// Fernet key and token from the official Fernet spec
/// (the Fernet specification's `generate.json` test vector; src "hello").
pub(crate) const SPEC_FERNET_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
pub(crate) const SPEC_FERNET_TOKEN: &str = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

pub(crate) fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use manna_crypto::{AesKey, FernetKey, Keyring};
        let previous = AesKey::generate();
        let keyring = Keyring::builder()
            .primary(AesKey::generate())
            .previous(previous.clone())
            .fernet(FernetKey::from_base64(SPEC_FERNET_KEY).unwrap())
            .build()
            .unwrap();
        manna_store_diesel::install_default_keyring(keyring.clone()).unwrap();
        TestKeys {
            keyring,
            old: Keyring::new(previous),
        }
    })
}
