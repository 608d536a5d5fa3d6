//! Test support (feature `testing`): finding the PostgreSQL server that
//! integration tests run against.

use std::sync::OnceLock;

use diesel::{Connection, PgConnection};

/// Servers tried in order when `MANNA_TEST_PG_URL` is not set.
pub const PG_TEST_CANDIDATES: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://root@127.0.0.1:5432/test",
];

/// The URL of the PostgreSQL server tests use: `MANNA_TEST_PG_URL`, else the
/// first of [`PG_TEST_CANDIDATES`] that accepts a connection. Checked once
/// per process.
///
/// # Panics
/// When no server answers, with a message saying what to start: a test that
/// needs PostgreSQL fails loudly rather than passing by skipping.
pub fn pg_test_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let candidates: Vec<String> = match std::env::var("MANNA_TEST_PG_URL") {
            Ok(u) => vec![u],
            Err(_) => PG_TEST_CANDIDATES.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut reasons = Vec::new();
        for url in &candidates {
            match PgConnection::establish(url) {
                Ok(_) => return url.clone(),
                Err(e) => reasons.push(format!("{}: {e}", manna_lock::redact::redact_url(url))),
            }
        }
        panic!(
            "PostgreSQL is not reachable ({}). These tests need a server on 127.0.0.1:5432 with \
             trust auth for user postgres or root and a database `test`: start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (or run \
             `bash .ci/run`, which starts it), or set MANNA_TEST_PG_URL.",
            reasons.join("; ")
        )
    })
}
