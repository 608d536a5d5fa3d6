//! `cargo xtask` runs the same CLI as the installed `manna` binary
//! (`manna_cli`): the same verbs, the same behaviour, its own name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env_remove("MANNA_ENCRYPTION_KEY_AES256")
        .env_remove("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS")
        .env_remove("MANNA_ENCRYPTION_KEY")
        .env_remove("MANNA_ENCRYPTION_FERNET_UNTIL")
        .env_remove("MANNA_KEY_FILE")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run xtask")
}

#[test]
fn help_lists_every_verb_under_the_xtask_name() {
    let o = xtask(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8(o.stdout).unwrap();
    assert!(help.contains("Usage: cargo xtask"), "{help}");
    for verb in [
        "keygen", "info", "inspect", "encrypt", "decrypt", "migrate", "demo", "keys",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(verb)),
            "{verb} missing from: {help}"
        );
    }
}

#[test]
fn a_verb_runs_the_cli_code() {
    let o = xtask(&["keygen"]);
    assert!(o.status.success(), "{o:?}");
    let key = String::from_utf8(o.stdout).unwrap();
    assert_eq!(key.trim().len(), 44, "a base64 key of 32 bytes: {key:?}");

    // The CLI's contract too: a usage error is exit 2, a missing key one
    // `error:` line naming the variable, with the xtask name in hints.
    assert_eq!(
        xtask(&["migrate", "--batch-size", "0"]).status.code(),
        Some(2)
    );
    let o = xtask(&["migrate", "--column", "t.c"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn the_tour_runs_and_its_hints_say_cargo_xtask() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--rows", "100"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .expect("run xtask");
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .contains("Next: cargo xtask migrate --help"),
        "{out}"
    );
}
