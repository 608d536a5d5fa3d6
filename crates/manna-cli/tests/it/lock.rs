//! `manna lock NAME -- COMMAND`: the command runs holding the lock (Redis on
//! 127.0.0.1:6379, or a database's lock table), gets the fencing token,
//! and its exit status is passed through; two holders exclude each other.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Output};
use std::time::{Duration, Instant};

use crate::db::{redis_url, unique, TestDb};
use crate::{assert_one_line_error, assert_verdict, manna, manna_command, stderr, stdout};

/// Prints the token, then holds the lock until a line arrives on stdin.
const HOLD: &str = "echo \"$MANNA_FENCING_TOKEN\"; read _line; echo released";

/// A running `manna lock NAME -- sh -c HOLD` that has taken the lock.
struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
    token: u64,
}

impl Holder {
    /// Starts it and waits until it holds the lock (its command printed the token).
    fn start(args: &[&str], env: &[(&str, &str)]) -> Holder {
        let mut all = vec!["lock"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "sh", "-c", HOLD]);
        let mut child = manna_command(&all, env).spawn().expect("spawn manna lock");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let Some(token) = read_token(&mut out) else {
            let done = child.wait_with_output().unwrap();
            panic!("the holder did not take the lock: {}", stderr(&done));
        };
        Holder { child, out, token }
    }

    /// Lets the command end; returns its run's output (stdout after the token line).
    fn release(mut self) -> (Output, String) {
        self.child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        (self.child.wait_with_output().unwrap(), rest)
    }
}

/// The fencing token a command under `manna lock` printed as its first
/// line (`echo $MANNA_FENCING_TOKEN`); `None` if it printed none.
fn read_token(out: &mut impl BufRead) -> Option<u64> {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim().parse().ok()
}

/// The token a `manna lock … -- sh -c 'echo $MANNA_FENCING_TOKEN'` run printed.
fn token_of(o: &Output) -> u64 {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    stdout(o).trim().parse().expect("a token")
}

/// `manna lock ARGS -- sh -c 'echo $MANNA_FENCING_TOKEN; exec sleep 120'`
/// (in a process group of its own if `own_group`, like a terminal's
/// foreground job), once its command holds the lock.
fn sleeping_under_lock(args: &[&str], env: &[(&str, &str)], own_group: bool) -> Child {
    let mut all = vec!["lock"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        "echo $MANNA_FENCING_TOKEN; exec sleep 120",
    ]);
    let mut cmd = manna_command(&all, env);
    #[cfg(unix)]
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    #[cfg(not(unix))]
    let _ = own_group;
    let mut running = cmd.spawn().expect("spawn manna lock");
    let token = read_token(&mut BufReader::new(running.stdout.as_mut().unwrap()));
    assert!(token.is_some(), "the command did not start under the lock");
    running
}

fn name() -> String {
    manna_lock::resource_name(&unique("cli_lock"), "42")
}

