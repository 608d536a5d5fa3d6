//! The census a run ends with: how every row of the partition stands when
//! the run ends, counted after the last write.

use std::collections::{BTreeMap, BTreeSet};

use manna_crypto::KeyId;

use crate::engine::Migrator;
use crate::error::MigrateError;
use crate::options::Target;
use crate::pipeline::PassResult;
use crate::plan::{envelope_header_key, Depth, Outcome, Planner};
use crate::report::{Census, ValueClass};
use crate::store::{ColumnRef, IdRange, PrefixCensus, Row, RowId};

/// How a partition stands.
#[derive(Debug, Default)]
pub(crate) struct FinalCensus {
    /// Rows in the partition, `NULL`s included.
    pub(crate) total: u64,
    pub(crate) census: Census,
    pub(crate) nulls: u64,
    /// Rows that decrypt but are not in the target format.
    pub(crate) pending: u64,
    /// Rows that cannot be decrypted, by id, with the reason.
    pub(crate) failed: Vec<(RowId, &'static str)>,
}

impl FinalCensus {
    /// The census of a pass that is not followed by a final one: what the
    /// scan found (dry-run, verify-only) or what a stopped run processed.
    pub(crate) fn of_pass(pass: &PassResult) -> Self {
        let mut failed = pass.failed.clone();
        failed.sort();
        failed.dedup_by(|a, b| a.0 == b.0);
        FinalCensus {
            total: pass.counts.scanned,
            census: pass.census.clone(),
            nulls: pass.nulls,
            pending: pass.pending,
            failed,
        }
    }

    fn record(&mut self, row: &Row, outcome: Outcome, count_class: bool) {
        let class = match outcome {
            Outcome::Null => {
                self.nulls += 1;
                return;
            }
            Outcome::Unchanged(class) => class,
            Outcome::Pending { class, .. } => {
                self.pending += 1;
                class
            }
            Outcome::Failed { class, reason, .. } => {
                self.failed.push((row.id.clone(), reason));
                class
            }
        };
        if count_class {
            self.census.add(class);
        }
    }

    /// Failure counts by reason.
    pub(crate) fn failure_kinds(&self) -> BTreeMap<String, u64> {
        let mut kinds = BTreeMap::new();
        for (_, reason) in &self.failed {
            *kinds.entry((*reason).to_owned()).or_default() += 1;
        }
        kinds
    }
}

impl Migrator {
    /// Counts `range` as it stands now.
    ///
    /// To AES-256-GCM: one aggregate query counts envelopes by the key id in
    /// their header (`agg`, if the caller took it after the last write);
    /// only the rows not under the primary key are read (none, after a
    /// complete migration) to attribute Fernet tokens to their key and tell
    /// the rows still pending from those that fail. `suspects` are rows a
    /// pass found failing: they are read again, since a damaged value may
    /// carry the primary key's header.
    ///
    /// To Fernet every row is read: a Fernet token names no key, so only
    /// opening it tells which key it is under.
    pub(crate) fn final_census(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        range: &IdRange,
        agg: Option<PrefixCensus>,
        suspects: &[RowId],
    ) -> Result<FinalCensus, MigrateError> {
        let st = |e| MigrateError::store(column, e);
        let mut fin = FinalCensus::default();
        let batch = self.current_options().max_batch_size;
        if self.current_options().target == Target::Fernet {
            self.each_row(column, range, batch, None, |row| {
                fin.total += 1;
                fin.record(row, planner.plan(row, Depth::Classify), true);
            })?;
            return Ok(fin);
        }
        let agg = match agg {
            Some(agg) => agg,
            None => self.store().census(column, range).map_err(st)?,
        };
        fin.total = agg.total;
        fin.nulls = agg.nulls;
        for (key, n) in &agg.envelopes {
            // A header whose key id does not parse is counted below, when
            // its row is read.
            if let Ok(id) = key.parse::<KeyId>() {
                fin.census.add_n(ValueClass::Aes256Gcm(id), *n);
            }
        }
        let under_primary = agg
            .envelopes
            .get(&planner.primary().to_string())
            .copied()
            .unwrap_or(0);
        let mut seen = BTreeSet::new();
        if agg.total - agg.nulls > under_primary {
            let prefix = planner.target_prefix();
            self.each_row(column, range, batch, Some(&prefix), |row| {
                seen.insert(row.id.clone());
                // Envelope-shaped values were counted by the aggregate.
                let counted = row
                    .value
                    .text()
                    .and_then(envelope_header_key)
                    .is_some_and(|k| k.parse::<KeyId>().is_ok());
                fin.record(row, planner.plan(row, Depth::Classify), !counted);
            })?;
        }
        let unseen: Vec<RowId> = suspects
            .iter()
            .filter(|id| range.contains(id) && !seen.contains(*id))
            .cloned()
            .collect();
        for row in self.store().read(column, &unseen).map_err(st)? {
            if let Outcome::Failed { reason, .. } = planner.plan(&row, Depth::Classify) {
                fin.failed.push((row.id.clone(), reason));
            }
        }
        fin.failed.sort();
        fin.failed.dedup_by(|a, b| a.0 == b.0);
        Ok(fin)
    }

    /// Calls `f` on every row of `range` (only those whose value does not
    /// start with `unprefixed`, if given), in key order, in batches.
    pub(crate) fn each_row(
        &self,
        column: &ColumnRef,
        range: &IdRange,
        batch: usize,
        unprefixed: Option<&str>,
        mut f: impl FnMut(&Row),
    ) -> Result<(), MigrateError> {
        let mut after = range.after.clone();
        loop {
            let r = range.resumed_after(after.clone());
            let rows = match unprefixed {
                Some(prefix) => self.store().scan_unprefixed(column, &r, batch, prefix),
                None => self.store().scan(column, &r, batch),
            }
            .map_err(|e| MigrateError::store(column, e))?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = Some(last.id.clone());
            rows.iter().for_each(&mut f);
        }
    }
}
