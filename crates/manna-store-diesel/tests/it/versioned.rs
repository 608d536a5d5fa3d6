//! Version-column optimistic locking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use manna_lock::{ConflictKind, RetryPolicy};
use manna_migrate::StoreErrorKind;
use manna_store_diesel::schema::add_version_column;
use manna_store_diesel::{Changes, Error, VersionedTable};

use crate::support::TestDb;

#[derive(diesel::QueryableByName)]
struct Account {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    balance: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version: i64,
}

fn read_account(db: &TestDb, id: i64) -> Account {
    let sql = format!(
        "SELECT CAST(balance AS BIGINT) AS balance, CAST(version AS BIGINT) AS version FROM accounts WHERE id = {id}"
    );
    let rows: Vec<Account> = on_conn!(db, |c| diesel::RunQueryDsl::load(
        diesel::sql_query(&sql),
        c
    )
    .unwrap());
    rows.into_iter().next().unwrap()
}

fn create_accounts(db: &TestDb) {
    db.exec(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, \
         version INTEGER NOT NULL DEFAULT 1); \
         INSERT INTO accounts (id, balance) VALUES (1, 0), (2, 100)",
    );
}

both_backends! {
    /// 8 threads × 500 read-modify-write increments of one row through the
    /// manna-lock retry policy: none lost, every conflict accounted for.
    fn eight_threads_increment_one_row_exactly(db: &TestDb) {
        create_accounts(db);
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 500;
        let table = VersionedTable::new("accounts").unwrap();
        let attempts = AtomicU64::new(0);
        let conflicts = AtomicU64::new(0);
        let policy = RetryPolicy::new()
            .max_retries(10_000)
            .base_delay(Duration::from_micros(100))
            .max_delay(Duration::from_millis(5));
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let mut conn = db.conn();
                    for _ in 0..PER_THREAD {
                        policy
                            .retry(|| {
                                attempts.fetch_add(1, Ordering::Relaxed);
                                let a = read_account(db, 1);
                                let r = table.update(
                                    &mut conn,
                                    1,
                                    a.version,
                                    &Changes::new().set("balance", a.balance + 1)?,
                                );
                                if let Err(Error::Conflict(c)) = &r {
                                    assert_eq!(c.kind(), ConflictKind::RowChanged);
                                    assert_eq!(c.entity(), "accounts");
                                    assert_eq!(c.id(), "1");
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                }
                                r
                            })
                            .unwrap();
                    }
                });
            }
        });
        let a = read_account(db, 1);
        let total = THREADS * PER_THREAD;
        assert_eq!(a.balance, total as i64);
        assert_eq!(a.version, total as i64 + 1);
        let attempts = attempts.into_inner();
        let conflicts = conflicts.into_inner();
        assert_eq!(attempts, total + conflicts, "every failed attempt is a counted conflict");
        println!("{} conflicts retried over {attempts} attempts", conflicts);
    }
}

