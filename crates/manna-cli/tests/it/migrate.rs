//! `manna migrate` end to end, on real PostgreSQL and SQLite: the data
//! after each run is checked by decrypting every row.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manna_crypto::{AesKey, FernetKey, Keyring};
use serde_json::Value;

use crate::db::{redis_url, TestDb};
use crate::{assert_one_line_error, assert_verdict, manna, stderr, stdout};

/// The keys of one scenario, as the CLI's environment.
struct Keys {
    aes: String,
    previous: Vec<String>,
    fernet: String,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            aes: AesKey::generate().to_base64().to_string(),
            previous: Vec::new(),
            fernet: FernetKey::generate().to_base64().to_string(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MANNA_ENCRYPTION_KEY_AES256", self.aes.clone()),
            ("MANNA_ENCRYPTION_KEY", self.fernet.clone()),
        ];
        if !self.previous.is_empty() {
            env.push((
                "MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS",
                self.previous.join(","),
            ));
        }
        env
    }

    fn keyring(&self) -> Keyring {
        Keyring::builder()
            .primary(AesKey::from_base64(&self.aes).unwrap())
            .previous_keys(
                self.previous
                    .iter()
                    .map(|k| AesKey::from_base64(k).unwrap()),
            )
            .fernet(FernetKey::from_base64(&self.fernet).unwrap())
            .build()
            .unwrap()
    }

    fn fernet_key(&self) -> FernetKey {
        FernetKey::from_base64(&self.fernet).unwrap()
    }

    /// Runs the CLI with these keys in its environment, plus `extra`.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        let env = self.env();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        manna(args, &env, b"")
    }

    fn primary_id(&self) -> String {
        AesKey::from_base64(&self.aes).unwrap().id().to_string()
    }
}

fn plaintext(i: usize) -> String {
    format!("access-sandbox-{i:08}-{:x}", i.wrapping_mul(0x9e37_79b9))
}

/// Runs `migrate` with `args` against `db`; returns the JSON report (stdout) and the output.
fn migrate(db: &TestDb, keys: &Keys, table: &str, args: &[&str]) -> (Value, std::process::Output) {
    let column = format!("{table}.secret");
    let mut all = vec![
        "migrate",
        "--database-url",
        db.url(),
        "--column",
        &column,
        "--json",
    ];
    all.extend_from_slice(args);
    let out = keys.run(&all, &[]);
    let report = serde_json::from_str(stdout(&out).trim()).unwrap_or(Value::Null);
    (report, out)
}

/// A dry run of a column with rows still to migrate: exit 3 (incomplete).
fn dry_run(db: &TestDb, keys: &Keys, table: &str) -> Value {
    let (report, out) = migrate(db, keys, table, &["--dry-run"]);
    assert_verdict(&out, 3, "incomplete:");
    report
}

fn ok(db: &TestDb, keys: &Keys, table: &str, args: &[&str]) -> Value {
    let (report, out) = migrate(db, keys, table, args);
    assert!(
        out.status.success(),
        "migrate {args:?} failed: {}",
        stderr(&out)
    );
    report
}

/// Decrypts every row with `keys` (AAD `TABLE.secret`) and checks it equals `expected`.
fn assert_plaintexts(db: &TestDb, keys: &Keys, table: &str, expected: &HashMap<i64, String>) {
    let keyring = keys.keyring();
    let aad = format!("{table}.secret");
    let rows = db.rows(table);
    assert_eq!(rows.len(), expected.len());
    for (id, value) in rows {
        let value = value.expect("no NULLs in this table");
        let pt = keyring
            .decrypt(&value, aad.as_bytes())
            .unwrap_or_else(|e| panic!("row {id}: {e}"));
        assert_eq!(pt.to_str().unwrap(), expected[&id], "row {id}");
    }
}

