use std::sync::Arc;

use manna_lock::testing::{conformance, FakeLockBackend};
use manna_lock::LockBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_passes_the_conformance_suite() {
    let shared: Arc<dyn LockBackend> = Arc::new(FakeLockBackend::new());
    conformance::run_all(&move || Arc::clone(&shared)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_backend_passes_on_a_current_thread_runtime() {
    let shared: Arc<dyn LockBackend> = Arc::new(FakeLockBackend::new());
    conformance::run_all(&move || Arc::clone(&shared)).await;
}
