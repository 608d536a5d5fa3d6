//! `migrate` and `keys retire-check`: wiring the Diesel store, the keyring,
//! the lock backend and a progress front end into `manna-migrate`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use manna_migrate::{
    AadMode, AcceptedFailures, CancelToken, ColumnRef, LogProgress, MigrationLocks, Migrator, Mode,
    Options, Progress, Report, RetiringKey, Shard, Status, Target, Verdict,
};
use manna_store_diesel::DieselStore;
use serde::Deserialize;

use crate::keys::KeyConfig;
use crate::progress::BarProgress;

/// The config file read when no `--column` is given.
const DEFAULT_CONFIG: &str = "manna.toml";

/// Which columns, in which database.
#[derive(Debug, Clone, Args)]
pub(crate) struct ColumnArgs {
    /// Database URL: `postgres://…` or `sqlite://path` (required: no command
    /// but `demo` picks a database by itself).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Column to work on, as TABLE.COLUMN (repeatable). Without it, the
    /// columns listed in the config file.
    #[arg(long = "column", value_name = "TABLE.COLUMN")]
    pub(crate) columns: Vec<String>,
    /// Primary-key column of the tables (keyset pagination).
    #[arg(long, default_value = "id")]
    pub(crate) id_column: String,
    /// Config file listing columns (`columns = ["t.c", …]`).
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
}

/// `manna migrate` arguments (docs/migration-guide.md).
#[derive(Debug, Clone, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    pub(crate) target: ColumnArgs,
    /// What AES values are bound to: `column` (TABLE.COLUMN), `row` (TABLE.COLUMN:ID) or `none`.
    #[arg(long, default_value = "column")]
    pub(crate) aad: AadMode,
    /// Scan, plan and count; write nothing.
    #[arg(long, conflicts_with = "verify_only")]
    pub(crate) dry_run: bool,
    /// Decrypt every value and count formats and keys; write nothing; exit non-zero if any fails.
    #[arg(long)]
    pub(crate) verify_only: bool,
    /// Rows per batch to start with (adapts toward ~250 ms batches), 1..=1000000.
    #[arg(long, default_value_t = 1000, value_parser = batch_size)]
    pub(crate) batch_size: usize,
    /// Keep the batch size fixed.
    #[arg(long)]
    pub(crate) fixed_batch_size: bool,
    /// Parallel crypto-and-write workers (one scanner feeds them), 1..=256.
    #[arg(long, default_value_t = 2, value_parser = workers)]
    pub(crate) workers: usize,
    /// Throttle: at most this many rows scanned per second (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_rows_per_sec: Option<u64>,
    /// Target format: `aes256gcm` (primary key) or `fernet` (rollback).
    #[arg(long, default_value = "aes256gcm")]
    pub(crate) to: Target,
    /// This process's part of the key space, `i/n` with n <= 1024 (run one per machine).
    #[arg(long, default_value = "0/1", value_parser = shard)]
    pub(crate) shard: Shard,
    /// Ignore the saved checkpoint and start from the first row.
    #[arg(long)]
    pub(crate) restart: bool,
    /// Also bump the `version` column of rewritten rows.
    #[arg(long)]
    pub(crate) bump_version: bool,
    /// Lease of the migration lock, in seconds (renewed every third of it while held).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) lock_ttl: u64,
    /// How long to wait for another migrator's lock before refusing, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub(crate) lock_wait: u64,
    /// Accept never-encrypted values (migrating a plaintext column).
    #[arg(long)]
    pub(crate) accept_plaintext: bool,
    /// Failed rows you have looked at and accept (one `ID` or `TABLE.COLUMN ID` per line):
    /// still reported, they no longer make the run exit 4.
    #[arg(long, value_name = "FILE")]
    pub(crate) accept_failed_ids: Option<PathBuf>,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics for the whole
    /// run: rows scanned, migrated, failed, conflicts, batch time, rows/s,
    /// rows left; the keys' age and expiry.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// `usize` in `min..=max`, refused (never clamped) outside.
fn usize_in(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not in {min}..={max}"))
    }
}

fn batch_size(s: &str) -> Result<usize, String> {
    usize_in(s, 1, manna_migrate::MAX_BATCH_SIZE)
}

fn workers(s: &str) -> Result<usize, String> {
    usize_in(s, 1, manna_migrate::MAX_WORKERS)
}