fn seed_fernet(db: &TestDb, keys: &Keys, table: &str, n: usize) -> HashMap<i64, String> {
    let f = keys.fernet_key();
    let values: Vec<Option<String>> = (1..=n)
        .map(|i| Some(f.encrypt(plaintext(i).as_bytes())))
        .collect();
    db.create_table(table, &values);
    (1..=n).map(|i| (i as i64, plaintext(i))).collect()
}

fn column_report(report: &Value) -> &Value {
    &report["columns"][0]
}

fn hundred_thousand_rows(db: TestDb) {
    let keys = Keys::new();
    let expected = seed_fernet(&db, &keys, "plaid_items", 100_000);

    let before = dry_run(&db, &keys, "plaid_items");
    assert_eq!(before["mode"], "dry-run");
    assert_eq!(before["target"], "aes256gcm");
    let c = column_report(&before);
    assert_eq!(c["table"], "plaid_items");
    assert_eq!(c["column"], "secret");
    assert_eq!(c["total"], 100_000);
    assert_eq!(
        c["by_format"]["fernet"][keys.fernet_key().id().to_string()],
        100_000
    );
    assert_eq!(c["pending"], 100_000);
    assert_eq!(c["migrated"], 0);

    let run = ok(&db, &keys, "plaid_items", &["--batch-size", "2000"]);
    let c = column_report(&run);
    assert_eq!(c["migrated"], 100_000);
    assert_eq!(c["failed"], Value::Array(vec![]));
    assert!(c["elapsed_s"].as_f64().unwrap() > 0.0);
    assert!(c["rows_per_s"].as_f64().unwrap() > 0.0);

    let after = ok(&db, &keys, "plaid_items", &["--verify-only"]);
    let c = column_report(&after);
    assert_eq!(c["by_format"]["fernet"], serde_json::json!({}));
    assert_eq!(c["status"], "completed");
    assert_eq!(after["verdict"], "complete");
    assert_eq!(c["by_format"]["aes256gcm"][keys.primary_id()], 100_000);
    assert_plaintexts(&db, &keys, "plaid_items", &expected);

    // A second run finds nothing to do.
    let again = ok(&db, &keys, "plaid_items", &["--restart"]);
    assert_eq!(column_report(&again)["migrated"], 0);
    assert_eq!(column_report(&again)["unchanged"], 100_000);
}

#[test]
fn postgres_100k_fernet_rows_migrated_and_verified() {
    hundred_thousand_rows(TestDb::postgres());
}

#[test]
fn sqlite_100k_fernet_rows_migrated_and_verified() {
    hundred_thousand_rows(TestDb::sqlite());
}

fn read_only_modes_write_nothing(db: TestDb) {
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 500);
    let before = db.rows("items");
    let checkpoints = db.checkpoint_rows();
    dry_run(&db, &keys, "items");
    // verify-only on Fernet rows: every row decrypts, but none is in the
    // target format yet: incomplete, exit 3.
    let (verify, out) = migrate(&db, &keys, "items", &["--verify-only"]);
    assert_verdict(&out, 3, "incomplete:");
    assert_eq!(column_report(&verify)["pending"], 500);
    assert_eq!(column_report(&verify)["failed"], serde_json::json!([]));
    assert_eq!(db.rows("items"), before);
    assert_eq!(db.checkpoint_rows(), checkpoints);
}

#[test]
fn postgres_dry_run_and_verify_only_write_nothing() {
    read_only_modes_write_nothing(TestDb::postgres());
}

#[test]
fn sqlite_dry_run_and_verify_only_write_nothing() {
    read_only_modes_write_nothing(TestDb::sqlite());
}

