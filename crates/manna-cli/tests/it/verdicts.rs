//! Issue 8 end to end: the verdicts (`done`, `safe`, the exit statuses) are
//! statements about the table. Each scenario runs the real `manna` binary
//! against real PostgreSQL (and Redis) or SQLite and checks the table
//! afterwards by decrypting every row.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manna_crypto::{inspect, AesKey, FernetKey, Format, Keyring};
use manna_store_diesel::diesel::connection::SimpleConnection;
use manna_store_diesel::diesel::sql_types::{Array, BigInt, Integer, Text};
use manna_store_diesel::diesel::{
    self, Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection,
};
use serde_json::{json, Value};

use crate::db::{redis_url, IdValue, TestDb};
use crate::{assert_one_line_error, manna, stderr, stdout};

/// How long any one child process may run before the test gives up on it.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// The keys of one scenario: a primary AES key and Fernet keys, first one
/// first (MultiFernet order).
struct Keys {
    aes: String,
    fernet: Vec<String>,
}

impl Keys {
    fn new() -> Keys {
        Keys::with_fernet_keys(1)
    }

    fn with_fernet_keys(n: usize) -> Keys {
        Keys {
            aes: AesKey::generate().to_base64().to_string(),
            fernet: (0..n)
                .map(|_| FernetKey::generate().to_base64().to_string())
                .collect(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MANNA_ENCRYPTION_KEY_AES256", self.aes.clone()),
            ("MANNA_ENCRYPTION_KEY", self.fernet.join(",")),
        ]
    }

    fn keyring(&self) -> Keyring {
        Keyring::builder()
            .primary(AesKey::from_base64(&self.aes).unwrap())
            .fernet_keys((0..self.fernet.len()).map(|i| self.fernet_key(i)))
            .build()
            .unwrap()
    }

    fn fernet_key(&self, i: usize) -> FernetKey {
        FernetKey::from_base64(&self.fernet[i]).unwrap()
    }

    fn fernet_id(&self, i: usize) -> String {
        self.fernet_key(i).id().to_string()
    }

    fn primary_id(&self) -> String {
        AesKey::from_base64(&self.aes).unwrap().id().to_string()
    }

    /// Runs the CLI to completion with these keys, plus `extra` variables.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let env = self.env();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        manna(args, &env, b"")
    }

