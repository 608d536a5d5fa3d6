//! `cargo xtask`: manna's operator CLI. Parsing and wiring only; the work is
//! done by the library crates.
//!
//! Exit status 0 on success; otherwise one clear line on stderr and status 1
//! (2 for usage errors, from clap). Never a panic or a backtrace for bad input.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod keys;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One clear line, no backtrace: `{:#}` joins the context chain.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
    }
}
