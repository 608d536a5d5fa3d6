//! What a run does and how: mode, target format, AAD binding, batching,
//! parallelism, sharding, cancellation.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shard::Shard;
use manna_store::{ColumnRef, RowId};

/// What a run does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mode {
    /// Re-encrypt every value not yet in the target format (writes).
    #[default]
    Migrate,
    /// Scan and plan every value (decrypting those that would be
    /// re-encrypted) and take a census; write nothing.
    DryRun,
    /// Decrypt every value, take a census by format and key id and list the
    /// rows that fail; write nothing.
    VerifyOnly,
}

impl Mode {
    /// `"migrate"`, `"dry-run"` or `"verify-only"` (the report's `mode`).
    pub fn label(self) -> &'static str {
        match self {
            Mode::Migrate => "migrate",
            Mode::DryRun => "dry-run",
            Mode::VerifyOnly => "verify-only",
        }
    }

    /// Whether the mode writes to the store.
    pub fn writes(self) -> bool {
        matches!(self, Mode::Migrate)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The format every value should end in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Target {
    /// AES-256-GCM under the keyring's primary key.
    #[default]
    Aes256Gcm,
    /// Legacy Fernet under the keyring's first Fernet key: the rollback.
    Fernet,
}

impl Target {
    /// `"aes256gcm"` or `"fernet"` (the report's `target`).
    pub fn label(self) -> &'static str {
        match self {
            Target::Aes256Gcm => "aes256gcm",
            Target::Fernet => "fernet",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Target {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aes256gcm" | "aes-256-gcm" | "aes" => Ok(Target::Aes256Gcm),
            "fernet" => Ok(Target::Fernet),
            other => Err(OptionsError::Target(other.chars().take(64).collect())),
        }
    }
}

/// What AES-256-GCM values are bound to (their associated data).
///
/// Fernet has no associated data: Fernet values are read and written the same
/// way in every mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AadMode {
    /// `TABLE.COLUMN`: a value copied to another column does not decrypt.
    #[default]
    Column,
    /// `TABLE.COLUMN:ID`: a value copied to another row does not decrypt
    /// either (the Python peer's `f"{table}.{column}:{id}"`).
    Row,
    /// No associated data.
    None,
}

impl AadMode {
    /// The associated data of the value of row `id` in `column`.
    ///
    /// ```
    /// use manna_migrate::{AadMode, ColumnRef, RowId};
    /// let c = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
    /// assert_eq!(AadMode::Column.aad(&c, &RowId::Int(7)), b"plaid_items.access_token");
    /// assert_eq!(AadMode::Row.aad(&c, &RowId::Int(7)), b"plaid_items.access_token:7");
    /// assert!(AadMode::None.aad(&c, &RowId::Int(7)).is_empty());
    /// ```
    pub fn aad(self, column: &ColumnRef, id: &RowId) -> Vec<u8> {
        self.shared(column)
            .unwrap_or_else(|| manna_crypto::aad::row(&column.aad(), id).into_bytes())
    }

    /// The associated data shared by every row of `column`, when the mode
    /// does not depend on the row (`column`, `none`); `None` for `row`.
    pub(crate) fn shared(self, column: &ColumnRef) -> Option<Vec<u8>> {
        match self {
            AadMode::Column => Some(column.aad().into_bytes()),
            AadMode::None => Some(Vec::new()),
            AadMode::Row => None,
        }
    }

    /// `"column"`, `"row"` or `"none"`.
    pub fn label(self) -> &'static str {
        match self {
            AadMode::Column => "column",
            AadMode::Row => "row",
            AadMode::None => "none",
        }
    }
}

impl FromStr for AadMode {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "column" => Ok(AadMode::Column),
            "row" => Ok(AadMode::Row),
            "none" => Ok(AadMode::None),
            other => Err(OptionsError::AadMode(other.chars().take(64).collect())),
        }
    }
}

