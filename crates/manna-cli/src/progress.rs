//! Human front end of a run: an indicatif bar per column on a terminal, and
//! the final report as a table.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use manna_migrate::{BatchProgress, ColumnRef, ColumnReport, Progress, Report};

/// One progress bar per column with rows/s and ETA.
pub(crate) struct BarProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl BarProgress {
    pub(crate) fn new() -> Self {
        BarProgress {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, column: &ColumnRef) -> Option<ProgressBar> {
        self.bars
            .lock()
            .ok()
            .and_then(|b| b.get(&column.to_string()).cloned())
    }
}

impl Progress for BarProgress {
    fn on_start(&self, column: &ColumnRef, total: u64, done: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {pos}/{len} {percent:>3}% {msg} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(column.to_string());
        bar.set_position(done);
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(column.to_string(), bar);
        }
    }

    fn on_batch(&self, column: &ColumnRef, p: &BatchProgress) {
        if let Some(bar) = self.bar(column) {
            bar.set_length(p.total.max(p.done));
            bar.set_position(p.done);
            bar.set_message(format!(
                "{:.0} rows/s, batch {}, {} conflicts",
                p.rows_per_s, p.batch_size, p.so_far.conflicts
            ));
        }
    }

    fn on_finish(&self, column: &ColumnRef, report: &ColumnReport) {
        if let Some(bar) = self.bar(column) {
            // Done: no ETA any more.
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.finish_with_message(format!(
                "{} in {:.2}s ({:.0} rows/s)",
                report.status, report.elapsed_s, report.rows_per_s
            ));
        }
    }
}

/// The report as a table for humans.
pub(crate) fn write_report(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "mode: {}   target: {}   verdict: {}",
        report.mode,
        report.target,
        report.verdict()
    )?;
    // A dry run or a verification writes nothing: its second column is what
    // a migration would rewrite.
    let writes = report.mode == manna_migrate::Mode::Migrate;
    let moved = if writes { "migrated" } else { "to migrate" };
    writeln!(
        out,
        "{:<32} {:>9} {:>10} {:>9} {:>9} {:>7} {:>8} {:>10}  census",
        "column", "total", moved, "unchanged", "conflicts", "failed", "time", "rows/s"
    )?;
    for c in &report.columns {
        let mut census: Vec<String> = c
            .by_format
            .aes256gcm
            .iter()
            .map(|(id, n)| format!("aes256gcm({id})={n}"))
            .chain(
                c.by_format
                    .fernet
                    .iter()
                    .map(|(id, n)| format!("fernet({id})={n}")),
            )
            .collect();
        for (label, n) in [
            ("pending", c.pending),
            ("plaintext", c.by_format.plaintext),
            ("unknown", c.by_format.unknown),
            ("null", c.null),
        ] {
            if n > 0 {
                census.push(format!("{label}={n}"));
            }
        }
        writeln!(
            out,
            "{:<32} {:>9} {:>10} {:>9} {:>9} {:>7} {:>7.2}s {:>10.0}  {}",
            format!("{}.{}", c.table, c.column),
            c.total,
            if writes { c.migrated } else { c.pending },
            c.unchanged,
            c.conflicts,
            c.failed_total,
            c.elapsed_s,
            c.rows_per_s,
            census.join(" ")
        )?;
        if c.status != manna_migrate::Status::Completed {
            writeln!(out, "  status: {}", c.status)?;
        }
        if c.resumed {
            writeln!(
                out,
                "  resumed from a checkpoint: this run scanned {} row(s) in {:.2}s ({:.0} rows/s); \
                 migrated/unchanged/conflicts include the earlier run's",
                c.scanned, c.elapsed_s, c.rows_per_s
            )?;
        }
        if c.sweeps > 0 {
            writeln!(
                out,
                "  looked again {} time(s) after the main pass for rows written in the old \
                 format or changed meanwhile (a rollback always looks once)",
                c.sweeps
            )?;
        }
        if let Some(why) = &c.checkpoint_ignored {
            writeln!(out, "  {why}")?;
        }
        if !c.failed.is_empty() {
            let ids: Vec<String> = c.failed.iter().take(20).map(ToString::to_string).collect();
            let more = if c.failed_total > ids.len() as u64 {
                format!(", … ({} in all)", c.failed_total)
            } else {
                String::new()
            };
            let kinds: Vec<String> = c
                .failure_kinds
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            writeln!(
                out,
                "  failed ids: {}{more} ({})",
                ids.join(", "),
                kinds.join(", ")
            )?;
        }
    }
    Ok(())
}
