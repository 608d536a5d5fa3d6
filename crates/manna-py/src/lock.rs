//! `manna.lock_resource`: the Redis distributed lock of `manna-lock-redis`,
//! driven from Python through a blocking facade.
//!
//! The lock protocol (keys, Lua scripts, fencing tokens, release
//! notifications, renewal) is the Rust one: `LockManager::lock_resource`
//! on a `RedisBackend`. One Tokio runtime (one worker thread) runs it for
//! the whole process; Python threads block on it with the GIL released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use manna_lock::{LockBackend, LockError, LockGuard, LockManager};
use manna_lock_redis::{RedisBackend, RedisLockConfig, REDIS_URL_VAR};
use pyo3::prelude::*;

use crate::MannaError;

pyo3::create_exception!(
    manna,
    DistributedLockError,
    MannaError,
    "The distributed lock failed: Redis unavailable (names REDIS_URL, never its password), not the holder, invalid request."
);
pyo3::create_exception!(
    manna,
    LockTimeoutError,
    DistributedLockError,
    "The lock stayed held by someone else for the whole wait (the message names the holder when known)."
);

fn lock_error(err: LockError) -> PyErr {
    match err {
        LockError::Timeout { .. } => LockTimeoutError::new_err(err.to_string()),
        other => DistributedLockError::new_err(other.to_string()),
    }
}

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("manna-lock")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| DistributedLockError::new_err(format!("cannot start the lock runtime: {e}")))
}

/// One connected backend per Redis URL, shared by every lock of the process.
fn backend(url: Option<String>) -> PyResult<Arc<dyn LockBackend>> {
    static BACKENDS: OnceLock<Mutex<HashMap<String, Arc<dyn LockBackend>>>> = OnceLock::new();
    let (key, config) = match url {
        Some(url) => (url.clone(), RedisLockConfig::new(url)),
        None => {
            let config = RedisLockConfig::from_env().ok_or_else(|| {
                DistributedLockError::new_err(format!(
                    "{REDIS_URL_VAR} is not set: lock_resource needs Redis (set {REDIS_URL_VAR}, \
                     e.g. redis://127.0.0.1:6379, or pass redis_url=)"
                ))
            })?;
            // The environment's URL, as from_env read it, is the key.
            (std::env::var(REDIS_URL_VAR).unwrap_or_default(), config)
        }
    };
    // The URL (it may hold a password) is a map key only, never shown.
    let backends = BACKENDS.get_or_init(Default::default);
    if let Some(found) = backends.lock().map_err(poisoned)?.get(&key) {
        return Ok(found.clone());
    }
    let connected: Arc<dyn LockBackend> = Arc::new(
        runtime()?
            .block_on(RedisBackend::connect(config))
            .map_err(lock_error)?,
    );
    Ok(backends
        .lock()
        .map_err(poisoned)?
        .entry(key)
        .or_insert(connected)
        .clone())
}

fn poisoned<T>(_: T) -> PyErr {
    DistributedLockError::new_err("lock registry poisoned by an earlier panic")
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be a finite number of seconds >= 0"
        ))
    })
}

/// A held lock (`manna_lock::LockGuard`), renewed in the background until
/// released. Use it as a context manager, or call `release()`.
#[pyclass(module = "manna", name = "Lock", frozen)]
pub(crate) struct Lock {
    name: String,
    token: u64,
    fence_holder: String,
    guard: Mutex<Option<LockGuard>>,
}

#[pymethods]
impl Lock {
    /// The lock name (`kind:id`).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: pass it with every write done under this lock.
    #[getter]
    fn token(&self) -> u64 {
        self.token
    }

    /// The lease's holder id (16 hex digits): a fence records it with the
    /// token and refuses the same token from another holder (what
    /// `manna_lock::Fencing` is in Rust, `MANNA_FENCE_HOLDER` for `manna lock`).
    #[getter]
    fn fence_holder(&self) -> &str {
        &self.fence_holder
    }

    /// True once the lease is known (or must be assumed) lost; stop working.
    #[getter]
    fn is_lost(&self) -> PyResult<bool> {
        Ok(self
            .guard
            .lock()
            .map_err(poisoned)?
            .as_ref()
            .is_none_or(LockGuard::is_lost))
    }

    /// Releases the lock: True if the lease was still held, False if it had
    /// been lost (or was already released).
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        let guard = self.guard.lock().map_err(poisoned)?.take();
        let Some(guard) = guard else {
            return Ok(false);
        };
        let rt = runtime()?;
        py.detach(|| rt.block_on(guard.release()))
            .map_err(lock_error)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Lock(name={:?}, token={})", self.name, self.token)
    }
}

/// Locks the resource `id` of kind `kind` (lock name `kind:id`) in Redis,
/// waiting up to `timeout` seconds; the lease lasts `ttl` seconds (default
/// 30) and is renewed in the background while held. Redis comes from
/// `redis_url` or `REDIS_URL`.
///
/// Raises `LockTimeoutError` when someone else held it for the whole wait,
/// `DistributedLockError` when Redis is unavailable.
#[pyfunction]
#[pyo3(signature = (kind, id, timeout = 30.0, ttl = None, redis_url = None))]
pub(crate) fn lock_resource(
    py: Python<'_>,
    kind: String,
    id: &Bound<'_, PyAny>,
    timeout: f64,
    ttl: Option<f64>,
    redis_url: Option<String>,
) -> PyResult<Lock> {
    let id = id.str()?.to_cow()?.into_owned();
    let wait = seconds(timeout, "timeout")?;
    let ttl = ttl.map(|t| seconds(t, "ttl")).transpose()?;
    let backend = py.detach(|| backend(redis_url))?;
    let mut manager = LockManager::new(backend);
    if let Some(ttl) = ttl {
        manager = manager.with_default_ttl(ttl);
    }
    let rt = runtime()?;
    let guard = py
        .detach(|| rt.block_on(manager.lock_resource(&kind, &id, wait)))
        .map_err(lock_error)?;
    Ok(Lock {
        name: guard.name().to_owned(),
        token: guard.token().get(),
        fence_holder: guard.lease().fencing().holder().to_owned(),
        guard: Mutex::new(Some(guard)),
    })
}
