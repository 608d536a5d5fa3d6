use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use manna_lock::{Attempt, LockBackend, LockError, LockManager};
use manna_lock_redis::testing::FencedRegister;
use manna_lock_redis::{RedisBackend, RedisLockConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{bounded, PrivateRedis};

const HELPER: &str = env!("CARGO_BIN_EXE_manna-lock-redis-helper");

/// N tasks in several processes increment a counter in Redis under the lock,
/// every write checked against the fencing token: the count is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_increment_a_fenced_counter_exactly() {
    const PROCESSES: usize = 3;
    const TASKS: usize = 3;
    const EACH: usize = 15;
    let server = PrivateRedis::start(&[]);
    let url = server.url();
    bounded(120, async {
        let mut children = Vec::new();
        for _ in 0..PROCESSES {
            children.push(
                Command::new(HELPER)
                    .args(["counter", &url, "counter-lock", "counter-register"])
                    .args([TASKS.to_string(), EACH.to_string()])
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn helper"),
            );
        }
        let mut total = 0u64;
        for child in children {
            let out = child.wait_with_output().await.unwrap();
            assert!(out.status.success(), "helper failed: {:?}", out.status);
            let line = String::from_utf8(out.stdout).unwrap();
            let (done, refused) = parse_done(&line);
            assert_eq!(
                refused, 0,
                "a holder's write was refused: two holders overlapped"
            );
            assert_eq!(done, (TASKS * EACH) as u64);
            total += done;
        }
        let register = FencedRegister::open(&RedisLockConfig::new(&url), "counter-register")
            .await
            .unwrap();
        let (value, _) = register.read().await.unwrap();
        assert_eq!(value, total, "increments lost or double-applied");
        assert_eq!(value, (PROCESSES * TASKS * EACH) as u64);
    })
    .await;
}

fn parse_done(line: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .unwrap()
    };
    (field("increments="), field("refused="))
}

/// The lease TTL of the `hold` helper: renewed every second, so a renewal
/// delayed by a loaded machine still comes in time.
const HELD_TTL: Duration = Duration::from_secs(3);

/// A holder process killed mid-lock: the lock frees up after the TTL, with a
/// higher token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_process_killed_mid_lock() {
    let server = PrivateRedis::start(&[]);
    let url = server.url();
    bounded(60, async {
        let mut child = Command::new(HELPER)
            .args(["hold", &url, "held-lock"])
            .arg(HELD_TTL.as_millis().to_string())
            .env("HOSTNAME", "lock-helper-7")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn helper");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("helper prints its token");
        let held: u64 = line.strip_prefix("token ").unwrap().parse().unwrap();

        let backend = Arc::new(
            RedisBackend::connect(RedisLockConfig::new(&url))
                .await
                .unwrap(),
        );
        // A refused caller is told who holds the lock: the helper's host
        // (from its HOSTNAME) and process id.
        let pid = child.id().expect("helper running");
        match backend
            .try_acquire("held-lock", Duration::from_secs(5))
            .await
        {
            Ok(Attempt::Held {
                holder: Some(holder),
                ..
            }) => assert!(
                holder.starts_with(&format!("host lock-helper-7 pid {pid} since ")),
                "{holder}"
            ),
            other => panic!("expected Held naming the helper, got {other:?}"),
        }
        let m = LockManager::new(backend);
        // Long enough for a first attempt to come back "held" on a slow
        // machine (a wait that ends before any answer is `Unavailable`).
        match m
            .acquire("held-lock", Duration::from_secs(5), Duration::from_secs(2))
            .await
        {
            Err(e @ LockError::Timeout { .. }) => assert!(
                e.to_string()
                    .contains(&format!(": held by host lock-helper-7 pid {pid} since ")),
                "{e}"
            ),
            other => panic!("expected a Timeout naming the helper, got {other:?}"),
        }
        // The helper renews: the lock stays held well past its TTL.
        tokio::time::sleep(HELD_TTL * 2).await;
        assert!(
            m.try_acquire("held-lock", Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "holder alive"
        );

        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let g = m
            .acquire(
                "held-lock",
                Duration::from_secs(5),
                HELD_TTL + Duration::from_secs(15),
            )
            .await
            .unwrap();
        assert!(
            g.token().get() > held,
            "token after the crash must be higher"
        );
        assert!(g.release().await.unwrap());
    })
    .await;
}

/// `lock_manager_from_env`: Redis when `REDIS_URL` is set (a clear,
/// redacted error when it is unreachable), in-process locks otherwise.
#[tokio::test]
async fn lock_manager_from_env_follows_redis_url() {
    let server = PrivateRedis::start(&["--requirepass", "env-secret"]);
    bounded(60, async {
        let url = format!("redis://:env-secret@127.0.0.1:{}/2", server.port);
        let out = Command::new(HELPER)
            .args(["env", "env-lock"])
            .env("REDIS_URL", &url)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.trim(),
            format!("backend redis at redis://***@127.0.0.1:{}/2 (from REDIS_URL)", server.port)
        );

        let out = Command::new(HELPER)
            .args(["env", "env-lock"])
            .env_remove("REDIS_URL")
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "backend in-memory");

        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let out = Command::new(HELPER)
            .args(["env", "env-lock"])
            .env("REDIS_URL", format!("redis://:env-secret@127.0.0.1:{dead}/0"))
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "an unreachable REDIS_URL must fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!(
                "distributed lock backend unavailable: redis at redis://***@127.0.0.1:{dead}/0 (from REDIS_URL)"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("env-secret"), "{stderr}");
    })
    .await;
}
