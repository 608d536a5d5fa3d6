//! Databases for the tests.

use std::sync::OnceLock;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use manna_store_diesel::{DbConnection, DbPool, PoolOptions};

pub(crate) fn pg_base_url() -> &'static str {
    manna_store_diesel::testing::pg_test_url()
}

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

/// A database for one test; dropped (PostgreSQL schema / SQLite file) at the end.
pub(crate) enum TestDb {
    Pg {
        pool: DbPool,
        url: String,
        schema: String,
    },
    Sqlite {
        pool: DbPool,
        url: String,
        _dir: tempfile::TempDir,
    },
}

impl TestDb {
    pub(crate) fn postgres() -> TestDb {
        let base = pg_base_url();
        let schema = format!("manna_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(base).unwrap();
        admin
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        let pool = DbPool::connect(&url, &PoolOptions::default().max_size(10)).unwrap();
        TestDb::Pg { pool, url, schema }
    }

    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let pool = DbPool::connect(&url, &PoolOptions::default().max_size(10)).unwrap();
        TestDb::Sqlite {
            pool,
            url,
            _dir: dir,
        }
    }

    pub(crate) fn pool(&self) -> &DbPool {
        match self {
            TestDb::Pg { pool, .. } | TestDb::Sqlite { pool, .. } => pool,
        }
    }

    /// A new pool on the same database, as another process would open: on
    /// SQLite through another spelling of the file's path (`dir/./test.db`).
    pub(crate) fn reopen(&self) -> DbPool {
        let url = match self {
            TestDb::Pg { url, .. } => url.clone(),
            TestDb::Sqlite { _dir, .. } => {
                format!(
                    "sqlite://{}",
                    _dir.path().join(".").join("test.db").display()
                )
            }
        };
        DbPool::connect(&url, &PoolOptions::default().max_size(4)).unwrap()
    }

    /// A pool on another database of the same backend: PostgreSQL's
    /// `postgres` database, or another SQLite file next to this one.
    pub(crate) fn other_database(&self) -> DbPool {
        let url = match self {
            TestDb::Pg { .. } => {
                let base = pg_base_url();
                let (head, query) = base.split_once('?').map_or((base, ""), |(h, q)| (h, q));
                let (server, _db) = head.rsplit_once('/').unwrap();
                let sep = if query.is_empty() { "" } else { "?" };
                format!("{server}/postgres{sep}{query}")
            }
            TestDb::Sqlite { _dir, .. } => {
                format!("sqlite://{}", _dir.path().join("other.db").display())
            }
        };
        DbPool::connect(&url, &PoolOptions::default().max_size(2)).unwrap()
    }

    /// The database's URL (PostgreSQL: with this test's schema as the
    /// search path), for opening more pools on it.
    pub(crate) fn url(&self) -> &str {
        match self {
            TestDb::Pg { url, .. } | TestDb::Sqlite { url, .. } => url,
        }
    }

    pub(crate) fn conn(&self) -> DbConnection {
        self.pool().get().unwrap()
    }

    pub(crate) fn is_pg(&self) -> bool {
        matches!(self, TestDb::Pg { .. })
    }

    /// Runs SQL (setup only; tests never build SQL from input).
    pub(crate) fn exec(&self, sql: &str) {
        self.conn().batch_execute(sql).unwrap();
    }

    /// `BIGSERIAL`/`INTEGER PRIMARY KEY` as the backend spells an auto id.
    pub(crate) fn serial(&self) -> &'static str {
        if self.is_pg() {
            "BIGSERIAL PRIMARY KEY"
        } else {
            "INTEGER PRIMARY KEY"
        }
    }

    pub(crate) fn scalar_i64(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct R {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            v: i64,
        }
        let rows: Vec<R> = on_conn!(self, |c| diesel::RunQueryDsl::load(
            diesel::sql_query(sql),
            c
        )
        .unwrap());
        rows[0].v
    }

    pub(crate) fn scalar_text(&self, sql: &str) -> Option<String> {
        #[derive(diesel::QueryableByName)]
        struct R {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            v: Option<String>,
        }
        let rows: Vec<R> = on_conn!(self, |c| diesel::RunQueryDsl::load(
            diesel::sql_query(sql),
            c
        )
        .unwrap());
        rows.into_iter().next().and_then(|r| r.v)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Pg { schema, .. } = self {
            if let Ok(mut admin) = PgConnection::establish(pg_base_url()) {
                let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
            }
        }
    }
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
