//! The one-migrator-per-partition rule: a blocking facade over the async
//! [`manna_lock`] port, since the engine runs on plain threads.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manna_lock::{FencingToken, LockError, LockGuard, LockManager};
use tokio::runtime::{Handle, Runtime};

use crate::shard::Shard;
use manna_store::ColumnRef;

/// The lock name a migration of `column`, shard `shard`, in the database
/// named `database` ([`ColumnStore::identity`](crate::ColumnStore::identity))
/// holds: `manna:migrate:DATABASE:TABLE.COLUMN:i/n`. Migrators of the same
/// column in two databases that share one lock service never block each
/// other; two on the same database always meet.
///
/// ```
/// use manna_migrate::{migration_lock_name, ColumnRef, Shard};
/// let c = ColumnRef::parse("plaid_items.access_token", "id").unwrap();
/// assert_eq!(
///     migration_lock_name("postgres:7301/app", &c, Shard::ALL),
///     "manna:migrate:postgres:7301/app:plaid_items.access_token:0/1"
/// );
/// ```
pub fn migration_lock_name(database: &str, column: &ColumnRef, shard: Shard) -> String {
    format!("manna:migrate:{database}:{column}:{shard}")
}

/// Blocking lock acquisition for the synchronous engine.
///
/// [`BlockingLocks`] implements it over a [`LockManager`] (in memory, Redis,
/// …); tests may implement it to simulate a lost lease deterministically.
pub trait MigrationLocks: Send + Sync {
    /// Takes the lock `name`, waiting as configured; must not be called from
    /// inside an async runtime's worker thread.
    ///
    /// Errors: [`LockError::Timeout`] when another holder kept it for the
    /// whole wait (the engine reports "another migrator is running");
    /// [`LockError::Unavailable`] when the backend cannot be reached.
    fn acquire(&self, name: &str) -> Result<Box<dyn HeldLock>, LockError>;

    /// Describes the backend for messages (no credentials).
    fn describe(&self) -> String;
}

/// A held lock.
pub trait HeldLock: Send + Sync {
    /// The lock's name.
    fn name(&self) -> &str;
    /// The lease's fencing token.
    fn token(&self) -> FencingToken;
    /// Whether the lease is known (or must be assumed) lost; checked at every
    /// batch boundary.
    fn is_lost(&self) -> bool;
    /// Gives the lock back; `Ok(false)` if the lease was already lost.
    fn release(self: Box<Self>) -> Result<bool, LockError>;
}

/// [`MigrationLocks`] over a [`LockManager`], driven with
/// [`Handle::block_on`] from the engine's plain threads. The guard's renewal
/// task runs on the runtime's workers, so the runtime must be a
/// multi-thread one (or otherwise be driven while the run lasts).
#[derive(Clone)]
pub struct BlockingLocks {
    manager: LockManager,
    handle: Handle,
    ttl: Duration,
    wait: Duration,
    _runtime: Option<Arc<Runtime>>,
}

impl fmt::Debug for BlockingLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingLocks")
            .field("backend", &self.manager.backend().describe())
            .field("ttl", &self.ttl)
            .field("wait", &self.wait)
            .finish()
    }
}

impl BlockingLocks {
    /// Locks of `manager`, driven on `handle` (a multi-thread runtime's).
    /// TTL 30 s (renewed every 10 s), no wait: a second migrator refuses at
    /// once.
    pub fn new(manager: LockManager, handle: Handle) -> Self {
        BlockingLocks {
            manager,
            handle,
            ttl: manna_lock::DEFAULT_TTL,
            wait: Duration::ZERO,
            _runtime: None,
        }
    }

    /// Locks of `manager` on a small runtime of their own (one worker
    /// thread), for programs that have none.
    pub fn with_own_runtime(manager: LockManager) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("manna-migrate-locks")
            .enable_all()
            .build()?;
        let mut locks = BlockingLocks::new(manager, runtime.handle().clone());
        locks._runtime = Some(Arc::new(runtime));
        Ok(locks)
    }

    /// The process-wide in-memory locks (one migrator per partition within
    /// this process): the default of a [`Migrator`](crate::Migrator) that was
    /// given none. Use a Redis-backed manager to exclude other machines.
    pub fn process_default() -> &'static BlockingLocks {
        static LOCKS: OnceLock<BlockingLocks> = OnceLock::new();
        LOCKS.get_or_init(|| {
            BlockingLocks::with_own_runtime(LockManager::in_memory())
                .expect("cannot start the runtime for in-process locks")
        })
    }

    /// Lease time to live (renewed every third of it while held).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to wait for a lock held by another migrator before giving up
    /// (zero: refuse at once).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The underlying manager.
    pub fn manager(&self) -> &LockManager {
        &self.manager
    }
}

impl MigrationLocks for BlockingLocks {
    fn acquire(&self, name: &str) -> Result<Box<dyn HeldLock>, LockError> {
        let guard = self
            .handle
            .block_on(self.manager.acquire(name, self.ttl, self.wait))?;
        Ok(Box::new(BlockingGuard {
            guard,
            handle: self.handle.clone(),
        }))
    }

    fn describe(&self) -> String {
        self.manager.backend().describe()
    }
}

struct BlockingGuard {
    guard: LockGuard,
    handle: Handle,
}

impl HeldLock for BlockingGuard {
    fn name(&self) -> &str {
        self.guard.name()
    }

    fn token(&self) -> FencingToken {
        self.guard.token()
    }

    fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    fn release(self: Box<Self>) -> Result<bool, LockError> {
        let BlockingGuard { guard, handle } = *self;
        handle.block_on(guard.release())
    }
}