#[test]
fn rotation_rollback_and_forward_again() {
    let db = TestDb::sqlite();
    let mut keys = Keys::new();
    let expected = seed_fernet(&db, &keys, "items", 1_000);
    ok(&db, &keys, "items", &[]);
    let key_a = keys.primary_id();

    // Rotate A -> B: A becomes decrypt-only.
    keys.previous.push(keys.aes.clone());
    keys.aes = AesKey::generate().to_base64().to_string();
    let run = ok(&db, &keys, "items", &[]);
    assert_eq!(column_report(&run)["migrated"], 1_000);
    let verify = ok(&db, &keys, "items", &["--verify-only"]);
    assert_eq!(
        column_report(&verify)["by_format"]["aes256gcm"][keys.primary_id()],
        1_000
    );
    assert!(column_report(&verify)["by_format"]["aes256gcm"]
        .get(&key_a)
        .is_none());
    assert_plaintexts(&db, &keys, "items", &expected);

    // A is no longer used: retire-check says so and exits 0.
    let o = keys.run(
        &[
            "keys",
            "retire-check",
            &key_a,
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // B is in use: exit 3 with the count.
    let o = keys.run(
        &[
            "keys",
            "retire-check",
            &keys.primary_id(),
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
        ],
        &[],
    );
    assert!(assert_verdict(&o, 3, "in use:").contains("still needed by 1000 row(s)"));

    // Roll back to Fernet, then forward again.
    let back = ok(&db, &keys, "items", &["--to", "fernet"]);
    assert_eq!(back["target"], "fernet");
    assert_eq!(column_report(&back)["migrated"], 1_000);
    let f = keys.fernet_key();
    for (id, v) in db.rows("items") {
        assert_eq!(
            f.decrypt(&v.unwrap()).unwrap().to_str().unwrap(),
            expected[&id]
        );
    }
    ok(&db, &keys, "items", &[]);
    assert_plaintexts(&db, &keys, "items", &expected);
}

#[test]
fn bad_rows_are_reported_by_id_and_left_untouched() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    let f = keys.fernet_key();
    let stranger = Keyring::new(AesKey::generate());
    let mut values: Vec<Option<String>> = (1..=300)
        .map(|i| Some(f.encrypt(plaintext(i).as_bytes())))
        .collect();
    values[9] = Some("garbage value 42".to_owned()); // id 10: plaintext
    values[19] = Some(stranger.encrypt(b"other", b"items.secret").unwrap()); // id 20: unknown key
    values[29] = Some("gAAAAABnot-a-real-token".to_owned()); // id 30: damaged
    values[39] = None; // id 40: NULL, left alone
    db.create_table("items", &values);
    let before: HashMap<i64, Option<String>> = db.rows("items").into_iter().collect();

    let (report, out) = migrate(&db, &keys, "items", &[]);
    let err = assert_verdict(&out, 4, "undecryptable:");
    assert!(err.contains("3 row(s) cannot be decrypted"), "{err}");
    assert!(
        !err.contains("garbage"),
        "a value leaked into the error: {err}"
    );
    let c = column_report(&report);
    let mut failed: Vec<i64> = c["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    failed.sort();
    assert_eq!(failed, vec![10, 20, 30]);
    assert_eq!(c["migrated"], 296);
    let after: HashMap<i64, Option<String>> = db.rows("items").into_iter().collect();
    for id in [10, 20, 30, 40] {
        assert_eq!(after[&id], before[&id], "row {id} must be untouched");
    }
    assert!(
        !stdout(&out).contains("garbage value"),
        "a value leaked into the report"
    );
}

#[test]
fn concurrent_application_writes_are_never_lost() {
    let db = Arc::new(TestDb::postgres());
    let keys = Arc::new(Keys::new());
    let n = 20_000usize;
    let mut expected = seed_fernet(&db, &keys, "items", n);

    // Application writers: rewrite random rows while the migration runs, in
    // either format (old code writes Fernet, new code AES), logging the
    // last plaintext they wrote per row.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<HashMap<i64, String>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (db, keys, stop, log) = (db.clone(), keys.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || {
                let keyring = keys.keyring();
                let f = keys.fernet_key();
                let mut state = 0x2545_f491_4f6c_dd1du64 ^ w;
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let id = (state % n as u64) as i64 + 1;
                    let pt = format!("app-write-{w}-{writes}");
                    let token = if writes.is_multiple_of(2) {
                        f.encrypt(pt.as_bytes())
                    } else {
                        keyring.encrypt(pt.as_bytes(), b"items.secret").unwrap()
                    };
                    // Hold the log lock across the write so the log's order is the commit order.
                    let mut log = log.lock().unwrap();
                    assert_eq!(db.update("items", id, &token), 1);
                    log.insert(id, pt);
                    writes += 1;
                }
                writes
            })
        })
        .collect();

    let (report, out) = migrate(
        &db,
        &keys,
        "items",
        &[
            "--batch-size",
            "200",
            "--fixed-batch-size",
            "--max-rows-per-sec",
            "10000",
        ],
    );
    // Old-format writers still running when the last sweep ends leave rows
    // pending: the run must then say "incomplete" (exit 3), never "completed".
    if !out.status.success() {
        assert_verdict(&out, 3, "incomplete:");
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(writes > 0);

    expected.extend(log.lock().unwrap().drain());
    let c = column_report(&report);
    assert_eq!(c["failed"], Value::Array(vec![]));
    // Every row ends readable with the last value anyone wrote to it.
    assert_plaintexts(&db, &keys, "items", &expected);
    // Rows written as Fernet after the scan passed them are picked up by a second run.
    ok(&db, &keys, "items", &[]);
    let verify = ok(&db, &keys, "items", &["--verify-only"]);
    assert_eq!(
        column_report(&verify)["by_format"]["fernet"],
        serde_json::json!({})
    );
    assert_plaintexts(&db, &keys, "items", &expected);
}

