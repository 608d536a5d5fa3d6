//! The acquire script calls: owner values, the three acquire modes, and the
//! call task that cleans up after a caller that gave up.

use std::sync::Arc;
use std::time::Duration;

use manna_lock::{SessionId, WaitTicket, MAX_WAIT_CHAIN};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, ScriptInvocation};
use tokio::sync::oneshot;

use crate::scripts::Scripts;

/// Separates the random part of an owner value from the holder description.
const HOLDER_SEPARATOR: char = ';';

/// The owner value stored in the lock key: 32 hex digits of randomness,
/// `@` and the session id for a session's lease
/// ([`manna_lock::owner_value`]), then `;` and the holder description
/// (`…;host db-7 pid 4242 since …`). Release and extend compare the whole
/// value, so the description and the session cost no extra key and no extra
/// round trip.
pub(super) fn owner_value(random: &str, session: Option<&SessionId>, holder: &str) -> String {
    let owner = manna_lock::owner_value(random, session);
    format!("{owner}{HOLDER_SEPARATOR}{holder}")
}

/// The prefix of the waiter channels (see [`RedisBackend::waiter_channel`](super::RedisBackend::waiter_channel));
/// the release and cancel scripts append the backend id of the waiter they
/// hand the lock to.
pub(super) fn waiter_prefix(namespace: &str) -> String {
    format!("{namespace}waiter:")
}

/// The waiter channel of the backend `id` (see
/// [`RedisBackend::waiter_channel`](super::RedisBackend::waiter_channel)).
pub(super) fn waiter_channel(namespace: &str, id: &str) -> String {
    format!("{}{id}", waiter_prefix(namespace))
}

/// The random part of a new owner value (also a backend's id): 32 hex
/// digits. A queued waiter
/// uses its [`WaitTicket`] instead, the same for its whole wait.
pub(super) fn random_part() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Which acquire script an attempt runs.
#[derive(Clone, Copy)]
pub(super) enum Mode<'a> {
    /// [`LockBackend::try_acquire`](manna_lock::LockBackend::try_acquire).
    Plain,
    /// [`LockBackend::try_acquire_in_session`](manna_lock::LockBackend::try_acquire_in_session): the session and the TTL of
    /// its wait-for edge.
    Session { id: &'a SessionId, edge: Duration },
    /// [`LockBackend::try_acquire_queued`](manna_lock::LockBackend::try_acquire_queued): the waiter's ticket and what is
    /// left of its wait.
    Queued {
        ticket: &'a WaitTicket,
        wait: Duration,
    },
}

/// The holder description in an owner value (`None` for a bare random value,
/// as older clients store).
pub(super) fn holder_of(owner: &str) -> Option<&str> {
    owner
        .split_once(HOLDER_SEPARATOR)
        .map(|(_, holder)| holder)
        .filter(|h| !h.is_empty())
}

/// The answer of the acquire scripts: `(1 acquired / 0 held / 2 deadlock,
/// token or PTTL, holder's owner value, cycle)`.
pub(super) type AcquireReply = (i64, i64, String, Vec<String>);

/// What the session-aware acquire script needs besides the lock.
pub(super) struct SessionArgs {
    pub(super) id: String,
    pub(super) wait_key: String,
    pub(super) edge_ms: u64,
    pub(super) namespace: String,
}

/// Which script an [`AcquireCall`] runs, with its extra arguments.
pub(super) enum CallKind {
    Plain,
    Session(SessionArgs),
    Queued { ticket: String, wait_ms: u64 },
}

/// The keys and channels of one lock, as the scripts take them.
pub(super) struct LockKeys {
    pub(super) name: String,
    pub(super) lock: String,
    pub(super) fence: String,
    pub(super) queue: String,
    pub(super) waiters: String,
    pub(super) channel: String,
    pub(super) waiter_prefix: String,
}

impl LockKeys {
    /// A call of a script that may hand the lock over (release, cancel:
    /// the same keys and arguments but the first), acting for `who` (the
    /// owner value, or the wait ticket).
    pub(super) fn hand_over<'a>(&self, script: &'a Script, who: &str) -> ScriptInvocation<'a> {
        let mut call = script.key(&self.lock);
        call.key(&self.fence)
            .key(&self.queue)
            .key(&self.waiters)
            .arg(who)
            .arg(&self.channel)
            .arg(&self.name)
            .arg(&self.waiter_prefix);
        call
    }
}

/// One acquire script call, owning everything it needs to run in a task of
/// its own (and to undo what it did when nobody is waiting for it).
pub(super) struct AcquireCall {
    pub(super) conn: ConnectionManager,
    pub(super) scripts: Arc<Scripts>,
    pub(super) keys: LockKeys,
    pub(super) backend_id: String,
    pub(super) owner: String,
    pub(super) ttl_ms: u64,
    pub(super) kind: CallKind,
}

