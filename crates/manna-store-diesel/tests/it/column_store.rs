//! The migrator's ColumnStore port on both backends.

use manna_migrate::{
    Checkpoint, CheckpointKey, ColumnRef, ColumnStore, Counts, IdKind, IdRange, Rewrite, RowId,
    StoreErrorKind, WriteOptions,
};
use manna_store_diesel::DieselStore;

use crate::support::TestDb;

fn store(db: &TestDb) -> DieselStore {
    DieselStore::new(db.pool().clone())
}

fn int_table(db: &TestDb, n: i64) -> ColumnRef {
    db.exec(&format!(
        "CREATE TABLE items (id {}, token TEXT CHECK (length(token) < 200), \
         version INTEGER NOT NULL DEFAULT 1)",
        db.serial()
    ));
    let values: Vec<String> = (1..=n).map(|i| format!("('old-{i}')")).collect();
    if n > 0 {
        db.exec(&format!(
            "INSERT INTO items (token) VALUES {}",
            values.join(", ")
        ));
    }
    ColumnRef::parse("items.token", "id").unwrap()
}

fn scan_all(
    s: &DieselStore,
    col: &ColumnRef,
    range: &IdRange,
    page: usize,
) -> Vec<manna_migrate::Row> {
    let mut out = Vec::new();
    let mut r = range.clone();
    loop {
        let rows = s.scan(col, &r, page).unwrap();
        if rows.is_empty() {
            return out;
        }
        assert!(rows.len() <= page);
        r = r.resumed_after(rows.last().map(|x| x.id.clone()));
        out.extend(rows);
    }
}

fn key(partition: &str) -> CheckpointKey {
    CheckpointKey {
        column: "items.token".into(),
        partition: partition.into(),
        run: "aes256gcm".into(),
    }
}

both_backends! {
    fn check_column_describes_or_refuses(db: &TestDb) {
        let col = int_table(db, 0);
        db.exec("CREATE TABLE nums (id BIGINT PRIMARY KEY, n BIGINT)");
        let s = store(db);
        let info = s.check_column(&col).unwrap();
        assert_eq!(info.id_kind, IdKind::Int);
        assert!(info.has_version);
        let kind = |c: &str, id: &str| s.check_column(&ColumnRef::parse(c, id).unwrap()).unwrap_err().kind();
        assert_eq!(kind("nope.token", "id"), StoreErrorKind::NotFound);
        assert_eq!(kind("items.nope", "id"), StoreErrorKind::NotFound);
        assert_eq!(kind("items.token", "nope"), StoreErrorKind::NotFound);
        assert_eq!(kind("nums.n", "id"), StoreErrorKind::Unsupported);
        let no_version = s.check_column(&ColumnRef::parse("nums.id", "id").unwrap());
        assert!(no_version.is_err(), "id is not text");
    }
}

both_backends! {
    fn keyset_scan_count_read_and_split_on_integer_keys(db: &TestDb) {
        let col = int_table(db, 103);
        let s = store(db);
        let all = scan_all(&s, &col, &IdRange::all(), 7);
        assert_eq!(all.len(), 103);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ascending keys");
        assert_eq!(all[0].value.text(), Some("old-1"));
        assert_eq!(s.count(&col, &IdRange::all()).unwrap(), 103);
        let mid = IdRange { after: Some(RowId::Int(10)), until: Some(RowId::Int(20)) };
        assert_eq!(s.count(&col, &mid).unwrap(), 10);
        assert_eq!(scan_all(&s, &col, &mid, 3).len(), 10);
        let got = s.read(&col, &[RowId::Int(5), RowId::Int(1), RowId::Int(999)]).unwrap();
        assert_eq!(got.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![RowId::Int(1), RowId::Int(5)]);
        for parts in [1, 2, 4, 7, 200] {
            let ranges = s.split(&col, parts).unwrap();
            assert!(!ranges.is_empty() && ranges.len() <= parts as usize);
            let total: u64 = ranges.iter().map(|r| s.count(&col, r).unwrap()).sum();
            assert_eq!(total, 103, "{parts} parts cover every row once");
            for row in &all {
                assert_eq!(ranges.iter().filter(|r| r.contains(&row.id)).count(), 1);
            }
            // Future rows (beyond MAX) fall in the last range.
            assert!(ranges.last().unwrap().contains(&RowId::Int(i64::MAX)));
        }
    }
}

