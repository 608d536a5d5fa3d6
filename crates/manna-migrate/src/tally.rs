//! How rows stand — by format and key, `NULL`, pending, failed — counted the
//! same way for a batch, a pass and the census a run ends with.

use crate::failures::Failures;
use crate::report::Census;

/// Rows counted by how they stand.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Non-`NULL` values by format and key id.
    pub(crate) census: Census,
    /// `NULL` values.
    pub(crate) nulls: u64,
    /// Rows that decrypt but are left in another format.
    pub(crate) pending: u64,
    /// Rows that cannot be decrypted.
    pub(crate) failed: Failures,
}

impl Tally {
    /// Adds `other` to this tally.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.census.merge(&other.census);
        self.nulls += other.nulls;
        self.pending += other.pending;
        self.failed.merge(other.failed);
    }
}
