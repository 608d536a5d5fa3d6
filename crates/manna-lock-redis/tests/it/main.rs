//! Integration tests of manna-lock-redis against real Redis servers: the
//! shared one on 127.0.0.1:6379 (or `REDIS_URL`) and private ones each test
//! starts on its own port.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod behaviour;
mod conformance;
mod faults;
mod hardening;
mod processes;
mod queue;
mod support;
