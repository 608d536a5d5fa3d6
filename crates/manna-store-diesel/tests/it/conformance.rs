//! The manna-migrate ColumnStore conformance suite, on both backends.

use manna_migrate::{ColumnRef, ColumnStore, IdKind, Ident, RowId};
use manna_store::testing::conformance::{self, Harness, TableSpec};
use manna_store_diesel::DieselStore;

use crate::support::TestDb;

struct DieselHarness<'a> {
    db: &'a TestDb,
    store: DieselStore,
    versioned: std::collections::HashSet<String>,
}

/// A SQL literal for test data (the suite's own values).
fn lit(v: Option<&str>) -> String {
    v.map_or_else(
        || "NULL".to_owned(),
        |s| format!("'{}'", s.replace('\'', "''")),
    )
}

fn id_lit(id: &RowId) -> String {
    match id {
        RowId::Int(i) => i.to_string(),
        RowId::Text(s) => lit(Some(s)),
    }
}

impl DieselHarness<'_> {
    /// A case-insensitive collation clause for a TEXT column.
    fn case_insensitive_collation(&self) -> &'static str {
        if self.db.is_pg() {
            // A nondeterministic ICU collation: 'a' = 'A' under it.
            self.db.exec(
                "DO $$ BEGIN CREATE COLLATION manna_ci (provider = icu, \
                 locale = 'und-u-ks-level2', deterministic = false); \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            );
            " COLLATE manna_ci"
        } else {
            " COLLATE NOCASE"
        }
    }
}

impl Harness for DieselHarness<'_> {
    fn store(&self) -> &dyn ColumnStore {
        &self.store
    }

    fn create_table(&mut self, spec: &TableSpec) -> ColumnRef {
        let id_type = match spec.id_kind {
            IdKind::Int => "BIGINT",
            IdKind::Uuid => "UUID",
            _ => "TEXT",
        };
        let version = if spec.has_version {
            ", version INTEGER NOT NULL DEFAULT 1"
        } else {
            ""
        };
        let collation = if spec.case_insensitive {
            self.case_insensitive_collation()
        } else {
            ""
        };
        let key_collation = if spec.case_insensitive_key && spec.id_kind == IdKind::Text {
            self.case_insensitive_collation()
        } else {
            ""
        };
        // Quoted: the suite's names keep their case.
        let q = |s: &str| Ident::new(s).unwrap().quoted();
        let (t, id, v, o) = (
            &q(&spec.table),
            &q(&spec.id_column),
            &q(&spec.value_column),
            &q(&spec.other_column),
        );
        // SQLite table names ignore case: drop any spelling of the name.
        let mut sql = format!(
            "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} ({id} {id_type}{key_collation} PRIMARY KEY, {v} TEXT{collation}, {o} TEXT{version});"
        );
        for chunk in spec.rows.chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|r| {
                    format!(
                        "({}, {}, {})",
                        id_lit(&r.id),
                        lit(r.value.as_deref()),
                        lit(r.other.as_deref())
                    )
                })
                .collect();
            sql.push_str(&format!(
                "INSERT INTO {t} ({id}, {v}, {o}) VALUES {};",
                values.join(", ")
            ));
        }
        self.db.exec(&sql);
        if spec.has_version {
            self.versioned.insert(spec.table.clone());
        } else {
            self.versioned.remove(&spec.table);
        }
        // A fresh store: the table may have changed shape under the same name.
        self.store = DieselStore::new(self.db.pool().clone());
        ColumnRef::new(
            Ident::new(&spec.table).unwrap(),
            Ident::new(&spec.value_column).unwrap(),
            Ident::new(&spec.id_column).unwrap(),
        )
    }

    fn app_write(&mut self, column: &ColumnRef, id: &RowId, value: Option<&str>) {
        let bump = if self.versioned.contains(column.table.as_str()) {
            ", version = version + 1"
        } else {
            ""
        };
        self.db.exec(&format!(
            "UPDATE {} SET {} = {}{bump} WHERE {} = {}",
            column.table.quoted(),
            column.column.quoted(),
            lit(value),
            column.id_column.quoted(),
            id_lit(id)
        ));
    }

    fn app_insert(&mut self, column: &ColumnRef, id: &RowId, value: Option<&str>) {
        self.db.exec(&format!(
            "INSERT INTO {} ({}, {}) VALUES ({}, {})",
            column.table.quoted(),
            column.id_column.quoted(),
            column.column.quoted(),
            id_lit(id),
            lit(value)
        ));
    }

    fn app_delete(&mut self, column: &ColumnRef, id: &RowId) {
        self.db.exec(&format!(
            "DELETE FROM {} WHERE {} = {}",
            column.table.quoted(),
            column.id_column.quoted(),
            id_lit(id)
        ));
    }

    fn version(&mut self, column: &ColumnRef, id: &RowId) -> Option<i64> {
        if !self.versioned.contains(column.table.as_str()) {
            return None;
        }
        let kind = match id {
            RowId::Text(s) if self.db.is_pg() && s.len() == 36 && s.matches('-').count() == 4 => {
                IdKind::Uuid
            }
            RowId::Text(_) => IdKind::Text,
            _ => IdKind::Int,
        };
        let table = manna_store_diesel::VersionedTable::new(column.table.as_str())
            .unwrap()
            .with_id_column(column.id_column.as_str())
            .unwrap()
            .with_id_kind(kind);
        table.version(&mut self.db.conn(), id.clone()).unwrap()
    }

    fn supports(&self, _kind: IdKind) -> bool {
        true
    }

    fn app_write_bytes(&mut self, column: &ColumnRef, id: &RowId, bytes: &[u8]) -> bool {
        if self.db.is_pg() {
            return false; // TEXT holds only valid text on PostgreSQL
        }
        // What Python's sqlite3 does with `bytes`: a BLOB in a TEXT column.
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.db.exec(&format!(
            "UPDATE {} SET {} = X'{hex}' WHERE {} = {}",
            column.table.quoted(),
            column.column.quoted(),
            column.id_column.quoted(),
            id_lit(id)
        ));
        true
    }

    fn same_database(&self) -> Option<Box<dyn ColumnStore>> {
        Some(Box::new(DieselStore::new(self.db.reopen())))
    }

    fn other_database(&self) -> Option<Box<dyn ColumnStore>> {
        Some(Box::new(DieselStore::new(self.db.other_database())))
    }
}

both_backends! {
    fn column_store_conformance_suite(db: &TestDb) {
        let mut h = DieselHarness {
            db,
            store: DieselStore::new(db.pool().clone()),
            versioned: Default::default(),
        };
        conformance::run_all(&mut h);
    }
}
