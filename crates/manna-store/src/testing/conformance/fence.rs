//! Fences: a write with a stale fencing token is refused and writes
//! nothing.

use super::{int_rows, key, spec, Harness};
use crate::port::{
    Checkpoint, ColumnRef, ColumnStore, Counts, Fence, IdKind, Rewrite, RowId, StoreError,
    StoreErrorKind, WriteOptions,
};

/// Token `token` of `name`, held by the lease `holder-TOKEN` (every lease
/// its own token, as backends grant them).
fn fence(name: &str, token: u64) -> Fence {
    held_fence(name, token, &format!("holder-{token}"))
}

fn held_fence(name: &str, token: u64, holder: &str) -> Fence {
    Fence {
        name: name.to_owned(),
        fencing: manna_lock::Fencing::new(manna_lock::FencingToken::from(token), holder),
    }
}

/// `write_batch` with default options, fenced by token `token` of `name`.
fn write_fenced(
    st: &dyn ColumnStore,
    c: &ColumnRef,
    rewrites: &[Rewrite],
    checkpoint: Option<&Checkpoint>,
    name: &str,
    token: u64,
) -> Result<Vec<RowId>, StoreError> {
    st.write_batch(
        c,
        rewrites,
        WriteOptions::default(),
        checkpoint,
        Some(&fence(name, token)),
    )
}

/// A write carrying a fencing token lower than one seen under the same name
/// is refused as `Fenced` and writes nothing, checkpoint included; equal and
/// higher tokens pass; fences of other names are independent.
pub fn fence_refuses_lower_tokens(h: &mut dyn Harness) {
    const C: &str = "fence_refuses_lower_tokens";
    let s = spec("manna_conf_fence", IdKind::Int, false, int_rows(1..=4));
    let c = h.create_table(&s);
    let name = format!("manna-conf-fence:{c}");
    let k = key(&c, "shard 0/1", "fence");
    let st = h.store();
    st.clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    let cp = |last: i64, migrated: u64| Checkpoint {
        key: k.clone(),
        last_id: Some(RowId::Int(last)),
        counts: Counts {
            scanned: migrated,
            migrated,
            ..Counts::default()
        },
    };
    let rw = |i: i64, old: &str, new: &str| Rewrite {
        id: RowId::Int(i),
        old: old.to_owned(),
        new: new.to_owned(),
    };
    let w = write_fenced(st, &c, &[rw(1, "v-1", "five-1")], Some(&cp(1, 1)), &name, 5)
        .unwrap_or_else(|e| panic!("{C}: token 5: {e}"));
    ensure!(C, w == vec![RowId::Int(1)], "token 5 wrote {w:?}");
    let w = write_fenced(
        st,
        &c,
        &[rw(2, "v-2", "seven-2")],
        Some(&cp(2, 2)),
        &name,
        7,
    )
    .unwrap_or_else(|e| panic!("{C}: token 7: {e}"));
    ensure!(C, w == vec![RowId::Int(2)], "token 7 wrote {w:?}");
    for rewrites in [vec![rw(3, "v-3", "five-3")], Vec::new()] {
        match write_fenced(st, &c, &rewrites, Some(&cp(3, 9)), &name, 5) {
            Err(e) => ensure!(
                C,
                e.kind() == StoreErrorKind::Fenced,
                "stale token: kind {:?} ({e})",
                e.kind()
            ),
            Ok(w) => panic!("conformance check {C} failed: a stale token wrote {w:?}"),
        }
    }
    let row3 = st
        .read(&c, &[RowId::Int(3)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        row3.first().and_then(|r| r.value.text()) == Some("v-3"),
        "a fenced batch wrote its row"
    );
    let saved = st
        .load_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        saved == Some(cp(2, 2)),
        "a fenced batch saved its checkpoint: {saved:?}"
    );
    // The same holder writes again; another fence name is independent.
    let w = write_fenced(
        st,
        &c,
        &[rw(3, "v-3", "seven-3")],
        Some(&cp(3, 3)),
        &name,
        7,
    )
    .unwrap_or_else(|e| panic!("{C}: equal token refused: {e}"));
    ensure!(C, w == vec![RowId::Int(3)], "equal token wrote {w:?}");
    let w = write_fenced(
        st,
        &c,
        &[rw(4, "v-4", "other-4")],
        None,
        &format!("{name}:other"),
        1,
    )
    .unwrap_or_else(|e| panic!("{C}: another fence name: {e}"));
    ensure!(C, w == vec![RowId::Int(4)], "another fence wrote {w:?}");
    // Unfenced writes are not checked.
    st.write_batch(&c, &[], WriteOptions::default(), None, None)
        .unwrap_or_else(|e| panic!("{C}: unfenced: {e}"));
    // A newer holder fences the old one off for good.
    write_fenced(st, &c, &[], None, &name, 8).unwrap_or_else(|e| panic!("{C}: token 8: {e}"));
    match write_fenced(st, &c, &[], None, &name, 7) {
        Err(e) => ensure!(C, e.kind() == StoreErrorKind::Fenced, "kind {:?}", e.kind()),
        Ok(_) => panic!("conformance check {C} failed: token 7 passed after token 8"),
    }
    st.clear_checkpoint(&k)
        .unwrap_or_else(|e| panic!("{C}: {e}"));
}

