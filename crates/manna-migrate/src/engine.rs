//! The run: lock, checkpoint, scan → plan/encrypt → compare-and-set write
//! pipeline, census, report.

use std::collections::{BTreeMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use manna_crypto::{inspect, Format, Keyring};
use manna_lock::LockError;

use crate::error::MigrateError;
use crate::lock::{layout_lock_name, migration_lock_name, BlockingLocks, HeldLock, MigrationLocks};
use crate::options::{CancelToken, Mode, Options, Target};
use crate::plan::{Depth, Outcome, Planner};
use crate::progress::{BatchProgress, NoProgress, Progress};
use crate::report::{Census, CensusKind, ColumnReport, Report, Status};
use crate::store::{
    Checkpoint, CheckpointKey, ColumnRef, ColumnStore, Counts, IdRange, Rewrite, Row, RowId,
    WriteOptions,
};

/// Names of the metrics the engine records through the `metrics` facade.
/// Every one carries a `column` label (`TABLE.COLUMN`).
pub mod metric_names {
    /// Counter: rows scanned.
    pub const ROWS_SCANNED: &str = "manna_migrate_rows_scanned_total";
    /// Counter: rows rewritten.
    pub const ROWS_MIGRATED: &str = "manna_migrate_rows_migrated_total";
    /// Counter: rows already in the target format (or `NULL`).
    pub const ROWS_UNCHANGED: &str = "manna_migrate_rows_unchanged_total";
    /// Counter: compare-and-set misses (rows changed concurrently).
    pub const CONFLICTS: &str = "manna_migrate_conflicts_total";
    /// Counter: rows that cannot be decrypted (also labelled `reason`).
    pub const ROWS_FAILED: &str = "manna_migrate_rows_failed_total";
    /// Histogram: seconds per batch (plan, encrypt, write).
    pub const BATCH_SECONDS: &str = "manna_migrate_batch_seconds";
    /// Gauge: the batch size in use.
    pub const BATCH_SIZE: &str = "manna_migrate_batch_size";
    /// Gauge: rows per second scanned by the current run.
    pub const ROWS_PER_SECOND: &str = "manna_migrate_rows_per_second";
    /// Gauge: rows of the partition not yet processed (lag behind target).
    pub const ROWS_REMAINING: &str = "manna_migrate_rows_remaining";
}

/// Runs migrations, dry-runs and verifications over columns of a
/// [`ColumnStore`].
///
/// - **Plan** each value: `NULL` or already in the target format →
///   unchanged; decryptable (Fernet, an older AES key, plaintext when the
///   keyring accepts it) → re-encrypted; anything else → failed, recorded by
///   row id and left untouched.
/// - **Write safety**: each new value is decrypted again and compared with
///   the old plaintext; writes are compare-and-set on the old value, one
///   store call per batch; misses are counted as conflicts, re-read and
///   re-planned once. Versions are not bumped unless
///   [`Options::bump_version`].
/// - **One migrator per partition**: a lock named by
///   [`migration_lock_name`](crate::migration_lock_name) is held while
///   writing; a lost lease stops the run at the next batch boundary.
/// - **Resumable**: a checkpoint commits with each batch; [`Options::restart`]
///   clears it; the [`CancelToken`] stops at a batch boundary.
/// - **Pipeline**: the calling thread scans (keyset pagination) while
///   [`Options::workers`] threads decrypt, encrypt and write, so crypto is off
///   the database's critical path.
///
/// Call [`Migrator::run`] from a plain thread (or `spawn_blocking`), not from
/// inside an async task: it blocks.
pub struct Migrator {
    store: Arc<dyn ColumnStore>,
    keyring: Keyring,
    options: Options,
    locks: Option<Arc<dyn MigrationLocks>>,
    progress: Arc<dyn Progress>,
    cancel: CancelToken,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("options", &self.options)
            .field("primary_key_id", &self.keyring.primary_key_id())
            .finish_non_exhaustive()
    }
}

impl Migrator {
    /// A migrator with default [`Options`] (migrate to AES-256-GCM,
    /// column-bound AAD), the process-wide in-memory locks, no progress
    /// output and a fresh cancellation token.
    pub fn new(store: Arc<dyn ColumnStore>, keyring: Keyring) -> Self {
        Migrator {
            store,
            keyring,
            options: Options::default(),
            locks: None,
            progress: Arc::new(NoProgress),
            cancel: CancelToken::new(),
        }
    }

    /// Sets the options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Sets the locks (e.g. [`BlockingLocks`] over a Redis-backed
    /// [`manna_lock::LockManager`] to exclude other machines).
    pub fn locks(mut self, locks: Arc<dyn MigrationLocks>) -> Self {
        self.locks = Some(locks);
        self
    }

