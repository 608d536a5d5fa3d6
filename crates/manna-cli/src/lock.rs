//! `manna lock NAME -- COMMAND…`: runs a command while holding a
//! distributed lock (like `flock(1)`, across machines), and the lock backend
//! every verb of the CLI uses.

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use manna_lock::{LockError, LockManager};
use manna_lock_redis::{RedisBackend, RedisLockConfig, REDIS_URL_VAR};
use manna_migrate::{BlockingLocks, HeldLock, MigrationLocks, Verdict};
use manna_store_diesel::{DbLockBackend, DbPool, PoolOptions};

/// The variable the command finds the fencing token in.
pub(crate) const ENV_FENCING_TOKEN: &str = "MANNA_FENCING_TOKEN";
/// The variable the command finds the lease's holder id in (fenced writes
/// carry it with the token, see `manna_lock::Fencing`).
pub(crate) const ENV_FENCE_HOLDER: &str = "MANNA_FENCE_HOLDER";
/// The variable the command finds the lock name in.
pub(crate) const ENV_LOCK_NAME: &str = "MANNA_LOCK_NAME";

/// How often the holder checks whether the command ended or the lease was
/// lost.
const POLL: Duration = Duration::from_millis(10);
/// How long a command whose lease was lost has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// `manna lock` arguments.
#[derive(Debug, Clone, Args)]
pub(crate) struct LockArgs {
    /// The lock name. `KIND:ID` is the lock that `manna.lock_resource(KIND, ID)`
    /// (Python) and `LockManager::lock_resource(KIND, ID)` (Rust) take.
    pub(crate) name: String,
    /// How long to wait for the lock while someone else holds it, in seconds
    /// (0: try once).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub(crate) wait: u64,
    /// Lease of the lock, in seconds (renewed every third of it while the command runs).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) ttl: u64,
    /// Without REDIS_URL, the database whose lock table (`manna_locks`) holds
    /// the lock: `postgres://…` or `sqlite://path`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// The command to run while holding the lock, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

/// The CLI's locks: Redis when `REDIS_URL` is set, otherwise the database's
/// own lock (the `manna_locks` lease table) on the pool `database` opens
/// (called only then). They run on a runtime of their own, which lives as
/// long as they do and renews held leases every third of `ttl`; `wait` is
/// how long an acquisition waits for another holder.
pub(crate) fn locks(
    database: impl FnOnce() -> Result<DbPool>,
    ttl: Duration,
    wait: Duration,
) -> Result<BlockingLocks> {
    enum Backend {
        Redis(RedisLockConfig),
        Database(DbPool),
    }
    let backend = match RedisLockConfig::from_env() {
        Some(config) => Backend::Redis(config),
        None => Backend::Database(database()?),
    };
    let locks = BlockingLocks::connect_on_own_runtime(|| async move {
        Ok(match backend {
            Backend::Redis(config) => {
                LockManager::new(Arc::new(RedisBackend::connect(config).await?))
            }
            Backend::Database(pool) => LockManager::new(Arc::new(DbLockBackend::new(pool))),
        })
    })?;
    Ok(locks.ttl(ttl).wait(wait))
}

/// `manna lock NAME -- COMMAND…`: takes the lock, runs the command with
/// `MANNA_FENCING_TOKEN`, `MANNA_FENCE_HOLDER` and `MANNA_LOCK_NAME` set,
/// releases the lock when
/// it exits and returns its exit status (128 + N when signal N ended it).
/// 3 when the lock stayed held for the whole `--wait`, or when the lease was
/// lost while the command ran (the command is then stopped: SIGTERM, and
/// SIGKILL after 10 s).
pub(crate) fn lock(args: &LockArgs) -> Result<ExitCode> {
    let Some((command, command_args)) = args.command.split_first() else {
        anyhow::bail!("no command given: pass it after `--`");
    };
    let locks = locks(
        || {
            let Some(url) = &args.database_url else {
                anyhow::bail!(
                    "no lock backend: set {REDIS_URL_VAR} for Redis, or pass --database-url (or \
                     set DATABASE_URL) for the database's own lock"
                );
            };
            Ok(DbPool::connect(url, &PoolOptions::default())?)
        },
        Duration::from_secs(args.ttl),
        Duration::from_secs(args.wait),
    )?;
    let held = match locks.acquire(&args.name) {
        Ok(held) => held,
        Err(LockError::Timeout { name, holder, .. }) => {
            eprintln!(
                "busy: lock `{name}` is held{} (waited {} s); try again later, or wait longer \
                 (--wait)",
                holder.map(|h| format!(" by {h}")).unwrap_or_default(),
                args.wait
            );
            return Ok(ExitCode::from(Verdict::Incomplete.exit_code()));
        }
        Err(err) => return Err(err.into()),
    };
    let group = Group::for_stdin();
    let forwarded = Arc::new(AtomicUsize::new(0));
    group.catch_signals(&forwarded);
    let program = command.to_string_lossy().into_owned();
    let fencing = held.fencing();
    let mut cmd = Command::new(command);
    cmd.args(command_args)
        .env(ENV_FENCING_TOKEN, fencing.token().get().to_string())
        .env(ENV_FENCE_HOLDER, fencing.holder())
        .env(ENV_LOCK_NAME, held.name());
    #[cfg(unix)]
    if group == Group::Own {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    let spawned = cmd.spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(err) => {
            give_back(held, args.ttl);
            return Err(err).with_context(|| format!("cannot run {program}"));
        }
    };
    let (status, lost) = supervise(child, held.as_ref(), group, &forwarded)?;
    let name = held.name().to_owned();
    let token = fencing.token();
    // Renewal may have seen the lease lost after the last poll.
    let lost = lost || held.is_lost();
    let released = give_back(held, args.ttl);
    if lost {
        eprintln!(
            "lost: the lease on lock `{name}` (token {token}) was lost before {program} ended \
             (another holder may have taken the lock since); run it again"
        );
        return Ok(ExitCode::from(Verdict::Incomplete.exit_code()));
    }
    if !released {
        // Renewal never reported the lease lost, yet the backend no longer
        // had it: when it went (the key deleted, a Redis restart without its
        // data) is unknown, so the run may have overlapped another holder's.
        eprintln!(
            "lost: the lease on lock `{name}` (token {token}) was gone when it was released, \
             after {program} exited with status {}: another holder may have taken the lock while \
             it ran; check what it did, or run it again",
            exit_code(status)
        );
        return Ok(ExitCode::from(Verdict::Incomplete.exit_code()));
    }
    Ok(ExitCode::from(exit_code(status)))
}

/// Where the command runs, and what stopping it signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Standard input is a terminal (someone is at it): the command stays in
    /// the terminal's process group, so Ctrl-C and job control reach it and
    /// it can read the terminal. Stopping it signals its process.
    Terminal,
    /// Unattended (standard input is not a terminal: cron, scripts, CI): the
    /// command leads a process group of its own. Stopping it signals the
    /// whole group, so nothing it started outlives a lost lease; SIGINT,
    /// SIGTERM and SIGHUP sent to `manna lock` are passed on to the group,
    /// and the lock is released once the command has ended.
    Own,
}

