//! Property test: any interleaving of acquire/release/extend by several
//! clients, with time passing, behaves like the obvious model.

use std::time::Duration;

use manna_lock::testing::strategies::{interleaving, LockOp};
use manna_lock::{Attempt, FencingToken, Lease, LockBackend, LockError, MemoryBackend};
use proptest::prelude::*;
use tokio::time::Instant;

const CLIENTS: usize = 3;

async fn check(ops: Vec<LockOp>) {
    let backend = MemoryBackend::new();
    let mut leases: Vec<Option<Lease>> = vec![None; CLIENTS];
    // Model: the current lease and when it expires.
    let mut current: Option<(Lease, Instant)> = None;
    let mut last_token = FencingToken::new(0);
    for op in ops {
        let now = Instant::now();
        if current.as_ref().is_some_and(|(_, exp)| *exp <= now) {
            current = None;
        }
        match op {
            LockOp::Acquire { client, ttl } => match backend.try_acquire("l", ttl).await.unwrap() {
                Attempt::Acquired(lease) => {
                    assert!(current.is_none(), "granted while held");
                    assert!(lease.token() > last_token, "token not increasing");
                    last_token = lease.token();
                    current = Some((lease.clone(), now + ttl));
                    leases[client] = Some(lease);
                }
                Attempt::Held { expires_in, holder } => {
                    let (_, exp) = current.as_ref().expect("refused while free");
                    assert_eq!(expires_in, Some(*exp - now));
                    assert!(holder.is_some(), "the in-memory backend names its holders");
                }
                other => panic!("{other:?}"),
            },
            LockOp::Release { client } => {
                if let Some(lease) = &leases[client] {
                    let expect = current.as_ref().is_some_and(|(c, _)| c == lease);
                    assert_eq!(backend.release(lease).await.unwrap(), expect);
                    if expect {
                        current = None;
                    }
                }
            }
            LockOp::Extend { client, ttl } => {
                if let Some(lease) = &leases[client] {
                    let expect = current.as_ref().is_some_and(|(c, _)| c == lease);
                    match backend.extend(lease, ttl).await {
                        Ok(()) => {
                            assert!(expect, "non-holder extended");
                            current = Some((lease.clone(), now + ttl));
                        }
                        Err(LockError::NotHolder { .. }) => assert!(!expect, "holder refused"),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            LockOp::Advance(d) => tokio::time::advance(d).await,
        }
        for lease in leases.iter().flatten() {
            let expect = current
                .as_ref()
                .is_some_and(|(c, exp)| c == lease && *exp > Instant::now());
            assert_eq!(backend.is_held(lease).await.unwrap(), expect);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn memory_backend_matches_the_model(ops in interleaving(CLIENTS, 60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(check(ops));
    }

    #[test]
    fn the_same_name_never_reuses_a_token(n in 1usize..50, ttl in manna_lock::testing::strategies::ttl()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let b = MemoryBackend::new();
            let mut last = FencingToken::new(0);
            for _ in 0..n {
                let Attempt::Acquired(l) = b.try_acquire("t", ttl).await.unwrap() else { panic!("held") };
                assert!(l.token() > last);
                last = l.token();
                assert!(b.release(&l).await.unwrap());
            }
            let _ = Duration::ZERO;
        });
    }
}
