//! Test databases for the CLI's end-to-end tests: a fresh PostgreSQL schema
//! or SQLite file per test, seeded with legacy values.

use std::sync::atomic::{AtomicU32, Ordering};

use manna_store_diesel::diesel::connection::SimpleConnection;
use manna_store_diesel::diesel::sql_types::{Array, BigInt, Nullable, Text};
use manna_store_diesel::diesel::{
    self, Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection,
};

/// The PostgreSQL server the tests use; panics with what to start if none answers.
pub(crate) fn pg_base_url() -> &'static str {
    manna_store_diesel::testing::pg_test_url()
}

/// Redis for lock tests; panics with what to start if it does not answer.
pub(crate) fn redis_url() -> String {
    let url = std::env::var("MANNA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    if std::net::TcpStream::connect(&addr).is_err() {
        panic!(
            "Redis is not reachable at {addr}. Start it: `redis-server --daemonize yes --port 6379 \
             --save '' --appendonly no`, or run `bash .ci/run`; or set MANNA_TEST_REDIS_URL."
        );
    }
    url
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (of this run or another) uses: `PREFIX_PID_N_NANOS`.
pub(crate) fn unique(prefix: &str) -> String {
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

/// An `(id, value)` row of a test table.
#[derive(QueryableByName)]
pub(crate) struct IdValue {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) value: Option<String>,
}

/// One test's database.
pub(crate) enum TestDb {
    Pg {
        url: String,
        schema: String,
    },
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
}

impl TestDb {
    pub(crate) fn postgres() -> TestDb {
        let base = pg_base_url();
        let schema = unique("manna_e2e");
        let mut admin = PgConnection::establish(base).expect("connect");
        admin
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        TestDb::Pg { url, schema }
    }

    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("e2e.db").display());
        TestDb::Sqlite { url, _dir: dir }
    }

    pub(crate) fn url(&self) -> &str {
        match self {
            TestDb::Pg { url, .. } | TestDb::Sqlite { url, .. } => url,
        }
    }

    pub(crate) fn is_pg(&self) -> bool {
        matches!(self, TestDb::Pg { .. })
    }

    fn with<R>(
        &self,
        pg: impl FnOnce(&mut PgConnection) -> R,
        lite: impl FnOnce(&mut SqliteConnection) -> R,
    ) -> R {
        match self {
            TestDb::Pg { url, .. } => pg(&mut PgConnection::establish(url).expect("connect")),
            TestDb::Sqlite { url, .. } => lite(
                &mut SqliteConnection::establish(url.trim_start_matches("sqlite://"))
                    .expect("open sqlite"),
            ),
        }
    }

    pub(crate) fn execute(&self, sql: &str) {
        self.with(
            |c| c.batch_execute(sql).expect(sql),
            |c| c.batch_execute(sql).expect(sql),
        )
    }

    /// Creates `table (id BIGINT PRIMARY KEY, secret TEXT, version INTEGER)` holding `values`
    /// at ids 1..=n.
    pub(crate) fn create_table(&self, table: &str, values: &[Option<String>]) {
        self.execute(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, secret TEXT, \
             version INTEGER NOT NULL DEFAULT 1)"
        ));
        for (chunk_no, chunk) in values.chunks(5_000).enumerate() {
            let ids: Vec<i64> = (0..chunk.len())
                .map(|i| (chunk_no * 5_000 + i + 1) as i64)
                .collect();
            let vals: Vec<Option<String>> = chunk.to_vec();
            self.with(
                |c| {
                    diesel::sql_query(format!(
                        "INSERT INTO {table} (id, secret) SELECT * FROM unnest($1::bigint[], $2::text[])"
                    ))
                    .bind::<Array<BigInt>, _>(&ids)
                    .bind::<Array<Nullable<Text>>, _>(&vals)
                    .execute(c)
                    .expect("insert");
                },
                |c| {
                    c.transaction::<_, diesel::result::Error, _>(|c| {
                        for (id, v) in ids.iter().zip(&vals) {
                            diesel::sql_query(format!(
                                "INSERT INTO {table} (id, secret) VALUES (?, ?)"
                            ))
                            .bind::<BigInt, _>(id)
                            .bind::<Nullable<Text>, _>(v)
                            .execute(c)?;
                        }
                        Ok(())
                    })
                    .expect("insert");
                },
            );
        }
    }

    /// Every `(id, secret)` of `table`, by id.
    pub(crate) fn rows(&self, table: &str) -> Vec<(i64, Option<String>)> {
        let sql = format!("SELECT id, secret AS value FROM {table} ORDER BY id");
        let rows: Vec<IdValue> = self.with(
            |c| diesel::sql_query(&sql).load(c).expect("select"),
            |c| diesel::sql_query(&sql).load(c).expect("select"),
        );
        rows.into_iter().map(|r| (r.id, r.value)).collect()
    }

    /// Sets one row's value (an application write).
    pub(crate) fn update(&self, table: &str, id: i64, value: &str) -> usize {
        self.with(
            |c| {
                diesel::sql_query(format!("UPDATE {table} SET secret = $1 WHERE id = $2"))
                    .bind::<Text, _>(value)
                    .bind::<BigInt, _>(id)
                    .execute(c)
                    .expect("update")
            },
            |c| {
                diesel::sql_query(format!("UPDATE {table} SET secret = ? WHERE id = ?"))
                    .bind::<Text, _>(value)
                    .bind::<BigInt, _>(id)
                    .execute(c)
                    .expect("update")
            },
        )
    }

    /// Rows in the checkpoint table (0 when it does not exist).
    pub(crate) fn checkpoint_rows(&self) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let sql = "SELECT COUNT(*) AS n FROM manna_migration_checkpoints";
        self.with(
            |c| {
                diesel::sql_query(sql)
                    .get_result::<N>(c)
                    .map(|r| r.n)
                    .unwrap_or(0)
            },
            |c| {
                diesel::sql_query(sql)
                    .get_result::<N>(c)
                    .map(|r| r.n)
                    .unwrap_or(0)
            },
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Pg { schema, .. } = self {
            if let Ok(mut c) = PgConnection::establish(pg_base_url()) {
                let _ = c.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
            }
        }
    }
}
