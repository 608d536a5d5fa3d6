//! The metrics the engine records, through a global debugging recorder
//! (workers record on their own threads). Only this test uses the column
//! `metrics_items.secret`, so other tests' metrics are filtered out.

use manna_migrate::metric_names as m;
use manna_migrate::testing::strategies::TestKeys;
use manna_migrate::testing::strategies::ValueKind;
use manna_migrate::{AadMode, ColumnRef, RowId};
use manna_store::testing::MemoryStore;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use crate::support::{fresh_locks, migrator};

#[test]
fn a_run_records_rows_conflicts_failures_and_batch_times() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("only this test installs a recorder");

    let keys = TestKeys::generate();
    let keyring = keys.keyring();
    let store = MemoryStore::new();
    let c = ColumnRef::parse("metrics_items.secret", "id").unwrap();
    let mut rows: Vec<_> = (0..100)
        .map(|i| (ValueKind::Fernet, format!("s{i}")))
        .collect();
    rows.push((ValueKind::Garbage, "x".into()));
    rows.push((ValueKind::UnknownKey, "y".into()));
    keys.seed(&store, &c, AadMode::Column, &rows);
    let app = keys.keyring();
    store.on_write(move |s, col, rw| {
        if rw.first().is_some_and(|r| r.id == RowId::Int(1)) {
            s.update(
                col,
                &RowId::Int(2),
                Some(app.encrypt(b"app", b"metrics_items.secret").unwrap()),
            );
        }
    });
    let report = migrator(&store, &keyring, fresh_locks(), |o| {
        o.batch_size = 25;
        o.adaptive = false;
        o.workers = 2;
    })
    .run(std::slice::from_ref(&c))
    .unwrap();
    assert_eq!(report.columns[0].conflicts, 1);

    let mut counters = std::collections::BTreeMap::<String, u64>::new();
    let mut batch_samples = 0;
    let mut gauges = std::collections::BTreeSet::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if !key
            .labels()
            .any(|l| l.key() == "column" && l.value() == "metrics_items.secret")
        {
            continue;
        }
        let name = key.name().to_owned();
        match value {
            DebugValue::Counter(n) => *counters.entry(name).or_default() += n,
            DebugValue::Histogram(v) if name == m::BATCH_SECONDS => batch_samples += v.len(),
            DebugValue::Gauge(_) => {
                gauges.insert(name);
            }
            _ => {}
        }
    }
    // The main scan, then one sweep over the two rows still not in the
    // target format (they fail again, and the sweep stops: no progress).
    assert_eq!(report.columns[0].sweeps, 1);
    assert_eq!(counters.get(m::ROWS_SCANNED), Some(&(102 + 2)));
    assert_eq!(counters.get(m::ROWS_MIGRATED), Some(&99));
    assert_eq!(counters.get(m::ROWS_UNCHANGED), Some(&1));
    assert_eq!(counters.get(m::CONFLICTS), Some(&1));
    assert_eq!(counters.get(m::ROWS_FAILED), Some(&(2 + 2)));
    assert_eq!(batch_samples, 5 + 1);
    for g in [m::BATCH_SIZE, m::ROWS_PER_SECOND, m::ROWS_REMAINING] {
        assert!(gauges.contains(g), "gauge {g} missing");
    }
}