#[test]
fn the_command_runs_with_the_fencing_token_its_holder_and_the_lock_name() {
    let redis = redis_url();
    let name = name();
    let o = manna(
        &[
            "lock",
            &name,
            "--",
            "sh",
            "-c",
            "echo \"$MANNA_LOCK_NAME $MANNA_FENCING_TOKEN $MANNA_FENCE_HOLDER\"",
        ],
        &[("REDIS_URL", &redis)],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let [got_name, token, holder] = out.split_whitespace().collect::<Vec<_>>()[..] else {
        panic!("{out}");
    };
    assert_eq!(got_name, name);
    assert!(token.parse::<u64>().unwrap() > 0);
    // The lease's holder id, which fenced writes carry with the token.
    assert!(
        holder.len() == 16 && holder.bytes().all(|b| b.is_ascii_hexdigit()),
        "{holder}"
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    // Released when the command ended: taken at once again, with a larger token.
    let again = manna(
        &[
            "lock",
            &name,
            "--wait",
            "0",
            "--",
            "sh",
            "-c",
            "echo $MANNA_FENCING_TOKEN",
        ],
        &[("REDIS_URL", &redis)],
        b"",
    );
    assert!(token_of(&again) > token.parse().unwrap());
}

#[test]
fn two_holders_exclude_each_other_and_the_second_token_is_greater() {
    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let first = Holder::start(&[&name], &env);
    let first_token = first.token;
    let mut second = manna_command(
        &[
            "lock",
            &name,
            "--wait",
            "60",
            "--",
            "sh",
            "-c",
            "echo $MANNA_FENCING_TOKEN",
        ],
        &env,
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second ran while the first held the lock"
    );
    let (done, rest) = first.release();
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(rest.trim(), "released");
    let second = second.wait_with_output().unwrap();
    assert!(token_of(&second) > first_token);
}

#[test]
fn a_lock_held_for_the_whole_wait_exits_3_naming_the_holder() {
    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let holder = Holder::start(&[&name], &env);
    let started = Instant::now();
    let o = manna(&["lock", &name, "--wait", "1", "--", "true"], &env, b"");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let line = assert_verdict(&o, 3, "busy:");
    assert!(
        line.contains(&name) && line.contains("held by host"),
        "{line}"
    );
    assert!(
        line.contains("(waited 1 s)") && line.contains("--wait"),
        "{line}"
    );
    // --wait 0 tries once.
    let o = manna(&["lock", &name, "--wait", "0", "--", "true"], &env, b"");
    assert_verdict(&o, 3, "busy:");
    holder.release();
}

#[test]
fn the_command_exit_status_is_passed_through() {
    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let o = manna(&["lock", &name, "--", "sh", "-c", "exit 7"], &env, b"");
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    // Killed by a signal: 128 + N, as shells report it.
    let o = manna(
        &["lock", &name, "--", "sh", "-c", "kill -TERM $$"],
        &env,
        b"",
    );
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    // Released in both cases.
    let o = manna(&["lock", &name, "--wait", "0", "--", "true"], &env, b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A lease gone by the time the command ends (its key deleted under it),
/// which renewal had not reported: when it went is unknown, so the run is
/// not claimed exclusive (exit 3), and the message says what is known — it
/// used to say the lease was lost "before the command ended".
#[test]
fn a_lease_found_gone_at_release_says_when_it_is_known_to_be_gone() {
    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let o = manna(
        &[
            "lock",
            &name,
            "--",
            "sh",
            "-c",
            "redis-cli -u \"$REDIS_URL\" DEL \"manna:lock:{$MANNA_LOCK_NAME}\" >/dev/null && exit 5",
        ],
        &env,
        b"",
    );
    let last = assert_verdict(&o, 3, "lost: ");
    assert!(
        last.contains("was gone when it was released, after sh exited with status 5"),
        "{last}"
    );
    assert!(!last.contains("before sh ended"), "{last}");
}

#[test]
fn a_command_that_cannot_start_is_an_error_and_releases_the_lock() {
    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let o = manna(
        &["lock", &name, "--", "/nonexistent/manna-test-command"],
        &env,
        b"",
    );
    let line = assert_one_line_error(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        line.contains("cannot run /nonexistent/manna-test-command"),
        "{line}"
    );
    let o = manna(&["lock", &name, "--wait", "0", "--", "true"], &env, b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    // No command.
    let o = manna(&["lock", "x:1"], &[], b"");
    assert_eq!(o.status.code(), Some(2));
    // The command comes after `--`.
    let o = manna(&["lock", "x:1", "true"], &[], b"");
    assert_eq!(o.status.code(), Some(2));
    let o = manna(&["lock", "x:1", "--ttl", "0", "--", "true"], &[], b"");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn without_redis_or_a_database_the_error_says_what_to_set() {
    let o = manna(&["lock", "x:1", "--", "true"], &[], b"");
    let line = assert_one_line_error(&o);
    assert!(
        line.contains("REDIS_URL") && line.contains("--database-url"),
        "{line}"
    );
}

#[test]
fn no_redis_password_in_any_output() {
    let secret = "hunter2secret";
    let addr = redis_url()
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for url in [
        // Unreachable.
        format!("redis://manna:{secret}@127.0.0.1:1/0"),
        // Reachable, wrong credentials.
        format!("redis://manna:{secret}@{addr}/0"),
    ] {
        let o = manna(
            &["lock", "x:1", "--wait", "1", "--", "true"],
            &[("REDIS_URL", &url)],
            b"",
        );
        let line = assert_one_line_error(&o);
        assert!(line.contains("REDIS_URL"), "{line}");
        assert!(
            !stderr(&o).contains(secret) && !stdout(&o).contains(secret),
            "{line}"
        );
    }
    // The holder's and the waiter's messages name the holder, never the URL.
    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let holder = Holder::start(&[&name], &env);
    let o = manna(&["lock", &name, "--wait", "0", "--", "true"], &env, b"");
    assert!(!stderr(&o).contains("redis://"), "{}", stderr(&o));
    let (done, _) = holder.release();
    assert!(!stderr(&done).contains("redis://"), "{}", stderr(&done));
}

/// Without REDIS_URL, the database's lock table excludes like Redis, and
/// the next holder's token is greater.
fn database_lock_excludes(db: &TestDb, name: &str) {
    let env = [("DATABASE_URL", db.url())];
    let holder = Holder::start(&[name], &env);
    let first_token = holder.token;
    let o = manna(&["lock", name, "--wait", "0", "--", "true"], &env, b"");
    assert_verdict(&o, 3, "busy:");
    let (done, _) = holder.release();
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let o = manna(
        &[
            "lock",
            name,
            "--wait",
            "0",
            "--",
            "sh",
            "-c",
            "echo $MANNA_FENCING_TOKEN",
        ],
        &env,
        b"",
    );
    assert!(token_of(&o) > first_token);
}

#[test]
fn postgres_database_lock_excludes() {
    database_lock_excludes(&TestDb::postgres(), &name());
}

#[test]
fn no_database_password_in_the_error() {
    let o = manna(
        &["lock", "x:1", "--wait", "1", "--", "true"],
        &[(
            "DATABASE_URL",
            "postgres://manna:hunter2secret@127.0.0.1:1/x",
        )],
        b"",
    );
    let line = assert_one_line_error(&o);
    assert!(
        !line.contains("hunter2secret") && line.contains("***"),
        "{line}"
    );
}

#[test]
fn sqlite_database_lock_excludes_and_a_lost_lease_stops_the_command_and_exits_3() {
    let db = TestDb::sqlite();
    let name = name();
    let env = [("DATABASE_URL", db.url())];
    database_lock_excludes(&db, &name);

    // A lease taken over while the command runs (renewal is refused) stops
    // the command.
    let running = sleeping_under_lock(&[&name, "--ttl", "3"], &env, false);
    let started = Instant::now();
    db.execute(&format!(
        "PRAGMA busy_timeout = 5000; \
         UPDATE manna_locks SET owner = 'someone-else' WHERE name = '{name}'"
    ));
    let o = running.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(100), "not stopped");
    let last = assert_verdict(&o, 3, "lost:");
    assert!(last.contains(&name), "{last}");
    assert!(
        stderr(&o).contains("stopping it (SIGTERM"),
        "{}",
        stderr(&o)
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_command_and_the_lock_is_released_when_it_has() {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    // A process group of its own, like a foreground job of a terminal.
    let running = sleeping_under_lock(&[&name], &env, true);
    // Ctrl-C: SIGINT to the whole group.
    let group = Pid::from_raw(i32::try_from(running.id()).unwrap());
    killpg(group, Signal::SIGINT).unwrap();
    let o = running.wait_with_output().unwrap();
    // manna lock outlived the signal, reported the command's end (128 + SIGINT)…
    assert_eq!(o.status.code(), Some(128 + 2), "{}", stderr(&o));
    // …and released the lock.
    let o = manna(&["lock", &name, "--wait", "0", "--", "true"], &env, b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Unattended (stdin not a terminal), the command leads a process group of
/// its own, and a lost lease stops the whole group: a process the command
/// started in the background does not write after the lease is gone (it
/// used to: only the command's own process was signalled).
#[cfg(unix)]
#[test]
fn a_lost_lease_stops_what_the_command_started_too() {
    let redis = redis_url();
    let name = name();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("late");
    let mark_env = mark.to_str().unwrap().to_owned();
    let env = [("REDIS_URL", redis.as_str()), ("MARK", mark_env.as_str())];
    // The lease is taken away at once; the background job would write 8 s
    // later (the loss is seen within the 3 s TTL however slow renewal is).
    let o = manna(
        &[
            "lock",
            &name,
            "--ttl",
            "3",
            "--",
            "sh",
            "-c",
            "redis-cli -u \"$REDIS_URL\" DEL \"manna:lock:{$MANNA_LOCK_NAME}\" >/dev/null; \
             (sleep 8; touch \"$MARK\") & wait",
        ],
        &env,
        b"",
    );
    let last = assert_verdict(&o, 3, "lost: ");
    assert!(last.contains("was lost before sh ended"), "{last}");
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        !mark.exists(),
        "a process the command started wrote after the lease was lost"
    );
}

/// SIGTERM sent to `manna lock` alone (a service manager, `timeout`) reaches
/// the command's process group; `manna lock` waits for it to end, releases
/// the lock and exits with its status (it used to die at once and leave the
/// command running, and the lock held until its TTL).
#[cfg(unix)]
#[test]
fn sigterm_to_manna_lock_stops_the_command_and_releases_the_lock() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let redis = redis_url();
    let name = name();
    let env = [("REDIS_URL", redis.as_str())];
    let running = sleeping_under_lock(&[&name], &env, false);
    kill(
        Pid::from_raw(i32::try_from(running.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let o = running.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    let o = manna(&["lock", &name, "--wait", "0", "--", "true"], &env, b"");
    assert_eq!(o.status.code(), Some(0), "released: {}", stderr(&o));
}

/// Issue 9, item 17: Diesel does not hand over PostgreSQL's SQLSTATE for
/// deadlocks and lock timeouts, so they are told apart by message, with
/// every connection asking for untranslated messages. A role that may not
/// (no `GRANT SET ON PARAMETER lc_messages`) on a server that answers it in
/// German gets those errors as plain errors: the run says so once, naming
/// the grant that fixes it, instead of misclassifying in silence.
#[test]
fn a_role_that_cannot_ask_for_english_messages_is_told_the_grant() {
    let db = TestDb::postgres();
    let schema = db
        .url()
        .rsplit_once("search_path%3D")
        .map(|(_, s)| s.to_owned())
        .expect("the test schema in the URL");
    db.execute(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'manna_test_de_noset') THEN
             CREATE ROLE manna_test_de_noset LOGIN;
           END IF;
         END $$;
         ALTER ROLE manna_test_de_noset SET lc_messages = 'de_DE.UTF-8';
         GRANT USAGE, CREATE ON SCHEMA \"{schema}\" TO manna_test_de_noset;"
    ));
    let (scheme, rest) = db.url().split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://manna_test_de_noset@{host}");
    let o = manna(
        &["lock", &name(), "--database-url", &url, "--", "true"],
        &[],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("may not set lc_messages")
            && err.contains("GRANT SET ON PARAMETER lc_messages"),
        "{err}"
    );
    assert!(!err.contains("postgres://"), "no URL in the output: {err}");
}