    /// Starts the CLI in the background (stdout and stderr to files, so a
    /// chatty child never blocks on a full pipe).
    fn spawn(&self, args: &[&str], extra: &[(&str, &str)]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_manna"))
            .args(args)
            .env_remove("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS")
            .env_remove("MANNA_KEY_FILE")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .envs(self.env().iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("spawn manna");
        Running {
            child,
            out,
            err,
            _dir: dir,
        }
    }
}

/// A background `manna` process; killed if the test fails before waiting for it.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `signal` (`INT`, `STOP`, `CONT`) with the `kill` utility.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process (at most [`CHILD_DEADLINE`]) and returns its output.
    fn wait(mut self) -> Output {
        let deadline = Instant::now() + CHILD_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "manna {} did not finish within {CHILD_DEADLINE:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&self.out).unwrap(),
            stderr: std::fs::read(&self.err).unwrap(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The exit status, or 128 + the signal that ended the process.
fn code(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status
        .code()
        .or_else(|| o.status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The JSON report a `--json` run printed (Null if none).
fn report(o: &Output) -> Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or(Value::Null)
}

fn column_report(report: &Value) -> &Value {
    &report["columns"][0]
}

fn plaintext(i: i64) -> String {
    format!("access-sandbox-{i:08}-{:x}", i.wrapping_mul(0x9e37_79b9))
}

/// `migrate --database-url URL --column TABLE.secret --json ARGS…`.
fn migrate_args<'a>(db: &'a TestDb, column: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "migrate",
        "--database-url",
        db.url(),
        "--column",
        column,
        "--json",
    ];
    all.extend_from_slice(args);
    all
}

/// Arguments that make a run last: small fixed batches, throttled.
const SLOW: [&str; 5] = [
    "--batch-size",
    "100",
    "--fixed-batch-size",
    "--max-rows-per-sec",
    "4000",
];

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn pg(db: &TestDb) -> PgConnection {
    assert!(db.is_pg());
    PgConnection::establish(db.url()).expect("connect")
}

fn lite(db: &TestDb) -> SqliteConnection {
    let mut c =
        SqliteConnection::establish(db.url().trim_start_matches("sqlite://")).expect("open sqlite");
    c.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
    c
}

/// One `SELECT … AS n` on either backend.
fn count(db: &TestDb, sql: &str) -> i64 {
    if db.is_pg() {
        diesel::sql_query(sql)
            .get_result::<N>(&mut pg(db))
            .expect(sql)
            .n
    } else {
        diesel::sql_query(sql)
            .get_result::<N>(&mut lite(db))
            .expect(sql)
            .n
    }
}

/// Rows of `table` already in the AES envelope format.
fn aes_rows(db: &TestDb, table: &str) -> i64 {
    count(
        db,
        &format!("SELECT COUNT(*) AS n FROM {table} WHERE secret LIKE 'mn1:%'"),
    )
}

/// Waits until `table` has at least `rows` AES rows, while `child` runs.
fn wait_for_progress(db: &TestDb, table: &str, rows: i64, child: &mut Running) {
    let deadline = Instant::now() + CHILD_DEADLINE;
    while aes_rows(db, table) < rows {
        assert!(
            child.is_running(),
            "the migrator ended before it had migrated {rows} rows"
        );
        assert!(Instant::now() < deadline, "the migration made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inserts `(id, value)` rows into `table (id, secret)` of a PostgreSQL database.
fn pg_insert(conn: &mut PgConnection, table: &str, rows: &[(i64, String)]) {
    for chunk in rows.chunks(5_000) {
        let ids: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let vals: Vec<String> = chunk.iter().map(|r| r.1.clone()).collect();
        diesel::sql_query(format!(
            "INSERT INTO {table} (id, secret) SELECT * FROM unnest($1::bigint[], $2::text[])"
        ))
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&vals)
        .execute(conn)
        .expect("insert");
    }
}

/// `table (id, secret, version)` with Fernet tokens (first Fernet key) of
/// `plaintext(id)` at ids 1..=n; returns the plaintexts by id.
fn seed_fernet(db: &TestDb, keys: &Keys, table: &str, n: i64) -> HashMap<i64, String> {
    let f = keys.fernet_key(0);
    let values: Vec<Option<String>> = (1..=n)
        .map(|i| Some(f.encrypt(plaintext(i).as_bytes())))
        .collect();
    db.create_table(table, &values);
    (1..=n).map(|i| (i, plaintext(i))).collect()
}

/// The table's census, counted as the report counts it: AES envelopes by
/// header key id, Fernet tokens by the configured key that opens them.
fn table_census(keys: &Keys, rows: &[(i64, Option<String>)]) -> Value {
    let keyring = keys.keyring();
    let (mut aes, mut fernet) = (
        BTreeMap::<String, u64>::new(),
        BTreeMap::<String, u64>::new(),
    );
    let (mut plain, mut unknown) = (0u64, 0u64);
    for v in rows.iter().filter_map(|(_, v)| v.as_deref()) {
        match inspect(v) {
            Format::Aes256Gcm { key_id } => *aes.entry(key_id.to_string()).or_default() += 1,
            Format::Fernet => match keyring.fernet_key_of(v) {
                Some(id) => *fernet.entry(id.to_string()).or_default() += 1,
                None => unknown += 1,
            },
            Format::Plaintext => plain += 1,
            _ => unknown += 1,
        }
    }
    json!({"aes256gcm": aes, "fernet": fernet, "plaintext": plain, "unknown": unknown})
}

/// Every row of `table` is an envelope under the primary key and decrypts
/// (AAD `TABLE.secret`) to `expected[id]`; no row is missing or extra.
fn assert_all_primary(db: &TestDb, keys: &Keys, table: &str, expected: &HashMap<i64, String>) {
    let keyring = keys.keyring();
    let primary = AesKey::from_base64(&keys.aes).unwrap().id();
    let aad = format!("{table}.secret");
    let rows = db.rows(table);
    assert_eq!(rows.len(), expected.len(), "rows in {table}");
    let mut not_primary = Vec::new();
    for (id, value) in &rows {
        let value = value.as_deref().expect("no NULLs in this table");
        if inspect(value) != (Format::Aes256Gcm { key_id: primary }) {
            not_primary.push((*id, inspect(value).to_string()));
            continue;
        }
        let pt = keyring
            .decrypt(value, aad.as_bytes())
            .unwrap_or_else(|e| panic!("row {id}: {e}"));
        assert_eq!(pt.to_str().unwrap(), expected[id], "row {id}");
    }
    assert!(
        not_primary.is_empty(),
        "{} row(s) not under the primary key, e.g. {:?}",
        not_primary.len(),
        &not_primary[..not_primary.len().min(5)]
    );
}

// ---------------------------------------------------------------------------
// 1. retire-check per Fernet key id

#[test]
fn retire_check_counts_rows_per_fernet_key_id() {
    let db = TestDb::postgres();
    // MANNA_ENCRYPTION_KEY=new,old
    let keys = Keys::with_fernet_keys(2);
    let (new, old) = (keys.fernet_key(0), keys.fernet_key(1));
    let values: Vec<Option<String>> = (1..=100)
        .map(|i| {
            let key = if i <= 30 { &new } else { &old };
            Some(key.encrypt(plaintext(i).as_bytes()))
        })
        .collect();
    db.create_table("items", &values);
    let expected: HashMap<i64, String> = (1..=100).map(|i| (i, plaintext(i))).collect();
    let retire = |key: &str, json: bool| {
        let mut args = vec![
            "keys",
            "retire-check",
            key,
            "--database-url",
            db.url(),
            "--column",
            "items.secret",
        ];
        if json {
            args.push("--json");
        }
        keys.run(&args, &[])
    };
    let (new_id, old_id) = (keys.fernet_id(0), keys.fernet_id(1));

    // The old key opens 70 rows: in use, exit 3, the count named.
    let o = retire(&old_id, false);
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("items.secret: 70 row(s) need {old_id}")),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("70 row(s)"), "{}", stderr(&o));
    let o = retire(&old_id, true);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(report(&o)["columns"][0]["rows"], 70);
    let o = retire(&new_id, true);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(report(&o)["columns"][0]["rows"], 30);
    let o = retire("fernet", true);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(report(&o)["columns"][0]["rows"], 100);

    // An id that is not configured: an error listing the configured ids.
    let stranger = FernetKey::generate().id().to_string();
    let o = retire(&stranger, false);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = assert_one_line_error(&o);
    for id in [&keys.primary_id(), &new_id, &old_id] {
        assert!(err.contains(id.as_str()), "{id} not listed: {err}");
    }

    // Nothing was written by the checks.
    assert_eq!(
        table_census(&keys, &db.rows("items"))["fernet"][&old_id],
        70
    );

    // After the migration no row needs any Fernet key.
    let o = keys.run(&migrate_args(&db, "items.secret", &[]), &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_all_primary(&db, &keys, "items", &expected);
    for key in [old_id.as_str(), new_id.as_str(), "fernet"] {
        let o = retire(key, false);
        assert_eq!(code(&o), 0, "retire-check {key}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("items.secret: 0 row(s)"),
            "{}",
            stdout(&o)
        );
    }
    // The primary key is in use by every row.
    let o = retire(&keys.primary_id(), true);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(report(&o)["columns"][0]["rows"], 100);
}

// ---------------------------------------------------------------------------
// 2. an old-format writer during a run

#[test]
fn old_format_writer_behind_the_cursor_is_swept() {
    let db = Arc::new(TestDb::postgres());
    let keys = Arc::new(Keys::new());
    let n = 20_000i64;
    let mut expected = seed_fernet(&db, &keys, "items", n);

    let migrator = keys.spawn(&migrate_args(&db, "items.secret", &SLOW), &[]);

    // An application instance still on the old configuration rewrites rows
    // the scan has already passed, in Fernet, until the scan is 3/4 through.
    let log: Arc<Mutex<HashMap<i64, String>>> = Arc::default();
    let writer = {
        let (db, keys, log) = (db.clone(), keys.clone(), log.clone());
        std::thread::spawn(move || {
            let mut conn = pg(&db);
            let f = keys.fernet_key(0);
            let deadline = Instant::now() + CHILD_DEADLINE;
            let mut writes = 0u64;
            loop {
                assert!(Instant::now() < deadline, "the scan made no progress");
                let front = diesel::sql_query(
                    "SELECT COALESCE(MAX(id), 0) AS n FROM items WHERE secret LIKE 'mn1:%'",
                )
                .get_result::<N>(&mut conn)
                .unwrap()
                .n;
                if front >= n * 3 / 4 {
                    break;
                }
                let behind: Vec<N> = diesel::sql_query(
                    "SELECT id AS n FROM items WHERE secret LIKE 'mn1:%' AND id < $1 \
                     ORDER BY random() LIMIT 20",
                )
                .bind::<BigInt, _>(front)
                .load(&mut conn)
                .unwrap();
                for N { n: id } in behind {
                    let pt = format!("old-writer-{writes}");
                    diesel::sql_query("UPDATE items SET secret = $1 WHERE id = $2")
                        .bind::<Text, _>(f.encrypt(pt.as_bytes()))
                        .bind::<BigInt, _>(id)
                        .execute(&mut conn)
                        .unwrap();
                    log.lock().unwrap().insert(id, pt);
                    writes += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            writes
        })
    };
    let writes = writer.join().unwrap();
    let out = migrator.wait();
    assert!(writes > 0, "the old-format writer wrote nothing");

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = report(&out);
    let c = column_report(&r);
    assert_eq!(c["status"], "completed", "{c}");
    assert_eq!(c["by_format"]["fernet"], json!({}), "{c}");
    assert!(c["sweeps"].as_u64().unwrap() >= 1, "no sweep ran: {c}");
    let rows = db.rows("items");
    assert_eq!(
        c["by_format"],
        table_census(&keys, &rows),
        "census vs table"
    );
    assert_eq!(c["total"], n);
    expected.extend(log.lock().unwrap().drain());
    assert_all_primary(&db, &keys, "items", &expected);
}

// ---------------------------------------------------------------------------
// 3. interrupt -> rollback -> forward

#[test]
fn interrupted_run_then_rollback_then_forward_again() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    let n = 20_000;
    let expected = seed_fernet(&db, &keys, "items", n);

    let mut first = keys.spawn(&migrate_args(&db, "items.secret", &SLOW), &[]);
    wait_for_progress(&db, "items", 2_000, &mut first);
    first.signal("INT");
    let out = first.wait();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(column_report(&r)["status"], "cancelled", "{r}");
    assert!(
        aes_rows(&db, "items") < n,
        "interrupted too late to leave a checkpoint behind"
    );

    // Roll back everything to Fernet.
    let out = keys.run(&migrate_args(&db, "items.secret", &["--to", "fernet"]), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let f = keys.fernet_key(0);
    for (id, v) in db.rows("items") {
        let v = v.unwrap();
        assert_eq!(inspect(&v), Format::Fernet, "row {id}");
        assert_eq!(f.decrypt(&v).unwrap().to_str().unwrap(), expected[&id]);
    }

    // Forward again: the stale forward checkpoint must not skip rows.
    let out = keys.run(&migrate_args(&db, "items.secret", &[]), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(column_report(&r)["migrated"], n, "{r}");
    assert_all_primary(&db, &keys, "items", &expected);
}

// ---------------------------------------------------------------------------
// 4. resume with another --id-column

#[test]
fn resume_with_another_id_column_starts_over() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    let n = 20_000i64;
    db.execute(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, seq BIGINT, secret TEXT, \
         version INTEGER NOT NULL DEFAULT 1)",
    );
    let f = keys.fernet_key(0);
    let rows: Vec<(i64, String)> = (1..=n)
        .map(|i| (i, f.encrypt(plaintext(i).as_bytes())))
        .collect();
    pg_insert(&mut pg(&db), "items", &rows);
    // `seq`, a second unique key, runs the other way.
    db.execute(&format!(
        "UPDATE items SET seq = {} - id; ALTER TABLE items ALTER COLUMN seq SET NOT NULL; \
         ALTER TABLE items ADD CONSTRAINT items_seq_key UNIQUE (seq)",
        n + 1
    ));
    let expected: HashMap<i64, String> = (1..=n).map(|i| (i, plaintext(i))).collect();

    let mut first = keys.spawn(
        &migrate_args(
            &db,
            "items.secret",
            &[&SLOW[..], &["--id-column", "id"]].concat(),
        ),
        &[],
    );
    wait_for_progress(&db, "items", 2_000, &mut first);
    first.signal("INT");
    let out = first.wait();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let done_before = aes_rows(&db, "items");
    assert!(done_before < n, "interrupted too late");

    let out = keys.run(
        &migrate_args(&db, "items.secret", &["--id-column", "seq"]),
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = report(&out);
    let c = column_report(&r);
    assert!(
        c["checkpoint_ignored"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "checkpoint_ignored not set: {c}"
    );
    assert_eq!(c["resumed"], false, "{c}");
    assert_eq!(c["migrated"], n - done_before, "{c}");
    assert_all_primary(&db, &keys, "items", &expected);
}

// ---------------------------------------------------------------------------
// 5. a case-differing --column on SQLite

#[test]
fn sqlite_column_spelled_in_another_case_is_refused() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    let f = keys.fernet_key(0);
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, tok TEXT)");
    for i in 1..=20 {
        // Fernet tokens are URL-safe base64: safe to inline in a test.
        db.execute(&format!(
            "INSERT INTO items (id, tok) VALUES ({i}, '{}')",
            f.encrypt(plaintext(i).as_bytes())
        ));
    }
    let snapshot = || {
        let rows: Vec<IdValue> =
            diesel::sql_query("SELECT id, tok AS value FROM items ORDER BY id")
                .load(&mut lite(&db))
                .unwrap();
        rows.into_iter()
            .map(|r| (r.id, r.value))
            .collect::<Vec<_>>()
    };
    let before = snapshot();

    for mode in [&[][..], &["--dry-run"][..]] {
        let out = keys.run(&migrate_args(&db, "ITEMS.TOK", mode), &[]);
        assert_eq!(code(&out), 1, "{mode:?}: {}", stderr(&out));
        let err = assert_one_line_error(&out);
        assert!(err.contains("did you mean `items.tok`"), "{err}");
    }
    assert_eq!(snapshot(), before, "rows were written");
    assert_eq!(db.checkpoint_rows(), 0, "a checkpoint was written");
}

// ---------------------------------------------------------------------------
// 6. two migrator processes without Redis

#[test]
fn two_migrators_without_redis_one_refuses_naming_the_holder() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    let n = 10_000;
    let expected = seed_fernet(&db, &keys, "items", n);
    let args = migrate_args(
        &db,
        "items.secret",
        &[&SLOW[..], &["--lock-wait", "0"]].concat(),
    );
    let a = keys.spawn(&args, &[]);
    let b = keys.spawn(&args, &[]);
    let pids = [a.pid(), b.pid()];
    let outs = [a.wait(), b.wait()];
    let codes = [code(&outs[0]), code(&outs[1])];
    let mut sorted = codes;
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [0, 1],
        "exactly one must work: {codes:?}\nA: {}\nB: {}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    let (winner, loser) = if codes[0] == 0 { (0, 1) } else { (1, 0) };
    let err = assert_one_line_error(&outs[loser]);
    assert!(err.contains("another migrator is running"), "{err}");
    assert!(
        err.contains("held by host ") && err.contains(&format!("pid {}", pids[winner])),
        "the holder (pid {}) is not named: {err}",
        pids[winner]
    );
    let r = report(&outs[winner]);
    assert_eq!(column_report(&r)["migrated"], n, "{r}");
    assert_all_primary(&db, &keys, "items", &expected);
}

// ---------------------------------------------------------------------------
// 7. two databases on one Redis

#[test]
fn two_databases_on_one_redis_do_not_block_each_other() {
    let redis = redis_url();
    let (db1, db2) = (TestDb::postgres(), TestDb::postgres());
    let keys = Keys::new();
    let n = 8_000;
    let e1 = seed_fernet(&db1, &keys, "items", n);
    let e2 = seed_fernet(&db2, &keys, "items", n);
    let extra = [("REDIS_URL", redis.as_str())];
    let slow_no_wait = [&SLOW[..], &["--lock-wait", "0"]].concat();
    let a = keys.spawn(&migrate_args(&db1, "items.secret", &slow_no_wait), &extra);
    let b = keys.spawn(&migrate_args(&db2, "items.secret", &slow_no_wait), &extra);
    let (a, b) = (a.wait(), b.wait());
    assert_eq!(code(&a), 0, "first database: {}", stderr(&a));
    assert_eq!(code(&b), 0, "second database: {}", stderr(&b));
    for (out, db, expected) in [(&a, &db1, &e1), (&b, &db2, &e2)] {
        let r = report(out);
        assert_eq!(column_report(&r)["migrated"], n, "{r}");
        assert_all_primary(db, &keys, "items", expected);
    }
}

// ---------------------------------------------------------------------------
// 8. a migrator SIGSTOPped past its lease while a second takes over

/// The local TCP ports of process `pid`'s sockets (its database connections).
fn tcp_ports(pid: &str) -> Vec<i32> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(i32::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Whether one of process `pid`'s PostgreSQL sessions has a transaction
/// open (`written`: one that has run a statement after its `BEGIN`).
fn transaction_open(conn: &mut PgConnection, pid: &str, written: bool) -> bool {
    let extra = if written {
        " AND state = 'idle in transaction' AND query NOT LIKE 'BEGIN%'"
    } else {
        ""
    };
    diesel::sql_query(format!(
        "SELECT COUNT(*) AS n FROM pg_stat_activity \
         WHERE client_port = ANY($1) AND xact_start IS NOT NULL{extra}"
    ))
    .bind::<Array<Integer>, _>(tcp_ports(pid))
    .get_result::<N>(conn)
    .unwrap()
    .n > 0
}

/// Starts A (`--lock-ttl 2`, throttled) on `table`, waits for some batches,
/// and stops it with SIGSTOP inside or outside a transaction (retrying
/// until it is stopped where asked). Returns A and the AES rows when stopped.
fn stop_migrator_a(db: &TestDb, keys: &Keys, table: &str, in_transaction: bool) -> (Running, i64) {
    let column = format!("{table}.secret");
    let mut a = keys.spawn(
        &migrate_args(
            db,
            &column,
            &[
                "--batch-size",
                "100",
                "--fixed-batch-size",
                "--max-rows-per-sec",
                "2000",
                "--lock-ttl",
                "2",
            ],
        ),
        &[],
    );
    wait_for_progress(db, table, 1_000, &mut a);
    let mut conn = pg(db);
    let mut attempts = 0;
    loop {
        a.signal("STOP");
        // Let a statement A already sent finish on the server.
        std::thread::sleep(Duration::from_millis(50));
        if transaction_open(&mut conn, &a.pid(), in_transaction) == in_transaction {
            break;
        }
        attempts += 1;
        assert!(
            attempts < 400,
            "A could not be stopped {} a transaction",
            if in_transaction { "inside" } else { "outside" }
        );
        a.signal("CONT");
        std::thread::sleep(Duration::from_millis(if in_transaction { 7 } else { 30 }));
    }
    let stopped_at = aes_rows(db, table);
    assert!(stopped_at < 20_000, "A finished before it was stopped");
    (a, stopped_at)
}

#[test]
fn migrator_paused_past_its_lease_is_fenced_off() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    let n = 20_000;
    // A table name no other test uses.
    let table = "lease_items";
    let expected = seed_fernet(&db, &keys, table, n);
    let column = format!("{table}.secret");
    // Stopped between transactions (see the next test for inside one).
    let (a, stopped_at) = stop_migrator_a(&db, &keys, table, false);
    // Past A's 2 s lease.
    std::thread::sleep(Duration::from_millis(3_000));

    let b = keys.run(&migrate_args(&db, &column, &["--lock-wait", "10"]), &[]);
    assert_eq!(code(&b), 0, "B: {}", stderr(&b));
    let rb = report(&b);
    assert_eq!(column_report(&rb)["status"], "completed", "{rb}");
    assert_all_primary(&db, &keys, table, &expected);
    let after_b = db.rows(table);

    a.signal("CONT");
    let out_a = a.wait();
    assert_eq!(code(&out_a), 3, "A: {}", stderr(&out_a));
    let ra = report(&out_a);
    assert_eq!(column_report(&ra)["status"], "lease-lost", "{ra}");

    // A wrote nothing after B took over; every row was migrated once.
    assert_eq!(db.rows(table), after_b, "A wrote after losing its lease");
    assert_all_primary(&db, &keys, table, &expected);
    // A's report counts only what it committed before the stop.
    assert_eq!(column_report(&ra)["migrated"], stopped_at, "{ra}");
    // B's counts (resumed from A's checkpoint) cover every row once.
    let cb = column_report(&rb);
    assert_eq!(
        cb["migrated"].as_i64().unwrap() + cb["unchanged"].as_i64().unwrap(),
        n,
        "{rb}"
    );
}

/// A stopped *inside* its batch transaction (it holds the fence row
/// `FOR SHARE`): B, which took the expired lease, must still finish (or
/// give up with an error) in bounded time; it must not wait for A forever.
#[test]
fn migrator_paused_inside_its_write_transaction_does_not_block_the_next_forever() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    let n = 20_000;
    let table = "stuck_items";
    let expected = seed_fernet(&db, &keys, table, n);
    let column = format!("{table}.secret");
    let (a, _) = stop_migrator_a(&db, &keys, table, true);
    std::thread::sleep(Duration::from_millis(3_000));

    let mut b = keys.spawn(&migrate_args(&db, &column, &["--lock-wait", "10"]), &[]);
    // B needs ~10 s of lock wait at most and a few seconds of work.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if b.is_running() {
        #[derive(QueryableByName)]
        struct Session {
            #[diesel(sql_type = Text)]
            s: String,
        }
        let sessions: Vec<Session> = diesel::sql_query(
            "SELECT concat_ws(' | ', state, wait_event_type, wait_event, left(query, 90)) AS s \
             FROM pg_stat_activity WHERE client_port = ANY($1)",
        )
        .bind::<Array<Integer>, _>([tcp_ports(&a.pid()), tcp_ports(&b.pid())].concat())
        .load(&mut pg(&db))
        .unwrap();
        panic!(
            "B is still running 30 s after A (stopped inside its write transaction) lost its \
             lease; sessions of A and B: {:#?}",
            sessions.into_iter().map(|s| s.s).collect::<Vec<_>>()
        );
    }
    let b = b.wait();
    assert!(matches!(code(&b), 0 | 1), "B: {}", stderr(&b));
    a.signal("CONT");
    let out_a = a.wait();
    assert_eq!(code(&out_a), 3, "A: {}", stderr(&out_a));
    if code(&b) == 0 {
        assert_all_primary(&db, &keys, table, &expected);
    }
}

// ---------------------------------------------------------------------------
// 9. shard starters racing while rows are inserted

#[test]
fn racing_shard_starters_with_concurrent_inserts_leave_no_row_behind() {
    let db = Arc::new(TestDb::postgres());
    let keys = Arc::new(Keys::new());
    let f = keys.fernet_key(0);
    // Even ids 2..=12000; the inserter fills odd ids across the range and
    // ids past the end.
    db.execute(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, secret TEXT, \
         version INTEGER NOT NULL DEFAULT 1)",
    );
    let seeded: Vec<(i64, String)> = (1..=6_000i64)
        .map(|i| (2 * i, f.encrypt(plaintext(2 * i).as_bytes())))
        .collect();
    pg_insert(&mut pg(&db), "items", &seeded);
    let mut expected: HashMap<i64, String> =
        seeded.iter().map(|(id, _)| (*id, plaintext(*id))).collect();

