//! One column's run under its lock, step by step: fence, resume, main
//! pass, sweeps (or the saved watermark of a cancelled pass), final census,
//! report.

use std::time::Instant;

use manna_store::{
    Checkpoint, CheckpointKey, ColumnRef, Counts, Fence, IdRange, PrefixCensus, StoreErrorKind,
    WriteOptions,
};

use super::Migrator;
use crate::census::FinalCensus;
use crate::error::MigrateError;
use crate::failures::Failures;
use crate::lock::HeldLock;
use crate::options::Target;
use crate::pipeline::{Pass, PassResult, Source};
use crate::plan::Planner;
use crate::report::{CensusKind, ColumnReport, Status};

/// What every step of a column's run needs, built once the range is known.
struct ColumnRun<'a> {
    column: &'a ColumnRef,
    planner: Planner<'a>,
    held: Option<&'a dyn HeldLock>,
    /// The lease's fence, carried by every write.
    fence: Option<Fence>,
    /// This run's checkpoint.
    key: CheckpointKey,
    /// This shard's range.
    range: IdRange,
    /// Rows in the range when the column started.
    total: u64,
}

/// What the sweeps left for the final census.
#[derive(Default)]
struct Sweeps {
    /// Sweeps run.
    count: u32,
    /// The failed rows of the last sweep (else the main pass's are used).
    suspects: Option<Failures>,
    /// An aggregate count taken after the last write, when one was.
    census: Option<PrefixCensus>,
}

/// Whether the run resumed a checkpoint, and why another was not.
struct Resume {
    resumed: bool,
    checkpoint_ignored: Option<String>,
}

impl Migrator {
    /// Runs one column under its lock (if the mode writes): raises the
    /// fence, resumes, runs the main pass, then either saves how far a
    /// cancelled pass got or sweeps, and reports after the final census.
    pub(super) fn run_held(
        &self,
        column: &ColumnRef,
        held: Option<&dyn HeldLock>,
        started: Instant,
    ) -> Result<ColumnReport, MigrateError> {
        let o = &self.options;
        let writes = o.mode.writes();
        let fence = held.map(|h| Fence {
            name: h.name().to_owned(),
            fencing: h.fencing(),
        });
        if let Some(fence) = &fence {
            if !self.raise_fence(column, fence)? {
                let mut r = self.not_started(column);
                r.status = Status::LeaseLost;
                return Ok(r);
            }
        }
        let key = self.checkpoint_key(column);
        let (resumed, checkpoint_ignored) = if writes {
            self.resume_point(column, &key)?
        } else {
            (None, None)
        };
        let Some(range) = self.shard_range(column)? else {
            // This shard's range is empty: the layout has fewer ranges.
            let mut r = self.not_started(column);
            r.status = Status::Completed;
            r.census = CensusKind::After;
            return Ok(r);
        };
        let total = self
            .store
            .count(column, &range)
            .map_err(|e| MigrateError::store(column, e))?;
        let run = ColumnRun {
            column,
            planner: Planner::new(&self.keyring, o.target, o.aad, column),
            held,
            fence,
            key,
            range,
            total,
        };
        let (mut main, mut all) = self.main_pass(&run, resumed.as_ref())?;
        let mut sweeps = Sweeps::default();
        if writes && main.status != Status::Completed {
            self.save_watermark(&run, &mut main)?;
        } else if writes {
            sweeps = self.sweep(&run, &mut main, &mut all)?;
            if main.status == Status::Completed {
                self.clear_checkpoints(column, &run.key)?;
            }
        }
        let resume = Resume {
            resumed: resumed.is_some(),
            checkpoint_ignored,
        };
        self.column_report(&run, main, all, sweeps, resume, started)
    }