impl fmt::Display for AadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a run is carried out. Start from [`Options::default`] and set fields.
///
/// ```
/// use manna_migrate::{Mode, Options, Target};
/// let mut o = Options::default();
/// o.mode = Mode::DryRun;
/// o.target = Target::Fernet;
/// o.workers = 4;
/// assert!(o.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Migrate, dry-run or verify-only.
    pub mode: Mode,
    /// Target format.
    pub target: Target,
    /// Associated-data binding of AES values.
    pub aad: AadMode,
    /// First batch size (rows per scan and per write). Default 1,000.
    pub batch_size: usize,
    /// Smallest batch the adaptive sizing may choose. Default 10.
    pub min_batch_size: usize,
    /// Largest batch the adaptive sizing may choose. Default 10,000.
    pub max_batch_size: usize,
    /// Adapt the batch size toward [`Options::target_batch_time`].
    /// Default on.
    pub adaptive: bool,
    /// Wall time one batch (plan, encrypt, write) should take. Default 250 ms.
    pub target_batch_time: Duration,
    /// Crypto-and-write workers fed by one scanner. Default 1.
    pub workers: usize,
    /// Upper bound on rows scanned per second; `None`: unbounded. A ceiling
    /// at every moment: a batch (at most one second's worth of rows) that
    /// follows a full one is read when its rows are due, so its rows do not
    /// age while the run waits (a pass whose last batch is full can idle up
    /// to one batch's time before the scan that finds it done).
    pub max_rows_per_sec: Option<u64>,
    /// Which part of the key space this process handles (`--shard i/n`).
    pub shard: Shard,
    /// Ignore (and clear) a saved checkpoint and start from the beginning.
    pub restart: bool,
    /// Bump the row's version column on rewrite. Off by default: the
    /// logical value did not change.
    pub bump_version: bool,
    /// Check the columns before the run ([`Migrator::preflight`](crate::Migrator::preflight)):
    /// [`Migrator::run`](crate::Migrator::run) refuses to start when it
    /// fails. Default on.
    pub preflight: bool,
    /// At most this many extra passes over the rows still not in the target
    /// format after the main scan, each made only while the previous one
    /// made progress. Default 8.
    pub max_sweeps: u32,
    /// Failed rows the operator acknowledged: still reported, they no longer
    /// keep a column from completing.
    pub accepted_failures: AcceptedFailures,
    /// Rows read by [`Migrator::preflight`](crate::Migrator::preflight) per
    /// column. Default 100.
    pub preflight_sample: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Migrate,
            target: Target::Aes256Gcm,
            aad: AadMode::Column,
            batch_size: 1_000,
            min_batch_size: 10,
            max_batch_size: 10_000,
            adaptive: true,
            target_batch_time: Duration::from_millis(250),
            workers: 1,
            max_rows_per_sec: None,
            shard: Shard::ALL,
            restart: false,
            bump_version: false,
            preflight: true,
            max_sweeps: 8,
            accepted_failures: AcceptedFailures::default(),
            preflight_sample: 100,
        }
    }
}

impl Options {
    /// Sets the first batch size to `size` and widens
    /// [`min_batch_size`](Options::min_batch_size)..=[`max_batch_size`](Options::max_batch_size)
    /// to include it, so the run starts with exactly `size` rows per batch
    /// ([`Options::validate`] refuses a `batch_size` outside the bounds;
    /// nothing is clamped). A `size` of 0 or above [`MAX_BATCH_SIZE`] is
    /// still refused by [`Options::validate`].
    ///
    /// ```
    /// use manna_migrate::Options;
    /// let o = Options::default().with_batch_size(50_000);
    /// assert_eq!((o.batch_size, o.max_batch_size), (50_000, 50_000));
    /// assert!(o.validate().is_ok());
    /// ```
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self.min_batch_size = self.min_batch_size.min(size);
        self.max_batch_size = self.max_batch_size.max(size);
        self
    }
}

/// Most workers a run may have ([`Options::validate`]).
pub const MAX_WORKERS: usize = 256;
/// Most shards a table may be split into ([`Options::validate`]).
pub const MAX_SHARDS: u32 = 1024;
/// Largest batch size, first, smallest or largest ([`Options::validate`]).
pub const MAX_BATCH_SIZE: usize = 1_000_000;
/// Most rows [`Migrator::preflight`](crate::Migrator::preflight) may sample
/// per column ([`Options::validate`]).
pub const MAX_PREFLIGHT_SAMPLE: usize = 1_000_000;

