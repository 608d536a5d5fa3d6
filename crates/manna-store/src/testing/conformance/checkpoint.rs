//! Checkpoints (saved alone or with a batch, loaded, listed, cleared) and
//! shard layouts (the first saved wins).

use super::{int_rows, key, rewrites_for, spec, Harness};
use crate::port::{
    Checkpoint, CheckpointKey, Counts, IdKind, IdRange, LayoutKey, RowId, WriteOptions,
};

/// Checkpoints: saved with an empty batch, loaded back exactly (integer and
/// text ids, no id, large counts), distinct by column, partition and run,
/// overwritten, cleared.
pub fn checkpoints(h: &mut dyn Harness) {
    const C: &str = "checkpoints";
    let s = spec("manna_conf_ckpt", IdKind::Int, false, int_rows(1..=2));
    let c = h.create_table(&s);
    let keys = [
        key(&c, "shard 0/1", "aes256gcm:00112233"),
        key(&c, "shard 1/2", "aes256gcm:00112233"),
        key(&c, "shard 0/1", "fernet"),
        CheckpointKey {
            column: format!("{c}_other"),
            partition: "shard 0/1".into(),
            run: "fernet".into(),
        },
    ];
    let st = h.store();
    for k in &keys {
        st.clear_checkpoint(k)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            st.load_checkpoint(k)
                .unwrap_or_else(|e| panic!("{C}: {e}"))
                .is_none(),
            "cleared checkpoint still there"
        );
    }
    let counts = Counts {
        scanned: 1 << 40,
        migrated: 7,
        unchanged: 0,
        conflicts: 3,
        failed: 2,
    };
    let cps = [
        Checkpoint {
            key: keys[0].clone(),
            last_id: Some(RowId::Int(-42)),
            counts,
        },
        Checkpoint {
            key: keys[1].clone(),
            last_id: Some(RowId::Text("ab-Z".into())),
            counts: Counts::default(),
        },
        Checkpoint {
            key: keys[2].clone(),
            last_id: None,
            counts,
        },
        Checkpoint {
            key: keys[3].clone(),
            last_id: Some(RowId::Int(i64::MAX)),
            counts,
        },
    ];
    for cp in &cps {
        let w = st
            .write_batch(&c, &[], WriteOptions::default(), Some(cp), None)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(C, w.is_empty(), "checkpoint-only batch wrote rows");
    }
    for cp in &cps {
        let got = st
            .load_checkpoint(&cp.key)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            got.as_ref() == Some(cp),
            "checkpoint {:?} came back as {got:?}",
            cp.key
        );
    }
    let newer = Checkpoint {
        key: keys[0].clone(),
        last_id: Some(RowId::Int(100)),
        counts: Counts {
            scanned: 5,
            ..counts
        },
    };
    st.write_batch(&c, &[], WriteOptions::default(), Some(&newer), None)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let got = st
        .load_checkpoint(&keys[0])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        got.as_ref() == Some(&newer),
        "overwritten checkpoint came back as {got:?}"
    );
    st.clear_checkpoint(&keys[0])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        st.load_checkpoint(&keys[0])
            .unwrap_or_else(|e| panic!("{C}: {e}"))
            .is_none(),
        "clear did not clear"
    );
    let other = st
        .load_checkpoint(&keys[1])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        other.as_ref() == Some(&cps[1]),
        "clear removed another key's checkpoint"
    );
    st.clear_checkpoint(&keys[0])
        .unwrap_or_else(|e| panic!("{C}: clearing a missing checkpoint: {e}"));
    for k in &keys {
        st.clear_checkpoint(k)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
    }
}

/// A checkpoint given with a batch is saved with it.
pub fn checkpoint_commits_with_batch(h: &mut dyn Harness) {
    const C: &str = "checkpoint_commits_with_batch";
    let s = spec("manna_conf_ckpt_batch", IdKind::Int, false, int_rows(1..=5));
    let c = h.create_table(&s);
    let k = key(&c, "shard 0/1", "fernet");
    h.store()
        .clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let scanned = h
        .store()
        .scan(&c, &IdRange::all(), 3)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let cp = Checkpoint {
        key: k.clone(),
        last_id: Some(RowId::Int(3)),
        counts: Counts {
            scanned: 3,
            migrated: 3,
            ..Counts::default()
        },
    };
    let w = h
        .store()
        .write_batch(
            &c,
            &rewrites_for(&scanned),
            WriteOptions::default(),
            Some(&cp),
            None,
        )
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, w.len() == 3, "wrote {w:?}");
    let got = h
        .store()
        .load_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, got.as_ref() == Some(&cp), "checkpoint {got:?}");
    h.store()
        .clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
}

