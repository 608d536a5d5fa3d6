use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::{AadMode, RowId, Status, Verdict};

use crate::support::{all_under_primary, column, plaintexts, run, seed_fernet};

/// Application writes land between the migrator's scan and its write: the
/// compare-and-set misses them, they are counted as conflicts, re-read, and
/// never overwritten.
#[test]
fn writes_between_scan_and_write_are_never_clobbered() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 50);
    let c = column();
    let app_values = Arc::new(Mutex::new(BTreeMap::new()));
    let fired = Arc::new(AtomicBool::new(false));
    {
        let (keyring, app_values, fired, keys) = (
            keyring.clone(),
            app_values.clone(),
            fired.clone(),
            keys.keyring(),
        );
        store.on_write(move |s, col, rewrites| {
            if rewrites.is_empty() || fired.swap(true, Ordering::SeqCst) {
                return;
            }
            // The new application writes rows 2, 4, 6 in the new format.
            for i in [2i64, 4, 6] {
                let v = keyring
                    .encrypt(format!("app-{i}").as_bytes(), b"plaid_items.access_token")
                    .unwrap();
                app_values.lock().unwrap().insert(i, v.clone());
                assert!(s.update(col, &RowId::Int(i), Some(v)));
            }
            // A legacy instance still writes row 8 as Fernet.
            let legacy = keys.encrypt_fernet(b"legacy-8").unwrap();
            assert!(s.update(col, &RowId::Int(8), Some(legacy)));
            // And row 10 is deleted.
            assert!(s.delete(col, &RowId::Int(10)));
        });
    }
    let report = run(&store, &keyring, |o| o.batch_size = 20);
    let r = &report.columns[0];
    assert_eq!(
        r.conflicts, 5,
        "rows 2, 4, 6, 8, 10 missed the compare-and-set"
    );
    // 49 rows remain: 45 migrated at once + row 8 on the re-read; 2, 4, 6 unchanged.
    assert_eq!((r.migrated, r.unchanged), (46, 3));
    assert!(r.failed.is_empty());
    for (i, v) in app_values.lock().unwrap().iter() {
        assert_eq!(
            store.value(&c, *i).flatten().as_ref(),
            Some(v),
            "app write to row {i} lost"
        );
    }
    let p = plaintexts(&store, &keyring, AadMode::Column);
    assert_eq!(p[&RowId::Int(8)].as_deref(), Some("legacy-8"));
    assert_eq!(p[&RowId::Int(1)].as_deref(), Some("secret-1"));
    assert!(!p.contains_key(&RowId::Int(10)));
    assert!(all_under_primary(&store, &keyring));
}

