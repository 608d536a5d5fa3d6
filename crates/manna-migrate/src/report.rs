//! The census and the run report (GUIDE §3 `--json`).

use std::collections::BTreeMap;
use std::fmt;

use manna_crypto::Format;
use serde::Serialize;

use crate::options::{Mode, Target};
use crate::store::RowId;

/// How many values are in each format: the report's `by_format` object,
/// `{"aes256gcm": {"<key id>": n}, "fernet": n, "plaintext": n, "unknown": n}`.
///
/// Formats are told from the stored value without decrypting
/// ([`manna_crypto::inspect`]); `NULL`s are counted apart (the column
/// report's `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Census {
    /// AES-256-GCM envelopes by key id (hex).
    pub aes256gcm: BTreeMap<String, u64>,
    /// Legacy Fernet tokens.
    pub fernet: u64,
    /// Unencrypted text.
    pub plaintext: u64,
    /// Anything else (damaged tokens, garbage).
    pub unknown: u64,
}

impl Census {
    /// Counts one value of format `format`.
    pub fn add(&mut self, format: Format) {
        self.add_n(format, 1);
    }

    /// Counts `n` values of format `format`.
    pub fn add_n(&mut self, format: Format, n: u64) {
        match format {
            Format::Aes256Gcm { key_id } => {
                *self.aes256gcm.entry(key_id.to_string()).or_default() += n;
            }
            Format::Fernet => self.fernet += n,
            Format::Plaintext => self.plaintext += n,
            _ => self.unknown += n,
        }
    }

    /// Adds another census to this one.
    pub fn merge(&mut self, other: &Census) {
        for (k, n) in &other.aes256gcm {
            *self.aes256gcm.entry(k.clone()).or_default() += n;
        }
        self.fernet += other.fernet;
        self.plaintext += other.plaintext;
        self.unknown += other.unknown;
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        self.aes256gcm.values().sum::<u64>() + self.fernet + self.plaintext + self.unknown
    }

    /// Values under the AES key with this id (hex).
    pub fn aes_key(&self, key_id: &str) -> u64 {
        self.aes256gcm.get(key_id).copied().unwrap_or(0)
    }
}

/// How a column's part of a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Status {
    /// Every row of the partition was processed.
    Completed,
    /// Stopped at a batch boundary by the [`CancelToken`](crate::CancelToken);
    /// the checkpoint lets the next run continue.
    Cancelled,
    /// The migration lock's lease was lost; stopped at a batch boundary
    /// without writing further. The next run continues from the checkpoint.
    LeaseLost,
    /// Not processed because the run stopped before reaching this column.
    NotStarted,
}

impl Status {
    /// `"completed"`, `"cancelled"`, `"lease-lost"` or `"not-started"`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::LeaseLost => "lease-lost",
            Status::NotStarted => "not-started",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Which moment [`ColumnReport::by_format`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CensusKind {
    /// The values as the scan found them (dry-run, verify-only).
    AsFound,
    /// The whole partition after a completed migrate run: how the run left
    /// each row when it covered the partition in one go (application writes
    /// made meanwhile are not reflected), otherwise — resumed from a
    /// checkpoint, or [`Options::census_after`](crate::Options::census_after)
    /// — a final read-only scan.
    After,
    /// Only the rows this run processed, as it left them (a migrate run that
    /// stopped early).
    Processed,
}

/// One column's part of the report. Serializes to the GUIDE §3 object plus
/// extra fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ColumnReport {
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
    /// Rows in the partition (see [`ColumnReport::census`] for the moment).
    pub total: u64,
    /// Values by format and key id.
    pub by_format: Census,
    /// Rows rewritten (including those before a resumed checkpoint).
    pub migrated: u64,
    /// Rows already in the target format or `NULL`.
    pub unchanged: u64,
    /// Compare-and-set misses: rows changed by someone else between scan
    /// and write. They were re-read and re-planned, never overwritten.
    pub conflicts: u64,
    /// Ids of rows that cannot be decrypted with the configured keys (never
    /// their values). They are left untouched.
    pub failed: Vec<RowId>,
    /// Wall time of this column's run, in seconds.
    pub elapsed_s: f64,
    /// Rows scanned per second by this run.
    pub rows_per_s: f64,
    // --- extra fields ---
    /// `NULL` values.
    pub null: u64,
    /// Rows scanned by this run.
    pub scanned: u64,
    /// Rows that decrypt but are not in the target format: for dry-run and
    /// verify-only the rows a migration would rewrite; after a migration the
    /// rows still left behind (normally 0).
    pub pending: u64,
    /// Failed rows by reason (`unknown-format`, `unknown-key`,
    /// `authentication`, `no-fernet-key`, `plaintext-not-accepted`,
    /// `verification-mismatch`, ...).
    pub failure_kinds: BTreeMap<String, u64>,
    /// How this column's run ended.
    pub status: Status,
    /// Which moment `by_format`, `total` and `failed` describe.
    pub census: CensusKind,
    /// The shard handled (`i/n`).
    pub shard: String,
    /// Whether the run continued from a saved checkpoint.
    pub resumed: bool,
    /// The batch size in use at the end (after adaptation).
    pub batch_size: usize,
}

/// The result of a run over one or more columns.
///
/// ```
/// use manna_migrate::{Mode, Report, Target};
/// let r = Report::new(Mode::DryRun, Target::Aes256Gcm);
/// assert_eq!(r.to_json(), r#"{"mode":"dry-run","target":"aes256gcm","columns":[]}"#);
/// assert!(r.is_success());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// What the run did.
    pub mode: Mode,
    /// The target format.
    pub target: Target,
    /// One entry per column, in the order given.
    pub columns: Vec<ColumnReport>,
}

impl Report {
    /// An empty report.
    pub fn new(mode: Mode, target: Target) -> Self {
        Report {
            mode,
            target,
            columns: Vec::new(),
        }
    }

    /// Whether every column completed with no failed row: what the CLI's
    /// exit status reflects (verify-only exits non-zero on any failure).
    pub fn is_success(&self) -> bool {
        self.columns
            .iter()
            .all(|c| c.status == Status::Completed && c.failed.is_empty())
    }

    /// Number of failed rows over all columns.
    pub fn failed_count(&self) -> usize {
        self.columns.iter().map(|c| c.failed.len()).sum()
    }

    /// The report as the GUIDE §3 JSON (one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The report as indented JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}