both_backends! {
    fn text_keys_scan_in_byte_order(db: &TestDb) {
        db.exec("CREATE TABLE users (handle TEXT PRIMARY KEY, secret TEXT)");
        let handles = ["alice", "Bob", "bob", "Zed", "_x", "émile", "a", "B1", "zz", "0"];
        for h in handles {
            db.exec(&format!("INSERT INTO users VALUES ('{h}', 'v')"));
        }
        let col = ColumnRef::parse("users.secret", "handle").unwrap();
        let s = store(db);
        assert_eq!(s.check_column(&col).unwrap().id_kind, IdKind::Text);
        let got: Vec<RowId> = scan_all(&s, &col, &IdRange::all(), 3).into_iter().map(|r| r.id).collect();
        let mut want: Vec<RowId> = handles.iter().map(|h| RowId::from(*h)).collect();
        want.sort();
        assert_eq!(got, want, "bytewise order, whatever the database collation");
        let ranges = s.split(&col, 3).unwrap();
        assert_eq!(ranges.len(), 3);
        let total: u64 = ranges.iter().map(|r| s.count(&col, r).unwrap()).sum();
        assert_eq!(total, handles.len() as u64);
        for id in &want {
            assert_eq!(ranges.iter().filter(|r| r.contains(id)).count(), 1, "{id}");
        }
        let rows = s.read(&col, &[RowId::from("bob"), RowId::from("nobody")]).unwrap();
        assert_eq!(rows.len(), 1);
    }
}

both_backends! {
    fn uuid_keys(db: &TestDb) {
        db.exec("CREATE TABLE devices (id UUID PRIMARY KEY, token TEXT)");
        let mut ids: Vec<String> = (0..25).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        for id in &ids {
            db.exec(&format!("INSERT INTO devices VALUES ('{id}', 'old')"));
        }
        ids.sort();
        let col = ColumnRef::parse("devices.token", "id").unwrap();
        let s = store(db);
        assert_eq!(s.check_column(&col).unwrap().id_kind, IdKind::Uuid);
        let got: Vec<String> = scan_all(&s, &col, &IdRange::all(), 4)
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(got, ids);
        let ranges = s.split(&col, 4).unwrap();
        let total: u64 = ranges.iter().map(|r| s.count(&col, r).unwrap()).sum();
        assert_eq!(total, 25);
        let rw: Vec<Rewrite> = ids[..3]
            .iter()
            .map(|id| Rewrite { id: RowId::Text(id.clone()), old: "old".into(), new: "new".into() })
            .collect();
        let written = s.write_batch(&col, &rw, WriteOptions::default(), None, None).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(s.read(&col, &written).unwrap().iter().filter(|r| r.value.text() == Some("new")).count(), 3);
    }
}

/// SQLite keeps a UUID key as the text it was given: rows stored in upper
/// case are scanned in byte order as stored and written back by that exact
/// spelling (the store binds an id as it returned it).
#[test]
fn sqlite_uuid_keys_stored_in_upper_case() {
    let db = TestDb::sqlite();
    db.exec("CREATE TABLE devices (id UUID PRIMARY KEY, token TEXT)");
    let mut ids: Vec<String> = (0..20)
        .map(|i| {
            let id = uuid::Uuid::new_v4().to_string();
            if i % 2 == 0 {
                id.to_ascii_uppercase()
            } else {
                id
            }
        })
        .collect();
    for id in &ids {
        db.exec(&format!("INSERT INTO devices VALUES ('{id}', 'old')"));
    }
    ids.sort();
    let col = ColumnRef::parse("devices.token", "id").unwrap();
    let s = store(&db);
    let rows = scan_all(&s, &col, &IdRange::all(), 3);
    let got: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(got, ids, "every row scanned, none skipped by the cursor");
    let rw: Vec<Rewrite> = rows
        .iter()
        .map(|r| Rewrite {
            id: r.id.clone(),
            old: "old".into(),
            new: "new".into(),
        })
        .collect();
    let written = s
        .write_batch(&col, &rw, WriteOptions::default(), None, None)
        .unwrap();
    assert_eq!(
        written.len(),
        ids.len(),
        "every row written, none a false conflict"
    );
}

