//! PostgreSQL benchmarks of the store's write paths, baseline in each group.
//!
//! - `update_by_pk`: a versioned update (`version = version + 1` matching id
//!   and expected version, `RETURNING version`) vs a plain Diesel update by
//!   primary key. Target: ≤ 1.15×. Also under `synchronous_commit = off`
//!   (`update_by_pk_async_commit`), where the WAL flush no longer hides the
//!   statements' own cost.
//! - `batch_cas_1000`: re-writing 1,000 ciphertexts with compare-and-set on
//!   the old value (+ version bump): manna's single `UPDATE … FROM unnest(…)`
//!   with the checkpoint upsert in the same transaction, vs the Python peer's
//!   shape (`migrate_peer.py`: psycopg2 `execute_batch` of per-row `UPDATE …
//!   WHERE id=%s AND access_token=%s`, one commit per batch) reproduced in
//!   Rust two ways: 1,000 prepared per-row UPDATEs in one transaction, and one
//!   multi-statement string as `execute_batch` sends it.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (database `test`, user root or
//! postgres, or `MANNA_TEST_PG_URL`); works in a schema of its own.
//! Run: `cargo bench -p manna-store-diesel --bench store`.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use manna_migrate::{
    Checkpoint, CheckpointKey, ColumnRef, ColumnStore, Counts, Rewrite, RowId, WriteOptions,
};
use manna_store_diesel::{Changes, DbPool, DieselStore, PoolOptions, VersionedTable};

diesel::table! {
    bench_accounts (id) {
        id -> BigInt,
        balance -> BigInt,
        version -> Integer,
    }
}

const ROWS: i64 = 1_000;

/// A schema of this run's own on the test server
/// (`manna_store_diesel::testing::pg_test_url`), as `(url, schema)`.
fn pg_url() -> (String, String) {
    let base = manna_store_diesel::testing::pg_test_url();
    let schema = format!("manna_bench_{}", std::process::id());
    PgConnection::establish(base)
        .unwrap()
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    )
}

fn token(i: i64, gen: u64) -> String {
    // Ciphertext-sized values (~120 characters), distinct per row and generation.
    format!("gen{gen:08}-row{i:08}-{}", "x".repeat(100))
}

fn benches(c: &mut Criterion) {
    let (url, schema) = pg_url();
    let mut conn = PgConnection::establish(&url).unwrap();
    conn.batch_execute(&format!(
        "CREATE TABLE bench_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, version INTEGER NOT NULL DEFAULT 1);
         INSERT INTO bench_accounts (id, balance) VALUES (1, 0);
         CREATE TABLE items (id BIGSERIAL PRIMARY KEY, token TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1);
         INSERT INTO items (token) SELECT 'gen00000000-row' || lpad(g::text, 8, '0') || '-' || repeat('x', 100) FROM generate_series(1, {ROWS}) g;"
    ))
    .unwrap();
    conn.batch_execute("ANALYZE items").unwrap();

    // --- versioned vs plain update by primary key ---
    // Twice: with the server's default durable commits (each update waits for
    // a WAL flush, which dominates and is noisy on a shared machine), and with
    // `synchronous_commit = off`, which leaves the statements' own cost.
    let table = VersionedTable::new("bench_accounts").unwrap();
    let mut n = 0_i64;
    for (group, sync) in [("update_by_pk", "on"), ("update_by_pk_async_commit", "off")] {
        conn.batch_execute(&format!("SET synchronous_commit = {sync}"))
            .unwrap();
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        g.bench_function("plain_diesel", |b| {
            b.iter(|| {
                n += 1;
                diesel::update(bench_accounts::table.find(1_i64))
                    .set(bench_accounts::balance.eq(n))
                    .execute(&mut conn)
                    .unwrap()
            })
        });
        let mut version: i64 = bench_accounts::table
            .find(1_i64)
            .select(bench_accounts::version)
            .first::<i32>(&mut conn)
            .unwrap()
            .into();
        g.bench_function("versioned", |b| {
            b.iter(|| {
                n += 1;
                let changes = Changes::new().set("balance", n).unwrap();
                version = table.update(&mut conn, 1_i64, version, &changes).unwrap();
                black_box(version)
            })
        });
        g.finish();
    }
    conn.batch_execute("SET synchronous_commit = on").unwrap();

    // --- batch compare-and-set of 1,000 rows ---
    let pool = DbPool::connect(&url, &PoolOptions::default().max_size(2)).unwrap();
    let store = DieselStore::new(pool);
    let col = ColumnRef::parse("items.token", "id").unwrap();
    store.check_column(&col).unwrap();
    let mut gen: u64 = 0;
    let mut next_batch = || {
        let rewrites: Vec<Rewrite> = (1..=ROWS)
            .map(|i| Rewrite {
                id: RowId::Int(i),
                old: token(i, gen),
                new: token(i, gen + 1),
            })
            .collect();
        gen += 1;
        rewrites
    };
    let key = CheckpointKey {
        column: "items.token".into(),
        partition: "bench".into(),
        run: "aes256gcm".into(),
    };
    let mut g = c.benchmark_group("batch_cas_1000");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(20);
    g.bench_function("manna_unnest_one_statement", |b| {
        b.iter_batched(
            &mut next_batch,
            |rw| {
                let cp = Checkpoint {
                    key: key.clone(),
                    last_id: Some(RowId::Int(ROWS)),
                    counts: Counts::default(),
                };
                let written = store
                    .write_batch(&col, &rw, WriteOptions::bump_version(true), Some(&cp), None)
                    .unwrap();
                assert_eq!(written.len(), ROWS as usize);
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("peer_shape_prepared_per_row", |b| {
        b.iter_batched(
            &mut next_batch,
            |rw| {
                conn.transaction::<_, diesel::result::Error, _>(|conn| {
                    let mut written = 0;
                    for r in &rw {
                        let RowId::Int(id) = r.id else { unreachable!() };
                        written += diesel::sql_query(
                            "UPDATE items SET token = $1, version = version + 1 WHERE id = $2 AND token = $3",
                        )
                        .bind::<diesel::sql_types::Text, _>(&r.new)
                        .bind::<diesel::sql_types::BigInt, _>(id)
                        .bind::<diesel::sql_types::Text, _>(&r.old)
                        .execute(conn)?;
                    }
                    assert_eq!(written, ROWS as usize);
                    Ok(())
                })
                .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("peer_shape_execute_batch", |b| {
        b.iter_batched(
            &mut next_batch,
            |rw| {
                // What psycopg2's execute_batch sends: the statements joined
                // into one string with the values quoted in (test data only).
                let mut sql = String::with_capacity(rw.len() * 320);
                sql.push_str("BEGIN;");
                for r in &rw {
                    let RowId::Int(id) = r.id else { unreachable!() };
                    sql.push_str(&format!(
                        "UPDATE items SET token='{}', version=version+1 WHERE id={id} AND token='{}';",
                        r.new.replace('\'', "''"),
                        r.old.replace('\'', "''")
                    ));
                }
                sql.push_str("COMMIT;");
                conn.batch_execute(&sql).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    if let Ok(mut admin) = PgConnection::establish(url.split('?').next().unwrap_or(&url)) {
        let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}

criterion_group! {
    name = store;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = benches
}
criterion_main!(store);
