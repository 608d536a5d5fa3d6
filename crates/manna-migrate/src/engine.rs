//! The run: preflight, lock, checkpoint, the main pass and the sweeps, the
//! final census, the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use manna_crypto::{CryptoError, DecryptError, Keyring};
use manna_lock::LockError;

use crate::error::MigrateError;
use crate::lock::{migration_lock_name, HeldLock, MigrationLocks, ProcessLocks};
use crate::options::{CancelToken, Options, Target};
use crate::preflight::PreflightError;
use crate::progress::{NoProgress, Progress};
use crate::report::{Census, CensusKind, ColumnReport, Report, Status};
use manna_store::{ColumnRef, ColumnStore};

mod column_run;

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

    /// Every name above.
    pub const ALL: &[&str] = &[
        ROWS_SCANNED,
        ROWS_MIGRATED,
        ROWS_UNCHANGED,
        CONFLICTS,
        ROWS_FAILED,
        BATCH_SECONDS,
        BATCH_SIZE,
        ROWS_PER_SECOND,
        ROWS_REMAINING,
    ];
}

/// Runs migrations, dry-runs and verifications over columns of a
/// [`ColumnStore`].
///
/// - **Plan** each value: `NULL` or already in the target format →
///   unchanged; decryptable (Fernet, an older AES key, plaintext when the
///   keyring accepts it) → re-encrypted; anything else → failed, recorded by
///   row id and left untouched.
/// - **Write safety**: each new value is decrypted again and compared with
///   the old plaintext; writes are compare-and-set on the old value (byte
///   for byte), one store call per batch; misses are counted as conflicts,
///   re-read and re-planned once, and never overwritten. Versions are not
///   bumped unless [`Options::bump_version`].
/// - **One migrator per partition**: a lock named by
///   [`migration_lock_name`](crate::migration_lock_name) (which names the
///   database too) is held while writing; every write carries the lease's
///   fencing token, so a migrator whose lease passed to another is refused
///   by the store; a lost lease stops the run at the next batch boundary.
/// - **Resumable**: a checkpoint commits with each batch, keyed by the run's
///   parameters (a run with other parameters starts over); [`Options::restart`]
///   clears it; the [`CancelToken`] stops at a batch boundary.
/// - **True verdicts**: after the main scan, the rows still not in the
///   target format (written in the old format behind the cursor, changed
///   under the compare-and-set) are swept again while that makes progress,
///   then a final census counts the partition: a column is
///   [`Status::Completed`] only if every row is in the target format.
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
    /// column-bound AAD, preflight on), the process-wide [`ProcessLocks`]
    /// (they need no async runtime and exclude migrators of this process
    /// only: give a database or Redis lock with [`Migrator::locks`] to
    /// exclude other processes and machines), no progress output and a
    /// fresh cancellation token.
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

    /// Sets the locks (e.g. [`BlockingLocks`](crate::BlockingLocks) over a
    /// database- or Redis-backed [`manna_lock::LockManager`] to exclude other
    /// machines).
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
        self.options.validate()?;
        if self.options.target == Target::Fernet && !self.keyring.has_fernet() {
            return Err(PreflightError::NoFernetKey.into());
        }
        if self.options.target == Target::Fernet {
            // Past `fernet_until` Fernet is neither written nor read.
            if let Err(DecryptError::FernetEnded { until }) = self.keyring.check_fernet_not_ended()
            {
                return Err(MigrateError::Keys(CryptoError::FernetEnded { until }));
            }
        }
        if self.options.mode.writes() && self.options.target == Target::Aes256Gcm {
            self.keyring
                .check_primary_not_expired()
                .map_err(MigrateError::Keys)?;
        }
        Ok(())
    }

    pub(crate) fn progress_sink(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    /// Runs the configured mode over `columns`, one after the other, after
    /// [`Migrator::preflight`] (unless [`Options::preflight`] is off).
    ///
    /// Returns a report for runs that did not complete too: check its
    /// [`verdict`](Report::verdict). A column that stops early (cancelled,
    /// lease lost) leaves the later ones [`Status::NotStarted`]. Errors stop
    /// the run; the checkpoint of the last committed batch is kept.
    pub fn run(&self, columns: &[ColumnRef]) -> Result<Report, MigrateError> {
        self.check_options()?;
        if self.options.preflight {
            self.preflight(columns)?;
        }
        let mut report = Report::new(self.options.mode, self.options.target);
        let mut stopped = false;
        for column in columns {
            if stopped || self.cancel.is_cancelled() {
                report.columns.push(self.not_started(column));
                continue;
            }
            let r = self.run_column(column)?;
            stopped = matches!(r.status, Status::Cancelled | Status::LeaseLost);
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
            failed_total: 0,
            elapsed_s: 0.0,
            rows_per_s: 0.0,
            null: 0,
            scanned: 0,
            pending: 0,
            failed_accepted: 0,
            sweeps: 0,
            checkpoint_ignored: None,
            failure_kinds: BTreeMap::new(),
            status: Status::NotStarted,
            census: CensusKind::Processed,
            shard: self.options.shard.to_string(),
            resumed: false,
            batch_size: self.options.batch_size,
        }
    }

    /// Runs the configured mode over one column (without preflight).
    pub fn run_column(&self, column: &ColumnRef) -> Result<ColumnReport, MigrateError> {
        self.check_options()?;
        let started = Instant::now();
        let info = self
            .store
            .check_column(column)
            .map_err(|e| MigrateError::store(column, e))?;
        let writes = self.options.mode.writes();
        if writes && self.options.bump_version && !info.has_version {
            return Err(PreflightError::NoVersionColumn {
                column: column.to_string(),
            }
            .into());
        }
        let held = if writes {
            let database = self
                .store
                .identity()
                .map_err(|e| MigrateError::store(column, e))?;
            let name = migration_lock_name(&database, column, self.options.shard);
            Some(self.acquire(column, &name)?)
        } else {
            None
        };
        let o = &self.options;
        tracing::info!(target: manna_crypto::audit::TARGET, event = "migration_started",
            %column, mode = %o.mode, target = %o.target, aad = o.aad.label(), shard = %o.shard,
            primary = %self.keyring.primary_key_id(), "migration started");
        let result = self.run_held(column, held.as_deref(), started);
        match &result {
            Ok(r) => {
                tracing::info!(target: manna_crypto::audit::TARGET, event = "migration_finished",
                %column, status = %r.status, migrated = r.migrated, unchanged = r.unchanged,
                failed = r.failed_total, pending = r.pending, total = r.total, "migration finished")
            }
            Err(e) => {
                tracing::warn!(target: manna_crypto::audit::TARGET, event = "migration_finished",
                %column, status = "error", error = %e, "migration stopped with an error")
            }
        }
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
            None => Arc::new(ProcessLocks::new()),
        }
    }

    fn acquire(&self, column: &ColumnRef, name: &str) -> Result<Box<dyn HeldLock>, MigrateError> {
        self.lock_backend().acquire(name).map_err(|e| match e {
            LockError::Timeout { holder, .. } => MigrateError::Locked {
                column: column.to_string(),
                lock: name.to_owned(),
                holder,
            },
            other => MigrateError::Lock {
                column: column.to_string(),
                cause: other,
            },
        })
    }
}
