//! The census a run ends with: how every row of the partition stands when
//! the run ends, counted after the last write.

use manna_crypto::KeyId;

use crate::engine::Migrator;
use crate::error::MigrateError;
use crate::failures::Failures;
use crate::options::Target;
use crate::pipeline::PassResult;
use crate::plan::{Depth, Outcome, Planner};
use crate::report::ValueClass;
use crate::tally::Tally;
use manna_store::{ColumnRef, IdRange, PrefixCensus, Row, RowId};

/// How a partition stands.
#[derive(Debug, Default)]
pub(crate) struct FinalCensus {
    /// Rows in the partition, `NULL`s included.
    pub(crate) total: u64,
    /// How they stand; pending rows decrypt but are not in the target format.
    pub(crate) tally: Tally,
}

impl FinalCensus {
    /// The census of a pass that is not followed by a final one: what the
    /// scan found (dry-run, verify-only) or what a stopped run processed.
    /// Takes the pass's tally.
    pub(crate) fn of_pass(pass: &mut PassResult) -> Self {
        FinalCensus {
            total: pass.counts.scanned,
            tally: std::mem::take(&mut pass.tally),
        }
    }

    /// Counts `row`; `accepts` tells the acknowledged failed rows.
    fn record(
        &mut self,
        row: &Row,
        outcome: Outcome,
        count_class: bool,
        accepts: impl Fn(&RowId) -> bool,
    ) {
        let class = match outcome {
            Outcome::Null => {
                self.tally.nulls += 1;
                return;
            }
            Outcome::Unchanged(class) => class,
            Outcome::Pending { class, .. } => {
                self.tally.pending += 1;
                class
            }
            Outcome::Failed { class, reason, .. } => {
                self.tally
                    .failed
                    .push(row.id.clone(), reason, accepts(&row.id));
                class
            }
        };
        if count_class {
            self.tally.census.add(class);
        }
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
    /// opening it tells which key it is under. So is every row when the pass
    /// failed on more rows than it listed: the unlisted ones could be
    /// damaged values under the primary key's header.
    pub(crate) fn final_census(
        &self,
        column: &ColumnRef,
        planner: &Planner<'_>,
        range: &IdRange,
        agg: Option<PrefixCensus>,
        suspects: &Failures,
    ) -> Result<FinalCensus, MigrateError> {
        let st = |e| MigrateError::store(column, e);
        let mut fin = FinalCensus::default();
        let o = self.current_options();
        let accepts = |id: &RowId| o.accepted_failures.accepts(column, id);
        let batch = o.max_batch_size;
        if o.target == Target::Fernet || !suspects.is_complete() {
            self.each_row(column, range, batch, None, |row| {
                fin.total += 1;
                fin.record(row, planner.plan(row, Depth::Classify), true, accepts);
            })?;
            return Ok(fin);
        }
        let agg = match agg {
            Some(agg) => agg,
            None => self.store().census(column, range).map_err(st)?,
        };
        fin.total = agg.total;
        fin.tally.nulls = agg.nulls;
        for (key, n) in &agg.envelopes {
            // A header whose key id does not parse is counted below, when
            // its row is read.
            if let Ok(id) = key.parse::<KeyId>() {
                fin.tally.census.add_n(ValueClass::Aes256Gcm(id), *n);
            }
        }
        let under_primary = agg
            .envelopes
            .get(&planner.primary().to_string())
            .copied()
            .unwrap_or(0);
        let prefix = planner.target_prefix();
        if agg.total - agg.nulls > under_primary {
            self.each_row(column, range, batch, Some(&prefix), |row| {
                // Envelope-shaped values were counted by the aggregate.
                let counted = row
                    .value
                    .text()
                    .and_then(manna_crypto::text_header_key)
                    .is_some_and(|k| k.parse::<KeyId>().is_ok());
                fin.record(row, planner.plan(row, Depth::Classify), !counted, accepts);
            })?;
        }
        // The scan above skipped the values under the target prefix, which
        // the aggregate counted by their header: of those, read again the
        // ones a pass found failing.
        let suspects: Vec<RowId> = suspects
            .ids()
            .filter(|id| range.contains(id))
            .cloned()
            .collect();
        for row in self.store().read(column, &suspects).map_err(st)? {
            if !row.value.text().is_some_and(|t| t.starts_with(&prefix)) {
                continue;
            }
            if let Outcome::Failed { reason, .. } = planner.plan(&row, Depth::Classify) {
                fin.tally
                    .failed
                    .push(row.id.clone(), reason, accepts(&row.id));
            }
        }
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
