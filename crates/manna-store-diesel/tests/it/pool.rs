//! Pools, URLs and driver errors.

use manna_migrate::StoreErrorKind;
use manna_store_diesel::{DbPool, Dialect, Error, PoolOptions};

use crate::support::TestDb;

#[test]
fn unreachable_postgres_names_the_url_without_its_password() {
    // Port 9 (discard) on loopback: nothing listens there.
    let err = DbPool::connect(
        "postgres://app:hunter2@127.0.0.1:9/prod",
        &PoolOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    assert!(msg.contains("postgres://***@127.0.0.1:9/prod"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

/// Issue 9: passwords holding `#`, `/`, `?`, `@` or `%` (unescaped, as
/// people paste them) never reach an error, whether libpq can parse the URL
/// or not (libpq quotes pieces of a URL it cannot parse), through the pool,
/// the store and the database lock.
#[test]
fn passwords_with_url_delimiters_never_appear_in_errors() {
    for password in [
        "hu#nter2secret",
        "hu/nter2secret",
        "hu?nter2secret",
        "hu@nter2secret",
        "hu%nter2secret",
        "hu%zznter2secret",
        "a#b/c?d@e%fsecret",
    ] {
        let url = format!("postgres://app:{password}@127.0.0.1:9/prod");
        let mut shown = Vec::new();
        match DbPool::connect(&url, &PoolOptions::default()) {
            Err(err) => {
                assert!(
                    matches!(err, Error::Unavailable { .. } | Error::BadUrl { .. }),
                    "{err:?}"
                );
                shown.push(format!("{err} {err:?}"));
            }
            Ok(_) => panic!("{password}: connected to port 9?"),
        }
        match manna_store_diesel::DieselStore::connect(&url) {
            Err(err) => shown.push(format!("{err} {err:?}")),
            Ok(_) => panic!("{password}: connected to port 9?"),
        }
        shown.push(format!(
            "{:?}",
            manna_store_diesel::DatabaseUrl::parse(&url)
        ));
        for s in shown {
            assert!(!s.contains(password), "{password}: {s}");
            assert!(!s.contains("nter2"), "{password}: {s}");
            assert!(!s.contains("secret"), "{password}: {s}");
            assert!(s.contains("postgres://***@"), "{password}: {s}");
        }
    }
}

#[test]
fn unknown_scheme_is_refused() {
    assert!(matches!(
        DbPool::connect("mysql://u:pw@h/db", &PoolOptions::default()),
        Err(Error::BadUrl { .. })
    ));
}

#[test]
fn sqlite_connections_get_wal_busy_timeout_and_foreign_keys() {
    let db = TestDb::sqlite();
    assert_eq!(db.pool().dialect(), Dialect::Sqlite);
    assert_eq!(
        db.scalar_text("SELECT journal_mode AS v FROM pragma_journal_mode")
            .as_deref(),
        Some("wal")
    );
    assert_eq!(
        db.scalar_i64("SELECT foreign_keys AS v FROM pragma_foreign_keys"),
        1
    );
    assert_eq!(
        db.scalar_i64("SELECT timeout AS v FROM pragma_busy_timeout"),
        5000
    );
}

#[test]
fn sqlite_url_forms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    for url in [
        path.display().to_string(),
        format!("sqlite://{}", path.display()),
        format!("sqlite:{}", path.display()),
    ] {
        let pool = DbPool::connect(&url, &PoolOptions::default()).unwrap();
        assert_eq!(pool.url(), url);
        pool.get().unwrap();
    }
    assert!(path.exists());
    let mem = DbPool::connect("sqlite::memory:", &PoolOptions::default()).unwrap();
    mem.get().unwrap();
}

#[test]
fn postgres_pool_reports_its_dialect() {
    let db = TestDb::postgres();
    assert_eq!(db.pool().dialect(), Dialect::Postgres);
    assert!(db.pool().url().starts_with("postgres://"));
}

both_backends! {
    fn driver_errors_are_classified(db: &TestDb) {
        use manna_store_diesel::{Changes, VersionedTable};
        db.exec("CREATE TABLE u (id BIGINT PRIMARY KEY, email TEXT UNIQUE, version INTEGER NOT NULL DEFAULT 1); \
                 INSERT INTO u (id, email) VALUES (1, 'a@x'), (2, 'b@x')");
        let t = VersionedTable::new("u").unwrap();
        let mut c = db.conn();
        let err = t.update(&mut c, 2, 1, &Changes::new().set("email", "a@x").unwrap()).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Constraint, "{err}");
        assert!(!err.to_string().contains("a@x"), "no values in messages: {err}");
        let err = VersionedTable::new("missing").unwrap().update(&mut c, 1, 1, &Changes::new()).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::NotFound, "{err}");
    }
}

#[test]
fn unopenable_sqlite_file_fails_at_once_naming_the_path() {
    let err = DbPool::connect(
        "sqlite:///nonexistent-dir-for-manna/x.db",
        &PoolOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("sqlite:///nonexistent-dir-for-manna/x.db"),
        "{err}"
    );
}

#[test]
fn a_killed_postgres_connection_is_unavailable_and_the_pool_recovers() {
    use diesel::Connection;
    use manna_store_diesel::{Changes, VersionedTable};
    let db = TestDb::postgres();
    db.exec("CREATE TABLE k (id BIGINT PRIMARY KEY, v BIGINT, version INTEGER NOT NULL DEFAULT 1); INSERT INTO k VALUES (1, 0, 1)");
    let t = VersionedTable::new("k").unwrap();
    let mut conn = db.conn();
    let pid = {
        #[derive(diesel::QueryableByName)]
        struct P {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let manna_store_diesel::DbConnection::Postgres(c) = &mut conn else {
            unreachable!()
        };
        let p: Vec<P> = diesel::RunQueryDsl::load(
            diesel::sql_query("SELECT pg_backend_pid() AS pid"),
            &mut **c,
        )
        .unwrap();
        p[0].pid
    };
    let mut admin =
        diesel::PgConnection::establish(manna_store_diesel::testing::pg_test_url()).unwrap();
    diesel::connection::SimpleConnection::batch_execute(
        &mut admin,
        &format!("SELECT pg_terminate_backend({pid})"),
    )
    .unwrap();
    // The signal is asynchronous: wait until the backend has exited.
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive: Vec<N> = diesel::RunQueryDsl::load(
            diesel::sql_query(format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = {pid}"
            )),
            &mut admin,
        )
        .unwrap();
        if alive[0].n == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backend {pid} still running 10 s after pg_terminate_backend"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let err = t
        .update(&mut conn, 1, 1, &Changes::new().set("v", 1).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    drop(conn);
    // The pool tests connections on checkout: the next one works.
    assert_eq!(
        t.update(&mut db.conn(), 1, 1, &Changes::new().set("v", 1).unwrap())
            .unwrap(),
        2
    );
}

#[test]
fn sqlite_busy_is_a_retryable_conflict() {
    use manna_lock::IsConflict;
    use manna_store_diesel::{Changes, StoreConnection, VersionedTable};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    let pool = DbPool::connect(
        &url,
        &PoolOptions::default().busy_timeout(std::time::Duration::from_millis(50)),
    )
    .unwrap();
    diesel::connection::SimpleConnection::batch_execute(
        &mut pool.get().unwrap(),
        "CREATE TABLE b (id INTEGER PRIMARY KEY, v BIGINT, version INTEGER NOT NULL DEFAULT 1); INSERT INTO b VALUES (1, 0, 1)",
    )
    .unwrap();
    let t = VersionedTable::new("b").unwrap();
    let mut holder = pool.get().unwrap();
    let mut other = pool.get().unwrap();
    let r: Result<(), Error> = holder.write_transaction(|_| {
        // While this transaction holds the write lock, another writer times out.
        let err = t
            .update(&mut other, 1, 1, &Changes::new().set("v", 1)?)
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Conflict, "{err}");
        assert!(err.is_conflict());
        Ok(())
    });
    r.unwrap();
    assert_eq!(
        t.update(&mut other, 1, 1, &Changes::new().set("v", 1).unwrap())
            .unwrap(),
        2
    );
}

/// Issue 9: a server that reports errors in German still yields conflicts
/// (worth retrying) and missing tables, not plain errors. The role below
/// gets German messages from the server, as a role on a German install
/// would, and may set `lc_messages` (as the pool asks it to).
#[test]
fn postgres_errors_keep_their_kind_when_the_server_speaks_german() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};

    let base = manna_store_diesel::testing::pg_test_url();
    let mut admin = PgConnection::establish(base).unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'manna_test_de') THEN
                 CREATE ROLE manna_test_de LOGIN;
               END IF;
             END $$;
             GRANT SET ON PARAMETER lc_messages TO manna_test_de;",
        )
        .unwrap();
    admin
        .batch_execute("ALTER ROLE manna_test_de SET lc_messages = 'de_DE.UTF-8'")
        .expect("the PostgreSQL server needs the de_DE.UTF-8 locale (.ci/run generates it)");
    let (scheme, rest) = base.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://manna_test_de@{host}");

    // The scenario: this role's sessions speak German.
    let mut raw = PgConnection::establish(&url).unwrap();
    let german = raw.batch_execute("SELECT 1/0").unwrap_err().to_string();
    assert!(german.contains("Division durch Null"), "{german}");

    let pool = DbPool::connect(&url, &PoolOptions::default().max_size(2)).unwrap();
    let kind = |r: diesel::QueryResult<()>| Error::from(r.unwrap_err()).kind();
    let mut a = pool.get().unwrap();
    assert_eq!(
        kind(a.batch_execute("SELECT * FROM manna_no_such_table")),
        StoreErrorKind::NotFound
    );
    a.batch_execute("SELECT pg_advisory_lock(424242)").unwrap();
    let mut b = pool.get().unwrap();
    assert_eq!(
        kind(b.batch_execute("SET lock_timeout = '50ms'; SELECT pg_advisory_lock(424242)")),
        StoreErrorKind::Conflict,
        "a lock timeout is a conflict"
    );
    a.batch_execute("SELECT pg_advisory_unlock(424242)")
        .unwrap();
}