both_backends! {
    fn batch_cas_reports_exactly_the_rows_changed_underneath(db: &TestDb) {
        let col = int_table(db, 50);
        let s = store(db);
        let rows = s.scan(&col, &IdRange::all(), 50).unwrap();
        // Concurrent application writes to 3 rows, and deletes one.
        db.exec("UPDATE items SET token = 'app-wrote' WHERE id IN (3, 17, 42); DELETE FROM items WHERE id = 9");
        let rewrites: Vec<Rewrite> = rows
            .iter()
            .map(|r| Rewrite { id: r.id.clone(), old: r.value.text().unwrap().to_owned(), new: format!("new-{}", r.id) })
            .collect();
        let cp = Checkpoint {
            key: key("shard 0/1 worker 0/1"),
            last_id: Some(RowId::Int(50)),
            counts: Counts { scanned: 50, migrated: 46, unchanged: 0, conflicts: 4, failed: 0 },
        };
        let written = s.write_batch(&col, &rewrites, WriteOptions::bump_version(true), Some(&cp), None).unwrap();
        let expected: Vec<RowId> = (1..=50).filter(|i| ![3, 9, 17, 42].contains(i)).map(RowId::Int).collect();
        assert_eq!(written, expected);
        // The concurrent writes survived; everything else was rewritten once.
        assert_eq!(db.scalar_i64("SELECT COUNT(*) AS v FROM items WHERE token = 'app-wrote'"), 3);
        assert_eq!(db.scalar_i64("SELECT COUNT(*) AS v FROM items WHERE token LIKE 'new-%'"), 46);
        assert_eq!(db.scalar_i64("SELECT COUNT(*) AS v FROM items WHERE version = 2"), 46);
        assert_eq!(s.load_checkpoint(&cp.key).unwrap(), Some(cp.clone()));
        // Replaying the same batch writes nothing: every old value is gone.
        assert!(s.write_batch(&col, &rewrites, WriteOptions::default(), None, None).unwrap().is_empty());
    }
}

both_backends! {
    fn checkpoint_commits_with_its_batch_or_not_at_all(db: &TestDb) {
        let col = int_table(db, 5);
        let s = store(db);
        let k = key("p");
        assert_eq!(s.load_checkpoint(&k).unwrap(), None);
        let first = Checkpoint { key: k.clone(), last_id: Some(RowId::Int(2)), counts: Counts { scanned: 2, ..Counts::default() } };
        let ok = [Rewrite { id: RowId::Int(1), old: "old-1".into(), new: "n1".into() }];
        assert_eq!(s.write_batch(&col, &ok, WriteOptions::default(), Some(&first), None).unwrap(), vec![RowId::Int(1)]);
        // A batch that violates the table's CHECK constraint fails as a whole:
        // neither its rows nor its checkpoint are written.
        let second = Checkpoint { key: k.clone(), last_id: Some(RowId::Int(5)), counts: Counts { scanned: 5, ..Counts::default() } };
        let bad = [
            Rewrite { id: RowId::Int(3), old: "old-3".into(), new: "n3".into() },
            Rewrite { id: RowId::Int(4), old: "old-4".into(), new: "x".repeat(300) },
        ];
        let err = s.write_batch(&col, &bad, WriteOptions::default(), Some(&second), None).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Constraint, "{err}");
        assert_eq!(s.load_checkpoint(&k).unwrap(), Some(first.clone()));
        assert_eq!(db.scalar_text("SELECT token AS v FROM items WHERE id = 3").as_deref(), Some("old-3"));
        // A checkpoint alone (an empty batch) is saved; partitions are separate.
        let other = Checkpoint { key: key("q"), last_id: None, counts: Counts::default() };
        assert!(s.write_batch(&col, &[], WriteOptions::default(), Some(&other), None).unwrap().is_empty());
        assert_eq!(s.load_checkpoint(&other.key).unwrap(), Some(other.clone()));
        s.clear_checkpoint(&k).unwrap();
        assert_eq!(s.load_checkpoint(&k).unwrap(), None);
        assert_eq!(s.load_checkpoint(&other.key).unwrap(), Some(other));
        // Text ids round-trip through the checkpoint too.
        let t = Checkpoint { key: key("t"), last_id: Some(RowId::from("42")), counts: Counts::default() };
        s.write_batch(&col, &[], WriteOptions::default(), Some(&t), None).unwrap();
        assert_eq!(s.load_checkpoint(&t.key).unwrap(), Some(t));
    }
}

