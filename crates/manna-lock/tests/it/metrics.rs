//! The metrics the crate records, through a debugging recorder.

use std::sync::Arc;
use std::time::Duration;

use manna_lock::{
    metric_names as m, ConflictError, LockBackend, LockManager, MemoryBackend, RetryPolicy,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// One snapshot (taking a snapshot drains the recorder's counters).
fn snapshot(snapshotter: &Snapshotter) -> Vec<(String, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect()
}

fn counter(snapshot: &[(String, DebugValue)], name: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn samples(snapshot: &[(String, DebugValue)], name: &str) -> usize {
    snapshot
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| match value {
            DebugValue::Histogram(v) => v.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[test]
fn retry_counts_conflicts_retries_and_exhaustion() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let policy = RetryPolicy::new()
            .base_delay(Duration::from_micros(10))
            .max_retries(3);
        let mut n = 0;
        let ok: Result<(), ConflictError> = policy.retry(|| {
            n += 1;
            if n <= 2 {
                Err(ConflictError::row_changed("t", "1"))
            } else {
                Ok(())
            }
        });
        assert!(ok.is_ok());
        let failed: Result<(), ConflictError> = policy
            .clone()
            .max_retries(1)
            .retry(|| Err(ConflictError::row_gone("t", "2")));
        assert!(failed.is_err());
    });
    let snap = snapshot(&snapshotter);
    assert_eq!(counter(&snap, m::CONFLICTS), 2 + 2);
    assert_eq!(counter(&snap, m::CONFLICT_RETRIES), 2 + 1);
    assert_eq!(counter(&snap, m::CONFLICT_RETRIES_EXHAUSTED), 1);
}

#[test]
fn lock_manager_counts_acquisitions_contention_renewals_and_lost_leases() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let backend = Arc::new(MemoryBackend::new());
            let locks = LockManager::new(backend.clone());
            let g = locks
                .acquire("a", Duration::from_secs(3), Duration::ZERO)
                .await
                .unwrap();
            let timeout = locks
                .acquire("a", Duration::from_secs(3), Duration::from_secs(1))
                .await;
            assert!(timeout.unwrap_err().is_timeout());
            // Three TTLs: renewed every second.
            tokio::time::sleep(Duration::from_secs(9)).await;
            assert!(!g.is_lost());
            // Take the lease away: the next renewal finds out.
            assert!(backend.release(g.lease()).await.unwrap());
            g.lost().await;
            assert!(!g.release().await.unwrap());
        });
    });
    let snap = snapshot(&snapshotter);
    assert_eq!(counter(&snap, m::ACQUISITIONS), 1);
    assert_eq!(counter(&snap, m::TIMEOUTS), 1);
    assert_eq!(counter(&snap, m::CONTENDED), 1);
    assert_eq!(samples(&snap, m::WAIT_SECONDS), 1);
    assert!(
        counter(&snap, m::RENEWALS) >= 8,
        "renewed every TTL/3 for 9 s"
    );
    assert_eq!(counter(&snap, m::LOST), 1);
    assert_eq!(samples(&snap, m::HELD_SECONDS), 1);
}