    /// Raises the fence before anything else: from now on a migrator that
    /// held the lock before us (paused past its lease, say) is refused at
    /// its next write. `false` when a newer migrator already raised its own.
    fn raise_fence(&self, column: &ColumnRef, fence: &Fence) -> Result<bool, MigrateError> {
        match self.store.raise_fence(column, fence) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == StoreErrorKind::Fenced => {
                tracing::error!(%column, error = %e, "a newer migrator holds this column");
                Ok(false)
            }
            Err(e) => Err(MigrateError::store(column, e)),
        }
    }

    /// The main pass over every row of the range after the resumed
    /// checkpoint (if any); returns it and the counts including the
    /// checkpoint's.
    fn main_pass(
        &self,
        run: &ColumnRun<'_>,
        resumed: Option<&Checkpoint>,
    ) -> Result<(PassResult, Counts), MigrateError> {
        let column = run.column;
        let (resume_after, base) = resumed
            .map(|c| (c.last_id.clone(), c.counts))
            .unwrap_or_default();
        if let Some(id) = &resume_after {
            tracing::info!(%column, resume_after = %id, done = base.scanned, "resuming from checkpoint");
        }
        self.progress.on_start(column, run.total, base.scanned);
        let writes = self.options.mode.writes();
        let main = self.pass(&Pass {
            column,
            planner: &run.planner,
            range: run.range.resumed_after(resume_after),
            source: Source::All,
            held: run.held,
            fence: run.fence.as_ref(),
            checkpoint: writes.then(|| (run.key.clone(), base)),
            total: run.total,
            done_before: base.scanned,
            sweep: false,
        })?;
        let mut all = base;
        all += main.counts;
        Ok((main, all))
    }

    /// After a cancelled main pass, saves how far the finished batches got,
    /// so the next run continues right there.
    fn save_watermark(
        &self,
        run: &ColumnRun<'_>,
        main: &mut PassResult,
    ) -> Result<(), MigrateError> {
        let (Status::Cancelled, Some(watermark)) = (main.status, &main.watermark) else {
            return Ok(());
        };
        let options = WriteOptions::default();
        match self.store.write_batch(
            run.column,
            &[],
            options,
            Some(watermark),
            run.fence.as_ref(),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == StoreErrorKind::Fenced => {
                main.status = Status::LeaseLost;
                Ok(())
            }
            Err(e) => Err(MigrateError::store(run.column, e)),
        }
    }

    /// The sweeps after a main pass over every row: rows written in the old
    /// format behind the cursor, or that kept changing under the
    /// compare-and-set, are gone back for while that makes progress. An
    /// aggregate count first tells whether there are any (to AES-256-GCM; a
    /// Fernet token's key only shows when it is opened, so rollbacks always
    /// sweep). A sweep that does not complete sets `main`'s status.
    fn sweep(
        &self,
        run: &ColumnRun<'_>,
        main: &mut PassResult,
        all: &mut Counts,
    ) -> Result<Sweeps, MigrateError> {
        let o = &self.options;
        let (column, planner) = (run.column, &run.planner);
        let mut out = Sweeps::default();
        loop {
            if o.target == Target::Aes256Gcm {
                let agg = self
                    .store
                    .census(column, &run.range)
                    .map_err(|e| MigrateError::store(column, e))?;
                let done = agg.total - agg.nulls
                    == agg
                        .envelopes
                        .get(&planner.primary().to_string())
                        .copied()
                        .unwrap_or(0);
                out.census = Some(agg);
                if done {
                    break;
                }
            }
            if out.count >= o.max_sweeps {
                break;
            }
            let sweep = self.pass(&Pass {
                column,
                planner,
                range: run.range.clone(),
                source: Source::Unprefixed(planner.target_prefix()),
                held: run.held,
                fence: run.fence.as_ref(),
                checkpoint: None,
                total: run.total,
                done_before: run.total,
                sweep: true,
            })?;
            out.count += 1;
            all.migrated += sweep.counts.migrated;
            all.conflicts += sweep.counts.conflicts;
            out.suspects = Some(sweep.tally.failed);
            if sweep.status != Status::Completed {
                main.status = sweep.status;
                break;
            }
            if sweep.counts.migrated == 0 {
                break;
            }
            out.census = None;
        }
        Ok(out)
    }

    /// The final census (or the pass's own count when the run only read or
    /// did not go over every row), the column's status, and its report.
    fn column_report(
        &self,
        run: &ColumnRun<'_>,
        mut main: PassResult,
        all: Counts,
        sweeps: Sweeps,
        resume: Resume,
        started: Instant,
    ) -> Result<ColumnReport, MigrateError> {
        let (column, planner, range) = (run.column, &run.planner, &run.range);
        let census_kind = if !self.options.mode.writes() {
            CensusKind::AsFound
        } else if main.status == Status::Completed {
            CensusKind::After
        } else {
            CensusKind::Processed
        };
        let fin = match census_kind {
            CensusKind::After => {
                let suspects = sweeps.suspects.as_ref().unwrap_or(&main.tally.failed);
                self.final_census(column, planner, range, sweeps.census, suspects)?
            }
            _ => FinalCensus::of_pass(&mut main),
        };
        let status = self.status(column, main.status, &fin, planner, range)?;
        let elapsed = started.elapsed().as_secs_f64();
        Ok(ColumnReport {
            table: column.table.to_string(),
            column: column.column.to_string(),
            total: if census_kind == CensusKind::Processed {
                run.total
            } else {
                fin.total
            },
            failure_kinds: fin.tally.failed.kinds(),
            by_format: fin.tally.census,
            migrated: all.migrated,
            unchanged: all.unchanged,
            conflicts: all.conflicts,
            failed_total: fin.tally.failed.total(),
            failed_accepted: fin.tally.failed.accepted(),
            failed: fin.tally.failed.into_sorted_ids(),
            elapsed_s: elapsed,
            rows_per_s: if elapsed > 0.0 {
                main.counts.scanned as f64 / elapsed
            } else {
                0.0
            },
            null: fin.tally.nulls,
            scanned: main.counts.scanned,
            pending: fin.tally.pending,
            sweeps: sweeps.count,
            checkpoint_ignored: resume.checkpoint_ignored,
            status,
            census: census_kind,
            shard: self.options.shard.to_string(),
            resumed: resume.resumed,
            batch_size: main.batch_size,
        })
    }

    /// The key of this run's checkpoint: the partition and every parameter
    /// that decides how rows are ordered, bound and judged.
    fn checkpoint_key(&self, column: &ColumnRef) -> CheckpointKey {
        let o = &self.options;
        let target = match o.target {
            Target::Aes256Gcm => format!("aes256gcm:{}", self.keyring.primary_key_id()),
            Target::Fernet => match self.keyring.fernet_key_ids().first() {
                Some(id) => format!("fernet:{id}"),
                None => "fernet".to_owned(),
            },
        };
        CheckpointKey {
            column: column.to_string(),
            partition: format!("shard {}", o.shard),
            run: format!("to {target} id {} aad {}", column.id_column, o.aad),
        }
    }

    /// Finds the checkpoint to resume: this run's own. Checkpoints of this
    /// partition left by runs with other parameters are not resumed (the
    /// answer says why); they are cleared when this run goes over every row.
    fn resume_point(
        &self,
        column: &ColumnRef,
        key: &CheckpointKey,
    ) -> Result<(Option<Checkpoint>, Option<String>), MigrateError> {
        let st = |e| MigrateError::store(column, e);
        if self.options.restart {
            self.store.clear_checkpoint(key).map_err(st)?;
            return Ok((None, None));
        }
        let saved = self.store.checkpoints(&key.column).map_err(st)?;
        let mut ignored = None;
        let mut mine = None;
        for c in saved {
            if c.key == *key {
                mine = Some(c);
            } else if c.key.partition == key.partition {
                let why = format!(
                    "a checkpoint of another run ({}) was not resumed: this run ({}) starts over",
                    c.key.run, key.run
                );
                tracing::warn!(%column, "{why}");
                ignored = Some(why);
            }
        }
        Ok((mine, ignored))
    }

    /// Clears this run's checkpoint and every checkpoint of the column left
    /// by runs with other parameters (in any direction, any partition): the
    /// run went over every row of its partition.
    fn clear_checkpoints(
        &self,
        column: &ColumnRef,
        key: &CheckpointKey,
    ) -> Result<(), MigrateError> {
        let st = |e| MigrateError::store(column, e);
        for c in self.store.checkpoints(&key.column).map_err(st)? {
            if c.key == *key || c.key.run != key.run {
                self.store.clear_checkpoint(&c.key).map_err(st)?;
            }
        }
        Ok(())
    }

    /// The column's status: the pass's, unless it went over every row; then
    /// what the census says. A read-only run's census was taken while the
    /// scan moved: a last aggregate count confirms no row left the target
    /// format meanwhile before it may say "completed".
    fn status(
        &self,
        column: &ColumnRef,
        pass: Status,
        fin: &FinalCensus,
        planner: &Planner<'_>,
        range: &IdRange,
    ) -> Result<Status, MigrateError> {
        if pass != Status::Completed {
            return Ok(pass);
        }
        if fin.tally.pending > 0 {
            return Ok(Status::Incomplete);
        }
        if fin.tally.failed.any_open() {
            return Ok(Status::FailedRows);
        }
        if !self.options.mode.writes() && !self.still_in_target(column, planner, range)? {
            tracing::warn!(%column, "rows left the target format while the scan ran");
            return Ok(Status::Incomplete);
        }
        Ok(Status::Completed)
    }

    /// Whether an aggregate count finds every non-`NULL` value still shaped
    /// like the target format (AES: under the primary key; Fernet: no
    /// envelope at all).
    fn still_in_target(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        range: &IdRange,
    ) -> Result<bool, MigrateError> {
        let agg = self
            .store
            .census(column, range)
            .map_err(|e| MigrateError::store(column, e))?;
        Ok(match self.options.target {
            Target::Aes256Gcm => {
                let primary = planner.primary().to_string();
                agg.envelopes.get(&primary).copied().unwrap_or(0) == agg.total - agg.nulls
            }
            Target::Fernet => agg.envelopes.is_empty(),
        })
    }
}