impl AcquireCall {
    /// Runs the script and hands the answer to `reply`, then cleans up what
    /// nobody will: no phantom leases.
    ///
    /// - Plain and session attempts (a fresh owner value each): if the lease
    ///   was acquired but nobody takes the answer (the caller gave up), or
    ///   the answer was lost (a response timeout: Redis may still run the
    ///   script), releases this call's owner value, best effort. Always
    ///   safe: nobody else has that owner value.
    /// - Queued attempts (one ticket for the whole wait): if nobody takes the
    ///   answer, cancels the ticket's wait (leaving the queue, releasing a
    ///   lock acquired or handed to it). A lost answer with the caller still
    ///   there is left to the caller: its next attempt sees the ticket's
    ///   state, and its give-up cancels. (Cancelling here could release a
    ///   lock that next attempt has just confirmed.)
    pub(super) async fn run(mut self, reply: oneshot::Sender<Result<AcquireReply, RedisError>>) {
        let answer: Result<AcquireReply, RedisError> = match &self.kind {
            CallKind::Plain => self
                .scripts
                .acquire
                .key(&self.keys.lock)
                .key(&self.keys.fence)
                .arg(&self.owner)
                .arg(self.ttl_ms)
                .invoke_async(&mut self.conn)
                .await
                .map(|(acquired, value, owner): (i64, i64, String)| {
                    (acquired, value, owner, Vec::new())
                }),
            CallKind::Session(session) => {
                self.scripts
                    .acquire_in_session
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .key(&session.wait_key)
                    .arg(&self.owner)
                    .arg(self.ttl_ms)
                    .arg(&session.id)
                    .arg(&self.keys.name)
                    .arg(session.edge_ms)
                    .arg(&session.namespace)
                    .arg(MAX_WAIT_CHAIN)
                    .invoke_async(&mut self.conn)
                    .await
            }
            CallKind::Queued { ticket, wait_ms } => self
                .scripts
                .acquire_queued
                .key(&self.keys.lock)
                .key(&self.keys.fence)
                .key(&self.keys.queue)
                .key(&self.keys.waiters)
                .arg(&self.owner)
                .arg(self.ttl_ms)
                .arg(*wait_ms)
                .arg(ticket)
                .arg(&self.backend_id)
                .invoke_async(&mut self.conn)
                .await
                .map(|(acquired, value, owner): (i64, i64, String)| {
                    (acquired, value, owner, Vec::new())
                }),
        };
        // A timeout or a connection dropped after the script was written:
        // Redis may run it later, and the lease would be nobody's.
        let answer_lost = answer
            .as_ref()
            .is_err_and(|e| e.is_timeout() || e.is_connection_dropped());
        let queued = matches!(self.kind, CallKind::Queued { .. });
        match (reply.send(answer), queued) {
            (Ok(()), true) => {}
            (Err(_), true) => self.cancel_orphan().await,
            (Ok(()), false) => {
                if answer_lost {
                    self.release_orphan().await;
                }
            }
            // Nobody took the answer: release if it was a grant.
            (Err(answer), false) => {
                if answer_lost || answer.is_ok_and(|(acquired, ..)| acquired == 1) {
                    self.release_orphan().await;
                }
            }
        }
    }

    async fn release_orphan(&mut self) {
        let released: Result<i64, RedisError> = self
            .keys
            .hand_over(&self.scripts.release, &self.owner)
            .invoke_async(&mut self.conn)
            .await;
        self.log_orphan(released);
    }

    async fn cancel_orphan(&mut self) {
        let CallKind::Queued { ticket, .. } = &self.kind else {
            return;
        };
        let released: Result<i64, RedisError> = self
            .keys
            .hand_over(&self.scripts.cancel, ticket)
            .invoke_async(&mut self.conn)
            .await;
        self.log_orphan(released);
    }

    fn log_orphan(&self, released: Result<i64, RedisError>) {
        match released {
            Ok(1) => {
                tracing::debug!(lock = %self.keys.name, "released a lease acquired for a caller that gave up")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(lock = %self.keys.name, error = %e, "could not release a lease nobody received; it expires after its TTL")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_carry_the_holder() {
        let owner = owner_value(
            "000000000000000000000000000000ab",
            None,
            "host db-7 pid 42 since 2026-11-29T20:31:05Z",
        );
        assert_eq!(
            owner,
            "000000000000000000000000000000ab;host db-7 pid 42 since 2026-11-29T20:31:05Z"
        );
        assert_eq!(
            holder_of(&owner),
            Some("host db-7 pid 42 since 2026-11-29T20:31:05Z")
        );
        assert_eq!(holder_of("000000000000000000000000000000ab"), None);
        assert_eq!(holder_of(""), None);
        let session = SessionId::random();
        let owner = owner_value(
            "000000000000000000000000000000ab",
            Some(&session),
            "host h pid 1 since x",
        );
        assert_eq!(
            owner,
            format!("000000000000000000000000000000ab@{session};host h pid 1 since x")
        );
        assert_eq!(holder_of(&owner), Some("host h pid 1 since x"));
        assert_eq!(manna_lock::session_of_owner(&owner), Some(session.as_str()));
    }
}
