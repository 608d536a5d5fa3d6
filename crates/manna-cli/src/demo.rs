//! `manna demo`: the one-command tour on an embedded SQLite database.
//!
//! Creates `manna-demo.db` with legacy Fernet values (as a Python service
//! using `cryptography` would have written them), then runs the real
//! pipeline: dry-run, migrate, verify, key retirement check.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use manna_crypto::{AesKey, FernetKey, Keyring};
use manna_migrate::{
    ColumnRef, MigrationLocks, Migrator, Mode, Options, ProcessLocks, Report, RetiringKey,
};
use manna_store_diesel::diesel::{self, Connection, RunQueryDsl};
use manna_store_diesel::DieselStore;

use crate::migrate::progress_front_end;
use crate::progress::write_report;

/// Where the demo database goes (the CLI's default `DATABASE_URL`).
const DEMO_DB: &str = "manna-demo.db";

/// `manna demo [--rows N]`.
pub(crate) fn demo(rows: u64) -> Result<()> {
    let path = PathBuf::from(DEMO_DB);
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "manna demo: re-encrypting legacy Fernet columns on embedded SQLite"
    )?;

    // Keys: a legacy Fernet key (the old Python service's) and a new AES key.
    let fernet = FernetKey::generate();
    let aes = AesKey::generate();
    let keyring = Keyring::builder()
        .primary(aes)
        .fernet(fernet.clone())
        .build()?;
    writeln!(
        err,
        "keys: new AES-256-GCM key {} (primary), legacy Fernet key {} (decrypt-only)",
        keyring.primary_key_id(),
        fernet.id()
    )?;

    let started = Instant::now();
    seed(&path, rows, &fernet)?;
    writeln!(
        err,
        "1. created {} with {rows} plaid_items.access_token and {rows} transactions.note Fernet values ({:.1}s)",
        path.display(),
        started.elapsed().as_secs_f64()
    )?;
    drop(err);

    let url = format!("sqlite://{}", path.display());
    let store = Arc::new(DieselStore::connect(&url)?);
    let columns = vec![
        ColumnRef::parse("plaid_items.access_token", "id")?,
        ColumnRef::parse("transactions.note", "id")?,
    ];
    // One process on a private database: the in-process locks are enough.
    let locks: Arc<dyn MigrationLocks> = Arc::new(ProcessLocks::new());
    let run = |mode: Mode| -> Result<Report> {
        let mut options = Options::default();
        options.mode = mode;
        let migrator = Migrator::new(store.clone(), keyring.clone())
            .options(options)
            .locks(locks.clone())
            .progress(progress_front_end());
        Ok(migrator.run(&columns)?)
    };

    let mut out = std::io::stdout().lock();
    writeln!(out, "\n2. dry run: plan every row, write nothing")?;
    write_report(&mut out, &run(Mode::DryRun)?)?;
    writeln!(
        out,
        "\n3. migrate: Fernet -> AES-256-GCM, batched compare-and-set writes, checkpointed"
    )?;
    let migrated = run(Mode::Migrate)?;
    write_report(&mut out, &migrated)?;
    writeln!(
        out,
        "\n4. verify: decrypt every value and count formats and keys"
    )?;
    let verified = run(Mode::VerifyOnly)?;
    write_report(&mut out, &verified)?;

    let usage = manna_migrate::key_usage(
        store.as_ref(),
        &keyring,
        &columns,
        RetiringKey::FernetKey(fernet.id()),
    )?;
    writeln!(
        out,
        "\n5. retire check: {} row(s) still need Fernet key {}{}",
        usage.rows(),
        fernet.id(),
        if usage.in_use() {
            ""
        } else {
            ": it can be removed (unset MANNA_ENCRYPTION_KEY)"
        }
    )?;
    let rows_per_s: f64 = migrated.columns.iter().map(|c| c.rows_per_s).sum::<f64>()
        / migrated.columns.len().max(1) as f64;
    writeln!(
        out,
        "\ndone: {} rows migrated at ~{rows_per_s:.0} rows/s per column; {} failed. \
         Next: {} migrate --help, docs/migration-guide.md",
        migrated.columns.iter().map(|c| c.migrated).sum::<u64>(),
        verified.failed_count(),
        crate::program()
    )?;
    if !verified.is_success() || usage.in_use() {
        anyhow::bail!(
            "the tour did not end complete: verification says {:?}, {} row(s) need the Fernet key",
            verified.verdict(),
            usage.rows()
        );
    }
    Ok(())
}

/// (Re)creates the demo database with Fernet-encrypted rows.
fn seed(path: &Path, rows: u64, fernet: &FernetKey) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())
        .with_context(|| format!("cannot create {}", path.display()))?;
    conn.transaction::<_, anyhow::Error, _>(|conn| {
        diesel::sql_query(
            "CREATE TABLE plaid_items (
                id INTEGER PRIMARY KEY,
                item_id TEXT NOT NULL,
                access_token TEXT NOT NULL,
                version INTEGER NOT NULL DEFAULT 1)",
        )
        .execute(conn)?;
        diesel::sql_query(
            "CREATE TABLE transactions (
                id INTEGER PRIMARY KEY,
                item_id INTEGER NOT NULL REFERENCES plaid_items(id),
                amount_cents INTEGER NOT NULL,
                note TEXT,
                version INTEGER NOT NULL DEFAULT 1)",
        )
        .execute(conn)?;
        for i in 1..=rows {
            let token = fernet
                .encrypt(format!("access-sandbox-{i:08}-{:016x}", i * 0x9e37_79b9).as_bytes());
            diesel::sql_query(
                "INSERT INTO plaid_items (id, item_id, access_token) VALUES (?, ?, ?)",
            )
            .bind::<diesel::sql_types::BigInt, _>(i as i64)
            .bind::<diesel::sql_types::Text, _>(format!("item-{i}"))
            .bind::<diesel::sql_types::Text, _>(token)
            .execute(conn)?;
            // Some transactions have no note: NULLs are left alone.
            let note = (i % 10 != 0).then(|| {
                fernet.encrypt(format!("memo #{i}: card ending {:04}", i % 10_000).as_bytes())
            });
            diesel::sql_query(
                "INSERT INTO transactions (id, item_id, amount_cents, note) VALUES (?, ?, ?, ?)",
            )
            .bind::<diesel::sql_types::BigInt, _>(i as i64)
            .bind::<diesel::sql_types::BigInt, _>(i as i64)
            .bind::<diesel::sql_types::BigInt, _>((i as i64 * 137) % 100_000)
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(note)
            .execute(conn)?;
        }
        Ok(())
    })
}
