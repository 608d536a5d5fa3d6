//! `manna demo`: the tour ends complete and points at the next command,
//! spelled as the program was run.

use std::process::Command;

#[test]
fn the_tour_ends_complete_and_names_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_manna"))
        .args(["demo", "--rows", "200"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("done: "), "{out}");
    assert!(
        last.ends_with("; 0 failed. Next: manna migrate --help, docs/migration-guide.md"),
        "{last}"
    );
    assert!(dir.path().join("manna-demo.db").exists());
}
