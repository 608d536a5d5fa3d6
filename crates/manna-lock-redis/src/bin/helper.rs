//! Test helper for the multi-process tests of manna-lock-redis (built only
//! with the `testing` feature).
//!
//! `manna-lock-redis-helper counter URL LOCK REGISTER TASKS ITERATIONS`
//!   runs TASKS tasks that each do ITERATIONS read-increment-write cycles on
//!   the fenced register under the lock, then prints
//!   `done increments=N refused=M` (a refused write is a fencing violation
//!   seen by a holder that believed it held the lock).
//!
//! `manna-lock-redis-helper hold URL LOCK TTL_MS`
//!   takes the lock, prints `token T`, and sleeps until killed.
//!
//! `manna-lock-redis-helper env LOCK`
//!   builds the lock manager from the environment (`REDIS_URL`), takes and
//!   releases the lock, and prints `backend DESCRIPTION`.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use manna_lock::LockManager;
use manna_lock_redis::testing::FencedRegister;
use manna_lock_redis::{RedisBackend, RedisLockConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["counter", url, lock, register, tasks, iterations] => {
            counter(url, lock, register, tasks, iterations).await
        }
        ["hold", url, lock, ttl_ms] => hold(url, lock, ttl_ms).await,
        ["env", lock] => from_env(lock).await,
        _ => Err(
            "usage: counter URL LOCK REGISTER TASKS ITERATIONS | hold URL LOCK TTL_MS | env LOCK"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helper: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn counter(url: &str, lock: &str, register: &str, tasks: &str, iterations: &str) -> Res {
    let config = RedisLockConfig::new(url);
    let backend = RedisBackend::connect(config.clone()).await?;
    backend.wait_listening(Duration::from_secs(2)).await;
    let manager = LockManager::new(Arc::new(backend));
    let register = FencedRegister::open(&config, register).await?;
    let tasks: usize = tasks.parse()?;
    let iterations: usize = iterations.parse()?;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (manager, register, lock) = (manager.clone(), register.clone(), lock.to_owned());
        handles.push(tokio::spawn(async move {
            let (mut done, mut refused) = (0u64, 0u64);
            for _ in 0..iterations {
                let guard = manager
                    .acquire(&lock, Duration::from_secs(5), Duration::from_secs(60))
                    .await?;
                let (value, _) = register.read().await?;
                tokio::task::yield_now().await;
                if register.write(guard.token(), value + 1).await? {
                    done += 1;
                } else {
                    refused += 1;
                }
                guard.release().await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((done, refused))
        }));
    }
    let (mut done, mut refused) = (0, 0);
    for h in handles {
        let (d, r) = h.await??;
        done += d;
        refused += r;
    }
    println!("done increments={done} refused={refused}");
    Ok(())
}

async fn hold(url: &str, lock: &str, ttl_ms: &str) -> Res {
    let backend = RedisBackend::connect(RedisLockConfig::new(url)).await?;
    let manager = LockManager::new(Arc::new(backend));
    let ttl = Duration::from_millis(ttl_ms.parse()?);
    let guard = manager.acquire(lock, ttl, Duration::from_secs(10)).await?;
    println!("token {}", guard.token());
    std::io::stdout().flush()?;
    // Hold (and renew) until killed.
    guard.lost().await;
    Err("lease lost while holding".into())
}

async fn from_env(lock: &str) -> Res {
    let manager = manna_lock_redis::lock_manager_from_env().await?;
    let guard = manager
        .acquire(lock, Duration::from_secs(5), Duration::from_secs(5))
        .await?;
    guard.release().await?;
    println!("backend {}", manager.backend().describe());
    Ok(())
}
