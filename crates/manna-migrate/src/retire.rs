//! Key retirement check: does any row still need a key?

use std::fmt;

use manna_crypto::{inspect, Format, KeyId, Keyring};
use serde::Serialize;

use crate::error::MigrateError;
use manna_store::{ColumnRef, ColumnStore, IdRange, RowId, Value};

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
    /// One Fernet key, by id (as `info` prints it). A Fernet token names no
    /// key: it needs the first configured key that opens it.
    FernetKey(KeyId),
    /// The Fernet fallback: every Fernet key.
    Fernet,
}

impl fmt::Display for RetiringKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetiringKey::Aes(id) | RetiringKey::FernetKey(id) => write!(f, "{id}"),
            RetiringKey::Fernet => f.write_str("fernet"),
        }
    }
}

/// Why a key named for retirement cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetiringKeyError {
    /// Neither `fernet` nor a key id.
    #[error("invalid key {shown:?}: expected a key id (16 hex digits) or `fernet`")]
    Invalid {
        /// The input, cut to 32 characters.
        shown: String,
    },
    /// A well-formed id that no configured key has.
    #[error("no configured key has id {key_id} (AES keys: {aes}; Fernet keys: {fernet})")]
    NotConfigured {
        /// The id asked about.
        key_id: KeyId,
        /// The configured AES key ids.
        aes: String,
        /// The configured Fernet key ids.
        fernet: String,
    },
}

impl RetiringKey {
    /// Resolves `s` against `keyring`: `fernet` (every Fernet key), or the id
    /// of a configured AES or Fernet key, as `info` prints them. The key
    /// must be configured: to tell a Fernet token's key, it must be opened.
    ///
    /// ```
    /// use manna_crypto::{AesKey, FernetKey, Keyring};
    /// use manna_migrate::RetiringKey;
    /// let fernet = FernetKey::generate();
    /// let keyring = Keyring::builder()
    ///     .primary(AesKey::generate())
    ///     .fernet(fernet.clone())
    ///     .build()
    ///     .unwrap();
    /// let id = fernet.id().to_string();
    /// assert_eq!(RetiringKey::resolve(&id, &keyring), Ok(RetiringKey::FernetKey(fernet.id())));
    /// assert_eq!(RetiringKey::resolve("fernet", &keyring), Ok(RetiringKey::Fernet));
    /// assert!(RetiringKey::resolve("00112233445566ff", &keyring).is_err());
    /// ```
    pub fn resolve(s: &str, keyring: &Keyring) -> Result<Self, RetiringKeyError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("fernet") {
            return Ok(RetiringKey::Fernet);
        }
        let key_id: KeyId = s.parse().map_err(|_| RetiringKeyError::Invalid {
            shown: s.chars().take(32).collect(),
        })?;
        let fernet = keyring.fernet_key_ids();
        if fernet.contains(&key_id) {
            return Ok(RetiringKey::FernetKey(key_id));
        }
        let mut aes = vec![keyring.primary_key_id()];
        aes.extend(keyring.decrypt_only_key_ids());
        if aes.contains(&key_id) {
            return Ok(RetiringKey::Aes(key_id));
        }
        Err(RetiringKeyError::NotConfigured {
            key_id,
            aes: KeyId::list(&aes),
            fernet: KeyId::list(&fernet),
        })
    }

    fn is_fernet(self) -> bool {
        matches!(self, RetiringKey::Fernet | RetiringKey::FernetKey(_))
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
    /// Rows whose value needs the key.
    pub rows: u64,
    /// The first such row ids (at most 10).
    pub sample_ids: Vec<RowId>,
    /// Fernet tokens that no configured Fernet key opens (they need no
    /// configured key, and are lost without the key they were made with);
    /// counted when a Fernet key is checked.
    pub unreadable_fernet: u64,
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

    /// Rows still needing the key, over all columns.
    pub fn rows(&self) -> u64 {
        self.columns.iter().map(|c| c.rows).sum()
    }
}