both_backends! {
    fn bump_version_needs_the_column(db: &TestDb) {
        db.exec("CREATE TABLE plain (id BIGINT PRIMARY KEY, token TEXT); INSERT INTO plain VALUES (1, 'a')");
        let col = ColumnRef::parse("plain.token", "id").unwrap();
        let s = store(db);
        assert!(!s.check_column(&col).unwrap().has_version);
        let rw = [Rewrite { id: RowId::Int(1), old: "a".into(), new: "b".into() }];
        let err = s.write_batch(&col, &rw, WriteOptions::bump_version(true), None, None).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Unsupported);
        assert!(err.to_string().contains("version"), "{err}");
        assert_eq!(s.write_batch(&col, &rw, WriteOptions::default(), None, None).unwrap(), vec![RowId::Int(1)]);
        let wrong = [Rewrite { id: RowId::from("1"), old: "b".into(), new: "c".into() }];
        assert_eq!(s.write_batch(&col, &wrong, WriteOptions::default(), None, None).unwrap_err().kind(), StoreErrorKind::Unsupported);
    }
}

/// A PostgreSQL text key under a linguistic collation ("a" < "B" < "b") is
/// still scanned and split in byte order ("B" < "a" < "b").
#[test]
fn postgres_text_key_with_linguistic_collation_scans_bytewise() {
    let db = TestDb::postgres();
    db.exec(
        "CREATE TABLE handles (handle TEXT COLLATE \"und-x-icu\" PRIMARY KEY, secret TEXT); \
         INSERT INTO handles VALUES ('a', 'v'), ('B', 'v'), ('b', 'v'), ('Zed', 'v'), ('_x', 'v')",
    );
    let col = ColumnRef::parse("handles.secret", "handle").unwrap();
    let s = store(&db);
    let got: Vec<RowId> = scan_all(&s, &col, &IdRange::all(), 2)
        .into_iter()
        .map(|r| r.id)
        .collect();
    let want: Vec<RowId> = ["B", "Zed", "_x", "a", "b"]
        .iter()
        .map(|h| RowId::from(*h))
        .collect();
    assert_eq!(got, want);
    let after_b = IdRange {
        after: Some(RowId::from("B")),
        until: Some(RowId::from("a")),
    };
    assert_eq!(s.count(&col, &after_b).unwrap(), 3, "Zed, _x, a");
}

/// A scratch PostgreSQL database, dropped at the end of the test.
struct ScratchDatabase {
    name: String,
}

