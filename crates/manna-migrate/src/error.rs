//! Errors of a run. Messages name tables, columns, row ids and key ids, never
//! values or keys.

use manna_lock::LockError;

use crate::options::OptionsError;
use crate::preflight::PreflightError;
use manna_store::StoreError;

/// Why a run (or a check) could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The store failed; the checkpoint of the last committed batch is kept,
    /// so the next run continues from there.
    // Causes are part of the messages here, so they are not also a
    // `source()`: error reports that walk the chain would print them twice.
    #[error("{column}: {cause}")]
    Store {
        /// `TABLE.COLUMN`.
        column: String,
        /// The store's error.
        cause: StoreError,
    },
    /// Another migrator holds the column's lock.
    #[error("{column}: another migrator is running (lock `{lock}` is held{}); wait for it to finish or stop it", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    Locked {
        /// `TABLE.COLUMN`.
        column: String,
        /// The lock name.
        lock: String,
        /// Who holds it (host, pid, since when), when the backend knows.
        holder: Option<String>,
    },
    /// The lock backend failed (for Redis: is it running and reachable at
    /// the configured URL?).
    #[error("{column}: distributed lock error: {cause}")]
    Lock {
        /// `TABLE.COLUMN`.
        column: String,
        /// The lock error.
        cause: LockError,
    },
    /// The keyring cannot encrypt for the target (e.g. the primary key's
    /// stated expiry has passed, or `--to fernet` after the keyring's
    /// `fernet_until`).
    #[error("{0}")]
    Keys(manna_crypto::CryptoError),
    /// A saved shard layout cannot be used.
    #[error("{column}: the saved shard layout for {shards} shards is damaged: {reason}")]
    Layout {
        /// `TABLE.COLUMN`.
        column: String,
        /// Number of shards.
        shards: u32,
        /// What is wrong.
        reason: String,
    },
    /// A check before the run refused it — out-of-range options, no Fernet
    /// key for the Fernet target, no version column to bump: the checks
    /// [`Migrator::preflight`](crate::Migrator::preflight) makes, one
    /// problem per column or option, joined by `; `.
    #[error("preflight failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Preflight(Vec<PreflightError>),
    /// A worker thread could not be started (the system's thread limit).
    #[error("{column}: cannot start a migration worker thread: {reason}")]
    Spawn {
        /// `TABLE.COLUMN`.
        column: String,
        /// The system's answer.
        reason: String,
    },
    /// A worker thread panicked (a bug); the checkpoint is kept.
    #[error("{column}: a migration worker panicked")]
    WorkerPanicked {
        /// `TABLE.COLUMN`.
        column: String,
    },
}

impl From<PreflightError> for MigrateError {
    fn from(e: PreflightError) -> Self {
        MigrateError::Preflight(vec![e])
    }
}

impl From<OptionsError> for MigrateError {
    fn from(e: OptionsError) -> Self {
        PreflightError::Options(e).into()
    }
}

impl MigrateError {
    pub(crate) fn store(column: &impl ToString, source: StoreError) -> Self {
        MigrateError::Store {
            column: column.to_string(),
            cause: source,
        }
    }
}