/// Tells which rows of `columns` still need `key`, as the columns are at the
/// moment of the check. A key is safe to retire when [`KeyUsage::in_use`] is
/// `false` for every column that was ever encrypted with it *and* no writer
/// still encrypts with it.
///
/// AES keys are counted by envelope header with one aggregate query per
/// column; for Fernet keys every Fernet token is opened to find the first
/// configured key it is authentic under (MultiFernet order).
///
/// ```
/// use manna_crypto::{AesKey, Keyring};
/// use manna_store::testing::MemoryStore;
/// use manna_migrate::{key_usage, ColumnRef, IdKind, RetiringKey};
/// let store = MemoryStore::new();
/// let c = ColumnRef::parse("items.secret", "id").unwrap();
/// store.create_table(&c, IdKind::Int, &[], false);
/// store.insert(&c, 1, Some("plain".into()));
/// let keyring = Keyring::new(AesKey::generate());
/// let usage = key_usage(&store, &keyring, &[c], RetiringKey::Fernet).unwrap();
/// assert!(!usage.in_use());
/// ```
pub fn key_usage(
    store: &dyn ColumnStore,
    keyring: &Keyring,
    columns: &[ColumnRef],
    key: RetiringKey,
) -> Result<KeyUsage, MigrateError> {
    let mut usage = KeyUsage {
        key: key.to_string(),
        columns: Vec::new(),
    };
    for column in columns {
        let st = |e| MigrateError::store(column, e);
        store.check_column(column).map_err(st)?;
        let mut found = ColumnKeyUsage {
            table: column.table.to_string(),
            column: column.column.to_string(),
            rows: 0,
            sample_ids: Vec::new(),
            unreadable_fernet: 0,
        };
        // The rows to read: for an AES key, none if the aggregate finds no
        // envelope under it; else those not under the primary key (or all,
        // if it is the primary). For Fernet, every non-envelope row.
        let skip = match key {
            RetiringKey::Aes(id) => {
                let census = store.census(column, &IdRange::all()).map_err(st)?;
                if !census.envelopes.contains_key(&id.to_string()) {
                    usage.columns.push(found);
                    continue;
                }
                (id != keyring.primary_key_id())
                    .then(|| manna_crypto::text_header(keyring.primary_key_id()))
            }
            RetiringKey::Fernet | RetiringKey::FernetKey(_) => Some("mn1:".to_owned()),
        };
        let mut range = IdRange::all();
        loop {
            let rows = match &skip {
                Some(prefix) => store.scan_unprefixed(column, &range, SCAN_BATCH, prefix),
                None => store.scan(column, &range, SCAN_BATCH),
            }
            .map_err(st)?;
            let Some(last) = rows.last() else { break };
            range = range.resumed_after(Some(last.id.clone()));
            for row in &rows {
                let Value::Text(value) = &row.value else {
                    continue;
                };
                let needs = match (key, inspect(value)) {
                    (RetiringKey::Aes(id), Format::Aes256Gcm { key_id }) => id == key_id,
                    (k, Format::Fernet) if k.is_fernet() => match keyring.fernet_key_of(value) {
                        Some(opener) => {
                            k == RetiringKey::Fernet || k == RetiringKey::FernetKey(opener)
                        }
                        None => {
                            found.unreadable_fernet += 1;
                            false
                        }
                    },
                    _ => false,
                };
                if needs {
                    found.rows += 1;
                    if found.sample_ids.len() < SAMPLE_IDS {
                        found.sample_ids.push(row.id.clone());
                    }
                }
            }
        }
        tracing::info!(target: manna_crypto::audit::TARGET, event = "retire_check",
            %column, key = %key, rows = found.rows, unreadable_fernet = found.unreadable_fernet,
            "retire-check counted the rows that need a key");
        usage.columns.push(found);
    }
    tracing::info!(target: manna_crypto::audit::TARGET, event = "retire_check", key = %key,
        in_use = usage.in_use(), "retire-check verdict");
    Ok(usage)
}
