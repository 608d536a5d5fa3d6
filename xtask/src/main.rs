//! `cargo xtask …`: inside this repository, the same CLI as the installed
//! `manna` binary (`manna_cli`), built with `--release` by the alias in
//! `.cargo/config.toml` — plus `cargo xtask test`, which runs every test of
//! the repository (repository automation, not a verb of `manna`).

use std::process::ExitCode;

mod test;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "test") {
        return test::run();
    }
    manna_cli::main("cargo xtask")
}