/// Starts `migrate` of `items.secret` in the background, in batches of 100
/// at `rate` rows/s, with `extra` arguments; its output is discarded.
fn spawn_throttled(db: &TestDb, keys: &Keys, rate: u64, extra: &[&str]) -> std::process::Child {
    let rate = rate.to_string();
    Command::new(env!("CARGO_BIN_EXE_manna"))
        .args([
            "migrate",
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
        ])
        .args([
            "--batch-size",
            "100",
            "--fixed-batch-size",
            "--max-rows-per-sec",
            &rate,
        ])
        .args(extra)
        .envs(keys.env().iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Rows of `items` in the AES-256-GCM format.
fn aes_rows(db: &TestDb) -> usize {
    db.rows("items")
        .iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|v| v.starts_with("mn1:")))
        .count()
}

/// Waits (up to 60 s) until at least `rows` rows of `items` are migrated,
/// the migrator `child` still running.
fn wait_until_migrated(db: &TestDb, child: &mut std::process::Child, rows: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while aes_rows(db) < rows {
        assert!(Instant::now() < deadline, "the migrator made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the migrator ended before it had migrated {rows} row(s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_mid_run_then_resumed() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    let expected = seed_fernet(&db, &keys, "items", 20_000);

    let mut child = spawn_throttled(&db, &keys, 4000, &["--lock-ttl", "2"]);
    // Wait until some batches are committed, then SIGKILL (no chance to clean up).
    wait_until_migrated(&db, &mut child, 2_000);
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = aes_rows(&db);
    assert!(partial < 20_000, "killed too late to test resumption");

    // The killed migrator's lease (2 s) lapses while this one waits.
    let report = ok(&db, &keys, "items", &["--lock-wait", "10"]);
    let c = column_report(&report);
    assert_eq!(c["resumed"], true);
    assert_eq!(c["failed"], Value::Array(vec![]));
    let verify = ok(&db, &keys, "items", &["--verify-only"]);
    assert_eq!(
        column_report(&verify)["by_format"]["aes256gcm"][keys.primary_id()],
        20_000
    );
    assert_plaintexts(&db, &keys, "items", &expected);
}

#[test]
fn two_migrators_on_one_column_one_waits_or_refuses() {
    let redis = redis_url();
    let db = TestDb::postgres();
    let keys = Keys::new();
    let expected = seed_fernet(&db, &keys, "items", 10_000);
    let mut env = keys.env();
    env.push(("REDIS_URL", redis));
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_manna"))
            .args([
                "migrate",
                "--database-url",
                db.url(),
                "--column",
                "items.secret",
                "--json",
                "--batch-size",
                "100",
                "--fixed-batch-size",
                "--max-rows-per-sec",
                "2000",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    // The second starts once the first is migrating (holds the column).
    wait_until_migrated(&db, &mut first, 1);
    let second = spawn().wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    // The second either refused while the first held the column…
    if !second.status.success() {
        let err = assert_one_line_error(&second);
        assert!(err.contains("another migrator is running"), "{err}");
    }
    // …and in every case each row was migrated once, nothing clobbered.
    let total: u64 = [&first, &second]
        .iter()
        .filter_map(|o| serde_json::from_str::<Value>(stdout(o).trim()).ok())
        .map(|r| column_report(&r)["migrated"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 10_000);
    assert_plaintexts(&db, &keys, "items", &expected);
}

#[test]
fn injection_in_column_is_rejected_before_any_sql() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 10);
    for column in [
        "items.secret; DROP TABLE items",
        "items.secret\"--",
        "items",
        "items.sec ret",
        "x'); DROP TABLE items; --.secret",
    ] {
        let o = keys.run(
            &["migrate", "--database-url", db.url(), "--column", column],
            &[],
        );
        let err = assert_one_line_error(&o);
        assert!(err.contains("invalid"), "{column}: {err}");
    }
    assert_eq!(db.rows("items").len(), 10, "table intact");
}

#[test]
fn clear_errors_for_bad_input() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 10);

    // Unknown table and column.
    let (_, o) = migrate(&db, &keys, "nope", &[]);
    assert_one_line_error(&o);
    let o = keys.run(
        &[
            "migrate",
            "--database-url",
            db.url(),
            "--column",
            "items.nope",
        ],
        &[],
    );
    assert_one_line_error(&o);

    // No keys.
    let o = manna(
        &[
            "migrate",
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
        ],
        &[],
        b"",
    );
    assert!(assert_one_line_error(&o).contains("MANNA_ENCRYPTION_KEY_AES256"));

    // Wrong Fernet key: preflight refuses before anything is written.
    let wrong = Keys::new();
    let before = db.rows("items");
    let (_, o) = migrate(&db, &wrong, "items", &[]);
    assert!(
        assert_one_line_error(&o).contains("preflight"),
        "{}",
        stderr(&o)
    );
    assert_eq!(db.rows("items"), before);

    // Unreachable database: named, password redacted.
    let o = keys.run(
        &[
            "migrate",
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:9/prod",
            "--column",
            "items.secret",
        ],
        &[],
    );
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("127.0.0.1:9") && !err.contains("hunter2"),
        "{err}"
    );

    // Unreachable Redis: names REDIS_URL.
    let o = keys.run(
        &[
            "migrate",
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
        ],
        &[("REDIS_URL", "redis://:sekret@127.0.0.1:9/0")],
    );
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("REDIS_URL") && !err.contains("sekret"),
        "{err}"
    );
    assert!(db.is_pg() || db.rows("items") == before);
}

