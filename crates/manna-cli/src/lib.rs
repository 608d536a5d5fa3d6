//! The `manna` command (and `cargo xtask` inside the repository): manna's
//! operator CLI. Parsing and wiring only; the work is done by the library
//! crates.
//!
//! This library exists so that the `manna` binary of this package and the
//! repository's `xtask` binary run the same code ([`main`]); it is not an
//! API for other crates. Programs that embed the migrator use
//! `manna-migrate` (see its README) and the adapters directly.
//!
//! Exit status (what scripts branch on):
//! - 0: done — for `migrate` (every mode) every row is in the target format
//!   (or an acknowledged failed row); for `keys retire-check` no row needs
//!   the key;
//! - 1: an error, as one `error:` line on stderr;
//! - 2: a usage error (from clap);
//! - 3: incomplete — rows are still in another format (an application still
//!   writing the old format, a cancelled run, a lost lease), or rows still
//!   need the key being retired; run again or wait;
//! - 4: rows that cannot be decrypted with the configured keys, listed by id
//!   in the report (they win over 3: running again does not fix them).
//!
//! `lock NAME -- COMMAND` exits with the command's status, except 1 (error),
//! 2 (usage) and 3 (the lock stayed busy for the whole wait, or its lease
//! was lost while the command ran).
//!
//! Never a panic or a backtrace for bad input.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod hints;
mod keys;
mod lock;
mod migrate;
mod progress;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The exit statuses, for `--help`.
const EXIT_STATUS: &str = "\
Exit status:
  0  done: every row in the target format (or an acknowledged failed row); for
     `keys retire-check`, no row needs the key
  1  error (one `error:` line on stderr)
  2  usage error
  3  incomplete: rows still in another format (old-format writers, a cancelled
     run, a lost lease), or rows still need the key; run again or wait
  4  rows that cannot be decrypted with the configured keys (ids in the report)
`manna lock` exits with its command's status (see `manna lock --help`).";

/// The exit statuses of `lock`, for its `--help`.
const LOCK_EXIT_STATUS: &str = "\
The command gets the fencing token in MANNA_FENCING_TOKEN, the lease's holder id
in MANNA_FENCE_HOLDER (fenced writes carry both) and the lock name in
MANNA_LOCK_NAME. The lock is released when the command exits. Unattended (stdin
not a terminal), the command leads its own process group: a lost lease stops the
whole group, and SIGINT/SIGTERM/SIGHUP sent to `manna lock` are passed on to it.
At a terminal, Ctrl-C reaches the command directly.

Exit status:
  the command's (128 + N when signal N ended it), or:
  1  error (one `error:` line on stderr): no lock backend, backend unreachable,
     command not found
  2  usage error
  3  busy: the lock stayed held for the whole --wait; or lost: the lease was
     lost while the command ran, and the command was stopped (SIGTERM, then
     SIGKILL after 10 s); the last stderr line says which";

/// Command-line interface of `manna` (and `cargo xtask`).
#[derive(Debug, Parser)]
#[command(
    name = "manna",
    version,
    about = "manna operator tools: keys, envelopes, online re-encryption, locks",
    after_help = EXIT_STATUS
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
    #[command(after_help = EXIT_STATUS)]
    Migrate(migrate::MigrateArgs),
    /// The tour: create an embedded SQLite database of legacy Fernet rows, then dry-run, migrate, verify.
    Demo {
        /// Rows per table.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
    },
    /// Run a command while holding a distributed lock (Redis, or the database's lock table).
    #[command(after_help = LOCK_EXIT_STATUS)]
    Lock(lock::LockArgs),
    /// Key lifecycle checks.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Exit 0 only if no row in the columns still needs KEY; 3 (with the counts) if some do.
    RetireCheck {
        /// A configured key's id as `info` shows it (AES or Fernet), or `fernet` for every Fernet key.
        key: String,
        #[command(flatten)]
        target: migrate::ColumnArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every configured key (with its metadata) as a key file encrypted to age recipients.
    Escrow {
        /// An escrow recipient's age public key (`age1…`); repeat for several.
        #[arg(long = "recipient", value_name = "AGE_PUBLIC_KEY", required = true)]
        recipients: Vec<String>,
        /// Write the escrow file here (default: stdout; it is encrypted).
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Recover the key file from an escrow file with an escrow recipient's age identity.
    EscrowOpen {
        /// The age identity file (`AGE-SECRET-KEY-1…` lines).
        #[arg(long, value_name = "FILE")]
        identity: std::path::PathBuf,
        /// Where to write the recovered key file (created with mode 0600; never printed).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// The escrow file (default: stdin).
        file: Option<std::path::PathBuf>,
    },
}

/// The name the program was started as (`manna` or `cargo xtask`), for
/// usage lines and hints.
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// `manna` or `cargo xtask`: how to spell a command in a hint.
pub(crate) fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("manna")
}

/// Runs the CLI on the process's arguments, named `program` in help and
/// hints (`"manna"`, `"cargo xtask"`), and returns the exit status.
pub fn main(program: &'static str) -> ExitCode {
    run_from(program, std::env::args_os())
}

/// Runs the CLI on `args` (the first one is the program path, as in
/// [`std::env::args_os`]), named `program` in help and hints. Usage errors
/// print clap's message and return 2; `--help` and `--version` print and
/// return 0.
pub fn run_from<I, T>(program: &'static str, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let _ = PROGRAM.set(program);
    let parsed = Cli::command()
        .name(program)
        .bin_name(program)
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let origin = if cli.key_file.is_some() {
        hints::KeyOrigin::File
    } else {
        hints::KeyOrigin::Environment
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let mut line = one_line(&err);
            if let Some(hint) = hints::hint(&err, origin) {
                line.push_str("; ");
                line.push_str(&hint);
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines (progress without a terminal) go to stderr; `RUST_LOG` filters.
fn init_tracing() {
    // Audit events repeat what the report says; `RUST_LOG=info,manna::audit=info`
    // shows them (or routes them, with a subscriber of one's own).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,manna::audit=off"));
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_tracing();
    let keys = keys::KeyConfig {
        key_file: cli.key_file,
        accept_plaintext: false,
    };
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Keygen => done(keys::keygen()),
        Command::Info { json } => done(keys::info(&keys, json)),
        Command::Inspect { token } => done(keys::inspect(&token)),
        Command::Encrypt { aad } => done(keys::encrypt(&keys, aad.as_deref())),
        Command::Decrypt { aad } => done(keys::decrypt(&keys, aad.as_deref())),
        Command::Migrate(args) => migrate::migrate(&keys, &args),
        Command::Demo { rows } => done(demo::demo(rows)),
        Command::Lock(args) => lock::lock(&args),
        Command::Keys {
            command: KeysCommand::RetireCheck { key, target, json },
        } => migrate::retire_check(&keys, &target, &key, json),
        Command::Keys {
            command: KeysCommand::Escrow { recipients, out },
        } => done(keys::escrow(&keys, &recipients, out.as_deref())),
        Command::Keys {
            command:
                KeysCommand::EscrowOpen {
                    identity,
                    out,
                    file,
                },
        } => done(keys::escrow_open(&identity, file.as_deref(), &out)),
    }
}
