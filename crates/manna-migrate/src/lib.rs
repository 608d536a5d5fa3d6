#![doc = include_str!("../README.md")]

mod census;
mod engine;
mod error;
mod failures;
mod layout;
mod lock;
mod options;
mod pipeline;
mod plan;
mod preflight;
mod progress;
mod report;
mod retire;
mod shard;
mod sizer;
mod tally;
#[cfg(feature = "testing")]
pub mod testing;
mod watermark;

pub use engine::{metric_names, Migrator};
pub use error::MigrateError;
pub use failures::{FailureKind, FAILED_IDS_LISTED};
pub use lock::{migration_lock_name, BlockingLocks, HeldLock, MigrationLocks, ProcessLocks};
/// The storage port, re-exported: the migrator's API speaks its types.
pub use manna_store::{
    Checkpoint, CheckpointKey, ColumnInfo, ColumnRef, ColumnStore, Counts, Fence, IdKind, IdRange,
    Ident, IdentError, LayoutKey, PrefixCensus, Rewrite, Row, RowId, StoreError, StoreErrorKind,
    Value, WriteOptions, MAX_IDENT_LEN,
};
pub use options::{
    AadMode, AcceptedFailures, AcceptedFailuresError, CancelToken, Mode, Options, OptionsError,
    Target, MAX_BATCH_SIZE, MAX_PREFLIGHT_SAMPLE, MAX_SHARDS, MAX_WORKERS,
};
pub use preflight::PreflightError;
pub use progress::{BatchProgress, LogProgress, NoProgress, Progress};
pub use report::{Census, CensusKind, ColumnReport, Report, Status, ValueClass, Verdict};
pub use retire::{key_usage, ColumnKeyUsage, KeyUsage, RetiringKey, RetiringKeyError};
pub use shard::{ParseShardError, Shard};