impl Options {
    /// Checks the numbers: batch sizes in `1..=`[`MAX_BATCH_SIZE`] and
    /// ordered (min, first, max), workers in `1..=`[`MAX_WORKERS`], shard counts in
    /// `1..=`[`MAX_SHARDS`], a positive throttle. Out-of-range values are
    /// refused, never clamped.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(OptionsError::BatchSize(self.batch_size));
        }
        if self.min_batch_size == 0
            || self.min_batch_size > self.max_batch_size
            || self.max_batch_size > MAX_BATCH_SIZE
        {
            return Err(OptionsError::BatchBounds {
                min: self.min_batch_size,
                max: self.max_batch_size,
            });
        }
        if !(self.min_batch_size..=self.max_batch_size).contains(&self.batch_size) {
            return Err(OptionsError::BatchOutsideBounds {
                size: self.batch_size,
                min: self.min_batch_size,
                max: self.max_batch_size,
            });
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(OptionsError::Workers(self.workers));
        }
        if self.max_rows_per_sec == Some(0) {
            return Err(OptionsError::ZeroRate);
        }
        if self.shard.count == 0 || self.shard.index >= self.shard.count {
            return Err(OptionsError::Shard(self.shard));
        }
        if self.shard.count > MAX_SHARDS {
            return Err(OptionsError::TooManyShards(self.shard));
        }
        if self.preflight_sample > MAX_PREFLIGHT_SAMPLE {
            return Err(OptionsError::PreflightSample(self.preflight_sample));
        }
        if self.target_batch_time.is_zero() {
            return Err(OptionsError::ZeroBatchTime);
        }
        Ok(())
    }
}

/// Why [`Options`] (or one option parsed from text) cannot be used. Options
/// out of range are refused, never clamped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `batch_size` outside `1..=`[`MAX_BATCH_SIZE`].
    #[error("batch size must be between 1 and {MAX_BATCH_SIZE} (got {0})")]
    BatchSize(usize),
    /// The adaptive batch size bounds are out of order or too large.
    #[error("batch size bounds must satisfy 1 <= min ({min}) <= max ({max}) <= {MAX_BATCH_SIZE}")]
    BatchBounds {
        /// `min_batch_size`.
        min: usize,
        /// `max_batch_size`.
        max: usize,
    },
    /// The first batch size outside the adaptive bounds (it is never
    /// clamped: widen the bounds, or set it with [`Options::with_batch_size`]).
    #[error("batch size {size} is outside the adaptive bounds {min}..={max}")]
    BatchOutsideBounds {
        /// `batch_size`.
        size: usize,
        /// `min_batch_size`.
        min: usize,
        /// `max_batch_size`.
        max: usize,
    },
    /// `workers` outside `1..=`[`MAX_WORKERS`].
    #[error("workers must be between 1 and {MAX_WORKERS} (got {0})")]
    Workers(usize),
    /// A throttle of zero rows per second.
    #[error("max rows per second must be at least 1")]
    ZeroRate,
    /// A shard index not below the shard count.
    #[error("invalid shard {0}: expected i/n with 0 <= i < n")]
    Shard(Shard),
    /// More than [`MAX_SHARDS`] shards.
    #[error("invalid shard {0}: at most {MAX_SHARDS} shards")]
    TooManyShards(Shard),
    /// A preflight sample over [`MAX_PREFLIGHT_SAMPLE`] rows.
    #[error("preflight sample must be at most {MAX_PREFLIGHT_SAMPLE} rows (got {0})")]
    PreflightSample(usize),
    /// A zero target batch time.
    #[error("target batch time must be positive")]
    ZeroBatchTime,
    /// Not a target format name.
    #[error("invalid target {0:?}: expected aes256gcm or fernet")]
    Target(String),
    /// Not an AAD mode name.
    #[error("invalid AAD mode {0:?}: expected column, row or none")]
    AadMode(String),
}

