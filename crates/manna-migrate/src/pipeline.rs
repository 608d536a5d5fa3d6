//! One pass over a key range: the calling thread scans (keyset pagination)
//! while worker threads plan, re-encrypt and compare-and-set write, each
//! batch with its checkpoint and fence in one store transaction.

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use zeroize::Zeroize as _;

use crate::engine::{metric_names, Migrator};
use crate::error::MigrateError;
use crate::lock::HeldLock;
use crate::options::{AcceptedFailures, Mode};
use crate::plan::{Depth, Outcome, Planner};
use crate::progress::BatchProgress;
use crate::report::{Status, ValueClass};
use crate::sizer::Sizer;
use crate::tally::Tally;
use crate::watermark::Watermark;
use manna_store::{
    Checkpoint, CheckpointKey, ColumnRef, Counts, Fence, IdRange, Rewrite, Row, RowId,
    StoreErrorKind, Value, WriteOptions,
};

/// Which rows a pass reads.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Every row of the range, resuming after a checkpoint.
    All,
    /// Only rows whose value does not start with this prefix (the rows not
    /// yet in the target format): the sweeps after the main scan.
    Unprefixed(String),
}

/// Everything a pass needs, built once per column.
pub(crate) struct Pass<'a> {
    pub(crate) column: &'a ColumnRef,
    pub(crate) planner: &'a Planner<'a>,
    /// The range to go over (already resumed after a checkpoint's id).
    pub(crate) range: IdRange,
    pub(crate) source: Source,
    pub(crate) held: Option<&'a dyn HeldLock>,
    pub(crate) fence: Option<&'a Fence>,
    /// The checkpoint to advance with each batch, and its counts so far;
    /// `None` for sweeps (they leave the checkpoint where it is).
    pub(crate) checkpoint: Option<(CheckpointKey, Counts)>,
    /// Rows in the partition when the column started (for progress).
    pub(crate) total: u64,
    /// Rows already done by earlier runs (for progress).
    pub(crate) done_before: u64,
    /// A sweep after the main pass: no progress events (the main pass
    /// reported every row), and rows the main pass already reported as
    /// failing are logged at debug level only.
    pub(crate) sweep: bool,
}

/// What a pass did.
pub(crate) struct PassResult {
    pub(crate) counts: Counts,
    /// Pending rows here are those not rewritten (dry-run, verify-only) or
    /// changed twice under the compare-and-set.
    pub(crate) tally: Tally,
    pub(crate) status: Status,
    pub(crate) batch_size: usize,
    /// The checkpoint as far as every batch before it committed.
    pub(crate) watermark: Option<Checkpoint>,
}

impl PassResult {
    /// Adds a batch's result.
    fn absorb(&mut self, r: BatchResult) {
        self.counts += r.counts;
        self.tally.merge(r.tally);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A scanned batch handed to a worker.
struct Batch {
    seq: u64,
    rows: Vec<Row>,
}

/// What a worker did with a batch. Every row scanned ends in exactly one of
/// `migrated`, `unchanged` (including `NULL`), `failed` or `pending`.
struct BatchResult {
    seq: u64,
    counts: Counts,
    tally: Tally,
    elapsed: Duration,
}

/// What recording a row needs besides the row.
struct Recorder<'a> {
    column: &'a ColumnRef,
    /// Failures are logged at debug level (a sweep: reported before).
    quiet: bool,
    /// Failures of this pass logged so far; past [`FAILURE_LOG_LIMIT`] they
    /// are logged at debug level only.
    logged: &'a AtomicU64,
    accepted: &'a AcceptedFailures,
}

impl BatchResult {
    /// Records a planned row; returns the rewrite to attempt, if any.
    fn record(&mut self, rec: &Recorder<'_>, row: Row, outcome: Outcome) -> Option<Rewrite> {
        let column = rec.column;
        match outcome {
            Outcome::Null => {
                self.tally.nulls += 1;
                self.counts.unchanged += 1;
            }
            Outcome::Unchanged(class) => {
                self.tally.census.add(class);
                self.counts.unchanged += 1;
            }
            Outcome::Pending { new: Some(new), .. } => {
                if let Value::Text(old) = row.value {
                    return Some(Rewrite {
                        id: row.id,
                        old,
                        new,
                    });
                }
            }
            Outcome::Pending { class, new: None } => {
                self.tally.census.add(class);
                self.tally.pending += 1;
            }
            Outcome::Failed { class, reason, .. } => {
                if rec.quiet || rec.logged.fetch_add(1, Ordering::Relaxed) >= FAILURE_LOG_LIMIT {
                    tracing::debug!(%column, id = %row.id, %reason, "cannot decrypt value; left untouched");
                } else {
                    tracing::warn!(%column, id = %row.id, %reason, "cannot decrypt value; left untouched");
                    let key_id = match class {
                        ValueClass::Aes256Gcm(id) | ValueClass::Fernet(id) => id.to_string(),
                        _ => "none".to_owned(),
                    };
                    tracing::warn!(target: manna_crypto::audit::TARGET, event = "decrypt_failed",
                        %column, id = %row.id, key_id, kind = %reason, "a stored value cannot be decrypted");
                }
                self.tally.census.add(class);
                self.counts.failed += 1;
                let accepted = rec.accepted.accepts(column, &row.id);
                self.tally.failed.push(row.id, reason, accepted);
            }
        }
        None
    }