    // Odd ids spread over the range (a fixed stride permutation) and a tail.
    let mut to_insert: Vec<i64> = (0..6_000i64).map(|k| (k * 2_477) % 6_000 * 2 + 1).collect();
    to_insert.extend(12_001..=12_400);
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (db, keys, stop) = (db.clone(), keys.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut conn = pg(&db);
            let f = keys.fernet_key(0);
            let mut done = Vec::new();
            for chunk in to_insert.chunks(5) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let rows: Vec<(i64, String)> = chunk
                    .iter()
                    .map(|&id| (id, f.encrypt(plaintext(id).as_bytes())))
                    .collect();
                pg_insert(&mut conn, "items", &rows);
                done.extend_from_slice(chunk);
                std::thread::sleep(Duration::from_millis(5));
            }
            done
        })
    };

    let shard_args = |i: usize, slow: bool| {
        let shard = format!("{i}/3");
        let mut args: Vec<String> = ["--shard", &shard].map(String::from).to_vec();
        if slow {
            args.extend(
                [
                    "--batch-size",
                    "100",
                    "--fixed-batch-size",
                    "--max-rows-per-sec",
                    "1000",
                ]
                .map(String::from),
            );
        }
        args
    };
    let starters: Vec<Running> = (0..3)
        .map(|i| {
            let args = shard_args(i, true);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            keys.spawn(&migrate_args(&db, "items.secret", &args), &[])
        })
        .collect();
    let outs: Vec<Output> = starters.into_iter().map(Running::wait).collect();
    stop.store(true, Ordering::Relaxed);
    let inserted = inserter.join().unwrap();
    assert!(!inserted.is_empty(), "nothing was inserted during the run");
    for (i, out) in outs.iter().enumerate() {
        // Rows inserted after a shard's census may leave it incomplete (3).
        assert!(
            matches!(code(out), 0 | 3),
            "shard {i}/3 exited {}: {}",
            code(out),
            stderr(out)
        );
    }
    expected.extend(inserted.iter().map(|&id| (id, plaintext(id))));

    // One more pass of each shard, now that nobody inserts.
    for i in 0..3 {
        let args = shard_args(i, false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = keys.run(&migrate_args(&db, "items.secret", &args), &[]);
        assert_eq!(
            code(&out),
            0,
            "second pass of shard {i}/3: {}",
            stderr(&out)
        );
    }
    let out = keys.run(&migrate_args(&db, "items.secret", &["--verify-only"]), &[]);
    assert_eq!(
        code(&out),
        0,
        "verify-only: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let r = report(&out);
    assert_eq!(column_report(&r)["total"], expected.len(), "{r}");
    assert_all_primary(&db, &keys, "items", &expected);
}

// ---------------------------------------------------------------------------
// 10. SQLite BLOB and non-UTF-8 values

#[test]
fn sqlite_blob_token_migrated_and_non_utf8_blob_listed_as_not_text() {
    let db = TestDb::sqlite();
    let keys = Keys::new();
    let expected = seed_fernet(&db, &keys, "items", 20);
    // Row 5: a Fernet token stored as a BLOB; row 7: bytes that are not UTF-8.
    db.execute("UPDATE items SET secret = CAST(secret AS BLOB) WHERE id = 5");
    db.execute("UPDATE items SET secret = X'FFFE00C328' WHERE id = 7");
    let types = || {
        #[derive(QueryableByName)]
        struct T {
            #[diesel(sql_type = Text)]
            t: String,
            #[diesel(sql_type = Text)]
            h: String,
        }
        let rows: Vec<T> = diesel::sql_query(
            "SELECT typeof(secret) AS t, hex(secret) AS h FROM items WHERE id IN (5, 7) ORDER BY id",
        )
        .load(&mut lite(&db))
        .unwrap();
        rows.into_iter().map(|r| (r.t, r.h)).collect::<Vec<_>>()
    };
    let before = types();
    assert_eq!(before[0].0, "blob");
    assert_eq!(before[1], ("blob".to_owned(), "FFFE00C328".to_owned()));

    let out = keys.run(&migrate_args(&db, "items.secret", &[]), &[]);
    assert_eq!(code(&out), 4, "{}{}", stdout(&out), stderr(&out));
    let r = report(&out);
    let c = column_report(&r);
    assert_eq!(c["failed"], json!([7]), "{c}");
    assert_eq!(c["failure_kinds"]["not_text"], 1, "{c}");
    assert_eq!(c["total"], 20, "{c}");
    assert_eq!(c["migrated"], 19, "{c}");
    assert_eq!(c["by_format"]["aes256gcm"][keys.primary_id()], 19, "{c}");
    assert_eq!(c["by_format"]["unknown"], 1, "{c}");

    // Every row but 7 decrypts to its plaintext (5 included); 7 is untouched.
    let keyring = keys.keyring();
    let rows: Vec<IdValue> = diesel::sql_query(
        "SELECT id, CAST(secret AS TEXT) AS value FROM items WHERE id <> 7 ORDER BY id",
    )
    .load(&mut lite(&db))
    .unwrap();
    assert_eq!(rows.len(), 19);
    for row in rows {
        let v = row.value.unwrap();
        assert_eq!(
            inspect(&v),
            Format::Aes256Gcm {
                key_id: AesKey::from_base64(&keys.aes).unwrap().id()
            },
            "row {}",
            row.id
        );
        let pt = keyring.decrypt(&v, b"items.secret").unwrap();
        assert_eq!(pt.to_str().unwrap(), expected[&row.id], "row {}", row.id);
    }
    assert_eq!(types()[1], before[1], "row 7 changed");

    // Acknowledged: exit 0, still reported.
    let dir = tempfile::tempdir().unwrap();
    let accept = dir.path().join("accepted");
    std::fs::write(&accept, "# looked at it: junk bytes\n7\n").unwrap();
    let accept = accept.to_str().unwrap();
    let out = keys.run(
        &migrate_args(&db, "items.secret", &["--accept-failed-ids", accept]),
        &[],
    );
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let r = report(&out);
    let c = column_report(&r);
    assert_eq!(c["failed"], json!([7]), "{c}");
    assert_eq!(c["failed_accepted"], 1, "{c}");
    assert_eq!(types()[1], before[1], "row 7 changed");
}

// ---------------------------------------------------------------------------
// Found while writing these tests: on PostgreSQL the process sometimes dies
// by SIGSEGV at exit (OpenSSL's atexit cleanup runs while r2d2 threads are
// still opening pool connections). A verdict must come from the exit status.

#[test]
fn postgres_commands_never_die_by_a_signal() {
    let db = TestDb::postgres();
    let keys = Keys::new();
    seed_fernet(&db, &keys, "items", 10);
    let mut signalled = Vec::new();
    for _ in 0..60 {
        let o = keys.run(
            &[
                "keys",
                "retire-check",
                "fernet",
                "--database-url",
                db.url(),
                "--column",
                "items.secret",
            ],
            &[],
        );
        if code(&o) >= 128 {
            signalled.push(code(&o));
        } else {
            assert_eq!(code(&o), 3, "{}", stderr(&o));
        }
    }
    assert!(
        signalled.is_empty(),
        "{} of 60 runs of `keys retire-check` died by a signal (128 + n): {signalled:?}",
        signalled.len()
    );
}
