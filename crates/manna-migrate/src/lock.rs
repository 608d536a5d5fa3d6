//! The one-migrator-per-partition rule: a blocking facade over the async
//! [`manna_lock`] port, since the engine runs on plain threads, and the
//! runtime-free in-process locks a migrator uses when given none.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use manna_lock::{Fencing, FencingToken, LockError, LockGuard, LockManager};
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
    /// The lease's fencing token and holder id, which every write under
    /// the lock carries ([`Lease::fencing`](manna_lock::Lease::fencing)).
    fn fencing(&self) -> Fencing;
    /// The lease's fencing token.
    fn token(&self) -> FencingToken {
        self.fencing().token()
    }
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
        let runtime = own_runtime()?;
        let mut locks = BlockingLocks::new(manager, runtime.handle().clone());
        locks._runtime = Some(Arc::new(runtime));
        Ok(locks)
    }

    /// Locks whose [`LockManager`] is made by the async `connect` (a Redis
    /// connection, for instance), on a small runtime of their own (one
    /// worker thread) that `connect` runs on and that then drives lease
    /// renewal. The runtime lives as long as the locks (and their clones),
    /// so there is no drop order to get right; drop them on a plain thread,
    /// not inside an async task. For programs that have no runtime.
    ///
    /// Errors: `connect`'s, or [`LockError::Unavailable`] when the runtime
    /// cannot start.
    ///
    /// ```
    /// use manna_lock::LockManager;
    /// use manna_migrate::{BlockingLocks, MigrationLocks};
    /// let locks = BlockingLocks::connect_on_own_runtime(|| async { Ok(LockManager::in_memory()) })?;
    /// let held = locks.acquire("manna:migrate:doc:t.c:0/1")?;
    /// assert!(held.release()?);
    /// # Ok::<(), manna_lock::LockError>(())
    /// ```
    pub fn connect_on_own_runtime<F, Fut>(connect: F) -> Result<Self, LockError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LockManager, LockError>>,
    {
        let runtime = own_runtime().map_err(|e| LockError::Unavailable {
            backend: "the lock runtime".to_owned(),
            reason: format!("cannot start it: {e}"),
        })?;
        let manager = runtime.block_on(connect())?;
        let mut locks = BlockingLocks::new(manager, runtime.handle().clone());
        locks._runtime = Some(Arc::new(runtime));
        Ok(locks)
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

/// The one-worker runtime of [`BlockingLocks::with_own_runtime`] and
/// [`BlockingLocks::connect_on_own_runtime`].
fn own_runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("manna-migrate-locks")
        .enable_all()
        .build()
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

    fn fencing(&self) -> Fencing {
        self.guard.lease().fencing()
    }

    fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    fn release(self: Box<Self>) -> Result<bool, LockError> {
        let BlockingGuard { guard, handle } = *self;
        handle.block_on(guard.release())
    }
}

/// Process-wide locks that need no async runtime: the default of a
/// [`Migrator`](crate::Migrator) that was given no [`MigrationLocks`].
///
/// One table of held lock names per process, shared by every
/// `ProcessLocks`: two migrators of this process on the same column
/// partition exclude each other (the second waits up to
/// [`ProcessLocks::wait`], then gets [`LockError::Timeout`]). Migrators in
/// other processes or on other machines are **not** excluded: give those a
/// shared lock — [`BlockingLocks`] over the database's lock
/// (`manna_store_diesel::DbLockBackend`) or Redis
/// (`manna_lock_redis::RedisBackend`).
///
/// Fencing tokens follow the wall clock (microseconds since the Unix epoch)
/// and never repeat within the process, like those of the in-memory
/// [`LockManager`], so a store fence raised by an earlier process does not
/// refuse a later one. A held lock is never lost (there is no lease to
/// expire); it is given back on [`HeldLock::release`] or when dropped.
///
/// ```
/// use manna_migrate::{MigrationLocks, ProcessLocks};
/// let locks = ProcessLocks::new();
/// let held = locks.acquire("manna:migrate:doc:t.c:0/1").unwrap();
/// // A second taker is refused while the first holds the name…
/// let second = ProcessLocks::new().acquire("manna:migrate:doc:t.c:0/1");
/// assert!(matches!(second, Err(e) if e.is_timeout()));
/// // …and gets it once it is released.
/// assert!(held.release().unwrap());
/// assert!(locks.acquire("manna:migrate:doc:t.c:0/1").is_ok());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessLocks {
    wait: Duration,
}

/// The names held in this process, with their tokens.
struct Table {
    held: BTreeMap<String, Holding>,
    last_token: u64,
}

struct Holding {
    token: u64,
    since: SystemTime,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    held: BTreeMap::new(),
    last_token: 0,
});
static RELEASED: Condvar = Condvar::new();

/// The table, even if a thread panicked while holding it: every update of
/// it is a single insert or remove, so it is never left half-changed.
fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessLocks {
    /// In-process locks that refuse at once when the name is held.
    pub fn new() -> Self {
        ProcessLocks::default()
    }

    /// How long to wait for a name held by another migrator of this process
    /// before giving up (zero: refuse at once).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

impl MigrationLocks for ProcessLocks {
    fn acquire(&self, name: &str) -> Result<Box<dyn HeldLock>, LockError> {
        let started = Instant::now();
        let mut table = table();
        while let Some(holding) = table.held.get(name) {
            let waited = started.elapsed();
            let Some(left) = self.wait.checked_sub(waited).filter(|l| !l.is_zero()) else {
                let since = time_since(holding.since);
                return Err(LockError::Timeout {
                    name: name.to_owned(),
                    waited,
                    holder: Some(format!(
                        "another migrator of this process (pid {}) since {since}",
                        std::process::id()
                    )),
                });
            };
            table = RELEASED
                .wait_timeout(table, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let token = FencingToken::next_after(table.last_token).get();
        table.last_token = token;
        table.held.insert(
            name.to_owned(),
            Holding {
                token,
                since: SystemTime::now(),
            },
        );
        Ok(Box::new(ProcessGuard {
            name: name.to_owned(),
            token: FencingToken::new(token),
            released: false,
        }))
    }

    fn describe(&self) -> String {
        "in-process".to_owned()
    }
}

/// How long ago `since` was, for the holder description.
fn time_since(since: SystemTime) -> String {
    let secs = since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    format!("{secs} s ago")
}

struct ProcessGuard {
    name: String,
    token: FencingToken,
    released: bool,
}

impl ProcessGuard {
    /// Removes the name if this guard still holds it.
    fn give_back(&mut self) -> bool {
        if self.released {
            return false;
        }
        self.released = true;
        let mut table = table();
        let mine = table
            .held
            .get(&self.name)
            .is_some_and(|h| h.token == self.token.get());
        if mine {
            table.held.remove(&self.name);
            RELEASED.notify_all();
        }
        mine
    }
}

impl HeldLock for ProcessGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn fencing(&self) -> Fencing {
        // Tokens are unique in the process (the clock rule over the last
        // one); a number drawn once per process tells processes apart (pids
        // repeat across containers).
        static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let process = PROCESS.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        });
        Fencing::of_owner(
            self.token,
            &format!("process:{process:016x}:{}", self.token),
        )
    }

    fn is_lost(&self) -> bool {
        false
    }

    fn release(mut self: Box<Self>) -> Result<bool, LockError> {
        Ok(self.give_back())
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.give_back();
    }
}