    /// Counts the outcome of a compare-and-set write; returns the ids missed.
    fn settle(
        &mut self,
        rewrites: &[Rewrite],
        written: &[RowId],
        target: ValueClass,
    ) -> Vec<RowId> {
        let written: HashSet<&RowId> = written.iter().collect();
        let mut missed = Vec::new();
        for rw in rewrites {
            if written.contains(&rw.id) {
                self.counts.migrated += 1;
                self.tally.census.add(target);
            } else {
                self.counts.conflicts += 1;
                missed.push(rw.id.clone());
            }
        }
        missed
    }
}

/// Failed rows logged one by one (warn level) per column and pass; the rest
/// are logged at debug level and summed up in one line at the end of the
/// pass, so a column full of undecryptable rows cannot flood the logs.
pub(crate) const FAILURE_LOG_LIMIT: u64 = 20;

/// State shared by the coordinator and the workers.
struct Shared {
    stop: AtomicBool,
    /// Failed rows logged at warn level so far in this pass.
    failures_logged: AtomicU64,
    lease_lost: AtomicBool,
    error: Mutex<Option<MigrateError>>,
    watermark: Mutex<Watermark>,
}

impl Shared {
    /// Nothing stopped, failed or logged yet; the watermark at `watermark`.
    fn new(watermark: Watermark) -> Self {
        Shared {
            stop: AtomicBool::new(false),
            failures_logged: AtomicU64::new(0),
            lease_lost: AtomicBool::new(false),
            error: Mutex::new(None),
            watermark: Mutex::new(watermark),
        }
    }

