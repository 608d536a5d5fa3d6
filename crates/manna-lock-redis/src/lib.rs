#![doc = include_str!("../README.md")]

mod backend;
mod config;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::RedisBackend;
pub use config::{RedisLockConfig, DEFAULT_NAMESPACE, REDIS_URL_VAR};

use std::sync::Arc;

use manna_lock::{LockError, LockManager};

/// The lock manager the environment asks for: Redis when `REDIS_URL` is set,
/// otherwise in-process locks (single machine).
///
/// Errors: [`LockError::Unavailable`] naming `REDIS_URL` (password redacted)
/// when it is set but Redis cannot be reached.
pub async fn lock_manager_from_env() -> Result<LockManager, LockError> {
    Ok(match RedisBackend::from_env().await? {
        Some(backend) => LockManager::new(Arc::new(backend)),
        None => LockManager::in_memory(),
    })
}

/// The locking guide (`docs/locking.md`): when to use optimistic locking or
/// a distributed lock, why fencing tokens, and what Redis can guarantee. Its
/// examples run as doctests of this crate.
#[doc = include_str!("../../../docs/locking.md")]
pub mod guide {}
