//! Identifier injection is rejected before any SQL is built.

use manna_migrate::{ColumnRef, IdentError};
use manna_store_diesel::schema::{add_version_column, add_version_columns, table_columns};
use manna_store_diesel::{Changes, Error, Fence, IdempotentCas, VersionedTable};

const ATTACKS: [&str; 6] = [
    "victim; DROP TABLE victim",
    "victim\"; DROP TABLE victim; --",
    "victim' OR '1'='1",
    "victim--",
    "1victim",
    "vic tim",
];

both_backends! {
    fn injection_in_identifiers_is_rejected(db: &TestDb) {
        db.exec("CREATE TABLE victim (id BIGINT PRIMARY KEY, v TEXT, version INTEGER NOT NULL DEFAULT 1); \
                 INSERT INTO victim (id) VALUES (1)");
        let mut c = db.conn();
        for bad in ATTACKS {
            let ident = |r: Result<(), Error>| {
                assert!(matches!(r, Err(Error::Identifier(_))), "{bad:?} → {r:?}");
            };
            ident(VersionedTable::new(bad).map(drop));
            ident(VersionedTable::new("victim").unwrap().with_id_column(bad).map(drop));
            ident(VersionedTable::new("victim").unwrap().with_version_column(bad).map(drop));
            ident(Changes::new().set(bad, 1).map(drop));
            ident(add_version_column(&mut c, bad, "version").map(drop));
            ident(add_version_column(&mut c, "victim", bad).map(drop));
            ident(add_version_columns(&mut c, &["victim", bad]).map(drop));
            ident(table_columns(&mut c, bad).map(drop));
            ident(Fence::with_table(bad).map(drop));
            ident(IdempotentCas::new(VersionedTable::new("victim").unwrap()).with_operations_table(bad).map(drop));
            assert!(matches!(ColumnRef::parse(&format!("{bad}.v"), "id"), Err(IdentError::BadCharacter { .. })));
        }
        drop(c);
        // Nothing ran: the table is intact and no version column was added twice.
        assert_eq!(db.scalar_i64("SELECT COUNT(*) AS v FROM victim"), 1);
    }
}