impl ScratchDatabase {
    fn create(options: &str) -> ScratchDatabase {
        let name = format!("manna_t_{}", uuid::Uuid::new_v4().simple());
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        diesel::PgConnection::establish(manna_store_diesel::testing::pg_test_url())
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE \"{name}\" {options}"))
            .unwrap();
        ScratchDatabase { name }
    }

    /// The URL of the database, on the test server.
    fn url(&self) -> String {
        let base = manna_store_diesel::testing::pg_test_url();
        let (head, query) = base.split_once('?').map_or((base, ""), |(h, q)| (h, q));
        let (server, _db) = head.rsplit_once('/').unwrap();
        let sep = if query.is_empty() { "" } else { "?" };
        format!("{server}/{}{sep}{query}", self.name)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        if let Ok(mut admin) =
            diesel::PgConnection::establish(manna_store_diesel::testing::pg_test_url())
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A database whose default collation is ICU reports `datcollate = 'C'`
/// (PostgreSQL 15+) yet sorts text `a < A < b`. Before: the store took the
/// key for bytewise, skipped `COLLATE "C"` and scanned in ICU order, so
/// keyset pages, split bounds and `IdRange::contains` disagreed.
#[test]
fn postgres_icu_default_collation_with_c_lc_collate_scans_bytewise() {
    use std::sync::Arc;

    use manna_crypto::{AesKey, FernetKey, Keyring};
    use manna_migrate::{Migrator, Options};

    let scratch = ScratchDatabase::create(
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let pool = manna_store_diesel::DbPool::connect(
        &scratch.url(),
        &manna_store_diesel::PoolOptions::default().max_size(4),
    )
    .unwrap();
    let keys = [
        "a",
        "A",
        "b",
        "B",
        "Zed",
        "zed",
        "_x",
        "10",
        "9",
        "e",
        "E",
        "\u{e9}",
        "\u{c9}t\u{e9}",
        "a1",
        "A2",
        "~",
    ];
    let fernet = FernetKey::from_base64(crate::support::SPEC_FERNET_KEY).unwrap();
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(fernet)
        .build()
        .unwrap();
    let values: Vec<String> = keys
        .iter()
        .map(|k| {
            let tok = keyring.encrypt_fernet(k.as_bytes()).unwrap();
            format!("('{k}', '{tok}')")
        })
        .collect();
    {
        use diesel::connection::SimpleConnection;
        pool.get()
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE handles (handle TEXT PRIMARY KEY, secret TEXT); \
                 INSERT INTO handles VALUES {}",
                values.join(", ")
            ))
            .unwrap();
    }
    let col = ColumnRef::parse("handles.secret", "handle").unwrap();
    let s = DieselStore::new(pool.clone());
    let mut want: Vec<RowId> = keys.iter().map(|k| RowId::from(*k)).collect();
    want.sort();
    for page in [1, 3, 100] {
        let got: Vec<RowId> = scan_all(&s, &col, &IdRange::all(), page)
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, want, "page {page}: every row once, in RowId order");
    }
    for parts in [2, 3, 5] {
        let ranges = s.split(&col, parts).unwrap();
        let mut seen = Vec::new();
        for r in &ranges {
            for row in scan_all(&s, &col, r, 2) {
                assert!(
                    r.contains(&row.id),
                    "{parts} parts: {} outside {r:?}",
                    row.id
                );
                seen.push(row.id);
            }
        }
        seen.sort();
        assert_eq!(seen, want, "{parts} parts: every row in exactly one range");
    }

    let mut options = Options::default().with_batch_size(3);
    options.workers = 2;
    options.adaptive = false;
    let locks =
        manna_migrate::BlockingLocks::with_own_runtime(manna_lock::LockManager::in_memory())
            .unwrap();
    let report = Migrator::new(Arc::new(DieselStore::new(pool.clone())), keyring.clone())
        .options(options)
        .locks(Arc::new(locks))
        .run_column(&col)
        .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.migrated, keys.len() as u64, "{report:?}");
    for r in scan_all(&s, &col, &IdRange::all(), 100) {
        let v = r.value.text().unwrap();
        assert!(!keyring.needs_reencryption(v), "row {} not migrated", r.id);
    }
    drop(s);
    drop(pool);
}

