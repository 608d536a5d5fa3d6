//! `cargo xtask …`: inside this repository, the same CLI as the installed
//! `manna` binary (`manna_cli`), built with `--release` by the alias in
//! `.cargo/config.toml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    manna_cli::main("cargo xtask")
}