/// Without a database the commands that need one say so, naming both ways
/// to give it; they never fall back to (and create) the demo's SQLite file.
#[test]
fn no_database_is_an_error_naming_the_flag_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    for args in [
        &["migrate", "--column", "items.secret"][..],
        &["keys", "retire-check", "fernet", "--column", "items.secret"][..],
    ] {
        let env = keys.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let o = Command::new(env!("CARGO_BIN_EXE_manna"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .envs(env)
            .output()
            .unwrap();
        let err = assert_one_line_error(&o);
        assert!(
            err.contains("--database-url") && err.contains("DATABASE_URL"),
            "{err}"
        );
        assert!(!dir.path().join("manna-demo.db").exists(), "{args:?}");
    }
}

/// Issue 9: out-of-range numbers are refused by the CLI before anything runs
/// (exit 2, one `error:` line naming the flag), never clamped, never a panic
/// or a minutes-long run.
#[test]
fn out_of_range_options_are_usage_errors() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 3);
    for (flag, value) in [
        ("--workers", "100000"),
        ("--workers", "0"),
        ("--workers", "257"),
        ("--shard", "0/4294967295"),
        ("--shard", "0/1025"),
        ("--batch-size", "1000001"),
        ("--batch-size", "0"),
        ("--max-rows-per-sec", "0"),
    ] {
        let started = Instant::now();
        let o = keys.run(
            &[
                "migrate",
                "--database-url",
                db.url(),
                "--column",
                "items.secret",
                flag,
                value,
            ],
            &[],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{flag} {value}: {err}");
        assert!(errors[0].contains(flag), "{flag} {value}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{flag} {value}"
        );
    }
    // The largest allowed values are accepted (the shard holds only part
    // of the rows, so the run may end incomplete: exit 0 or 3).
    let (_, o) = migrate(
        &db,
        &keys,
        "items",
        &["--workers", "256", "--shard", "1023/1024"],
    );
    let err = stderr(&o);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{err}");
    assert!(!err.lines().any(|l| l.starts_with("error:")), "{err}");
    assert_eq!(db.rows("items").len(), 3, "table intact");
}

