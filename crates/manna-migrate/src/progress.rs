//! The progress port: how a run tells a front end (a progress bar, log
//! lines) how it is doing. Metrics and tracing events are emitted by the
//! engine itself; this port is for what a human watches.

use crate::report::ColumnReport;
use manna_store::{ColumnRef, Counts};

/// One batch finished.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchProgress {
    /// Counts of this batch alone.
    pub batch: Counts,
    /// Counts so far for the column (including a resumed checkpoint's).
    pub so_far: Counts,
    /// Rows processed so far (including before a resumed checkpoint).
    pub done: u64,
    /// Rows in the partition when the run started (an estimate: rows may be
    /// added and removed meanwhile).
    pub total: u64,
    /// Rows per second scanned by this run so far.
    pub rows_per_s: f64,
    /// The batch size now in use.
    pub batch_size: usize,
}

impl BatchProgress {
    /// `done / total` in percent (100 when the total is 0), capped at 100.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            (self.done as f64 * 100.0 / self.total as f64).min(100.0)
        }
    }
}

/// Receives progress events. Called from the engine's coordinating thread,
/// one column at a time; implementations must be cheap (no I/O on a hot
/// path beyond drawing).
pub trait Progress: Send + Sync {
    /// A column starts; `total` rows are in its partition, `done` of them
    /// already processed by an earlier run (resumed checkpoint).
    fn on_start(&self, column: &ColumnRef, total: u64, done: u64) {
        let _ = (column, total, done);
    }

    /// A batch finished.
    fn on_batch(&self, column: &ColumnRef, progress: &BatchProgress) {
        let _ = (column, progress);
    }

    /// A column finished (whatever its status).
    fn on_finish(&self, column: &ColumnRef, report: &ColumnReport) {
        let _ = (column, report);
    }
}

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Emits the Python tool's log lines as `tracing` info events:
/// `Starting migration for plaid_items.access_token`,
/// `Progress: 25.0% (100/400)`, and a summary per column.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn on_start(&self, column: &ColumnRef, total: u64, done: u64) {
        if done > 0 {
            tracing::info!("Resuming migration for {column} at {done}/{total}");
        } else {
            tracing::info!("Starting migration for {column} ({total} rows)");
        }
    }

    fn on_batch(&self, _column: &ColumnRef, p: &BatchProgress) {
        tracing::info!(
            "Progress: {:.1}% ({}/{}) {:.0} rows/s",
            p.percent(),
            p.done,
            p.total,
            p.rows_per_s
        );
    }

    fn on_finish(&self, column: &ColumnRef, r: &ColumnReport) {
        tracing::info!(
            "Finished {column} ({}): {} migrated, {} unchanged, {} conflicts, {} failed in {:.2}s ({:.0} rows/s)",
            r.status,
            r.migrated,
            r.unchanged,
            r.conflicts,
            r.failed_total,
            r.elapsed_s,
            r.rows_per_s
        );
    }
}