    fn fail(&self, e: MigrateError) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn lose_lease(&self) {
        self.lease_lost.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The coordinator's side of a pass: the finished batches added up, the
/// batch size they adapt, and what each one reports (metrics, progress).
struct Collector<'a, 'p> {
    migrator: &'a Migrator,
    p: &'a Pass<'p>,
    /// The checkpoint's counts when the pass started.
    base: Counts,
    started: Instant,
    /// The `column` metric label.
    label: String,
    sizer: Sizer,
    agg: PassResult,
}

impl Collector<'_, '_> {
    /// Adds a finished batch: adapts the batch size, sets the gauges and,
    /// outside sweeps, reports progress.
    fn absorb(&mut self, r: BatchResult) {
        let p = self.p;
        let column = p.column;
        self.sizer.adapt(r.counts.scanned, r.elapsed);
        let batch = r.counts;
        self.agg.absorb(r);
        let rate = self.agg.counts.scanned as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let done = p.done_before + self.agg.counts.scanned;
        metrics::gauge!(metric_names::BATCH_SIZE, "column" => self.label.clone())
            .set(self.sizer.size() as f64);
        metrics::gauge!(metric_names::ROWS_PER_SECOND, "column" => self.label.clone()).set(rate);
        metrics::gauge!(metric_names::ROWS_REMAINING, "column" => self.label.clone())
            .set(p.total.saturating_sub(done) as f64);
        if p.sweep {
            return;
        }
        let mut so_far = self.base;
        so_far += self.agg.counts;
        self.migrator.progress_sink().on_batch(
            column,
            &BatchProgress {
                batch,
                so_far,
                done,
                total: p.total,
                rows_per_s: rate,
                batch_size: self.sizer.size(),
            },
        );
    }
}

impl Migrator {
    /// Runs one pass; returns how it ended (completed, cancelled, lease lost).
    pub(crate) fn pass(&self, p: &Pass<'_>) -> Result<PassResult, MigrateError> {
        let o = self.current_options();
        let (key, base) = match &p.checkpoint {
            Some((key, base)) => (Some(key.clone()), *base),
            None => (None, Counts::default()),
        };
        let shared = Shared::new(Watermark::new(key, p.range.after.clone(), base));
        let mut c = Collector {
            migrator: self,
            p,
            base,
            started: Instant::now(),
            label: p.column.to_string(),
            sizer: Sizer::new(o),
            agg: PassResult {
                counts: Counts::default(),
                tally: Tally::default(),
                status: Status::Completed,
                batch_size: o.batch_size,
                watermark: None,
            },
        };
        let (work_tx, work_rx) = mpsc::sync_channel::<Batch>(o.workers);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<BatchResult>();
        let mut status = Status::Completed;
        let mut panicked = false;
        // Workers log through the caller's subscriber, also when it is a
        // thread-local default (`tracing::subscriber::set_default`).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        thread::scope(|s| {
            let mut handles = Vec::with_capacity(o.workers);
            for i in 0..o.workers {
                let tx = done_tx.clone();
                let (shared, work_rx, dispatch) = (&shared, &work_rx, &dispatch);
                let spawned = thread::Builder::new()
                    .name(format!("manna-migrate-{i}"))
                    .spawn_scoped(s, move || {
                        tracing::dispatcher::with_default(dispatch, || {
                            self.worker(p, work_rx, &tx, shared)
                        })
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        shared.fail(MigrateError::Spawn {
                            column: p.column.to_string(),
                            reason: e.to_string(),
                        });
                        break;
                    }
                }
            }
            drop(done_tx);
            status = self.dispatch(p, &shared, &work_tx, &done_rx, &mut c);
            if status != Status::Completed || shared.lease_lost.load(Ordering::SeqCst) {
                // Batches queued but not started are dropped: they are past
                // the checkpoint and the next run does them.
                shared.stop.store(true, Ordering::SeqCst);
            }
            drop(work_tx);
            for r in done_rx.iter() {
                c.absorb(r);
            }
            for h in handles {
                if h.join().is_err() {
                    panicked = true;
                }
            }
        });
        if panicked {
            return Err(MigrateError::WorkerPanicked {
                column: p.column.to_string(),
            });
        }
        self.conclude(p, &shared, c, status)
    }

    /// The scan: reads the range batch by batch (each when its rows are due
    /// under the rate limit) and hands the batches to the workers, adding up
    /// the finished ones meanwhile, until the range is done or the pass
    /// stops (an error, the cancel token, a lost lease). Returns
    /// [`Status::Cancelled`] when cancelled, else [`Status::Completed`].
    fn dispatch(
        &self,
        p: &Pass<'_>,
        shared: &Shared,
        work_tx: &SyncSender<Batch>,
        done_rx: &Receiver<BatchResult>,
        c: &mut Collector<'_, '_>,
    ) -> Status {
        let o = self.current_options();
        let column = p.column;
        let mut after = p.range.after.clone();
        let mut seq = 0u64;
        let mut dispatched = 0u64;
        // Whether the last scan filled its batch (more rows likely follow).
        let mut last_full = false;
        loop {
            while let Ok(r) = done_rx.try_recv() {
                c.absorb(r);
            }
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.cancel_handle().is_cancelled() {
                return Status::Cancelled;
            }
            if p.held.is_some_and(|h| h.is_lost()) {
                shared.lose_lease();
                break;
            }
            let mut limit = c.sizer.size();
            if let Some(rate) = o.max_rows_per_sec {
                // At most one second's worth of rows a batch.
                limit = limit
                    .min(usize::try_from(rate).unwrap_or(usize::MAX))
                    .max(1);
            }
            // The run never gets ahead of the rate, even by one batch. After
            // a full batch (more rows likely follow), the next one is read
            // when its rows are due, so its rows do not age before their
            // compare-and-set; if that scan finds the range done, the wait
            // for it was idle (at most one batch's time, ≤ 1 s). The first
            // scan of a pass, and one after a short batch (most likely
            // empty), go out at once, and what they read waits for its due
            // time instead: an empty sweep ends without waiting.
            let rate = o.max_rows_per_sec;
            if let (Some(rate), true) = (rate, last_full) {
                if !self.throttle(dispatched + limit as u64, rate, c.started) {
                    return Status::Cancelled;
                }
            }
            let range = p.range.resumed_after(after.clone());
            let scanned = match &p.source {
                Source::All => self.store().scan(column, &range, limit),
                Source::Unprefixed(prefix) => {
                    self.store().scan_unprefixed(column, &range, limit, prefix)
                }
            };
            let rows = match scanned {
                Ok(rows) => rows,
                Err(e) => {
                    shared.fail(MigrateError::store(column, e));
                    break;
                }
            };
            let Some(last) = rows.last() else { break };
            if let (Some(rate), false) = (rate, last_full) {
                if !self.throttle(dispatched + rows.len() as u64, rate, c.started) {
                    return Status::Cancelled;
                }
            }
            last_full = rows.len() >= limit;
            after = Some(last.id.clone());
            dispatched += rows.len() as u64;
            if work_tx.send(Batch { seq, rows }).is_err() {
                break;
            }
            seq += 1;
        }
        Status::Completed
    }