    /// Sets the progress sink.
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Uses `token` for cancellation (e.g. one a Ctrl-C handler cancels).
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// The cancellation token of this migrator.
    pub fn cancel_handle(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// The options in use.
    pub fn current_options(&self) -> &Options {
        &self.options
    }

    /// The keyring in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn ColumnStore> {
        &self.store
    }

    pub(crate) fn check_options(&self) -> Result<(), MigrateError> {
        self.options
            .validate()
            .map_err(MigrateError::InvalidOptions)?;
        if self.options.target == Target::Fernet && !self.keyring.has_fernet() {
            return Err(MigrateError::NoFernetKey);
        }
        Ok(())
    }

    /// Runs the configured mode over `columns`, one after the other.
    ///
    /// Returns the report when every column either completed or was stopped
    /// cleanly (cancelled, lease lost: later columns are then
    /// [`Status::NotStarted`]). Errors stop the run; the checkpoint of the
    /// last committed batch is kept.
    pub fn run(&self, columns: &[ColumnRef]) -> Result<Report, MigrateError> {
        self.check_options()?;
        let mut report = Report::new(self.options.mode, self.options.target);
        let mut stopped = false;
        for column in columns {
            if stopped || self.cancel.is_cancelled() {
                report.columns.push(self.not_started(column));
                continue;
            }
            let r = self.run_column(column)?;
            stopped = r.status != Status::Completed;
            report.columns.push(r);
        }
        Ok(report)
    }

    fn not_started(&self, column: &ColumnRef) -> ColumnReport {
        ColumnReport {
            table: column.table.to_string(),
            column: column.column.to_string(),
            total: 0,
            by_format: Census::default(),
            migrated: 0,
            unchanged: 0,
            conflicts: 0,
            failed: Vec::new(),
            elapsed_s: 0.0,
            rows_per_s: 0.0,
            null: 0,
            scanned: 0,
            pending: 0,
            failure_kinds: BTreeMap::new(),
            status: Status::NotStarted,
            census: CensusKind::Processed,
            shard: self.options.shard.to_string(),
            resumed: false,
            batch_size: self.options.batch_size,
        }
    }

