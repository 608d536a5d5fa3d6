//! Idempotent compare-and-set keyed by an operation id.

use manna_store_diesel::{CasOutcome, Changes, Error, IdempotentCas, VersionedTable};

use crate::support::TestDb;

fn items(db: &TestDb) -> IdempotentCas {
    db.exec(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, cursor TEXT, \
         version INTEGER NOT NULL DEFAULT 1); INSERT INTO items (id) VALUES (1), (2)",
    );
    let cas = IdempotentCas::new(VersionedTable::new("items").unwrap());
    cas.create_schema(&mut db.conn()).unwrap();
    cas.create_schema(&mut db.conn()).unwrap(); // idempotent
    cas
}

both_backends! {
    fn retried_operation_applies_once(db: &TestDb) {
        let cas = items(db);
        let mut c = db.conn();
        let set = Changes::new().set("cursor", "page-2").unwrap();
        assert_eq!(cas.apply(&mut c, "op-1", 1, 1, &set).unwrap(), CasOutcome::Applied { version: 2 });
        for _ in 0..3 {
            assert_eq!(
                cas.apply(&mut c, "op-1", 1, 1, &set).unwrap(),
                CasOutcome::AlreadyApplied { version: Some(2) }
            );
        }
        drop(c);
        assert_eq!(db.scalar_i64("SELECT CAST(version AS BIGINT) AS v FROM items WHERE id = 1"), 2);
        assert_eq!(db.scalar_i64("SELECT COUNT(*) AS v FROM manna_operations"), 1);
    }
}

both_backends! {
    fn conflict_records_nothing_so_a_fresh_retry_can_reuse_the_id(db: &TestDb) {
        let cas = items(db);
        let mut c = db.conn();
        let t = VersionedTable::new("items").unwrap();
        t.update(&mut c, 1, 1, &Changes::new().set("cursor", "other").unwrap()).unwrap();
        let set = Changes::new().set("cursor", "mine").unwrap();
        match cas.apply(&mut c, "op-2", 1, 1, &set).unwrap() {
            CasOutcome::Conflict(e) => assert_eq!(e.id(), "1"),
            other => panic!("{other:?}"),
        }
        match cas.apply(&mut c, "op-2", 42, 1, &set).unwrap() {
            CasOutcome::Conflict(e) => assert_eq!(e.kind(), manna_lock::ConflictKind::RowGone),
            other => panic!("{other:?}"),
        }
        // Re-read (version 2), retry with the same id: applies.
        assert_eq!(cas.apply(&mut c, "op-2", 1, 2, &set).unwrap(), CasOutcome::Applied { version: 3 });
        // The id now belongs to row 1; using it for row 2 is refused.
        assert!(matches!(cas.apply(&mut c, "op-2", 2, 1, &set), Err(Error::OperationReused { .. })));
        drop(c);
        assert_eq!(db.scalar_text("SELECT cursor AS v FROM items WHERE id = 1").as_deref(), Some("mine"));
        assert_eq!(db.scalar_text("SELECT cursor AS v FROM items WHERE id = 2"), None);
    }
}

both_backends! {
    fn concurrent_duplicates_apply_exactly_once(db: &TestDb) {
        let cas = items(db);
        let set = Changes::new().set("cursor", "x").unwrap();
        let outcomes: Vec<CasOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| s.spawn(|| {
                    let mut c = db.conn();
                    // SQLite may report "database is locked" under contention: retry those.
                    loop {
                        match cas.apply(&mut c, "dup", 2, 1, &set) {
                            Err(e) if manna_lock::IsConflict::is_conflict(&e) => continue,
                            r => break r.unwrap(),
                        }
                    }
                }))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let applied = outcomes.iter().filter(|o| matches!(o, CasOutcome::Applied { .. })).count();
        let already = outcomes.iter().filter(|o| matches!(o, CasOutcome::AlreadyApplied { .. })).count();
        assert_eq!((applied, already), (1, 5), "{outcomes:?}");
        assert_eq!(db.scalar_i64("SELECT CAST(version AS BIGINT) AS v FROM items WHERE id = 2"), 2);
    }
}