/// What Python's sqlite3 stores for `bytes`: BLOBs in a TEXT column, one of
/// them not UTF-8. Before: the BLOB never matched `c = ?` (never migrated,
/// never reported) and the bad one aborted the whole scan.
#[test]
fn sqlite_blob_values_are_read_and_migrated_and_non_utf8_is_not_text() {
    use manna_migrate::Value;
    let db = TestDb::sqlite();
    let env = "mn1:00112233aabbccdd:payload";
    let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
    db.exec(&format!(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, token TEXT);
         INSERT INTO items VALUES (1, 'text-1'), (2, X'{}'), (3, X'ff00fe'), (4, X'{}'), (5, NULL)",
        hex(b"gAAAAAblob-fernet"),
        hex(env.as_bytes())
    ));
    let col = ColumnRef::parse("items.token", "id").unwrap();
    let s = store(&db);
    let rows = scan_all(&s, &col, &IdRange::all(), 2);
    let values: Vec<Value> = rows.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        values,
        vec![
            Value::from("text-1"),
            Value::from("gAAAAAblob-fernet"),
            Value::NotText,
            Value::from(env),
            Value::Null
        ]
    );
    let read = s.read(&col, &[RowId::Int(3), RowId::Int(2)]).unwrap();
    assert_eq!(read[0].value, Value::from("gAAAAAblob-fernet"));
    assert_eq!(read[1].value, Value::NotText);
    let census = s.census(&col, &IdRange::all()).unwrap();
    assert_eq!((census.total, census.nulls, census.others()), (5, 1, 3));
    assert_eq!(census.envelopes.get("00112233aabbccdd"), Some(&1));
    let pending = s
        .scan_unprefixed(&col, &IdRange::all(), 10, "mn1:")
        .unwrap();
    assert_eq!(
        pending.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [1, 2, 3].map(RowId::Int).to_vec()
    );
    // The BLOB-stored text matches its text: migrated, now stored as TEXT.
    let rw = [Rewrite {
        id: RowId::Int(2),
        old: "gAAAAAblob-fernet".into(),
        new: "mn1:new".into(),
    }];
    assert_eq!(
        s.write_batch(&col, &rw, WriteOptions::default(), None, None)
            .unwrap(),
        vec![RowId::Int(2)]
    );
    assert_eq!(
        db.scalar_text("SELECT typeof(token) || ':' || token AS v FROM items WHERE id = 2")
            .as_deref(),
        Some("text:mn1:new")
    );
    assert_eq!(
        db.scalar_i64("SELECT CAST(token = X'ff00fe' AS BIGINT) AS v FROM items WHERE id = 3"),
        1,
        "the non-text value is left alone"
    );
}

both_backends! {
    fn case_differing_names_are_refused_with_the_catalog_spelling(db: &TestDb) {
        db.exec("CREATE TABLE items (id BIGINT PRIMARY KEY, tok TEXT); \
                 CREATE TABLE \"Plaid\" (\"Id\" BIGINT PRIMARY KEY, \"Tok\" TEXT)");
        let s = store(db);
        let refused = |c: &str, id: &str| {
            let e = s.check_column(&ColumnRef::parse(c, id).unwrap()).unwrap_err();
            assert_eq!(e.kind(), StoreErrorKind::NotFound, "{c} ({id}): {e}");
            e.to_string()
        };
        for (c, id, hint) in [
            ("ITEMS.tok", "id", "`items.tok`"),
            ("items.Tok", "id", "`items.tok`"),
            ("Items.TOK", "id", "`items.tok`"),
            ("items.tok", "ID", "`items.id`"),
            ("plaid.Tok", "Id", "`Plaid.Tok`"),
            ("plaid.tok", "Id", "`Plaid.Tok`"),
            ("Plaid.tok", "Id", "`Plaid.Tok`"),
            ("Plaid.Tok", "id", "`Plaid.Id`"),
        ] {
            let msg = refused(c, id);
            assert!(msg.contains(&format!("did you mean {hint}?")), "{c} ({id}): {msg}");
        }
        assert!(refused("nope.tok", "id").ends_with("does not exist"));
        s.check_column(&ColumnRef::parse("items.tok", "id").unwrap()).unwrap();
        s.check_column(&ColumnRef::parse("Plaid.Tok", "Id").unwrap()).unwrap();
        // Every operation checks the spelling, not only check_column.
        let wrong = ColumnRef::parse("ITEMS.tok", "id").unwrap();
        assert_eq!(s.scan(&wrong, &IdRange::all(), 1).unwrap_err().kind(), StoreErrorKind::NotFound);
    }
}