impl Group {
    fn for_stdin() -> Self {
        if cfg!(unix) && !std::io::stdin().is_terminal() {
            Group::Own
        } else {
            Group::Terminal
        }
    }

    /// Installs the signal handling of this mode: signals caught are
    /// recorded in `forwarded`, for [`supervise`] to pass on.
    fn catch_signals(self, forwarded: &Arc<AtomicUsize>) {
        match self {
            // Ctrl-C reaches the command too (same process group): let it
            // decide when to stop, and give the lock back once it has.
            Group::Terminal => {
                if let Err(err) = ctrlc::set_handler(|| {}) {
                    tracing::warn!("Ctrl-C handler not installed: {err}");
                }
            }
            Group::Own => {
                #[cfg(unix)]
                for signal in [
                    signal_hook::consts::SIGINT,
                    signal_hook::consts::SIGTERM,
                    signal_hook::consts::SIGHUP,
                ] {
                    let value = usize::try_from(signal).unwrap_or_default();
                    if let Err(err) =
                        signal_hook::flag::register_usize(signal, Arc::clone(forwarded), value)
                    {
                        tracing::warn!("signal {signal} not passed on to the command: {err}");
                    }
                }
            }
        }
    }

    /// Sends `signal` to the command: its process group, or its process.
    #[cfg(unix)]
    fn signal(self, child: &Child, signal: nix::sys::signal::Signal) {
        use nix::sys::signal::{kill, killpg};
        use nix::unistd::Pid;
        let Ok(pid) = i32::try_from(child.id()) else {
            return;
        };
        // It may have ended already: then there is nothing to signal.
        let _ = match self {
            Group::Own => killpg(Pid::from_raw(pid), signal),
            Group::Terminal => kill(Pid::from_raw(pid), signal),
        };
    }

