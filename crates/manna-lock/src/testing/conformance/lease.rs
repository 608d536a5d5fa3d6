//! The port itself: exclusion, release, fencing, expiry, extension and
//! invalid requests.

use std::time::Duration;

use super::{acquired, unique_name, Factory};
use crate::{Attempt, FencingToken, Lease, LockError};

/// One holder at a time; release frees the lock for another client, and a
/// second release is a no-op.
pub async fn exclusive_and_release(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("exclusive");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    match b.try_acquire(&name, ttl).await {
        Ok(Attempt::Held { expires_in, .. }) => {
            if let Some(left) = expires_in {
                assert!(left <= ttl, "expires_in {left:?} exceeds the TTL {ttl:?}");
            }
        }
        other => panic!("mutual exclusion broken: second client got {other:?}"),
    }
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "holder lost a fresh lease"
    );
    assert!(
        a.release(&lease).await.expect("release"),
        "release by the holder must report true"
    );
    assert!(
        !a.is_held(&lease).await.expect("is_held"),
        "lease still held after release"
    );
    assert!(
        !a.release(&lease).await.expect("second release"),
        "a second release must report false"
    );
    let next = acquired(b.as_ref(), &name, ttl).await;
    assert!(next.token() > lease.token(), "token did not increase");
    assert!(b.release(&next).await.expect("release"));
}

/// Release and extend with a lease that is not the current one are refused
/// and leave the holder's lease intact.
pub async fn release_by_non_holder_refused(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("non-holder");
    let ttl = Duration::from_secs(10);
    let lease = acquired(a.as_ref(), &name, ttl).await;
    let forged = Lease::new(&name, "someone-else", lease.token(), ttl);
    assert!(
        !b.release(&forged).await.expect("release"),
        "release by a non-holder must report false"
    );
    match b.extend(&forged, ttl).await {
        Err(LockError::NotHolder { name: n }) => assert_eq!(n, name),
        other => panic!("extend by a non-holder must fail with NotHolder, got {other:?}"),
    }
    assert!(
        !b.is_held(&forged).await.expect("is_held"),
        "forged lease reported held"
    );
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "non-holder release removed the holder's lease"
    );
    assert!(matches!(
        b.try_acquire(&name, ttl).await,
        Ok(Attempt::Held { .. })
    ));
    assert!(a.release(&lease).await.expect("release"));
}

/// Tokens strictly increase per name across clients; names are independent.
pub async fn fencing_monotonic(make: Factory<'_>) {
    let clients = [make(), make(), make()];
    let name = unique_name("fencing");
    let other = unique_name("fencing-other");
    let ttl = Duration::from_secs(10);
    let mut last: Option<FencingToken> = None;
    for i in 0..30 {
        let c = &clients[i % clients.len()];
        let lease = acquired(c.as_ref(), &name, ttl).await;
        if let Some(prev) = last {
            assert!(
                lease.token() > prev,
                "fencing token went from {prev} to {}",
                lease.token()
            );
        }
        last = Some(lease.token());
        // Another name's activity must not matter.
        let o = acquired(c.as_ref(), &other, ttl).await;
        assert!(c.release(&o).await.expect("release"));
        assert!(c.release(&lease).await.expect("release"));
    }
}

/// A lease that is not extended expires: the lock can be taken again with a
/// higher token, and the old lease can neither extend nor release.
pub async fn expiry(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("expiry");
    let old = acquired(a.as_ref(), &name, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a.is_held(&old).await.expect("is_held"),
        "lease still held after its TTL"
    );
    assert!(
        matches!(
            a.extend(&old, Duration::from_secs(5)).await,
            Err(LockError::NotHolder { .. })
        ),
        "an expired lease must not be extendable"
    );
    let new = acquired(b.as_ref(), &name, Duration::from_secs(10)).await;
    assert!(
        new.token() > old.token(),
        "token after expiry did not increase"
    );
    assert!(
        !a.release(&old).await.expect("release"),
        "release of an expired lease must report false"
    );
    assert!(
        b.is_held(&new).await.expect("is_held"),
        "a stale release removed the new holder's lease"
    );
    assert!(b.release(&new).await.expect("release"));
}

/// Extending a lease keeps it past its original TTL.
pub async fn extend(make: Factory<'_>) {
    let (a, b) = (make(), make());
    let name = unique_name("extend");
    // Long enough for the extend to come before it ends on a slow machine.
    let original = Duration::from_secs(3);
    let lease = acquired(a.as_ref(), &name, original).await;
    // The lease was granted before this: `original` from now is past its
    // original end.
    let granted_by = tokio::time::Instant::now();
    a.extend(&lease, Duration::from_secs(30))
        .await
        .expect("holder extends");
    tokio::time::sleep_until(granted_by + original + Duration::from_millis(500)).await;
    assert!(
        a.is_held(&lease).await.expect("is_held"),
        "extended lease expired at its original TTL"
    );
    assert!(matches!(
        b.try_acquire(&name, Duration::from_secs(1)).await,
        Ok(Attempt::Held { .. })
    ));
    assert!(a.release(&lease).await.expect("release"));
}

/// Empty names, sub-millisecond TTLs and TTLs over [`MAX_TTL`](crate::MAX_TTL)
/// are rejected as invalid.
pub async fn invalid_requests(make: Factory<'_>) {
    let a = make();
    assert!(matches!(
        a.try_acquire("", Duration::from_secs(1)).await,
        Err(LockError::Invalid { .. })
    ));
    assert!(matches!(
        a.try_acquire(&unique_name("invalid"), Duration::ZERO).await,
        Err(LockError::Invalid { .. })
    ));
    for ttl in [crate::MAX_TTL + Duration::from_millis(1), Duration::MAX] {
        assert!(
            matches!(
                a.try_acquire(&unique_name("invalid"), ttl).await,
                Err(LockError::Invalid { .. })
            ),
            "a TTL of {ttl:?} (over MAX_TTL) must be an invalid request"
        );
    }
}