fn shard(s: &str) -> Result<Shard, String> {
    let shard = s.parse::<Shard>().map_err(|e| e.to_string())?;
    if shard.count > manna_migrate::MAX_SHARDS {
        return Err(format!(
            "{shard}: at most {} shards",
            manna_migrate::MAX_SHARDS
        ));
    }
    Ok(shard)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    columns: Vec<String>,
    id_column: Option<String>,
}

impl ColumnArgs {
    /// The validated columns: flags first, else the config file.
    pub(crate) fn columns(&self) -> Result<Vec<ColumnRef>> {
        let (names, id_column) = if self.columns.is_empty() {
            let path = self
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            if self.config.is_none() && !path.exists() {
                bail!("no column given: pass --column TABLE.COLUMN or list columns in {DEFAULT_CONFIG}");
            }
            let config = read_config(&path)?;
            let id = config.id_column.unwrap_or_else(|| self.id_column.clone());
            (config.columns, id)
        } else {
            (self.columns.clone(), self.id_column.clone())
        };
        names
            .iter()
            .map(|c| ColumnRef::parse(c, &id_column).with_context(|| "--column".to_owned()))
            .collect()
    }

    /// Opens the database (checks the connection).
    pub(crate) fn store(&self) -> Result<Arc<DieselStore>> {
        let Some(url) = &self.database_url else {
            bail!(
                "no database given: pass --database-url or set DATABASE_URL \
                 (`{} demo` creates a SQLite database to try things on)",
                crate::program()
            );
        };
        let store = DieselStore::connect(url)?;
        Ok(Arc::new(store))
    }
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {} is invalid: {}", path.display(), e.message()))
}

/// The migration locks: Redis when `REDIS_URL` is set, else the database's
/// own lock (a lease row), so two migrators never both run on one column
/// from any machine.
fn locks(args: &MigrateArgs, store: &DieselStore) -> Result<Arc<dyn MigrationLocks>> {
    let locks = crate::lock::locks(
        || Ok(store.pool().clone()),
        Duration::from_secs(args.lock_ttl),
        Duration::from_secs(args.lock_wait),
    )?;
    Ok(Arc::new(locks))
}

/// Progress on a terminal: bars; otherwise the Python tool's log lines.
pub(crate) fn progress_front_end() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(BarProgress::new())
    } else {
        Arc::new(LogProgress)
    }
}

/// Ctrl-C finishes the current batch and returns the report; a second
/// Ctrl-C exits at once (the last committed batch is in the checkpoint).
fn cancel_on_ctrl_c() -> CancelToken {
    let token = CancelToken::new();
    let handler_token = token.clone();
    let installed = ctrlc::set_handler(move || {
        if handler_token.is_cancelled() {
            eprintln!("interrupted again: exiting now; the last committed batch is checkpointed");
            std::process::exit(130);
        }
        eprintln!("interrupted: finishing the current batch (Ctrl-C again to exit now)");
        handler_token.cancel();
    });
    if let Err(err) = installed {
        tracing::warn!("Ctrl-C handler not installed: {err}");
    }
    token
}

pub(crate) fn options(args: &MigrateArgs) -> Result<Options> {
    // The first batch is exactly --batch-size: the adaptive bounds widen to it.
    let mut o = Options::default().with_batch_size(args.batch_size);
    o.mode = if args.dry_run {
        Mode::DryRun
    } else if args.verify_only {
        Mode::VerifyOnly
    } else {
        Mode::Migrate
    };
    o.target = args.to;
    o.aad = args.aad;
    o.adaptive = !args.fixed_batch_size;
    o.workers = args.workers;
    o.max_rows_per_sec = args.max_rows_per_sec;
    o.shard = args.shard;
    o.restart = args.restart;
    o.bump_version = args.bump_version;
    if let Some(path) = &args.accept_failed_ids {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --accept-failed-ids {}", path.display()))?;
        o.accepted_failures = AcceptedFailures::parse(&text)
            .with_context(|| format!("--accept-failed-ids {}", path.display()))?;
    }
    Ok(o)
}