    /// Whether a process of the command's group is still running (the
    /// command's own process having ended).
    fn lingers(self, child: &Child) -> bool {
        #[cfg(unix)]
        if self == Group::Own {
            let pid = i32::try_from(child.id()).unwrap_or(0);
            return nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), None).is_ok();
        }
        let _ = child;
        false
    }
}

/// Waits for the command, stopping it if the lease is lost and passing on
/// the signals `manna lock` caught; returns its status and whether the
/// lease was lost.
fn supervise(
    mut child: Child,
    held: &dyn HeldLock,
    group: Group,
    forwarded: &AtomicUsize,
) -> Result<(ExitStatus, bool)> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for the command")? {
            return Ok((status, false));
        }
        #[cfg(unix)]
        if let Ok(signal) = i32::try_from(forwarded.swap(0, Ordering::SeqCst))
            .map_err(|_| ())
            .and_then(|n| nix::sys::signal::Signal::try_from(n).map_err(|_| ()))
        {
            group.signal(&child, signal);
        }
        #[cfg(not(unix))]
        let _ = forwarded.load(Ordering::SeqCst);
        if held.is_lost() {
            eprintln!(
                "lost: the lease on lock `{}` was lost while the command ran; stopping it \
                 (SIGTERM, then SIGKILL after {} s)",
                held.name(),
                GRACE.as_secs()
            );
            return Ok((stop(child, group)?, true));
        }
        std::thread::sleep(POLL);
    }
}

/// Asks the command to stop (SIGTERM), and kills it if it, or a process of
/// its group, has not ended after [`GRACE`].
fn stop(mut child: Child, group: Group) -> Result<ExitStatus> {
    #[cfg(unix)]
    {
        use nix::sys::signal::Signal;
        group.signal(&child, Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        let mut ended = None;
        while Instant::now() < deadline {
            if ended.is_none() {
                ended = child.try_wait().context("waiting for the command")?;
            }
            if let Some(status) = ended {
                if !group.lingers(&child) {
                    return Ok(status);
                }
            }
            std::thread::sleep(POLL);
        }
        group.signal(&child, Signal::SIGKILL);
        if let Some(status) = ended {
            return Ok(status);
        }
    }
    let _ = group;
    let _ = child.kill();
    child.wait().context("waiting for the command")
}

/// Releases the lock; `false` if the lease had been lost. A backend that
/// cannot be reached is a warning: the lease then expires after its TTL.
fn give_back(held: Box<dyn HeldLock>, ttl: u64) -> bool {
    let name = held.name().to_owned();
    match held.release() {
        Ok(held) => held,
        Err(err) => {
            eprintln!("warning: lock `{name}` not released ({err}); it expires within {ttl} s");
            true
        }
    }
}

/// The command's exit status as ours: its code, or 128 + N when signal N
/// ended it (as shells report it).
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255 on Unix; elsewhere, keep failures failures.
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
    }
    1
}
