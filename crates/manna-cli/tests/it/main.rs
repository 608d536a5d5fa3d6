//! End-to-end tests of the `manna` binary: exit codes, stdout/stderr
//! contract, and that nothing secret is ever printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db;
mod demo;
mod keys;
mod lock;
mod migrate;
mod troubleshooting;
mod verdicts;

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs the `manna` binary with a clean key environment plus `env`, feeding `stdin`.
pub(crate) fn manna(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = manna_command(args, env).spawn().expect("spawn manna");
    // The process may exit before reading stdin (e.g. a key error): ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// The `manna` command with a clean key, database and Redis environment
/// plus `env`, and piped stdin, stdout and stderr; not started.
pub(crate) fn manna_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manna"));
    cmd.args(args)
        .env_remove("MANNA_ENCRYPTION_KEY_AES256")
        .env_remove("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS")
        .env_remove("MANNA_ENCRYPTION_KEY")
        .env_remove("MANNA_ENCRYPTION_FERNET_UNTIL")
        .env_remove("MANNA_KEY_FILE")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A failed run: non-zero exit, the error as exactly one line on stderr
/// starting with `error:` (the last line; progress log lines may precede
/// it), no panic or backtrace. Returns the error line.
pub(crate) fn assert_one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure, got success");
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {err:?}");
    assert_eq!(
        err.lines().last(),
        Some(errors[0]),
        "the error comes last: {err:?}"
    );
    errors[0].to_owned()
}

/// A run that ended with a verdict other than "complete": exit status
/// `code` (3 incomplete, 4 undecryptable), no `error:` line, no panic, and
/// the reason as the last line of stderr, starting with `prefix`. Returns
/// that line.
pub(crate) fn assert_verdict(o: &Output, code: i32, prefix: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(
        !err.contains("panicked") && !err.lines().any(|l| l.starts_with("error:")),
        "{err:?}"
    );
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with(prefix), "{err:?}");
    last
}