/// Issue 9: a column full of undecryptable rows cannot flood the logs: the
/// first 20 are logged one by one, then one line gives the count; the report
/// still lists every id.
#[test]
fn failure_logs_are_capped_per_column() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    // Good rows first, so preflight's sample passes; then 50 bad ones.
    let f = keys.fernet_key();
    let values: Vec<Option<String>> = (1..=250)
        .map(|i| {
            Some(if i <= 200 {
                f.encrypt(plaintext(i).as_bytes())
            } else {
                format!("mn1:bad-{i}")
            })
        })
        .collect();
    db.create_table("items", &values);
    let (report, o) = migrate(&db, &keys, "items", &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    let one_by_one = err
        .lines()
        .filter(|l| l.contains("cannot decrypt value"))
        .count();
    assert_eq!(one_by_one, 20, "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("30 more rows cannot be decrypted")),
        "{err}"
    );
    assert_eq!(
        column_report(&report)["failed"].as_array().map(Vec::len),
        Some(50)
    );
}

/// Issue 9: a migration to an expired primary key is refused before any row
/// is touched (one `error:` line naming the key and the expiry).
#[test]
fn expired_primary_key_refuses_to_migrate() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!(
            "[[keys]]\nkey = \"{}\"\nstatus = \"primary\"\nexpires_at = 2020-01-01T00:00:00Z\n\n\
             [[keys]]\nkey = \"{}\"\nalgorithm = \"fernet\"\nstatus = \"decrypt_only\"\n",
            keys.aes, keys.fernet
        ),
    )
    .unwrap();
    let o = manna(
        &[
            "migrate",
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
            "--key-file",
            path.to_str().unwrap(),
        ],
        &[],
        b"",
    );
    let err = assert_one_line_error(&o);
    assert!(err.contains(&keys.primary_id()), "{err}");
    assert!(err.contains("expired on 2020-01-01"), "{err}");
    let before = seed_values(&db);
    assert!(before.iter().all(|v| v.starts_with("gAAAAA")), "{before:?}");
}

fn seed_values(db: &TestDb) -> Vec<String> {
    db.rows("items")
        .into_iter()
        .filter_map(|(_, v)| v)
        .collect()
}

