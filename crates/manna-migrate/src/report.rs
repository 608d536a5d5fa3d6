//! The census and the run report (the `--json` report of docs/migration-guide.md).

use std::collections::BTreeMap;
use std::fmt;

use manna_crypto::KeyId;
use serde::Serialize;

use crate::failures::FailureKind;
use crate::options::{Mode, Target};
use manna_store::RowId;

/// What a stored value is, for the census: its format and the configured
/// key it is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueClass {
    /// An AES-256-GCM envelope naming this key id (configured or not).
    Aes256Gcm(KeyId),
    /// A Fernet token authentic under this configured Fernet key (the first
    /// one in configured order, as MultiFernet tries them).
    Fernet(KeyId),
    /// Unencrypted text.
    Plaintext,
    /// Anything else: damaged tokens, garbage, values that are not text,
    /// and Fernet tokens that no configured Fernet key opens.
    Unknown,
}

/// How many values are in each format, by key: the report's `by_format`
/// object, `{"aes256gcm": {"<key id>": n}, "fernet": {"<fernet key id>": n},
/// "plaintext": n, "unknown": n}`.
///
/// AES values are counted under the key id their header names; Fernet
/// tokens under the configured Fernet key that opens them. A Fernet token no
/// configured key opens counts as `unknown` (and is a failed row); `NULL`s
/// are counted apart (the column report's `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Census {
    /// AES-256-GCM envelopes by key id (hex).
    pub aes256gcm: BTreeMap<String, u64>,
    /// Legacy Fernet tokens by Fernet key id (hex, as `info` prints them).
    pub fernet: BTreeMap<String, u64>,
    /// Unencrypted text.
    pub plaintext: u64,
    /// Anything else (damaged tokens, garbage, Fernet tokens under no
    /// configured key).
    pub unknown: u64,
}

impl Census {
    /// Counts one value of class `class`.
    pub fn add(&mut self, class: ValueClass) {
        self.add_n(class, 1);
    }

    /// Counts `n` values of class `class`.
    pub fn add_n(&mut self, class: ValueClass, n: u64) {
        match class {
            ValueClass::Aes256Gcm(key_id) => {
                *self.aes256gcm.entry(key_id.to_string()).or_default() += n;
            }
            ValueClass::Fernet(key_id) => {
                *self.fernet.entry(key_id.to_string()).or_default() += n;
            }
            ValueClass::Plaintext => self.plaintext += n,
            ValueClass::Unknown => self.unknown += n,
        }
    }

    /// Adds another census to this one.
    pub fn merge(&mut self, other: &Census) {
        for (k, n) in &other.aes256gcm {
            *self.aes256gcm.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.fernet {
            *self.fernet.entry(k.clone()).or_default() += n;
        }
        self.plaintext += other.plaintext;
        self.unknown += other.unknown;
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        self.aes256gcm.values().sum::<u64>()
            + self.fernet.values().sum::<u64>()
            + self.plaintext
            + self.unknown
    }

    /// Values under the AES key with this id (hex).
    pub fn aes_key(&self, key_id: &str) -> u64 {
        self.aes256gcm.get(key_id).copied().unwrap_or(0)
    }

    /// Values under the Fernet key with this id (hex).
    pub fn fernet_key(&self, key_id: &str) -> u64 {
        self.fernet.get(key_id).copied().unwrap_or(0)
    }

    /// Fernet tokens under any configured Fernet key.
    pub fn fernet_total(&self) -> u64 {
        self.fernet.values().sum()
    }
}

/// How a column's part of a run ended: a statement about the column at the
/// moment the run ended, never rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Status {
    /// Every row of the partition is in the target format (or `NULL`, or a
    /// failed row the caller acknowledged), as counted when the run ended.
    Completed,
    /// The run went over every row, but rows that can be migrated are still
    /// in another format (an application kept writing the old format, or
    /// rows kept changing under the compare-and-set). Run again.
    Incomplete,
    /// Every other row is in the target format, but some rows cannot be
    /// decrypted with the configured keys (listed by id in `failed`).
    FailedRows,
    /// Stopped at a batch boundary by the [`CancelToken`](crate::CancelToken);
    /// the checkpoint lets the next run continue.
    Cancelled,
    /// The migration lock's lease was lost (or a newer holder fenced this
    /// run's writes off); stopped without writing further. The next run
    /// continues from the checkpoint.
    LeaseLost,
    /// Not processed because the run stopped before reaching this column.
    NotStarted,
}