/// `checkpoints(column)` lists every checkpoint of that column, whatever
/// partition or run wrote it, and nothing else.
pub fn checkpoints_listing(h: &mut dyn Harness) {
    const C: &str = "checkpoints_listing";
    let s = spec("manna_conf_ckpt_list", IdKind::Int, false, int_rows(1..=2));
    let c = h.create_table(&s);
    let st = h.store();
    let column = c.to_string();
    let other_column = format!("{c}_other");
    for col in [&column, &other_column] {
        for cp in st.checkpoints(col).unwrap_or_else(|e| panic!("{C}: {e}")) {
            st.clear_checkpoint(&cp.key)
                .unwrap_or_else(|e| panic!("{C}: {e}"));
        }
    }
    let none = st
        .checkpoints(&column)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_empty(), "cleared checkpoints listed: {none:?}");
    let cps = vec![
        Checkpoint {
            key: key(&c, "shard 0/2", "to aes256gcm:00 id id aad column"),
            last_id: Some(RowId::Int(7)),
            counts: Counts {
                scanned: 9,
                ..Counts::default()
            },
        },
        Checkpoint {
            key: key(&c, "shard 1/2", "to aes256gcm:00 id id aad column"),
            last_id: Some(RowId::Text("k".into())),
            counts: Counts::default(),
        },
        Checkpoint {
            key: key(&c, "shard 0/2", "to fernet id id aad column"),
            last_id: None,
            counts: Counts::default(),
        },
    ];
    let foreign = Checkpoint {
        key: CheckpointKey {
            column: other_column.clone(),
            partition: "shard 0/1".into(),
            run: "to fernet".into(),
        },
        last_id: None,
        counts: Counts::default(),
    };
    for cp in cps.iter().chain([&foreign]) {
        st.write_batch(&c, &[], WriteOptions::default(), Some(cp), None)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
    }
    let sorted = |mut v: Vec<Checkpoint>| {
        v.sort_by(|a, b| (&a.key.partition, &a.key.run).cmp(&(&b.key.partition, &b.key.run)));
        v
    };
    let got = sorted(
        st.checkpoints(&column)
            .unwrap_or_else(|e| panic!("{C}: {e}")),
    );
    ensure!(
        C,
        got == sorted(cps.clone()),
        "listed {got:?}, expected {cps:?}"
    );
    for cp in cps.iter().chain([&foreign]) {
        st.clear_checkpoint(&cp.key)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
    }
    let none = st
        .checkpoints(&column)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_empty(), "cleared checkpoints listed: {none:?}");
}

/// `save_layout` keeps the first layout saved for a key and returns it to
/// every later caller; keys differ by column, id column and shard count;
/// integer, text and empty bounds come back exactly.
pub fn layouts_first_wins(h: &mut dyn Harness) {
    const C: &str = "layouts_first_wins";
    // Layouts cannot be deleted through the port: a key of its own per run.
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = format!(
        "{}-{nanos}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let lk = |column: &str, shards: u32| LayoutKey {
        column: format!("{column}.{run}"),
        id_column: "id".to_owned(),
        shards,
    };
    let st = h.store();
    let k = lk("manna_conf_layout.secret", 3);
    let none = st.load_layout(&k).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, none.is_none(), "unsaved layout loaded: {none:?}");
    let first = vec![RowId::Int(-10), RowId::Int(20)];
    let saved = st
        .save_layout(&k, &first)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, saved == first, "first save returned {saved:?}");
    let second = st
        .save_layout(&k, &[RowId::Int(15), RowId::Int(30)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        second == first,
        "second save returned {second:?}, not the first layout"
    );
    let loaded = st.load_layout(&k).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(C, loaded.as_ref() == Some(&first), "loaded {loaded:?}");
    let text = vec![
        RowId::Text("5".into()),
        RowId::Text("a b".into()),
        RowId::Text("ü\"'".into()),
    ];
    let mut other_id = lk("manna_conf_layout.secret", 3);
    other_id.id_column = "handle".into();
    for (key, bounds) in [
        (
            lk("manna_conf_layout.secret", 4),
            vec![RowId::Int(i64::MAX)],
        ),
        (other_id, text),
        (lk("manna_conf_layout_other.secret", 3), Vec::new()),
    ] {
        let saved = st
            .save_layout(&key, &bounds)
            .unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(C, saved == bounds, "{key:?}: saved {saved:?}");
        let loaded = st.load_layout(&key).unwrap_or_else(|e| panic!("{C}: {e}"));
        ensure!(
            C,
            loaded.as_ref() == Some(&bounds),
            "{key:?}: loaded {loaded:?}"
        );
    }
    let still = st.load_layout(&k).unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        still.as_ref() == Some(&first),
        "other keys changed {still:?}"
    );
}
