//! The in-memory store passes the conformance suite, and the suite catches stores that break the contract.

use std::panic::{catch_unwind, AssertUnwindSafe};

use manna_store::testing::conformance::{self, Harness, TableSpec};
use manna_store::testing::{MemoryHarness, MemoryStore};
use manna_store::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Fence, IdKind, IdRange,
    LayoutKey, PrefixCensus, Rewrite, Row, RowId, StoreError, WriteOptions,
};

#[test]
fn memory_store_passes_the_suite() {
    conformance::run_all(&mut MemoryHarness::new());
}

/// A store that writes without comparing: the suite must catch it.
struct Clobbering(MemoryStore);

impl ColumnStore for Clobbering {
    fn identity(&self) -> Result<String, StoreError> {
        self.0.identity()
    }
    fn census(&self, c: &ColumnRef, r: &IdRange) -> Result<PrefixCensus, StoreError> {
        self.0.census(c, r)
    }
    fn scan_unprefixed(
        &self,
        c: &ColumnRef,
        r: &IdRange,
        l: usize,
        p: &str,
    ) -> Result<Vec<Row>, StoreError> {
        self.0.scan_unprefixed(c, r, l, p)
    }
    fn raise_fence(&self, c: &ColumnRef, f: &Fence) -> Result<(), StoreError> {
        self.0.raise_fence(c, f)
    }
    fn checkpoints(&self, c: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.0.checkpoints(c)
    }
    fn load_layout(&self, k: &LayoutKey) -> Result<Option<Vec<RowId>>, StoreError> {
        self.0.load_layout(k)
    }
    fn save_layout(&self, k: &LayoutKey, b: &[RowId]) -> Result<Vec<RowId>, StoreError> {
        self.0.save_layout(k, b)
    }
    fn check_column(&self, c: &ColumnRef) -> Result<ColumnInfo, StoreError> {
        self.0.check_column(c)
    }
    fn count(&self, c: &ColumnRef, r: &IdRange) -> Result<u64, StoreError> {
        self.0.count(c, r)
    }
    fn split(&self, c: &ColumnRef, p: u32) -> Result<Vec<IdRange>, StoreError> {
        self.0.split(c, p)
    }
    fn scan(&self, c: &ColumnRef, r: &IdRange, l: usize) -> Result<Vec<Row>, StoreError> {
        self.0.scan(c, r, l)
    }
    fn read(&self, c: &ColumnRef, ids: &[RowId]) -> Result<Vec<Row>, StoreError> {
        self.0.read(c, ids)
    }
    fn write_batch(
        &self,
        c: &ColumnRef,
        rewrites: &[Rewrite],
        o: WriteOptions,
        cp: Option<&Checkpoint>,
        f: Option<&Fence>,
    ) -> Result<Vec<RowId>, StoreError> {
        let mut ids = Vec::new();
        for rw in rewrites {
            if self.0.value(c, rw.id.clone()).is_some() {
                self.0.insert(c, rw.id.clone(), Some(rw.new.clone()));
                ids.push(rw.id.clone());
            }
        }
        self.0.write_batch(c, &[], o, cp, f)?;
        Ok(ids)
    }
    fn load_checkpoint(&self, k: &CheckpointKey) -> Result<Option<Checkpoint>, StoreError> {
        self.0.load_checkpoint(k)
    }
    fn clear_checkpoint(&self, k: &CheckpointKey) -> Result<(), StoreError> {
        self.0.clear_checkpoint(k)
    }
}

struct ClobberingHarness {
    inner: MemoryHarness,
    store: Clobbering,
}

impl Harness for ClobberingHarness {
    fn store(&self) -> &dyn ColumnStore {
        &self.store
    }
    fn create_table(&mut self, spec: &TableSpec) -> ColumnRef {
        self.inner.create_table(spec)
    }
    fn app_write(&mut self, c: &ColumnRef, id: &RowId, v: Option<&str>) {
        self.inner.app_write(c, id, v)
    }
    fn app_insert(&mut self, c: &ColumnRef, id: &RowId, v: Option<&str>) {
        self.inner.app_insert(c, id, v)
    }
    fn app_delete(&mut self, c: &ColumnRef, id: &RowId) {
        self.inner.app_delete(c, id)
    }
    fn version(&mut self, c: &ColumnRef, id: &RowId) -> Option<i64> {
        self.inner.version(c, id)
    }
    fn supports(&self, k: IdKind) -> bool {
        self.inner.supports(k)
    }
}

#[test]
fn the_suite_catches_a_store_without_compare_and_set() {
    let inner = MemoryHarness::new();
    let store = Clobbering(inner.memory().clone());
    let mut h = ClobberingHarness { inner, store };
    let err = catch_unwind(AssertUnwindSafe(|| {
        conformance::write_batch_compare_and_set(&mut h)
    }))
    .expect_err("a clobbering store must fail the suite");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("conformance check write_batch_compare_and_set failed"),
        "{msg}"
    );
}