/// `manna migrate …`: the exit status is the report's verdict.
pub(crate) fn migrate(keys: &KeyConfig, args: &MigrateArgs) -> Result<ExitCode> {
    let keys = KeyConfig {
        accept_plaintext: args.accept_plaintext,
        ..keys.clone()
    };
    let options = options(args)?;
    options.validate().map_err(anyhow::Error::msg)?;
    let columns = args.target.columns()?;
    if let Some(addr) = args.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        eprintln!("metrics: http://{addr}/metrics");
    }
    let keyring = keys.load()?;
    // Sets the key age and expiry gauges the exporter serves.
    let _ = keyring.status();
    crate::keys::warn_acceptance(&keyring);
    let store = args.target.store()?;
    let locks = locks(args, &store)?;
    let migrator = Migrator::new(store, keyring)
        .options(options)
        .locks(locks)
        .progress(progress_front_end())
        .cancel_token(cancel_on_ctrl_c());
    // `run` preflights every column first.
    let report = migrator.run(&columns)?;
    finish(&report, args.json)
}

/// Prints the report (JSON on stdout, or a table), says on stderr why a run
/// that is not complete is not, and returns the verdict's exit status.
pub(crate) fn finish(report: &Report, json: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        crate::progress::write_report(&mut out, report)?;
    }
    out.flush()?;
    drop(out);
    let verdict = report.verdict();
    let columns = |keep: &dyn Fn(&manna_migrate::ColumnReport) -> Option<String>| {
        report
            .columns
            .iter()
            .filter_map(|c| keep(c).map(|what| format!("{}.{} {what}", c.table, c.column)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match verdict {
        Verdict::Complete => {}
        Verdict::Undecryptable => eprintln!(
            "undecryptable: {} row(s) cannot be decrypted with the configured keys ({}); \
             check the keys ({} info) and the --aad mode, or acknowledge them with \
             --accept-failed-ids{}",
            report.failed_count(),
            columns(&|c| {
                let open = c.failed_total - c.failed_accepted;
                (open > 0).then(|| format!("{open} failed"))
            }),
            crate::program(),
            fernet_ended_hint(report)
        ),
        _ => eprintln!(
            "incomplete: rows are still in another format ({}); run the same command again \
             (it resumes from the checkpoint), and stop old-format writers first",
            columns(&|c| match c.status {
                Status::Completed => None,
                Status::Incomplete => Some(format!("{} pending", c.pending)),
                other => Some(other.to_string()),
            })
        ),
    }
    Ok(ExitCode::from(verdict.exit_code()))
}

/// A hint when failed rows are Fernet tokens past the keyring's
/// `fernet_until` (failure kind `fernet_ended`); empty otherwise.
fn fernet_ended_hint(report: &Report) -> String {
    let ended: u64 = report
        .columns
        .iter()
        .filter_map(|c| {
            c.failure_kinds
                .get(&manna_migrate::FailureKind::FernetEnded)
        })
        .sum();
    if ended == 0 {
        return String::new();
    }
    format!(
        "; {ended} of them are Fernet tokens past fernet_until: to migrate them, set a later \
         fernet_until ({} or the key file) for the run",
        manna_crypto::ENV_FERNET_UNTIL
    )
}

/// `manna keys retire-check KEY`: does any row still need the key?
/// Exit 0 only when none does; 3 with the counts per column otherwise.
pub(crate) fn retire_check(
    keys: &KeyConfig,
    target: &ColumnArgs,
    key: &str,
    json: bool,
) -> Result<ExitCode> {
    let columns = target.columns()?;
    let keyring = keys.load()?;
    let key = RetiringKey::resolve(key, &keyring)?;
    let store = target.store()?;
    let usage = manna_migrate::key_usage(store.as_ref(), &keyring, &columns, key)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&usage)?)?;
    } else {
        for c in &usage.columns {
            let sample = c
                .sample_ids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(
                out,
                "{}.{}: {} row(s) need {}{}",
                c.table,
                c.column,
                c.rows,
                usage.key,
                if sample.is_empty() {
                    String::new()
                } else {
                    format!(" (ids {sample}…)")
                }
            )?;
            if c.unreadable_fernet > 0 {
                writeln!(
                    out,
                    "{}.{}: note: {} Fernet token(s) open with no configured Fernet key",
                    c.table, c.column, c.unreadable_fernet
                )?;
            }
        }
    }
    drop(out);
    if usage.in_use() {
        eprintln!(
            "in use: key {} is still needed by {} row(s); migrate them before retiring it",
            usage.key,
            usage.rows()
        );
        return Ok(ExitCode::from(Verdict::Incomplete.exit_code()));
    }
    if !json {
        println!(
            "key {} is needed by no row in these columns now: safe to retire once no writer encrypts with it",
            usage.key
        );
    }
    Ok(ExitCode::SUCCESS)
}
