use std::sync::{Arc, Mutex};

use manna_migrate::testing::strategies::{TestKeys, ValueKind};
use manna_migrate::{
    AadMode, BatchProgress, ColumnRef, ColumnReport, Mode, Progress, RetiringKey, Status,
};
use manna_store::testing::MemoryStore;
use serde_json::Value;

use crate::support::{column, fresh_locks, migrator, run, seed_fernet};

#[test]
fn json_has_the_contract_shape() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let rows: Vec<_> = ValueKind::ALL
        .iter()
        .map(|k| (*k, "s".to_owned()))
        .collect();
    keys.seed(&store, &column(), AadMode::Column, &rows);
    let report = run(&store, &keyring, |o| o.mode = Mode::VerifyOnly);
    let v: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["mode"], "verify-only");
    assert_eq!(v["target"], "aes256gcm");
    let c = &v["columns"][0];
    for key in [
        "table",
        "column",
        "total",
        "by_format",
        "migrated",
        "unchanged",
        "conflicts",
        "failed",
        "elapsed_s",
        "rows_per_s",
    ] {
        assert!(c.get(key).is_some(), "missing {key}");
    }
    assert_eq!(c["table"], "plaid_items");
    assert_eq!(c["column"], "access_token");
    assert_eq!(c["total"], 8);
    let bf = &c["by_format"];
    let fernet = keyring.fernet_key_ids()[0].to_string();
    assert_eq!(bf["fernet"][fernet], 1);
    assert_eq!(bf["plaintext"], 1);
    assert_eq!(bf["unknown"], 1);
    assert_eq!(bf["aes256gcm"][keyring.primary_key_id().to_string()], 1);
    assert_eq!(bf["aes256gcm"][keys.previous.id().to_string()], 2);
    assert_eq!(bf["aes256gcm"][keys.unknown.id().to_string()], 1);
    // Failed ids are the JSON numbers of the rows (unknown key 5, wrong AAD 6, garbage 8).
    assert_eq!(c["failed"], serde_json::json!([5, 6, 8]));
    // The Fernet row and the older key's two would still be rewritten.
    assert_eq!(c["pending"], 3);
    assert_eq!(c["status"], "incomplete");
    assert_eq!(c["census"], "as-found");
    // Undecryptable rows win over incomplete ones: exit status 4.
    assert_eq!(v["verdict"], "undecryptable");
    assert_eq!(report.verdict().exit_code(), 4);
    assert!(c["elapsed_s"].is_f64() && c["rows_per_s"].is_f64());

    let dry = run(&store, &keyring, |o| o.mode = Mode::DryRun);
    assert!(dry
        .to_json()
        .starts_with(r#"{"mode":"dry-run","target":"aes256gcm""#));
}

#[test]
fn text_ids_serialize_as_strings() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let c = ColumnRef::parse("items.secret", "uuid").unwrap();
    store.create_table(&c, manna_migrate::IdKind::Uuid, &[], false);
    store.insert(
        &c,
        "00000000-0000-4000-8000-00000000000a",
        Some("gAAAAAbroken".into()),
    );
    store.insert(
        &c,
        "00000000-0000-4000-8000-00000000000b",
        Some(keyring.encrypt_fernet(b"x").unwrap()),
    );
    let report = migrator(&store, &keyring, fresh_locks(), |_| {})
        .run(std::slice::from_ref(&c))
        .unwrap();
    let v: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(
        v["columns"][0]["failed"],
        serde_json::json!(["00000000-0000-4000-8000-00000000000a"])
    );
    assert_eq!(v["columns"][0]["migrated"], 1);
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    last: Mutex<Option<BatchProgress>>,
}

impl Progress for Recorder {
    fn on_start(&self, c: &ColumnRef, total: u64, done: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {c} {total} {done}"));
    }
    fn on_batch(&self, _c: &ColumnRef, p: &BatchProgress) {
        let mut last = self.last.lock().unwrap();
        if let Some(prev) = last.as_ref() {
            assert!(p.done > prev.done, "progress goes forward");
        }
        *last = Some(p.clone());
        self.events.lock().unwrap().push("batch".into());
    }
    fn on_finish(&self, c: &ColumnRef, r: &ColumnReport) {
        self.events
            .lock()
            .unwrap()
            .push(format!("finish {c} {}", r.status));
    }
}

#[test]
fn progress_sees_start_batches_and_finish() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 450);
    let rec = Arc::new(Recorder::default());
    let report = migrator(&store, &keyring, fresh_locks(), |o| {
        o.batch_size = 100;
        o.adaptive = false;
    })
    .progress(rec.clone())
    .run(&[column()])
    .unwrap();
    assert_eq!(report.columns[0].status, Status::Completed);
    let events = rec.events.lock().unwrap().clone();
    assert_eq!(
        events.first().unwrap(),
        "start plaid_items.access_token 450 0"
    );
    assert_eq!(events.iter().filter(|e| *e == "batch").count(), 5);
    assert_eq!(
        events.last().unwrap(),
        "finish plaid_items.access_token completed"
    );
    let last = rec.last.lock().unwrap().clone().unwrap();
    assert_eq!((last.done, last.total), (450, 450));
    assert_eq!(last.percent(), 100.0);
    assert_eq!(last.so_far.migrated, 450);
    assert_eq!(last.batch.scanned, 50);
}

#[test]
fn retiring_key_resolves_configured_ids_and_fernet() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let id = keys.primary.id();
    assert_eq!(
        RetiringKey::resolve(&id.to_string(), &keyring),
        Ok(RetiringKey::Aes(id))
    );
    let fernet = keyring.fernet_key_ids()[0];
    assert_eq!(
        RetiringKey::resolve(&fernet.to_string(), &keyring),
        Ok(RetiringKey::FernetKey(fernet))
    );
    assert_eq!(
        RetiringKey::resolve("fernet", &keyring),
        Ok(RetiringKey::Fernet)
    );
    assert!(RetiringKey::resolve("zz", &keyring).is_err());
    let err = RetiringKey::resolve("00112233445566ff", &keyring).unwrap_err();
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    assert!(err.to_string().contains(&fernet.to_string()), "{err}");
}

/// Issue 10: the failure kinds the report emits are the ones the migration
/// guide documents, spelled the same way (the guide once said
/// `unknown-format` while the report said `unknown_format`).
#[test]
fn the_guide_documents_every_failure_kind_as_emitted() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/migration-guide.md"
    ))
    .unwrap();
    for kind in manna_migrate::FailureKind::ALL {
        let name = kind.to_string();
        assert!(
            guide.contains(&format!("`{name}`")),
            "the guide lacks `{name}`"
        );
        let kebab = name.replace('_', "-");
        assert!(
            name == kebab || !guide.contains(&format!("`{kebab}`")),
            "the guide spells `{kebab}`, the report `{name}`"
        );
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{name}\""));
    }
}