/// Application threads update random rows (new and legacy format) while a
/// multi-worker migration runs: every row ends with the last value its
/// writer wrote, under the primary key after a catch-up run.
#[test]
fn concurrent_writers_lose_nothing() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    const ROWS: i64 = 3000;
    let store = seed_fernet(&keys, ROWS as usize);
    let c = column();
    // The expected final plaintext of each row, updated under the same lock
    // as the store write so the log order is the store order.
    let expected: Arc<Mutex<BTreeMap<i64, String>>> = Arc::new(Mutex::new(
        (1..=ROWS).map(|i| (i, format!("secret-{i}"))).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let app_writes = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (store, c, expected, stop, app_writes) = (
                store.clone(),
                c.clone(),
                expected.clone(),
                stop.clone(),
                app_writes.clone(),
            );
            let keyring = keyring.clone();
            thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ w;
                let mut n = 0u64;
                // Write until the migration is over, and at least 300 times.
                while n < 300 || !stop.load(Ordering::SeqCst) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = (x % ROWS as u64) as i64 + 1;
                    let text = format!("w{w}-{n}");
                    let value = if n.is_multiple_of(4) {
                        keyring.encrypt_fernet(text.as_bytes()).unwrap()
                    } else {
                        keyring
                            .encrypt(text.as_bytes(), b"plaid_items.access_token")
                            .unwrap()
                    };
                    let mut log = expected.lock().unwrap();
                    assert!(store.update(&c, &RowId::Int(id), Some(value)));
                    log.insert(id, text);
                    drop(log);
                    n += 1;
                    app_writes.fetch_add(1, Ordering::Relaxed);
                    if n.is_multiple_of(16) {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let report = run(&store, &keyring, |o| {
        o.batch_size = 25;
        o.workers = 4;
        o.adaptive = false;
    });
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert!(app_writes.load(Ordering::Relaxed) >= 900);
    let r = &report.columns[0];
    assert!(r.failed.is_empty());
    assert_eq!(r.scanned, ROWS as u64);
    // Legacy Fernet writes that landed behind the scan are picked up by a
    // catch-up run (nothing else writes now).
    let catch_up = run(&store, &keyring, |o| o.batch_size = 500);
    assert_eq!(catch_up.columns[0].conflicts, 0);
    assert!(all_under_primary(&store, &keyring));
    let now = plaintexts(&store, &keyring, AadMode::Column);
    let expected = expected.lock().unwrap();
    assert_eq!(now.len(), ROWS as usize);
    for (id, text) in expected.iter() {
        assert_eq!(
            now[&RowId::Int(*id)].as_deref(),
            Some(text.as_str()),
            "row {id}"
        );
    }
}

/// A legacy write behind the scan is swept up before the run ends: the
/// report is true of the table, and the row ends under the primary key with
/// the legacy writer's value. (It used to end "completed" with the row left
/// in Fernet and a census of `fernet: 0`.)
#[test]
fn a_legacy_write_behind_the_scan_is_swept_up() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 40);
    let legacy = keys.keyring();
    store.on_write(move |s, col, rewrites| {
        // While the last batch is written, row 1 (done long ago) is
        // rewritten by a legacy instance.
        if rewrites.first().is_some_and(|r| r.id == RowId::Int(31)) {
            s.update(
                col,
                &RowId::Int(1),
                Some(legacy.encrypt_fernet(b"late").unwrap()),
            );
        }
    });
    let report = run(&store, &keyring, |o| {
        o.batch_size = 10;
        o.adaptive = false;
    });
    let c = &report.columns[0];
    assert_eq!(c.status, Status::Completed);
    assert_eq!(report.verdict(), Verdict::Complete);
    assert_eq!(c.total, 40);
    assert_eq!(c.migrated, 41, "40 rows, and row 1 once more");
    assert!(c.sweeps >= 1);
    assert_eq!((c.by_format.fernet_total(), c.pending), (0, 0));
    assert_eq!(
        c.by_format.aes_key(&keyring.primary_key_id().to_string()),
        40
    );
    assert!(all_under_primary(&store, &keyring));
    assert_eq!(
        plaintexts(&store, &keyring, AadMode::Column)[&RowId::Int(1)].as_deref(),
        Some("late")
    );
}

/// A legacy writer that never stops: the sweeps give up after
/// `max_sweeps`, and the report says `incomplete` with the rows left, never
/// `completed`.
#[test]
fn a_legacy_writer_that_never_stops_leaves_the_run_incomplete() {
    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = seed_fernet(&keys, 40);
    let legacy = keys.keyring();
    store.on_write(move |s, col, rewrites| {
        // Every write is followed by a legacy write of the row before it.
        if let Some(first) = rewrites.first() {
            if let RowId::Int(i) = first.id {
                let victim = RowId::Int(if i > 1 { i - 1 } else { 40 });
                s.update(col, &victim, Some(legacy.encrypt_fernet(b"again").unwrap()));
            }
        }
    });
    let report = run(&store, &keyring, |o| {
        o.batch_size = 10;
        o.adaptive = false;
        o.max_sweeps = 3;
    });
    let c = &report.columns[0];
    assert_eq!(c.sweeps, 3);
    assert_eq!(c.status, Status::Incomplete);
    assert_eq!(report.verdict(), Verdict::Incomplete);
    assert_eq!(report.verdict().exit_code(), 3);
    let fernet_now = store
        .rows(&column())
        .iter()
        .filter(|r| r.value.text().is_some_and(|v| v.starts_with("gAAAAA")))
        .count() as u64;
    assert!(fernet_now > 0);
    assert_eq!(
        c.by_format.fernet_total(),
        fernet_now,
        "the census is the table's"
    );
    assert_eq!(c.pending, fernet_now);
}
