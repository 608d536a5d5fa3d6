//! Checks before anything is written: columns exist, keys are configured for
//! the target, a sample of rows decrypts.

use std::collections::BTreeMap;

use manna_crypto::DecryptError;

use crate::engine::Migrator;
use crate::error::MigrateError;
use crate::failures::FailureKind;
use crate::options::OptionsError;
use crate::options::Target;
use crate::plan::{Depth, Outcome, Planner};
use manna_store::{ColumnRef, IdRange, RowId, StoreErrorKind};

/// Most row ids a preflight message lists.
const SHOWN_IDS: usize = 5;

/// One problem found by [`Migrator::preflight`]; its `Display` is one line
/// an operator can act on (the CLI prints each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    Options(OptionsError),
    /// The table or a column does not exist.
    #[error("{column}: {message}")]
    ColumnMissing {
        /// `TABLE.COLUMN`.
        column: String,
        /// The store's message (names the missing table or column).
        message: String,
    },
    /// The store could not be queried.
    #[error("{column}: {message}")]
    Store {
        /// `TABLE.COLUMN`.
        column: String,
        /// The store's message.
        message: String,
    },
    /// The Fernet target without a Fernet key.
    #[error("the Fernet target needs a Fernet key and none is configured")]
    NoFernetKey,
    /// Bumping versions was asked for but the table has no version column.
    #[error("{column}: no `version` column; add it (INTEGER NOT NULL DEFAULT 1) or do not bump versions")]
    NoVersionColumn {
        /// `TABLE.COLUMN`.
        column: String,
    },
    /// Most sampled values do not decrypt with the configured keys: wrong
    /// keys, a missing key, or the wrong AAD mode.
    #[error("{column}: {failed} of {sampled} sampled values cannot be decrypted (rows {}): {hint}", show_ids(.ids))]
    Undecryptable {
        /// `TABLE.COLUMN`.
        column: String,
        /// Non-`NULL` values sampled.
        sampled: u64,
        /// How many of them failed.
        failed: u64,
        /// The first failing row ids.
        ids: Vec<RowId>,
        /// What the most frequent failure means (no value, no key).
        hint: String,
        /// The most frequent failure's kind.
        kind: FailureKind,
        /// The most frequent failure, when it is a decryption error (a
        /// front end can tell the operator which setting to change).
        cause: Option<DecryptError>,
    },
}

fn show_ids(ids: &[RowId]) -> String {
    ids.iter()
        .take(SHOWN_IDS)
        .map(RowId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Migrator {
    /// Checks, before anything is written, every problem an operator can fix:
    /// options, a Fernet key for the Fernet target, each column's existence
    /// (and version column when bumping versions), and that the first
    /// [`Options::preflight_sample`](crate::Options::preflight_sample) rows
    /// decrypt with the configured keys and AAD mode.
    ///
    /// A sample counts as failing when at least half of its non-`NULL`
    /// values fail to decrypt (wrong key, missing key, wrong AAD mode); a few
    /// damaged rows do not stop a migration: they are reported by id and
    /// left untouched.
    ///
    /// Returns every problem found, as [`MigrateError::Preflight`].
    pub fn preflight(&self, columns: &[ColumnRef]) -> Result<(), MigrateError> {
        let o = self.current_options();
        let mut errors = Vec::new();
        if let Err(e) = o.validate() {
            errors.push(PreflightError::Options(e));
        }
        if o.target == Target::Fernet && !self.keyring().has_fernet() {
            errors.push(PreflightError::NoFernetKey);
        }
        for column in columns {
            if let Err(e) = self.preflight_column(column) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(MigrateError::Preflight(errors))
        }
    }

    fn preflight_column(&self, column: &ColumnRef) -> Result<(), PreflightError> {
        let o = self.current_options();
        let store_error = |e: manna_store::StoreError| {
            if e.kind() == StoreErrorKind::NotFound {
                PreflightError::ColumnMissing {
                    column: column.to_string(),
                    message: e.to_string(),
                }
            } else {
                PreflightError::Store {
                    column: column.to_string(),
                    message: e.to_string(),
                }
            }
        };
        let info = self.store().check_column(column).map_err(store_error)?;
        if o.mode.writes() && o.bump_version && !info.has_version {
            return Err(PreflightError::NoVersionColumn {
                column: column.to_string(),
            });
        }
        let rows = self
            .store()
            .scan(column, &IdRange::all(), o.preflight_sample.max(1))
            .map_err(store_error)?;
        let planner = Planner::new(self.keyring(), o.target, o.aad, column);
        let mut sampled = 0u64;
        let mut ids = Vec::new();
        let mut reasons: BTreeMap<FailureKind, (u64, String, Option<DecryptError>)> =
            BTreeMap::new();
        for row in &rows {
            match planner.plan(row, Depth::Verify) {
                Outcome::Null => continue,
                // Policy, not a sign of wrong keys or AAD: the run counts
                // such rows as failed (`fernet_ended`) instead of refusing.
                Outcome::Failed {
                    error: Some(DecryptError::FernetEnded { .. }),
                    ..
                } => sampled += 1,
                Outcome::Failed { reason, error, .. } => {
                    sampled += 1;
                    ids.push(row.id.clone());
                    let hint = match (reason, &error) {
                        // A Fernet token no configured Fernet key opens:
                        // Fernet binds no AAD, so the key is what is missing.
                        (FailureKind::UnknownKey, Some(DecryptError::Authentication)) => {
                            "Fernet tokens no configured Fernet key opens (a newer key of the \
                             MultiFernet set may be missing)"
                                .to_owned()
                        }
                        (_, Some(e)) => e.to_string(),
                        (_, None) => reason.as_str().replace('_', " "),
                    };
                    reasons.entry(reason).or_insert((0, hint, error)).0 += 1;
                }
                _ => sampled += 1,
            }
        }
        let failed = ids.len() as u64;
        let most = reasons.into_iter().max_by_key(|(_, (n, _, _))| *n);
        if let (true, Some((kind, (_, hint, cause)))) = (failed * 2 >= sampled, most) {
            return Err(PreflightError::Undecryptable {
                column: column.to_string(),
                sampled,
                failed,
                ids,
                hint,
                kind,
                cause,
            });
        }
        Ok(())
    }
}
