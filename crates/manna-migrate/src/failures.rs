//! Failed rows: every one counted, the first few thousand listed.
//!
//! A column full of undecryptable rows (a lost key, hostile content) must
//! neither exhaust the migrator's memory nor shrink the count the verdict
//! rests on, so the ids are kept up to [`FAILED_IDS_LISTED`] and everything
//! else is counted.

use std::collections::BTreeMap;

use manna_store::RowId;

/// How many failed row ids a column's report lists. Past this bound the
/// rows are still counted (`failed_total`, `failed_accepted`,
/// `failure_kinds`) but their ids are not kept.
pub const FAILED_IDS_LISTED: usize = 10_000;

/// The failed rows of one column in one pass or census.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Failures {
    /// The first failed rows met, with the reason.
    listed: Vec<(RowId, &'static str)>,
    /// Every failed row, listed or not.
    total: u64,
    /// How many of them the operator acknowledged.
    accepted: u64,
    kinds: BTreeMap<&'static str, u64>,
}

impl Failures {
    /// Counts failed row `id`; lists it while there is room.
    pub(crate) fn push(&mut self, id: RowId, reason: &'static str, accepted: bool) {
        self.total += 1;
        self.accepted += u64::from(accepted);
        *self.kinds.entry(reason).or_default() += 1;
        if self.listed.len() < FAILED_IDS_LISTED {
            self.listed.push((id, reason));
        }
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

    /// Failure counts by reason, as the report names them.
    pub(crate) fn kinds(&self) -> BTreeMap<String, u64> {
        self.kinds
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect()
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
            f.push(RowId::Int(n - i), "unknown_format", i % 2 == 0);
        }
        assert_eq!(f.total(), n as u64);
        assert_eq!(f.accepted(), (n as u64).div_ceil(2));
        assert!(f.any_open());
        assert!(!f.is_complete());
        assert_eq!(f.kinds()["unknown_format"], n as u64);
        let ids = f.into_sorted_ids();
        assert_eq!(ids.len(), FAILED_IDS_LISTED);
        assert_eq!(ids[0], RowId::Int(6), "the first met, sorted");
    }
}
