//! Test support (feature `testing`): finding the PostgreSQL server that
//! integration tests run against, and [`TestDb`], a database of its own for
//! each test (used by this crate's tests and the `manna` CLI's).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::{DbConnection, DbPool, PoolOptions};

/// Servers tried in order when `MANNA_TEST_PG_URL` is not set.
pub const PG_TEST_CANDIDATES: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://root@127.0.0.1:5432/test",
];

/// The URL of the PostgreSQL server tests use: `MANNA_TEST_PG_URL`, else the
/// first of [`PG_TEST_CANDIDATES`] that accepts a connection. Checked once
/// per process.
///
/// # Panics
/// When no server answers, with a message saying what to start: a test that
/// needs PostgreSQL fails loudly rather than passing by skipping.
pub fn pg_test_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let candidates: Vec<String> = match std::env::var("MANNA_TEST_PG_URL") {
            Ok(u) => vec![u],
            Err(_) => PG_TEST_CANDIDATES.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut reasons = Vec::new();
        for url in &candidates {
            match PgConnection::establish(url) {
                Ok(_) => return url.clone(),
                Err(e) => reasons.push(format!("{}: {e}", manna_lock::redact::redact_url(url))),
            }
        }
        panic!(
            "PostgreSQL is not reachable ({}). These tests need a server on 127.0.0.1:5432 with \
             trust auth for user postgres or root and a database `test`: start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (or run \
             `bash .ci/run`, which starts it), or set MANNA_TEST_PG_URL.",
            reasons.join("; ")
        )
    })
}

/// A name no other test (of this run or another process) uses:
/// `PREFIX_PID_N_NANOS`, safe as an SQL identifier when `prefix` is.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database for one test, removed when dropped: on PostgreSQL a fresh
/// schema on [`pg_test_url`]'s server (the URL makes it the search path), on
/// SQLite a file in a new temporary directory. Tests run in parallel without
/// colliding.
///
/// Every constructor and helper panics on failure: it is test setup.
pub struct TestDb {
    backend: Backend,
    url: String,
    pool: OnceLock<DbPool>,
}

enum Backend {
    Postgres {
        schema: String,
    },
    #[cfg(feature = "sqlite")]
    Sqlite {
        dir: tempfile::TempDir,
    },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("url", &manna_lock::redact::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// Loads the rows of `sql` on `db`'s backend (the row type is inferred).
macro_rules! load {
    ($db:expr, $sql:expr) => {
        match &mut $db.conn() {
            DbConnection::Postgres(c) => {
                RunQueryDsl::load(diesel::sql_query($sql), &mut **c).expect($sql)
            }
            #[cfg(feature = "sqlite")]
            DbConnection::Sqlite(c) => {
                RunQueryDsl::load(diesel::sql_query($sql), &mut **c).expect($sql)
            }
        }
    };
}

impl TestDb {
    /// A new schema on the test server ([`pg_test_url`]).
    ///
    /// # Panics
    /// When the server is unreachable or the schema cannot be created.
    pub fn postgres() -> TestDb {
        let base = pg_test_url();
        let schema = unique_name("manna_t");
        let mut admin = PgConnection::establish(base).expect("connect to the test server");
        admin
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .expect("create the test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        TestDb {
            backend: Backend::Postgres { schema },
            url,
            pool: OnceLock::new(),
        }
    }

    /// A new SQLite file, `test.db` in a new temporary directory.
    ///
    /// # Panics
    /// When the directory cannot be created.
    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb {
            backend: Backend::Sqlite { dir },
            url,
            pool: OnceLock::new(),
        }
    }

    /// The database's URL (PostgreSQL: with this test's schema as the search
    /// path), for pools, connections and `manna` processes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the PostgreSQL database.
    pub fn is_pg(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// A pool on the database (up to 10 connections), opened on first use.
    ///
    /// # Panics
    /// When the pool cannot connect.
    pub fn pool(&self) -> &DbPool {
        self.pool.get_or_init(|| {
            DbPool::connect(&self.url, &PoolOptions::default().max_size(10))
                .expect("open the test database")
        })
    }

    /// A connection from [`pool`](Self::pool).
    ///
    /// # Panics
    /// When no connection can be had.
    pub fn conn(&self) -> DbConnection {
        self.pool()
            .get()
            .expect("a connection to the test database")
    }

    /// Runs SQL (setup only; tests never build SQL from input).
    ///
    /// # Panics
    /// When the statement fails, naming it.
    pub fn exec(&self, sql: &str) {
        self.conn().batch_execute(sql).expect(sql);
    }

    /// A new pool on the same database, as another process would open: on
    /// SQLite through another spelling of the file's path (`dir/./test.db`).
    ///
    /// # Panics
    /// When the pool cannot connect.
    pub fn reopen(&self) -> DbPool {
        let url = match &self.backend {
            Backend::Postgres { .. } => self.url.clone(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { dir } => {
                format!(
                    "sqlite://{}",
                    dir.path().join(".").join("test.db").display()
                )
            }
        };
        DbPool::connect(&url, &PoolOptions::default().max_size(4))
            .expect("reopen the test database")
    }

    /// A pool on another database of the same backend: PostgreSQL's
    /// `postgres` database, or another SQLite file next to this one.
    ///
    /// # Panics
    /// When the pool cannot connect.
    pub fn other_database(&self) -> DbPool {
        let url = match &self.backend {
            Backend::Postgres { .. } => {
                let base = pg_test_url();
                let (head, query) = base.split_once('?').unwrap_or((base, ""));
                let server = head.rsplit_once('/').map_or(head, |(server, _db)| server);
                let sep = if query.is_empty() { "" } else { "?" };
                format!("{server}/postgres{sep}{query}")
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { dir } => {
                format!("sqlite://{}", dir.path().join("other.db").display())
            }
        };
        DbPool::connect(&url, &PoolOptions::default().max_size(2))
            .expect("open another database on the test server")
    }

    /// `BIGSERIAL`/`INTEGER PRIMARY KEY` as the backend spells an auto id.
    pub fn serial(&self) -> &'static str {
        if self.is_pg() {
            "BIGSERIAL PRIMARY KEY"
        } else {
            "INTEGER PRIMARY KEY"
        }
    }

    /// The `BIGINT` column `v` of the first row `sql` returns.
    ///
    /// # Panics
    /// When the query fails or returns no row.
    pub fn scalar_i64(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct R {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            v: i64,
        }
        let rows: Vec<R> = load!(self, sql);
        rows.first().map(|r| r.v).expect(sql)
    }

    /// The nullable text column `v` of the first row `sql` returns (`None`
    /// also when there is no row).
    ///
    /// # Panics
    /// When the query fails.
    pub fn scalar_text(&self, sql: &str) -> Option<String> {
        #[derive(diesel::QueryableByName)]
        struct R {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            v: Option<String>,
        }
        let rows: Vec<R> = load!(self, sql);
        rows.into_iter().next().and_then(|r| r.v)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Postgres { schema } => {
                if let Ok(mut admin) = PgConnection::establish(pg_test_url()) {
                    let _ =
                        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
                }
            }
            // The temporary directory removes itself.
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { .. } => {}
        }
    }
}