impl Status {
    /// `"completed"`, `"incomplete"`, `"failed-rows"`, `"cancelled"`,
    /// `"lease-lost"` or `"not-started"`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::FailedRows => "failed-rows",
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

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The verdict of a whole report, what scripts branch on (the CLI's exit
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Verdict {
    /// Every column completed: every row is in the target format (or
    /// `NULL`, or an acknowledged failed row). Exit status 0.
    Complete,
    /// Some rows are still in another format (live old-format writers, a
    /// cancelled run, a lost lease, a column not reached). Exit status 3.
    Incomplete,
    /// Some rows cannot be decrypted with the configured keys and were not
    /// acknowledged. Exit status 4 (it wins over `Incomplete`: running again
    /// does not fix these rows).
    Undecryptable,
}

impl Verdict {
    /// `"complete"`, `"incomplete"` or `"undecryptable"`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Complete => "complete",
            Verdict::Incomplete => "incomplete",
            Verdict::Undecryptable => "undecryptable",
        }
    }

    /// The process exit status the CLI uses: 0, 3 or 4.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Complete => 0,
            Verdict::Incomplete => 3,
            Verdict::Undecryptable => 4,
        }
    }
}

/// Which moment [`ColumnReport::by_format`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CensusKind {
    /// The values as the scan found them (dry-run, verify-only).
    AsFound,
    /// The whole partition when a migrate run that went over every row
    /// ended: an aggregate count by envelope header plus a read of the rows
    /// not in the target format, taken after the last write.
    After,
    /// Only the rows this run processed, as it left them (a migrate run that
    /// stopped early).
    Processed,
}

/// One column's part of the report. Serializes to the documented column object plus
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
    /// their values), in key order. They are left untouched. Acknowledged
    /// ones are listed too (and counted in `failed_accepted`). At most
    /// [`FAILED_IDS_LISTED`](crate::FAILED_IDS_LISTED) are listed;
    /// `failed_total` counts them all.
    pub failed: Vec<RowId>,
    /// How many rows cannot be decrypted, listed in `failed` or not.
    pub failed_total: u64,
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
    /// How many of the `failed` rows the caller acknowledged
    /// ([`Options::accepted_failures`](crate::Options::accepted_failures)).
    pub failed_accepted: u64,
    /// Extra passes over the rows not yet in the target format, after the
    /// main scan (rows written in the old format behind the cursor, rows
    /// that changed under the compare-and-set).
    pub sweeps: u32,
    /// Why a saved checkpoint was not resumed (it belongs to a run with other
    /// parameters), if one was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_ignored: Option<String>,
    /// Failed rows by kind (serialized by the kind's name, e.g.
    /// `"unknown_key"`).
    pub failure_kinds: BTreeMap<FailureKind, u64>,
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

/// The result of a run over one or more columns. Check its
/// [`verdict`](Report::verdict): a report is returned for runs that did not
/// complete too.
///
/// ```
/// use manna_migrate::{Mode, Report, Target};
/// let r = Report::new(Mode::DryRun, Target::Aes256Gcm);
/// assert_eq!(r.to_json(), r#"{"mode":"dry-run","target":"aes256gcm","columns":[],"verdict":"complete"}"#);
/// assert!(r.is_success());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use = "a report may say the run did not complete: check its verdict"]
pub struct Report {
    /// What the run did.
    pub mode: Mode,
    /// The target format.
    pub target: Target,
    /// One entry per column, in the order given.
    pub columns: Vec<ColumnReport>,
}

/// The JSON shape: the report's fields and its verdict.
impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            mode: Mode,
            target: Target,
            columns: &'a [ColumnReport],
            verdict: Verdict,
        }
        Json {
            mode: self.mode,
            target: self.target,
            columns: &self.columns,
            verdict: self.verdict(),
        }
        .serialize(serializer)
    }
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

    /// The verdict: complete only when every column completed.
    pub fn verdict(&self) -> Verdict {
        if self
            .columns
            .iter()
            .any(|c| c.failed_total > c.failed_accepted)
        {
            Verdict::Undecryptable
        } else if self.columns.iter().all(|c| c.status == Status::Completed) {
            Verdict::Complete
        } else {
            Verdict::Incomplete
        }
    }

    /// Whether the verdict is [`Verdict::Complete`].
    pub fn is_success(&self) -> bool {
        self.verdict() == Verdict::Complete
    }

    /// Number of failed rows over all columns (listed or not).
    pub fn failed_count(&self) -> u64 {
        self.columns.iter().map(|c| c.failed_total).sum()
    }

    /// The report as the documented JSON (one line).
    ///
    /// Infallible: a report holds only strings, numbers, lists and maps keyed
    /// by strings or unit variants, which JSON always represents. Should a
    /// future field break that, this returns `{"error":"…"}` rather than
    /// panicking.
    pub fn to_json(&self) -> String {
        json_or_error(serde_json::to_string(self))
    }

    /// The report as indented JSON. Infallible, like [`Report::to_json`].
    pub fn to_json_pretty(&self) -> String {
        json_or_error(serde_json::to_string_pretty(self))
    }
}

/// The serialized report, or — should serialization ever fail, which the
/// report's plain fields rule out — a JSON object naming the error, so the
/// library never panics on this path.
fn json_or_error(json: serde_json::Result<String>) -> String {
    json.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}
