use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use manna_lock::testing::conformance;
use manna_lock::LockBackend;

use crate::support::{bounded, shared_clients};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_conformance_suite() {
    let clients: Vec<Arc<dyn LockBackend>> = shared_clients(4)
        .await
        .into_iter()
        .map(|c| c as Arc<dyn LockBackend>)
        .collect();
    let next = AtomicUsize::new(0);
    let make = move || Arc::clone(&clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()]);
    bounded(120, conformance::run_all(&make)).await;
}