    /// How the pass ended, once every worker is done: a lost lease outranks
    /// the errors met meanwhile; any other error is returned. Sums up the
    /// failures not logged one by one.
    fn conclude(
        &self,
        p: &Pass<'_>,
        shared: &Shared,
        c: Collector<'_, '_>,
        mut status: Status,
    ) -> Result<PassResult, MigrateError> {
        let column = p.column;
        let error = lock(&shared.error).take();
        if shared.lease_lost.load(Ordering::SeqCst) || p.held.is_some_and(|h| h.is_lost()) {
            // A lost lease explains what else failed meanwhile (a paused
            // migrator's session ended by the server, say): the run stopped
            // because another holder took over, and every write it made
            // was fenced and compare-and-set.
            if let Some(e) = error {
                tracing::warn!(%column, error = %e, "store error after the lease was lost");
            }
            status = Status::LeaseLost;
            tracing::error!(%column, "migration lock lease lost: stopped at a batch boundary; the next run continues from the checkpoint");
        } else if let Some(e) = error {
            return Err(e);
        }
        let logged = shared.failures_logged.load(Ordering::Relaxed);
        if logged > FAILURE_LOG_LIMIT {
            let more = logged - FAILURE_LOG_LIMIT;
            tracing::warn!(
                %column,
                failed = logged,
                shown = FAILURE_LOG_LIMIT,
                "{more} more rows cannot be decrypted (not logged one by one; the report lists them)",
            );
            tracing::warn!(target: manna_crypto::audit::TARGET, event = "decrypt_failed",
                %column, more, "more stored values cannot be decrypted (not audited one by one)");
        }
        let mut agg = c.agg;
        agg.status = status;
        agg.batch_size = c.sizer.size();
        agg.watermark = lock(&shared.watermark).checkpoint();
        Ok(agg)
    }

