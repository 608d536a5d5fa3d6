//! `cargo xtask test`: every test of the repository in one command — the
//! Rust workspace (unit, integration, property, concurrency, fault tests
//! and doctests, against the real PostgreSQL and Redis), then the Python
//! binding, built into a fresh virtual environment as a user installs it
//! (`pip install ./crates/manna-py`) and tested with pytest.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Runs every test; the first failing part decides the exit status.
pub(crate) fn run() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rust = Command::new(&cargo);
    rust.args(["test", "--workspace", "--all-features"])
        .current_dir(&root);
    if !succeeded("cargo test --workspace --all-features", &mut rust) {
        return ExitCode::FAILURE;
    }
    match python(&root, &cargo) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: the Python tests could not run: {e}");
            ExitCode::FAILURE
        }
    }
}

fn succeeded(what: &str, cmd: &mut Command) -> bool {
    eprintln!("\n==> {what}");
    match cmd.status() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("error: {what} failed ({status})");
            false
        }
        Err(e) => {
            eprintln!("error: cannot run {what}: {e}");
            false
        }
    }
}

/// The Python binding's tests in a fresh virtual environment; the
/// cross-language tests use this checkout's CLI (its debug build).
fn python(root: &Path, cargo: &std::ffi::OsStr) -> std::io::Result<bool> {
    let dir = scratch_dir()?;
    let venv = dir.join("venv");
    let bin = venv.join("bin");
    let ok = succeeded(
        "python3 -m venv",
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    ) && succeeded(
        "pip install ./crates/manna-py (release build) and the test tools",
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args([
                "./crates/manna-py",
                "pytest",
                "cryptography",
                "sqlalchemy>=2",
            ])
            .arg("psycopg[binary]")
            .current_dir(root),
    ) && succeeded(
        "pytest crates/manna-py/python/tests",
        Command::new(bin.join("pytest"))
            .args([
                "crates/manna-py/python/tests",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
            ])
            .env(
                "MANNA_CLI",
                format!("{} run --quiet -p xtask --", cargo.to_string_lossy()),
            )
            .current_dir(root),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

fn scratch_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("manna-xtask-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
