//! `migrate` and `keys retire-check`: wiring the Diesel store, the keyring,
//! the lock backend and a progress front end into `manna-migrate`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use manna_migrate::{
    AadMode, BlockingLocks, CancelToken, ColumnRef, LogProgress, MigrationLocks, Migrator, Mode,
    Options, Progress, Report, RetiringKey, Shard, Target,
};
use manna_store_diesel::DieselStore;
use serde::Deserialize;

use crate::keys::KeyConfig;
use crate::progress::BarProgress;

/// The database the CLI uses when neither `--database-url` nor `DATABASE_URL`
/// is given: the embedded SQLite database `cargo xtask demo` creates.
pub(crate) const DEFAULT_DATABASE_URL: &str = "sqlite://manna-demo.db";

/// The config file read when no `--column` is given.
const DEFAULT_CONFIG: &str = "manna.toml";

/// Which columns, in which database.
#[derive(Debug, Clone, Args)]
pub(crate) struct ColumnArgs {
    /// Database URL: `postgres://…` or `sqlite://path`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub(crate) database_url: String,
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

/// `cargo xtask migrate` arguments (GUIDE §3).
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
    /// Rows per batch to start with (adapts toward ~250 ms batches).
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch_size: usize,
    /// Keep the batch size fixed.
    #[arg(long)]
    pub(crate) fixed_batch_size: bool,
    /// Parallel crypto-and-write workers (one scanner feeds them).
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// Throttle: at most this many rows scanned per second.
    #[arg(long)]
    pub(crate) max_rows_per_sec: Option<u64>,
    /// Target format: `aes256gcm` (primary key) or `fernet` (rollback).
    #[arg(long, default_value = "aes256gcm")]
    pub(crate) to: Target,
    /// This process's part of the key space, `i/n` (run one per machine).
    #[arg(long, default_value = "0/1")]
    pub(crate) shard: Shard,
    /// Ignore the saved checkpoint and start from the first row.
    #[arg(long)]
    pub(crate) restart: bool,
    /// Also bump the `version` column of rewritten rows.
    #[arg(long)]
    pub(crate) bump_version: bool,
    /// Accept never-encrypted values (migrating a plaintext column).
    #[arg(long)]
    pub(crate) accept_plaintext: bool,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub(crate) json: bool,
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
        let store = DieselStore::connect(&self.database_url)?;
        Ok(Arc::new(store))
    }
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {} is invalid: {}", path.display(), e.message()))
}

/// The lock backend: Redis when `REDIS_URL` is set, else in-process locks.
/// The returned runtime drives lease renewal and must outlive the run.
fn locks() -> Result<(tokio::runtime::Runtime, Arc<dyn MigrationLocks>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the lock runtime")?;
    let manager = runtime.block_on(manna_lock_redis::lock_manager_from_env())?;
    let locks = BlockingLocks::new(manager, runtime.handle().clone())
        .ttl(Duration::from_secs(30))
        .wait(Duration::from_secs(5));
    Ok((runtime, Arc::new(locks)))
}

/// Progress on a terminal: bars; otherwise the seed's log lines.
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

pub(crate) fn options(args: &MigrateArgs) -> Options {
    let mut o = Options::default();
    o.mode = if args.dry_run {
        Mode::DryRun
    } else if args.verify_only {
        Mode::VerifyOnly
    } else {
        Mode::Migrate
    };
    o.target = args.to;
    o.aad = args.aad;
    o.batch_size = args.batch_size;
    o.max_batch_size = o.max_batch_size.max(args.batch_size);
    o.min_batch_size = o.min_batch_size.min(args.batch_size);
    o.adaptive = !args.fixed_batch_size;
    o.workers = args.workers;
    o.max_rows_per_sec = args.max_rows_per_sec;
    o.shard = args.shard;
    o.restart = args.restart;
    o.bump_version = args.bump_version;
    o
}

/// `cargo xtask migrate …`.
pub(crate) fn migrate(keys: &KeyConfig, args: &MigrateArgs) -> Result<()> {
    let keys = KeyConfig {
        accept_plaintext: args.accept_plaintext,
        ..keys.clone()
    };
    let options = options(args);
    options.validate().map_err(anyhow::Error::msg)?;
    let columns = args.target.columns()?;
    let keyring = keys.load()?;
    let store = args.target.store()?;
    let (_runtime, locks) = locks()?;
    let migrator = Migrator::new(store, keyring)
        .options(options)
        .locks(locks)
        .progress(progress_front_end())
        .cancel_token(cancel_on_ctrl_c());
    migrator.preflight(&columns)?;
    let report = migrator.run(&columns)?;
    finish(&report, args.json)
}

/// Prints the report (JSON on stdout, or a table) and turns an unsuccessful
/// run into a non-zero exit.
pub(crate) fn finish(report: &Report, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        crate::progress::write_report(&mut out, report)?;
    }
    out.flush()?;
    drop(out);
    if report.is_success() {
        return Ok(());
    }
    let failed = report.failed_count();
    let stopped: Vec<String> = report
        .columns
        .iter()
        .filter(|c| c.status != manna_migrate::Status::Completed)
        .map(|c| format!("{}.{} {}", c.table, c.column, c.status))
        .collect();
    if !stopped.is_empty() {
        bail!(
            "run stopped before the end ({}); run the same command again to resume from the checkpoint",
            stopped.join(", ")
        );
    }
    bail!(
        "{failed} row(s) cannot be decrypted with the configured keys (ids in the report); \
         check the keys (cargo xtask info) and the --aad mode"
    )
}

/// `cargo xtask keys retire-check KEY`: does any row still need the key?
pub(crate) fn retire_check(target: &ColumnArgs, key: RetiringKey, json: bool) -> Result<()> {
    let columns = target.columns()?;
    let store = target.store()?;
    let usage = manna_migrate::key_usage(store.as_ref(), &columns, key)?;
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
                "{}.{}: {} row(s) under {}{}",
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
        }
    }
    drop(out);
    if usage.in_use() {
        bail!(
            "key {} is still used by {} row(s): migrate them before retiring it",
            usage.key,
            usage.rows()
        );
    }
    if !json {
        println!(
            "key {} is used by no row in these columns: safe to retire",
            usage.key
        );
    }
    Ok(())
}