/// Failed rows an operator has looked at and accepts (rows whose data is
/// known lost, test rows): a run still lists them, but they no longer make
/// it fail.
///
/// The text form has one row per line: `ID` (that id in every column) or
/// `TABLE.COLUMN ID`; blank lines and lines starting with `#` are ignored.
///
/// ```
/// use manna_migrate::{AcceptedFailures, ColumnRef, RowId};
/// let a = AcceptedFailures::parse("# lost in 2023\n17\nusers.api_key 9f2c\n").unwrap();
/// let tokens = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
/// let keys = ColumnRef::parse("users.api_key", "id").unwrap();
/// assert!(a.accepts(&tokens, &RowId::Int(17)));
/// assert!(a.accepts(&keys, &RowId::from("9f2c")));
/// assert!(!a.accepts(&tokens, &RowId::from("9f2c")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptedFailures {
    any_column: BTreeSet<String>,
    by_column: BTreeSet<(String, String)>,
}

/// A line of an accepted-failures list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: expected `ID` or `TABLE.COLUMN ID`")]
pub struct AcceptedFailuresError {
    /// The 1-based line number.
    pub line: usize,
}

impl AcceptedFailures {
    /// Parses the text form (see the type's docs).
    pub fn parse(text: &str) -> Result<Self, AcceptedFailuresError> {
        let mut accepted = AcceptedFailures::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(char::is_whitespace) {
                None => {
                    accepted.any_column.insert(line.to_owned());
                }
                Some((column, id)) => {
                    let column = ColumnRef::parse(column, "id")
                        .map_err(|_| AcceptedFailuresError { line: i + 1 })?;
                    accepted
                        .by_column
                        .insert((column.to_string(), id.trim().to_owned()));
                }
            }
        }
        Ok(accepted)
    }

    /// Accepts failed row `id`, in `column` only or (`None`) in every column.
    pub fn accept(&mut self, column: Option<&ColumnRef>, id: &RowId) {
        match column {
            Some(c) => {
                self.by_column.insert((c.to_string(), id.to_string()));
            }
            None => {
                self.any_column.insert(id.to_string());
            }
        }
    }

    /// Whether failed row `id` of `column` is accepted.
    pub fn accepts(&self, column: &ColumnRef, id: &RowId) -> bool {
        let id = id.to_string();
        self.any_column.contains(&id) || self.by_column.contains(&(column.to_string(), id))
    }

    /// Whether nothing is accepted.
    pub fn is_empty(&self) -> bool {
        self.any_column.is_empty() && self.by_column.is_empty()
    }
}

/// A cancellation flag shared between the caller (e.g. a Ctrl-C handler) and
/// a run. The run checks it between batches: the batches in flight finish,
/// their checkpoint is saved and the report is returned with status
/// `cancelled`.
///
/// ```
/// use manna_migrate::CancelToken;
/// let token = CancelToken::new();
/// let for_handler = token.clone();
/// for_handler.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Asks the run to stop at the next batch boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue 9: out-of-range numbers are refused with a clear line, never
    /// clamped (`--workers 100000` used to panic spawning threads, `--shard
    /// 0/4294967295` to run for minutes).
    #[test]
    fn bounds_are_enforced_not_clamped() {
        let with = |f: &dyn Fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o.validate().map_err(|e| e.to_string())
        };
        assert!(with(&|o| o.workers = MAX_WORKERS).is_ok());
        let err = with(&|o| o.workers = 100_000).unwrap_err();
        assert!(
            err.contains("between 1 and 256") && err.contains("100000"),
            "{err}"
        );
        let err = with(&|o| {
            o.shard = Shard {
                index: 0,
                count: u32::MAX,
            }
        })
        .unwrap_err();
        assert!(err.contains("at most 1024 shards"), "{err}");
        assert!(with(&|o| o.shard = Shard {
            index: 1023,
            count: MAX_SHARDS
        })
        .is_ok());
        let err = with(&|o| o.batch_size = MAX_BATCH_SIZE + 1).unwrap_err();
        assert!(err.contains("1000000"), "{err}");
        let err = with(&|o| o.max_batch_size = MAX_BATCH_SIZE + 1).unwrap_err();
        assert!(err.contains("<= 1000000"), "{err}");
        assert!(with(&|o| o.preflight_sample = MAX_PREFLIGHT_SAMPLE + 1).is_err());
        let o = Options {
            workers: 0,
            ..Options::default()
        };
        assert_eq!(
            o.validate(),
            Err(OptionsError::Workers(0)),
            "typed, matchable"
        );
    }
}
