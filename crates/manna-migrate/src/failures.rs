//! Failed rows: every one counted, the first few thousand listed.
//!
//! A column full of undecryptable rows (a lost key, hostile content) must
//! neither exhaust the migrator's memory nor shrink the count the verdict
//! rests on, so the ids are kept up to [`FAILED_IDS_LISTED`] and everything
//! else is counted.

use std::collections::BTreeMap;
use std::fmt;

use manna_crypto::DecryptError;
use manna_store::RowId;
use serde::Serialize;

/// Why a row cannot be migrated. Its name (`Display`, and the key in a
/// report's `failure_kinds`) is the snake-case word below, as
/// docs/migration-guide.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// Neither an envelope, a Fernet token, nor accepted plaintext.
    UnknownFormat,
    /// An envelope of a format version this build does not read.
    UnsupportedVersion,
    /// Under a key that is not configured (an AES key id the keyring lacks,
    /// or a Fernet token no configured Fernet key opens).
    UnknownKey,
    /// A Fernet token, and no Fernet key is configured.
    NoFernetKey,
    /// Not authentic: wrong key or AAD mode, or a modified value.
    Authentication,
    /// Unencrypted text, and plaintext is not accepted.
    PlaintextNotAccepted,
    /// A Fernet token outside its accepted time window.
    FernetTimestamp,
    /// A Fernet token after the keyring's `fernet_until`.
    FernetEnded,
    /// The stored value is not UTF-8 text.
    NotText,
    /// The new value did not decrypt back to the old plaintext.
    VerificationMismatch,
    /// The value could not be encrypted for the target.
    EncryptionFailed,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 11] = [
        FailureKind::UnknownFormat,
        FailureKind::UnsupportedVersion,
        FailureKind::UnknownKey,
        FailureKind::NoFernetKey,
        FailureKind::Authentication,
        FailureKind::PlaintextNotAccepted,
        FailureKind::FernetTimestamp,
        FailureKind::FernetEnded,
        FailureKind::NotText,
        FailureKind::VerificationMismatch,
        FailureKind::EncryptionFailed,
    ];

    /// The kind's name, e.g. `unknown_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::UnknownFormat => "unknown_format",
            FailureKind::UnsupportedVersion => "unsupported_version",
            FailureKind::UnknownKey => "unknown_key",
            FailureKind::NoFernetKey => "no_fernet_key",
            FailureKind::Authentication => "authentication",
            FailureKind::PlaintextNotAccepted => "plaintext_not_accepted",
            FailureKind::FernetTimestamp => "fernet_timestamp",
            FailureKind::FernetEnded => "fernet_ended",
            FailureKind::NotText => "not_text",
            FailureKind::VerificationMismatch => "verification_mismatch",
            FailureKind::EncryptionFailed => "encryption_failed",
        }
    }

    /// The kind of a decryption error.
    pub fn of(e: &DecryptError) -> FailureKind {
        match e {
            DecryptError::UnknownFormat => FailureKind::UnknownFormat,
            DecryptError::UnsupportedVersion { .. } => FailureKind::UnsupportedVersion,
            DecryptError::UnknownKey { .. } => FailureKind::UnknownKey,
            DecryptError::NoFernetKey => FailureKind::NoFernetKey,
            DecryptError::PlaintextNotAccepted => FailureKind::PlaintextNotAccepted,
            DecryptError::FernetTimestamp => FailureKind::FernetTimestamp,
            DecryptError::FernetEnded { .. } => FailureKind::FernetEnded,
            // Authentication, and any kind a newer manna-crypto adds: the
            // value did not open.
            _ => FailureKind::Authentication,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many failed row ids a column's report lists. Past this bound the
/// rows are still counted (`failed_total`, `failed_accepted`,
/// `failure_kinds`) but their ids are not kept.
pub const FAILED_IDS_LISTED: usize = 10_000;

/// The failed rows of one column in one pass or census.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Failures {
    /// The first failed rows met, with the reason.
    listed: Vec<(RowId, FailureKind)>,
    /// Every failed row, listed or not.
    total: u64,
    /// How many of them the operator acknowledged.
    accepted: u64,
    kinds: BTreeMap<FailureKind, u64>,
}

impl Failures {
    /// Counts failed row `id`; lists it while there is room.
    pub(crate) fn push(&mut self, id: RowId, reason: FailureKind, accepted: bool) {
        self.total += 1;
        self.accepted += u64::from(accepted);
        *self.kinds.entry(reason).or_default() += 1;
        if self.listed.len() < FAILED_IDS_LISTED {
            self.listed.push((id, reason));
        }
    }

    /// Adds `other`'s rows (listing them while there is room).
    pub(crate) fn merge(&mut self, other: Failures) {
        self.total += other.total;
        self.accepted += other.accepted;
        for (kind, n) in other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
        let room = FAILED_IDS_LISTED - self.listed.len();
        self.listed.extend(other.listed.into_iter().take(room));
    }

    /// Every failed row counted.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The acknowledged ones among them.
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Whether some failed row is not acknowledged.
    pub(crate) fn any_open(&self) -> bool {
        self.total > self.accepted
    }

    /// Whether every failed row is listed.
    pub(crate) fn is_complete(&self) -> bool {
        self.listed.len() as u64 == self.total
    }

    /// The listed rows' ids.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &RowId> {
        self.listed.iter().map(|(id, _)| id)
    }

    /// Failure counts by kind.
    pub(crate) fn kinds(&self) -> BTreeMap<FailureKind, u64> {
        self.kinds.clone()
    }

    /// The listed ids in key order.
    pub(crate) fn into_sorted_ids(self) -> Vec<RowId> {
        let mut ids: Vec<RowId> = self.listed.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_everything_and_lists_a_bounded_prefix() {
        let mut f = Failures::default();
        let n = FAILED_IDS_LISTED as i64 + 5;
        for i in 0..n {
            f.push(RowId::Int(n - i), FailureKind::UnknownFormat, i % 2 == 0);
        }
        assert_eq!(f.total(), n as u64);
        assert_eq!(f.accepted(), (n as u64).div_ceil(2));
        assert!(f.any_open());
        assert!(!f.is_complete());
        assert_eq!(f.kinds()[&FailureKind::UnknownFormat], n as u64);
        let ids = f.into_sorted_ids();
        assert_eq!(ids.len(), FAILED_IDS_LISTED);
        assert_eq!(ids[0], RowId::Int(6), "the first met, sorted");
    }

    #[test]
    fn kinds_are_named_as_the_crypto_errors_name_them() {
        let errors = [
            DecryptError::UnknownFormat,
            DecryptError::NoFernetKey,
            DecryptError::Authentication,
            DecryptError::PlaintextNotAccepted,
            DecryptError::FernetTimestamp,
        ];
        for e in errors {
            assert_eq!(FailureKind::of(&e).as_str(), e.kind());
        }
    }
}
