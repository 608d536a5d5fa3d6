//! proptest strategies for lock names, TTLs, tokens, conflicts and
//! interleavings of lock operations by several clients.

use std::time::Duration;

use proptest::prelude::*;

use crate::{ConflictError, ConflictKind, FencingToken};

/// Lock names: short, non-empty, `[a-z0-9_:-]`.
pub fn lock_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_:-]{0,30}"
}

/// TTLs from 1 ms to 60 s.
pub fn ttl() -> impl Strategy<Value = Duration> {
    (1u64..=60_000).prop_map(Duration::from_millis)
}

/// Any fencing token.
pub fn fencing_token() -> impl Strategy<Value = FencingToken> {
    any::<u64>().prop_map(FencingToken::new)
}

/// Conflict errors on arbitrary entities and ids.
pub fn conflict_error() -> impl Strategy<Value = ConflictError> {
    (
        "[a-z_]{1,20}",
        "[0-9a-f-]{1,36}",
        prop_oneof![Just(ConflictKind::RowChanged), Just(ConflictKind::RowGone)],
    )
        .prop_map(|(entity, id, kind)| ConflictError::new(entity, id, kind))
}

/// One step of an interleaving: client `client` acts on the shared lock, or
/// time moves on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockOp {
    /// The client tries to acquire with this TTL.
    Acquire {
        /// Which client.
        client: usize,
        /// Lease TTL.
        ttl: Duration,
    },
    /// The client releases the lease it last obtained (if any).
    Release {
        /// Which client.
        client: usize,
    },
    /// The client extends the lease it last obtained (if any).
    Extend {
        /// Which client.
        client: usize,
        /// New TTL.
        ttl: Duration,
    },
    /// Time passes.
    Advance(Duration),
}

/// Interleavings of up to `len` operations by `clients` clients on one lock,
/// with TTLs and pauses of 1–100 ms so that leases expire mid-sequence.
pub fn interleaving(clients: usize, len: usize) -> impl Strategy<Value = Vec<LockOp>> {
    let clients = clients.max(1);
    let ms = || (1u64..=100).prop_map(Duration::from_millis);
    let op = prop_oneof![
        3 => (0..clients, ms()).prop_map(|(client, ttl)| LockOp::Acquire { client, ttl }),
        2 => (0..clients).prop_map(|client| LockOp::Release { client }),
        2 => (0..clients, ms()).prop_map(|(client, ttl)| LockOp::Extend { client, ttl }),
        2 => ms().prop_map(LockOp::Advance),
    ];
    proptest::collection::vec(op, 1..=len.max(1))
}
