"""manna.lock_resource on the real Redis (127.0.0.1:6379, or REDIS_URL):
the Rust LockManager + RedisBackend protocol, driven from Python."""

import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest

import manna

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"


@pytest.fixture
def redis_env(clean_env):
    clean_env.setenv("REDIS_URL", REDIS_URL)
    try:
        manna.lock_resource("manna_py_probe", uuid.uuid4().hex, timeout=10).release()
    except manna.DistributedLockError as err:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: start redis-server (or set REDIS_URL): {err}")
    return clean_env


def kind():
    return f"manna_py_{uuid.uuid4().hex[:10]}"


def test_acquire_exclude_release_and_fencing(redis_env):
    k = kind()
    first = manna.lock_resource(k, 42, timeout=10)
    assert first.name == f"{k}:42"
    assert first.token > 0 and not first.is_lost
    with pytest.raises(manna.LockTimeoutError) as err:
        manna.lock_resource(k, "42", timeout=2)
    assert isinstance(err.value, manna.DistributedLockError)
    assert f"{k}:42" in str(err.value)
    assert first.release() is True
    assert first.release() is False  # already released
    with manna.lock_resource(k, 42, timeout=10) as second:
        assert second.token > first.token  # fencing tokens only grow
    # the context manager released it
    manna.lock_resource(k, 42, timeout=0).release()


def test_lock_lives_in_redis_under_the_rust_key(redis_env):
    assert shutil.which("redis-cli"), "this test reads the lock's key with redis-cli: install it"
    k = kind()
    with manna.lock_resource(k, 7, timeout=10, ttl=5):
        key = f"manna:lock:{{{k}:7}}"
        ttl = subprocess.run(["redis-cli", "-u", REDIS_URL, "PTTL", key], capture_output=True, text=True)
        assert 0 < int(ttl.stdout.strip()) <= 5000
    gone = subprocess.run(["redis-cli", "-u", REDIS_URL, "EXISTS", key], capture_output=True, text=True)
    assert gone.stdout.strip() == "0"


def test_waiter_gets_the_lock_when_released(redis_env):
    k = kind()
    holder = manna.lock_resource(k, 1, timeout=10)
    got = []

    def wait():
        with manna.lock_resource(k, 1, timeout=10) as lock:
            got.append((time.monotonic(), lock.token))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)  # the waiter is blocked, with the GIL released
    released_at = time.monotonic()
    assert holder.release()
    thread.join(10)
    assert got, "the waiter never got the lock"
    assert got[0][0] - released_at < 5.0  # woken by the release, not the 30 s TTL
    assert got[0][1] > holder.token


def test_without_redis_url_the_error_names_it(clean_env):
    clean_env.delenv("REDIS_URL", raising=False)
    with pytest.raises(manna.DistributedLockError, match="REDIS_URL"):
        manna.lock_resource(kind(), 1, timeout=0.1)


def test_unreachable_redis_is_unavailable_without_the_password(clean_env):
    with pytest.raises(manna.DistributedLockError) as err:
        manna.lock_resource(kind(), 1, timeout=0.5, redis_url="redis://:hunter2secret@127.0.0.1:1")
    assert "hunter2secret" not in str(err.value)
    assert not isinstance(err.value, manna.LockTimeoutError)


def test_bad_arguments(redis_env):
    with pytest.raises(ValueError):
        manna.lock_resource(kind(), 1, timeout=-1)
    with pytest.raises(manna.DistributedLockError):
        manna.lock_resource("", 1, timeout=0.1)


def test_a_dropped_lock_is_released_in_the_background(redis_env):
    import gc

    k = kind()
    lock = manna.lock_resource(k, 1, timeout=10)
    del lock
    gc.collect()
    manna.lock_resource(k, 1, timeout=10).release()  # well within the 30 s TTL


def test_each_lease_has_its_own_fence_holder(redis_env):
    k = kind()
    with manna.lock_resource(k, 7, timeout=10) as first:
        holder = first.fence_holder
        assert len(holder) == 16 and all(c in "0123456789abcdef" for c in holder)
    with manna.lock_resource(k, 7, timeout=10) as second:
        assert second.fence_holder != holder
