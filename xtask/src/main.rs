//! `cargo xtask`: manna's operator CLI. Parsing and wiring only; the work is
//! done by the library crates.
//!
//! Exit status 0 on success; otherwise one clear line on stderr and status 1
//! (2 for usage errors, from clap). Never a panic or a backtrace for bad input.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod keys;
mod migrate;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line interface of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "manna operator tools: keys, envelopes, online re-encryption"
)]
struct Cli {
    /// Keyring file (TOML or JSON) instead of the MANNA_ENCRYPTION_* variables.
    #[arg(long, global = true, env = "MANNA_KEY_FILE", value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print one new base64 AES-256 key (for MANNA_ENCRYPTION_KEY_AES256).
    Keygen,
    /// Show the configured keyring: algorithm, key ids, Fernet fallback, usage and age warnings.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tell a stored value's format (aes256gcm + key id, fernet, plaintext/unknown) without decrypting.
    Inspect {
        /// The stored value.
        token: String,
    },
    /// Encrypt stdin (raw bytes) under the primary key; print the token.
    Encrypt {
        /// Additional authenticated data, e.g. `plaid_items.access_token`.
        #[arg(long)]
        aad: Option<String>,
    },
    /// Decrypt a token from stdin; write the raw plaintext bytes to stdout.
    Decrypt {
        /// Additional authenticated data the token was made with.
        #[arg(long)]
        aad: Option<String>,
    },
    /// Re-encrypt columns online: Fernet or older keys to the primary AES key, or back to Fernet.
    Migrate(migrate::MigrateArgs),
    /// The tour: create an embedded SQLite database of legacy Fernet rows, then dry-run, migrate, verify.
    Demo {
        /// Rows per table.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
    },
    /// Key lifecycle checks.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Exit 0 only if no row in the columns still uses KEY (an AES key id, or `fernet`).
    RetireCheck {
        /// AES key id (hex, as `info` shows it) or `fernet`.
        key: manna_migrate::RetiringKey,
        #[command(flatten)]
        target: migrate::ColumnArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Log lines (progress without a terminal) go to stderr; `RUST_LOG` filters.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The error and its causes on one line, without repeating a cause that a
/// message already quotes, and with multi-line messages (preflight lists)
/// joined by `; `.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let msg = cause
            .to_string()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        if msg.is_empty() || line.contains(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing();
    let keys = keys::KeyConfig {
        key_file: cli.key_file,
        accept_plaintext: false,
    };
    match cli.command {
        Command::Keygen => keys::keygen(),
        Command::Info { json } => keys::info(&keys, json),
        Command::Inspect { token } => keys::inspect(&token),
        Command::Encrypt { aad } => keys::encrypt(&keys, aad.as_deref()),
        Command::Decrypt { aad } => keys::decrypt(&keys, aad.as_deref()),
        Command::Migrate(args) => migrate::migrate(&keys, &args),
        Command::Demo { rows } => demo::demo(rows),
        Command::Keys {
            command: KeysCommand::RetireCheck { key, target, json },
        } => migrate::retire_check(&target, key, json),
    }
}
