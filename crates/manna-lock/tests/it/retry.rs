use std::cell::Cell;
use std::time::Duration;

use manna_lock::testing::strategies::conflict_error;
use manna_lock::{ConflictError, ConflictKind, IsConflict, LockError, RetryPolicy};
use proptest::prelude::*;

#[test]
fn conflict_error_names_entity_and_id_only() {
    let e = ConflictError::row_gone("plaid_items", "abc");
    assert_eq!(e.entity(), "plaid_items");
    assert_eq!(e.id(), "abc");
    assert_eq!(e.kind(), ConflictKind::RowGone);
    assert_eq!(
        e.to_string(),
        "optimistic lock conflict on plaid_items id abc: the row no longer exists"
    );
}

#[test]
fn lock_errors_are_not_conflicts() {
    let e = LockError::NotHolder { name: "x".into() };
    assert!(!e.is_conflict());
    let policy = RetryPolicy::new().base_delay(Duration::from_micros(10));
    let n = Cell::new(0);
    let r: Result<(), LockError> = policy.retry(|| {
        n.set(n.get() + 1);
        Err(e.clone())
    });
    assert!(r.is_err());
    assert_eq!(n.get(), 1);
}

#[test]
fn a_boxed_conflict_is_still_a_conflict() {
    let e: Box<ConflictError> = Box::new(ConflictError::row_changed("t", "1"));
    assert!(e.is_conflict());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// For any number of conflicts before success, the operation succeeds iff
    /// the conflicts fit in the retry budget, and runs exactly as often as
    /// needed.
    #[test]
    fn retries_exactly_as_configured(conflicts in 0usize..6, max_retries in 0usize..6, e in conflict_error()) {
        let policy = RetryPolicy::new()
            .max_retries(max_retries)
            .base_delay(Duration::from_micros(1))
            .max_delay(Duration::from_micros(10));
        let runs = Cell::new(0usize);
        let r = policy.retry(|| {
            runs.set(runs.get() + 1);
            if runs.get() <= conflicts { Err(e.clone()) } else { Ok(runs.get()) }
        });
        if conflicts <= max_retries {
            prop_assert_eq!(r, Ok(conflicts + 1));
        } else {
            prop_assert_eq!(r, Err(e));
            prop_assert_eq!(runs.get(), max_retries + 1);
        }
    }
}
