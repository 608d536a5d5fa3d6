//! Model-based property tests of the write invariants (SQLite in memory, so
//! each case gets a fresh database cheaply; the same SQL runs on PostgreSQL
//! in the other tests).

use std::collections::HashMap;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use manna_lock::FencingToken;
use manna_store_diesel::{CasOutcome, Changes, Error, Fence, IdempotentCas, VersionedTable};
use proptest::prelude::*;

fn db() -> SqliteConnection {
    let mut c = SqliteConnection::establish(":memory:").unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BIGINT, version INTEGER NOT NULL DEFAULT 1); \
         INSERT INTO t (id, v) VALUES (1, 0), (2, 0)",
    )
    .unwrap();
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The fence accepts a token iff it is higher than the one recorded,
    /// or the same one of the same holder; the recorded token never
    /// decreases, and a refusal says which rule refused it.
    #[test]
    fn fencing_is_monotonic(writes in proptest::collection::vec((0u64..40, 0u8..2), 1..40)) {
        let mut c = db();
        let fence = Fence::new();
        fence.create_schema(&mut c).unwrap();
        let mut recorded: Option<(u64, u8)> = None;
        for (t, h) in writes {
            let fencing = manna_lock::Fencing::new(FencingToken::from(t), format!("holder-{h}"));
            let r: Result<(), Error> = fence.write(&mut c, "r", &fencing, |_| Ok(()));
            let should_pass = recorded.is_none_or(|(rt, rh)| t > rt || (t == rt && h == rh));
            prop_assert_eq!(r.is_ok(), should_pass, "token {} of {} after {:?}", t, h, recorded);
            match recorded {
                _ if should_pass => recorded = Some((t, h)),
                Some((rt, _)) if t == rt => {
                    let twin = matches!(r, Err(Error::TokenOfAnotherHolder { token, .. }) if token == t);
                    prop_assert!(twin, "{:?}", r);
                }
                Some((rt, _)) => {
                    let stale = matches!(r, Err(Error::StaleToken { token, highest, .. }) if token == t && highest == rt);
                    prop_assert!(stale, "{:?}", r);
                }
                None => unreachable!("the first write passes"),
            }
            prop_assert_eq!(fence.highest(&mut c, "r").unwrap(), recorded.map(|(t, _)| t));
        }
    }

    /// Versioned updates succeed exactly when the expected version is the
    /// current one; the version only ever goes up by one.
    #[test]
    fn versions_are_monotonic(ops in proptest::collection::vec((1i64..=2, 0i64..6, any::<i64>()), 1..40)) {
        let mut c = db();
        let t = VersionedTable::new("t").unwrap();
        let mut model: HashMap<i64, i64> = HashMap::from([(1, 1), (2, 1)]);
        for (id, guess, value) in ops {
            let current = model[&id];
            // Half the time use the right version, otherwise a guess.
            let expected = if value % 2 == 0 { current } else { guess };
            let r = t.update(&mut c, id, expected, &Changes::new().set("v", value).unwrap());
            if expected == current {
                prop_assert_eq!(r.unwrap(), current + 1);
                model.insert(id, current + 1);
            } else {
                prop_assert!(matches!(r, Err(Error::Conflict(_))));
            }
            prop_assert_eq!(t.version(&mut c, id).unwrap(), Some(model[&id]));
        }
    }

    /// Each operation id applies at most once, whatever the retries.
    #[test]
    fn operations_apply_at_most_once(ops in proptest::collection::vec((0u8..5, any::<bool>()), 1..30)) {
        let mut c = db();
        let cas = IdempotentCas::new(VersionedTable::new("t").unwrap());
        cas.create_schema(&mut c).unwrap();
        let mut version = 1;
        let mut applied: HashMap<u8, i64> = HashMap::new();
        for (op, fresh) in ops {
            let expected = if fresh { version } else { version - 1 };
            let out = cas
                .apply(&mut c, &format!("op-{op}"), 1, expected, &Changes::new().set("v", i64::from(op)).unwrap())
                .unwrap();
            match applied.get(&op) {
                Some(v) => prop_assert_eq!(out, CasOutcome::AlreadyApplied { version: Some(*v) }),
                None if fresh => {
                    version += 1;
                    prop_assert_eq!(out, CasOutcome::Applied { version });
                    applied.insert(op, version);
                }
                None => prop_assert!(matches!(out, CasOutcome::Conflict(_))),
            }
        }
        prop_assert_eq!(VersionedTable::new("t").unwrap().version(&mut c, 1).unwrap(), Some(version));
    }
}
