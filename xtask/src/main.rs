//! `cargo xtask`: manna's operator CLI. Parsing and wiring only; the work is
//! done by the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line interface of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about = "manna operator tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {}

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
    match cli.command {}
}
