//! Overhead of `RetryPolicy` on the no-conflict path, next to calling the
//! operation directly.
//!
//! `cargo bench -p manna-lock --bench retry`
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use manna_lock::{ConflictError, RetryPolicy};

fn op(x: u64) -> Result<u64, ConflictError> {
    Ok(black_box(x).wrapping_mul(31).wrapping_add(7))
}

fn no_conflict(c: &mut Criterion) {
    let policy = RetryPolicy::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("retry_no_conflict");
    g.bench_function("direct", |b| b.iter(|| op(black_box(3))));
    g.bench_function("retry_sync", |b| {
        b.iter(|| policy.retry(|| op(black_box(3))))
    });
    g.bench_function("direct_async", |b| {
        b.to_async(&rt).iter(|| async { op(black_box(3)) })
    });
    g.bench_function("retry_async", |b| {
        b.to_async(&rt)
            .iter(|| policy.retry_async(|| async { op(black_box(3)) }))
    });
    g.finish();
}

criterion_group!(benches, no_conflict);
criterion_main!(benches);
