//! Key retirement check: is any row still encrypted under a key?

use std::fmt;
use std::str::FromStr;

use manna_crypto::{inspect, Format, KeyId};
use serde::Serialize;

use crate::error::MigrateError;
use crate::store::{ColumnRef, ColumnStore, IdRange, RowId};

/// Rows scanned per store call by [`key_usage`].
const SCAN_BATCH: usize = 5_000;
/// Most row ids listed per column by [`key_usage`].
const SAMPLE_IDS: usize = 10;

/// A key one wants to drop from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetiringKey {
    /// An AES-256-GCM key, by id.
    Aes(KeyId),
    /// The Fernet fallback (all Fernet keys: a Fernet token does not name
    /// its key).
    Fernet,
}

impl fmt::Display for RetiringKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetiringKey::Aes(id) => write!(f, "{id}"),
            RetiringKey::Fernet => f.write_str("fernet"),
        }
    }
}

impl FromStr for RetiringKey {
    type Err = String;

    /// `fernet`, or an AES key id in hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("fernet") {
            return Ok(RetiringKey::Fernet);
        }
        s.parse::<KeyId>()
            .map(RetiringKey::Aes)
            .map_err(|_| format!("invalid key {s:?}: expected an AES key id (hex) or `fernet`"))
    }
}

impl RetiringKey {
    fn matches(self, format: Format) -> bool {
        match (self, format) {
            (RetiringKey::Aes(id), Format::Aes256Gcm { key_id }) => id == key_id,
            (RetiringKey::Fernet, Format::Fernet) => true,
            _ => false,
        }
    }
}

/// Where a key is still used in one column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ColumnKeyUsage {
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
    /// Rows whose value is under the key.
    pub rows: u64,
    /// The first such row ids (at most 10).
    pub sample_ids: Vec<RowId>,
}

/// The answer of [`key_usage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyUsage {
    /// The key asked about (`fernet` or the key id).
    pub key: String,
    /// One entry per column scanned.
    pub columns: Vec<ColumnKeyUsage>,
}

impl KeyUsage {
    /// Whether any row still needs the key: if so, it must not be dropped.
    pub fn in_use(&self) -> bool {
        self.rows() > 0
    }

    /// Rows still under the key, over all columns.
    pub fn rows(&self) -> u64 {
        self.columns.iter().map(|c| c.rows).sum()
    }
}

/// Scans `columns` (formats only, nothing is decrypted) and tells which rows
/// still use `key`. A key is safe to retire when [`KeyUsage::in_use`] is
/// `false` for every column that was ever encrypted with it.
///
/// ```
/// # use std::sync::Arc;
/// use manna_migrate::testing::MemoryStore;
/// use manna_migrate::{key_usage, ColumnRef, IdKind, RetiringKey};
/// let store = MemoryStore::new();
/// let c = ColumnRef::parse("items.secret", "id").unwrap();
/// store.create_table(&c, IdKind::Int, &[], false);
/// store.insert(&c, 1, Some("plain".into()));
/// let usage = key_usage(&store, &[c], RetiringKey::Fernet).unwrap();
/// assert!(!usage.in_use());
/// ```
pub fn key_usage(
    store: &dyn ColumnStore,
    columns: &[ColumnRef],
    key: RetiringKey,
) -> Result<KeyUsage, MigrateError> {
    let mut usage = KeyUsage {
        key: key.to_string(),
        columns: Vec::new(),
    };
    for column in columns {
        let mut found = ColumnKeyUsage {
            table: column.table.to_string(),
            column: column.column.to_string(),
            rows: 0,
            sample_ids: Vec::new(),
        };
        let mut range = IdRange::all();
        loop {
            let rows = store
                .scan(column, &range, SCAN_BATCH)
                .map_err(|e| MigrateError::store(column, e))?;
            let Some(last) = rows.last() else { break };
            range = range.resumed_after(Some(last.id.clone()));
            for row in &rows {
                if row
                    .value
                    .as_deref()
                    .is_some_and(|v| key.matches(inspect(v)))
                {
                    found.rows += 1;
                    if found.sample_ids.len() < SAMPLE_IDS {
                        found.sample_ids.push(row.id.clone());
                    }
                }
            }
        }
        usage.columns.push(found);
    }
    Ok(usage)
}
