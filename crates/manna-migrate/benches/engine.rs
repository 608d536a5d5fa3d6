//! Engine throughput on the in-memory store: what the pipeline costs on top
//! of the crypto itself (the database's share is measured on PostgreSQL by
//! the root benches).
//!
//! `cargo bench -p manna-migrate --bench engine`
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use manna_lock::LockManager;
use manna_migrate::testing::strategies::{TestKeys, ValueKind};
use manna_migrate::{AadMode, BlockingLocks, ColumnRef, Migrator, Options};
use manna_store::testing::MemoryStore;

const ROWS: usize = 5_000;

fn seeded(column: &ColumnRef, template: &MemoryStore) -> MemoryStore {
    let store = MemoryStore::new();
    store.create_table(column, manna_migrate::IdKind::Int, &[], true);
    for row in template.rows(column) {
        store.insert_value(column, row.id, row.value);
    }
    store
}

fn bench(c: &mut Criterion) {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let column = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
    let template = MemoryStore::new();
    let rows: Vec<_> = (0..ROWS)
        .map(|i| (ValueKind::Fernet, format!("access-sandbox-{i:08}")))
        .collect();
    keys.seed(&template, &column, AadMode::Column, &rows);
    let tokens: Vec<String> = template
        .rows(&column)
        .into_iter()
        .filter_map(|r| r.value.text().map(str::to_owned))
        .collect();
    let locks = Arc::new(BlockingLocks::with_own_runtime(LockManager::in_memory()).unwrap());

    let mut g = c.benchmark_group("migrate");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    // Baseline: the crypto alone, one row after the other (decrypt Fernet,
    // encrypt AES-256-GCM, decrypt again to verify).
    g.bench_function("crypto_only/5000", |b| {
        b.iter(|| {
            for t in &tokens {
                let p = keyring.decrypt(t, b"").unwrap();
                let n = keyring.encrypt(&p, b"plaid_items.access_token").unwrap();
                let q = keyring.decrypt(&n, b"plaid_items.access_token").unwrap();
                assert_eq!(p.as_bytes(), q.as_bytes());
            }
        })
    });
    for workers in [1usize, 2] {
        g.bench_function(format!("engine_workers_{workers}/5000"), |b| {
            b.iter_batched(
                || seeded(&column, &template),
                |store| {
                    let mut o = Options::default();
                    o.workers = workers;
                    o.batch_size = 500;
                    let report = Migrator::new(Arc::new(store), keyring.clone())
                        .options(o)
                        .locks(locks.clone())
                        .run(std::slice::from_ref(&column))
                        .unwrap();
                    assert_eq!(report.columns[0].migrated, ROWS as u64);
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
