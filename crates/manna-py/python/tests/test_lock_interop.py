"""One lock, two languages: ``manna.lock_resource(kind, id)`` in Python and
``manna lock kind:id -- COMMAND`` (the Rust CLI, from ``MANNA_CLI`` as in
test_cross_language.py) exclude each other on the real Redis
(127.0.0.1:6379, or REDIS_URL), and their fencing tokens come from one
counter.

No upper bound on any wait: each test proves the order of events (a waiter
got the lock after the holder let it go, with a larger token)."""

import os
import subprocess
import threading
import time

import pytest

import manna
from conftest import REPO, manna_cli
from test_lock import REDIS_URL, kind, redis_env  # noqa: F401  (redis_env is a fixture)

#: The CLI command's script: print the token and the time the lock was
#: taken, then hold the lock until a line arrives on stdin.
HOLD = 'echo "$MANNA_FENCING_TOKEN $(date +%s.%N)"; read _line'
#: Print the token and the time the lock was taken.
TOKEN = 'echo "$MANNA_FENCING_TOKEN $(date +%s.%N)"'
#: Print the token and the lock name.
PRINT_TOKEN_AND_NAME = 'echo "$MANNA_FENCING_TOKEN $MANNA_LOCK_NAME"'


def cli_env():
    env = dict(os.environ, REDIS_URL=REDIS_URL)
    env.pop("DATABASE_URL", None)
    return env


def start_cli_lock(name, script, wait=120):
    """``manna lock NAME --wait WAIT -- sh -c SCRIPT``, started, pipes open."""
    return subprocess.Popen(
        manna_cli() + ["lock", name, "--wait", str(wait), "--", "sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=REPO,
        text=True,
    )


def token_and_time(line, process):
    """The ``TOKEN TIME`` line the CLI's command printed."""
    if not line.strip():
        pytest.fail(f"manna lock did not run its command: {process.stderr.read()}")
    token, at = line.split()
    return int(token), float(at)


@pytest.fixture(scope="module")
def cli_ready():
    """Runs the CLI once first, so that a build behind MANNA_CLI (cargo run)
    does not happen while a test waits."""
    done = subprocess.run(manna_cli() + ["--version"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_a_python_holder_makes_the_cli_wait_until_it_releases(redis_env, cli_ready):
    k = kind()
    held = manna.lock_resource(k, 42, timeout=10)
    assert held.name == f"{k}:42"
    waiter = start_cli_lock(held.name, TOKEN)
    time.sleep(1.0)
    assert waiter.poll() is None, "the CLI ran its command while Python held the lock"
    released_at = time.time()
    assert held.release()
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    token, taken_at = token_and_time(out, waiter)
    assert taken_at >= released_at, "the CLI got the lock before Python released it"
    assert token > held.token


def test_a_cli_holder_makes_python_wait_until_its_command_ends(redis_env, cli_ready):
    k = kind()
    holder = start_cli_lock(f"{k}:7", HOLD)
    cli_token, _ = token_and_time(holder.stdout.readline(), holder)
    # Held: Python is refused for the whole (short) wait, and told by whom.
    with pytest.raises(manna.LockTimeoutError, match="held by"):
        manna.lock_resource(k, 7, timeout=2)

    got = []

    def wait():
        with manna.lock_resource(k, 7, timeout=120) as lock:
            got.append((time.time(), lock.token))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)
    assert not got, "Python got the lock while the CLI held it"
    released_at = time.time()
    holder.stdin.write("\n")
    holder.stdin.close()
    assert holder.wait(timeout=120) == 0, holder.stderr.read()
    thread.join(120)
    assert got, "the Python waiter never got the lock"
    taken_at, py_token = got[0]
    assert taken_at >= released_at
    assert py_token > cli_token


def test_fencing_tokens_strictly_increase_across_languages(redis_env, cli_ready):
    k = kind()
    name = f"{k}:1"
    tokens = []
    for _ in range(3):
        with manna.lock_resource(k, 1, timeout=30) as lock:
            tokens.append(("python", lock.token))
        done = subprocess.run(
            manna_cli() + ["lock", name, "--wait", "30", "--", "sh", "-c", PRINT_TOKEN_AND_NAME],
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        token, lock_name = done.stdout.split()
        assert lock_name == name
        tokens.append(("rust", int(token)))
    values = [t for _, t in tokens]
    assert values == sorted(values) and len(set(values)) == len(values), tokens