/// Two leases given one token (a lock backend's counter went back: Redis
/// restarted from an older snapshot) are told apart by their holder ids:
/// the fence takes the first holder's token, passes it again for that
/// holder, and refuses it from the other — in `write_batch` (writing
/// nothing) and in `raise_fence`.
pub fn fence_refuses_an_equal_token_from_another_holder(h: &mut dyn Harness) {
    const C: &str = "fence_refuses_an_equal_token_from_another_holder";
    let s = spec(
        "manna_conf_fence_holder",
        IdKind::Int,
        false,
        int_rows(1..=2),
    );
    let c = h.create_table(&s);
    let name = format!("manna-conf-fence-holder:{c}");
    let st = h.store();
    let rw = |i: i64, new: &str| Rewrite {
        id: RowId::Int(i),
        old: format!("v-{i}"),
        new: new.to_owned(),
    };
    let write = |rewrites: &[Rewrite], holder: &str| {
        st.write_batch(
            &c,
            rewrites,
            WriteOptions::default(),
            None,
            Some(&held_fence(&name, 9, holder)),
        )
    };
    let w = write(&[rw(1, "first-1")], "first").unwrap_or_else(|e| panic!("{C}: first: {e}"));
    ensure!(C, w == vec![RowId::Int(1)], "the first holder wrote {w:?}");
    match write(&[rw(2, "second-2")], "second") {
        Err(e) => ensure!(
            C,
            e.kind() == StoreErrorKind::Fenced,
            "equal token, other holder: kind {:?} ({e})",
            e.kind()
        ),
        Ok(w) => panic!("conformance check {C} failed: another holder's equal token wrote {w:?}"),
    }
    let row2 = st
        .read(&c, &[RowId::Int(2)])
        .unwrap_or_else(|e| panic!("{C}: {e}"));
    ensure!(
        C,
        row2.first().and_then(|r| r.value.text()) == Some("v-2"),
        "a fenced batch wrote its row"
    );
    match st.raise_fence(&c, &held_fence(&name, 9, "second")) {
        Err(e) => ensure!(
            C,
            e.kind() == StoreErrorKind::Fenced,
            "raise_fence: kind {:?}",
            e.kind()
        ),
        Ok(()) => {
            panic!("conformance check {C} failed: raise_fence took another holder's equal token")
        }
    }
    let w = write(&[rw(2, "first-2")], "first")
        .unwrap_or_else(|e| panic!("{C}: the first holder again: {e}"));
    ensure!(C, w == vec![RowId::Int(2)], "the first holder wrote {w:?}");
}
