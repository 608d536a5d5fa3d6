//! Test databases for the CLI's end-to-end tests: a fresh PostgreSQL schema
//! or SQLite file per test, seeded with legacy values.

use manna_store_diesel::diesel::connection::SimpleConnection;
use manna_store_diesel::diesel::sql_types::{Array, BigInt, Nullable, Text};
use manna_store_diesel::diesel::{
    self, Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection,
};
use manna_store_diesel::testing;

pub(crate) use manna_lock_redis::testing::redis_test_url as redis_url;
pub(crate) use manna_store_diesel::testing::unique_name as unique;

/// An `(id, value)` row of a test table.
#[derive(QueryableByName)]
pub(crate) struct IdValue {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) value: Option<String>,
}

/// One test's database (`manna_store_diesel::testing::TestDb`: a fresh
/// PostgreSQL schema or SQLite file) with the CLI tests' seeding and reading.
pub(crate) struct TestDb(testing::TestDb);

impl std::ops::Deref for TestDb {
    type Target = testing::TestDb;

    fn deref(&self) -> &testing::TestDb {
        &self.0
    }
}

impl TestDb {
    pub(crate) fn postgres() -> TestDb {
        TestDb(testing::TestDb::postgres())
    }

    pub(crate) fn sqlite() -> TestDb {
        TestDb(testing::TestDb::sqlite())
    }

    /// Runs `pg` or `lite` on a new connection of its own to the database.
    fn with<R>(
        &self,
        pg: impl FnOnce(&mut PgConnection) -> R,
        lite: impl FnOnce(&mut SqliteConnection) -> R,
    ) -> R {
        let url = self.url();
        if self.is_pg() {
            pg(&mut PgConnection::establish(url).expect("connect"))
        } else {
            lite(
                &mut SqliteConnection::establish(url.trim_start_matches("sqlite://"))
                    .expect("open sqlite"),
            )
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