both_backends! {
    fn update_bumps_version_and_refuses_stale_writers(db: &TestDb) {
        create_accounts(db);
        let t = VersionedTable::new("accounts").unwrap();
        let mut c = db.conn();
        let set = |v: i64| Changes::new().set("balance", v).unwrap();
        assert_eq!(t.update(&mut c, 2, 1, &set(90)).unwrap(), 2);
        assert_eq!(t.version(&mut c, 2).unwrap(), Some(2));
        match t.update(&mut c, 2, 1, &set(80)) {
            Err(Error::Conflict(e)) => {
                assert_eq!(e.kind(), ConflictKind::RowChanged);
                assert_eq!(e.to_string(), "optimistic lock conflict on accounts id 2: the row changed since it was read");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_account(db, 2).balance, 90, "the stale write changed nothing");
        match t.update(&mut c, 99, 1, &set(1)) {
            Err(Error::Conflict(e)) => assert_eq!(e.kind(), ConflictKind::RowGone),
            other => panic!("{other:?}"),
        }
        // Only the version moves when nothing else is set.
        assert_eq!(t.update(&mut c, 2, 2, &Changes::new()).unwrap(), 3);
    }
}

both_backends! {
    fn deletes_are_checked(db: &TestDb) {
        create_accounts(db);
        let t = VersionedTable::new("accounts").unwrap();
        let mut c = db.conn();
        match t.delete(&mut c, 2, 7) {
            Err(Error::Conflict(e)) => assert_eq!(e.kind(), ConflictKind::RowChanged),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.version(&mut c, 2).unwrap(), Some(1));
        t.delete(&mut c, 2, 1).unwrap();
        assert_eq!(t.version(&mut c, 2).unwrap(), None);
        match t.delete(&mut c, 2, 1) {
            Err(Error::Conflict(e)) => assert_eq!(e.kind(), ConflictKind::RowGone),
            other => panic!("{other:?}"),
        }
    }
}

both_backends! {
    fn missing_version_column_is_a_clear_error_and_the_helper_adds_it(db: &TestDb) {
        db.exec("CREATE TABLE plain (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL); \
                 INSERT INTO plain VALUES (1, 5), (2, 6)");
        let t = VersionedTable::new("plain").unwrap();
        let mut c = db.conn();
        let err = t.update(&mut c, 1, 1, &Changes::new().set("balance", 1).unwrap()).unwrap_err();
        assert!(matches!(err, Error::NoVersionColumn { .. }), "{err:?}");
        assert_eq!(err.kind(), StoreErrorKind::Unsupported);
        assert!(err.to_string().contains("plain has no version column"), "{err}");

        assert!(add_version_column(&mut c, "plain", "version").unwrap());
        assert!(!add_version_column(&mut c, "plain", "version").unwrap(), "second run is a no-op");
        drop(c);
        assert_eq!(db.scalar_i64("SELECT CAST(MIN(version) AS BIGINT) AS v FROM plain"), 1);
        let mut c = db.conn();
        assert_eq!(t.update(&mut c, 1, 1, &Changes::new().set("balance", 1).unwrap()).unwrap(), 2);
    }
}

both_backends! {
    fn text_and_uuid_keys(db: &TestDb) {
        let uuid_type = if db.is_pg() { "UUID" } else { "TEXT" };
        db.exec(&format!(
            "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, version INTEGER NOT NULL DEFAULT 1); \
             CREATE TABLE things (id {uuid_type} PRIMARY KEY, name TEXT, version INTEGER NOT NULL DEFAULT 1); \
             INSERT INTO users (id, name) VALUES ('alice', 'a'); \
             INSERT INTO things (id, name) VALUES ('6f9619ff-8b86-d011-b42d-00c04fc964ff', 'x')"
        ));
        let mut c = db.conn();
        let users = VersionedTable::new("users").unwrap();
        assert_eq!(users.update(&mut c, "alice", 1, &Changes::new().set("name", "b").unwrap()).unwrap(), 2);
        assert_eq!(users.version(&mut c, "alice").unwrap(), Some(2));
        let things = VersionedTable::new("things").unwrap().with_id_kind(manna_store::IdKind::Uuid);
        // Any spelling of the UUID finds the row (bound as lowercase text on SQLite).
        let id = manna_store::RowId::from("6F9619FF-8B86-D011-B42D-00C04FC964FF");
        assert_eq!(things.update(&mut c, id.clone(), 1, &Changes::new().set("name", None::<String>).unwrap()).unwrap(), 2);
        assert_eq!(things.version(&mut c, id).unwrap(), Some(2));
    }
}

diesel::table! {
    accounts (id) {
        id -> BigInt,
        balance -> BigInt,
        version -> Integer,
    }
}

both_backends! {
    fn diesel_dsl_macros(db: &TestDb) {
        use manna_store_diesel::{versioned_delete, versioned_update};
        create_accounts(db);
        let r = on_conn!(db, |c| versioned_update!(c, accounts, id = 2_i64, version = 1, accounts::balance.eq(50)));
        assert_eq!(r.unwrap(), 2);
        let r = on_conn!(db, |c| versioned_update!(c, accounts, id = 2_i64, version = 1, accounts::balance.eq(40)));
        match r {
            Err(Error::Conflict(e)) => {
                assert_eq!((e.entity(), e.id(), e.kind()), ("accounts", "2", ConflictKind::RowChanged));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_account(db, 2).balance, 50);
        let r = on_conn!(db, |c| versioned_delete!(c, accounts, id = 2_i64, version = 2));
        r.unwrap();
        let r = on_conn!(db, |c| versioned_update!(c, accounts, id = 2_i64, version = 2, accounts::balance.eq(1)));
        assert!(matches!(r, Err(Error::Conflict(e)) if e.kind() == ConflictKind::RowGone));
    }
}