/// Issue 9 item 14: past `fernet_until`, a migration reads no Fernet row:
/// they are failed rows of kind `fernet_ended`, still counted under their
/// Fernet key, left untouched, and the run exits 4 (never "complete");
/// retire-check still says they need the Fernet key. Before the date the
/// same rows migrate, and `migrate` warns on stderr that Fernet fallback
/// (until when) and plaintext acceptance are on.
#[test]
fn migration_after_fernet_until_fails_fernet_rows_and_warns_before() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 5);
    let fernet_id = keys.fernet_key().id().to_string();
    let before = seed_values(&db);
    let column = ["--database-url", db.url(), "--column", "items.secret"];
    let ended = [("MANNA_ENCRYPTION_FERNET_UNTIL", "2020-01-01T00:00:00Z")];

    let mut args = vec!["migrate"];
    args.extend_from_slice(&column);
    args.push("--json");
    let out = keys.run(&args, &ended);
    let last = assert_verdict(&out, 4, "undecryptable:");
    assert!(
        last.contains("5 of them are Fernet tokens past fernet_until"),
        "{last}"
    );
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let c = column_report(&report);
    assert_eq!(c["failure_kinds"]["fernet_ended"], 5, "{c}");
    assert_eq!(c["failed"].as_array().unwrap().len(), 5);
    assert_eq!(c["by_format"]["fernet"][&fernet_id], 5, "{c}");
    assert_eq!(c["migrated"], 0);
    assert_ne!(c["status"], "completed");
    assert_eq!(seed_values(&db), before, "nothing rewritten");
    assert!(
        stderr(&out).contains("warning: Fernet reading ended at 2020-01-01T00:00:00Z"),
        "{}",
        stderr(&out)
    );

    let mut retire = vec!["keys", "retire-check", "fernet"];
    retire.extend_from_slice(&column);
    let out = keys.run(&retire, &ended);
    assert_verdict(&out, 3, "in use:");

    // Before the date the same rows migrate; the run warns first.
    let mut args = vec!["migrate"];
    args.extend_from_slice(&column);
    args.push("--accept-plaintext");
    let out = keys.run(
        &args,
        &[("MANNA_ENCRYPTION_FERNET_UNTIL", "2099-01-01T00:00:00Z")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l
            .starts_with("warning: Fernet fallback is on until 2099-01-01T00:00:00Z")
            && l.contains("another column, row or backup is accepted")),
        "{err}"
    );
    assert!(err.contains("warning: plaintext acceptance is on"), "{err}");
    assert!(!err.contains(&keys.fernet) && !err.contains(&keys.aes));
    assert!(seed_values(&db).iter().all(|v| v.starts_with("mn1:")));
}

/// GET `path` from `addr` over plain HTTP/1.0; the body, if anything answers.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Issue 11: `--metrics-addr` serves Prometheus text for the whole run; a
/// scrape during a throttled run on PostgreSQL shows the migration's
/// counters and gauges and the keys' gauges.
#[test]
fn metrics_are_served_during_a_throttled_run() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    // 8 s at 1000 rows/s: time for a loaded machine to scrape them all.
    seed_fernet(&db, &keys, "items", 8_000);
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut child = spawn_throttled(&db, &keys, 1000, &["--metrics-addr", &addr]);
    let names = [
        "manna_migrate_rows_scanned_total",
        "manna_migrate_rows_migrated_total",
        "manna_migrate_rows_remaining",
        "manna_migrate_rows_per_second",
        "manna_migrate_batch_seconds",
        "manna_crypto_key_info",
    ];
    // Counters and gauges are set by different threads: scrape until every
    // one has appeared (or the run is over).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut scraped = String::new();
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if let Some(body) = http_get(&addr, "/metrics") {
            scraped = body;
            if names.iter().all(|n| scraped.contains(n)) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the run failed");
    for name in names {
        assert!(scraped.contains(name), "{name} missing from:\n{scraped}");
    }
    assert!(scraped.contains("column=\"items.secret\""), "{scraped}");
    assert!(!scraped.contains(&keys.aes) && !scraped.contains(&keys.fernet));
}

/// Issue 11: a dry run's table says how many rows a migration would
/// rewrite, not a column of zeros.
#[test]
fn the_dry_run_table_counts_what_would_be_migrated() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 57);
    let out = keys.run(
        &[
            "migrate",
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
            "--dry-run",
        ],
        &[],
    );
    assert_verdict(&out, 3, "incomplete:");
    let table = stdout(&out);
    assert!(table.contains("to migrate"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("items.secret"))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["57", "57"], "{row}");
}