both_backends! {
    fn fenced_batches_refuse_a_stale_holder_and_let_one_holder_write_concurrently(db: &TestDb) {
        use manna_migrate::Fence;
        let col = int_table(db, 40);
        let s = store(db);
        let fence = |t: u64| Fence { name: "manna-migrate:items.token".into(), fencing: manna_lock::Fencing::new(manna_lock::FencingToken::from(t), format!("holder-{t}")) };
        let rw = |i: i64| Rewrite { id: RowId::Int(i), old: format!("old-{i}"), new: format!("new-{i}") };
        // One holder (token 3), four workers writing batches at once.
        std::thread::scope(|scope| {
            for w in 0..4i64 {
                let (s, fence, col) = (&s, &fence, &col);
                scope.spawn(move || {
                    for b in 0..5i64 {
                        let ids: Vec<Rewrite> = (0..2).map(|k| rw(1 + w * 10 + b * 2 + k)).collect();
                        loop {
                            match s.write_batch(col, &ids, WriteOptions::default(), None, Some(&fence(3))) {
                                Ok(written) => { assert_eq!(written.len(), 2); break }
                                Err(e) if e.kind() == StoreErrorKind::Conflict => continue, // SQLite busy
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(db.scalar_i64("SELECT COUNT(*) AS v FROM items WHERE token LIKE 'new-%'"), 40);
        // A newer holder takes over; the old one wakes up: refused, nothing written.
        db.exec("UPDATE items SET token = 'old-1' WHERE id = 1");
        let cp = Checkpoint { key: key("shard 0/1"), last_id: Some(RowId::Int(1)), counts: Counts::default() };
        s.write_batch(&col, &[], WriteOptions::default(), Some(&cp), Some(&fence(4))).unwrap();
        let stale = Checkpoint { last_id: Some(RowId::Int(99)), ..cp.clone() };
        let err = s.write_batch(&col, &[rw(1)], WriteOptions::default(), Some(&stale), Some(&fence(3))).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
        assert!(err.to_string().contains("token 3"), "{err}");
        assert_eq!(db.scalar_text("SELECT token AS v FROM items WHERE id = 1").as_deref(), Some("old-1"));
        assert_eq!(s.load_checkpoint(&cp.key).unwrap(), Some(cp.clone()), "checkpoint not written");
        assert_eq!(
            db.scalar_i64("SELECT token AS v FROM manna_migration_fences WHERE resource = 'manna-migrate:items.token'"),
            4
        );
        // The newer holder goes on.
        assert_eq!(s.write_batch(&col, &[rw(1)], WriteOptions::default(), None, Some(&fence(4))).unwrap(), vec![RowId::Int(1)]);
        // Tokens beyond BIGINT are refused, not wrapped.
        let huge = Fence { name: "x".into(), fencing: manna_lock::Fencing::new(manna_lock::FencingToken::from(u64::MAX), "h") };
        assert!(s.write_batch(&col, &[], WriteOptions::default(), None, Some(&huge)).is_err());
    }
}

both_backends! {
    fn identity_names_the_database_not_the_connection(db: &TestDb) {
        let a = store(db).identity().unwrap();
        let b = DieselStore::new(db.reopen()).identity().unwrap();
        assert_eq!(a, b);
        let other = DieselStore::new(db.other_database()).identity().unwrap();
        assert_ne!(a, other);
        let prefix = if db.is_pg() { "postgres:" } else { "sqlite:/" };
        assert!(a.starts_with(prefix), "{a}");
        assert!(!a.contains('@') && !a.contains("password"), "{a}");
    }
}