    /// Runs the configured mode over one column.
    pub fn run_column(&self, column: &ColumnRef) -> Result<ColumnReport, MigrateError> {
        self.check_options()?;
        let started = Instant::now();
        let info = self
            .store
            .check_column(column)
            .map_err(|e| MigrateError::store(column, e))?;
        let writes = self.options.mode.writes();
        if writes && self.options.bump_version && !info.has_version {
            return Err(MigrateError::NoVersionColumn {
                column: column.to_string(),
            });
        }
        let held = if writes {
            let name = migration_lock_name(column, self.options.shard);
            Some(self.acquire(column, &name)?)
        } else {
            None
        };
        let result = self.run_held(column, held.as_deref(), started);
        if let Some(held) = held {
            let name = held.name().to_owned();
            match held.release() {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(lock = %name, "migration lock was already lost when released")
                }
                Err(e) => {
                    tracing::warn!(lock = %name, error = %e, "releasing the migration lock failed; it expires after its TTL")
                }
            }
        }
        if let Ok(r) = &result {
            self.progress.on_finish(column, r);
        }
        result
    }

    fn lock_backend(&self) -> Arc<dyn MigrationLocks> {
        match &self.locks {
            Some(l) => Arc::clone(l),
            None => Arc::new(BlockingLocks::process_default().clone()),
        }
    }

    fn acquire(&self, column: &ColumnRef, name: &str) -> Result<Box<dyn HeldLock>, MigrateError> {
        self.lock_backend().acquire(name).map_err(|e| match e {
            LockError::Timeout { .. } => MigrateError::Locked {
                column: column.to_string(),
                lock: name.to_owned(),
            },
            other => MigrateError::Lock {
                column: column.to_string(),
                cause: other,
            },
        })
    }

    fn checkpoint_key(&self, column: &ColumnRef) -> CheckpointKey {
        let target = match self.options.target {
            Target::Aes256Gcm => format!("aes256gcm:{}", self.keyring.primary_key_id()),
            Target::Fernet => "fernet".to_owned(),
        };
        CheckpointKey {
            column: column.to_string(),
            partition: format!("shard {}", self.options.shard),
            target,
        }
    }

    fn run_held(
        &self,
        column: &ColumnRef,
        held: Option<&dyn HeldLock>,
        started: Instant,
    ) -> Result<ColumnReport, MigrateError> {
        let o = &self.options;
        let writes = o.mode.writes();
        let st = |e| MigrateError::store(column, e);
        let range = self.shard_range(column)?;
        let key = self.checkpoint_key(column);
        let mut resumed = None;
        if writes {
            if o.restart {
                self.store.clear_checkpoint(&key).map_err(st)?;
            } else {
                resumed = self.store.load_checkpoint(&key).map_err(st)?;
            }
        }
        let (resume_after, base) = resumed
            .as_ref()
            .map(|c| (c.last_id.clone(), c.counts))
            .unwrap_or_default();
        let total = match &range {
            Some(r) => self.store.count(column, r).map_err(st)?,
            None => 0,
        };
        if let Some(id) = &resume_after {
            tracing::info!(%column, resume_after = %id, done = base.scanned, "resuming from checkpoint");
        }
        self.progress.on_start(column, total, base.scanned);
        let planner = Planner::new(&self.keyring, o.target, o.aad, column);
        let mut run = match &range {
            Some(r) => {
                let scan = r.resumed_after(resume_after.clone());
                self.pipeline(column, &planner, &scan, held, &key, base, total)?
            }
            None => Run::new(
                o.batch_size,
                Status::Completed,
                Checkpoint {
                    key: key.clone(),
                    last_id: None,
                    counts: base,
                },
            ),
        };
        if writes {
            match run.status {
                Status::Completed => {}
                Status::Cancelled => {
                    // Save how far the finished batches got, so the next run
                    // continues right there.
                    self.store
                        .write_batch(column, &[], WriteOptions::default(), Some(&run.watermark))
                        .map_err(st)?;
                }
                _ => {}
            }
        }
        let census_kind = if !writes {
            CensusKind::AsFound
        } else if run.status == Status::Completed && range.is_some() {
            // A run that covered the whole partition in one go knows how it
            // left every row; a resumed one rescans to count the rows done
            // before the checkpoint (and list those that failed then).
            if let (Some(r), true) = (&range, o.census_after || resumed.is_some()) {
                let fin = self.final_census(column, &planner, r)?;
                run.census = fin.census;
                run.nulls = fin.nulls;
                run.pending = fin.pending;
                run.failed = fin.failed;
                run.failure_kinds = fin.failure_kinds;
            }
            CensusKind::After
        } else {
            CensusKind::Processed
        };
        if writes && run.status == Status::Completed {
            self.store.clear_checkpoint(&key).map_err(st)?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        run.failed.sort();
        run.failed.dedup();
        let total = match census_kind {
            CensusKind::After => run.census.total() + run.nulls,
            CensusKind::AsFound => run.counts.scanned,
            CensusKind::Processed => total,
        };
        let all = {
            let mut c = base;
            c += run.counts;
            c
        };
        Ok(ColumnReport {
            table: column.table.to_string(),
            column: column.column.to_string(),
            total,
            by_format: run.census,
            migrated: all.migrated,
            unchanged: all.unchanged,
            conflicts: all.conflicts,
            failed: run.failed,
            elapsed_s: elapsed,
            rows_per_s: if elapsed > 0.0 {
                run.counts.scanned as f64 / elapsed
            } else {
                0.0
            },
            null: run.nulls,
            scanned: run.counts.scanned,
            pending: run.pending,
            failure_kinds: run.failure_kinds,
            status: run.status,
            census: census_kind,
            shard: o.shard.to_string(),
            resumed: resumed.is_some(),
            batch_size: run.batch_size,
        })
    }

    // ---- shards -------------------------------------------------------

    /// This shard's key range (`None`: the layout has fewer ranges than
    /// shards and this one is empty).
    ///
    /// With more than one shard the boundaries are chosen once from
    /// [`ColumnStore::split`] and saved in the checkpoint table (under a
    /// lock), so every machine uses the same ones whatever rows were added
    /// since: any set of boundaries partitions the whole key space, so no
    /// row falls between shards.
    fn shard_range(&self, column: &ColumnRef) -> Result<Option<IdRange>, MigrateError> {
        let shards = self.options.shard.count;
        if shards <= 1 {
            return Ok(Some(IdRange::all()));
        }
        let bounds = match self.load_layout(column, shards)? {
            Some(b) => b,
            None if self.options.mode.writes() => {
                let held = self.acquire_layout_lock(column)?;
                let result = match self.load_layout(column, shards) {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => self.create_layout(column, shards),
                    Err(e) => Err(e),
                };
                if let Err(e) = held.release() {
                    tracing::warn!(error = %e, "releasing the layout lock failed");
                }
                result?
            }
            // Read-only modes never write: an unsaved layout is computed
            // for this run only.
            None => self.compute_layout(column, shards)?,
        };
        let i = self.options.shard.index as usize;
        if i > bounds.len() {
            return Ok(None);
        }
        Ok(Some(IdRange {
            after: if i == 0 {
                None
            } else {
                Some(bounds[i - 1].clone())
            },
            until: bounds.get(i).cloned(),
        }))
    }

    fn acquire_layout_lock(&self, column: &ColumnRef) -> Result<Box<dyn HeldLock>, MigrateError> {
        // Other shards may be creating the layout right now; it takes a few
        // store calls, so wait for them a while.
        let name = layout_lock_name(column);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.acquire(column, &name) {
                Err(MigrateError::Locked { .. }) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn layout_key(column: &ColumnRef, shards: u32, bound: Option<u64>) -> CheckpointKey {
        CheckpointKey {
            column: column.to_string(),
            partition: match bound {
                None => format!("layout {shards}"),
                Some(k) => format!("layout {shards} bound {k}"),
            },
            target: "layout".to_owned(),
        }
    }

    fn load_layout(
        &self,
        column: &ColumnRef,
        shards: u32,
    ) -> Result<Option<Vec<RowId>>, MigrateError> {
        let st = |e| MigrateError::store(column, e);
        let Some(marker) = self
            .store
            .load_checkpoint(&Self::layout_key(column, shards, None))
            .map_err(st)?
        else {
            return Ok(None);
        };
        let mut bounds = Vec::new();
        for k in 0..marker.counts.scanned {
            let b = self
                .store
                .load_checkpoint(&Self::layout_key(column, shards, Some(k)))
                .map_err(st)?
                .and_then(|c| c.last_id)
                .ok_or_else(|| MigrateError::Layout {
                    column: column.to_string(),
                    shards,
                    reason: format!("boundary {k} is missing"),
                })?;
            bounds.push(b);
        }
        Ok(Some(bounds))
    }

    fn compute_layout(&self, column: &ColumnRef, shards: u32) -> Result<Vec<RowId>, MigrateError> {
        let ranges = self
            .store
            .split(column, shards)
            .map_err(|e| MigrateError::store(column, e))?;
        let mut bounds: Vec<RowId> = ranges.into_iter().filter_map(|r| r.until).collect();
        bounds.sort();
        bounds.dedup();
        bounds.truncate(shards as usize - 1);
        Ok(bounds)
    }

    fn create_layout(&self, column: &ColumnRef, shards: u32) -> Result<Vec<RowId>, MigrateError> {
        let st = |e| MigrateError::store(column, e);
        let bounds = self.compute_layout(column, shards)?;
        for (k, b) in bounds.iter().enumerate() {
            let ck = Checkpoint {
                key: Self::layout_key(column, shards, Some(k as u64)),
                last_id: Some(b.clone()),
                counts: Counts::default(),
            };
            self.store
                .write_batch(column, &[], WriteOptions::default(), Some(&ck))
                .map_err(st)?;
        }
        // The marker goes last: a layout without it was never used.
        let marker = Checkpoint {
            key: Self::layout_key(column, shards, None),
            last_id: None,
            counts: Counts {
                scanned: bounds.len() as u64,
                ..Counts::default()
            },
        };
        self.store
            .write_batch(column, &[], WriteOptions::default(), Some(&marker))
            .map_err(st)?;
        tracing::info!(%column, shards, boundaries = bounds.len(), "saved shard layout");
        Ok(bounds)
    }

    // ---- the pipeline -------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        range: &IdRange,
        held: Option<&dyn HeldLock>,
        key: &CheckpointKey,
        base: Counts,
        total: u64,
    ) -> Result<Run, MigrateError> {
        let o = &self.options;
        let shared = Shared {
            stop: AtomicBool::new(false),
            lease_lost: AtomicBool::new(false),
            error: Mutex::new(None),
            watermark: Mutex::new(Watermark {
                key: key.clone(),
                next_seq: 0,
                last_id: range.after.clone(),
                counts: base,
                done: BTreeMap::new(),
            }),
        };
        let mut sizer = Sizer::new(o);
        let run_started = Instant::now();
        let mut agg = Run::new(
            o.batch_size,
            Status::Completed,
            Checkpoint {
                key: key.clone(),
                last_id: None,
                counts: base,
            },
        );
        let column_label = column.to_string();
        let (work_tx, work_rx) = mpsc::sync_channel::<Batch>(o.workers);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<BatchResult>();
        let mut status = Status::Completed;
        let mut panicked = false;
        thread::scope(|s| {
            let mut handles = Vec::with_capacity(o.workers);
            for _ in 0..o.workers {
                let tx = done_tx.clone();
                let (shared, work_rx) = (&shared, &work_rx);
                handles.push(s.spawn(move || {
                    self.worker(column, planner, held, work_rx, &tx, shared);
                }));
            }
            drop(done_tx);
            let mut after = range.after.clone();
            let mut seq = 0u64;
            let mut dispatched = 0u64;
            let mut absorb = |r: BatchResult, sizer: &mut Sizer| {
                sizer.adapt(r.counts.scanned, r.elapsed);
                agg.absorb(&r);
                let rate =
                    agg.counts.scanned as f64 / run_started.elapsed().as_secs_f64().max(1e-9);
                let done = base.scanned + agg.counts.scanned;
                metrics::gauge!(metric_names::BATCH_SIZE, "column" => column_label.clone())
                    .set(sizer.size as f64);
                metrics::gauge!(metric_names::ROWS_PER_SECOND, "column" => column_label.clone())
                    .set(rate);
                metrics::gauge!(metric_names::ROWS_REMAINING, "column" => column_label.clone())
                    .set(total.saturating_sub(done) as f64);
                let mut so_far = base;
                so_far += agg.counts;
                self.progress.on_batch(
                    column,
                    &BatchProgress {
                        batch: r.counts,
                        so_far,
                        done,
                        total,
                        rows_per_s: rate,
                        batch_size: sizer.size,
                    },
                );
            };
            loop {
                while let Ok(r) = done_rx.try_recv() {
                    absorb(r, &mut sizer);
                }
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                if self.cancel.is_cancelled() {
                    status = Status::Cancelled;
                    break;
                }
                if held.is_some_and(|h| h.is_lost()) {
                    shared.lease_lost.store(true, Ordering::SeqCst);
                    break;
                }
                let mut limit = sizer.size;
                if let Some(rate) = o.max_rows_per_sec {
                    limit = limit
                        .min(usize::try_from(rate).unwrap_or(usize::MAX))
                        .max(1);
                    if !self.throttle(dispatched, rate, run_started) {
                        status = Status::Cancelled;
                        break;
                    }
                }
                let rows = match self
                    .store
                    .scan(column, &range.resumed_after(after.clone()), limit)
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        shared.fail(MigrateError::store(column, e));
                        break;
                    }
                };
                let Some(last) = rows.last() else { break };
                after = Some(last.id.clone());
                dispatched += rows.len() as u64;
                if work_tx.send(Batch { seq, rows }).is_err() {
                    break;
                }
                seq += 1;
            }
            if status != Status::Completed || shared.lease_lost.load(Ordering::SeqCst) {
                // Batches queued but not started are dropped: they are past
                // the checkpoint and the next run does them.
                shared.stop.store(true, Ordering::SeqCst);
            }
            drop(work_tx);
            for r in done_rx.iter() {
                absorb(r, &mut sizer);
            }
            for h in handles {
                if h.join().is_err() {
                    panicked = true;
                }
            }
        });
        if panicked {
            return Err(MigrateError::WorkerPanicked {
                column: column.to_string(),
            });
        }
        if let Some(e) = lock(&shared.error).take() {
            return Err(e);
        }
        if shared.lease_lost.load(Ordering::SeqCst) {
            status = Status::LeaseLost;
            tracing::error!(%column, "migration lock lease lost: stopped at a batch boundary; the next run continues from the checkpoint");
        }
        agg.status = status;
        agg.batch_size = sizer.size;
        agg.watermark = lock(&shared.watermark).checkpoint();
        Ok(agg)
    }

    /// Sleeps until `dispatched` rows are within `rate` rows/s since
    /// `started`; `false` if cancelled meanwhile.
    fn throttle(&self, dispatched: u64, rate: u64, started: Instant) -> bool {
        let due = Duration::from_secs_f64(dispatched as f64 / rate as f64);
        loop {
            if self.cancel.is_cancelled() {
                return false;
            }
            let now = started.elapsed();
            if now >= due {
                return true;
            }
            thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }

    fn worker(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        held: Option<&dyn HeldLock>,
        work: &Mutex<Receiver<Batch>>,
        done: &Sender<BatchResult>,
        shared: &Shared,
    ) {
        loop {
            // Checking the stop flag while holding the receiver keeps the
            // processed batches a prefix of the dispatched ones: once a
            // batch is skipped, every later one is too.
            let batch = {
                let rx = lock(work);
                match rx.recv() {
                    Ok(b) if !shared.stop.load(Ordering::SeqCst) => b,
                    Ok(_) => continue,
                    Err(_) => return,
                }
            };
            // A panic (a bug) must not leave the scanner blocked on a full
            // queue: it becomes an error and the worker keeps draining.
            let processed = panic::catch_unwind(AssertUnwindSafe(|| {
                self.process(column, planner, held, batch, shared)
            }))
            .unwrap_or_else(|_| {
                Err(MigrateError::WorkerPanicked {
                    column: column.to_string(),
                })
            });
            match processed {
                Ok(Some(r)) => {
                    // The coordinator only stops listening once every worker is done.
                    let _ = done.send(r);
                }
                Ok(None) => {}
                Err(e) => shared.fail(e),
            }
        }
    }

    /// Plans and (in migrate mode) writes one batch. `None` when the lease
    /// was found lost before writing.
    fn process(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        held: Option<&dyn HeldLock>,
        batch: Batch,
        shared: &Shared,
    ) -> Result<Option<BatchResult>, MigrateError> {
        let started = Instant::now();
        let o = &self.options;
        let st = |e| MigrateError::store(column, e);
        let depth = match o.mode {
            Mode::Migrate => Depth::Rewrite,
            Mode::VerifyOnly => Depth::Verify,
            _ => Depth::Classify,
        };
        let Some(end) = batch.rows.last().map(|r| r.id.clone()) else {
            return Ok(None);
        };
        let mut r = BatchResult {
            seq: batch.seq,
            counts: Counts {
                scanned: batch.rows.len() as u64,
                ..Counts::default()
            },
            census: Census::default(),
            nulls: 0,
            pending: 0,
            failed: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let mut rewrites = Vec::new();
        for row in batch.rows {
            let outcome = planner.plan(&row, depth);
            if let Some(rw) = r.record(column, row, outcome) {
                rewrites.push(rw);
            }
        }
        if o.mode.writes() {
            if held.is_some_and(|h| h.is_lost()) {
                shared.lease_lost.store(true, Ordering::SeqCst);
                shared.stop.store(true, Ordering::SeqCst);
                return Ok(None);
            }
            let target = planner.target_format();
            let options = WriteOptions::bump_version(o.bump_version);
            let checkpoint = lock(&shared.watermark).checkpoint();
            let written = self
                .store
                .write_batch(column, &rewrites, options, Some(&checkpoint))
                .map_err(st)?;
            let missed = r.settle(&rewrites, &written, target);
            if !missed.is_empty() {
                // Changed underneath (by the application, most likely to the
                // new format already): re-read and re-plan once.
                tracing::debug!(%column, conflicts = missed.len(), "re-reading rows changed during the batch");
                let fresh = self.store.read(column, &missed).map_err(st)?;
                let mut again = Vec::new();
                for row in fresh {
                    let outcome = planner.plan(&row, Depth::Rewrite);
                    if let Some(rw) = r.record(column, row, outcome) {
                        again.push(rw);
                    }
                }
                if !again.is_empty() {
                    let written = self
                        .store
                        .write_batch(column, &again, options, None)
                        .map_err(st)?;
                    // Rows that changed yet again are left to the application
                    // (and to the next run): never overwritten.
                    r.settle(&again, &written, target);
                }
            }
        }
        r.elapsed = started.elapsed();
        lock(&shared.watermark).complete(r.seq, end, r.counts);
        let label = column.to_string();
        metrics::counter!(metric_names::ROWS_SCANNED, "column" => label.clone())
            .increment(r.counts.scanned);
        metrics::counter!(metric_names::ROWS_MIGRATED, "column" => label.clone())
            .increment(r.counts.migrated);
        metrics::counter!(metric_names::ROWS_UNCHANGED, "column" => label.clone())
            .increment(r.counts.unchanged);
        metrics::counter!(metric_names::CONFLICTS, "column" => label.clone())
            .increment(r.counts.conflicts);
        for (_, reason) in &r.failed {
            metrics::counter!(metric_names::ROWS_FAILED, "column" => label.clone(), "reason" => *reason)
                .increment(1);
        }
        metrics::histogram!(metric_names::BATCH_SECONDS, "column" => label)
            .record(r.elapsed.as_secs_f64());
        tracing::debug!(%column, seq = r.seq, rows = r.counts.scanned, migrated = r.counts.migrated,
            conflicts = r.counts.conflicts, failed = r.counts.failed, elapsed = ?r.elapsed, "batch done");
        Ok(Some(r))
    }

    /// A read-only scan of `range` after a completed migration: the census
    /// as it is now and every row that still fails.
    fn final_census(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        range: &IdRange,
    ) -> Result<FinalCensus, MigrateError> {
        let mut fin = FinalCensus::default();
        let mut after = range.after.clone();
        loop {
            let rows = self
                .store
                .scan(
                    column,
                    &range.resumed_after(after.clone()),
                    self.options.max_batch_size,
                )
                .map_err(|e| MigrateError::store(column, e))?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id.clone());
            for row in &rows {
                let Some(value) = row.value.as_deref() else {
                    fin.nulls += 1;
                    continue;
                };
                let format = inspect(value);
                fin.census.add(format);
                if planner.in_target(format) {
                    continue;
                }
                match planner.plan(row, Depth::Classify) {
                    Outcome::Failed { reason, .. } => {
                        fin.failed.push(row.id.clone());
                        *fin.failure_kinds.entry(reason.to_owned()).or_default() += 1;
                    }
                    Outcome::Pending { .. } => fin.pending += 1,
                    Outcome::Null | Outcome::Unchanged(_) => {}
                }
            }
        }
        Ok(fin)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A scanned batch handed to a worker.
struct Batch {
    seq: u64,
    rows: Vec<Row>,
}

/// What a worker did with a batch.
struct BatchResult {
    seq: u64,
    counts: Counts,
    census: Census,
    nulls: u64,
    pending: u64,
    failed: Vec<(RowId, &'static str)>,
    elapsed: Duration,
}

impl BatchResult {
    /// Records a planned row; returns the rewrite to attempt, if any.
    fn record(&mut self, column: &ColumnRef, row: Row, outcome: Outcome) -> Option<Rewrite> {
        match outcome {
            Outcome::Null => {
                self.nulls += 1;
                self.counts.unchanged += 1;
            }
            Outcome::Unchanged(format) => {
                self.census.add(format);
                self.counts.unchanged += 1;
            }
            Outcome::Pending { new: Some(new) } => {
                let old = row.value?;
                return Some(Rewrite {
                    id: row.id,
                    old,
                    new,
                });
            }
            Outcome::Pending { new: None } => {
                if let Some(v) = row.value.as_deref() {
                    self.census.add(inspect(v));
                }
                self.pending += 1;
            }
            Outcome::Failed { format, reason, .. } => {
                tracing::warn!(%column, id = %row.id, reason, "cannot decrypt value; left untouched");
                self.census.add(format);
                self.counts.failed += 1;
                self.failed.push((row.id, reason));
            }
        }
        None
    }

    /// Counts the outcome of a compare-and-set write; returns the ids missed.
    fn settle(&mut self, rewrites: &[Rewrite], written: &[RowId], target: Format) -> Vec<RowId> {
        let written: HashSet<&RowId> = written.iter().collect();
        let mut missed = Vec::new();
        for rw in rewrites {
            if written.contains(&rw.id) {
                self.counts.migrated += 1;
                self.census.add(target);
            } else {
                self.counts.conflicts += 1;
                missed.push(rw.id.clone());
            }
        }
        missed
    }
}

/// The aggregate of a pipeline run.
struct Run {
    counts: Counts,
    census: Census,
    nulls: u64,
    pending: u64,
    failed: Vec<RowId>,
    failure_kinds: BTreeMap<String, u64>,
    status: Status,
    batch_size: usize,
    watermark: Checkpoint,
}

impl Run {
    fn new(batch_size: usize, status: Status, watermark: Checkpoint) -> Self {
        Run {
            counts: Counts::default(),
            census: Census::default(),
            nulls: 0,
            pending: 0,
            failed: Vec::new(),
            failure_kinds: BTreeMap::new(),
            status,
            batch_size,
            watermark,
        }
    }

    fn absorb(&mut self, r: &BatchResult) {
        self.counts += r.counts;
        self.census.merge(&r.census);
        self.nulls += r.nulls;
        self.pending += r.pending;
        for (id, reason) in &r.failed {
            self.failed.push(id.clone());
            *self.failure_kinds.entry((*reason).to_owned()).or_default() += 1;
        }
    }
}

#[derive(Default)]
struct FinalCensus {
    census: Census,
    nulls: u64,
    pending: u64,
    failed: Vec<RowId>,
    failure_kinds: BTreeMap<String, u64>,
}

/// State shared by the coordinator and the workers.
struct Shared {
    stop: AtomicBool,
    lease_lost: AtomicBool,
    error: Mutex<Option<MigrateError>>,
    watermark: Mutex<Watermark>,
}

impl Shared {
    fn fail(&self, e: MigrateError) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The checkpoint: the end of the longest prefix of batches all done, with
/// their counts. Batches finish out of order with several workers; a batch's
/// write carries the watermark as it was before it, so a checkpoint never
/// claims a batch whose write has not committed.
struct Watermark {
    key: CheckpointKey,
    next_seq: u64,
    last_id: Option<RowId>,
    counts: Counts,
    done: BTreeMap<u64, (RowId, Counts)>,
}

impl Watermark {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            key: self.key.clone(),
            last_id: self.last_id.clone(),
            counts: self.counts,
        }
    }

    fn complete(&mut self, seq: u64, end: RowId, counts: Counts) {
        self.done.insert(seq, (end, counts));
        while let Some((end, counts)) = self.done.remove(&self.next_seq) {
            self.last_id = Some(end);
            self.counts += counts;
            self.next_seq += 1;
        }
    }
}

/// Adaptive batch size: aims each batch at the target time, changing by at
/// most ×2 per batch, within the bounds.
struct Sizer {
    size: usize,
    min: usize,
    max: usize,
    target: Duration,
    adaptive: bool,
}

impl Sizer {
    fn new(o: &Options) -> Self {
        Sizer {
            size: o.batch_size.clamp(o.min_batch_size, o.max_batch_size),
            min: o.min_batch_size,
            max: o.max_batch_size,
            target: o.target_batch_time,
            adaptive: o.adaptive,
        }
    }

    fn adapt(&mut self, rows: u64, elapsed: Duration) {
        if !self.adaptive || rows == 0 {
            return;
        }
        let current = self.size as f64;
        let per_row = elapsed.as_secs_f64() / rows as f64;
        let ideal = if per_row > 0.0 {
            self.target.as_secs_f64() / per_row
        } else {
            current * 2.0
        };
        // A short final batch says little about a full one: only grow from
        // batches that were (nearly) full.
        let ideal = if (rows as f64) < current / 2.0 {
            ideal.min(current)
        } else {
            ideal
        };
        let next = ideal
            .clamp(current / 2.0, current * 2.0)
            .clamp(self.min as f64, self.max as f64);
        self.size = next.round() as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CheckpointKey {
        CheckpointKey {
            column: "t.c".into(),
            partition: "shard 0/1".into(),
            target: "fernet".into(),
        }
    }

    #[test]
    fn watermark_advances_over_contiguous_batches_only() {
        let mut w = Watermark {
            key: key(),
            next_seq: 0,
            last_id: None,
            counts: Counts::default(),
            done: BTreeMap::new(),
        };
        let c = |n| Counts {
            scanned: n,
            ..Counts::default()
        };
        w.complete(1, RowId::Int(20), c(10));
        assert_eq!(w.checkpoint().last_id, None, "batch 0 not done yet");
        w.complete(0, RowId::Int(10), c(10));
        assert_eq!(w.checkpoint().last_id, Some(RowId::Int(20)));
        assert_eq!(w.checkpoint().counts.scanned, 20);
        w.complete(3, RowId::Int(40), c(5));
        assert_eq!(w.checkpoint().last_id, Some(RowId::Int(20)));
        w.complete(2, RowId::Int(30), c(5));
        assert_eq!(w.checkpoint().last_id, Some(RowId::Int(40)));
        assert_eq!(w.checkpoint().counts.scanned, 30);
    }

    fn sizer(adaptive: bool) -> Sizer {
        Sizer::new(&Options {
            batch_size: 100,
            min_batch_size: 10,
            max_batch_size: 1000,
            target_batch_time: Duration::from_millis(100),
            adaptive,
            ..Options::default()
        })
    }

    #[test]
    fn sizer_moves_toward_target_within_bounds() {
        let mut s = sizer(true);
        // 100 rows in 10 ms: 10x too fast, grows by at most 2x per batch.
        s.adapt(100, Duration::from_millis(10));
        assert_eq!(s.size, 200);
        for _ in 0..10 {
            s.adapt(s.size as u64, Duration::from_micros(100 * s.size as u64));
        }
        assert_eq!(s.size, 1000, "capped at max");
        // Now 1 s per batch: shrinks by at most half per batch, down to min.
        for _ in 0..20 {
            s.adapt(s.size as u64, Duration::from_secs(1));
        }
        assert_eq!(s.size, 10);
        // On target: stays.
        let mut s = sizer(true);
        s.adapt(100, Duration::from_millis(100));
        assert_eq!(s.size, 100);
        // A short last batch does not make it grow.
        s.adapt(3, Duration::from_micros(1));
        assert_eq!(s.size, 100);
    }

    #[test]
    fn sizer_fixed_when_not_adaptive() {
        let mut s = sizer(false);
        s.adapt(100, Duration::from_millis(1));
        assert_eq!(s.size, 100);
    }
}