    /// Sleeps until `dispatched` rows are within `rate` rows/s since
    /// `started`; `false` if cancelled meanwhile.
    fn throttle(&self, dispatched: u64, rate: u64, started: Instant) -> bool {
        let due = Duration::from_secs_f64(dispatched as f64 / rate as f64);
        loop {
            if self.cancel_handle().is_cancelled() {
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
        p: &Pass<'_>,
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
            let processed =
                panic::catch_unwind(AssertUnwindSafe(|| self.process(p, batch, shared)))
                    .unwrap_or_else(|_| {
                        Err(MigrateError::WorkerPanicked {
                            column: p.column.to_string(),
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

    /// Writes one batch, fenced; `None` when the lease is gone (lost, or a
    /// newer holder's token fenced this write off).
    fn write(
        &self,
        p: &Pass<'_>,
        rewrites: &[Rewrite],
        checkpoint: Option<&Checkpoint>,
        shared: &Shared,
    ) -> Result<Option<Vec<RowId>>, MigrateError> {
        if p.held.is_some_and(|h| h.is_lost()) {
            shared.lose_lease();
            return Ok(None);
        }
        let options = WriteOptions::bump_version(self.current_options().bump_version);
        match self
            .store()
            .write_batch(p.column, rewrites, options, checkpoint, p.fence)
        {
            Ok(written) => Ok(Some(written)),
            Err(e) if e.kind() == StoreErrorKind::Fenced => {
                tracing::error!(column = %p.column, error = %e, "a newer migrator holds this column: write refused");
                shared.lose_lease();
                Ok(None)
            }
            Err(e) => Err(MigrateError::store(p.column, e)),
        }
    }

    /// Plans and (in migrate mode) writes one batch. `None` when the lease
    /// was found lost before writing.
    fn process(
        &self,
        p: &Pass<'_>,
        batch: Batch,
        shared: &Shared,
    ) -> Result<Option<BatchResult>, MigrateError> {
        let started = Instant::now();
        let o = self.current_options();
        let column = p.column;
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
            tally: Tally::default(),
            elapsed: Duration::ZERO,
        };
        let rec = Recorder {
            column,
            quiet: p.sweep,
            logged: &shared.failures_logged,
            accepted: &o.accepted_failures,
        };
        let mut rewrites = Vec::new();
        for row in batch.rows {
            let outcome = p.planner.plan(&row, depth);
            if let Some(rw) = r.record(&rec, row, outcome) {
                rewrites.push(rw);
            }
        }
        if o.mode.writes() {
            let target = p.planner.target_class();
            let checkpoint = lock(&shared.watermark).checkpoint();
            let Some(written) = self.write(p, &rewrites, checkpoint.as_ref(), shared)? else {
                wipe_old_values(&mut rewrites);
                return Ok(None);
            };
            let missed = r.settle(&rewrites, &written, target);
            if !missed.is_empty() && !self.retry_missed(p, shared, &rec, &mut r, &missed)? {
                wipe_old_values(&mut rewrites);
                return Ok(None);
            }
        }
        wipe_old_values(&mut rewrites);
        r.elapsed = started.elapsed();
        lock(&shared.watermark).complete(r.seq, end, r.counts);
        record_batch(column, &r);
        Ok(Some(r))
    }

    /// Rows a batch's compare-and-set missed: changed underneath (by the
    /// application, most likely to the new format already), so re-read and
    /// re-planned once. `false` when the lease is gone (nothing written).
    fn retry_missed(
        &self,
        p: &Pass<'_>,
        shared: &Shared,
        rec: &Recorder<'_>,
        r: &mut BatchResult,
        missed: &[RowId],
    ) -> Result<bool, MigrateError> {
        let column = p.column;
        let target = p.planner.target_class();
        tracing::debug!(%column, conflicts = missed.len(), "re-reading rows changed during the batch");
        let fresh = self
            .store()
            .read(column, missed)
            .map_err(|e| MigrateError::store(column, e))?;
        // Rows deleted meanwhile are gone from the column: no count.
        r.counts.scanned -= (missed.len() - fresh.len()) as u64;
        let mut again = Vec::new();
        for row in fresh {
            let outcome = p.planner.plan(&row, Depth::Rewrite);
            if let Some(rw) = r.record(rec, row, outcome) {
                again.push(rw);
            }
        }
        if !again.is_empty() {
            let written = self.write(p, &again, None, shared)?;
            wipe_old_values(&mut again);
            let Some(written) = written else {
                return Ok(false);
            };
            // Rows that changed yet again are left to the sweeps
            // (and to the next run): never overwritten.
            let left = r.settle(&again, &written, target);
            r.tally.pending += left.len() as u64;
        }
        Ok(true)
    }
}

/// A finished batch's metrics and debug line.
fn record_batch(column: &ColumnRef, r: &BatchResult) {
    let label = column.to_string();
    metrics::counter!(metric_names::ROWS_SCANNED, "column" => label.clone())
        .increment(r.counts.scanned);
    metrics::counter!(metric_names::ROWS_MIGRATED, "column" => label.clone())
        .increment(r.counts.migrated);
    metrics::counter!(metric_names::ROWS_UNCHANGED, "column" => label.clone())
        .increment(r.counts.unchanged);
    metrics::counter!(metric_names::CONFLICTS, "column" => label.clone())
        .increment(r.counts.conflicts);
    for (reason, n) in r.tally.failed.kinds() {
        metrics::counter!(metric_names::ROWS_FAILED, "column" => label.clone(), "reason" => reason.as_str())
                .increment(n);
    }
    metrics::histogram!(metric_names::BATCH_SECONDS, "column" => label)
        .record(r.elapsed.as_secs_f64());
    tracing::debug!(%column, seq = r.seq, rows = r.counts.scanned, migrated = r.counts.migrated,
            conflicts = r.counts.conflicts, failed = r.counts.failed, elapsed = ?r.elapsed, "batch done");
}

/// Wipes the old values of written (or abandoned) rewrites: with
/// `--accept-plaintext` they are plaintexts read from the column. (On an
/// early `?` return they are dropped unwiped; so are the driver's own
/// buffers: see manna-crypto's README, "What is wiped".)
fn wipe_old_values(rewrites: &mut [Rewrite]) {
    for rw in rewrites {
        rw.old.zeroize();
    }
}
