//! `manna`: the operator CLI (`cargo install --path crates/manna-cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    manna_cli::main("manna")
}
